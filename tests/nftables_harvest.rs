//! The nftables backend's parts, each against the lab's nftables truth
//! counters: a set with per-element counters dumped over netlink by our own
//! code (`backend::nftables::dump_set`), the table created over netlink, and
//! the harvests that swap its generations of sets.

mod lab;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use ip_traffic_monitor_cli::backend::nftables::{FAMILY_INET, dump_set, elements, socket::Socket};
use lab::Lab;

const TABLE: &str = "itm_harvest";

/// Dumps `set` from inside network namespace `ns`.
fn dump_in(ns: &str, set: &'static str) -> (Vec<elements::Counted>, usize) {
    in_netns(ns, move |socket| dump_set(socket, FAMILY_INET, TABLE, set)).expect("dump")
}

/// The monitor's table layout with the default filter, counting on every device but loopback.
fn layout() -> ip_traffic_monitor_cli::backend::nftables::table::Layout {
    ip_traffic_monitor_cli::backend::nftables::table::Layout {
        size: 65_536,
        skipped: ip_traffic_monitor_cli::filter::AddressFilter::default().skipped_blocks(),
        iface: None,
    }
}

/// Bytes sent to `ip` by nftables' truth counters.
fn truth_of(lab: &Lab, ip: &str) -> u64 {
    lab.truth()[&(ip.to_string(), "tx")]
}

/// Runs `f` with a netfilter socket inside network namespace `ns`, on a
/// thread of its own (setns changes only the calling thread's namespace).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce(&mut Socket) -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let netns = std::fs::File::open(&path).expect("the namespace");
        // SAFETY: setns with an open namespace descriptor, on this thread only.
        assert_eq!(unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
        let mut socket = Socket::open().expect("a netfilter netlink socket");
        f(&mut socket)
    })
    .join()
    .expect("netns thread")
}

#[test]
fn a_set_dumped_over_netlink_holds_exactly_the_truth_counters() {
    if !lab::require_lab("a_set_dumped_over_netlink_holds_exactly_the_truth_counters") {
        return;
    }
    let mut lab = Lab::new();
    lab.nft_load(&format!(
        "table inet {TABLE} {{\n\
         set tx4 {{ type ipv4_addr; size 65536; flags dynamic; counter; }}\n\
         set tx6 {{ type ipv6_addr; size 65536; flags dynamic; counter; }}\n\
         chain out {{ type filter hook output priority 0; update @tx4 {{ ip daddr }}; update @tx6 {{ ip6 daddr }}; }}\n}}\n"
    ));
    lab.start_iperf_server();
    lab.iperf(&["-c", "198.51.100.7", "-n", "3M"]);
    lab.udp_flow(true, "203.0.113.9", 500_000);
    lab.iperf(&["-6", "-c", "2001:db8:2::7", "-n", "2M"]);
    lab.wait_until_quiet();

    let (mut dumped, mut unreadable) = dump_in(&lab.host, "tx4");
    let (v6, bad6) = dump_in(&lab.host, "tx6");
    dumped.extend(v6);
    unreadable += bad6;
    assert_eq!(unreadable, 0);
    let dumped: BTreeMap<String, u64> = dumped.into_iter().map(|e| (e.ip.to_string(), e.bytes)).collect();
    let truth = lab.truth();
    println!("{:<16} {:>10} {:>10}", "remote", "nftables", "dumped");
    for ip in lab::REMOTE_V4.iter().chain(lab::REMOTE_V6.iter()) {
        let want = truth[&(ip.to_string(), "tx")];
        let got = dumped.get(*ip).copied().unwrap_or(0);
        println!("{ip:<16} {want:>10} {got:>10}");
        assert_eq!(got, want, "{ip}: the set's counter, read over netlink, equals the truth counter");
    }
    // Evidence that traffic crossed (the equality above is the check).
    assert!(dumped["198.51.100.7"] > 1_000_000 && dumped["2001:db8:2::7"] > 1_000_000, "{dumped:?}");
}

