//! Parser throughput, lines per second, on samples in the exact formats the
//! backends print: bpftrace running bpftrace/traffic.bt (per report,
//! `@tx1[...]`, `@rx1[...]`, `@cum1[...]`, `@comm[...]` and `@proc[...]` lines for 60 % IPv4 and 40 % IPv6
//! addresses, blank lines, `@end`) and iftop 1.0pre4's text mode (blocks of
//! 2,000 host pairs, as recorded in src/backend/iftop_parse.rs's tests).
//! Each is run against a naive parser of the same lines, written the way a
//! quick script would (`split_whitespace`, collected into a Vec, `String`s),
//! in 7 paired rounds (ours, naive, ours, naive, ...): medians and the
//! median of the per-round ratios. Run: make bench

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Instant;

use ip_traffic_monitor_cli::backend::iftop::direction::Direction;
use ip_traffic_monitor_cli::backend::iftop::parse::{IftopParser, recorded};
use ip_traffic_monitor_cli::backend::bpftrace::parse::{Line, parse_line};
use ip_traffic_monitor_cli::backend::LineParser;
use ip_traffic_monitor_cli::filter::AddressFilter;

const LINES: usize = 1_000_000;
const IPS_PER_REPORT: usize = 10_000;
const ROUNDS: usize = 7;

fn ip_text(i: usize) -> String {
    if i % 5 < 3 {
        format!("198.{}.{}.{}", 18 + i / 65536 % 2, i / 256 % 256, i % 256)
    } else {
        format!("2001:db8:{:x}::{:x}", i / 65536, i % 65536)
    }
}

fn bpftrace_sample() -> Vec<u8> {
    let mut out = String::with_capacity(LINES * 32);
    let mut lines = 0;
    while lines < LINES {
        let mut totals = Vec::new();
        for map in ["tx1", "rx1"] {
            let mut total = 0;
            for i in 0..IPS_PER_REPORT {
                out.push_str(&format!("@{map}[{}]: {}\n", ip_text(i), 1_000 + i * 37));
                total += 1_000 + i * 37;
            }
            out.push('\n');
            totals.push(total);
        }
        out.push_str(&format!("@cum1[0]: {}\n@cum1[1]: {}\n\n", totals[0], totals[1]));
        for pid in 1000..1050 {
            out.push_str(&format!("@comm[{pid}]: \\x6e\\x67\\x69\\x6e\\x78\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\n"));
        }
        for i in 0..IPS_PER_REPORT / 4 {
            out.push_str(&format!("@proc[{}]: {}\n", ip_text(i), 1000 + i % 50));
        }
        out.push_str("\n@end\n");
        lines += 2 * IPS_PER_REPORT + IPS_PER_REPORT / 4 + 50 + 6;
    }
    out.into_bytes()
}

fn iftop_sample() -> Vec<u8> {
    let mut out = String::with_capacity(LINES * 100);
    let mut lines = 0;
    let mut round = 1;
    while lines < LINES {
        out.push_str(recorded::HEADER);
        for i in 0..2_000 {
            let (local, remote) = if i % 5 < 3 { ("192.0.2.1", ip_text(i)) } else { ("2001:db8::1", ip_text(i)) };
            let cumulative = format!("{}.{:02}MB", round + i % 7, i % 100);
            out.push_str(&format!("{:>4} {local:<40} =>     1.92MB      654KB      654KB {cumulative:>10}\n", i + 1));
            out.push_str(&format!("     {remote:<40} <=     1.90KB       669B       669B {:>10}\n", format!("{}KB", 3 + i % 900)));
        }
        out.push_str(recorded::FOOTER);
        lines += 2 + 4_000 + 8;
        round += 1;
    }
    out.into_bytes()
}

