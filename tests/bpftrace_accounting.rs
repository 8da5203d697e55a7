//! End to end: the real binary with the bpftrace backend counts real traffic
//! between network namespaces, and every remote IP and direction must match
//! the nftables counters in the host namespace.

mod lab;

use std::time::Duration;

use lab::{Lab, BIN, MANY_IPS_RANGE, OTHER_IFACE_REMOTE};

/// The accounting bound: counted bytes within 0.1 % of nftables'.
const BOUND: f64 = 0.001;

#[test]
fn every_remote_ip_and_direction_matches_nftables() {
    if !lab::require_lab("every_remote_ip_and_direction_matches_nftables") {
        return;
    }
    let mut lab = Lab::new();
    lab.start_iperf_server();
    let mut monitor = lab.spawn_in_host(&[BIN, "-b", "bpftrace", "-i", "vh", "-d", "0", "-s", "1", "--top", "1000"]);
    monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(120));

    lab.mixed_traffic();
    // A sustained flow over many sample intervals: nothing lost between reports.
    lab.iperf(&["-c", "192.0.2.2", "-t", "16", "-b", "10M"]);
    // Traffic on the interface -i did not name.
    lab.iperf(&["-c", OTHER_IFACE_REMOTE, "-n", "2M"]);

    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "stderr: {:?}", finished.stderr);
    let summary_at = finished.stdout.iter().position(|l| l.starts_with("== Summary")).unwrap_or(0);
    println!("{}", finished.stdout[summary_at..].join("\n"));
    let counted = lab::summary_rows(&finished.stdout);
    let truth = lab.truth();

    let (total, failures) = lab::compare_with_nftables(&counted, &truth, BOUND);
    println!("total bytes through nftables on vh: {total}");
    assert!(failures.is_empty(), "outside the {BOUND} bound: {failures:?}");
    assert!(total > 50_000_000, "the lab must move at least 50 MB, moved {total}");

    let other = lab.truth()[&(OTHER_IFACE_REMOTE.to_string(), "tx")];
    // Evidence that the -i check below had traffic to ignore, not a bound:
    // iperf3 -n counts bytes written to the socket and the server may close
    // before the tail of the send buffer leaves (1,986,310 IP bytes of the
    // 2,097,152 written were seen once), so ask for half.
    assert!(other > 1_000_000, "traffic did cross vx ({other} bytes)");
    assert!(!counted.contains_key(OTHER_IFACE_REMOTE), "-i vh must not count vx: {counted:?}");

    for ip in ["198.51.100.7", "198.51.100.8", "2001:db8:2::7", "192.0.2.2"] {
        assert_eq!(counted[ip].2, "iperf3", "process of the TCP flow to {ip}: {:?}", counted[ip]);
    }
}

#[test]
fn a_dead_backend_is_reported_and_restarted_not_silence() {
    if !lab::require_lab("a_dead_backend_is_reported_and_restarted_not_silence") {
        return;
    }
    let mut lab = Lab::new();
    // A script that attaches, reports once, then exits: the monitor must say
    // so and start it again, with backoff, until stopped.
    let script = lab::script(
        "exit",
        "BEGIN { printf(\"@attached\\n\"); }\ninterval:ms:500 { printf(\"@tx[198.51.100.7]: 10\\n@end\\n\"); exit(); }\n",
    );
    let mut monitor = lab.spawn_in_host(&[BIN, "-d", "0", "-q", "--bpftrace-script", script.path()]);
    monitor.wait_for_stderr("bpftrace exited unexpectedly", Duration::from_secs(60));
    monitor.wait_for_stderr("restarting bpftrace in 1 s", Duration::from_secs(5));
    monitor.wait_for_stderr("bpftrace restarted", Duration::from_secs(30));
    monitor.wait_for_stderr("restarting bpftrace in 2 s", Duration::from_secs(30));
    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
    let counted = lab::summary_rows(&finished.stdout);
    assert_eq!(counted["198.51.100.7"].0 % 10, 0);
    assert!(counted["198.51.100.7"].0 >= 20, "totals carry on across restarts: {:?}", counted);
}

