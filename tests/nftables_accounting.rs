//! End to end: the real binary with the nftables backend counts real
//! traffic between network namespaces, and every remote IP and direction
//! must equal the lab's nftables truth counters to the byte: both are the
//! kernel's own counters of the same packets, so there is no margin to give.

mod lab;

use std::time::Duration;

use lab::{BIN, Lab, MANY_IPS_RANGE, MANY_IPS_RANGE_V6, OTHER_IFACE_REMOTE};

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

#[test]
fn a_router_on_its_wan_side_counts_the_lans_traffic_to_the_byte() {
    if !lab::require_lab("a_router_on_its_wan_side_counts_the_lans_traffic_to_the_byte") {
        return;
    }
    let mut lab = Lab::new();
    lab.add_lan();
    lab.start_iperf_server();
    // vh is the WAN side: the LAN's traffic counts against the internet hosts.
    let monitor = start(&mut lab, &["-i", "vh", "-d", "0", "-s", "1", "--top", "1000"]);
    lab.iperf_from_lan(&["-c", "198.51.100.8", "-n", "10M"]);
    lab.iperf_from_lan(&["-6", "-c", "2001:db8:2::7", "-n", "10M", "-R"]);
    lab.iperf(&["-c", "198.51.100.8", "-n", "3M", "-R"]);
    lab.wait_until_quiet();
    let finished = monitor.terminate();
    assert_eq!(finished.code, Some(0), "SIGTERM ends cleanly: {:?}", finished.stderr);
    let counted = lab::summary_rows(&finished.stdout);
    let (forwarded, local) = (lab.forwarded(), lab.truth());
    println!("{:<16} {:<3} {:>10} {:>8} {:>10}", "remote", "dir", "forwarded", "local", "counted");
    for ip in ["198.51.100.8", "2001:db8:2::7"] {
        for (dir, got) in [("tx", counted[ip].0), ("rx", counted[ip].1)] {
            let key = (ip.to_string(), dir);
            let (fwd, own) = (forwarded[&key], local[&key]);
            println!("{ip:<16} {dir:<3} {fwd:>10} {own:>8} {got:>10}");
            assert!(fwd > 0, "{ip} {dir}: traffic was forwarded");
            assert_eq!(got, fwd + own, "{ip} {dir}: forwarded and the host's own, to the byte");
        }
    }
    assert!(!counted.keys().any(|ip| ip.starts_with("10.") || ip.starts_with("fd00:")), "the LAN is private: {counted:?}");
    assert!(!tables(&lab).contains(TABLE), "SIGTERM removes the table");
}