/// The naive bpftrace parser: bytes per IP summed, as ours does.
fn naive_bpftrace(text: &str) -> u64 {
    let mut bytes = 0;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() != 2 || !words[0].starts_with('@') {
            continue;
        }
        let key = words[0].trim_start_matches('@').trim_end_matches(':').to_string();
        let Some((name, ip)) = key.split_once('[') else { continue };
        let Ok(ip) = ip.trim_end_matches(']').parse::<IpAddr>() else { continue };
        if (name.starts_with("tx") || name.starts_with("rx")) && !ip.is_loopback() {
            bytes += words[1].parse::<u64>().unwrap_or(0);
        }
    }
    bytes
}

/// The naive iftop parser: the remote's cumulative column of each pair line.
fn naive_iftop(text: &str) -> u64 {
    let mut bytes = 0;
    for line in text.lines() {
        let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let at = if words.len() == 7 { 1 } else if words.len() == 6 { 0 } else { continue };
        if words[at + 1] != "=>" && words[at + 1] != "<=" {
            continue;
        }
        let Ok(_ip) = words[at].parse::<IpAddr>() else { continue };
        let size = &words[at + 5];
        let (number, unit) = size.split_at(size.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(size.len()));
        let scale = match unit { "B" => 1.0, "KB" => 1024.0, "MB" => 1048576.0, "GB" => 1073741824.0, _ => continue };
        bytes += (number.parse::<f64>().unwrap_or(0.0) * scale).round() as u64;
    }
    bytes
}

fn ours_bpftrace(sample: &[u8]) -> u64 {
    let filter = AddressFilter::default();
    let mut bytes = 0u64;
    for line in lines(sample) {
        match parse_line(black_box(line)) {
            Line::Tx(ip, n, _) | Line::Rx(ip, n, _) if filter.counts(ip) => bytes += n,
            other => {
                black_box(other);
            }
        }
    }
    bytes
}

fn ours_iftop(sample: &[u8]) -> u64 {
    let mut parser = IftopParser::new(AddressFilter::default(), Direction::with_locals(&["192.0.2.1", "2001:db8::1"]));
    let mut report = Vec::new();
    let mut records = 0u64;
    for line in lines(sample) {
        parser.feed(black_box(line), &mut report);
        records += report.len() as u64;
        report.clear();
    }
    records
}

/// The lines as the monitor's reader hands them over (`read_until`, which
/// finds each newline with memchr), newline included.
fn lines(sample: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', sample).map(move |end| {
        let line = &sample[start..=end];
        start = end + 1;
        line
    })
}

/// Lines per second of `ours` and `naive`, in paired rounds.
fn paired(sample: &[u8], ours: impl Fn(&[u8]) -> u64, naive: impl Fn(&str) -> u64) -> (Vec<f64>, Vec<f64>) {
    let lines = memchr::memchr_iter(b'\n', sample).count() as f64;
    let text = std::str::from_utf8(sample).expect("ASCII sample");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let start = Instant::now();
        black_box(ours(sample));
        a.push(lines / start.elapsed().as_secs_f64());
        let start = Instant::now();
        black_box(naive(text));
        b.push(lines / start.elapsed().as_secs_f64());
    }
    (a, b)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn main() {
    for (name, sample, ours, naive) in [
        ("bpftrace", bpftrace_sample(), ours_bpftrace as fn(&[u8]) -> u64, naive_bpftrace as fn(&str) -> u64),
        ("iftop", iftop_sample(), ours_iftop, naive_iftop),
    ] {
        let (a, b) = paired(&sample, ours, naive);
        let ratios: Vec<f64> = a.iter().zip(&b).map(|(a, b)| a / b).collect();
        println!(
            "| parser, {name} output ({} MB) | {:.2} M lines/s (min {:.2}, max {:.2}) | naive split_whitespace {:.2} M lines/s | ratio {:.2} |",
            sample.len() / 1_000_000,
            median(&a) / 1e6,
            a.iter().cloned().fold(f64::INFINITY, f64::min) / 1e6,
            a.iter().cloned().fold(0.0, f64::max) / 1e6,
            median(&b) / 1e6,
            median(&ratios)
        );
    }
}
