//! Packaging: `make install` / `make uninstall` into a staging directory,
//! the systemd unit through `systemd-analyze verify`, and the static release
//! binary (`make release`): no interpreter, no shared libraries, its size,
//! and, copied alone into an empty directory, counting the lab exactly.

mod lab;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lab::Lab;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn static_binary() -> Option<PathBuf> {
    let path = Path::new(ROOT).join("target/static/ip_traffic_monitor_cli");
    if path.exists() {
        return Some(path);
    }
    assert!(std::env::var_os("CI").is_none(), "CI runs `make test`, which builds target/static first (make release)");
    eprintln!("SKIPPED: no target/static/ip_traffic_monitor_cli; run `make release` (make test does)");
    None
}

fn make(args: &[&str]) -> String {
    let out = Command::new("make").arg("-C").arg(ROOT).args(args).output().expect("make");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "make {args:?}: {text}");
    text
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("itm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn make_install_and_uninstall_keep_an_edited_configuration() {
    if static_binary().is_none() || !lab::on_path("make") {
        return;
    }
    // make install runs make release, which rewrites target/static: not
    // while another test copies it.
    let _serial = lab::serial();
    let stage = TempDir::new("stage");
    let destdir = format!("DESTDIR={}", stage.0.display());
    make(&["install", &destdir, "PREFIX=/usr"]);
    assert_eq!(
        files_under(&stage.0),
        [
            "etc/default/ip-traffic-monitor",
            "usr/bin/ip_traffic_monitor_cli",
            "usr/lib/systemd/system/ip-traffic-monitor.service",
            "usr/share/ip_traffic_monitor_cli/bpftrace/traffic.bt",
            "usr/share/ip_traffic_monitor_cli/grafana/grafana.json",
        ]
    );
    use std::os::unix::fs::PermissionsExt;
    let bin = stage.0.join("usr/bin/ip_traffic_monitor_cli");
    assert_eq!(std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777, 0o755);
    let unit = std::fs::read_to_string(stage.0.join("usr/lib/systemd/system/ip-traffic-monitor.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/ip_traffic_monitor_cli -q -d 0 $IP_TRAFFIC_MONITOR_OPTS"), "{unit}");
    assert!(unit.contains("Restart=on-failure"));
    let version = Command::new(&bin).arg("--version").output().expect("run installed");
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), format!("ip_traffic_monitor_cli {}", env!("CARGO_PKG_VERSION")));

    // The admin edits the configuration; a new install keeps it.
    let conf = stage.0.join("etc/default/ip-traffic-monitor");
    let edited = "IP_TRAFFIC_MONITOR_OPTS=\"--listen 127.0.0.1:9464 -i eth1\"\n";
    std::fs::write(&conf, edited).unwrap();
    make(&["install", &destdir, "PREFIX=/usr"]);
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), edited, "install never overwrites an edited configuration");

    make(&["uninstall", &destdir, "PREFIX=/usr"]);
    assert_eq!(files_under(&stage.0), ["etc/default/ip-traffic-monitor"], "only the edited configuration is left");

    // Unedited, the configuration goes too.
    make(&["install", &destdir, "PREFIX=/usr"]);
    std::fs::remove_file(&conf).unwrap();
    make(&["install", &destdir, "PREFIX=/usr"]);
    make(&["uninstall", &destdir, "PREFIX=/usr"]);
    assert!(files_under(&stage.0).is_empty(), "{:?}", files_under(&stage.0));
}

#[test]
fn systemd_accepts_the_unit() {
    let Some(binary) = static_binary() else { return };
    if !lab::on_path("systemd-analyze") {
        assert!(std::env::var_os("CI").is_none(), "CI installs systemd");
        eprintln!("SKIPPED systemd_accepts_the_unit: needs systemd-analyze");
        return;
    }
    // The unit as installed, with ExecStart at a binary that exists here.
    let dir = TempDir::new("unit");
    let unit = std::fs::read_to_string(Path::new(ROOT).join("packaging/ip-traffic-monitor.service.in"))
        .unwrap()
        .replace("@BINDIR@/ip_traffic_monitor_cli", &binary.to_string_lossy());
    let path = dir.0.join("ip-traffic-monitor.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}

/// (has PT_INTERP, DT_NEEDED count) of a 64-bit little-endian ELF file.
fn elf_links(bytes: &[u8]) -> (bool, usize) {
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert_eq!(bytes[4], 2, "64-bit");
    let u16_at = |o: usize| u16::from_le_bytes(bytes[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    let mut interp = false;
    let mut needed = 0;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        match u32_at(ph) {
            3 => interp = true, // PT_INTERP
            2 => {
                // PT_DYNAMIC: (tag, value) pairs until DT_NULL.
                let (off, size) = (u64_at(ph + 8), u64_at(ph + 0x20));
                needed += (0..size / 16).map(|j| u64_at(off + j * 16)).take_while(|t| *t != 0).filter(|t| *t == 1).count();
            }
            _ => {}
        }
    }
    (interp, needed)
}

#[test]
fn the_release_binary_is_static_and_small() {
    let Some(binary) = static_binary() else { return };
    let bytes = std::fs::read(&binary).unwrap();
    let (interp, needed) = elf_links(&bytes);
    println!("{}: {} bytes, interpreter: {interp}, NEEDED entries: {needed}", binary.display(), bytes.len());
    assert!(!interp, "no dynamic loader");
    assert_eq!(needed, 0, "no shared libraries");
    assert!(bytes.len() <= 1024 * 1024, "budget 1 MiB, is {} bytes", bytes.len());
    let dynamic = std::fs::read(env!("CARGO_BIN_EXE_ip_traffic_monitor_cli")).unwrap();
    assert!(elf_links(&dynamic).1 > 0, "the check tells a dynamic binary apart");
}

#[test]
fn the_static_binary_alone_counts_the_lab_exactly() {
    if !lab::require_lab("the_static_binary_alone_counts_the_lab_exactly") {
        return;
    }
    let Some(binary) = static_binary() else { return };
    let mut lab = Lab::new(); // holds the lab lock: no make install rewrites the binary meanwhile
    let empty = TempDir::new("alone");
    let alone = empty.0.join("ip_traffic_monitor_cli");
    std::fs::copy(&binary, &alone).expect("copy");
    let alone = alone.to_string_lossy().into_owned();
    lab.start_iperf_server();
    let mut monitor = lab.spawn_in_host(&[&alone, "-b", "bpftrace", "-i", "vh", "-d", "0", "-s", "1", "--top", "100"]);
    monitor.wait_for_stderr("built-in traffic.bt", Duration::from_secs(120));
    lab.iperf(&["-c", "198.51.100.7", "-n", "20M"]);
    lab.iperf(&["-6", "-c", "2001:db8::2", "-n", "20M", "-R"]);
    lab.udp_flow(true, "203.0.113.9", 2_000_000);
    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
    let counted = lab::summary_rows(&finished.stdout);
    let truth = lab.truth();
    for ip in ["198.51.100.7", "2001:db8::2", "203.0.113.9"] {
        for (dir, got) in [("tx", counted[ip].0), ("rx", counted[ip].1)] {
            let want = truth[&(ip.to_string(), dir)];
            println!("{ip:<14} {dir} nftables {want:>10} static binary {got:>10}");
            assert!((got as f64 - want as f64).abs() <= 0.001 * want as f64, "{ip} {dir}: {got} vs {want}");
        }
    }
}
