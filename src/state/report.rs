//! `--report`: what a state file holds, for people (a table like the
//! summary's) or for scripts (`--json`, one document). Never counts, never
//! writes: the file is only read.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use super::State;
use crate::location::Locator;
use crate::period::{Offset, local_date};
use crate::report::{self, View, json};
use crate::store::{PeriodIp, Row, Traffic};
use json::string;

/// Every counted byte the state holds: the series' values and the
/// unexported sums (which hold the rest: IPs below the threshold, the bytes
/// an IP had before its series, evicted IPs, bytes on no IP).
pub fn totals(state: &State) -> (u64, u64) {
    let s = &state.store;
    s.ips.iter().filter_map(|ip| ip.base.map(|(bt, br)| (ip.tx - bt.min(ip.tx), ip.rx - br.min(ip.rx)))).fold(s.unexported, |(t, r), (a, b)| (t + a, r + b))
}

/// The tracked IPs as console rows, busiest first (by address on a tie).
fn rows(state: &State) -> Vec<Row> {
    let mut rows: Vec<Row> = state
        .store
        .ips
        .iter()
        .map(|ip| Row {
            ip: ip.ip,
            traffic: Traffic { tx: ip.tx, rx: ip.rx, owner: ip.owner, export_base: ip.base, ..Traffic::default() },
        })
        .collect();
    crate::store::sort_busiest_first(&mut rows);
    rows
}

pub fn print(out: &mut impl Write, path: &Path, state: &State, view: &View, now: u64, zone: &impl Offset) -> std::io::Result<()> {
    let heading = format!("--state {}, saved {} s ago", path.display(), now.saturating_sub(state.saved_at));
    report::saved_state(out, &heading, totals(state), &rows(state), view)?;
    let s = &state.store;
    let p = s.period;
    if p.end > p.start {
        let heading = format!("This billing period, {} to {}", local_date(p.start, zone), local_date(p.end, zone));
        report::period(out, &heading, (p.tx, p.rx), &period_rows(state, &this_period(state)), view)?;
    }
    for past in s.previous.iter().rev() {
        let p = past.period;
        let heading = format!("Billing period {} to {}", local_date(p.start, zone), local_date(p.end, zone));
        report::period(out, &heading, (p.tx, p.rx), &period_rows(state, &past.top), view)?;
    }
    Ok(())
}

/// The tracked IPs' bytes in the period in progress, busiest first.
fn this_period(state: &State) -> Vec<PeriodIp> {
    crate::store::busiest(state.store.ips.iter().map(|ip| PeriodIp { ip: ip.ip, tx: ip.period.0, rx: ip.period.1 }).collect())
}

/// A period's busiest IPs as rows, with their last owner if still tracked
/// (a state lists its IPs by address).
fn period_rows(state: &State, ips: &[PeriodIp]) -> Vec<Row> {
    let saved = &state.store.ips;
    ips.iter()
        .map(|p| {
            let owner = saved.binary_search_by_key(&p.ip, |ip| ip.ip).ok().and_then(|i| saved[i].owner);
            Row { ip: p.ip, traffic: Traffic { tx: p.tx, rx: p.rx, owner, ..Traffic::default() } }
        })
        .collect()
}

