//! `--report`: what a state file holds, for people (a table like the
//! summary's) or for scripts (`--json`, one document). Never counts, never
//! writes: the file is only read.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use super::State;
use crate::location::Locator;
use crate::report::{self, View, json};
use json::string;
use crate::store::Row;
use crate::store::Traffic;

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

pub fn print(out: &mut impl Write, path: &Path, state: &State, view: &View, now: u64) -> std::io::Result<()> {
    let heading = format!("--state {}, saved {} s ago", path.display(), now.saturating_sub(state.saved_at));
    report::saved_state(out, &heading, totals(state), &rows(state), view)
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
    for (i, row) in rows(state).iter().take(top).enumerate() {
        json.push_str(if i == 0 { "{" } else { ",{" });
        let _ = write!(json, "\"remote_ip\":\"{}\",\"tx_bytes\":{},\"rx_bytes\":{}", row.ip, row.traffic.tx, row.traffic.rx);
        json::about(&mut json, row, Some(locator));
        json.push('}');
    }
    json.push_str("]}\n");
    out.write_all(json.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Saved, SavedIp};

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

}
