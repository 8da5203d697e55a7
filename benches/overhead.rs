//! What monitoring costs the traffic, measured in the lab's namespaces (root,
//! bpftrace, iftop and iperf3 needed; skipped with a note otherwise):
//!
//! - a 10 s TCP stream (iperf3) and a 10 s flood of 100-byte UDP packets
//!   (72-byte payloads, sent by this binary re-run as a sender in the host
//!   namespace, counted by itself re-run as a sink in the remote one; a
//!   flood in progress: its peer sent 5,000 datagrams 5 s before), each
//!   unmonitored, under the nftables backend (the kernel counts in sets,
//!   the monitor reads them every 2 s), under the bpftrace backend, under the iftop backend and
//!   under a plain iftop, and under bpftrace running empty programs on the
//!   script's two tracepoints (the kernel's own cost of the attachment, a
//!   floor no script can go under), in paired rounds (A B C D E, then E D C
//!   B A, ...) so the machine's drift hits every mode alike; figures are
//!   medians, and throughput is given as a ratio to the unmonitored run of
//!   the same round;
//! - what the nftables backend costs that flood, measured inside one flood
//!   that switches every 0.5 s between with and without (the 10 s rounds
//!   move by ±10 % here, more than that cost): its table hooked and
//!   unhooked, the monitor running and stopped, and its table against the
//!   least table that counts the flood's peer (the floor of counting in
//!   nftables on this machine);
//! - the CPU seconds the monitor and its child spent per GB transferred
//!   (utime + stime from /proc, over the traffic only; BPF programs run in
//!   the kernel's packet path and show up as lost throughput instead);
//! - the bpftrace backend's programs' own run time (kernel.bpf_stats_enabled,
//!   one extra run per load so the paired rounds run without the stats' cost):
//!   ns per program run, and CPU seconds per GB;
//! - resident memory of the monitor and of its child, idle and with 100,000
//!   tracked remote IPs, for the nftables and the bpftrace backend;
//! - what the nftables table costs each flood packet: the sending thread's
//!   CPU time per packet, without a table, with the hook alone, with one set
//!   update, with the monitor's table (a figure the machine's drift does not
//!   move as it moves throughput);
//! - one nftables harvest of 100,000 set elements (the dump of the
//!   generation that holds them, then the swap), timed in this process.
//!
//! Run: make bench (BENCH_ROUNDS=N for more rounds than 3). One part alone:
//! `cargo bench --bench overhead -- --flood` (the flood's paired rounds,
//! then the switching floods; `--alternating`: those alone; `--calibrate`:
//! what the switching method reports when nothing differs),
//! `--hook-cost`, `--harvest` or `--memory`. And what one nftables table
//! costs the flood over another, measured as the switching floods measure
//! the monitor's: `cargo bench --bench overhead -- --table-ab A.nft [B.nft]`
//! (each file a table named `v` whose base chain hooks postrouting; without
//! B, A against no table).

#[path = "../tests/lab/mod.rs"]
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
        Some("--udp-flood-ticks") => return udp_flood_ticks(&args[2]),
        Some("--udp-sink") => return udp_sink(),
        Some("--harvest") => return harvest_time(),
        Some("--memory") => return memory_table(&product_binary(), "nftables"),
        Some("--hook-cost") => return hook_cost(&product_binary()),
        // cargo bench adds `--bench` after the arguments given.
        Some("--table-ab") => return table_ab(args.get(2).expect("--table-ab A.nft [B.nft]"), args.get(3).filter(|b| *b != "--bench")),
        Some("--alternating") => return alternating(&product_binary()),
        Some("--calibrate") => return calibrate(),
        Some("--flood") => {
            throughput_table(&FLOOD, bench_rounds(), &product_binary());
            return alternating(&product_binary());
        }
        _ => {}
    }
    if !lab::is_root() || !["bpftrace", "iftop", "iperf3", "nft", "python3"].iter().all(|t| lab::on_path(t)) {
        println!("| overhead | skipped: needs root, bpftrace, iftop, iperf3, nft and python3 (make deps) | |");
        return;
    }
    let rounds = bench_rounds();
    let bin = product_binary();
    throughput_table(&TCP_STREAM, rounds, &bin);
    throughput_table(&FLOOD, rounds, &bin);
    alternating(&bin);
    hook_cost(&bin);
    memory_table(&bin, "bpftrace");
    memory_table(&bin, "nftables");
    harvest_time();
}

