//! What monitoring costs the traffic, measured in the lab's namespaces (root,
//! bpftrace, iftop and iperf3 needed; skipped with a note otherwise):
//!
//! - a 10 s TCP stream (iperf3) and a 10 s flood of 100-byte UDP packets
//!   (72-byte payloads, sent by this binary re-run as a sender in the host
//!   namespace, counted by itself re-run as a sink in the remote one), each
//!   unmonitored, under the nftables backend (the kernel counts in sets,
//!   the monitor reads them every 2 s), under the bpftrace backend, under the iftop backend and
//!   under a plain iftop, and under bpftrace running empty programs on the
//!   script's two tracepoints (the kernel's own cost of the attachment, a
//!   floor no script can go under), in paired rounds (A B C D E, ...) so the
//!   machine's drift hits every mode alike; figures are medians, and
//!   throughput is given as a ratio to the unmonitored run of the same round;
//! - the CPU seconds the monitor and its child spent per GB transferred
//!   (utime + stime from /proc, over the traffic only; BPF programs run in
//!   the kernel's packet path and show up as lost throughput instead);
//! - the bpftrace backend's programs' own run time (kernel.bpf_stats_enabled,
//!   one extra run per load so the paired rounds run without the stats' cost):
//!   ns per program run, and CPU seconds per GB;
//! - resident memory of the monitor and of its child, idle and with 100,000
//!   tracked remote IPs, for the nftables and the bpftrace backend;
//! - one nftables harvest of 100,000 set elements (the dump of the
//!   generation that holds them, then the swap), timed in this process.
//!
//! Run: make bench (BENCH_ROUNDS=N for more rounds than 3).

#[path = "../tests/lab/mod.rs"]
#[allow(dead_code)]
mod lab;

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ip_traffic_monitor_cli::backend::bpftrace;
use lab::Lab;

const SECONDS: u64 = 10;
/// 72 bytes of payload + 8 UDP + 20 IPv4 = 100-byte packets.
const PAYLOAD: usize = 72;
const SINK_PORT: u16 = 9999;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Unmonitored,
    NftablesBackend,
    BpftraceBackend,
    IftopBackend,
    PlainIftop,
    EmptyProbes,
}

const MODES: [Mode; 6] =
    [Mode::Unmonitored, Mode::NftablesBackend, Mode::BpftraceBackend, Mode::IftopBackend, Mode::PlainIftop, Mode::EmptyProbes];

/// The script's two tracepoints with nothing to do.
const EMPTY_PROBES: &str = "tracepoint:net:net_dev_queue {} tracepoint:net:netif_receive_skb {}";

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Unmonitored => "unmonitored",
            Mode::NftablesBackend => "monitor -b nftables",
            Mode::BpftraceBackend => "monitor -b bpftrace",
            Mode::IftopBackend => "monitor -b iftop",
            Mode::PlainIftop => "plain iftop -t",
            Mode::EmptyProbes => "bpftrace, empty probes",
        }
    }
}

/// One measured run: what got through, and the watchers' CPU time.
struct Run {
    rate: f64,
    bytes: u64,
    cpu_seconds: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--udp-flood") => return udp_flood(&args[2]),
        Some("--udp-sink") => return udp_sink(),
        Some("--harvest") => return harvest_time(),
        Some("--memory") => return memory_table(&product_binary(), "nftables"),
        Some("--rule-cost") => return rule_cost(&product_binary()),
        _ => {}
    }
    if !lab::is_root() || !["bpftrace", "iftop", "iperf3", "nft", "python3"].iter().all(|t| lab::on_path(t)) {
        println!("| overhead | skipped: needs root, bpftrace, iftop, iperf3, nft and python3 (make deps) | |");
        return;
    }
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let bin = product_binary();
    throughput_table("TCP stream (iperf3)", "Gbit/s", 1e-9 * 8.0, rounds, &bin, tcp_stream);
    throughput_table("UDP flood, 100-byte packets", "k packets/s", 1e-3, rounds, &bin, udp_flood_run);
    memory_table(&bin, "bpftrace");
    memory_table(&bin, "nftables");
    harvest_time();
}

