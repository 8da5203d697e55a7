//! `--state`: totals that survive a restart. Two runs of the real binary
//! (nftables backend) in the lab share one state file: every counter of the
//! second run goes on from the first, and the final totals equal the
//! nftables truth over both runs to the byte; a state file that cannot be
//! read stops the monitor with one line and is left as it was.

mod lab;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use lab::{BIN, Lab};

fn start(lab: &mut Lab, state: &str, port: &str) -> lab::Monitor {
    start_saving(lab, state, port, "300")
}

fn start_saving(lab: &mut Lab, state: &str, port: &str, every: &str) -> lab::Monitor {
    let mut monitor = lab.spawn_in_host(&[
        BIN, "-b", "nftables", "-i", "vh", "-d", "0", "-s", "1", "-t", "0", "-p", port, "--state", state, "--save-interval", every,
    ]);
    monitor.wait_for_stderr("counting with nftables", Duration::from_secs(20));
    monitor
}

fn tx_series(metrics: &str, ip: &str) -> f64 {
    lab::series_sum(metrics, "tx", &format!("{ip}\""))
}

#[test]
fn a_restart_with_the_same_state_continues_every_counter() {
    if !lab::require_lab("a_restart_with_the_same_state_continues_every_counter") {
        return;
    }
    let mut lab = Lab::new();
    let dir = lab.temp_dir("state");
    let state = dir.join("totals").to_string_lossy().into_owned();
    let port = lab::free_port().to_string();
    let p: u16 = port.parse().expect("port");

    let first = start(&mut lab, &state, &port);
    assert!(first.stderr.iter().any(|l| l.contains("no --state at") && l.contains("starting from zero")), "{:?}", first.stderr);
    lab.udp_flow(true, "203.0.113.9", 1_200_000); // 1,000 datagrams of 1,228 bytes
    let before_exit = lab.scrape_until(p, Duration::from_secs(10), |m| tx_series(m, "203.0.113.9") >= 1_228_000.0);
    assert_eq!(tx_series(&before_exit, "203.0.113.9"), 1_228_000.0);
    let finished = first.interrupt();
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
    let mode = std::fs::metadata(&state).expect("saved at exit").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the state lists who the host talks to");

    let second = start(&mut lab, &state, &port);
    assert!(second.stderr.iter().any(|l| l.contains("continuing from --state")), "{:?}", second.stderr);
    // Before any new traffic the series is where the first run left it: no counter reset.
    let continued = lab.scrape_until(p, Duration::from_secs(5), |m| tx_series(m, "203.0.113.9") > 0.0);
    assert_eq!(tx_series(&continued, "203.0.113.9"), 1_228_000.0, "the counter goes on, not from 0");
    // This billing period's host total is every byte counted in it: here, all of them.
    let period_tx = lab::metric_value(&continued, "ip_traffic_period_tx_bytes").expect("the period gauge");
    let period_start = lab::metric_value(&continued, "ip_traffic_period_start_timestamp_seconds").expect("its start");
    let month_ago = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64() - 32.0 * 86_400.0;
    assert!(period_start > month_ago, "a period that began within the last 31 days: {period_start}");
    if period_start < (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64() - 60.0) {
        assert_eq!(period_tx, lab::family_sum(&continued, "tx"), "both runs fell in this period");
    }
    lab.udp_flow(true, "203.0.113.9", 600_000); // 500 more
    lab.wait_until_quiet();
    let finished = second.interrupt();
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
    let counted = lab::summary_rows(&finished.stdout);
    let truth = lab.truth()[&("203.0.113.9".to_string(), "tx")];
    println!("over both runs: nftables {truth}, counted {}", counted["203.0.113.9"].0);
    assert_eq!(truth, 1_500 * 1_228);
    assert_eq!(counted["203.0.113.9"].0, truth, "the totals over both runs, to the byte");

    // --report reads the file as saved at exit, for people and for scripts.
    let report = std::process::Command::new(BIN).args(["--report", "--state", &state]).output().expect("--report");
    let text = String::from_utf8_lossy(&report.stdout);
    println!("{text}");
    assert!(report.status.success(), "{}", String::from_utf8_lossy(&report.stderr));
    let row = text.lines().find(|l| l.starts_with("203.0.113.9")).expect("the remote IP's row");
    assert!(row.split_whitespace().any(|w| w == truth.to_string()), "its exact TX: {row}");
    let json = std::process::Command::new(BIN).args(["--report", "--json", "--state", &state]).output().expect("--report --json");
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("one JSON document");
    let top = &doc["top"][0];
    assert_eq!((top["remote_ip"].as_str(), top["tx_bytes"].as_u64()), (Some("203.0.113.9"), Some(truth)), "{doc}");
    assert!(doc["tx_bytes"].as_u64() >= Some(truth), "{doc}");
    // The billing period: this IP's bytes in it (both runs, unless a period
    // began between them), and the text report says so too.
    let in_period = &doc["period"]["top"][0];
    println!("this period: {}", doc["period"]);
    assert_eq!(in_period["remote_ip"].as_str(), Some("203.0.113.9"), "{doc}");
    if period_start < (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64() - 60.0) {
        assert_eq!(in_period["tx_bytes"].as_u64(), Some(truth), "the IP's bytes in the period, over both runs");
    }
    assert!(text.contains("== This billing period, "), "{text}");
}

