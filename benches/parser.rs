//! Parser throughput: lines per second through `parse_line` (and the reader
//! thread's filter) on a 1,000,000-line sample in the exact format bpftrace
//! prints for bpftrace/traffic.bt: per report, `@tx1[...]`, `@rx1[...]` and
//! `@proc[...]` lines for 60 % IPv4 and 40 % IPv6 addresses, blank lines
//! between maps and an `@end`. Median of 7 runs. Run: make bench

use std::hint::black_box;
use std::time::Instant;

use ip_traffic_monitor_cli::backend::parse::{Line, parse_line};
use ip_traffic_monitor_cli::filter::AddressFilter;

const LINES: usize = 1_000_000;
const IPS_PER_REPORT: usize = 10_000;

fn sample() -> Vec<u8> {
    let mut out = String::with_capacity(LINES * 32);
    let mut lines = 0;
    let ip = |i: usize| {
        if i % 5 < 3 {
            format!("198.{}.{}.{}", 18 + i / 65536 % 2, i / 256 % 256, i % 256)
        } else {
            format!("2001:db8:{:x}::{:x}", i / 65536, i % 65536)
        }
    };
    while lines < LINES {
        for map in ["tx1", "rx1"] {
            for i in 0..IPS_PER_REPORT {
                out.push_str(&format!("@{map}[{}]: {}\n", ip(i), 1_000 + i * 37));
            }
            out.push('\n');
        }
        for i in 0..IPS_PER_REPORT / 4 {
            out.push_str(&format!("@proc[{}]: ({}, nginx)\n", ip(i), 1000 + i % 50));
        }
        out.push_str("\n@end\n");
        lines += 2 * IPS_PER_REPORT + IPS_PER_REPORT / 4 + 4;
    }
    out.into_bytes()
}

fn main() {
    let sample = sample();
    let line_count = memchr::memchr_iter(b'\n', &sample).count();
    let filter = AddressFilter::default();
    let mut rates = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        let mut bytes = 0u64;
        for line in sample.split(|&b| b == b'\n') {
            match parse_line(black_box(line)) {
                Line::Tx(ip, n) | Line::Rx(ip, n) if filter.counts(ip) => bytes += n,
                other => {
                    black_box(other);
                }
            }
        }
        black_box(bytes);
        rates.push(line_count as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "parser: {line_count} lines ({} MB), median {:.2} M lines/s (min {:.2}, max {:.2})",
        sample.len() / 1_000_000,
        rates[3] / 1e6,
        rates[0] / 1e6,
        rates[6] / 1e6
    );
}