#[test]
fn a_killed_bpftrace_is_back_within_5_s_and_nothing_is_counted_twice() {
    if !lab::require("a_killed_bpftrace_is_back_within_5_s_and_nothing_is_counted_twice", &[]) {
        return;
    }
    let mut lab = Lab::new();
    lab.start_iperf_server();
    let mut monitor = lab.spawn_in_host(&[BIN, "-b", "bpftrace", "-i", "vh", "-d", "0", "-s", "1", "-q", "-p", "9464", "-t", "0", "--top", "100"]);
    monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(120));
    lab.iperf(&["-c", "198.51.100.7", "-n", "10M"]);
    // Wait for the report with the flow: counts still in a killed
    // bpftrace's maps die with it.
    let before_kill = lab.truth()[&("198.51.100.7".to_string(), "tx")];
    lab.scrape_when_series_hold(9464, &[("198.51.100.7", "tx", before_kill as f64)]);
    let bpftrace = monitor.backend_pid().to_string();
    let killed_at = std::time::Instant::now();
    std::process::Command::new("kill").args(["-KILL", &bpftrace]).status().expect("kill");
    // Traffic while no backend runs: may be missed, never doubled.
    lab.iperf(&["-c", "198.51.100.8", "-n", "2M"]);
    monitor.wait_for_stderr("bpftrace restarted", Duration::from_secs(30));
    let back_after = killed_at.elapsed();
    println!("bpftrace back after {back_after:?}");
    // 1 s of backoff plus bpftrace 0.17 compiling its script (about 3 s here).
    // The target is 5 s; 8 s keeps a loaded CI machine from failing on it.
    assert!(back_after < Duration::from_secs(5), "back within 5 s, took {back_after:?}");
    let during_gap = lab.truth()[&("198.51.100.8".to_string(), "tx")];
    lab.iperf(&["-c", "198.51.100.7", "-n", "10M"]);
    // Within the accounting bound: a packet or two may go unseen while none runs.
    let sent = lab.truth()[&("198.51.100.7".to_string(), "tx")] as f64;
    let metrics = lab.scrape_when_series_hold(9464, &[("198.51.100.7", "tx", sent * (1.0 - BOUND))]);
    assert_eq!(lab::metric_value(&metrics, "ip_traffic_monitor_backend_restarts_total"), Some(1.0));
    assert_eq!(lab::metric_value(&metrics, "ip_traffic_monitor_backend_up"), Some(1.0));
    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
    let counted = lab::summary_rows(&finished.stdout);
    let truth = lab.truth();
    // 198.51.100.7: flows before the kill and after the restart, none in the gap.
    let want = truth[&("198.51.100.7".to_string(), "tx")];
    let got = counted["198.51.100.7"].0;
    println!("198.51.100.7 tx: nftables {want}, counted {got} (before the kill: {before_kill})");
    assert!(got <= want, "nothing counted twice");
    assert!((want - got) as f64 <= 0.001 * want as f64, "{got} vs {want}: within the accounting bound");
    let gap_counted = counted.get("198.51.100.8").map_or(0, |r| r.0);
    println!("sent while no backend ran: {during_gap} bytes to 198.51.100.8, counted {gap_counted}, missing {}", during_gap - gap_counted.min(during_gap));
    assert!(gap_counted <= during_gap, "nothing counted twice");
}

#[test]
fn a_script_that_cannot_load_names_the_cause() {
    if !lab::require_lab("a_script_that_cannot_load_names_the_cause") {
        return;
    }
    let mut lab = Lab::new();
    let script = lab::script("bad", "tracepoint:net:no_such_tracepoint { @x = count(); }\n");
    let finished = lab.spawn_in_host(&[BIN, "--bpftrace-script", script.path()]).finish();
    assert_eq!(finished.code, Some(1));
    assert_eq!(finished.stderr.len(), 1, "one line: {:?}", finished.stderr);
    assert!(finished.stderr[0].contains("bpftrace failed to start"), "{:?}", finished.stderr);
}

