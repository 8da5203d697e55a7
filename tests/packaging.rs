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
    assert!(
        unit.contains("ExecStart=/usr/bin/ip_traffic_monitor_cli -q -d 0 --state /var/lib/ip-traffic-monitor/state $IP_TRAFFIC_MONITOR_OPTS"),
        "{unit}"
    );
    assert!(unit.contains("StateDirectory=ip-traffic-monitor\nStateDirectoryMode=0700"), "{unit}");
    assert!(unit.contains("Restart=on-failure"));
    let version = Command::new(&bin).arg("--version").output().expect("run installed");
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), format!("ip_traffic_monitor_cli {}", env!("CARGO_PKG_VERSION")));

    // As shipped, /metrics (remote IPs, local processes) is served on loopback only.
    let conf = stage.0.join("etc/default/ip-traffic-monitor");
    let shipped = std::fs::read_to_string(&conf).unwrap();
    let active: Vec<&str> = shipped.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()).collect();
    assert_eq!(active, ["IP_TRAFFIC_MONITOR_OPTS=\"--listen 127.0.0.1:9464\""], "{shipped}");
    let openwrt = std::fs::read_to_string(Path::new(ROOT).join("packaging/openwrt/ip-traffic-monitor.init")).unwrap();
    assert!(openwrt.contains("IP_TRAFFIC_MONITOR_OPTS=\"--listen 127.0.0.1:9464\"") && !openwrt.contains("-p 9090"), "{openwrt}");

    // The admin edits the configuration; a new install keeps it.
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

/// A systemd of its own, as PID 1 of a new PID and mount namespace (the
/// machine needs no systemd, and nothing of the host's units runs): it
/// starts only `ip-traffic-monitor.service`, the packaged unit with a
/// drop-in that sets the flags and sends the output to a file. A fresh
/// tmpfs on /sys/fs/cgroup keeps systemd's remounts off the host's; the
/// cgroups it creates in the shared hierarchies are removed afterwards.
struct ServiceUnderTest {
    unshare: std::process::Child,
    dir: PathBuf,
    cgroups_before: std::collections::BTreeSet<PathBuf>,
    /// Whether the unit's state directory was there before (else it goes with the test).
    state_dir_existed: bool,
}

/// The unit's `StateDirectory=`.
const STATE_DIR: &str = "/var/lib/ip-traffic-monitor";

const SYSTEMD: &str = "/lib/systemd/systemd";

fn cgroup_dirs() -> std::collections::BTreeSet<PathBuf> {
    let mut dirs = std::collections::BTreeSet::new();
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
                dirs.insert(entry.path());
            }
        }
    }
    dirs
}

impl ServiceUnderTest {
    fn start(binary: &Path, flags: &str) -> ServiceUnderTest {
        // Not under /tmp or /root: the unit has PrivateTmp and ProtectHome.
        let dir = PathBuf::from(format!("/usr/local/lib/itm-service-test-{}", std::process::id()));
        let units = dir.join("units");
        std::fs::create_dir_all(units.join("ip-traffic-monitor.service.d")).expect("unit dir");
        std::fs::copy(binary, dir.join("ip_traffic_monitor_cli")).expect("copy the binary");
        let unit = std::fs::read_to_string(Path::new(ROOT).join("packaging/ip-traffic-monitor.service.in"))
            .unwrap()
            .replace("@BINDIR@", &dir.to_string_lossy());
        std::fs::write(units.join("ip-traffic-monitor.service"), unit).unwrap();
        let log = dir.join("log");
        let dropin = format!(
            "[Service]\nEnvironmentFile=\nEnvironment=\"IP_TRAFFIC_MONITOR_OPTS={flags}\"\n\
             StandardOutput=append:{log}\nStandardError=append:{log}\nRestart=no\n",
            log = log.display()
        );
        std::fs::write(units.join("ip-traffic-monitor.service.d/test.conf"), dropin).unwrap();
        std::fs::write(units.join("itm-test.target"), "[Unit]\nWants=ip-traffic-monitor.service\n").unwrap();
        let cgroups_before = cgroup_dirs();
        let state_dir_existed = Path::new(STATE_DIR).exists();
        let script = format!(
            "mount -t tmpfs -o mode=755 itm-cgroup /sys/fs/cgroup && \
             {{ mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null; true; }} && \
             exec env SYSTEMD_UNIT_PATH={} {SYSTEMD} --system --unit=itm-test.target",
            units.display()
        );
        let unshare = Command::new("unshare")
            .args(["--pid", "--fork", "--mount", "--mount-proc", "--propagation", "private", "sh", "-c", &script])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("unshare");
        ServiceUnderTest { unshare, dir, cgroups_before, state_dir_existed }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// The monitor the service runs, once it runs.
    fn main_pid(&self) -> Option<u32> {
        let exe = self.dir.join("ip_traffic_monitor_cli");
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            (std::fs::read_link(entry.path().join("exe")).ok()? == exe).then_some(pid)
        })
    }
}

