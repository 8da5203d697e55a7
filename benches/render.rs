//! Rendering /metrics: time and size of the exposition for 10,000 and
//! 100,000 exported remote IPs (each with TX, RX and a process), median of
//! 7 runs. Run: make bench

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use ip_traffic_monitor_cli::exporter::metrics::render;
use ip_traffic_monitor_cli::store::{Comm, Owner, Record, Store};

fn store_with(ips: u32) -> Store {
    let store = Store::new(0, 1_000_000);
    let records: Vec<Record> = (0..ips)
        .flat_map(|i| {
            let ip = if i % 5 < 3 {
                IpAddr::V4(Ipv4Addr::from(0xC612_0000 + i)) // 198.18.0.0/15
            } else {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16))
            };
            let owner = Owner { pid: 1000 + i % 50, comm: Comm::new(b"nginx") };
            [Record::Tx(ip, 123_456_789 + u64::from(i)), Record::Rx(ip, 987_654 + u64::from(i)), Record::Owner(ip, Box::new(owner))]
        })
        .collect();
    store.apply_report(&records, 0);
    store
}

fn main() {
    for ips in [10_000u32, 100_000] {
        let store = store_with(ips);
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..7 {
            let start = Instant::now();
            let text = render(&store, "bpftrace", &ip_traffic_monitor_cli::location::Locator::from_sources(ip_traffic_monitor_cli::location::Sources::none(), Default::default()), &Default::default());
            times.push(start.elapsed().as_secs_f64() * 1000.0);
            size = text.len();
        }
        times.sort_by(f64::total_cmp);
        println!(
            "| render /metrics, {ips} exported IPs | {:.1} ms (min {:.1}, max {:.1}) | | {size} bytes, {} per IP |",
            times[3],
            times[0],
            times[6],
            size / ips as usize
        );
    }
}