#[test]
fn a_table_created_over_netlink_counts_every_peer_exactly_and_goes_away() {
    use ip_traffic_monitor_cli::backend::nftables::table;
    if !lab::require_lab("a_table_created_over_netlink_counts_every_peer_exactly_and_goes_away") {
        return;
    }
    let mut lab = Lab::new();
    lab.add_lan();
    // --exclude blocks that overlap each other and the defaults: the
    // kernel's interval set takes them merged. And 5,000 more apart from
    // each other (a country's list, say): 10,000 elements of the interval
    // set, more than one message's attribute and the socket's default send
    // buffer can carry. Their 20 leading bytes, one apart, make IPv4's
    // prefilter a bitmap set; IPv6's five blocks of leads stay inline.
    let listed = ["203.0.113.0/24", "203.0.113.9", "10.1.0.0/16", "2001:db8:2::/48", "2001:db8:2::7"].map(String::from);
    let many = (102..142).step_by(2).flat_map(|a| (0..250).map(move |b| format!("{a}.{b}.0.0/20")));
    let exclude: Vec<_> = listed.into_iter().chain(many).map(|c| c.parse().expect("CIDR")).collect();
    let filter = ip_traffic_monitor_cli::filter::AddressFilter { exclude, ..Default::default() };
    let excluded = ["203.0.113.9", "2001:db8:2::7"];
    let layout = ip_traffic_monitor_cli::backend::nftables::table::Layout { skipped: filter.skipped_blocks(), ..layout() };
    in_netns(&lab.host, move |s| table::create(s, "itm_created", &layout, false, table::Stamp { number: 0, owner: 1, active: table::Generation::A })).expect("the table, created over netlink");
    // Never counted (loopback; IPv6 neighbour discovery's multicast comes by itself) and private (the LAN).
    lab.host_shell("echo x > /dev/udp/127.0.0.1/9; echo x > /dev/udp/10.0.0.2/9; echo x > /dev/udp/fd00::2/9");
    lab.start_iperf_server();
    lab.iperf(&["-c", "198.51.100.7", "-n", "3M"]);
    lab.iperf(&["-c", "198.51.100.8", "-n", "2M", "-R"]);
    lab.udp_flow(true, "203.0.113.9", 500_000); // excluded
    lab.udp_flow(true, "2001:db8:2::7", 600_000); // excluded
    lab.iperf(&["-6", "-c", "2001:db8::2", "-n", "1M", "-R"]);
    lab.wait_until_quiet();
    // The excluded peers' traffic crossed: 416 datagrams of 1200 bytes and
    // one of 800 (IPv4, 28 bytes of headers each); 500 of 1200 (IPv6, 48).
    assert_eq!([truth_of(&lab, "203.0.113.9"), truth_of(&lab, "2001:db8:2::7")], [416 * 1228 + 828, 500 * 1248]);
    let mut counted = BTreeMap::new();
    // The rules feed generation A (B stays empty until the first swap).
    for (set, dir) in table::sets(table::Generation::A) {
        let dir = ["tx", "rx"][dir];
        let name = set.clone();
        let (elements, unreadable) = in_netns(&lab.host, move |s| dump_set(s, FAMILY_INET, "itm_created", &name)).expect("dump");
        assert_eq!(unreadable, 0);
        for elements::Counted { ip, bytes, .. } in elements {
            assert!(filter.counts(ip), "{ip} ({bytes} bytes in {set}) should have been left out in the kernel");
            assert!(counted.insert((ip.to_string(), dir), bytes).is_none(), "{ip} in two sets");
        }
    }
    let truth = lab.truth();
    println!("{:<16} {:<3} {:>10} {:>10}", "remote", "dir", "nftables", "counted");
    for ip in lab::REMOTE_V4.iter().chain(lab::REMOTE_V6.iter()) {
        for dir in ["tx", "rx"] {
            let crossed = truth[&(ip.to_string(), dir)];
            let want = if excluded.contains(ip) { 0 } else { crossed };
            let got = counted.get(&(ip.to_string(), dir)).copied().unwrap_or(0);
            println!("{ip:<16} {dir:<3} {crossed:>10} {got:>10}");
            assert_eq!(got, want, "{ip} {dir}");
        }
    }
    // IPv4's prefilter: a set that holds each leading byte of the skipped
    // blocks (its elements have no counter: a dump reads them as
    // unreadable). IPv6's: a rule per block of leads, no set.
    let leads = table::leads(&table::skipped_ranges(&filter.skipped_blocks(), true), true).expect("few leads");
    assert!(leads.contains(&203), "the --exclude blocks' leads: {leads:?}");
    let (_, held) = in_netns(&lab.host, |s| dump_set(s, FAMILY_INET, "itm_created", "skip4_lead")).expect("dump");
    assert_eq!(held, leads.len(), "skip4_lead");
    assert!(in_netns(&lab.host, |s| dump_set(s, FAMILY_INET, "itm_created", "skip6_lead")).is_err(), "no skip6_lead");
    let rules = std::process::Command::new("ip").args(["netns", "exec", &lab.host, "nft", "list", "chain", "inet", "itm_created", "tx6"]).output().expect("nft");
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(rules.contains("@nh,192,16 0x2001 @nh,192,128 @skip6 return"), "2001:db8:2::/48's lead, then the interval lookup:\n{rules}");
    // Every range is in the interval set: its first address and the one
    // after its last (none after a range that runs to 255.255.255.255).
    let ranges = table::skipped_ranges(&filter.skipped_blocks(), true);
    let ends = ranges.iter().filter(|(_, last)| *last < u128::from(u32::MAX)).count();
    assert!(ranges.len() > 5_000, "{} IPv4 ranges", ranges.len());
    let (_, held) = in_netns(&lab.host, |s| dump_set(s, FAMILY_INET, "itm_created", "skip4")).expect("dump");
    assert_eq!(held, ranges.len() + ends, "skip4 holds every excluded range");
    in_netns(&lab.host, |s| table::delete(s, "itm_created")).expect("deleted");
    let tables = std::process::Command::new("ip").args(["netns", "exec", &lab.host, "nft", "list", "tables"]).output().expect("nft");
    assert!(!String::from_utf8_lossy(&tables.stdout).contains("itm_created"), "the table is gone");
}