#[test]
fn a_hundred_thousand_sources_then_a_million_more_than_the_sets_hold() {
    if !lab::require("a_hundred_thousand_sources_then_a_million_more_than_the_sets_hold", &["python3"]) {
        return;
    }
    let mut lab = Lab::new();
    lab.accept_any_source_in_remote();
    let port = lab::free_port().to_string();
    // --max-ips 100000: sets of 125,000 peers per interval, and the store's cap.
    let monitor = start(&mut lab, &["-i", "vh", "-d", "0", "-s", "2", "-q", "-p", &port, "--max-ips", "100000", "-t", "1000000000"]);
    let port: u16 = port.parse().expect("port");
    let rx_of = |lab: &Lab| lab.truth()[&(MANY_IPS_RANGE.to_string(), "rx")];
    // 100,000 distinct sources within about a second: every one has room.
    lab.udp_from_remote_sources(100_000);
    let metrics = lab.scrape_when_counted(port, &[MANY_IPS_RANGE]);
    let tracked = lab::metric_value(&metrics, "ip_traffic_monitor_tracked_ips").unwrap_or(0.0);
    let unattributed = lab::metric_value(&metrics, "ip_traffic_monitor_unattributed_bytes_total").unwrap_or(0.0);
    let (want, got) = (rx_of(&lab), lab::family_sum(&metrics, "rx"));
    println!("100,000 sources: nftables {want}, counted {got}, tracked {tracked}, on no IP {unattributed}");
    assert_eq!(got, want as f64, "every byte");
    assert_eq!(tracked, 100_000.0, "every source has its own entry");
    assert_eq!(unattributed, 0.0, "the sets had room for all");

    drop(monitor);

    // A million distinct IPv6 sources in a few 5 s intervals (about 9 s of
    // sending: one interval gets a third of them at the least): with
    // --max-ips 1000 the sets of one generation (the front set and 32
    // shards) have room for 33 × 68 = 2,244 peers per direction and
    // family, so most are refused, and their bytes count in the totals.
    let before = rx_of(&lab) + lab.truth()[&(MANY_IPS_RANGE_V6.to_string(), "rx")];
    let port = lab::free_port();
    let monitor = start(&mut lab, &["-i", "vh", "-d", "0", "-s", "5", "-q", "-p", &port.to_string(), "--max-ips", "1000"]);
    lab.udp_from_many_sources(true, 1_000_000, 1);
    let want = rx_of(&lab) + lab.truth()[&(MANY_IPS_RANGE_V6.to_string(), "rx")] - before;
    // A byte is handed over one to two intervals after its packet.
    let metrics = lab.scrape_until(port, Duration::from_secs(30), |m| lab::family_sum(m, "rx") >= want as f64);
    let tracked = lab::metric_value(&metrics, "ip_traffic_monitor_tracked_ips").unwrap_or(0.0);
    let unattributed = lab::metric_value(&metrics, "ip_traffic_monitor_unattributed_bytes_total").unwrap_or(0.0);
    let rss = lab::metric_value(&metrics, "process_resident_memory_bytes").unwrap_or(0.0);
    let got = lab::family_sum(&metrics, "rx");
    println!(
        "1,000,000 IPv6 sources: nftables {want}, counted {got}, tracked {tracked}, on no IP {unattributed}, RSS {:.1} MiB",
        rss / 1048576.0
    );
    assert_eq!(got, want as f64, "every byte, in all families together");
    assert!(tracked <= 1000.0, "{tracked}");
    assert!(unattributed > 0.0, "the full sets refused peers, whose bytes still count");
    drop(monitor);
}

#[test]
fn what_crossed_the_interface_counts_whatever_another_table_drops() {
    if !lab::require_lab("what_crossed_the_interface_counts_whatever_another_table_drops") {
        return;
    }
    let mut lab = Lab::new();
    // Another table drops everything that comes in after the truth counted
    // it (priority 10 > 0), and what goes out to 198.51.100.7 before the
    // truth sees it (priority -10): that packet never reaches a device.
    lab.nft_load(
        "table inet itm_firewall {\n chain input { type filter hook input priority 10; policy drop; }\n\
         chain output { type filter hook output priority -10; ip daddr 198.51.100.7 drop; }\n}\n",
    );
    let monitor = start(&mut lab, &["-i", "vh", "-d", "0", "-s", "1", "--top", "1000"]);
    lab.udp_flow(false, "203.0.113.9", 1_200_000);
    lab.host_shell("for i in 1 2 3; do echo x > /dev/udp/198.51.100.7/9; done 2>/dev/null; true");
    lab.wait_until_quiet();
    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
    let counted = lab::summary_rows(&finished.stdout);
    let truth = lab.truth();
    let dropped_in = truth[&("203.0.113.9".to_string(), "rx")];
    println!("received and dropped: nftables {dropped_in}, counted {:?}", counted.get("203.0.113.9"));
    assert_eq!(dropped_in, 1000 * 1228, "1000 datagrams of 1200 bytes came in");
    assert_eq!(counted["203.0.113.9"].1, dropped_in, "received on vh, then dropped: counted");
    assert_eq!(truth[&("198.51.100.7".to_string(), "tx")], 0);
    assert!(!counted.contains_key("198.51.100.7"), "dropped before it reached a device: not counted");
    assert!(tables(&lab).contains("itm_firewall"), "the other table untouched");
}