/// The static binary users run, when `make release` built it.
fn product_binary() -> String {
    let static_bin = concat!(env!("CARGO_MANIFEST_DIR"), "/target/static/ip_traffic_monitor_cli");
    if std::path::Path::new(static_bin).exists() { static_bin.to_string() } else { lab::BIN.to_string() }
}

fn throughput_table(load: &str, unit: &str, scale: f64, rounds: usize, bin: &str, run: fn(&mut Lab) -> (f64, u64)) {
    let mut results: Vec<Vec<Run>> = MODES.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (m, &mode) in MODES.iter().enumerate() {
            results[m].push(measure(mode, bin, run));
        }
    }
    print_rows(load, unit, scale, rounds, &results);
    print_probe_cost(load, bin, run);
}

fn print_rows(load: &str, unit: &str, scale: f64, rounds: usize, results: &[Vec<Run>]) {
    for (m, &mode) in MODES.iter().enumerate() {
        let rates: Vec<f64> = results[m].iter().map(|r| r.rate).collect();
        let ratios: Vec<f64> = (0..rounds).map(|i| results[m][i].rate / results[0][i].rate).collect();
        let per_gb: Vec<f64> = results[m].iter().map(|r| r.cpu_seconds / (r.bytes as f64 / 1e9)).collect();
        let cpu = if mode == Mode::Unmonitored { "-".to_string() } else { format!("{:.3}", median(&per_gb)) };
        println!(
            "| {load}: {} | {:.2} {unit} | ratio {:.3} (min {:.3}, max {:.3}) | CPU s/GB {cpu} |",
            mode.name(),
            median(&rates) * scale,
            median(&ratios),
            ratios.iter().cloned().fold(f64::INFINITY, f64::min),
            ratios.iter().cloned().fold(0.0, f64::max),
        );
    }
}