#[test]
fn a_hundred_thousand_remote_ips_in_one_interval_are_all_reported() {
    if !lab::require_lab("a_hundred_thousand_remote_ips_in_one_interval_are_all_reported") {
        return;
    }
    let mut lab = Lab::new();
    // One interval longer than the whole run: every IP lands in one report.
    let mut monitor = lab.spawn_in_host(&[BIN, "-b", "bpftrace", "-i", "vh", "-d", "0", "-s", "600", "--top", "200000", "--max-ips", "200000"]);
    monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(120));
    lab.resolve_neighbours(&["192.0.2.2"]);
    // One 2-byte UDP datagram (30 bytes of IP) to each of 100,096 addresses:
    // 198.18.0.0-198.18.255.255 and 198.19.0.0-198.19.134.255. bash's
    // /dev/udp redirection sends without forking a process per packet.
    lab.host_shell(
        "for b in {0..255}; do for c in {0..255}; do echo x > /dev/udp/198.18.$b.$c/9; done; done; \
         for b in {0..134}; do for c in {0..255}; do echo x > /dev/udp/198.19.$b.$c/9; done; done",
    );
    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
    let counted = lab::summary_rows(&finished.stdout);
    let many: Vec<_> = counted.iter().filter(|(ip, _)| ip.starts_with("198.18.") || ip.starts_with("198.19.")).collect();
    let truth = lab.truth()[&(MANY_IPS_RANGE.to_string(), "tx")];
    let sum: u64 = many.iter().map(|(_, row)| row.0).sum();
    println!("distinct remote IPs: expected 100096, counted {}; bytes: nftables {truth}, counted {sum}", many.len());
    assert_eq!(many.len(), 100_096, "every remote IP reported; monitor stderr: {:?}", finished.stderr);
    assert!(many.iter().all(|(_, row)| row.0 == 30), "30 bytes each (IPv4 20 + UDP 8 + 2)");
    assert_eq!(truth, 100_096 * 30);
    assert_eq!(sum, truth);
}

#[test]
fn a_router_counts_forwarded_traffic_on_all_interfaces_by_default() {
    if !lab::require_lab("a_router_counts_forwarded_traffic_on_all_interfaces_by_default") {
        return;
    }
    let mut lab = Lab::new();
    lab.add_lan();
    lab.start_iperf_server();
    // No -i: every interface but loopback, as a router would run it.
    let mut monitor = lab.spawn_in_host(&[BIN, "-b", "bpftrace", "-d", "0", "-s", "1", "--top", "1000"]);
    monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(120));
    lab.iperf_from_lan(&["-c", "198.51.100.8", "-n", "10M"]);
    lab.iperf_from_lan(&["-6", "-c", "2001:db8:2::7", "-n", "10M", "-R"]);
    let finished = monitor.terminate();
    assert_eq!(finished.code, Some(0), "SIGTERM ends cleanly: {:?}", finished.stderr);
    let counted = lab::summary_rows(&finished.stdout);
    let (forwarded, local) = (lab.forwarded(), lab.truth());
    println!("{:<16} {:<3} {:>10} {:>8} {:>10} {:>6}", "remote", "dir", "forwarded", "local", "counted", "diff");
    for ip in ["198.51.100.8", "2001:db8:2::7"] {
        for (dir, got) in [("tx", counted[ip].0), ("rx", counted[ip].1)] {
            let key = (ip.to_string(), dir);
            let (fwd, own) = (forwarded[&key], local[&key]);
            let diff = got as i64 - (fwd + own) as i64;
            println!("{ip:<16} {dir:<3} {fwd:>10} {own:>8} {got:>10} {diff:>6}");
            assert!(fwd > 0, "{ip} {dir}: traffic was forwarded");
            assert!(diff.unsigned_abs() as f64 <= BOUND * (fwd + own) as f64, "{ip} {dir}: counted {got}, nftables {fwd} + {own}");
        }
    }
    assert!(!counted.keys().any(|ip| ip.starts_with("10.") || ip.starts_with("fd00:")), "the LAN is private: {counted:?}");
}