#[test]
fn the_table_goes_at_every_exit_and_a_crashed_runs_table_is_taken_over() {
    if !lab::require_lab("the_table_goes_at_every_exit_and_a_crashed_runs_table_is_taken_over") {
        return;
    }
    let mut lab = Lab::new();
    // -d: the run ends by itself.
    let finished = lab.spawn_in_host(&[BIN, "-b", "nftables", "-d", "1", "-q"]).finish();
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
    assert!(!tables(&lab).contains(TABLE), "-d removes the table");

    // SIGKILL: the table stays and goes on counting.
    let crashed = start(&mut lab, &["-i", "vh", "-d", "0", "-q"]);
    let crashed_pid = crashed.pid();
    lab::signal("-KILL", crashed_pid);
    assert!(lab::wait_until_gone(crashed_pid, Duration::from_secs(5)));
    assert!(tables(&lab).contains(TABLE), "a killed monitor cannot clean up");
    lab.udp_flow(true, "203.0.113.9", 600_000);

    // The next run, with the same options, counts what the table holds
    // and goes on counting in it.
    let next = start(&mut lab, &["-i", "vh", "-d", "0", "-s", "1", "--top", "100"]);
    let found = next.stderr.iter().find(|l| l.contains("found table")).cloned().unwrap_or_default();
    println!("{found}");
    assert!(found.contains(&format!("left by an earlier run (pid {crashed_pid})")), "{:?}", next.stderr);
    assert!(found.contains("614000 bytes") && found.contains("counting goes on in it"), "500 datagrams of 1228 bytes: {found}");

    // A second monitor while this one runs: refused, the running one's table untouched.
    let second = lab.spawn_in_host(&[BIN, "-b", "nftables", "-i", "vh", "-d", "2", "-q"]).finish();
    println!("{:?}", second.stderr);
    assert_eq!(second.code, Some(1));
    assert!(second.stderr.iter().any(|l| l.contains("belongs to a monitor that is still running")), "{:?}", second.stderr);
    assert!(tables(&lab).contains(TABLE));

    let finished = next.terminate();
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
    let counted = lab::summary_rows(&finished.stdout);
    assert_eq!(counted["203.0.113.9"].0, 614_000, "the crashed run's leftover, to the byte");
    assert!(!tables(&lab).contains(TABLE), "SIGTERM removes the table");

    // A crashed run with other options: its table is read, then replaced.
    let crashed = start(&mut lab, &["-i", "vh", "-d", "0", "-q", "--max-ips", "5000"]);
    let crashed_pid = crashed.pid();
    lab::signal("-KILL", crashed_pid);
    assert!(lab::wait_until_gone(crashed_pid, Duration::from_secs(5)));
    lab.udp_flow(true, "203.0.113.9", 120_000);
    let next = start(&mut lab, &["-i", "vh", "-d", "0", "-s", "1", "--top", "100"]);
    let found = next.stderr.iter().find(|l| l.contains("found table")).cloned().unwrap_or_default();
    println!("{found}");
    assert!(found.contains("made for other options") && found.contains("122800 bytes") && found.contains("replaced"), "{found}");
    let finished = next.terminate();
    assert_eq!(lab::summary_rows(&finished.stdout)["203.0.113.9"].0, 122_800, "the other table's leftover, to the byte");
    assert!(!tables(&lab).contains(TABLE), "SIGTERM removes the table");
}

/// A broadcast to this host's own subnet and a multicast with loopback:
/// nftables sees the broadcast twice in postrouting (the copy looped back
/// to the host passes it too) and each looped copy again in prerouting,
/// from this host's own address. Neither address is a peer
/// (docs/ACCOUNTING.md): nothing is counted for them, and the real flow
/// beside them counts to the byte.
#[test]
fn this_hosts_own_broadcasts_and_looped_multicast_count_for_no_peer() {
    if !lab::require("this_hosts_own_broadcasts_and_looped_multicast_count_for_no_peer", &["python3"]) {
        return;
    }
    let mut lab = Lab::new();
    let monitor = start(&mut lab, &["-d", "0", "-s", "1", "--top", "100"]);
    lab.assert_own_broadcasts_count_for_no_peer(monitor);
}

