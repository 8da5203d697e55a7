//! End to end with the iftop backend: one long-lived iftop in the lab's host
//! namespace, every remote IP and direction within 1 % of nftables (iftop
//! prints three significant digits, so 0.5 % is its own rounding), a steady
//! 20 s stream, process names from /proc, and the start-up failures.

mod lab;

use std::time::Duration;

use lab::{BIN, Lab};

/// iftop's cumulative column has three significant digits (±0.5 %).
const BOUND: f64 = 0.01;

fn require(test: &str) -> bool {
    lab::require(test, &["iftop", "stdbuf"])
}

#[test]
fn iftop_counts_every_remote_ip_within_its_resolution() {
    if !require("iftop_counts_every_remote_ip_within_its_resolution") {
        return;
    }
    let mut lab = Lab::new();
    lab.start_iperf_server();
    let mut monitor = lab.spawn_in_host(&[BIN, "-b", "iftop", "-i", "vh", "-d", "0", "-s", "2", "--top", "1000"]);
    monitor.wait_for_stderr("counting with iftop", Duration::from_secs(30));

    lab.mixed_traffic();
    // A steady 20 s stream: long enough for many blocks and for the
    // process scan to find the connection.
    lab.iperf(&["-c", "192.0.2.2", "-t", "20", "-b", "8M"]);

    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "stderr: {:?}", finished.stderr);
    let counted = lab::summary_rows(&finished.stdout);
    let truth = lab.truth();
    let (_, failures) = lab::compare_with_nftables(&counted, &truth, BOUND);
    assert!(failures.is_empty(), "outside the 1 % bound: {failures:?}");
    assert_eq!(counted["192.0.2.2"].2, "iperf3", "process of the 20 s TCP stream: {:?}", counted["192.0.2.2"]);
}

#[test]
fn a_missing_iftop_is_one_clear_line() {
    if !require("a_missing_iftop_is_one_clear_line") {
        return;
    }
    let mut args = vec!["-m".to_string(), "--propagation".into(), "private".into()];
    args.extend(lab::without_programs(&["iftop"], &[BIN, "-b", "iftop", "-i", "lo", "-d", "1"]));
    let out = std::process::Command::new("unshare").args(&args).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("iftop not found") && stderr.contains("apt-get install iftop"), "{stderr}");
}

#[test]
fn auto_falls_back_to_iftop_without_nftables_and_bpftrace_and_says_why() {
    if !require("auto_falls_back_to_iftop_without_nftables_and_bpftrace_and_says_why") {
        return;
    }
    // iftop and stdbuf installed, bpftrace not; nftables not permitted (no
    // CAP_NET_ADMIN, as in a container), while iftop's capture needs only CAP_NET_RAW.
    let mut lab = Lab::new();
    let no_net_admin = ["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin", BIN, "-i", "vh", "-d", "0", "-q"];
    let cmd = lab::without_programs(&["bpftrace"], &no_net_admin);
    let mut monitor = lab.spawn_in_host(&cmd.iter().map(String::as_str).collect::<Vec<_>>());
    monitor.wait_for_stderr("counting with iftop", Duration::from_secs(30));
    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
    let announce = finished.stderr.iter().find(|l| l.contains("counting with iftop")).expect("announced");
    assert!(announce.contains("auto: not nftables, because not permitted to create an nftables table: needs CAP_NET_ADMIN"), "{announce}");
    assert!(announce.contains("not bpftrace, because bpftrace not found"), "{announce}");
}

#[test]
fn iftop_on_a_missing_interface_fails_clearly() {
    if !require("iftop_on_a_missing_interface_fails_clearly") {
        return;
    }
    let out = std::process::Command::new(BIN).args(["-b", "iftop", "-i", "nosuch0"]).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no interface 'nosuch0'"), "{stderr}");
}

#[test]
fn a_router_capturing_on_its_wan_side_counts_its_lans_traffic() {
    if !require("a_router_capturing_on_its_wan_side_counts_its_lans_traffic") {
        return;
    }
    let mut lab = Lab::new();
    lab.add_lan();
    lab.start_iperf_server();
    let mut monitor =
        lab.spawn_in_host(&[BIN, "-b", "iftop", "-i", "vh", "-d", "0", "-s", "2", "--top", "1000", "-t", "0", "-p", "9464"]);
    monitor.wait_for_stderr("counting with iftop", Duration::from_secs(30));
    lab.iperf_from_lan(&["-c", "198.51.100.8", "-n", "10M"]);
    lab.iperf_from_lan(&["-6", "-c", "2001:db8:2::7", "-n", "10M", "-R"]);
    // Wait for iftop to print it (a block every 2 s): a stop right after a
    // short transfer can find it all still in libpcap's buffer (README: the
    // final block lacks what libpcap holds), which one CI run under load did.
    let forwarded = lab.forwarded();
    // Within iftop's bound: its figures have three significant digits.
    let within = |ip: &str, dir| forwarded[&(ip.to_string(), dir)] as f64 * (1.0 - BOUND);
    lab.scrape_when_series_hold(9464, &[("198.51.100.8", "tx", within("198.51.100.8", "tx")),
                                        ("2001:db8:2::7", "rx", within("2001:db8:2::7", "rx"))]);
    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
    let counted = lab::summary_rows(&finished.stdout);
    let forwarded = lab.forwarded();
    for ip in ["198.51.100.8", "2001:db8:2::7"] {
        for (dir, got) in [("tx", counted[ip].0), ("rx", counted[ip].1)] {
            let want = forwarded[&(ip.to_string(), dir)];
            println!("{ip:<14} {dir} forwarded {want:>10} counted {got:>10}");
            assert!((got as f64 - want as f64).abs() <= BOUND * want as f64, "{ip} {dir}: {got} vs {want}");
        }
    }
    assert!(!counted.keys().any(|ip| ip.starts_with("10.") || ip.starts_with("fd00:")), "{counted:?}");
}