fn measure(mode: Mode, bin: &str, run: fn(&mut Lab) -> (f64, u64)) -> Run {
    let mut lab = Lab::new();
    let mut watchers: Vec<u32> = Vec::new();
    let mut monitor = None;
    let mut plain: Option<Child> = None;
    match mode {
        Mode::Unmonitored => {}
        Mode::NftablesBackend | Mode::BpftraceBackend | Mode::IftopBackend => {
            let backend = match mode {
                Mode::NftablesBackend => "nftables",
                Mode::BpftraceBackend => "bpftrace",
                _ => "iftop",
            };
            let mut m = lab.spawn_in_host(&[bin, "-b", backend, "-i", "vh", "-d", "0", "-q", "-s", "2"]);
            m.wait_for_stderr("counting with", Duration::from_secs(120));
            watchers.push(m.pid());
            watchers.extend(lab::children(m.pid()));
            monitor = Some(m);
        }
        Mode::EmptyProbes => {
            let m = lab.spawn_in_host(&["bpftrace", "-e", EMPTY_PROBES]);
            wait_for_programs(m.pid(), 2);
            watchers.push(m.pid());
            monitor = Some(m);
        }
        Mode::PlainIftop => {
            let child = Command::new("ip")
                .args(["netns", "exec", &lab.host, "iftop", "-t", "-n", "-N", "-B", "-L", "1000000", "-i", "vh"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("iftop");
            std::thread::sleep(Duration::from_secs(2)); // libpcap opened
            watchers.push(child.id());
            plain = Some(child);
        }
    }
    let before = cpu_seconds(&watchers);
    let (rate, bytes) = run(&mut lab);
    let cpu_seconds = cpu_seconds(&watchers) - before;
    drop(monitor);
    if let Some(mut child) = plain {
        let _ = child.kill();
        let _ = child.wait();
    }
    Run { rate, bytes, cpu_seconds }
}

/// One more run under the bpftrace backend with the kernel's BPF run-time
/// statistics on: what the programs themselves cost per run and per GB.
fn print_probe_cost(load: &str, bin: &str, run: fn(&mut Lab) -> (f64, u64)) {
    let mut lab = Lab::new();
    let mut monitor = lab.spawn_in_host(&[bin, "-b", "bpftrace", "-i", "vh", "-d", "0", "-q", "-s", "2"]);
    monitor.wait_for_stderr("counting with", Duration::from_secs(120));
    let bpftrace = lab::children(monitor.pid());
    let stats = "/proc/sys/kernel/bpf_stats_enabled";
    let was = std::fs::read_to_string(stats).unwrap_or_else(|_| "0".into());
    let _ = std::fs::write(stats, "1");
    let before = program_stats(&bpftrace);
    let (_, bytes) = run(&mut lab);
    let after = program_stats(&bpftrace);
    let _ = std::fs::write(stats, was.trim());
    let (ns, runs) = (after.0 - before.0, after.1 - before.1);
    println!(
        "| {load}: bpftrace programs' own run time (bpf_stats) | {:.0} ns per run | {:.1} M runs | BPF CPU s/GB {:.3} |",
        ns as f64 / runs.max(1) as f64,
        runs as f64 / 1e6,
        ns as f64 / 1e9 / (bytes as f64 / 1e9),
    );
}

/// Sum of run_time_ns and run_cnt over these processes' BPF programs.
fn program_stats(pids: &[u32]) -> (u64, u64) {
    let sum = |field| pids.iter().map(|&pid| bpftrace::program_stat(pid, field)).sum::<u64>();
    (sum("run_time_ns:"), sum("run_cnt:"))
}

/// How many BPF programs `pid` holds (fdinfo entries with a program type).
fn programs_held(pid: u32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return 0 };
    fds.filter_map(Result::ok)
        .filter(|fd| std::fs::read_to_string(fd.path()).is_ok_and(|info| info.contains("prog_type:")))
        .count()
}

/// Waits until `pid` holds `count` BPF programs, then a moment for the attach.
fn wait_for_programs(pid: u32, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while programs_held(pid) < count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
}

/// Bytes per second received by iperf3 in the remote namespace, and bytes.
fn tcp_stream(lab: &mut Lab) -> (f64, u64) {
    lab.start_iperf_server();
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.host, "iperf3", "-c", "198.51.100.7", "-t", &SECONDS.to_string(), "-J"])
        .output()
        .expect("iperf3");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 -J output");
    let received = &report["end"]["sum_received"];
    let bytes = received["bytes"].as_u64().expect("bytes");
    (bytes as f64 / received["seconds"].as_f64().expect("seconds"), bytes)
}

