//! End to end: the real binary with the nftables backend counts real
//! traffic between network namespaces, and every remote IP and direction
//! must equal the lab's nftables truth counters to the byte: both are the
//! kernel's own counters of the same packets, so there is no margin to give.

mod lab;

use std::time::Duration;

use lab::{BIN, Lab, MANY_IPS_RANGE, OTHER_IFACE_REMOTE};

const TABLE: &str = "ip_traffic_monitor";

fn start(lab: &mut Lab, args: &[&str]) -> lab::Monitor {
    let mut cmd = vec![BIN, "-b", "nftables"];
    cmd.extend_from_slice(args);
    let mut monitor = lab.spawn_in_host(&cmd);
    monitor.wait_for_stderr("counting with nftables", Duration::from_secs(20));
    monitor
}

/// The tables in the host namespace.
fn tables(lab: &Lab) -> String {
    let out = std::process::Command::new("ip").args(["netns", "exec", &lab.host, "nft", "list", "tables"]).output().expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_remote_ip_and_direction_equals_nftables_to_the_byte() {
    if !lab::require_lab("every_remote_ip_and_direction_equals_nftables_to_the_byte") {
        return;
    }
    let mut lab = Lab::new();
    lab.start_iperf_server();
    let monitor = start(&mut lab, &["-i", "vh", "-d", "0", "-s", "1", "--top", "1000"]);
    assert!(tables(&lab).contains(&format!("table inet {TABLE}")), "the monitor's own table");

    lab.mixed_traffic();
    // A sustained stream over 20 sample intervals: nothing lost between harvests.
    lab.iperf(&["-c", "192.0.2.2", "-t", "20", "-b", "10M"]);
    // Traffic on the interface -i did not name.
    lab.iperf(&["-c", OTHER_IFACE_REMOTE, "-n", "2M"]);
    lab.wait_until_quiet();

    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "stderr: {:?}", finished.stderr);
    let summary_at = finished.stdout.iter().position(|l| l.starts_with("== Summary")).unwrap_or(0);
    println!("{}", finished.stdout[summary_at..].join("\n"));
    let counted = lab::summary_rows(&finished.stdout);
    let (total, failures) = lab::compare_with_nftables(&counted, &lab.truth(), 0.0);
    println!("total bytes through nftables on vh: {total}");
    assert!(failures.is_empty(), "not equal to the byte: {failures:?}");
    assert!(total > 70_000_000, "the lab must move at least 70 MB, moved {total}");

    let other = lab.truth()[&(OTHER_IFACE_REMOTE.to_string(), "tx")];
    assert!(other > 1_000_000, "traffic did cross vx ({other} bytes)");
    assert!(!counted.contains_key(OTHER_IFACE_REMOTE), "-i vh must not count vx: {counted:?}");
    // The stream's socket names its process (a /proc scan every 2 s, as
    // for iftop: flows shorter than that may stay unnamed).
    assert_eq!(counted["192.0.2.2"].2, "iperf3", "process of the 20 s TCP stream: {:?}", counted["192.0.2.2"]);
    assert!(!tables(&lab).contains(TABLE), "SIGINT removes the table: {}", tables(&lab));
}