/// One JSON document: the totals and the `top` busiest IPs.
pub fn print_json(out: &mut impl Write, path: &Path, state: &State, locator: &Locator, top: usize) -> std::io::Result<()> {
    let (tx, rx) = totals(state);
    let s = &state.store;
    let mut json = String::new();
    let _ = write!(
        json,
        "{{\"state\":{},\"saved_at\":{},\"tx_bytes\":{tx},\"rx_bytes\":{rx},\"unexported_tx_bytes\":{},\"unexported_rx_bytes\":{},\"tracked_ips\":{},\"top\":[",
        string(&path.display().to_string()),
        state.saved_at,
        s.unexported.0,
        s.unexported.1,
        s.ips.len()
    );
    json::total_rows(&mut json, &rows(state), Some(locator), top);
    let p = s.period;
    let _ = write!(json, "],\"period\":{{\"start\":{},\"end\":{},\"tx_bytes\":{},\"rx_bytes\":{},\"top\":[", p.start, p.end, p.tx, p.rx);
    json::total_rows(&mut json, &period_rows(state, &this_period(state)), Some(locator), top);
    json.push_str("]},\"previous_periods\":[");
    for (i, past) in s.previous.iter().rev().enumerate() {
        let p = past.period;
        let comma = if i == 0 { "" } else { "," };
        let _ = write!(json, "{comma}{{\"start\":{},\"end\":{},\"tx_bytes\":{},\"rx_bytes\":{},\"top\":[", p.start, p.end, p.tx, p.rx);
        json::total_rows(&mut json, &period_rows(state, &past.top), Some(locator), top);
        json.push_str("]}");
    }
    json.push_str("]}\n");
    out.write_all(json.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{PastPeriod, Period, Saved, SavedIp};

    #[test]
    fn the_totals_are_every_counted_byte_once() {
        let ip = |s: &str| s.parse().unwrap();
        let state = State {
            store: Saved {
                ips: vec![
                    // 1,000 bytes before its series began, in the unexported sums.
                    SavedIp { ip: ip("198.51.100.7"), tx: 5_000, rx: 10, period: (0, 0), base: Some((1_000, 10)), owner: None },
                    SavedIp { ip: ip("2001:db8::2"), tx: 30, rx: 40, period: (0, 0), base: None, owner: None },
                ],
                unexported: (1_030, 50),
                ..Saved::default()
            },
            ..State::default()
        };
        assert_eq!(totals(&state), (5_030, 50));
        assert_eq!(rows(&state)[0].ip, ip("198.51.100.7"), "busiest first");
    }


    /// The report shows this period's and each past period's totals and
    /// busiest IPs, dated in the local zone, in text and in JSON.
    #[test]
    fn the_report_gives_every_billing_period_with_its_busiest_ips() {
        let ip = |s: &str| s.parse().unwrap();
        let (nov1, dec1, jan1) = (1_761_955_200, 1_764_547_200, 1_767_225_600);
        let state = State {
            store: Saved {
                ips: vec![SavedIp { ip: ip("198.51.100.7"), tx: 9_000, rx: 90, period: (4_000, 40), base: None, owner: None }],
                unexported: (9_000, 90),
                period: Period { start: dec1, end: jan1, tx: 4_500, rx: 45 },
                previous: vec![PastPeriod {
                    period: Period { start: nov1, end: dec1, tx: 5_500, rx: 55 },
                    top: vec![PeriodIp { ip: ip("198.51.100.7"), tx: 5_000, rx: 50 }],
                }],
                ..Saved::default()
            },
            ..State::default()
        };
        let view = View { top: 10, color: false, locator: None, json: false };
        let mut out = Vec::new();
        print(&mut out, Path::new("s"), &state, &view, 0, &|_| 0).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("== This billing period, 2025-12-01 to 2026-01-01: TX 4.4 KiB (4500 bytes), RX 45 B (45 bytes) =="), "{text}");
        assert!(text.contains("== Billing period 2025-11-01 to 2025-12-01: TX 5.4 KiB (5500 bytes)"), "{text}");
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("198.51.100.7")).collect();
        assert_eq!(rows.len(), 3, "in all, this period, the past one: {text}");
        assert!(rows[1].contains(" 4000 ") && rows[2].contains(" 5000 "), "{rows:?}");
        let mut out = Vec::new();
        print_json(&mut out, Path::new("s"), &state, &Locator::open(None, None, None, crate::location::Lang::En).unwrap(), 10).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(doc["period"]["top"][0]["tx_bytes"].as_u64(), Some(4_000));
        assert_eq!(doc["previous_periods"][0]["start"].as_i64(), Some(nov1));
        assert_eq!(doc["previous_periods"][0]["top"][0]["rx_bytes"].as_u64(), Some(50));
    }
}
