//! What an unprivileged local user controls must not change a count: the
//! names of its processes reach the monitor through the backend's output,
//! so a name made of newlines and report lines is the attack. Checked with
//! the real bpftrace backend against nftables.

mod lab;

use std::time::Duration;

use lab::{BIN, Lab, MANY_IPS_RANGE};

/// Names a process of uid 65534 gives itself: lines of the backend's old
/// output format (an RX count for `::`, a TX series for `100::`, a report
/// end), and a terminal escape with a byte that is not UTF-8.
const HOSTILE_NAMES: [&[u8]; 4] = [b"\n@rx[::]: 9999\n", b"\n@tx[100::]: 9\n", b"a)\n@end\n", b"\x1b]0;pwn\x07\xff"];
/// Remote IPs each hostile process sends to (in 198.18.N.0/24 for name N).
const DESTS_PER_NAME: u8 = 25;

#[test]
fn hostile_process_names_change_no_count_and_show_escaped() {
    if !lab::require("hostile_process_names_change_no_count_and_show_escaped", &["setpriv"]) {
        return;
    }
    let mut lab = Lab::new();
    let port = lab::free_port().to_string();
    let mut monitor =
        lab.spawn_in_host(&[BIN, "-b", "bpftrace", "-i", "vh", "-d", "0", "-s", "1", "-t", "0", "-p", &port, "--top", "1000"]);
    monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(120));
    lab.resolve_neighbours(&["192.0.2.2"]);

    for (n, name) in HOSTILE_NAMES.iter().enumerate() {
        let dests: Vec<String> = (1..=DESTS_PER_NAME).map(|i| format!("198.18.{n}.{i}")).collect();
        lab.udp_as_nobody_named(name, &dests);
    }
    let port: u16 = port.parse().expect("port");
    let truth = lab.truth();
    let want_tx = truth[&(MANY_IPS_RANGE.to_string(), "tx")] as f64;
    let want_rx = truth[&(MANY_IPS_RANGE.to_string(), "rx")] as f64;
    let metrics = lab.scrape_until(port, Duration::from_secs(20), |m| lab::series_sum(m, "tx", "198.18.") >= want_tx);
    let (got_tx, got_rx) = (lab::series_sum(&metrics, "tx", "198.18."), lab::series_sum(&metrics, "rx", "198.18."));
    println!("198.18.0.0/15: nftables tx {want_tx} rx {want_rx}; counted tx {got_tx} rx {got_rx}");
    // 100 datagrams of 29 IP bytes (20 header, 8 UDP, 1 payload).
    assert_eq!(want_tx, 100.0 * 29.0, "the lab sent what it meant to");
    assert_eq!((got_tx, got_rx), (want_tx, want_rx), "every byte to the range, and none more");

    // Nothing forged: no unexported bytes (-t 0 exports every IP), no line
    // the parser could not read, no series but the lab's addresses.
    for series in ["ip_traffic_unexported_tx_bytes_total", "ip_traffic_unexported_rx_bytes_total", "ip_traffic_monitor_parse_errors_total"] {
        assert_eq!(lab::metric_value(&metrics, series), Some(0.0), "{series}\n{metrics}");
    }
    for line in metrics.lines().filter(|l| l.starts_with("ip_traffic_tx_bytes_total{") || l.starts_with("ip_traffic_rx_bytes_total{")) {
        let ip = line.split('"').nth(1).expect("remote_ip");
        assert!(ip.starts_with("198.18.") || ip == "192.0.2.2", "a series nobody sent to: {line}");
    }

    // Each owner shows its name escaped: in the exposition (escaped again
    // for the format) and on the console, where no control byte gets out.
    for (n, name) in HOSTILE_NAMES.iter().enumerate() {
        let shown = shown_name(name);
        let label = format!("remote_ip=\"198.18.{n}.1\",");
        let info = metrics
            .lines()
            .find(|l| l.starts_with("ip_traffic_remote_process_info{") && l.contains(&label))
            .unwrap_or_else(|| panic!("an owner for 198.18.{n}.1:\n{metrics}"));
        assert!(info.ends_with(&format!(",process=\"{}\"}} 1", shown.replace('\\', "\\\\"))), "{info} (want {shown})");
    }
    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
    let console = finished.stdout.join("\n");
    assert!(!console.contains('\x1b') && !console.contains('\x07'), "a control byte reached the console");
    for name in HOSTILE_NAMES {
        assert!(console.contains(&shown_name(name)), "{} on the console", shown_name(name));
    }
    assert!(!finished.stderr.iter().any(|l| l.contains("maps hold")), "no false 'maps full': {:?}", finished.stderr);
}

/// How a name is shown: the kernel keeps 15 bytes; control bytes and
/// bytes that are not UTF-8 as \xNN.
fn shown_name(name: &[u8]) -> String {
    name.iter()
        .take(15)
        .map(|&b| if b.is_ascii_graphic() || b == b' ' { (b as char).to_string() } else { format!("\\x{b:02x}") })
        .collect()
}