/// A sender that, for `seconds`, sends 1-byte UDP datagrams to each of
/// `to` in turn as fast as it can: multicast and link-local addresses on
/// device `device`, whose IPv4 address is `device_v4`. A socket of its own
/// for each address, not waiting: one whose neighbour is slow to answer
/// (its datagrams wait, filling that socket's buffer) holds up no other.
fn udp_stream_script(to: &[&str], seconds: u32, device: &str, device_v4: &str) -> String {
    let to: Vec<String> = to.iter().map(|a| format!("'{a}'")).collect();
    format!(
        "import socket, time\n\
         index = socket.if_nametoindex('{device}')\n\
         def sender(a):\n\
         \x20   if ':' not in a:\n\
         \x20       s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         \x20       s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton('{device_v4}'))\n\
         \x20       return s, (a, 9)\n\
         \x20   scoped = a.startswith('ff') or a.startswith('fe80:')\n\
         \x20   return socket.socket(socket.AF_INET6, socket.SOCK_DGRAM), (a, 9, 0, index if scoped else 0)\n\
         senders = [sender(a) for a in [{}]]\n\
         end = time.time() + {seconds}\n\
         while time.time() < end:\n\
         \x20   for s, to in senders:\n\
         \x20       try:\n\
         \x20           s.sendto(b'x', socket.MSG_DONTWAIT, to)\n\
         \x20       except BlockingIOError:\n\
         \x20           pass\n",
        to.join(", ")
    )
}