/// Packets per second that reached the sink, and their IP bytes.
fn udp_flood_run(lab: &mut Lab) -> (f64, u64) {
    let me = std::env::current_exe().expect("own path");
    let me = me.to_str().expect("utf-8 path");
    let mut sink = Command::new("ip")
        .args(["netns", "exec", &lab.remote, me, "--udp-sink"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("sink");
    std::thread::sleep(Duration::from_millis(300));
    let flood = Command::new("ip").args(["netns", "exec", &lab.host, me, "--udp-flood", "198.51.100.7"]).status();
    assert!(flood.is_ok_and(|s| s.success()), "flood sender failed");
    let mut out = String::new();
    let _ = sink.stdout.take().expect("sink stdout").read_to_string(&mut out);
    let _ = sink.wait();
    let packets: u64 = out.trim().parse().expect("sink count");
    (packets as f64 / SECONDS as f64, packets * (PAYLOAD as u64 + 28))
}

/// Sends 100-byte packets to `to` as fast as the kernel takes them, for SECONDS.
fn udp_flood(to: &str) {
    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
    socket.connect((to, SINK_PORT)).expect("connect");
    let payload = [0x5au8; PAYLOAD];
    let end = Instant::now() + Duration::from_secs(SECONDS);
    while Instant::now() < end {
        for _ in 0..256 {
            let _ = socket.send(&payload); // ENOBUFS under pressure: the packet is simply not sent
        }
    }
}

/// Counts datagrams until none came for a second, then prints the count.
fn udp_sink() {
    let socket = UdpSocket::bind(("0.0.0.0", SINK_PORT)).expect("bind sink");
    socket.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    let mut buf = [0u8; 2048];
    let mut packets = 0u64;
    // The first packet may take a moment; after it, a quiet second ends the count.
    while socket.recv(&mut buf).is_ok() {
        packets += 1;
        if packets == 1 {
            socket.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
        }
    }
    let _ = writeln!(std::io::stdout(), "{packets}");
}

/// What each part of the nftables table costs the 100-byte flood (which
/// crosses the host's `tx` chain): rounds of the flood without a table,
/// with the monitor's table (the monitor stopped, so only the packet path
/// differs), then with parts of it taken away in turn: the shard chains
/// emptied (no set update: the jump and return remain), the base chain cut
/// to its device rule (no skip lookup, no dispatch), the base chain empty
/// (the hook alone).
fn rule_cost(bin: &str) {
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    println!("| round | no table | whole table | no set update | device rule only | empty base chain |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for round in 1..=rounds {
        let mut lab = Lab::new();
        let nft = |lab: &Lab, command: &str| lab.host_shell(&format!("nft {command}"));
        let none = udp_flood_run(&mut lab).0;
        let mut monitor = lab.spawn_in_host(&[bin, "-b", "nftables", "-i", "vh", "-d", "0", "-q"]);
        monitor.wait_for_stderr("counting with", Duration::from_secs(60));
        lab::signal("-STOP", monitor.pid());
        let whole = udp_flood_run(&mut lab).0;
        for shard in 0..32 {
            nft(&lab, &format!("flush chain inet ip_traffic_monitor tx4_{shard}"));
        }
        let no_update = udp_flood_run(&mut lab).0;
        nft(&lab, "flush chain inet ip_traffic_monitor tx");
        nft(&lab, "add rule inet ip_traffic_monitor tx oifname != vh return");
        let device_only = udp_flood_run(&mut lab).0;
        nft(&lab, "flush chain inet ip_traffic_monitor tx");
        let empty = udp_flood_run(&mut lab).0;
        lab::signal("-CONT", monitor.pid());
        drop(monitor);
        nft(&lab, "delete table inet ip_traffic_monitor");
        let ratio = |rate: f64| format!("{:.0} ({:.3})", rate, rate / none);
        println!("| {round} | {none:.0} | {} | {} | {} | {} |", ratio(whole), ratio(no_update), ratio(device_only), ratio(empty));
    }
}

/// The monitor's memory (and its child's, if it has one), idle and with
/// 100,000 tracked remote IPs at the default export threshold, serving /metrics.
fn memory_table(bin: &str, backend: &str) {
    let mut lab = Lab::new();
    lab.accept_any_source_in_remote();
    let mut monitor =
        lab.spawn_in_host(&[bin, "-b", backend, "-i", "vh", "-d", "0", "-q", "-s", "4", "--max-ips", "200000", "--listen", "127.0.0.1:9464"]);
    monitor.wait_for_stderr("counting with", Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(5));
    let pid = monitor.pid();
    let child = lab::children(pid).first().copied();
    let child_rss = |what: &str| child.map_or_else(|| "no child".to_string(), |c| format!("{what} child {} KiB", rss_kib(c)));
    println!("| RSS idle, no location databases, -b {backend}: monitor | {} KiB | {} | |", rss_kib(pid), child_rss(backend));
    lab.udp_from_remote_sources(100_000);
    std::thread::sleep(Duration::from_secs(8)); // the report, 1/8 to 2/8 of an interval late
    let _ = lab.http_get_in_host(9464, "/metrics");
    println!(
        "| RSS with 100,000 tracked remote IPs, -b {backend}: monitor | {} KiB (peak {} KiB) | {} | |",
        rss_kib(pid),
        lab::status_kib(pid, "VmHWM:"),
        child_rss(backend)
    );
    drop(monitor);
    if backend == "nftables" {
        let size = std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0);
        println!("| binary size ({bin}) | {size} bytes | | |");
    }
}

/// One harvest of a table whose `rx4` sets hold 100,000 peers with bytes:
/// the monitor's own harvest code, with the default `--max-ips`, run on a
/// thread inside the lab's host namespace; without a journal, then with
/// one (as with `--state`), in `BENCH_ROUNDS` rounds (a round moves by
/// ±10 % on a shared machine): each round's figure, then the median.
fn harvest_time() {
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let journal = std::env::temp_dir().join(format!("itm-bench-{}.journal", std::process::id()));
    for with_journal in [false, true] {
        let with = if with_journal { ", written to a journal (--state)" } else { "" };
        let (mut busy, mut quiet) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let _ = std::fs::remove_file(&journal);
            let (took, records, next) = harvest_time_with(with_journal.then(|| journal.clone()));
            assert!(records >= 100_000, "{records} records: the flood did not reach every set");
            busy.push(took);
            quiet.push(next);
        }
        if with_journal {
            let size = std::fs::metadata(&journal).map_or(0, |m| m.len());
            println!("| nftables: the journal after one such round | {size} bytes | | |");
        }
        let each = |v: &[f64]| v.iter().map(|ms| format!("{ms:.1}")).collect::<Vec<_>>().join(", ");
        println!("| nftables: one harvest of 100,000 set elements{with} | {:.1} ms | rounds: {} | |", median(&busy), each(&busy));
        println!("| nftables: the next harvest (those peers quiet){with} | {:.1} ms | rounds: {} | |", median(&quiet), each(&quiet));
    }
    let _ = std::fs::remove_file(journal);
}