#[test]
fn a_custom_script_is_read_and_unreadable_lines_are_counted() {
    if !lab::require_lab("a_custom_script_is_read_and_unreadable_lines_are_counted") {
        return;
    }
    let mut lab = Lab::new();
    let script = lab::script(
        "custom",
        "BEGIN { printf(\"@attached\\n\"); }\n\
         interval:ms:500 { printf(\"@tx[198.51.100.7]: 5\\nnot a report line\\n@end\\n\"); }\n",
    );
    let mut monitor = lab.spawn_in_host(&[BIN, "-d", "0", "-q", "--bpftrace-script", script.path()]);
    monitor.wait_for_stderr("warning: skipped 1 unreadable lines from bpftrace", Duration::from_secs(60));
    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
    let counted = lab::summary_rows(&finished.stdout);
    let tx = counted["198.51.100.7"].0;
    assert!(tx >= 5 && tx % 5 == 0, "5 bytes per report: {tx}");
    assert!(!finished.stdout.iter().any(|l| l.starts_with('[')), "-q prints no interval tables");
}

#[test]
fn a_killed_monitor_leaves_no_bpftrace_behind() {
    if !lab::require_lab("a_killed_monitor_leaves_no_bpftrace_behind") {
        return;
    }
    let mut lab = Lab::new();
    // A long interval: bpftrace writes nothing, so no SIGPIPE would end it.
    let mut monitor = lab.spawn_in_host(&[BIN, "-b", "bpftrace", "-d", "0", "-q", "-s", "600"]);
    monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(120));
    let pid = monitor.pid();
    let bpftrace = monitor.backend_pid();
    std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().expect("kill");
    assert!(lab::wait_until_gone(bpftrace, Duration::from_secs(5)), "bpftrace {bpftrace} outlived its monitor");
    drop(monitor.finish());
}

#[test]
fn the_ip_cap_folds_quiet_ips_without_losing_a_byte() {
    if !lab::require_lab("the_ip_cap_folds_quiet_ips_without_losing_a_byte") {
        return;
    }
    let mut lab = Lab::new();
    let mut monitor = lab.spawn_in_host(&[BIN, "-b", "bpftrace", "-i", "vh", "-d", "0", "-s", "1", "-q", "--max-ips", "1000", "-p", "9464"]);
    monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(120));
    lab.resolve_neighbours(&["192.0.2.2"]);
    // 5,120 distinct remote IPs, one 30-byte datagram each, over several reports.
    lab.host_shell("for b in {0..19}; do for c in {0..255}; do echo x > /dev/udp/198.18.$b.$c/9; done; done");
    let metrics = lab.scrape_when_counted(9464, &[MANY_IPS_RANGE, "192.0.2.2"]);
    let counters = lab.truth();
    let truth = counters[&(MANY_IPS_RANGE.to_string(), "tx")];
    let gateway = counters[&("192.0.2.2".to_string(), "tx")]; // the priming datagram
    let unexported = lab::metric_value(&metrics, "ip_traffic_unexported_tx_bytes_total").expect("unexported");
    let tracked = lab::metric_value(&metrics, "ip_traffic_monitor_tracked_ips").expect("tracked");
    let folded = lab::metric_value(&metrics, "ip_traffic_monitor_folded_ips_total").expect("folded");
    println!("nftables {truth} bytes to 198.18.0.0/15; unexported {unexported}; tracked {tracked}; folded {folded}");
    assert_eq!(truth, 5_120 * 30);
    assert_eq!(unexported, (truth + gateway) as f64, "every byte kept: none of these IPs reached -t");
    assert!(tracked <= 1000.0, "{tracked}");
    assert!(folded >= 4_000.0, "{folded}");
    drop(monitor);
}

