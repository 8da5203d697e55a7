//! What an unprivileged local user controls must not change a count: the
//! names of its processes reach the monitor through the backend's output,
//! so a name made of newlines and report lines is the attack. Checked with
//! the real bpftrace backend against nftables.

mod lab;

use std::time::Duration;

use lab::{BIN, Lab, MANY_IPS_RANGE};

/// Names a process of uid 65534 gives itself: lines of the backend's old
/// output format (an RX count for `::`, a TX series for `100::`, a report
/// end), and a terminal escape with a byte that is not UTF-8.
const HOSTILE_NAMES: [&[u8]; 4] = [b"\n@rx[::]: 9999\n", b"\n@tx[100::]: 9\n", b"a)\n@end\n", b"\x1b]0;pwn\x07\xff"];
/// Remote IPs each hostile process sends to (in 198.18.N.0/24 for name N).
const DESTS_PER_NAME: u8 = 25;

#[test]
fn hostile_process_names_change_no_count_and_show_escaped() {
    if !lab::require("hostile_process_names_change_no_count_and_show_escaped", &["setpriv"]) {
        return;
    }
    let mut lab = Lab::new();
    let port = lab::free_port().to_string();
    let mut monitor =
        lab.spawn_in_host(&[BIN, "-b", "bpftrace", "-i", "vh", "-d", "0", "-s", "1", "-t", "0", "-p", &port, "--top", "1000"]);
    monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(120));
    lab.resolve_neighbours(&["192.0.2.2"]);

    for (n, name) in HOSTILE_NAMES.iter().enumerate() {
        let dests: Vec<String> = (1..=DESTS_PER_NAME).map(|i| format!("198.18.{n}.{i}")).collect();
        lab.udp_as_nobody_named(name, &dests);
    }
    let port: u16 = port.parse().expect("port");
    let truth = lab.truth();
    let want_tx = truth[&(MANY_IPS_RANGE.to_string(), "tx")] as f64;
    let want_rx = truth[&(MANY_IPS_RANGE.to_string(), "rx")] as f64;
    let metrics = lab.scrape_until(port, Duration::from_secs(20), |m| lab::series_sum(m, "tx", "198.18.") >= want_tx);
    let (got_tx, got_rx) = (lab::series_sum(&metrics, "tx", "198.18."), lab::series_sum(&metrics, "rx", "198.18."));
    println!("198.18.0.0/15: nftables tx {want_tx} rx {want_rx}; counted tx {got_tx} rx {got_rx}");
    // 100 datagrams of 29 IP bytes (20 header, 8 UDP, 1 payload).
    assert_eq!(want_tx, 100.0 * 29.0, "the lab sent what it meant to");
    assert_eq!((got_tx, got_rx), (want_tx, want_rx), "every byte to the range, and none more");

    // Nothing forged: no unexported bytes (-t 0 exports every IP), no line
    // the parser could not read, no series but the lab's addresses.
    for series in ["ip_traffic_unexported_tx_bytes_total", "ip_traffic_unexported_rx_bytes_total", "ip_traffic_monitor_parse_errors_total"] {
        assert_eq!(lab::metric_value(&metrics, series), Some(0.0), "{series}\n{metrics}");
    }
    for line in metrics.lines().filter(|l| l.starts_with("ip_traffic_tx_bytes_total{") || l.starts_with("ip_traffic_rx_bytes_total{")) {
        let ip = line.split('"').nth(1).expect("remote_ip");
        assert!(ip.starts_with("198.18.") || ip == "192.0.2.2", "a series nobody sent to: {line}");
    }

    // Each owner shows its name escaped: in the exposition (escaped again
    // for the format) and on the console, where no control byte gets out.
    for (n, name) in HOSTILE_NAMES.iter().enumerate() {
        let shown = shown_name(name);
        let label = format!("remote_ip=\"198.18.{n}.1\",");
        let info = metrics
            .lines()
            .find(|l| l.starts_with("ip_traffic_remote_process_info{") && l.contains(&label))
            .unwrap_or_else(|| panic!("an owner for 198.18.{n}.1:\n{metrics}"));
        assert!(info.ends_with(&format!(",process=\"{}\"}} 1", shown.replace('\\', "\\\\"))), "{info} (want {shown})");
    }
    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
    let console = finished.stdout.join("\n");
    assert!(!console.contains('\x1b') && !console.contains('\x07'), "a control byte reached the console");
    for name in HOSTILE_NAMES {
        assert!(console.contains(&shown_name(name)), "{} on the console", shown_name(name));
    }
    assert!(!finished.stderr.iter().any(|l| l.contains("reached no remote IP")), "no false 'maps full': {:?}", finished.stderr);
}

/// How a name is shown: the kernel keeps 15 bytes; control bytes and
/// bytes that are not UTF-8 as \xNN.
fn shown_name(name: &[u8]) -> String {
    name.iter()
        .take(15)
        .map(|&b| if b.is_ascii_graphic() || b == b' ' { (b as char).to_string() } else { format!("\\x{b:02x}") })
        .collect()
}

/// A directory of fake backend programs that leave a mark if run.
struct FakePrograms {
    dir: std::path::PathBuf,
}