#[test]
fn a_state_that_cannot_be_read_stops_the_monitor_and_stays_as_it_was() {
    if !lab::require_lab("a_state_that_cannot_be_read_stops_the_monitor_and_stays_as_it_was") {
        return;
    }
    let mut lab = Lab::new();
    let dir = lab.temp_dir("bad-state");
    let whole = dir.join("whole");
    // A real state, saved by a short run.
    let finished = lab.spawn_in_host(&[BIN, "-b", "nftables", "-d", "1", "-q", "--state", &whole.to_string_lossy()]).finish();
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
    let text = std::fs::read(&whole).expect("the state");
    let version = format!("state\t{}", ip_traffic_monitor_cli::state::VERSION);
    let future = String::from_utf8_lossy(&text).replacen(&version, "state\t9", 1).into_bytes();
    assert_ne!(future, text, "a future version's file differs");
    for (name, bytes) in [("truncated", &text[..text.len() - 5]), ("random", &[0x8fu8, 3, 200, 7, 0, 1][..]), ("future", &future[..])] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        let out = lab.spawn_in_host(&[BIN, "-b", "nftables", "-d", "1", "-q", "--state", &path.to_string_lossy()]).finish();
        println!("{name}: {:?}", out.stderr);
        assert_eq!(out.code, Some(1), "{name}");
        assert_eq!(out.stderr.len(), 1, "{name}: one line: {:?}", out.stderr);
        assert!(out.stderr[0].contains(&path.to_string_lossy().into_owned()) && out.stderr[0].contains("move it away"), "{name}");
        assert_eq!(std::fs::read(&path).expect("still there"), bytes, "{name}: left unchanged");
    }
}

/// SIGKILL (or the OOM killer) ends a run without a save. For each backend:
/// the next run goes on from the last save (no counter reset), and what is
/// lost is at most what was counted after that save; with nftables what the
/// kernel counted after the last harvest is found in the table the killed
/// run left, and counted.
#[test]
fn after_sigkill_the_counters_go_on_from_the_last_save_and_the_loss_is_measured() {
    if !lab::require_lab("after_sigkill_the_counters_go_on_from_the_last_save_and_the_loss_is_measured") {
        return;
    }
    for backend in ["nftables", "bpftrace"] {
        let mut lab = Lab::new();
        let dir = lab.temp_dir("sigkill");
        let state = dir.join("totals").to_string_lossy().into_owned();
        let port = lab::free_port();
        let run = |lab: &mut Lab, interval: &str| {
            let args = [BIN, "-b", backend, "-i", "vh", "-d", "0", "-s", interval, "-t", "0", "-p", &port.to_string()];
            let mut monitor = lab.spawn_in_host(&[&args[..], &["--state", &state, "--save-interval", "3600"]].concat());
            monitor.wait_for_stderr(&format!("counting with {backend}"), Duration::from_secs(60));
            monitor
        };
        let ip = "203.0.113.9";
        // Run 1: 1,000 datagrams of 1,228 bytes, saved at its normal exit.
        let first = run(&mut lab, "1");
        lab.udp_flow(true, ip, 1_200_000);
        lab.scrape_until(port, Duration::from_secs(15), |m| tx_series(m, ip) >= 1_228_000.0);
        assert_eq!(first.interrupt().code, Some(0));
        let saved = 1_228_000.0;

        // Run 2: 500 more, counted (in memory), then SIGKILL: no save.
        let second = run(&mut lab, "1");
        lab.udp_flow(true, ip, 600_000);
        lab.scrape_until(port, Duration::from_secs(15), |m| tx_series(m, ip) >= saved + 614_000.0);
        // Then 100 more that a long interval leaves in the kernel (nftables) or
        // in bpftrace's maps when the kill comes.
        drop(second); // SIGKILL (Child::kill)
        let third = run(&mut lab, "30");
        lab.udp_flow(true, ip, 120_000);
        std::thread::sleep(Duration::from_millis(500));
        let pid = third.pid();
        lab::signal("-KILL", pid);
        assert!(lab::wait_until_gone(pid, Duration::from_secs(5)), "killed");
        drop(third);

        // Run 4: from the last save (run 1's), plus what run 2 harvested
        // (nftables: written down in the harvest journal before its kernel
        // counters were made anew), plus what the kernel kept (run 3's 100).
        let fourth = run(&mut lab, "1");
        let truth = lab.truth()[&(ip.to_string(), "tx")] as f64;
        let after_restart = if backend == "nftables" {
            lab.scrape_until(port, Duration::from_secs(15), |m| tx_series(m, ip) >= truth)
        } else {
            // bpftrace has nothing more to give after a few reports.
            std::thread::sleep(Duration::from_secs(3));
            lab.scrape_until(port, Duration::from_secs(15), |m| tx_series(m, ip) >= saved)
        };
        let counted = tx_series(&after_restart, ip);
        let lost = truth - counted;
        println!("{backend}: nftables {truth}, saved {saved}, counted after SIGKILLs {counted}, lost {lost}");
        assert!(counted >= saved, "{backend}: no counter reset: {counted} < {saved}");
        if backend == "nftables" {
            assert_eq!(truth, saved + 614_000.0 + 122_800.0, "the lab sent what the test says");
            // Run 2's 500 datagrams from the journal, run 3's 100 from the
            // table it left (run 4 took it over): none lost, none twice.
            assert_eq!(lost, 0.0, "nftables: every byte counted once across two SIGKILLs");
            assert!(fourth.stderr.iter().any(|l| l.contains("found table inet ip_traffic_monitor")), "{:?}", fourth.stderr);
        } else {
            // Run 2's 500 datagrams went with it (reported, never saved);
            // run 3's 100 too (in bpftrace's maps when the kill came).
            assert!(lost <= 614_000.0 + 122_800.0, "{backend}: lost at most what came after the last save: {lost}");
        }
        drop(fourth);
    }
}