/// `BENCH_ROUNDS`, 3 if unset.
fn bench_rounds() -> usize {
    std::env::var("BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3)
}

/// The static binary users run, when `make release` built it.
fn product_binary() -> String {
    let static_bin = concat!(env!("CARGO_MANIFEST_DIR"), "/target/static/ip_traffic_monitor_cli");
    if std::path::Path::new(static_bin).exists() { static_bin.to_string() } else { lab::BIN.to_string() }
}

/// What the throughput rounds put on the lab: its rows' name, the unit and
/// scale of its rate, what gets it going (not measured), and a run: the
/// rate and the IP bytes that got through.
struct Load {
    name: &'static str,
    unit: &'static str,
    scale: f64,
    warm_up: fn(&Lab),
    run: fn(&mut Lab) -> (f64, u64),
}

const TCP_STREAM: Load = Load { name: "TCP stream (iperf3)", unit: "Gbit/s", scale: 1e-9 * 8.0, warm_up: |_| {}, run: tcp_stream };
const FLOOD: Load = Load { name: "UDP flood, 100-byte packets", unit: "k packets/s", scale: 1e-3, warm_up, run: udp_flood_run };

fn throughput_table(load: &Load, rounds: usize, bin: &str) {
    let mut results: Vec<Vec<Run>> = MODES.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        // Odd rounds in reverse order, so that no mode always comes first
        // after the one before it (and a drift within a round hits each
        // mode from both sides).
        let mut order: Vec<usize> = (0..MODES.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for m in order {
            results[m].push(measure(MODES[m], bin, load));
        }
    }
    print_rows(load.name, load.unit, load.scale, rounds, &results);
    print_probe_cost(load, bin);
}

fn print_rows(load: &str, unit: &str, scale: f64, rounds: usize, results: &[Vec<Run>]) {
    for (m, &mode) in MODES.iter().enumerate() {
        let rates: Vec<f64> = results[m].iter().map(|r| r.rate).collect();
        let ratios: Vec<f64> = (0..rounds).map(|i| results[m][i].rate / results[0][i].rate).collect();
        let per_gb: Vec<f64> = results[m].iter().map(|r| r.cpu_seconds / (r.bytes as f64 / 1e9)).collect();
        let cpu = if mode == Mode::Unmonitored { "-".to_string() } else { format!("{:.3}", median(&per_gb)) };
        let (low, high) = spread(&ratios);
        println!(
            "| {load}: {} | {:.2} {unit} | ratio {:.3} (min {low:.3}, max {high:.3}) | CPU s/GB {cpu} |",
            mode.name(),
            median(&rates) * scale,
            median(&ratios),
        );
    }
}

fn measure(mode: Mode, bin: &str, load: &Load) -> Run {
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
            let m = start_monitor(&mut lab, bin, backend, "2");
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
    (load.warm_up)(&lab);
    let before = cpu_seconds(&watchers);
    let (rate, bytes) = (load.run)(&mut lab);
    let cpu_seconds = cpu_seconds(&watchers) - before;
    drop(monitor);
    if let Some(mut child) = plain {
        let _ = child.kill();
        let _ = child.wait();
    }
    Run { rate, bytes, cpu_seconds }
}

/// The monitor (`bin`) on the lab's `vh` with `backend`, quiet, exporting
/// every IP, reporting every `seconds`, once it says it counts.
fn start_monitor(lab: &mut Lab, bin: &str, backend: &str, seconds: &str) -> lab::Monitor {
    let mut monitor = lab.spawn_in_host(&[bin, "-b", backend, "-i", "vh", "-d", "0", "-q", "-s", seconds]);
    monitor.wait_for_stderr("counting with", Duration::from_secs(120));
    monitor
}

/// One more run under the bpftrace backend with the kernel's BPF run-time
/// statistics on: what the programs themselves cost per run and per GB.
fn print_probe_cost(load: &Load, bin: &str) {
    let mut lab = Lab::new();
    let monitor = start_monitor(&mut lab, bin, "bpftrace", "2");
    let bpftrace = lab::children(monitor.pid());
    (load.warm_up)(&lab);
    let stats = "/proc/sys/kernel/bpf_stats_enabled";
    let was = std::fs::read_to_string(stats).unwrap_or_else(|_| "0".into());
    let _ = std::fs::write(stats, "1");
    let before = program_stats(&bpftrace);
    let (_, bytes) = (load.run)(&mut lab);
    let after = program_stats(&bpftrace);
    let _ = std::fs::write(stats, was.trim());
    let (ns, runs) = (after.0 - before.0, after.1 - before.1);
    println!(
        "| {}: bpftrace programs' own run time (bpf_stats) | {:.0} ns per run | {:.1} M runs | BPF CPU s/GB {:.3} |",
        load.name,
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
    let flood = flood(lab);
    (flood.received as f64 / SECONDS as f64, flood.received * (PAYLOAD as u64 + 28))
}

/// One flood's figures.
struct Flood {
    /// Datagrams that reached the sink.
    received: u64,
    /// Run time of the sending thread per datagram it sent, in ns.
    sender_ns_per_packet: f64,
    /// Of that, inside netfilter's hooks (`nf_hook_slow` and what it
    /// calls), by perf's samples of the sender; `None` without a profile.
    hook_ns_per_packet: Option<f64>,
}

/// A flood from the host to the remote's sink, SECONDS long.
fn flood(lab: &mut Lab) -> Flood {
    flood_profiled(lab, false)
}

/// A flood, the sender sampled by `perf record` if `profile`.
fn flood_profiled(lab: &mut Lab, profile: bool) -> Flood {
    let me = &own_path();
    let mut sink = start_sink(lab, me);
    let samples = std::env::temp_dir().join(format!("itm-bench-{}.perf", std::process::id()));
    let samples_path = samples.to_str().expect("utf-8 path");
    let perf = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "4000", "-g", "-o", samples_path, "--"];
    let send = ["ip", "netns", "exec", &lab.host, me, "--udp-flood", "198.51.100.7"];
    let command: Vec<&str> = if profile { perf.iter().chain(&send).copied().collect() } else { send.to_vec() };
    let sender = Command::new(command[0]).args(&command[1..]).stderr(Stdio::null()).output().expect("flood sender");
    assert!(sender.status.success(), "flood sender failed");
    let mut out = String::new();
    let _ = sink.stdout.take().expect("sink stdout").read_to_string(&mut out);
    let _ = sink.wait();
    let numbers: Vec<f64> = String::from_utf8_lossy(&sender.stdout).split_whitespace().filter_map(|n| n.parse().ok()).collect();
    let [sent, runtime_ns] = numbers[..] else { panic!("the sender's figures: {numbers:?}") };
    let hook_ns_per_packet = profile.then(|| {
        let in_hook = samples_in(samples_path, "nf_hook_slow");
        let _ = std::fs::remove_file(&samples);
        in_hook as f64 * 250_000.0 / sent // a sample each 250 µs on a CPU (4000 Hz)
    });
    Flood { received: out.trim().parse().expect("sink count"), sender_ns_per_packet: runtime_ns / sent, hook_ns_per_packet }
}

/// This bench's binary, re-run as the flood's sender and sink.
fn own_path() -> String {
    std::env::current_exe().expect("own path").to_str().expect("utf-8 path").to_string()
}

/// This binary (`me`) as the flood's sink in the lab's remote namespace,
/// given a moment to bind; it prints its count on stdout when it ends.
fn start_sink(lab: &Lab, me: &str) -> Child {
    let sink = Command::new("ip").args(["netns", "exec", &lab.remote, me, "--udp-sink"]).stdout(Stdio::piped()).spawn().expect("sink");
    std::thread::sleep(Duration::from_millis(300));
    sink
}

/// How many of a perf recording's samples have `function` in their stack.
fn samples_in(recording: &str, function: &str) -> u64 {
    let script = Command::new("perf").args(["script", "-i", recording, "-F", "comm,ip,sym"]).output().expect("perf script");
    let text = String::from_utf8_lossy(&script.stdout);
    // A sample: a line naming the command, then one indented line per frame.
    let (mut count, mut seen) = (0, false);
    for line in text.lines() {
        if !line.starts_with([' ', '\t']) {
            count += u64::from(seen);
            seen = false;
        } else if line.split_whitespace().nth(1) == Some(function) {
            seen = true;
        }
    }
    count + u64::from(seen)
}

/// Sends 100-byte packets to `to` as fast as the kernel takes them, for
/// SECONDS; prints how many it sent and its thread's run time in ns (the
/// first field of /proc/thread-self/schedstat: time on a CPU, not the time
/// the hypervisor gave to others).
fn udp_flood(to: &str) {
    let socket = flood_socket(to);
    let runtime = || -> u64 {
        let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
        text.split_whitespace().next().and_then(|n| n.parse().ok()).expect("run time")
    };
    let started = runtime();
    let mut sent = 0u64;
    let end = Instant::now() + Duration::from_secs(SECONDS);
    while Instant::now() < end {
        sent += send_burst(&socket);
    }
    let _ = writeln!(std::io::stdout(), "{sent} {}", runtime() - started);
}

/// As [`udp_flood`], for ALTERNATING_SECONDS, printing a line each TICK:
/// the wall clock in ms since the epoch (the bench's clock too, which
/// notes when it switched) and the datagrams sent since the line before.
fn udp_flood_ticks(to: &str) {
    let socket = flood_socket(to);
    let mut lines = String::new();
    let (mut sent, mut next) = (0u64, Instant::now() + TICK);
    let end = Instant::now() + Duration::from_secs(ALTERNATING_SECONDS);
    while Instant::now() < end {
        sent += send_burst(&socket);
        if Instant::now() >= next {
            lines += &format!("{} {sent}\n", epoch_ms());
            (sent, next) = (0, next + TICK);
        }
    }
    let _ = std::io::stdout().write_all(lines.as_bytes());
}

fn flood_socket(to: &str) -> UdpSocket {
    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
    socket.connect((to, SINK_PORT)).expect("connect");
    socket
}

/// 256 datagrams of PAYLOAD bytes: how many the kernel took (ENOBUFS under
/// pressure: the packet is simply not sent).
fn send_burst(socket: &UdpSocket) -> u64 {
    let payload = [0x5au8; PAYLOAD];
    (0..256).map(|_| u64::from(socket.send(&payload).is_ok())).sum()
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
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

/// One flood of the [`alternating`] measure, and its phases. The flood's
/// rate drifts by ±15 % within seconds here, but its 100 ms counts are
/// correlated (0.9 from one to the next, 0.4 a second apart): short phases
/// pair a phase "with" closely with those "without" beside it. Cut into
/// phases as if switched, floods with nothing switched gave medians within
/// 0.986–1.007 at 0.5 s phases (four floods), 0.983–1.030 at 1 s, 0.955–1.057
/// at 3 s (`--calibrate`; docs/PERFORMANCE.md, ninth session).
const ALTERNATING_SECONDS: u64 = 120;
const PHASE: Duration = Duration::from_millis(500);
/// The sender counts in steps of this.
const TICK: Duration = Duration::from_millis(100);
/// What a phase leaves out at its start: the switch, and the `nft` or
/// `kill` that made it (an `nft -f` that wakes or puts a table to sleep
/// takes about 10 ms here).
const SETTLE_MS: u64 = 200;

/// What the nftables backend costs a flood in progress (its peer in a
/// lane), measured inside one flood: two 10 s floods of the same kind a
/// minute apart differ here by up to ±10 % (`benches/flood-pairs.sh`), more
/// than the cost, so the paired rounds above cannot tell 0.95 from 0.90 in
/// a few rounds; switching every PHASE inside one flood of
/// ALTERNATING_SECONDS can. Two such floods, each after the warm-up:
///
/// - the monitor's table hooked and unhooked (its `dormant` flag: the
///   table's hooks leave the kernel, so the packet path is as with no
///   table), the monitor stopped, so that its lane stays;
/// - the monitor running and stopped (SIGSTOP), its table hooked: what its
///   harvests and its reading of /proc take from the flood.
///
/// - the monitor's table against the least table that counts the flood's
///   peer ([`LEAST_COUNTING`]), one of them dormant, the monitor stopped:
///   what its table costs over the floor of counting in nftables at all,
///   on this machine, at this moment (the cost of a hook and a rule moves
///   with the machine: a table's ratio to none changes from run to run more
///   than a run's interval says; docs/PERFORMANCE.md, ninth session).
///
/// Each phase "with" against the mean of the phases "without" beside it;
/// the median of those ratios, its 90 % bootstrap interval and the range;
/// the product of the first two medians is the whole cost.
fn alternating(bin: &str) {
    let table = alternate(bin, "its table hooked / unhooked (dormant), the monitor stopped", stop, |lab, _, with| {
        if with {
            hook_tables(lab, &["inet ip_traffic_monitor"], &[])
        } else {
            hook_tables(lab, &[], &["inet ip_traffic_monitor"])
        }
    });
    let process = alternate(bin, "the monitor running / stopped (SIGSTOP), its table hooked", |_, _| {}, |_, monitor, with| {
        lab::signal(if with { "-CONT" } else { "-STOP" }, monitor)
    });
    println!(
        "| UDP flood, 100-byte packets: monitor -b nftables, a flood in a lane, both (the product) | | ratio {:.3} | |",
        table * process
    );
    let stop_and_load_the_least = |lab: &Lab, monitor| {
        stop(lab, monitor);
        lab.nft_load(LEAST_COUNTING);
        hook_tables(lab, &[], &["inet itm_least"]);
    };
    alternate(bin, "its table against the least that counts the flood's peer, the monitor stopped", stop_and_load_the_least, |lab, _, with| {
        let (sleeping, awake) = if with { ("inet itm_least", "inet ip_traffic_monitor") } else { ("inet ip_traffic_monitor", "inet itm_least") };
        hook_tables(lab, &[awake], &[sleeping]);
    });
}

/// In one transaction, in the lab's host: the tables `awake` (each named
/// with its family: "inet itm_least") get their hooks back (a table named
/// without flags is awake), the tables `dormant` lose theirs, so their
/// rules see no packet.
fn hook_tables(lab: &Lab, awake: &[&str], dormant: &[&str]) {
    let mut text: String = dormant.iter().map(|t| format!("add table {t} {{ flags dormant; }}\n")).collect();
    text.extend(awake.iter().map(|t| format!("table {t} {{ }}\n")));
    lab.nft_load(&text);
}

/// The least a table can do to count the flood's peer exactly: one rule,
/// its address compared and the packet counted (no device, no family: an
/// IPv6 packet with these bytes there would count too, which the monitor's
/// lane must rule out).
const LEAST_COUNTING: &str = "table inet itm_least {\n chain tx {\n  type filter hook postrouting priority 2147483647;\n  @nh,128,32 0xc6336407 counter return\n }\n}\n";

/// Stops the monitor (SIGSTOP): its harvests no longer touch the table.
fn stop(_: &Lab, monitor: u32) {
    lab::signal("-STOP", monitor);
}

/// One flood of ALTERNATING_SECONDS under the monitor (`-s 2`, after the
/// warm-up and `prepare`), `switch`ed to "without" and back every PHASE:
/// prints its row and returns the median ratio.
fn alternate(bin: &str, what: &str, prepare: fn(&Lab, u32), switch: fn(&Lab, u32, bool)) -> f64 {
    let mut lab = Lab::new();
    let monitor = start_monitor(&mut lab, bin, "nftables", "2");
    warm_up(&lab);
    let pid = monitor.pid();
    prepare(&lab, pid);
    let ratio = switching_flood(&lab, &format!("monitor -b nftables, {what}"), &|lab, with| switch(lab, pid, with));
    lab::signal("-CONT", pid);
    drop(monitor);
    ratio
}

/// What table A costs the flood over table B (over no table without B):
/// both files hold a table named `v` (`table inet v { … }`) whose base
/// chain hooks postrouting, where the flood's packets leave the host, or
/// any hook they pass (`table netdev v`, `hook egress device "vh"`); both
/// are loaded in the lab's host namespace, beside its truth counters as in
/// every other row, and one of them is dormant at a time.
fn table_ab(a: &str, b: Option<&String>) {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let name = format!("{a} against {}", b.map_or("no table", String::as_str));
    tables_switched(&read(a), b.map(|b| read(b)).as_deref(), &name);
}

/// [`table_ab`] of the tables `a` and `b` (nft's text), its row named `name`.
fn tables_switched(a: &str, b: Option<&str>, name: &str) {
    let lab = Lab::new();
    let (a_text, a) = renamed(a, "a");
    let (b_text, b) = renamed(b.unwrap_or("table inet v { }\n"), "b");
    lab.nft_load(&a_text);
    lab.nft_load(&b_text);
    hook_tables(&lab, &[], &[&b]);
    switching_flood(&lab, name, &|lab, a_awake| {
        let (sleeping, awake) = if a_awake { (&b, &a) } else { (&a, &b) };
        hook_tables(lab, &[awake], &[sleeping]);
    });
}

/// nft's `text` of a table `v` with the table named `name` instead, and
/// the table's family and name as [`hook_tables`] takes them ("inet a").
fn renamed(text: &str, name: &str) -> (String, String) {
    let family = text.split_whitespace().skip_while(|word| *word != "table").nth(1).unwrap_or("inet");
    (text.replacen(&format!("table {family} v "), &format!("table {family} {name} "), 1), format!("{family} {name}"))
}

/// One flood of ALTERNATING_SECONDS from the lab's host to its remote's
/// sink, which `switch`es to "without" (false) and back every PHASE: prints
/// its row, named `what`, and returns the median ratio of "with" to
/// "without" ([`phase_ratios`]).
fn switching_flood(lab: &Lab, what: &str, switch: &dyn Fn(&Lab, bool)) -> f64 {
    let (phases, ticks) = ticking_flood(lab, switch);
    let rates = phase_rates(&phases, &ticks, SETTLE_MS);
    let ratios = phase_ratios(&rates);
    let (low, high) = median_interval(&ratios);
    let (least, most) = spread(&ratios);
    let per_second = |with: bool| {
        let rates: Vec<f64> = rates.iter().filter(|p| p.0 == with).map(|p| p.1).collect();
        median(&rates) * 1000.0 / TICK.as_millis() as f64 / 1e3
    };
    println!(
        "| UDP flood, 100-byte packets: {what}, {} ms each in one {ALTERNATING_SECONDS} s flood | {:.2} k packets/s (without: {:.2}) | ratio {:.3} (90 % interval {low:.3}–{high:.3}; min {least:.3}, max {most:.3}; {} phases) | |",
        PHASE.as_millis(),
        per_second(true),
        per_second(false),
        median(&ratios),
        ratios.len(),
    );
    median(&ratios)
}

/// When each phase of a switching flood began (ms since the epoch) and
/// whether it was "with".
type Phases = Vec<(u64, bool)>;

/// The end of each TICK of a flood (ms since the epoch) and what the
/// sender sent in it.
type Ticks = Vec<(u64, u64)>;

/// The flood of [`switching_flood`]: its phases and the sender's counts.
fn ticking_flood(lab: &Lab, switch: &dyn Fn(&Lab, bool)) -> (Phases, Ticks) {
    let me = &own_path();
    let mut sink = start_sink(lab, me);
    let mut sender = Command::new("ip")
        .args(["netns", "exec", &lab.host, me, "--udp-flood-ticks", "198.51.100.7"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("flood sender");
    let mut phases = vec![(epoch_ms(), true)];
    while sender.try_wait().expect("the sender").is_none() {
        std::thread::sleep(PHASE);
        let with = !phases[phases.len() - 1].1;
        switch(lab, with);
        phases.push((epoch_ms(), with));
    }
    let mut out = String::new();
    let _ = sender.stdout.take().expect("sender stdout").read_to_string(&mut out);
    let _ = sink.wait();
    let ticks = out
        .lines()
        .filter_map(|line| {
            let (ms, sent) = line.split_once(' ')?;
            Some((ms.parse().ok()?, sent.parse().ok()?))
        })
        .collect();
    (phases, ticks)
}

/// What the switching method reports when nothing differs, so that its
/// figures can be read to the right precision: one flood with nothing
/// switched, its counts cut into phases as if switched, for phases of
/// several lengths, at every offset (by TICK): the range of the medians;
/// then two identical empty tables, one dormant at a time, as `--table-ab`
/// switches them.
fn calibrate() {
    let lab = Lab::new();
    let (_, ticks) = ticking_flood(&lab, &|_, _| {});
    let tick = TICK.as_millis() as u64;
    let first = ticks.first().map_or(0, |t| t.0 - tick);
    let last = ticks.last().map_or(0, |t| t.0);
    for (phase, settle) in [(3000, 500), (2000, 300), (1000, 200), (500, 200)] {
        let medians: Vec<f64> = (0..phase / tick)
            .map(|offset| {
                let phases: Phases = (0..).map(|i| (first + offset * tick + i * phase, i % 2 == 0)).take_while(|p| p.0 < last).collect();
                median(&phase_ratios(&phase_rates(&phases, &ticks, settle)))
            })
            .collect();
        let (least, most) = spread(&medians);
        println!(
            "| UDP flood, 100-byte packets: nothing switched, cut into {phase} ms phases ({settle} ms left out) at {} offsets | | medians {least:.3}–{most:.3} | |",
            medians.len(),
        );
    }
    drop(lab);
    const EMPTY: &str = "table inet v {\n chain tx {\n  type filter hook postrouting priority 2147483647;\n }\n}\n";
    tables_switched(EMPTY, Some(EMPTY), "an empty base chain against another");
}

/// Each phase (its start in ms and whether it was "with") and its mean
/// count per TICK, over the ticks wholly inside it after `settle` ms.
fn phase_rates(phases: &[(u64, bool)], ticks: &[(u64, u64)], settle: u64) -> Vec<(bool, f64)> {
    let ends = phases.iter().skip(1).map(|p| p.0).chain([u64::MAX]);
    phases
        .iter()
        .zip(ends)
        .filter_map(|(&(start, with), end)| {
            let tick = TICK.as_millis() as u64;
            let inside: Vec<u64> = ticks.iter().filter(|&&(t, _)| t >= start + settle + tick && t <= end).map(|t| t.1).collect();
            (!inside.is_empty()).then(|| (with, inside.iter().sum::<u64>() as f64 / inside.len() as f64))
        })
        .collect()
}

/// Each "with" phase's rate over the mean of the "without" phases on
/// either side of it ([`phase_rates`]).
fn phase_ratios(rates: &[(bool, f64)]) -> Vec<f64> {
    let beside = |i: usize| [i.checked_sub(1), Some(i + 1)].into_iter().flatten().filter_map(|j| rates.get(j)).filter(|p| !p.0).map(|p| p.1);
    (0..rates.len())
        .filter(|&i| rates[i].0 && beside(i).count() > 0)
        .map(|i| rates[i].1 / (beside(i).sum::<f64>() / beside(i).count() as f64))
        .collect()
}

/// What an nftables table costs each packet of the 100-byte flood, in the
/// sender's thread (where the postrouting hook runs): perf's samples inside
/// netfilter's hooks per packet sent, which the throughput rounds show only
/// through the machine's ±10 % drift (a lower bound: a sample taken while a
/// function is entered or left does not show its caller, so the hook's way
/// in and out is missed; [`alternating`] has the whole cost, about twice
/// this); and the thread's whole run time per
/// packet beside it. Paired rounds of: no table (the lab's truth counters
/// only, as in every variant), an empty base chain at the monitor's hook
/// (the hook alone), one set update per packet (the least any per-IP count
/// in nftables can do), then that update with the parts issue 17 asks for
/// added one by one, each in its least form for the flood's IPv4 packets
/// ([`least_table`]), and the monitor's own table (the monitor stopped, so
/// only the packet path differs): as it starts, where a new peer takes the
/// common path, and once it gave the flood's peer a lane, as it does for a
/// busy peer from its second interval on.
fn hook_cost(bin: &str) {
    if !lab::on_path("perf") {
        println!("| nftables hook cost per packet | skipped: needs perf (linux-perf) | |");
        return;
    }
    let rounds = bench_rounds();
    const BARE: &str = "table inet itm_hook_cost {\n chain tx { type filter hook postrouting priority 2147483647; }\n}\n";
    let names = [
        "no table",
        "the hook alone (empty base chain)",
        "one set update per packet",
        "+ the device (-i vh: its index, then its name)",
        "+ the skipped blocks (leading byte, then ranges)",
        "+ 32 seeded shards (jhash, verdict map, a chain each)",
        "the monitor's table (-i vh)",
        "the monitor's table, the flood's peer in a lane (-i vh)",
    ];
    let mut floods: Vec<Vec<Flood>> = (0..names.len()).map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        let mut lab = Lab::new();
        for (variant, floods) in floods.iter_mut().enumerate() {
            let mut monitor = None;
            match variant {
                0 => {}
                1 => lab.nft_load(BARE),
                6 | 7 => {
                    let started = start_monitor(&mut lab, bin, "nftables", "1");
                    if variant == 7 {
                        give_the_flood_a_lane(&lab);
                    }
                    lab::signal("-STOP", started.pid());
                    monitor = Some(started);
                }
                parts => lab.nft_load(&least_table(parts - 2)),
            }
            floods.push(flood_profiled(&mut lab, true));
            match monitor {
                Some(monitor) => {
                    lab::signal("-CONT", monitor.pid());
                    drop(monitor);
                    lab.host_shell("nft delete table inet ip_traffic_monitor 2>/dev/null; true");
                }
                None if variant > 0 => lab.host_shell("nft delete table inet itm_hook_cost"),
                None => {}
            }
        }
    }
    let whole_none = median(&floods[0].iter().map(|f| f.sender_ns_per_packet).collect::<Vec<_>>());
    let hook_none = median(&floods[0].iter().filter_map(|f| f.hook_ns_per_packet).collect::<Vec<_>>());
    println!("| 100-byte UDP flood, the sender's CPU per packet | in netfilter's hooks (perf) | the whole send (schedstat) | if the sender is the bottleneck |");
    println!("| --- | --- | --- | --- |");
    for (name, floods) in names.iter().zip(&floods) {
        let hook: Vec<f64> = floods.iter().filter_map(|f| f.hook_ns_per_packet).collect();
        let whole: Vec<f64> = floods.iter().map(|f| f.sender_ns_per_packet).collect();
        let each = |v: &[f64]| v.iter().map(|ns| format!("{ns:.0}")).collect::<Vec<_>>().join(", ");
        let added = median(&hook) - hook_none;
        println!(
            "| {name} | {:.0} ns ({}) | {:.0} ns ({}) | {:.3} of unmonitored |",
            median(&hook),
            each(&hook),
            median(&whole),
            each(&whole),
            whole_none / (whole_none + added)
        );
    }
}

/// What every mode's flood round begins with, as a flood that has gone on
/// for some seconds would: the flood's peer has sent 5,000 datagrams (to a
/// closed port), and 5 s have passed, two of the monitor's intervals (`-s
/// 2`), in which the nftables backend gave the peer a lane (checked). The
/// flood's cost before that, on the common path, is the hook cost's row
/// "the monitor's table".
fn warm_up(lab: &Lab) {
    send_to_the_floods_peer(lab);
    std::thread::sleep(Duration::from_secs(5));
    if monitor_table(lab).is_some_and(|rules| !rules.contains(FLOOD_LANE)) {
        panic!("the monitor gave the flood's peer no lane in 5 s");
    }
}

/// The start of the flood's peer's lane rule in the monitor's `tx` chain.
const FLOOD_LANE: &str = "0xc6336407 @nh,0,8 0x45";

fn send_to_the_floods_peer(lab: &Lab) {
    lab.host_shell("python3 -c \"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b'x' * 72, ('198.51.100.7', 9)) for _ in range(5000)]\"");
}

/// The monitor's `tx` chain in the host namespace, if it has its table.
fn monitor_table(lab: &Lab) -> Option<String> {
    let rules = Command::new("ip").args(["netns", "exec", &lab.host, "nft", "list", "chain", "inet", "ip_traffic_monitor", "tx"]).output().expect("nft");
    rules.status.success().then(|| String::from_utf8_lossy(&rules.stdout).into_owned())
}

/// Sends the flood's peer 5,000 datagrams and waits until the running
/// monitor (`-s 1`) has given it a lane (two harvests later).
fn give_the_flood_a_lane(lab: &Lab) {
    send_to_the_floods_peer(lab);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !monitor_table(lab).is_some_and(|rules| rules.contains(FLOOD_LANE)) {
        assert!(Instant::now() < deadline, "the flood's peer got no lane");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A table that counts each IPv4 packet's destination in a set, with the
/// first `parts` of what the monitor's table must also do, each as cheaply
/// as nftables can for an IPv4 packet (no family check, which a table of
/// family `ip` would not need; no counter of refused bytes): 0 none; 1 the
/// device, by its index, then by its name (as the monitor matches it: it
/// may have been made anew); 2 the skipped blocks (the product's defaults,
/// their leading bytes first); 3 the peers spread over 32 sets by a seeded
/// hash. So each row's cost over the one before is that part's least cost
/// on this machine.
fn least_table(parts: usize) -> String {
    use ip_traffic_monitor_cli::backend::nftables::table::{leads, skipped_ranges};
    let shards = if parts >= 3 { 32 } else { 1 };
    let mut table = String::from("table inet itm_hook_cost {\n");
    for shard in 0..shards {
        table += &format!(" set peers{shard} {{ typeof @nh,128,32; size 131072; flags dynamic; counter; }}\n");
    }
    let mut rules = String::new();
    if parts >= 1 {
        rules += "  oif != \"vh\" oifname != \"vh\" return\n"; // nft makes the first its index
    }
    if parts >= 2 {
        let ranges = skipped_ranges(&ip_traffic_monitor_cli::filter::AddressFilter::default().skipped_blocks(), true);
        let lead_list = leads(&ranges, true).unwrap_or_default().iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
        let range_list = ranges.iter().map(|(first, last)| format!("{first}-{last}")).collect::<Vec<_>>().join(", ");
        table += &format!(" set lead4 {{ typeof @nh,128,8; flags constant; elements = {{ {lead_list} }} }}\n");
        table += &format!(" set skip4 {{ typeof @nh,128,32; flags interval, constant; elements = {{ {range_list} }} }}\n");
        rules += "  @nh,128,8 @lead4 @nh,128,32 @skip4 return\n";
    }
    if parts >= 3 {
        for shard in 0..shards {
            table += &format!(" chain count{shard} {{ update @peers{shard} {{ @nh,128,32 }}; }}\n");
        }
        let elements = (0..shards).map(|shard| format!("{shard} : goto count{shard}")).collect::<Vec<_>>().join(", ");
        table += &format!(" map shards {{ typeof jhash ip daddr mod 32 : verdict; size 32; elements = {{ {elements} }} }}\n");
        rules += "  jhash @nh,128,32 mod 32 seed 0x5eed vmap @shards\n";
    } else {
        rules += "  update @peers0 { @nh,128,32 }\n";
    }
    table + " chain tx {\n  type filter hook postrouting priority 2147483647;\n" + &rules + " }\n}\n"
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
    let rounds = bench_rounds();
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

/// A 90 % bootstrap interval of the median of `values`: the 5th and 95th
/// percentiles of the medians of 2,000 resamples (drawn with a fixed
/// xorshift, so a run's figures can be recomputed).
fn median_interval(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut draw = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        values[(state % values.len() as u64) as usize]
    };
    let mut medians: Vec<f64> = (0..2000).map(|_| median(&(0..values.len()).map(|_| draw()).collect::<Vec<_>>())).collect();
    medians.sort_by(f64::total_cmp);
    (medians[100], medians[1899])
}

/// The least and the greatest of `values`.
fn spread(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), &v| (low.min(v), high.max(v)))
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}