impl FakePrograms {
    fn new() -> FakePrograms {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("itm-fakes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).expect("dir");
        for name in ["bpftrace", "iftop", "stdbuf", "bin/bpftrace", "bin/iftop", "bin/stdbuf"] {
            let path = dir.join(name);
            std::fs::write(&path, format!("#!/bin/sh\ntouch {}/RAN\nexit 1\n", dir.display())).expect("fake");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        FakePrograms { dir }
    }

    fn ran(&self) -> bool {
        self.dir.join("RAN").exists()
    }
}

impl Drop for FakePrograms {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn programs_in_the_working_directory_or_relative_path_entries_never_run() {
    if !lab::require("programs_in_the_working_directory_or_relative_path_entries_never_run", &["iftop"]) {
        return;
    }
    let _serial = lab::serial();
    let fakes = FakePrograms::new();
    // Empty and relative PATH entries, each pointing at a fake, as root.
    let path = ":bin:.:/nonexistent";
    // Installed: the real iftop runs (on loopback, for a second).
    let out = std::process::Command::new(BIN)
        .args(["-b", "iftop", "-i", "lo", "-d", "1", "-q"])
        .current_dir(&fakes.dir)
        .env("PATH", path)
        .output()
        .expect("run");
    assert!(!fakes.ran(), "a program from the working directory ran as root");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // Not installed: one clear line, and still no fake.
    for backend in ["bpftrace", "iftop"] {
        let mut args = vec!["-m".to_string(), "--propagation".into(), "private".into()];
        let run = ["/usr/bin/env", &format!("PATH={path}"), BIN, "-b", backend, "-i", "lo", "-d", "1"];
        args.extend(lab::without_programs(&["bpftrace", "iftop", "stdbuf"], &run));
        let out = std::process::Command::new("unshare").args(&args).current_dir(&fakes.dir).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!fakes.ran(), "-b {backend}: a program from the working directory ran as root");
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(&format!("{backend} not found in /usr/local/sbin, ")), "{stderr}");
    }
}

#[test]
fn a_script_root_would_run_must_be_private_regular_and_sane_in_size() {
    use std::os::unix::fs::PermissionsExt;
    if !lab::is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        eprintln!("SKIPPED a_script_root_would_run_must_be_private_regular_and_sane_in_size: chown needs root");
        return;
    }
    let script = |name: &str, bytes: &[u8], mode: u32, owner: Option<u32>| {
        let file = lab::TempFile::new(name, bytes);
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode)).expect("chmod");
        if let Some(uid) = owner {
            std::os::unix::fs::chown(file.path(), Some(uid), Some(uid)).expect("chown");
        }
        file
    };
    let body = b"BEGIN { printf(\"@attached\\n\"); }\n";
    let nobodys = script("nobody.bt", body, 0o644, Some(65534));
    let open = script("open.bt", body, 0o666, None);
    let group = script("group.bt", body, 0o620, None);
    let huge = script("huge.bt", &vec![b'#'; 200 * 1024], 0o644, None);
    for (path, why) in [
        (nobodys.path(), "owned by uid 65534"),
        (open.path(), "writable by group or others (mode 666)"),
        (group.path(), "writable by group or others (mode 620)"),
        (huge.path(), "larger than 127 KiB"),
        ("/dev/zero", "not a regular file"),
        ("/nonexistent.bt", "No such file"),
    ] {
        let started = std::time::Instant::now();
        let out = std::process::Command::new(BIN).args(["--bpftrace-script", path, "-d", "1"]).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{path}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(&format!("--bpftrace-script {path}: {why}")), "{stderr}");
        assert!(started.elapsed() < Duration::from_secs(2), "{path}: refused at once");
    }
}

#[test]
fn a_script_is_read_once_and_a_later_change_to_the_file_is_never_run() {
    if !lab::require_lab("a_script_is_read_once_and_a_later_change_to_the_file_is_never_run") {
        return;
    }
    let mut lab = Lab::new();
    // Reports 10 bytes for 198.51.100.7 once, then exits: the monitor restarts it.
    let script = lab::script(
        "once",
        "BEGIN { printf(\"@attached\\n\"); }\ninterval:ms:500 { printf(\"@tx[198.51.100.7]: 10\\n@end\\n\"); exit(); }\n",
    );
    let mut monitor = lab.spawn_in_host(&[BIN, "-d", "0", "-q", "--bpftrace-script", script.path()]);
    monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(60));
    // The file now says something else; every restart must still run what was checked.
    std::fs::write(
        script.path(),
        "BEGIN { printf(\"@attached\\n\"); }\ninterval:ms:500 { printf(\"@tx[198.51.100.8]: 99\\n@end\\n\"); exit(); }\n",
    )
    .expect("rewrite");
    monitor.wait_for_stderr("bpftrace restarted", Duration::from_secs(30));
    monitor.wait_for_stderr("bpftrace restarted", Duration::from_secs(30));
    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
    let counted = lab::summary_rows(&finished.stdout);
    assert!(!counted.contains_key("198.51.100.8"), "the rewritten file ran: {counted:?}");
    assert!(counted["198.51.100.7"].0 >= 20, "the checked text ran at every restart: {counted:?}");
}
