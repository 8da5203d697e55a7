//! The iftop text-mode parser (`iftop -t -n -N -B`). iftop prints a block of
//! host pairs every two seconds (when packets arrive); each pair is two
//! lines, the first host sending `=>` and the second `<=`, each with three
//! rates and a cumulative byte count rounded to three significant digits:
//!
//! ```text
//!    # Host name (port/service if enabled)            last 2s   last 10s   last 40s cumulative
//! --------------------------------------------------------------------------------------------
//!    1 192.0.2.1                                =>     1.92MB      654KB      654KB     3.83MB
//!      198.51.100.7                             <=     1.90KB       669B       669B     3.92KB
//! --------------------------------------------------------------------------------------------
//! Total send rate: ...
//! ============================================================================================
//! ```
//!
//! Totals are built from the cumulative column by delta tracking: each
//! complete block's cumulative figure minus the one in the previous block,
//! so iftop's rounding never accumulates (the deltas telescope to the last
//! rounded figure). A pair seen for the first time, or again after missing
//! from the previous block (iftop forgot it), or with a smaller figure (iftop
//! restarted), counts its whole figure. A block with an unreadable pair line
//! is dropped whole, so no pair is mistaken for new in the next one.

use std::collections::HashMap;
use std::net::IpAddr;

use super::direction::{Direction, Remote};
use crate::backend::{LineParser, Step};
use crate::filter::AddressFilter;
use crate::ip_text::parse_ip;
use crate::store::Record;

/// Cumulative bytes of one pair: first host → second, second → first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairBytes {
    pub sent: u64,
    pub received: u64,
}

/// Per-pair cumulative figures of the last complete block.
#[derive(Default)]
pub struct Tracker {
    /// Pair → (number of the block it was last in, its figures there). One
    /// map probed once per pair; pairs missing from a block are dropped
    /// after it. Keys are the two addresses as u128 (IPv4 as mapped IPv6:
    /// distinct, as a canonical IPv6 address is never a mapped one), which
    /// hashes in two writes instead of IpAddr's field-by-field ones.
    last: HashMap<(u128, u128), (u64, PairBytes)>,
    blocks: u64,
}

impl Tracker {
    /// The bytes each pair added since the previous block; forgets pairs
    /// that are not in this block.
    pub fn deltas(&mut self, block: &[((IpAddr, IpAddr), PairBytes)]) -> Vec<((IpAddr, IpAddr), PairBytes)> {
        self.blocks += 1;
        let (this, previous) = (self.blocks, self.blocks - 1);
        let deltas = block
            .iter()
            .map(|&(pair, now)| {
                let before = self.last.insert((wide(pair.0), wide(pair.1)), (this, now));
                let delta = match before {
                    Some((block, before))
                        if block == previous && now.sent >= before.sent && now.received >= before.received =>
                    {
                        PairBytes { sent: now.sent - before.sent, received: now.received - before.received }
                    }
                    _ => now,
                };
                (pair, delta)
            })
            .collect();
        if self.last.len() > block.len() {
            self.last.retain(|_, (block, _)| *block == this);
        }
        deltas
    }
}

fn wide(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Outside a block, or in its totals section.
    Idle,
    /// Between the header and the first separator.
    Header,
    /// Reading pairs.
    Pairs,
    /// Read the first line of a pair.
    HalfPair,
    /// Past the pair list: waiting for the closing `=====`.
    Totals,
}

pub struct IftopParser {
    filter: AddressFilter,
    direction: Direction,
    tracker: Tracker,
    state: State,
    block: Vec<((IpAddr, IpAddr), PairBytes)>,
    pending: Option<(IpAddr, u64)>,
    broken: bool,
    blocks_seen: u64,
}

impl IftopParser {
    pub fn new(filter: AddressFilter, direction: Direction) -> IftopParser {
        IftopParser {
            filter,
            direction,
            tracker: Tracker::default(),
            state: State::Idle,
            block: Vec::new(),
            pending: None,
            broken: false,
            blocks_seen: 0,
        }
    }

    fn start_block(&mut self) {
        self.state = State::Header;
        self.block.clear();
        self.pending = None;
        self.broken = false;
    }

    fn finish_block(&mut self, report: &mut Vec<Record>) -> Step {
        self.state = State::Idle;
        if self.broken {
            return Step::Malformed;
        }
        self.blocks_seen += 1;
        if self.blocks_seen % 15 == 0 {
            self.direction.refresh(); // every 30 s
        }
        let block = std::mem::take(&mut self.block);
        for ((first, second), delta) in self.tracker.deltas(&block) {
            let (remote, tx, rx) = match self.direction.remote_of(first, second) {
                Remote::Second => (second, delta.sent, delta.received),
                Remote::First => (first, delta.received, delta.sent),
            };
            if !self.filter.counts(remote) {
                continue;
            }
            if tx > 0 {
                report.push(Record::Tx(remote, tx));
            }
            if rx > 0 {
                report.push(Record::Rx(remote, rx));
            }
        }
        self.block = block;
        Step::ReportEnd
    }
}