#[test]
fn more_ips_in_an_interval_than_the_maps_hold_still_sum_exactly() {
    if !lab::require_lab("more_ips_in_an_interval_than_the_maps_hold_still_sum_exactly") {
        return;
    }
    let mut lab = Lab::new();
    // Maps with room for 1,024 IPs, then 5,120 IPs within one or two intervals.
    let mut monitor = lab.spawn_in_host(&["env", "BPFTRACE_MAP_KEYS_MAX=1024", BIN, "-b", "bpftrace", "-i", "vh", "-d", "0", "-s", "4", "-q", "-p", "9464"]);
    monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(120));
    lab.resolve_neighbours(&["192.0.2.2"]);
    lab.host_shell("for b in {0..19}; do for c in {0..255}; do echo x > /dev/udp/198.18.$b.$c/9; done; done");
    monitor.wait_for_stderr("bytes counted in the kernel reached no remote IP", Duration::from_secs(10));
    // The second buffer's report too, if the loop spanned two.
    let metrics = lab.scrape_when_counted(9464, &[MANY_IPS_RANGE, "192.0.2.2"]);
    let counters = lab.truth();
    let truth = counters[&(MANY_IPS_RANGE.to_string(), "tx")];
    let gateway = counters[&("192.0.2.2".to_string(), "tx")];
    let unexported = lab::metric_value(&metrics, "ip_traffic_unexported_tx_bytes_total").expect("unexported");
    let tracked = lab::metric_value(&metrics, "ip_traffic_monitor_tracked_ips").expect("tracked");
    println!("nftables {truth} bytes to 198.18.0.0/15 + {gateway} to the gateway; unexported {unexported}; tracked {tracked}");
    assert_eq!(truth, 5_120 * 30);
    assert_eq!(unexported, (truth + gateway) as f64, "bytes without room in the maps are still counted, once");
    assert!(tracked < 5_120.0, "the maps were full: {tracked}");
    drop(monitor);
}

#[test]
fn private_addresses_are_counted_only_with_include_private() {
    if !lab::require_lab("private_addresses_are_counted_only_with_include_private") {
        return;
    }
    let mut lab = Lab::new();
    lab.add_lan();
    for (flags, counted) in [(&[][..], false), (&["--include-private"][..], true)] {
        let mut args = vec![BIN, "-b", "bpftrace", "-d", "0", "-s", "1"];
        args.extend_from_slice(flags);
        let mut monitor = lab.spawn_in_host(&args);
        monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(120));
        // 20 + 8 + 2 = 30 bytes of IPv4, 40 + 8 + 2 = 50 of IPv6, twice (the
        // first datagrams also resolve the neighbours).
        lab.resolve_neighbours(&["10.0.0.2", "fd00::2"]);
        lab.host_shell("echo x > /dev/udp/10.0.0.2/9; echo x > /dev/udp/fd00::2/9");
        let finished = monitor.interrupt();
        assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
        let rows = lab::summary_rows(&finished.stdout);
        println!("{flags:?}: {:?} {:?}", rows.get("10.0.0.2"), rows.get("fd00::2"));
        if counted {
            assert_eq!(rows.get("10.0.0.2").map(|r| r.0), Some(60), "{rows:?}");
            assert_eq!(rows.get("fd00::2").map(|r| r.0), Some(100), "{rows:?}");
        } else {
            assert!(!rows.contains_key("10.0.0.2") && !rows.contains_key("fd00::2"), "{rows:?}");
        }
    }
}

#[test]
fn sighup_is_ignored_and_a_closed_stdout_ends_quietly() {
    if !lab::require_lab("sighup_is_ignored_and_a_closed_stdout_ends_quietly") {
        return;
    }
    let mut lab = Lab::new();
    let mut monitor = lab.spawn_in_host(&[BIN, "-b", "bpftrace", "-i", "vh", "-d", "0", "-s", "1"]);
    monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(120));
    std::process::Command::new("kill").args(["-HUP", &monitor.pid().to_string()]).status().expect("kill");
    monitor.wait_for_stderr("SIGHUP received: ignored", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(2));
    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "still running after SIGHUP, then a clean stop: {:?}", finished.stderr);
    drop(lab);

    // stdout into `head -1`: the rest of the tables hit a closed pipe.
    let mut lab = Lab::new();
    let script = format!("set -o pipefail; {BIN} -b bpftrace -i vh -d 4 -s 1 | head -1; echo \"exit=${{PIPESTATUS[0]}}\"");
    let piped = lab.spawn_in_host(&["bash", "-c", &script]);
    let finished = piped.finish();
    assert!(finished.stdout.iter().any(|l| l == "exit=0"), "{:?} {:?}", finished.stdout, finished.stderr);
    assert!(!finished.stderr.iter().any(|l| l.contains("panicked") || l.contains("Broken pipe")), "{:?}", finished.stderr);
}