/// Packets that meet the table in the moments after it is made must meet
/// all of it. The kernel makes a transaction's rules live before it has
/// published the sorted array of an interval set's ranges (6.18): made in
/// one transaction, the table let packets of skipped peers past the
/// skipped-blocks lookup for some hundred microseconds, into the sets. So
/// while senders stream to and from one address of each kind of skipped
/// block (private, link-local, multicast, --exclude, both families, both
/// directions) and to one public peer, the table is made and deleted 20
/// times: no set may ever hold a skipped peer, and the public peer counts
/// in every round (the table was live).
#[test]
fn a_table_counts_no_skipped_peer_from_its_first_packet() {
    use ip_traffic_monitor_cli::backend::nftables::table;
    if !lab::require("a_table_counts_no_skipped_peer_from_its_first_packet", &["python3"]) {
        return;
    }
    let mut lab = Lab::new();
    let lan = lab.add_lan();
    let exclude = vec!["203.0.113.0/24".parse().expect("CIDR"), "2001:db8:2::/48".parse().expect("CIDR")];
    let filter = ip_traffic_monitor_cli::filter::AddressFilter { exclude, ..Default::default() };
    let public = "198.51.100.7";
    // The LAN's link-local address, once its duplicate address detection
    // is over: until then it answers no neighbour solicitation, and the
    // sender's datagrams to it wait, filling its socket's buffer.
    let link_local_of_lan = || {
        let out = std::process::Command::new("ip").args(["-n", &lan, "-6", "-o", "addr", "show", "dev", "vlr", "scope", "link"]).output().expect("ip");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let mut addr = link_local_of_lan();
    for _ in 0..100 {
        if addr.contains("fe80:") && !addr.contains("tentative") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        addr = link_local_of_lan();
    }
    assert!(!addr.contains("tentative"), "the LAN's link-local address is still tentative after 5 s: {addr}");
    let link_local = addr.split_whitespace().find_map(|w| w.strip_suffix("/64").filter(|a| a.starts_with("fe80:"))).expect("the LAN's fe80:: address");
    let from_host = ["10.0.0.2", "fd00::2", "ff02::1", link_local, "224.0.0.251", "203.0.113.9", "2001:db8:2::7", public];
    let from_lan = ["10.0.0.1", "fd00::1"]; // received from private peers
    // They send until stopped below (at most a minute, should the test die
    // before: the lab kills them then too).
    let host_sender = udp_stream_script(&from_host, 60, "vl", "10.0.0.1");
    let lan_sender = udp_stream_script(&from_lan, 60, "vlr", "10.0.0.2");
    let senders = [
        lab.host_shell_in_background(&format!("python3 -c \"{host_sender}\"")),
        lab.host_shell_in_background(&format!("ip netns exec {lan} python3 -c \"{lan_sender}\"")),
    ];
    std::thread::sleep(std::time::Duration::from_millis(500)); // the senders have started
    for round in 0..20 {
        let layout = table::Layout { skipped: filter.skipped_blocks(), ..layout() };
        let stamp = table::Stamp { number: 0, owner: 1, active: table::Generation::A };
        // Made, counting for 20 ms, read and deleted, from one thread in the host.
        let counted = in_netns(&lab.host, move |s| {
            table::create(s, "itm_first", &layout, false, stamp).expect("the table, created over netlink");
            std::thread::sleep(std::time::Duration::from_millis(20));
            let mut counted = Vec::new();
            for (set, _) in table::sets(table::Generation::A) {
                let (elements, unreadable) = dump_set(s, FAMILY_INET, "itm_first", &set).expect("dump");
                assert_eq!(unreadable, 0);
                counted.extend(elements.into_iter().map(|e| (set.clone(), e.ip, e.bytes)));
            }
            table::delete(s, "itm_first").expect("deleted");
            counted
        });
        for (set, ip, bytes) in &counted {
            assert!(filter.counts(*ip), "round {round}: {ip} ({bytes} bytes in {set}) should have been left out in the kernel");
        }
        let public_bytes: u64 = counted.iter().filter(|(_, ip, _)| ip.to_string() == public).map(|(_, _, bytes)| bytes).sum();
        assert!(public_bytes > 0, "round {round}: the table counted the public peer");
    }
    for pid in senders {
        assert!(!lab::is_gone(pid), "sender {pid} sent through every round");
        lab::signal("-TERM", pid);
    }
}

#[test]
fn the_first_peers_of_an_interval_count_in_the_front_set_and_the_others_in_their_shards() {
    use ip_traffic_monitor_cli::backend::nftables::table;
    if !lab::require("the_first_peers_of_an_interval_count_in_the_front_set_and_the_others_in_their_shards", &["python3"]) {
        return;
    }
    let lab = Lab::new();
    lab.accept_any_source_in_remote();
    // Room for 80 peers in each set: 1,000 sources fill the front set and
    // leave about 29 to each shard (a shard refuses a peer at 9 standard
    // deviations above that).
    let layout = table::Layout { size: 1_280, ..layout() };
    let room = table::set_room(&layout) as usize;
    assert_eq!(room, 80);
    in_netns(&lab.host, move |s| table::create(s, "itm_front", &layout, false, table::Stamp { number: 0, owner: 1, active: table::Generation::A })).expect("the table");
    // Three 2-byte datagrams from each of 1,000 sources: 30 bytes each at L3.
    lab.udp_from_many_sources(false, 1_000, 3);
    lab.wait_until_quiet();
    let (mut front, mut in_shards, mut fullest) = (0, 0, 0);
    let mut counted: BTreeMap<IpAddr, u64> = BTreeMap::new();
    for (set, _) in table::sets(table::Generation::A).into_iter().filter(|(set, _)| set.starts_with("rx4_")) {
        let name = set.clone();
        let (elements, unreadable) = in_netns(&lab.host, move |s| dump_set(s, FAMILY_INET, "itm_front", &name)).expect("dump");
        assert_eq!(unreadable, 0);
        if set == "rx4_front_a" {
            front += elements.len();
        } else {
            in_shards += elements.len();
            fullest = fullest.max(elements.len());
        }
        // Two CPUs racing for the front set's last room could put one peer
        // in two sets, each with its own packets: added up, as a harvest does.
        elements.into_iter().for_each(|e| *counted.entry(e.ip).or_default() += e.bytes);
    }
    let want = lab.truth()[&(lab::MANY_IPS_RANGE.to_string(), "rx")];
    let got: u64 = counted.values().sum();
    let refused = in_netns(&lab.host, |s| ip_traffic_monitor_cli::backend::nftables::read_counter(s, "itm_front", "rx_a")).expect("counter");
    println!("front set {front} peers (room {room}), shards {in_shards} (the fullest {fullest}); nftables {want}, counted {got}, refused {refused}");
    assert_eq!(want, 1_000 * 3 * 30, "what crossed");
    assert_eq!(got + refused, want, "every byte, in a set or in the counter of refused bytes");
    assert_eq!(refused, 0, "no shard was full (the fullest held {fullest} of {room})");
    assert_eq!(counted.len(), 1_000, "every source");
    assert!(counted.values().all(|&bytes| bytes == 90), "each source's three datagrams: {:?}", counted.iter().find(|(_, b)| **b != 90));
    assert_eq!(front, room, "the front set took the first peers, as many as it holds");
    assert!(in_shards >= 1_000 - room, "the shards took the others: {in_shards}");
}

/// The kernel skips exactly what the user-space filter leaves out, at each
/// skipped block's edges and middle, whichever prefilter the blocks make:
/// the defaults (a rule per block of leading bytes), `--include-private`,
/// 14 more blocks one lead apart (more than the rules are worth: a bitmap
/// set of leads), and 2000::/3 (8,192 leads of IPv6: the interval set's
/// lookup alone). One packet from each probe, raw, so that any
/// source can be sent, even those no socket may bind.
#[test]
fn the_kernel_skips_what_the_filter_leaves_out_at_each_blocks_edges_with_either_prefilter() {
    use ip_traffic_monitor_cli::backend::nftables::table;
    use ip_traffic_monitor_cli::filter::{AddressFilter, Cidr};
    if !lab::require("the_kernel_skips_what_the_filter_leaves_out_at_each_blocks_edges_with_either_prefilter", &["python3"]) {
        return;
    }
    let lab = Lab::new();
    let scattered: Vec<Cidr> = (0..14).map(|k| format!("{}.7.0.0/16", 20 + 2 * k).parse().expect("CIDR")).collect();
    let filters = [
        ("defaults", AddressFilter::default()),
        ("--include-private", AddressFilter { include_private: true, ..Default::default() }),
        ("14 more leads", AddressFilter { exclude: scattered, ..Default::default() }),
        ("2000::/3", AddressFilter { exclude: vec!["2000::/3".parse().expect("CIDR")], ..Default::default() }),
    ];
    for (name, filter) in filters {
        let layout = table::Layout { skipped: filter.skipped_blocks(), ..layout() };
        let probes = edges(&layout.skipped);
        in_netns(&lab.host, move |s| table::create(s, "itm_edges", &layout, false, table::Stamp { number: 0, owner: 1, active: table::Generation::A })).expect("the table");
        let bitmap = in_netns(&lab.host, |s| dump_set(s, FAMILY_INET, "itm_edges", "skip4_lead")).is_ok();
        assert_eq!(bitmap, name == "14 more leads", "{name}: IPv4's leads in a set");
        lab.raw_from_sources(&probes);
        let mut counted: BTreeMap<IpAddr, u64> = BTreeMap::new();
        for (set, _) in table::sets(table::Generation::A).into_iter().filter(|(set, _)| set.starts_with("rx")) {
            let (elements, _) = in_netns(&lab.host, move |s| dump_set(s, FAMILY_INET, "itm_edges", &set)).expect("dump");
            elements.into_iter().for_each(|e| *counted.entry(e.ip).or_default() += e.bytes);
        }
        in_netns(&lab.host, |s| table::delete(s, "itm_edges")).expect("deleted");
        let (mut kept, mut left_out) = (0, 0);
        for probe in &probes {
            let want = filter.counts(*probe).then_some(if probe.is_ipv4() { 30 } else { 50 });
            assert_eq!(counted.get(probe).copied(), want, "{name}: {probe}");
            if want.is_some() { kept += 1 } else { left_out += 1 }
        }
        println!("{name}: {} probes, {kept} counted, {left_out} skipped, as the filter decides", probes.len());
        assert!(kept >= 10 && left_out >= 10, "{name}: probes on both sides");
    }
}

/// Around each block: the address before it, its first, middle and last,
/// and the one after it (0.0.0.0 as a source is the kernel's to fill in:
/// 0.0.0.1 instead).
fn edges(blocks: &[ip_traffic_monitor_cli::filter::Cidr]) -> Vec<IpAddr> {
    let mut probes = Vec::new();
    for block in blocks {
        let (bits, width, v4) = match block.network() {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32, true),
            IpAddr::V6(a) => (u128::from(a), 128, false),
        };
        let top = u128::MAX >> (128 - width);
        let last = bits | top.checked_shr(u32::from(block.prefix())).unwrap_or(0);
        let around = [bits.checked_sub(1), Some(bits.max(u128::from(v4))), Some(bits / 2 + last / 2), Some(last), last.checked_add(1).filter(|a| *a <= top)];
        for address in around.into_iter().flatten() {
            let ip = if v4 { IpAddr::from((address as u32).to_be_bytes()) } else { IpAddr::from(address.to_be_bytes()) };
            if !probes.contains(&ip) {
                probes.push(ip);
            }
        }
    }
    probes
}