/// The table is made in two transactions, the base chains' rules and the
/// stamp last (table::create): a run killed between them leaves a table
/// that counts nothing. The next run must replace it, not take it up.
#[test]
fn a_table_left_unfinished_is_replaced_and_counting_starts_anew() {
    if !lab::require_lab("a_table_left_unfinished_is_replaced_and_counting_starts_anew") {
        return;
    }
    let mut lab = Lab::new();
    let crashed = start(&mut lab, &["-i", "vh", "-d", "0", "-q"]);
    let crashed_pid = crashed.pid();
    lab::signal("-KILL", crashed_pid);
    assert!(lab::wait_until_gone(crashed_pid, Duration::from_secs(5)));
    // What the first transaction alone leaves.
    lab.host_shell(&format!("nft flush chain inet {TABLE} tx; nft flush chain inet {TABLE} rx; nft delete counter inet {TABLE} harvests"));
    let next = start(&mut lab, &["-i", "vh", "-d", "0", "-s", "1", "--top", "100"]);
    let found = next.stderr.iter().find(|l| l.contains("found table")).cloned().unwrap_or_default();
    println!("{found}");
    assert!(found.contains(&format!("left by an earlier run (pid {crashed_pid}), unfinished")) && found.contains("replaced"), "{:?}", next.stderr);
    lab.udp_flow(true, "203.0.113.9", 600_000);
    let finished = next.terminate();
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
    let truth = lab.truth()[&("203.0.113.9".to_string(), "tx")];
    assert_eq!(truth, 614_000, "500 datagrams of 1228 bytes");
    assert_eq!(lab::summary_rows(&finished.stdout)["203.0.113.9"].0, truth, "counted in the new table, to the byte");
    assert!(!tables(&lab).contains(TABLE), "SIGTERM removes the table");
}

#[test]
fn a_table_deleted_under_it_is_set_up_again_and_counts_on_to_the_byte() {
    if !lab::require_lab("a_table_deleted_under_it_is_set_up_again_and_counts_on_to_the_byte") {
        return;
    }
    let mut lab = Lab::new();
    let mut monitor = start(&mut lab, &["-i", "vh", "-d", "0", "-s", "1", "--top", "100"]);
    lab.udp_flow(true, "203.0.113.9", 600_000); // 500 datagrams of 1228 bytes
    // Handed over within two intervals: then the table holds none of it.
    std::thread::sleep(Duration::from_secs(3));
    // What a firewall reload that flushes the whole ruleset does to it
    // (Debian's /etc/nftables.conf begins with `flush ruleset`); only our
    // table here, so that the lab's truth counters stay.
    lab.host_shell(&format!("nft delete table inet {TABLE}"));
    monitor.wait_for_stderr("nftables restarted", Duration::from_secs(10));
    assert!(monitor.stderr.iter().any(|l| l.contains("is gone")), "it says what happened: {:?}", monitor.stderr);
    assert!(tables(&lab).contains(&format!("table inet {TABLE}")), "set up again");
    lab.udp_flow(true, "198.51.100.7", 1_200_000); // 1000 datagrams of 1228 bytes
    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "stderr: {:?}", finished.stderr);
    let counted = lab::summary_rows(&finished.stdout);
    let truth = lab.truth();
    println!("203.0.113.9: counted {}, nftables {}; 198.51.100.7: counted {}, nftables {}", counted["203.0.113.9"].0, truth[&("203.0.113.9".to_string(), "tx")], counted["198.51.100.7"].0, truth[&("198.51.100.7".to_string(), "tx")]);
    assert_eq!(counted["203.0.113.9"].0, 614_000, "harvested before the table went");
    assert_eq!(counted["198.51.100.7"].0, 1_228_000, "counted in the new table, to the byte");
    assert_eq!(truth[&("198.51.100.7".to_string(), "tx")], 1_228_000);
    assert!(!tables(&lab).contains(TABLE), "SIGINT removes the new table too");
}

