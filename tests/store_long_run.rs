//! Months without waiting months: the store fed synthetic reports, two
//! simulated weeks of one report a minute (20,160 reports), 10 million
//! distinct remote addresses passing through a table of 5,000 beside 50
//! busy peers that talk every minute. Memory must stay bounded, the busy
//! peers must keep their series (never evicted, every byte on it), and the
//! series plus the unexported sums must equal every byte after every report.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ip_traffic_monitor_cli::store::{Record, Store};

const REPORTS: u32 = 20_160;
const NEW_PER_REPORT: u32 = 500;
const BUSY: u16 = 50;
const MAX_IPS: usize = 5_000;

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

#[test]
fn ten_million_addresses_over_two_weeks_leave_memory_bounded_and_busy_peers_on_their_series() {
    let store = Store::new(1_000, MAX_IPS);
    let busy: Vec<IpAddr> = (0..BUSY).map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i))).collect();
    let (mut counted, mut busy_bytes) = (0u64, 0u64);
    let mut rss_after_first_week = 0;
    let mut report = Vec::with_capacity((NEW_PER_REPORT + u32::from(BUSY)) as usize);
    for n in 0..REPORTS {
        report.clear();
        // New sources first (a flood), 1 to 3 packets each, sometimes a bigger one that passes -t.
        for k in 0..NEW_PER_REPORT {
            let serial = n * NEW_PER_REPORT + k;
            let ip = IpAddr::V4(Ipv4Addr::from(0x0b00_0000u32.wrapping_add(serial.wrapping_mul(2_654_435_761))));
            let bytes = if serial % 97 == 0 { 5_000 } else { 60 * u64::from(1 + serial % 3) };
            counted += bytes;
            report.push(if serial % 2 == 0 { Record::Rx(ip, bytes) } else { Record::Tx(ip, bytes) });
        }
        for b in &busy {
            report.push(Record::Tx(*b, 1_500));
            report.push(Record::Rx(*b, 40_000));
            counted += 41_500;
        }
        busy_bytes += 41_500;
        store.apply_report(&report, 0);

        let e = store.exported();
        let held: u64 = e.series.iter().map(|s| s.tx + s.rx).sum::<u64>() + e.unexported_tx + e.unexported_rx;
        assert_eq!(held, counted, "after report {n}: every byte once");
        assert!(e.tracked <= MAX_IPS, "after report {n}: {} tracked", e.tracked);
        if n == REPORTS / 2 {
            rss_after_first_week = vm_rss_kib();
        }
    }
    let e = store.exported();
    for b in &busy {
        let series = e.series.iter().find(|s| s.ip == *b).map(|s| s.tx + s.rx);
        assert_eq!(series, Some(busy_bytes), "{b} kept its series, with every byte of two weeks");
    }
    let rss_at_end = vm_rss_kib();
    println!(
        "{} addresses in {REPORTS} reports: {} folded, {} series evicted, RSS {rss_after_first_week} KiB after a week, {rss_at_end} KiB after two",
        REPORTS * NEW_PER_REPORT,
        e.folded_ips,
        e.evicted_series
    );
    assert!(e.evicted_series > 0, "exported flood addresses gave way too");
    assert!(rss_at_end <= rss_after_first_week + 4096, "memory grew in the second week: {rss_after_first_week} -> {rss_at_end} KiB");
}