#[test]
fn a_killed_iftop_is_restarted_and_counting_goes_on() {
    if !require("a_killed_iftop_is_restarted_and_counting_goes_on") {
        return;
    }
    let mut lab = Lab::new();
    lab.start_iperf_server();
    let mut monitor =
        lab.spawn_in_host(&[BIN, "-b", "iftop", "-i", "vh", "-d", "0", "-q", "--top", "100", "-t", "0", "-p", "9464"]);
    monitor.wait_for_stderr("counting with iftop", Duration::from_secs(30));
    lab.iperf(&["-c", "198.51.100.7", "-t", "3", "-b", "20M"]);
    // Wait for iftop to print it (a block every 2 s): what it has not printed dies with it.
    let before_kill = lab.truth()[&("198.51.100.7".to_string(), "tx")];
    lab.scrape_when_series_hold(9464, &[("198.51.100.7", "tx", before_kill as f64 * (1.0 - BOUND))]);
    let iftop = monitor.backend_pid().to_string();
    let killed_at = std::time::Instant::now();
    std::process::Command::new("kill").args(["-KILL", &iftop]).status().expect("kill");
    monitor.wait_for_stderr("iftop restarted", Duration::from_secs(30));
    assert!(killed_at.elapsed() < Duration::from_secs(5), "back within 5 s: {:?}", killed_at.elapsed());
    lab.iperf(&["-c", "198.51.100.7", "-t", "3", "-b", "20M"]);
    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
    assert!(finished.stderr.iter().any(|l| l.contains("iftop exited unexpectedly")), "{:?}", finished.stderr);
    let counted = lab::summary_rows(&finished.stdout)["198.51.100.7"].0;
    let want = lab.truth()[&("198.51.100.7".to_string(), "tx")];
    println!("198.51.100.7 tx: nftables {want} ({before_kill} before the kill), counted {counted}");
    assert!(counted as f64 <= want as f64 * (1.0 + BOUND), "nothing counted twice: {counted} vs {want}");
    assert!(counted as f64 >= want as f64 * (1.0 - BOUND), "within iftop's bound across the restart: {counted} vs {want}");
}

#[test]
fn sigterm_under_a_stream_waits_only_for_iftops_next_block() {
    if !require("sigterm_under_a_stream_waits_only_for_iftops_next_block") {
        return;
    }
    let mut lab = Lab::new();
    lab.start_iperf_server();
    let mut monitor = lab.spawn_in_host(&[BIN, "-b", "iftop", "-i", "vh", "-d", "0", "-s", "2", "-q"]);
    monitor.wait_for_stderr("counting with iftop", Duration::from_secs(30));
    let host = lab.host.clone();
    let traffic = std::thread::spawn(move || {
        std::process::Command::new("ip").args(["netns", "exec", &host, "iperf3", "-c", "192.0.2.2", "-t", "8", "-b", "50M"]).output()
    });
    std::thread::sleep(Duration::from_millis(4_300));
    let start = std::time::Instant::now();
    let finished = monitor.terminate();
    let took = start.elapsed();
    let sent_until_stop = lab.truth()[&("192.0.2.2".to_string(), "tx")];
    let _ = traffic.join();
    println!("SIGTERM to exit under a 50 Mbit/s stream: {took:?}");
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
    // iftop recomputes only when time() has moved 2 whole seconds past its
    // last block, so the final block can be up to 2 s + 10 ms away.
    assert!(took < Duration::from_millis(2_100), "took {took:?}");
    // That block lacks what libpcap still buffers (iftop opens the capture
    // with a 1000 ms timeout: up to 1 s of the stream, 6.25 MB at 50 Mbit/s)
    // and what was sent after it until nftables was read (less than `took`),
    // give or take iftop's rounding.
    let counted = lab::summary_rows(&finished.stdout)["192.0.2.2"].0;
    let missing = sent_until_stop as f64 - counted as f64;
    let allowed = 50e6 / 8.0 * (1.0 + took.as_secs_f64()) + BOUND * sent_until_stop as f64;
    println!("sent before exit: nftables {sent_until_stop}, counted {counted}, missing {missing} (at most {allowed})");
    assert!(missing <= allowed, "{counted} of {sent_until_stop}");
    assert!(missing >= -BOUND * sent_until_stop as f64, "never more than was sent: {counted} of {sent_until_stop}");
}