impl LineParser for IftopParser {
    fn feed(&mut self, line: &[u8], report: &mut Vec<Record>) -> Step {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        if line.starts_with(b"Listening on ") {
            return Step::Attached;
        }
        if line.trim_ascii_start().starts_with(b"# Host name") {
            // A header while a block is open: the previous block was cut.
            let cut = self.state != State::Idle;
            self.start_block();
            return if cut { Step::Malformed } else { Step::Continue };
        }
        if line.starts_with(b"=====") {
            return match self.state {
                State::Totals => self.finish_block(report),
                State::Idle => Step::Continue,
                _ => {
                    self.state = State::Idle;
                    Step::Malformed
                }
            };
        }
        match self.state {
            State::Idle | State::Totals => Step::Continue,
            State::Header => {
                if line.starts_with(b"---") {
                    self.state = State::Pairs;
                }
                Step::Continue
            }
            State::Pairs | State::HalfPair if line.starts_with(b"---") => {
                if self.state == State::HalfPair {
                    self.broken = true; // a pair without its second line
                }
                self.state = State::Totals;
                Step::Continue
            }
            State::Pairs => match parse_pair_line(line, true) {
                Some((host, sent)) => {
                    self.pending = Some((host, sent));
                    self.state = State::HalfPair;
                    Step::Continue
                }
                None => {
                    self.broken = true;
                    Step::Malformed
                }
            },
            State::HalfPair => {
                self.state = State::Pairs;
                match (parse_pair_line(line, false), self.pending.take()) {
                    (Some((second, received)), Some((first, sent))) => {
                        self.block.push(((first, second), PairBytes { sent, received }));
                        Step::Continue
                    }
                    _ => {
                        self.broken = true;
                        Step::Malformed
                    }
                }
            }
        }
    }
}

/// `   1 HOST  =>  R2 R10 R40 CUM` (first) or `     HOST  <=  R2 R10 R40 CUM`.
fn parse_pair_line(line: &[u8], first: bool) -> Option<(IpAddr, u64)> {
    // Only spaces separate: iftop prints no tabs, and a word with one is malformed.
    let mut words = line.split(|&b| b == b' ').filter(|word| !word.is_empty());
    if first {
        let rank = words.next()?;
        if !rank.iter().all(u8::is_ascii_digit) {
            return None;
        }
    }
    let host = parse_ip(words.next()?)?;
    if words.next()? != if first { b"=>" } else { b"<=" } {
        return None;
    }
    let cumulative = words.nth(3)?;
    if words.next().is_some() {
        return None;
    }
    Some((host, parse_size(cumulative)?))
}

/// iftop's `-B` sizes: `936B`, `1.45KB`, `19.3MB`, `2.00GB`, `1.10TB`, in
/// powers of 1024, rounded to the nearest byte (half up; with iftop's two
/// decimals at most no size falls on a half). Integer arithmetic: exact.
pub fn parse_size(text: &[u8]) -> Option<u64> {
    let (number, shift) = match text {
        [n @ .., b'T', b'B'] => (n, 40),
        [n @ .., b'G', b'B'] => (n, 30),
        [n @ .., b'M', b'B'] => (n, 20),
        [n @ .., b'K', b'B'] => (n, 10),
        [n @ .., b'B'] => (n, 0),
        _ => return None,
    };
    let (whole, fraction) = match memchr::memchr(b'.', number) {
        Some(dot) => (&number[..dot], &number[dot + 1..]),
        None => (number, &b""[..]),
    };
    if whole.len() + fraction.len() == 0 || whole.len() + fraction.len() > 18 {
        return None;
    }
    let mut mantissa: u128 = 0;
    for &d in whole.iter().chain(fraction) {
        if !d.is_ascii_digit() {
            return None;
        }
        mantissa = mantissa * 10 + u128::from(d - b'0');
    }
    let divisor = 10u128.pow(fraction.len() as u32);
    u64::try_from(((mantissa << shift) + divisor / 2) / divisor).ok()
}