/// `-i` names a device, and a device that goes and comes back (a PPPoE or
/// VPN link reconnecting) gets a new index: the table, which looks at the
/// index it had first, must go on counting on it by its name, and on no
/// other device.
#[test]
fn a_device_made_anew_under_its_name_is_counted_on_to_the_byte() {
    if !lab::require_lab("a_device_made_anew_under_its_name_is_counted_on_to_the_byte") {
        return;
    }
    let mut lab = Lab::new();
    let index = |lab: &Lab| {
        let out = std::process::Command::new("ip").args(["netns", "exec", &lab.host, "cat", "/sys/class/net/vx/ifindex"]).output().expect("ifindex");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let first_index = index(&lab);
    let monitor = start(&mut lab, &["-i", "vx", "-d", "0", "-s", "1", "--top", "100"]);
    lab.udp_flow(true, OTHER_IFACE_REMOTE, 600_000); // 500 datagrams of 1228 bytes, out on vx
    // The link goes down and comes back: a new pair of the same names.
    let (h, r) = (lab.host.clone(), lab.remote.clone());
    lab.host_shell(&format!(
        "ip link del vx && ip link add vx type veth peer name vxr netns {r} && ip link set vx up && \
         ip addr add 198.51.100.129/25 dev vx && ip -n {r} link set vxr up && ip -n {r} addr add 198.51.100.130/25 dev vxr"
    ));
    let second_index = index(&lab);
    assert_ne!(first_index, second_index, "vx in {h} was made anew");
    lab.udp_flow(true, OTHER_IFACE_REMOTE, 1_200_000); // 1000 datagrams of 1228 bytes, on the new vx
    lab.udp_flow(true, "198.51.100.7", 300_000); // on vh: not counted
    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "stderr: {:?}", finished.stderr);
    let counted = lab::summary_rows(&finished.stdout);
    let truth = lab.truth()[&(OTHER_IFACE_REMOTE.to_string(), "tx")];
    println!("vx's index {first_index}, then {second_index}: counted {}, nftables {truth}", counted[OTHER_IFACE_REMOTE].0);
    assert_eq!(truth, 614_000 + 1_228_000);
    assert_eq!(counted[OTHER_IFACE_REMOTE].0, truth, "both devices named vx, to the byte");
    assert!(!counted.contains_key("198.51.100.7"), "-i vx must not count vh: {counted:?}");
}

/// Started in the host's namespace by `nsenter --net`, as a container
/// runtime or a service manager would, /sys still shows the machine's own
/// devices: `-i` must find the device of the namespace the monitor runs
/// in, and count on it, not on whatever /sys names so.
#[test]
fn a_monitor_entered_by_nsenter_finds_its_namespaces_device() {
    if !lab::require_lab("a_monitor_entered_by_nsenter_finds_its_namespaces_device") {
        return;
    }
    let mut lab = Lab::new();
    let netns = format!("--net=/var/run/netns/{}", lab.host);
    let mut monitor = lab.spawn_with(&["nsenter", &netns], "", &[BIN, "-b", "nftables", "-i", "vh", "-d", "0", "-s", "1"]);
    monitor.wait_for_stderr("counting with nftables", Duration::from_secs(20));
    lab.udp_flow(true, "198.51.100.7", 600_000); // 500 datagrams of 1228 bytes, out on vh
    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "stderr: {:?}", finished.stderr);
    let counted = lab::summary_rows(&finished.stdout);
    assert_eq!(lab.truth()[&("198.51.100.7".to_string(), "tx")], 614_000);
    assert_eq!(counted.get("198.51.100.7").map(|c| c.0), Some(614_000), "stderr: {:?}", finished.stderr);
}

#[test]
fn without_cap_net_admin_it_says_what_is_missing_and_what_else_to_use() {
    if !lab::require_lab("without_cap_net_admin_it_says_what_is_missing_and_what_else_to_use") {
        return;
    }
    let lab = Lab::new();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.host, "setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin", BIN, "-b", "nftables", "-d", "1"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("CAP_NET_ADMIN") && stderr.contains("-b bpftrace or -b iftop"), "{stderr}");
}

