//! Applying reports to a full table: 100,000 tracked IPs, all exported
//! (-t 0, the worst case for eviction), then reports of 10,000 new IPs each
//! until 1,000,000 have passed. Prints new IPs per second. Then `--state`
//! with those 100,000 IPs: the time to save it (atomically, with fsync) and
//! to load it, and the file's size. Run: make bench

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use ip_traffic_monitor_cli::state::{State, file};
use ip_traffic_monitor_cli::store::{Record, Store};

const TABLE: usize = 100_000;
const PER_REPORT: u32 = 10_000;
const NEW: u32 = 1_000_000;

fn v6(i: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16))
}

fn main() {
    let store = Store::new(0, TABLE);
    let fill: Vec<Record> = (0..TABLE as u32).map(|i| Record::Rx(IpAddr::V4(Ipv4Addr::from(0xC612_0000 + i)), 100)).collect();
    store.apply_report(&fill, 0);
    let start = Instant::now();
    let mut report = Vec::with_capacity(PER_REPORT as usize);
    for first in (0..NEW).step_by(PER_REPORT as usize) {
        report.clear();
        report.extend((first..first + PER_REPORT).map(|i| Record::Rx(v6(i), 80)));
        store.apply_report(&report, 0);
    }
    let took = start.elapsed().as_secs_f64();
    println!(
        "| apply reports to a full table ({TABLE} IPs, all exported), {NEW} new IPs | {:.0} new IPs/s ({:.2} s) | | |",
        f64::from(NEW) / took,
        took
    );
    state_save_and_load(&store);
}

fn state_save_and_load(store: &Store) {
    let path = std::env::temp_dir().join(format!("itm-bench-state-{}", std::process::id()));
    let started = Instant::now();
    let state = State { saved_at: 0, store: store.save(), places: Vec::new() };
    file::save(&path, &state).expect("saved");
    let saved = started.elapsed();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let started = Instant::now();
    let loaded = file::load(&path).expect("loaded").expect("a state");
    let restored = Store::new(0, TABLE);
    restored.restore(&loaded.store);
    let load = started.elapsed();
    let _ = std::fs::remove_file(&path);
    println!(
        "| --state with {} IPs: save (with fsync), load and restore | {:.0} ms, {:.0} ms | {size} bytes, {:.0} per IP | |",
        state.store.ips.len(),
        saved.as_secs_f64() * 1e3,
        load.as_secs_f64() * 1e3,
        size as f64 / state.store.ips.len().max(1) as f64
    );
}
