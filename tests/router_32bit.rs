//! The 32-bit build, as routers run it: `make test` builds the
//! `i686-unknown-linux-musl` binary (it runs on an x86_64 kernel), and this
//! test runs it in the lab. Its libc calls must have the right widths there:
//! the process metrics must agree with /proc, its backend child must die
//! with it (PR_SET_PDEATHSIG's argument is an unsigned long), and the
//! nftables backend (netlink, the one routers have) must count to the byte.

mod lab;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lab::Lab;

/// Where `make test` (the `i686` target) puts the 32-bit binary.
const BIN32: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/i686-unknown-linux-musl/release/ip_traffic_monitor_cli");

fn require_bin32(test: &str) -> bool {
    if std::path::Path::new(BIN32).is_file() {
        return true;
    }
    let reason = format!("{test}: needs {BIN32} (make i686)");
    if std::env::var_os("CI").is_some() {
        panic!("{reason} (CI is set, so this is a failure, not a skip)");
    }
    eprintln!("SKIPPED {reason}");
    false
}

/// VmRSS of `pid` in bytes.
fn vm_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).expect("VmRSS");
    kib.trim().trim_end_matches("kB").trim().parse::<u64>().expect("kB") * 1024
}

/// When `pid` started, in Unix seconds, from its stat and the boot time.
fn started_at(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after_comm: Vec<&str> = stat.rsplit(')').next().expect("comm").split_whitespace().collect();
    let ticks: f64 = after_comm[19].parse().expect("starttime");
    let proc_stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let btime: f64 = proc_stat.lines().find_map(|l| l.strip_prefix("btime ")).expect("btime").trim().parse().expect("btime");
    btime + ticks / 100.0
}

#[test]
fn the_32_bit_build_reports_its_own_process_and_takes_its_child_along() {
    let test = "the_32_bit_build_reports_its_own_process_and_takes_its_child_along";
    if !lab::require_lab(test) || !require_bin32(test) {
        return;
    }
    let file = std::process::Command::new("file").arg("-L").arg(BIN32).output().expect("file");
    let kind = String::from_utf8_lossy(&file.stdout);
    assert!(kind.contains("ELF 32-bit"), "{kind}");

    let mut lab = Lab::new();
    // Three runs: the earlier 64-bit prctl prototype left the child alive in one of three.
    for run in 1..=3 {
        let spawned = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs_f64();
        let mut monitor = lab.spawn_in_host(&[BIN32, "-b", "bpftrace", "-d", "0", "-q", "-s", "600", "-p", "9464"]);
        monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(120));
        let pid = monitor.pid();

        let metrics = lab.http_get_in_host(9464, "/metrics");
        let rss_now = vm_rss(pid);
        let rss = lab::metric_value(&metrics, "process_resident_memory_bytes").expect("RSS metric");
        let start = lab::metric_value(&metrics, "process_start_time_seconds").expect("start metric");
        let real_start = started_at(pid);
        println!(
            "run {run}: RSS metric {rss} B, VmRSS {rss_now} B; start metric {start:.2}, /proc {real_start:.2}, spawned {spawned:.2}"
        );
        let off = (rss - rss_now as f64).abs() / rss_now as f64;
        assert!(off <= 0.10, "process_resident_memory_bytes {rss} is {:.1} % off VmRSS {rss_now}", off * 100.0);
        assert!((start - real_start).abs() <= 2.0, "process_start_time_seconds {start}, /proc says {real_start}");
        assert!((start - spawned).abs() <= 2.0, "process_start_time_seconds {start}, spawned at {spawned}");
        let cpu = lab::metric_value(&metrics, "process_cpu_seconds_total").expect("CPU metric");
        assert!((0.0..60.0).contains(&cpu), "process_cpu_seconds_total {cpu}");

        let child = monitor.backend_pid();
        std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().expect("kill");
        let killed = Instant::now();
        let gone = lab::wait_until_gone(child, Duration::from_secs(1));
        println!("run {run}: bpftrace {child} gone {:?} after the monitor's SIGKILL", killed.elapsed());
        assert!(gone, "run {run}: bpftrace {child} outlived its SIGKILLed 32-bit monitor by 1 s");
        drop(monitor.finish());
    }
}

/// The backend routers have, in the build routers run: its netlink socket,
/// batches and dumps through the 32-bit C library's calls (with thousands
/// of `--exclude` ranges, so the table's batch needs a larger send buffer),
/// and every remote IP and direction equal to the lab's nftables truth.
#[test]
fn the_32_bit_build_counts_with_nftables_to_the_byte() {
    let test = "the_32_bit_build_counts_with_nftables_to_the_byte";
    if !lab::require_lab(test) || !require_bin32(test) {
        return;
    }
    let mut lab = Lab::new();
    lab.start_iperf_server();
    // 5,000 blocks none of the lab's peers is in.
    let exclude: Vec<String> = (101..121).flat_map(|a| (0..250).map(move |b| format!("{a}.{b}.0.0/20"))).collect();
    let exclude = exclude.join(",");
    let mut monitor = lab.spawn_in_host(&[BIN32, "-b", "nftables", "-i", "vh", "-d", "0", "-s", "1", "--top", "1000", "--exclude", &exclude]);
    monitor.wait_for_stderr("counting with nftables", Duration::from_secs(20));
    lab.mixed_traffic();
    lab.iperf(&["-c", "192.0.2.2", "-n", "2M", "--bidir"]);
    lab.wait_until_quiet();
    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "stderr: {:?}", finished.stderr);
    let counted = lab::summary_rows(&finished.stdout);
    let (total, failures) = lab::compare_with_nftables(&counted, &lab.truth(), 0.0);
    println!("32-bit build, nftables backend: {} peers, {total} bytes through nftables on vh", counted.len());
    assert!(failures.is_empty(), "not equal to the byte: {failures:?}");
    assert!(total > 10_000_000, "the lab must move at least 10 MB, moved {total}");
    let tables = std::process::Command::new("ip").args(["netns", "exec", &lab.host, "nft", "list", "tables"]).output().expect("nft");
    assert!(!String::from_utf8_lossy(&tables.stdout).contains("ip_traffic_monitor"), "SIGINT removes the table");
}