/// The frame of a block as iftop 1.0pre4 printed it in the lab, shared by
/// the tests and the parser benchmark.
#[doc(hidden)]
pub mod recorded {
    pub const HEADER: &str = "   # Host name (port/service if enabled)            last 2s   last 10s   last 40s cumulative\n\
        --------------------------------------------------------------------------------------------\n";
    pub const FOOTER: &str = "--------------------------------------------------------------------------------------------\n\
        Total send rate:                                     1.92MB      654KB      654KB\n\
        Total receive rate:                                  1.56MB      534KB      534KB\n\
        Total send and receive rate:                         3.48MB     1.16MB     1.16MB\n\
        --------------------------------------------------------------------------------------------\n\
        Peak rate (sent/received/total):                     1.92MB     1.56MB     3.48MB\n\
        Cumulative (sent/received/total):                    3.83MB     3.13MB     6.96MB\n\
        ============================================================================================\n";
}

#[cfg(test)]
mod tests {
    use super::recorded::{FOOTER, HEADER};
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn parser() -> IftopParser {
        IftopParser::new(AddressFilter::default(), Direction::with_locals(&["192.0.2.1", "2001:db8::1"]))
    }

    fn feed_all(parser: &mut IftopParser, text: &str) -> (Vec<Record>, Vec<Step>) {
        let mut report = Vec::new();
        let steps = text.lines().map(|l| parser.feed(l.as_bytes(), &mut report)).collect();
        (report, steps)
    }

    fn block(pairs: &str) -> String {
        format!("{HEADER}{pairs}{FOOTER}")
    }

    /// Recorded from iftop 1.0pre4 in the lab (IPv4 upload, IPv6 download).
    const PAIRS: &str = "   1 192.0.2.1                                =>     1.92MB      654KB      654KB     3.83MB\n\
        \x20    198.51.100.7                             <=     1.90KB       669B       669B     3.92KB\n\
        \x20  2 2001:db8::1                              =>     1.25KB       428B       428B     2.50KB\n\
        \x20    2001:db8::2                              <=     1.56MB      534KB      534KB     3.13MB\n\
        \x20  3 ::                                       =>         0B        16B        16B        96B\n\
        \x20    ff02::16                                 <=         0B         0B         0B         0B\n";

    #[test]
    fn sizes_in_every_unit() {
        assert_eq!(parse_size(b"0B"), Some(0));
        assert_eq!(parse_size(b"936B"), Some(936));
        assert_eq!(parse_size(b"1.45KB"), Some(1485));
        assert_eq!(parse_size(b"654KB"), Some(669_696));
        assert_eq!(parse_size(b"3.83MB"), Some(4_016_046));
        assert_eq!(parse_size(b"2.00GB"), Some(2_147_483_648));
        assert_eq!(parse_size(b"1.10TB"), Some(1_209_462_790_554));
        for bad in ["", "B", "KB", ".B", "1.2", "1.2XB", "-1B", "1e3B", "x1B", "1.2.3KB", "99999999999999999999B"] {
            assert_eq!(parse_size(bad.as_bytes()), None, "{bad}");
        }
    }

    /// Every figure iftop can print (three significant digits, each unit)
    /// gives the byte count the decimal value times the unit rounds to.
    #[test]
    fn integer_sizes_agree_with_the_decimal_value_rounded() {
        for (unit, scale) in [("B", 1u64), ("KB", 1 << 10), ("MB", 1 << 20), ("GB", 1 << 30), ("TB", 1 << 40)] {
            for hundredths in 0..100_000u64 {
                let (text, exact) = match hundredths {
                    h if h < 1_000 => (format!("{}.{:02}{unit}", h / 100, h % 100), h as f64 / 100.0),
                    h if h < 10_000 => (format!("{}.{}{unit}", h / 100, h / 10 % 10), (h / 10) as f64 / 10.0),
                    h => (format!("{}{unit}", h / 100), (h / 100) as f64),
                };
                let expected = (exact * scale as f64).round() as u64;
                assert_eq!(parse_size(text.as_bytes()), Some(expected), "{text}");
            }
        }
    }

    #[test]
    fn a_recorded_block_gives_tx_and_rx_per_remote() {
        let mut p = parser();
        let (report, steps) = feed_all(&mut p, &format!("Listening on vh\n{}", block(PAIRS)));
        assert_eq!(steps[0], Step::Attached);
        assert_eq!(*steps.last().unwrap(), Step::ReportEnd);
        assert!(!steps.contains(&Step::Malformed));
        assert_eq!(
            report,
            vec![
                Record::Tx(ip("198.51.100.7"), 4_016_046),
                Record::Rx(ip("198.51.100.7"), 4014),
                Record::Tx(ip("2001:db8::2"), 2560),
                Record::Rx(ip("2001:db8::2"), 3_282_043),
            ],
            "the :: / ff02::16 pair is not counted"
        );
    }