/// nftables and `--state`: the monitor is SIGKILLed again and again at
/// random moments while a stream flows (so kills land in the middle of
/// harvests, journal writes, swaps and saves, one a second), and started
/// again each time; the last run's counter equals the truth to the byte.
#[test]
fn sigkill_at_any_moment_loses_no_byte_with_nftables() {
    if !lab::require_lab("sigkill_at_any_moment_loses_no_byte_with_nftables") {
        return;
    }
    let mut lab = Lab::new();
    let dir = lab.temp_dir("sigkills");
    let state = dir.join("totals").to_string_lossy().into_owned();
    let port = lab::free_port().to_string();
    let ip = "198.51.100.8";
    // Counting begins before the first byte: the truth is all the monitor's.
    let mut monitor = start_saving(&mut lab, &state, &port, "1");
    lab.udp_flow(true, ip, 1_200); // the receiver, and one datagram
    // About 12 s of traffic: 300 bursts of 20 datagrams, 40 ms apart.
    let stream = format!(
        "for i in $(seq 300); do socat -u -b 1200 OPEN:/dev/zero,readbytes=24000 UDP-SENDTO:{ip}:9999,bind=192.0.2.1; sleep 0.04; done"
    );
    let sender = lab.host_shell_in_background(&stream);
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.subsec_nanos() | 1);
    println!("seed {seed}");
    let mut kills = Vec::new();
    for _ in 0..6 {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let after = Duration::from_millis(200 + u64::from(seed % 1800));
        std::thread::sleep(after);
        let pid = monitor.pid();
        lab::signal("-KILL", pid);
        assert!(lab::wait_until_gone(pid, Duration::from_secs(5)), "killed");
        kills.push(after.as_millis());
        drop(monitor);
        monitor = start_saving(&mut lab, &state, &port, "1");
    }
    println!("killed after {kills:?} ms");
    let last = monitor;
    assert!(lab::wait_until_gone(sender, Duration::from_secs(60)), "the stream was sent");
    let truth = lab.truth()[&(ip.to_string(), "tx")] as f64;
    let metrics = lab.scrape_until(port.parse().expect("port"), Duration::from_secs(15), |m| tx_series(m, ip) >= truth);
    let counted = tx_series(&metrics, ip);
    println!("nftables {truth}, counted after {} SIGKILLs {counted}", kills.len());
    assert_eq!(truth, 1_228.0 * (1.0 + 300.0 * 20.0), "the lab sent what the test says");
    assert_eq!(counted, truth, "every byte counted once, whatever moment each kill came at");
    // And no more after a while: nothing was counted twice late.
    std::thread::sleep(Duration::from_secs(3));
    let metrics = lab.scrape_until(port.parse().expect("port"), Duration::from_secs(5), |_| true);
    assert_eq!(tx_series(&metrics, ip), truth, "nothing counted twice later");
    assert_eq!(last.interrupt().code, Some(0));
}