/// The handles of the monitor's table as `nft -a` shows them: of every set
/// of peers, by name (`set tx4_7_a { # handle 42`), and of the rules of
/// every shard chain, by chain (`update @tx4_7_a { … } return # handle 97`);
/// and the front sets its rules count in (each in two rules: the fast
/// one and the step-by-step one). A set or rule made anew gets a
/// new handle.
#[derive(Debug, PartialEq)]
struct Handles {
    sets: BTreeMap<String, u64>,
    rules: BTreeMap<String, Vec<u64>>,
    /// The front sets the rules of the chains that count name.
    fronts: Vec<String>,
}

fn handles(lab: &Lab) -> Handles {
    let listing = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.host, "nft", "-a", "list", "table", "inet", "ip_traffic_monitor"])
        .output()
        .expect("nft");
    let of_peers = |name: &str| name.ends_with("_a") || name.ends_with("_b"); // not skip4, tx, …
    let mut handles = Handles { sets: BTreeMap::new(), rules: BTreeMap::new(), fronts: Vec::new() };
    let mut chain = None;
    for line in String::from_utf8_lossy(&listing.stdout).lines().map(str::trim) {
        // The fast rule names it at its end, the step-by-step one at its start.
        if let Some(front) = line.split_once("update @").and_then(|(_, rest)| rest.split_once(' ')).map(|(set, _)| set) {
            if front.contains("_front_") {
                handles.fronts.push(front.to_string());
            }
        }
        let Some((what, handle)) = line.rsplit_once(" # handle ") else { continue };
        let Ok(handle) = handle.trim().parse::<u64>() else { continue };
        if let Some(name) = what.strip_prefix("set ").and_then(|w| w.strip_suffix(" {")) {
            if of_peers(name) {
                handles.sets.insert(name.to_string(), handle);
            }
        } else if let Some(name) = what.strip_prefix("chain ").and_then(|w| w.strip_suffix(" {")) {
            chain = of_peers(name).then(|| name.to_string());
        } else if let Some(chain) = &chain {
            handles.rules.entry(chain.clone()).or_default().push(handle);
        }
    }
    handles
}