    #[test]
    fn later_blocks_add_only_the_growth() {
        let mut p = parser();
        feed_all(&mut p, &block(PAIRS));
        let grown = PAIRS.replace("3.83MB\n", "5.00MB\n");
        let (report, _) = feed_all(&mut p, &block(&grown));
        assert_eq!(report, vec![Record::Tx(ip("198.51.100.7"), 5_242_880 - 4_016_046)]);
    }

    #[test]
    fn the_local_host_may_be_either_side_of_a_pair() {
        let mut p = parser();
        let swapped = "   1 198.51.100.7                             =>       1.00KB       1.00KB       1.00KB     2.00KB\n\
            \x20    192.0.2.1                                <=         0B         0B         0B       100B\n";
        let (report, _) = feed_all(&mut p, &block(swapped));
        assert_eq!(report, vec![Record::Tx(ip("198.51.100.7"), 100), Record::Rx(ip("198.51.100.7"), 2048)]);
    }

    #[test]
    fn an_empty_block_is_a_report_and_forgets_every_pair() {
        let mut p = parser();
        feed_all(&mut p, &block(PAIRS));
        let (report, steps) = feed_all(&mut p, &block(""));
        assert!(report.is_empty());
        assert_eq!(*steps.last().unwrap(), Step::ReportEnd);
        let (report, _) = feed_all(&mut p, &block(PAIRS));
        assert_eq!(report.len(), 4, "after an empty block the pairs count in full again");
    }

    #[test]
    fn a_pair_missing_its_second_line_drops_the_block() {
        let mut p = parser();
        feed_all(&mut p, &block(PAIRS));
        let broken = "   1 192.0.2.1                                =>     1.92MB      654KB      654KB     9.00MB\n";
        let (report, steps) = feed_all(&mut p, &block(broken));
        assert!(report.is_empty(), "{report:?}");
        assert_eq!(*steps.last().unwrap(), Step::Malformed);
        // The next good block is compared with the last good one.
        let grown = PAIRS.replace("3.83MB\n", "5.00MB\n");
        let (report, _) = feed_all(&mut p, &block(&grown));
        assert_eq!(report, vec![Record::Tx(ip("198.51.100.7"), 5_242_880 - 4_016_046)]);
    }

    #[test]
    fn a_block_cut_mid_way_is_dropped_and_the_next_one_read() {
        let mut p = parser();
        let cut: String = block(PAIRS).lines().take(4).map(|l| format!("{l}\n")).collect();
        let (report, steps) = feed_all(&mut p, &format!("{cut}{}", block(PAIRS)));
        assert!(steps.contains(&Step::Malformed));
        assert_eq!(report.len(), 4, "only the complete block counts");
        let (report, steps) = feed_all(&mut p, &format!("{cut}============\n"));
        assert!(report.is_empty());
        assert_eq!(*steps.last().unwrap(), Step::Malformed);
    }

    #[test]
    fn garbage_pair_lines_are_malformed() {
        for bad in [
            "   1 192.0.2.1 => 1KB 1KB 1KB",
            "   1 192.0.2.1 <= 1KB 1KB 1KB 1KB",
            "   x 192.0.2.1 => 1KB 1KB 1KB 1KB",
            "   1 not-an-ip => 1KB 1KB 1KB 1KB",
            "   1 192.0.2.1 => 1KB 1KB 1KB 1KB extra",
            "   1 192.0.2.1 => 1KB 1KB 1KB 1QB",
        ] {
            let mut p = parser();
            let (_, steps) = feed_all(&mut p, &format!("{HEADER}{bad}\n"));
            assert_eq!(*steps.last().unwrap(), Step::Malformed, "{bad}");
        }
    }

    #[test]
    fn a_pair_that_vanishes_and_returns_smaller_counts_in_full() {
        let a = (ip("192.0.2.1"), ip("198.51.100.7"));
        let mut t = Tracker::default();
        let d = t.deltas(&[(a, PairBytes { sent: 5000, received: 100 })]);
        assert_eq!(d[0].1, PairBytes { sent: 5000, received: 100 });
        let d = t.deltas(&[(a, PairBytes { sent: 7000, received: 100 })]);
        assert_eq!(d[0].1, PairBytes { sent: 2000, received: 0 });
        assert!(t.deltas(&[]).is_empty(), "gone from a block");
        let d = t.deltas(&[(a, PairBytes { sent: 300, received: 20 })]);
        assert_eq!(d[0].1, PairBytes { sent: 300, received: 20 }, "back, smaller: counted whole");
        let d = t.deltas(&[(a, PairBytes { sent: 200, received: 30 })]);
        assert_eq!(d[0].1, PairBytes { sent: 200, received: 30 }, "smaller without vanishing: iftop restarted");
    }
}