#[test]
fn json_lines_give_every_interval_and_the_summary_exactly() {
    if !lab::require_lab("json_lines_give_every_interval_and_the_summary_exactly") {
        return;
    }
    let mut lab = Lab::new();
    let monitor = start(&mut lab, &["-i", "vh", "-d", "0", "-s", "1", "--json"]);
    lab.udp_flow(true, "198.51.100.7", 1_200_000);
    lab.udp_flow(false, "203.0.113.9", 600_000);
    lab.wait_until_quiet();
    std::thread::sleep(Duration::from_secs(3)); // two intervals: the flows are in interval lines too
    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "stderr: {:?}", finished.stderr);
    // Every line of stdout is one JSON object; nothing else is printed there.
    let lines: Vec<serde_json::Value> =
        finished.stdout.iter().filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let (intervals, last) = lines.split_at(lines.len() - 1);
    assert_eq!(last[0]["type"], "summary", "{:?}", last[0]);
    assert!(intervals.iter().all(|l| l["type"] == "interval"), "{intervals:?}");
    let truth = lab.truth();
    let want = |ip: &str, dir: &'static str| truth[&(ip.to_string(), dir)];
    // Each remote IP's interval bytes add up to its total, and both to the truth.
    for (ip, dir) in [("198.51.100.7", "tx"), ("203.0.113.9", "rx")] {
        let field = format!("{dir}_bytes");
        let in_intervals: u64 = intervals
            .iter()
            .flat_map(|l| l["top"].as_array().cloned().unwrap_or_default())
            .filter(|row| row["remote_ip"] == ip)
            .map(|row| row[&field].as_u64().expect("a byte count"))
            .sum();
        let in_summary = last[0]["top"].as_array().expect("top").iter().find(|row| row["remote_ip"] == ip).expect("in the summary")[&field]
            .as_u64()
            .expect("a byte count");
        println!("{ip} {dir}: nftables {}, intervals {in_intervals}, summary {in_summary}", want(ip, dir));
        assert_eq!((in_intervals, in_summary), (want(ip, dir), want(ip, dir)), "{ip} {dir}");
    }
    let summed: u64 = intervals.iter().map(|l| l["tx_bytes"].as_u64().expect("tx_bytes")).sum();
    assert_eq!(summed, last[0]["tx_bytes"].as_u64().expect("tx_bytes"), "the intervals' TX adds up to the summary's");
}