/// The names whose handles differ between `before` and `after`.
fn changed<T: PartialEq>(before: &BTreeMap<String, T>, after: &BTreeMap<String, T>) -> Vec<String> {
    after.iter().filter(|(name, handle)| before.get(*name) != Some(handle)).map(|(name, _)| name.clone()).collect()
}

#[test]
fn each_harvest_hands_over_the_generation_before_and_the_last_reading_the_rest() {
    use ip_traffic_monitor_cli::backend::in_process::Counter;
    use ip_traffic_monitor_cli::backend::nftables::harvest::Harvester;
    use ip_traffic_monitor_cli::store::{HarvestMarks, Record};
    if !lab::require_lab("each_harvest_hands_over_the_generation_before_and_the_last_reading_the_rest") {
        return;
    }
    let mut lab = Lab::new();
    let (steps_tx, steps) = std::sync::mpsc::channel::<&'static str>();
    let (done_tx, done) = std::sync::mpsc::channel::<u64>();
    let (attached_tx, attached) = std::sync::mpsc::channel::<()>();
    // The monitor's own harvester, on a thread inside the lab's host.
    let path = format!("/var/run/netns/{}", lab.host);
    let harvester = std::thread::spawn(move || {
        let netns = std::fs::File::open(&path).expect("the namespace");
        // SAFETY: setns with an open namespace descriptor, on this thread only.
        assert_eq!(unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
        let mut harvester = Harvester::new(layout(), None);
        harvester.attach(HarvestMarks::default()).expect("the table");
        attached_tx.send(()).expect("attached");
        let sent_to = |report: &[Record]| -> u64 {
            let peer: IpAddr = "198.51.100.7".parse().expect("an address");
            report.iter().map(|r| match r { Record::Tx(ip, n) if *ip == peer => *n, _ => 0 }).sum()
        };
        for step in steps {
            let mut report = Vec::new();
            match step {
                "harvest" => harvester.harvest(&mut report, HarvestMarks::default()).expect("a harvest"),
                _ => harvester.detach(&mut report).expect("the last reading"),
            }
            done_tx.send(sent_to(&report)).expect("result");
        }
    });
    let step = |what: &'static str| -> u64 {
        steps_tx.send(what).expect("step");
        done.recv().expect("its bytes")
    };
    // Traffic only once the table counts: what passed before is nobody's.
    attached.recv().expect("the table is there");
    // UDP from socat, so each flow's size on the wire is known to the byte
    // and all of it has passed the hook when the sender exits (with iperf3
    // the wire size is not the -n size). 1200-byte datagrams: 1228 bytes
    // each at L3 (IPv4 20 + UDP 8).
    lab.udp_flow(true, "198.51.100.7", 1_200_000); // into generation A
    let first = step("harvest"); // reads B (empty), the rules move to B
    lab.udp_flow(true, "198.51.100.7", 600_000); // into B
    let before = handles(&lab);
    let second = step("harvest"); // reads A: the first flow; the rules move to A, made anew
    let after_second = handles(&lab);
    let third = step("harvest"); // reads B: the second flow
    let before_quiet = handles(&lab);
    let fourth = step("harvest"); // reads A, empty since it was made anew
    let after_quiet = handles(&lab);
    lab.udp_flow(true, "198.51.100.7", 120_000); // into B
    let last = step("detach"); // both generations, then the table goes
    drop(steps_tx);
    harvester.join().expect("harvester thread");
    let truth = lab.truth()[&("198.51.100.7".to_string(), "tx")];
    println!("harvests [{first}, {second}, {third}, {fourth}], last reading {last}; nftables {truth}");
    assert_eq!([first, second, third, fourth, last], [0, 1000 * 1228, 500 * 1228, 0, 100 * 1228], "each flow handed over once, exactly");
    assert_eq!(second + third + last, truth, "every byte handed over exactly once");
    // Of generation A, only the set that held the first flow's peer was
    // made anew (a new handle): the front set, as its one peer was the
    // first of the interval. The 131 read empty were left as they were, and
    // so were the shards' chains and all of B's.
    assert_eq!(before.sets.len(), 264, "4 directions and families × (32 shards + the front set) × 2 generations");
    assert_eq!(before.rules.len(), 256, "a chain per shard's set: {:?}", before.rules.keys().collect::<Vec<_>>());
    assert!(before.rules.values().all(|rules| rules.len() == 2), "update, then the refused bytes' counter: {:?}", before.rules);
    let remade = changed(&before.sets, &after_second.sets);
    assert_eq!(remade, ["tx4_front_a"], "sets made anew");
    assert_eq!(changed(&before.rules, &after_second.rules), Vec::<String>::new(), "no shard's chain got new rules");
    // The base chains' rules name the front sets of the generation they
    // feed: written anew with each swap.
    assert!(before.fronts.iter().all(|front| front.ends_with("_front_b")), "after the first swap: {:?}", before.fronts);
    assert!(after_second.fronts.iter().all(|front| front.ends_with("_front_a")), "after the second: {:?}", after_second.fronts);
    assert_eq!(after_second.fronts.len(), 8, "a front set per direction and family, in two rules each: {:?}", after_second.fronts);
    // A quiet interval's harvest makes no set anew and changes no shard's
    // chain (only the maps, the base chains' few rules and the stamp).
    assert_eq!((&before_quiet.sets, &before_quiet.rules), (&after_quiet.sets, &after_quiet.rules), "a quiet harvest made nothing anew");
    let tables = std::process::Command::new("ip").args(["netns", "exec", &lab.host, "nft", "list", "tables"]).output().expect("nft");
    assert!(!String::from_utf8_lossy(&tables.stdout).contains("ip_traffic_monitor"), "the table is gone");
}