#[test]
fn sigterm_under_heavy_traffic_prints_the_summary_within_2_s() {
    if !lab::require_lab("sigterm_under_heavy_traffic_prints_the_summary_within_2_s") {
        return;
    }
    let mut lab = Lab::new();
    lab.start_iperf_server();
    let mut monitor = lab.spawn_in_host(&[BIN, "-b", "bpftrace", "-i", "vh", "-d", "0", "-s", "1", "-q"]);
    monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(120));
    let host = lab.host.clone();
    let traffic = std::thread::spawn(move || {
        std::process::Command::new("ip").args(["netns", "exec", &host, "iperf3", "-c", "198.51.100.7", "-t", "6"]).output()
    });
    // Stop in the middle of the stream, once it runs at full speed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lab.truth()[&("198.51.100.7".to_string(), "tx")] < 50_000_000 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let start = std::time::Instant::now();
    let finished = monitor.terminate();
    let took = start.elapsed();
    let _ = traffic.join();
    println!("SIGTERM to exit under a full-speed TCP stream: {took:?}");
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
    assert!(finished.stdout.iter().any(|l| l.starts_with("== Summary")));
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn a_hundred_thousand_sources_then_a_million_under_the_cap() {
    if !lab::require("a_hundred_thousand_sources_then_a_million_under_the_cap", &["python3"]) {
        return;
    }
    let mut lab = Lab::new();
    lab.accept_any_source_in_remote();
    // -s 4: bpftrace prints and clears the idle buffer within 3/4 of an
    // interval (3 s here); a 131,072-key map can take it over the 0.75 s
    // that -s 1 would leave on a loaded machine.
    let mut monitor =
        lab.spawn_in_host(&[BIN, "-b", "bpftrace", "-i", "vh", "-d", "0", "-s", "4", "-q", "-p", "9464", "--max-ips", "100000", "-t", "1000000000"]);
    monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(120));
    let rx_of = |lab: &Lab| lab.truth()[&(MANY_IPS_RANGE.to_string(), "rx")];
    let family_sum = |metrics: &str| lab::family_sum(metrics, "rx");
    // 100,000 distinct sources within one sample interval (they take about a second).
    lab.udp_from_remote_sources(100_000);
    let metrics = lab.scrape_when_counted(9464, &[MANY_IPS_RANGE]);
    let tracked = lab::metric_value(&metrics, "ip_traffic_monitor_tracked_ips").unwrap_or(0.0);
    let (want, got) = (rx_of(&lab) as f64, family_sum(&metrics));
    println!("100,000 sources: tracked {tracked}");
    lab::assert_counted("100,000 sources, all families", want, got, &metrics, 30.0);
    assert!(tracked >= 99_000.0, "{tracked}");

    // A million, with the cap at 100,000: memory bounded, sums exact.
    lab.udp_from_remote_sources(1_000_000);
    let metrics = lab.scrape_when_counted(9464, &[MANY_IPS_RANGE]);
    let rss = lab::metric_value(&metrics, "process_resident_memory_bytes").unwrap_or(0.0);
    let tracked = lab::metric_value(&metrics, "ip_traffic_monitor_tracked_ips").unwrap_or(0.0);
    let (want, got) = (rx_of(&lab) as f64, family_sum(&metrics));
    println!("1,000,000 sources: tracked {tracked}, monitor RSS {} MiB", rss / 1048576.0);
    lab::assert_counted("1,000,000 sources, all families", want, got, &metrics, 30.0);
    assert!(tracked <= 100_000.0, "{tracked}");
    assert!(rss < 200.0 * 1048576.0, "resident memory bounded: {rss}");
    drop(monitor);
}

