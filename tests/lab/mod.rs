//! The end-to-end test lab: a "host" network namespace joined by veth pairs
//! to a "remote" namespace that holds several public-looking addresses
//! (documentation and benchmarking ranges, IPv4 and IPv6), nftables counters
//! in the host as ground truth, iperf3 for traffic, and the real monitor
//! binary running inside the host namespace. Everything it creates is named
//! after the test process and removed on drop, even when a test fails.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ip_traffic_monitor_cli");

/// Remote addresses reached over the counted veth (`vh`).
pub const REMOTE_V4: [&str; 4] = ["192.0.2.2", "198.51.100.7", "198.51.100.8", "203.0.113.9"];
pub const REMOTE_V6: [&str; 2] = ["2001:db8::2", "2001:db8:2::7"];
/// A remote reached over a second veth (`vx`) that tests leave out with -i.
pub const OTHER_IFACE_REMOTE: &str = "198.51.100.130";
/// Routed to the remote namespace, which drops it: room for 131,072
/// distinct remote IPs (the benchmarking range counts like a public one).
pub const MANY_IPS_RANGE: &str = "198.18.0.0/15";
/// Its IPv6 counterpart: room for any number of spoofed sources.
pub const MANY_IPS_RANGE_V6: &str = "2001:db8:100::/48";
/// What [`Lab::own_broadcasts_and_looped_multicast`] shows, none a peer:
/// the broadcast address of vh's subnet, the host's own addresses (the
/// source of the looped-back copies) and the multicast group.
pub const NOT_PEERS: [&str; 4] = ["192.0.2.255", "192.0.2.1", "2001:db8::1", "ff0e::1"];

/// Lab tests share bpftrace, CPU and names: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Whether the lab can run here; outside CI a missing tool skips the test
/// with a printed reason, under CI=true it fails.
pub fn require_lab(test: &str) -> bool {
    require(test, &[])
}

/// Like [`require_lab`], with further tools.
pub fn require(test: &str, extra_tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root".to_string());
    }
    for tool in ["bpftrace", "nft", "iperf3", "socat", "ip", "unshare"].iter().chain(extra_tools) {
        if !on_path(tool) {
            missing.push(tool.to_string());
        }
    }
    skip_unless_none_missing(test, missing)
}

/// Whether `test` can run: every one of `tools` is on PATH (no root, no
/// lab). Missing under `CI` is a failure; otherwise the test says why it
/// skips.
pub fn require_tools(test: &str, tools: &[&str]) -> bool {
    skip_unless_none_missing(test, tools.iter().filter(|t| !on_path(t)).map(|t| t.to_string()).collect())
}

pub fn skip_unless_none_missing(test: &str, missing: Vec<String>) -> bool {
    if missing.is_empty() {
        return true;
    }
    let reason = format!("{test}: needs {}", missing.join(", "));
    if std::env::var_os("CI").is_some() {
        panic!("{reason} (CI is set, so this is a failure, not a skip)");
    }
    eprintln!("SKIPPED {reason}");
    false
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

pub fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())
}

fn run(args: &[&str]) -> Output {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Where the monitor looks for the programs it runs (it never uses PATH).
pub const SYSTEM_DIRS: [&str; 7] = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin", "/snap/bin"];

/// `cmd` prefixed so that it runs with `programs` missing from the system
/// directories: `/dev/null` is bind-mounted over each copy, in a mount
/// namespace of its own (`ip netns exec` gives one; elsewhere wrap the
/// result in `unshare -m`). Nothing on the machine changes.
pub fn without_programs(programs: &[&str], cmd: &[&str]) -> Vec<String> {
    let mut script = String::new();
    for program in programs {
        for dir in SYSTEM_DIRS {
            script.push_str(&format!("[ -e {dir}/{program} ] && mount --bind /dev/null {dir}/{program}; "));
        }
    }
    script.push_str("exec \"$0\" \"$@\"");
    ["sh", "-c", &script].iter().chain(cmd).map(|s| s.to_string()).collect()
}

/// The binary people run, for figures that depend on the build: the
/// static musl release (`make test` builds it first), else the test build
/// (unoptimized, glibc's allocator), said on stdout.
pub fn shipped_binary() -> &'static str {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/target/static/ip_traffic_monitor_cli");
    if std::path::Path::new(shipped).exists() {
        return shipped;
    }
    assert!(std::env::var_os("CI").is_none(), "make test builds target/static first");
    println!("no target/static binary (make release): measuring the unoptimized test build");
    BIN
}

/// Holds the lab lock: for tests that run the monitor outside a `Lab`.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Lab {
    pub host: String,
    pub remote: String,
    /// A LAN behind the host, which then routes (see `add_lan`).
    pub lan: Option<String>,
    children: Vec<Child>,
    temp_dirs: Vec<std::path::PathBuf>,
    _serial: MutexGuard<'static, ()>,
}

impl Lab {
    pub fn new() -> Lab {
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let id = std::process::id();
        let lab = Lab {
            host: format!("itm-h-{id}"),
            remote: format!("itm-r-{id}"),
            lan: None,
            children: Vec::new(),
            temp_dirs: Vec::new(),
            _serial: serial,
        };
        lab.build();
        lab
    }