/// One round: the harvest of the 100,000 and the one after, in ms, and
/// how many records the first handed over.
fn harvest_time_with(journal: Option<std::path::PathBuf>) -> (f64, usize, f64) {
    use ip_traffic_monitor_cli::backend::in_process::Counter;
    use ip_traffic_monitor_cli::backend::nftables::{harvest::Harvester, table::Layout};
    use ip_traffic_monitor_cli::store::HarvestMarks;
    let lab = Lab::new();
    lab.accept_any_source_in_remote();
    let layout = Layout {
        size: 100_000, // the default --max-ips
        skipped: ip_traffic_monitor_cli::filter::AddressFilter::default().skipped_blocks(),
        iface: None,
    };
    let netns = std::fs::File::open(format!("/var/run/netns/{}", lab.host)).expect("the host namespace");
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let (go_tx, go) = std::sync::mpsc::channel::<()>();
    let harvester = std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: setns with an open namespace descriptor, on this thread only.
        assert_eq!(unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
        let mut harvester = Harvester::new(layout, journal);
        harvester.attach(HarvestMarks::default()).expect("the table");
        ready_tx.send(()).expect("ready");
        go.recv().expect("go");
        let mut report = Vec::new();
        // The first harvest moves the rules to the other generation; the
        // second reads the one that holds the 100,000 peers.
        harvester.harvest(&mut report, HarvestMarks::default()).expect("a harvest");
        let mut timed = |report: &mut Vec<_>| {
            // Harvests are an interval apart.
            std::thread::sleep(Duration::from_secs(2));
            let started = Instant::now();
            harvester.harvest(report, HarvestMarks::default()).expect("a harvest");
            started.elapsed()
        };
        let took = timed(&mut report);
        // And the one after: the peers are quiet now.
        let quiet = timed(&mut Vec::new());
        harvester.detach(&mut Vec::new()).expect("deleted");
        (took, report.len(), quiet)
    });
    ready.recv().expect("the table is there");
    lab.udp_from_remote_sources(100_000);
    go_tx.send(()).expect("go");
    let (took, records, quiet) = harvester.join().expect("harvest thread");
    (took.as_secs_f64() * 1e3, records, quiet.as_secs_f64() * 1e3)
}

/// utime + stime of these processes, in seconds (USER_HZ = 100 on Linux).
fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            Some(fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
        })
        .sum::<f64>()
        / 100.0
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}