impl Drop for ServiceUnderTest {
    fn drop(&mut self) {
        // Killing the namespace's PID 1 (systemd) kills everything in it.
        for pid in lab::children(self.unshare.id()) {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.main_pid().is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Deepest first; a cgroup empties as its processes are reaped.
        let mut created: Vec<PathBuf> = cgroup_dirs().difference(&self.cgroups_before).cloned().collect();
        created.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for dir in created {
            for _ in 0..50 {
                if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if !self.state_dir_existed {
            let _ = std::fs::remove_dir_all(STATE_DIR);
        }
    }
}

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix(field)).unwrap_or_default().trim().to_string()
}

#[test]
fn the_hardened_unit_starts_and_counts_with_each_backend() {
    if !lab::require("the_hardened_unit_starts_and_counts_with_each_backend", &["iftop"]) {
        return;
    }
    if !Path::new(SYSTEMD).exists() {
        assert!(std::env::var_os("CI").is_none(), "CI installs systemd");
        eprintln!("SKIPPED the_hardened_unit_starts_and_counts_with_each_backend: needs {SYSTEMD}");
        return;
    }
    let _serial = lab::serial();
    for backend in ["nftables", "bpftrace", "iftop"] {
        let port = lab::free_port();
        // Saved every second: the sandbox lets it write its state directory.
        let flags = format!("--listen 127.0.0.1:{port} -b {backend} -i lo --save-interval 1");
        let flags = if backend == "iftop" { flags } else { flags.replace(" -i lo", "") };
        let service = ServiceUnderTest::start(Path::new(lab::BIN), &flags);
        // Up means: started under every sandbox setting, and reporting.
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        let metrics = loop {
            let body = scrape(port).unwrap_or_default();
            if lab::metric_value(&body, "ip_traffic_monitor_backend_up") == Some(1.0) {
                break body;
            }
            assert!(std::time::Instant::now() < deadline, "{backend}: not up within 90 s; its output:\n{}", service.log());
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(metrics.contains(&format!("backend=\"{backend}\"")), "{metrics}");
        let state = Path::new(STATE_DIR).join("state");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !state.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!((mode(Path::new(STATE_DIR)), mode(&state)), (0o700, 0o600), "{backend}: StateDirectory and the saved state; {}", service.log());
        let pid = service.main_pid().expect("the service's monitor");
        // nftables has no child: the monitor reads the kernel itself.
        let child = lab::children(pid).first().copied();
        assert_eq!(child.is_none(), backend == "nftables", "{backend}: a backend child {child:?}");
        println!("{backend}: service up, monitor {pid}, backend {child:?}");
        let _nft_table = (backend == "nftables").then(|| OwnTable::new(pid));
        for pid in std::iter::once(pid).chain(child) {
            assert_eq!(status_field(pid, "Seccomp:"), "2", "SystemCallFilter");
            assert_eq!(status_field(pid, "NoNewPrivs:"), "1", "NoNewPrivileges");
            assert_eq!(status_field(pid, "Umask:"), "0077", "UMask");
        }
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
        let read_only = |target: &str| {
            mounts.lines().any(|l| l.split(' ').nth(4) == Some(target) && l.split(' ').nth(5).is_some_and(|o| o.starts_with("ro")))
        };
        assert!(read_only("/proc/sys") && read_only("/sys"), "ProtectKernelTunables");
        let dev: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root/dev"))
            .expect("its /dev")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(dev.contains(&"null".to_string()) && !dev.iter().any(|d| ["mem", "kmsg", "port"].contains(&d.as_str())), "PrivateDevices: {dev:?}");
        let memory = "/sys/fs/cgroup/memory/system.slice/ip-traffic-monitor.service/memory.limit_in_bytes";
        // Where the memory controller is mounted (cgroup v1 here); v2 hosts skip this check.
        if let Ok(limit) = std::fs::read_to_string(memory) {
            assert_eq!(limit.trim(), (512u64 << 20).to_string(), "MemoryMax");
        }
        // The service goes first (SIGKILL), then a table it could not delete.
        drop(service);
    }
}

/// The nftables table a service's monitor made in this network namespace:
/// deleted when the test is done with it, if that monitor's SIGKILL left it.
/// The table names the monitor's PID as its own PID namespace sees it.
struct OwnTable(u32);

impl OwnTable {
    fn new(pid: u32) -> OwnTable {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let inner = status.lines().find_map(|l| l.strip_prefix("NSpid:")).and_then(|ids| ids.split_whitespace().last()?.parse().ok());
        OwnTable(inner.unwrap_or(pid))
    }
}

impl Drop for OwnTable {
    fn drop(&mut self) {
        use ip_traffic_monitor_cli::backend::nftables::{TABLE, socket::Socket, table};
        let Ok(mut socket) = Socket::open() else { return };
        if table::find(&mut socket, TABLE).ok().flatten().and_then(|note| table::owner_pid(&note)) == Some(self.0) {
            let _ = table::delete(&mut socket, TABLE);
        }
    }
}

/// GET /metrics on 127.0.0.1:port.
fn scrape(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}