    fn build(&self) {
        let (h, r) = (self.host.as_str(), self.remote.as_str());
        run(&["ip", "netns", "add", h]);
        run(&["ip", "netns", "add", r]);
        run(&["ip", "link", "add", "vh", "netns", h, "type", "veth", "peer", "name", "vr", "netns", r]);
        run(&["ip", "link", "add", "vx", "netns", h, "type", "veth", "peer", "name", "vxr", "netns", r]);
        for (ns, dev) in [(h, "lo"), (h, "vh"), (h, "vx"), (r, "lo"), (r, "vr"), (r, "vxr")] {
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        run(&["ip", "-n", h, "addr", "add", "192.0.2.1/24", "dev", "vh"]);
        run(&["ip", "-n", r, "addr", "add", "192.0.2.2/24", "dev", "vr"]);
        run(&["ip", "-n", h, "addr", "add", "198.51.100.129/25", "dev", "vx"]);
        run(&["ip", "-n", r, "addr", "add", "198.51.100.130/25", "dev", "vxr"]);
        for addr in ["198.51.100.7/32", "198.51.100.8/32", "203.0.113.9/32"] {
            run(&["ip", "-n", r, "addr", "add", addr, "dev", "lo"]);
        }
        run(&["ip", "-n", h, "route", "add", "198.51.100.0/24", "via", "192.0.2.2"]);
        run(&["ip", "-n", h, "route", "add", "203.0.113.0/24", "via", "192.0.2.2"]);
        run(&["ip", "-n", h, "route", "add", MANY_IPS_RANGE, "via", "192.0.2.2"]);
        run(&["ip", "-n", h, "addr", "add", "2001:db8::1/64", "dev", "vh", "nodad"]);
        run(&["ip", "-n", r, "addr", "add", "2001:db8::2/64", "dev", "vr", "nodad"]);
        run(&["ip", "-n", r, "addr", "add", "2001:db8:2::7/128", "dev", "lo"]);
        run(&["ip", "-n", h, "route", "add", "2001:db8:2::/64", "via", "2001:db8::2"]);
        self.install_counters();
    }

    /// One nftables counter per remote IP and direction, in the host's
    /// input and output hooks: exactly the bytes the monitor must count.
    fn install_counters(&self) {
        let mut rules = String::from("table inet itm_truth {\n chain input { type filter hook input priority 0;\n");
        let all: Vec<&str> = REMOTE_V4
            .iter()
            .chain(REMOTE_V6.iter())
            .copied()
            .chain([OTHER_IFACE_REMOTE, MANY_IPS_RANGE, MANY_IPS_RANGE_V6])
            .collect();
        for ip in &all {
            let family = if ip.contains(':') { "ip6" } else { "ip" };
            rules.push_str(&format!("  {family} saddr {ip} counter\n"));
        }
        rules.push_str(" }\n chain output { type filter hook output priority 0;\n");
        for ip in &all {
            let family = if ip.contains(':') { "ip6" } else { "ip" };
            rules.push_str(&format!("  {family} daddr {ip} counter\n"));
        }
        rules.push_str(" }\n}\n");
        self.nft_load(&rules);
    }

    pub fn nft_load(&self, rules: &str) {
        self.nft_load_in(&self.host, rules);
    }

    /// Loads `rules` with `nft -f` in namespace `ns`.
    pub fn nft_load_in(&self, ns: &str, rules: &str) {
        let mut nft = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft");
        use std::io::Write;
        nft.stdin.take().expect("stdin").write_all(rules.as_bytes()).expect("write rules");
        assert!(nft.wait().expect("nft").success(), "nft rejected the counters");
    }

    /// Makes the host a router: a LAN namespace (10.0.0.2, fd00::2) behind
    /// the host's `vl`, forwarding on, the remote routing the LAN back via
    /// the host, and forward-hook counters in table `itm_fwd`.
    pub fn add_lan(&mut self) -> String {
        let lan = format!("itm-l-{}", std::process::id());
        let (h, r, l) = (self.host.as_str(), self.remote.as_str(), lan.as_str());
        run(&["ip", "netns", "add", l]);
        self.lan = Some(lan.clone());
        run(&["ip", "link", "add", "vl", "netns", h, "type", "veth", "peer", "name", "vlr", "netns", l]);
        for (ns, dev) in [(h, "vl"), (l, "vlr"), (l, "lo")] {
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        run(&["ip", "-n", h, "addr", "add", "10.0.0.1/24", "dev", "vl"]);
        run(&["ip", "-n", l, "addr", "add", "10.0.0.2/24", "dev", "vlr"]);
        run(&["ip", "-n", h, "addr", "add", "fd00::1/64", "dev", "vl", "nodad"]);
        run(&["ip", "-n", l, "addr", "add", "fd00::2/64", "dev", "vlr", "nodad"]);
        run(&["ip", "-n", l, "route", "add", "default", "via", "10.0.0.1"]);
        run(&["ip", "-n", l, "-6", "route", "add", "default", "via", "fd00::1"]);
        run(&["ip", "-n", r, "route", "add", "10.0.0.0/24", "via", "192.0.2.1"]);
        run(&["ip", "-n", r, "-6", "route", "add", "fd00::/64", "via", "2001:db8::1"]);
        run(&["ip", "netns", "exec", h, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        run(&["ip", "netns", "exec", h, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        let rules = "table inet itm_fwd {\n chain forward { type filter hook forward priority 0;\n\
            ip daddr 198.51.100.8 counter\n ip saddr 198.51.100.8 counter\n\
            ip6 daddr 2001:db8:2::7 counter\n ip6 saddr 2001:db8:2::7 counter\n }\n}\n";
        self.nft_load(rules);
        lan
    }

    /// A veth from the test process's own namespace to the host, so that
    /// the test itself can be the exporter's client: the host answers on
    /// 10.254.253.2 and 10.254.254.2, reached from 10.254.253.1 and
    /// 10.254.254.1 (two client addresses). Private addresses, never
    /// counted; the root-side device goes with the host namespace.
    pub fn link_to_test(&mut self) -> [std::net::IpAddr; 2] {
        let outside = format!("itm-t{}", std::process::id() % 10_000_000);
        let h = self.host.as_str();
        run(&["ip", "link", "add", &outside, "type", "veth", "peer", "name", "vt", "netns", h]);
        for net in ["10.254.253", "10.254.254"] {
            run(&["ip", "addr", "add", &format!("{net}.1/24"), "dev", &outside]);
            run(&["ip", "-n", h, "addr", "add", &format!("{net}.2/24"), "dev", "vt"]);
        }
        run(&["ip", "link", "set", &outside, "up"]);
        run(&["ip", "-n", h, "link", "set", "vt", "up"]);
        ["10.254.253.2".parse().expect("ip"), "10.254.254.2".parse().expect("ip")]
    }

    /// (remote IP, "tx"|"rx") → bytes the host forwarded, from `itm_fwd`.
    pub fn forwarded(&self) -> BTreeMap<(String, &'static str), u64> {
        self.counters("itm_fwd")
    }

    /// An iperf3 client in the LAN namespace.
    pub fn iperf_from_lan(&self, args: &[&str]) {
        let lan = self.lan.as_deref().expect("add_lan first");
        self.iperf_in(lan, args);
    }

    /// Waits until the truth counters stand still for 300 ms (a flow's last
    /// packets may still leave after its client returned); at most 10 s.
    pub fn wait_until_quiet(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = self.truth();
        while Instant::now() < deadline {
            thread::sleep(Duration::from_millis(300));
            let now = self.truth();
            if now == last {
                return;
            }
            last = now;
        }
    }

    /// (remote IP, "tx"|"rx") → bytes, read from the nftables counters.
    pub fn truth(&self) -> BTreeMap<(String, &'static str), u64> {
        self.counters("itm_truth")
    }

    fn counters(&self, table: &str) -> BTreeMap<(String, &'static str), u64> {
        self.counters_in(&self.host, table)
    }

    /// (IP, "tx"|"rx") → bytes of the rules `ip daddr IP counter` (tx) and
    /// `ip saddr IP counter` (rx) of table `inet table` in namespace `ns`.
    pub fn counters_in(&self, ns: &str, table: &str) -> BTreeMap<(String, &'static str), u64> {
        let rules = self.counter_rules_in(ns, &format!("inet {table}"));
        rules.into_iter().map(|(ip, dir, _packets, bytes)| ((ip, dir), bytes)).collect()
    }

    /// (IP, "tx"|"rx", packets, bytes) of each rule `… daddr IP counter`
    /// (tx) and `… saddr IP counter` (rx) of `table` ("family name") in
    /// namespace `ns`.
    pub fn counter_rules_in(&self, ns: &str, table: &str) -> Vec<(String, &'static str, u64, u64)> {
        let mut cmd = vec!["ip", "netns", "exec", ns, "nft", "list", "table"];
        cmd.extend(table.split_whitespace());
        let out = run(&cmd);
        let text = String::from_utf8_lossy(&out.stdout);
        let mut rules = Vec::new();
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let [_, field, ip, "counter", "packets", packets, "bytes", bytes] = words[..] {
                let dir = if field == "saddr" { "rx" } else { "tx" };
                rules.push((ip.to_string(), dir, packets.parse().expect("packet count"), bytes.parse().expect("byte count")));
            }
        }
        rules
    }

    /// Runs `cmd` in the host namespace with tracefs mounted (ip netns exec
    /// gives a fresh /sys without it), as a child killed on drop.
    pub fn spawn_in_host(&mut self, cmd: &[&str]) -> Monitor {
        // `ip netns exec` mounts a /sys of its own, without tracefs.
        let host = self.host.clone();
        self.spawn_with(&["ip", "netns", "exec", &host], "mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null; ", cmd)
    }

    /// As [`Lab::spawn_in_host`], entered by `launcher` (e.g. `nsenter
    /// --net=…`, which, unlike `ip netns exec`, leaves /sys as it was),
    /// after the shell commands of `prelude`.
    pub fn spawn_with(&mut self, launcher: &[&str], prelude: &str, cmd: &[&str]) -> Monitor {
        let mut script = format!("{prelude}exec");
        for arg in cmd {
            script.push_str(&format!(" '{}'", arg.replace('\'', "'\\''")));
        }
        let mut child = Command::new(launcher[0])
            .args(&launcher[1..])
            .args(["sh", "-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn monitor");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        let out = thread::spawn(move || {
            BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>()
        });
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Monitor { child: Some(child), stderr_lines: lines, stderr: Vec::new(), stdout: Some(out) }
    }

    /// The usual run for watching the monitor itself: an iperf3 server in
    /// the remote, and the monitor on `vh` reporting every second, quiet,
    /// exporting every IP (-t 0) on a free port, counting.
    pub fn start_counting(&mut self) -> (Monitor, u16) {
        self.start_iperf_server();
        let port = free_port();
        let mut monitor = self.spawn_in_host(&[BIN, "-b", "bpftrace", "-i", "vh", "-d", "0", "-s", "1", "-q", "-t", "0", "-p", &port.to_string()]);
        monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(120));
        (monitor, port)
    }

    pub fn start_iperf_server(&mut self) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.remote, "iperf3", "-s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 -s");
        self.children.push(child);
        // Wait until it listens (control port 5201).
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let ss = run(&["ip", "netns", "exec", &self.remote, "ss", "-Hltn", "sport = :5201"]);
            if !ss.stdout.is_empty() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("iperf3 server did not start");
    }

    /// A UDP flow of `bytes` in 1200-byte datagrams with socat (iperf3
    /// 3.12's UDP mode hangs between namespaces), between the host
    /// (192.0.2.1 or 2001:db8::1) and `remote_ip`, up from the host or
    /// down to it; a receiver in the other namespace swallows it so no ICMP
    /// errors come back. Each datagram is 1228 bytes at L3 over IPv4 (20 +
    /// 8), 1248 over IPv6 (40 + 8).
    pub fn udp_flow(&mut self, upload: bool, remote_ip: &str, bytes: u64) {
        let (sender_ns, receiver_ns) =
            if upload { (self.host.clone(), self.remote.clone()) } else { (self.remote.clone(), self.host.clone()) };
        let (v6, host) = if remote_ip.contains(':') { (true, "2001:db8::1") } else { (false, "192.0.2.1") };
        let (dest, source) = if upload { (remote_ip, host) } else { (host, remote_ip) };
        let bracket = |a: &str| if v6 { format!("[{a}]") } else { a.to_string() };
        let (dest, source, udp) = (bracket(dest), bracket(source), if v6 { "UDP6" } else { "UDP4" });
        let port = if upload { "9999" } else { "9998" };
        let bound = format!("src {dest}:{port}");
        let listening = run(&["ip", "netns", "exec", &receiver_ns, "ss", "-Hlun", &bound]);
        if listening.stdout.is_empty() {
            let receiver = Command::new("ip")
                .args(["netns", "exec", &receiver_ns, "socat", "-u"])
                .arg(format!("{udp}-RECV:{port},bind={dest}"))
                .arg("/dev/null")
                .spawn()
                .expect("socat receiver");
            self.children.push(receiver);
            self.wait_for_udp_socket(&receiver_ns, &bound);
        }
        run(&[
            "ip", "netns", "exec", &sender_ns, "socat", "-u", "-b", "1200",
            &format!("OPEN:/dev/zero,readbytes={bytes}"),
            &format!("{udp}-SENDTO:{dest}:{port},bind={source}"),
        ]);
    }

    /// From the host, 100 datagrams of 100 bytes (128 at L3) to the
    /// broadcast address of vh's subnet, and 100 (148 at L3) to a
    /// multicast group the sender joined: the kernel loops both back to the
    /// host, with its own address as their source. None is a peer's.
    /// [`NOT_PEERS`] are the addresses they show.
    fn own_broadcasts_and_looped_multicast(&self) {
        // vh is 192.0.2.1/24, given no `brd`: the kernel makes the broadcast
        // route for 192.0.2.255 anyway. The host picks 2001:db8::1 as the
        // source of the multicast to ff0e::1 (global scope) on vh.
        self.host_shell(
            "python3 -c \"\n\
import socket, struct\n\
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
b.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n\
vh = socket.if_nametoindex('vh')\n\
m = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
m.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, vh)\n\
m.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, socket.inet_pton(socket.AF_INET6, 'ff0e::1') + struct.pack('@I', vh))\n\
for _ in range(100):\n\
\x20   b.sendto(b'x' * 100, ('192.0.2.255', 9))\n\
\x20   m.sendto(b'x' * 100, ('ff0e::1', 9))\n\
\"",
        );
    }

    /// Sends [`Self::own_broadcasts_and_looped_multicast`], then a flow of
    /// 500 datagrams (614,000 bytes at L3) to 203.0.113.9, stops `monitor`
    /// and checks its summary: no row for any of [`NOT_PEERS`], the flow to
    /// the byte.
    pub fn assert_own_broadcasts_count_for_no_peer(&mut self, monitor: Monitor) {
        self.own_broadcasts_and_looped_multicast();
        self.udp_flow(true, "203.0.113.9", 600_000);
        let finished = monitor.interrupt();
        assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
        let counted = summary_rows(&finished.stdout);
        println!("{counted:?}");
        for own in NOT_PEERS {
            assert!(!counted.contains_key(own), "{own} is no peer: {counted:?}");
        }
        assert_eq!(counted["203.0.113.9"].0, 500 * 1228, "the flow beside them, to the byte");
        assert_eq!(self.truth()[&("203.0.113.9".to_string(), "tx")], 500 * 1228);
    }

    /// Waits until a UDP socket bound as `bound` (an `ss` filter: `src
    /// ADDRESS:PORT`) is there in namespace `ns`.
    fn wait_for_udp_socket(&self, ns: &str, bound: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let ss = run(&["ip", "netns", "exec", ns, "ss", "-Hlun", bound]);
            if !ss.stdout.is_empty() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("no UDP socket {bound} in {ns} within 10 s");
    }

    /// Scrapes `/metrics` in the host namespace until `ready` holds for the
    /// body, or `timeout` passes; returns the last body (the caller's
    /// assertions then say what is missing).
    pub fn scrape_until(&self, port: u16, timeout: Duration, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let body = self.http_get_in_host(port, "/metrics");
            if ready(&body) || Instant::now() >= deadline {
                return body;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Scrapes until the monitor holds, over all its byte families, at
    /// least what nftables has counted so far for `remotes`
    /// (addresses or ranges of the truth table), in both directions: the
    /// report with that traffic has arrived. Waits at most 20 s.
    pub fn scrape_when_counted(&self, port: u16, remotes: &[&str]) -> String {
        let truth = self.truth();
        let want = |dir| remotes.iter().map(|r| truth[&(r.to_string(), dir)]).sum::<u64>() as f64;
        let (tx, rx) = (want("tx"), want("rx"));
        self.scrape_until(port, Duration::from_secs(20), |m| family_sum(m, "tx") >= tx && family_sum(m, "rx") >= rx)
    }

    /// Scrapes until each `(remote IP, "tx"|"rx", bytes)` has a series with
    /// at least those bytes (location labels Unknown); at most 20 s.
    pub fn scrape_when_series_hold(&self, port: u16, want: &[(&str, &str, f64)]) -> String {
        self.scrape_until(port, Duration::from_secs(20), |m| {
            want.iter().all(|(ip, dir, bytes)| metric_value(m, &byte_series(dir, ip)).is_some_and(|v| v >= *bytes))
        })
    }

    /// An iperf3 client in the host namespace; panics if it keeps failing.
    /// iperf3 3.12's server sometimes refuses a test that follows another
    /// too closely ("Resource temporarily unavailable"), so it is retried;
    /// the byte counts do not care, nftables counts whatever was sent.
    /// TCP upload and download, UDP both ways, IPv4 and IPv6: about 58 MB
    /// to and from five remote IPs (needs the iperf3 server).
    pub fn mixed_traffic(&mut self) {
        self.iperf(&["-c", "198.51.100.7", "-n", "15M"]);
        self.iperf(&["-c", "198.51.100.8", "-n", "15M", "-R"]);
        self.udp_flow(true, "203.0.113.9", 4_000_000);
        self.udp_flow(false, "203.0.113.9", 4_000_000);
        self.iperf(&["-6", "-c", "2001:db8:2::7", "-n", "10M"]);
        self.iperf(&["-6", "-c", "2001:db8::2", "-n", "10M", "-R"]);
    }

    /// Lets the remote namespace send from any address of 198.18.0.0/15 and
    /// of 2001:db8:100::/48 (AnyIP local routes), and the host take them in
    /// (rp_filter off).
    pub fn accept_any_source_in_remote(&self) {
        run(&["ip", "-n", &self.remote, "route", "add", "local", MANY_IPS_RANGE, "dev", "lo"]);
        run(&["ip", "-n", &self.remote, "-6", "route", "add", "local", MANY_IPS_RANGE_V6, "dev", "lo"]);
        // IPv6 binds only configured addresses without this (no AnyIP by route alone).
        run(&["ip", "netns", "exec", &self.remote, "sysctl", "-qw", "net.ipv6.ip_nonlocal_bind=1"]);
        for ns in [&self.host, &self.remote] {
            for key in ["net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"] {
                run(&["ip", "netns", "exec", ns, "sysctl", "-qw", key]);
            }
        }
    }

    /// One 2-byte UDP datagram to the host from each of `count` distinct
    /// addresses of 198.18.0.0/15 (wrapping past 131,072), sent from the
    /// remote namespace by a small Python loop (bind, send, close).
    pub fn udp_from_remote_sources(&self, count: u32) {
        self.udp_from_many_sources(false, count, 1);
    }

    /// `packets` 2-byte UDP datagrams to the host from each of `count`
    /// distinct addresses: of 198.18.0.0/15 (wrapping past 131,072), or
    /// with `v6` of 2001:db8:100::/48 (2001:db8:100::HIGH:LOW).
    /// Four senders share the work, so a million sources take seconds, not
    /// a minute; at the lowest CPU priority, as a real flood comes from the
    /// network and not from processes competing with the monitor for the CPU.
    pub fn udp_from_many_sources(&self, v6: bool, count: u32, packets: u32) {
        const SENDERS: u32 = 4;
        let share = count.div_ceil(SENDERS);
        let senders: Vec<Child> = (0..SENDERS)
            .map(|k| {
                let script = Self::sender_script(v6, k * share, ((k + 1) * share).min(count), packets);
                Command::new("nice")
                    .args(["-n", "19", "ip", "netns", "exec", &self.remote, "python3", "-c", &script])
                    .spawn()
                    .expect("python3")
            })
            .collect();
        for mut sender in senders {
            assert!(sender.wait().expect("sender").success(), "a sender failed");
        }
    }

    /// From the remote namespace to the host, one packet from each of
    /// `sources`, whatever they are: raw IP packets the script writes whole
    /// (protocol 253, for experiments: RFC 3692), 30 bytes at L3 (IPv4) or
    /// 50 (IPv6). The host drops them after its prerouting hook, where the
    /// monitor counts; IPv6 drops multicast and loopback sources before it.
    /// A datagram to each of the host's addresses first, so that no probe
    /// waits for a neighbour.
    pub fn raw_from_sources(&self, sources: &[std::net::IpAddr]) {
        let list: Vec<String> = sources.iter().map(|source| format!("'{source}'")).collect();
        let script = format!(
            "import socket, struct, time\n\
             socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('192.0.2.1', 9))\n\
             socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b'x', ('2001:db8::1', 9))\n\
             time.sleep(0.5)\n\
             s4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)\n\
             s6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)\n\
             to4, to6 = socket.inet_aton('192.0.2.1'), socket.inet_pton(socket.AF_INET6, '2001:db8::1')\n\
             for a in [{}]:\n\
             \x20   if ':' in a:\n\
             \x20       head = struct.pack('!IHBB16s16s', 6 << 28, 10, 253, 64, socket.inet_pton(socket.AF_INET6, a), to6)\n\
             \x20       s6.sendto(head + b'x' * 10, ('2001:db8::1', 0))\n\
             \x20   else:\n\
             \x20       head = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 30, 0, 0, 64, 253, 0, socket.inet_aton(a), to4)\n\
             \x20       s4.sendto(head + b'x' * 10, ('192.0.2.1', 0))\n",
            list.join(", ")
        );
        let status = Command::new("ip").args(["netns", "exec", &self.remote, "python3", "-c", &script]).status().expect("python3");
        assert!(status.success(), "the raw sender failed");
    }

    fn sender_script(v6: bool, first: u32, end: u32, packets: u32) -> String {
        format!(
            "import socket\n\
             v6 = {v6}\n\
             for i in range({first}, {end}):\n\
             \x20   if v6:\n\
             \x20       s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
             \x20       s.bind(('2001:db8:100::%x:%x' % (i >> 16, i & 0xffff), 0))\n\
             \x20       to = ('2001:db8::1', 9)\n\
             \x20   else:\n\
             \x20       n = 0xC6120000 + (i % 131072)\n\
             \x20       s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             \x20       s.bind((socket.inet_ntoa(n.to_bytes(4, 'big')), 0))\n\
             \x20       to = ('192.0.2.1', 9)\n\
             \x20   for _ in range({packets}):\n\
             \x20       s.sendto(b'x\\n', to)\n\
             \x20   s.close()\n",
            v6 = if v6 { "True" } else { "False" }
        )
    }

    /// As the unprivileged user 65534 in the host namespace, a process that
    /// names itself `name` (prctl PR_SET_NAME: any bytes but NUL, the
    /// kernel keeps 15) sends one 1-byte UDP datagram to each of `dests`.
    pub fn udp_as_nobody_named(&self, name: &[u8], dests: &[String]) {
        let hex: String = name.iter().map(|b| format!("{b:02x}")).collect();
        let script = "import ctypes, socket, sys\n\
                      ctypes.CDLL(None).prctl(15, bytes.fromhex(sys.argv[1]), 0, 0, 0)\n\
                      s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                      for d in sys.argv[2:]:\n\
                      \x20   s.sendto(b'x', (d, 9))\n";
        let mut args = vec!["ip", "netns", "exec", &self.host, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
        // The system interpreter: a per-user one (pyenv) is not readable by uid 65534.
        args.extend(["/usr/bin/python3", "-c", script, &hex]);
        args.extend(dests.iter().map(String::as_str));
        run(&args);
    }

    /// Sends one datagram from the host to each of `addrs` (on the veths'
    /// subnets) and waits until the kernel has resolved their link-layer
    /// addresses: packets queued behind an unresolved neighbour can be dropped
    /// after nftables' output hook, before they reach a device.
    pub fn resolve_neighbours(&self, addrs: &[&str]) {
        for addr in addrs {
            self.host_shell(&format!("echo x > /dev/udp/{addr}/9"));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let out = run(&["ip", "-n", &self.host, "neigh", "show", "to", addr]);
                if String::from_utf8_lossy(&out.stdout).contains("lladdr") {
                    break;
                }
                assert!(Instant::now() < deadline, "neighbour {addr} not resolved within 10 s");
                thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts a shell command in the host namespace without waiting for
    /// it (see [`wait_until_gone`]); it is killed when the lab goes.
    pub fn host_shell_in_background(&mut self, script: &str) -> u32 {
        let child = Command::new("ip").args(["netns", "exec", &self.host, "bash", "-c", script]).spawn().expect("bash");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Runs a shell command in the host namespace and waits for it.
    pub fn host_shell(&self, script: &str) {
        run(&["ip", "netns", "exec", &self.host, "bash", "-c", script]);
    }

    pub fn iperf(&self, args: &[&str]) {
        self.iperf_in(&self.host, args);
    }

    /// The body of `GET path` from a server in the host namespace (bash's
    /// /dev/tcp: the test process itself cannot enter the namespace).
    pub fn http_get_in_host(&self, port: u16, path: &str) -> String {
        let (head, body) = self.http_response_in_host(port, path);
        assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
        body
    }

    /// The head and body of `GET path` from a server in the host namespace.
    pub fn http_response_in_host(&self, port: u16, path: &str) -> (String, String) {
        let script = format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port}; \
             printf 'GET {path} HTTP/1.1\\r\\nHost: lab\\r\\nConnection: close\\r\\n\\r\\n' >&3; cat <&3"
        );
        let out = run(&["ip", "netns", "exec", &self.host, "bash", "-c", &script]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
        (head.to_string(), body.to_string())
    }

    /// A fresh directory for this test's files, deleted with the lab.
    pub fn temp_dir(&mut self, name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("itm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        self.temp_dirs.push(dir.clone());
        dir
    }

    /// Starts Prometheus in the host namespace, scraping `target` every
    /// second; its API listens on 127.0.0.1:9090 there. Killed on drop.
    pub fn start_prometheus(&mut self, target: &str) {
        let dir = std::env::temp_dir().join(format!("itm-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: ip_traffic\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("prometheus.yml");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.host, "prometheus"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .args(["--web.listen-address=127.0.0.1:9090", "--log.level=warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus");
        self.children.push(child);
        self.temp_dirs.push(dir);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.promql("up").iter().any(|(_, v)| *v == 1.0) {
                return;
            }
            thread::sleep(Duration::from_millis(500));
        }
        panic!("Prometheus did not scrape {target} with up == 1 within 60 s");
    }

    /// Waits until the lab's Prometheus has scraped at least the bytes of
    /// `exposition` (a scrape taken by the test), in both directions.
    pub fn wait_until_prometheus_has(&self, exposition: &str) {
        for dir in ["tx", "rx"] {
            let want = family_sum(exposition, dir);
            let expr = format!("sum(ip_traffic_{dir}_bytes_total) + sum(ip_traffic_unexported_{dir}_bytes_total)");
            let deadline = Instant::now() + Duration::from_secs(20);
            while !self.promql(&expr).first().is_some_and(|(_, v)| *v >= want) {
                assert!(Instant::now() < deadline, "Prometheus did not scrape {want} {dir} bytes within 20 s");
                thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// An instant PromQL query against the lab's Prometheus: (labels, value) per series.
    pub fn promql(&self, expr: &str) -> Vec<(String, f64)> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.host, "promtool", "query", "instant", "http://127.0.0.1:9090", expr])
            .output()
            .expect("promtool query");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let (labels, rest) = line.split_once(" => ")?;
                let value = rest.split_whitespace().next()?.parse().ok()?;
                Some((labels.to_string(), value))
            })
            .collect()
    }

    /// Like [`Lab::promql`], each result named by the value of its label `label`.
    pub fn promql_labelled(&self, expr: &str, label: &str) -> Vec<(String, f64)> {
        let key = format!("{label}=\"");
        self.promql(expr)
            .into_iter()
            .filter_map(|(labels, value)| {
                let start = labels.find(&key)? + key.len();
                let end = labels[start..].find('"')? + start;
                Some((labels[start..end].to_string(), value))
            })
            .collect()
    }

    fn iperf_in(&self, ns: &str, args: &[&str]) {
        let mut cmd = vec!["ip", "netns", "exec", ns, "iperf3"];
        cmd.extend_from_slice(args);
        let mut last = String::new();
        for _ in 0..5 {
            let out = Command::new(cmd[0]).args(&cmd[1..]).output().expect("iperf3");
            if out.status.success() {
                return;
            }
            last = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            thread::sleep(Duration::from_millis(500));
        }
        panic!("iperf3 {args:?}: {last}");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in &self.temp_dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        // Deleting the namespaces removes their veths and nft tables.
        for ns in [Some(&self.host), Some(&self.remote), self.lan.as_ref()].into_iter().flatten() {
            let _ = Command::new("ip").args(["netns", "pids", ns]).output().map(|out| {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            });
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The monitor running in the lab.
pub struct Monitor {
    child: Option<Child>,
    stderr_lines: Receiver<String>,
    pub stderr: Vec<String>,
    stdout: Option<thread::JoinHandle<Vec<String>>>,
}

pub struct Finished {
    pub code: Option<i32>,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

impl Monitor {
    /// Waits for a stderr line containing `needle`; panics after `timeout`.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while let Ok(line) = self.stderr_lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            let found = line.contains(needle);
            self.stderr.push(line);
            if found {
                return;
            }
        }
        panic!("no '{needle}' on the monitor's stderr within {timeout:?}: {:?}", self.stderr);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The monitor's first child: its backend (bpftrace or iftop).
    pub fn backend_pid(&self) -> u32 {
        children(self.pid()).first().copied().expect("a backend child")
    }

    /// Stops the monitor with SIGINT (as Ctrl-C would) and collects its output.
    pub fn interrupt(self) -> Finished {
        self.signal("-INT")
    }

    /// Stops the monitor with SIGTERM (as systemd would).
    pub fn terminate(self) -> Finished {
        self.signal("-TERM")
    }

    fn signal(self, signal: &str) -> Finished {
        if let Some(child) = &self.child {
            let _ = Command::new("kill").args([signal, &child.id().to_string()]).status();
        }
        self.finish()
    }

    /// Waits for the monitor to exit on its own.
    pub fn finish(mut self) -> Finished {
        let mut child = self.child.take().expect("child");
        let code = child.wait().expect("wait").code();
        let stdout = self.stdout.take().expect("stdout").join().expect("stdout thread");
        let mut stderr = std::mem::take(&mut self.stderr);
        // To the end of the pipe, as stdout: when the child has exited, its
        // last lines may still be on their way through the reader thread.
        stderr.extend(self.stderr_lines.iter());
        Finished { code, stdout, stderr }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `signal` (as `kill` spells it: "-STOP", "-USR1") to `pid`.
pub fn signal(signal: &str, pid: u32) {
    let sent = Command::new("kill").args([signal, &pid.to_string()]).status().expect("kill");
    assert!(sent.success(), "kill {signal} {pid}");
}

/// A `/proc/PID/status` field in KiB (`VmRSS:`, `VmHWM:`), 0 if unreadable.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

/// The processes `pid` started, from /proc.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether process `pid` has exited (gone, or a zombie not yet reaped).
pub fn is_gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |stat| stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
}

/// Polls until `pid` is gone; false if it is still there after `timeout`.
pub fn wait_until_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !is_gone(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    true
}

/// The final summary's rows: remote IP → (tx bytes, rx bytes, process).
pub fn summary_rows(stdout: &[String]) -> BTreeMap<String, (u64, u64, String)> {
    let start = stdout.iter().position(|l| l.starts_with("== Summary")).expect("a summary");
    let mut rows = BTreeMap::new();
    for line in &stdout[start + 1..] {
        let w: Vec<&str> = line.split_whitespace().collect();
        // IP, TX value, unit, RX value, unit, TX bytes, RX bytes, PID, PROCESS
        if w.len() >= 9 && w[0] != "REMOTE" {
            let process = w[8..].join(" ");
            rows.insert(w[0].to_string(), (w[5].parse().expect("tx"), w[6].parse().expect("rx"), process));
        }
    }
    rows
}

/// A file written for one test and removed when dropped.
pub struct TempFile(std::path::PathBuf);

impl TempFile {
    pub fn new(name: &str, bytes: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("itm-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).expect("write the test file");
        TempFile(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A bpftrace script written for one test and removed when dropped.
pub fn script(name: &str, body: &str) -> TempFile {
    TempFile::new(&format!("{name}.bt"), body.as_bytes())
}

/// The value of the sample `name{...labels}` (or bare `name`) in an exposition.
pub fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The bytes of the per-IP series in one direction whose remote IP starts with `prefix`.
pub fn series_sum(exposition: &str, dir: &str, prefix: &str) -> f64 {
    let series = format!("ip_traffic_{dir}_bytes_total{{remote_ip=\"{prefix}");
    exposition
        .lines()
        .filter(|l| l.starts_with(&series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every byte an exposition holds in one direction ("tx" or "rx"): the
/// per-IP series plus the unexported sum.
pub fn family_sum(exposition: &str, dir: &str) -> f64 {
    let series = format!("ip_traffic_{dir}_bytes_total{{");
    let unexported = format!("ip_traffic_unexported_{dir}_bytes_total");
    metric_value(exposition, &unexported).unwrap_or(0.0)
        + exposition
            .lines()
            .filter(|l| l.starts_with(&series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
}

/// Counted bytes against nftables: equal, except that each probe run the
/// kernel skipped (another BPF program was running on that CPU; the monitor
/// exports the count as ip_traffic_monitor_missed_probe_runs_total) may
/// have missed one packet of at most `max_packet` bytes. Says which it was.
pub fn assert_counted(what: &str, want: f64, got: f64, metrics: &str, max_packet: f64) {
    let skipped = metric_value(metrics, "ip_traffic_monitor_missed_probe_runs_total").unwrap_or(0.0);
    println!("{what}: nftables {want}, counted {got}, probe runs the kernel skipped {skipped}");
    if skipped == 0.0 {
        assert_eq!(got, want, "{what}: every byte once");
    } else {
        assert!(got <= want && want - got <= skipped * max_packet, "{what}: {got} of {want}, more missing than {skipped} skipped probe runs explain");
    }
}

/// The byte-counter series name for `ip` with unknown location labels.
pub fn byte_series(direction: &str, ip: &str) -> String {
    format!(
        "ip_traffic_{direction}_bytes_total{{remote_ip=\"{ip}\",country=\"Unknown\",province=\"Unknown\",city=\"Unknown\",isp=\"Unknown\"}}"
    )
}

/// A TCP port free on this machine's loopback at the moment of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Runs `promtool check metrics` on an exposition: (passed, what it said).
pub fn promtool_check(exposition: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child.stdin.take().expect("stdin").write_all(exposition.as_bytes()).expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

/// Compares every lab remote IP and direction with nftables, printing a
/// table (expected, counted, difference); returns the total nftables bytes
/// and the rows outside `bound` (a fraction of the nftables figure).
pub fn compare_with_nftables(
    counted: &BTreeMap<String, (u64, u64, String)>,
    truth: &BTreeMap<(String, &'static str), u64>,
    bound: f64,
) -> (u64, Vec<String>) {
    println!("{:<16} {:<3} {:>12} {:>12} {:>8} {:>7}", "remote", "dir", "nftables", "counted", "diff", "%");
    let mut total = 0;
    let mut failures = Vec::new();
    for ip in REMOTE_V4.iter().chain(REMOTE_V6.iter()) {
        let row = counted.get(*ip);
        for (dir, got) in [("tx", row.map_or(0, |r| r.0)), ("rx", row.map_or(0, |r| r.1))] {
            let want = truth[&(ip.to_string(), dir)];
            total += want;
            let diff = got as i64 - want as i64;
            let pct = 100.0 * diff as f64 / want.max(1) as f64;
            println!("{ip:<16} {dir:<3} {want:>12} {got:>12} {diff:>8} {pct:>6.2}%");
            if want == 0 || diff.unsigned_abs() as f64 > bound * want as f64 {
                failures.push(format!("{ip} {dir}: nftables {want}, counted {got}"));
            }
        }
    }
    (total, failures)
}