/// The monitor's table's rules, from inside the host namespace.
fn table_text(lab: &Lab) -> String {
    let out = std::process::Command::new("ip").args(["netns", "exec", &lab.host, "nft", "list", "table", "inet", TABLE]).output().expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until the table holds every rule text of `rules`; the table then.
fn wait_for_rules(lab: &Lab, rules: &[&str], timeout: Duration) -> String {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let text = table_text(lab);
        if rules.iter().all(|rule| text.contains(rule)) {
            return text;
        }
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("lane") || l.contains("hook")).collect();
        assert!(std::time::Instant::now() < deadline, "no rule {rules:?} in time; the table's lanes and hooks:\n{}", lines.join("\n"));
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// From namespace `ns`, `pps` UDP datagrams a second of 1000 bytes at L3
/// (IPv4; 1020 over IPv6) from `from` to `to` port `port`, for `seconds`.
fn paced_udp(ns: &str, from: &str, to: &str, port: u16, pps: u32, seconds: u32) -> std::process::Child {
    let (family, payload) = if to.contains(':') { ("AF_INET6", 972) } else { ("AF_INET", 972) };
    let script = format!(
        "import socket, time\n\
s = socket.socket(socket.{family}, socket.SOCK_DGRAM)\n\
s.bind(('{from}', 0))\n\
start = time.time()\n\
n = 0\n\
while time.time() < start + {seconds}:\n\
\x20   s.sendto(b'x' * {payload}, ('{to}', {port}))\n\
\x20   n += 1\n\
\x20   ahead = start + n / {pps} - time.time()\n\
\x20   if ahead > 0:\n\
\x20       time.sleep(ahead)\n"
    );
    std::process::Command::new("ip").args(["netns", "exec", ns, "python3", "-c", &script]).spawn().expect("python3")
}

/// A peer that sends an eighth of its direction's packets gets a lane, a
/// rule and counter of its own before the common path, from the interval
/// after the one that showed it (IPv4 in the base chain, after its address
/// the header's first byte and the device; IPv6 in its chain, on all 16
/// bytes), and loses it when quiet; the monitor's last reading takes the
/// lanes that count still: those peers and every other, light ones passing
/// the lanes' rules among them, stay equal to the truth to the byte.
#[test]
fn a_busy_peer_is_counted_in_a_lane_of_its_own_to_the_byte_and_leaves_it_when_quiet() {
    if !lab::require_lab("a_busy_peer_is_counted_in_a_lane_of_its_own_to_the_byte_and_leaves_it_when_quiet") {
        return;
    }
    let mut lab = Lab::new();
    lab.start_iperf_server();
    // Every device but loopback: the lanes' device test is `!= "lo"`.
    let monitor = start(&mut lab, &["-d", "0", "-s", "1", "--top", "1000"]);
    // Also leaves UDP receivers on 203.0.113.9:9999 (remote) and 192.0.2.1:9998 (host).
    lab.mixed_traffic();
    let (remote, host) = (lab.remote.clone(), lab.host.clone());
    // Light peers, all along: 5 datagrams a second to a closed port (and the
    // port-unreachable errors back).
    let mut light = [paced_udp(&host, "192.0.2.1", "192.0.2.2", 9, 5, 14), paced_udp(&host, "2001:db8::1", "2001:db8::2", 9, 5, 14)];
    let mut v4 = [paced_udp(&host, "192.0.2.1", "203.0.113.9", 9999, 2000, 6), paced_udp(&remote, "198.51.100.7", "192.0.2.1", 9998, 2000, 6)];
    let rules = wait_for_rules(
        &lab,
        &[
            "@nh,128,32 0xcb007109 @nh,0,8 0x45 oif != \"lo\" counter name \"tx_",
            "@nh,96,32 0xc6336407 @nh,0,8 0x45 iif != \"lo\" counter name \"rx_",
        ],
        Duration::from_secs(5),
    );
    for light_peer in ["c0000202", "20010db8000000000000000000000002"] {
        assert!(!rules.contains(light_peer), "a light peer got a lane: {light_peer}");
    }
    v4.iter_mut().for_each(|sender| assert!(sender.wait().expect("sender").success()));
    // Quiet: two harvests later, no rule and no counter of a lane is left.
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    while table_text(&lab).contains("_lane_") {
        assert!(std::time::Instant::now() < deadline, "lanes left when quiet:\n{}", table_text(&lab));
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut v6 = [
        paced_udp(&host, "2001:db8::1", "2001:db8:2::7", 9999, 2000, 6),
        paced_udp(&remote, "2001:db8:2::7", "2001:db8::1", 9998, 2000, 6),
    ];
    wait_for_rules(
        &lab,
        &[
            "@nh,192,128 0x20010db8000200000000000000000007 counter name \"tx_",
            "@nh,64,128 0x20010db8000200000000000000000007 counter name \"rx_",
        ],
        Duration::from_secs(5),
    );
    v6.iter_mut().for_each(|sender| assert!(sender.wait().expect("sender").success()));
    light.iter_mut().for_each(|sender| assert!(sender.wait().expect("sender").success()));
    lab.wait_until_quiet();
    // Stopped while the lanes still count (their last second is in them
    // only): the last reading takes them too.
    assert!(table_text(&lab).contains("_lane_2001"), "the IPv6 lanes are there at the end");
    let finished = monitor.interrupt();
    assert_eq!(finished.code, Some(0), "stderr: {:?}", finished.stderr);
    let counted = lab::summary_rows(&finished.stdout);
    let truth = lab.truth();
    let (_, failures) = lab::compare_with_nftables(&counted, &truth, 0.0);
    assert!(failures.is_empty(), "not equal to the byte: {failures:?}");
    // Evidence that the lanes' peers were busy (the equality is the check):
    // 6 s of 2000 datagrams a second is 12 MB.
    for (peer, dir) in [("203.0.113.9", "tx"), ("198.51.100.7", "rx"), ("2001:db8:2::7", "tx"), ("2001:db8:2::7", "rx")] {
        let moved = truth[&(peer.to_string(), dir)];
        assert!(moved > 10_000_000, "{peer} {dir}: {moved} bytes");
    }
}