#[test]
fn a_stopped_bpftrace_is_marked_down_and_then_resumes_or_is_replaced() {
    if !lab::require_lab("a_stopped_bpftrace_is_marked_down_and_then_resumes_or_is_replaced") {
        return;
    }
    let mut lab = Lab::new();
    let (mut monitor, port) = lab.start_counting();
    let value = |m: &str, name: &str| lab::metric_value(m, name).unwrap_or(-1.0);
    let signal = lab::signal;

    // Stopped for a few intervals: marked down, traffic meanwhile still
    // counted by the kernel side, and up again once it reports.
    let bpftrace = monitor.backend_pid();
    signal("-STOP", bpftrace);
    lab.iperf(&["-c", "198.51.100.7", "-n", "5M"]);
    monitor.wait_for_stderr("marked down until it reports again", Duration::from_secs(10));
    let metrics = lab.http_get_in_host(port, "/metrics");
    assert_eq!(value(&metrics, "ip_traffic_monitor_backend_up"), 0.0, "down while stopped");
    signal("-CONT", bpftrace);
    monitor.wait_for_stderr("bpftrace reports again", Duration::from_secs(10));
    let sent = lab.truth()[&("198.51.100.7".to_string(), "tx")] as f64;
    let metrics = lab.scrape_when_series_hold(port, &[("198.51.100.7", "tx", sent)]);
    let counted = value(&metrics, &lab::byte_series("tx", "198.51.100.7"));
    println!("sent while bpftrace was stopped: nftables {sent}, counted {counted}");
    assert_eq!(counted, sent, "no byte lost or doubled while it was stopped");
    assert_eq!(value(&metrics, "ip_traffic_monitor_backend_up"), 1.0);
    assert_eq!(value(&metrics, "ip_traffic_monitor_backend_restarts_total"), 0.0, "resumed, not restarted");

    // Stopped for good: killed after 10 intervals and replaced, counted as a restart.
    signal("-STOP", bpftrace);
    monitor.wait_for_stderr("killing it", Duration::from_secs(20));
    monitor.wait_for_stderr("bpftrace restarted", Duration::from_secs(30));
    let metrics = lab.scrape_until(port, Duration::from_secs(10), |m| value(m, "ip_traffic_monitor_backend_up") == 1.0);
    assert_eq!(value(&metrics, "ip_traffic_monitor_backend_restarts_total"), 1.0);
    assert_eq!(value(&metrics, "ip_traffic_monitor_backend_up"), 1.0);
    assert_ne!(monitor.backend_pid(), bpftrace, "a new child");
    assert!(lab::is_gone(bpftrace), "the stopped one is gone");
    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
}

#[test]
fn sigusr1_prints_the_totals_so_far_and_sigusr2_is_ignored() {
    if !lab::require_lab("sigusr1_prints_the_totals_so_far_and_sigusr2_is_ignored") {
        return;
    }
    let mut lab = Lab::new();
    let (mut monitor, port) = lab.start_counting();
    lab.iperf(&["-c", "198.51.100.7", "-n", "2M"]);
    let sent = lab.truth()[&("198.51.100.7".to_string(), "tx")];
    lab.scrape_when_series_hold(port, &[("198.51.100.7", "tx", sent as f64)]);
    lab::signal("-USR1", monitor.pid());
    lab::signal("-USR2", monitor.pid());
    monitor.wait_for_stderr("SIGUSR2 received: ignored", Duration::from_secs(5));
    let metrics = lab.http_get_in_host(port, "/metrics");
    assert_eq!(lab::metric_value(&metrics, "ip_traffic_monitor_backend_up"), Some(1.0), "still counting");
    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
    let so_far = finished.stdout.iter().position(|l| l.starts_with("== Totals so far (SIGUSR1)")).expect("a totals table on SIGUSR1");
    let end = finished.stdout.iter().position(|l| l.starts_with("== Summary")).expect("the summary at the end");
    assert!(so_far < end);
    let row = finished.stdout[so_far..end].iter().find(|l| l.starts_with("198.51.100.7 ")).expect("the flow's row");
    let tx: u64 = row.split_whitespace().nth(5).and_then(|v| v.parse().ok()).expect("exact TX bytes");
    println!("SIGUSR1 table: {row}");
    assert_eq!(tx, sent, "the totals so far, exact");
}

/// As with nftables (nftables_accounting): this host's broadcast to its own
/// subnet and the looped-back copies of it and of its multicast (which
/// bpftrace sees received, from this host's own address) count for no peer.
#[test]
fn this_hosts_own_broadcasts_and_looped_multicast_count_for_no_peer() {
    if !lab::require("this_hosts_own_broadcasts_and_looped_multicast_count_for_no_peer", &["bpftrace", "python3"]) {
        return;
    }
    let mut lab = Lab::new();
    let mut monitor = lab.spawn_in_host(&[BIN, "-b", "bpftrace", "-d", "0", "-s", "1", "--top", "100"]);
    monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(120));
    lab.assert_own_broadcasts_count_for_no_peer(monitor);
}
