//! The console's reports as JSON lines (`--json`), for scripts: one object
//! per line, an `interval` object after every report and a `summary` one at
//! the end (`so_far` on SIGUSR1), with exact byte counts and the same rows
//! as the tables. Field by field in docs/JSON.md. Every text from outside
//! (process names, place and ISP names) goes through [`string`].

use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

use super::{Summary, View};
use crate::location::Locator;
use crate::store::{Interval, Row};

/// `{"type":"interval",...}`: the interval's totals and its busiest IPs
/// (`view.top` of them) with their interval and running totals.
pub fn interval(out: &mut impl Write, interval: &Interval, view: &View, elapsed: Duration) -> std::io::Result<()> {
    let mut json = format!(
        "{{\"type\":\"interval\",\"elapsed_seconds\":{:.3},\"active_ips\":{},\"tracked_ips\":{},\"folded_ips\":{},\"tx_bytes\":{},\"rx_bytes\":{},\"top\":[",
        elapsed.as_secs_f64(),
        interval.active,
        interval.tracked,
        interval.folded_ips,
        interval.tx,
        interval.rx
    );
    for (i, row) in interval.rows.iter().take(view.top).enumerate() {
        let t = &row.traffic;
        json.push_str(if i == 0 { "{" } else { ",{" });
        let _ = write!(json, "\"remote_ip\":\"{}\",\"tx_bytes\":{},\"rx_bytes\":{},\"tx_total_bytes\":{},\"rx_total_bytes\":{}", row.ip, t.interval_tx, t.interval_rx, t.tx, t.rx);
        about(&mut json, row, view.locator);
        json.push('}');
    }
    json.push_str("]}\n");
    out.write_all(json.as_bytes())
}

/// `{"type":"summary",...}` (or `so_far`): the totals of every counted
/// remote IP and the busiest (`view.top`) with their totals.
pub fn summary(out: &mut impl Write, which: Summary, rows: &[Row], view: &View, elapsed: Duration) -> std::io::Result<()> {
    let (tx, rx) = rows.iter().fold((0, 0), |(tx, rx), r| (tx + r.traffic.tx, rx + r.traffic.rx));
    let kind = match which {
        Summary::Final => "summary",
        Summary::SoFar => "so_far",
    };
    let mut json = format!(
        "{{\"type\":\"{kind}\",\"elapsed_seconds\":{:.3},\"remote_ips\":{},\"tx_bytes\":{tx},\"rx_bytes\":{rx},\"top\":[",
        elapsed.as_secs_f64(),
        rows.len()
    );
    total_rows(&mut json, rows, view.locator, view.top);
    json.push_str("]}\n");
    out.write_all(json.as_bytes())
}

/// The first `top` rows as comma-separated objects with their totals:
/// `remote_ip`, `tx_bytes`, `rx_bytes` and [`about`]'s fields.
pub fn total_rows(json: &mut String, rows: &[Row], locator: Option<&Locator>, top: usize) {
    for (i, row) in rows.iter().take(top).enumerate() {
        json.push_str(if i == 0 { "{" } else { ",{" });
        let _ = write!(json, "\"remote_ip\":\"{}\",\"tx_bytes\":{},\"rx_bytes\":{}", row.ip, row.traffic.tx, row.traffic.rx);
        about(json, row, locator);
        json.push('}');
    }
}

/// A row's owner and location fields: `,"pid":…,"process":…,"country":…`
/// (`null` where unknown; the labels `Unknown` without databases).
pub fn about(json: &mut String, row: &Row, locator: Option<&Locator>) {
    let (pid, process) = row.traffic.owner.map_or(("null".to_string(), "null".to_string()), |o| (o.pid.to_string(), string(&o.comm.display())));
    let _ = write!(json, ",\"pid\":{pid},\"process\":{process}");
    let labels = locator.map(|l| l.lookup(row.ip)).unwrap_or_default();
    let _ = write!(
        json,
        ",\"country\":{},\"province\":{},\"city\":{},\"isp\":{}",
        string(labels.country()),
        string(labels.province()),
        string(labels.city()),
        string(labels.isp())
    );
}

/// A JSON string: quotes, backslashes and control characters escaped.
pub fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c < ' ' || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Comm, Owner, Traffic};

    fn row(ip: &str, tx: u64, name: &[u8]) -> Row {
        let owner = Some(Owner { pid: 7, comm: Comm::new(name) });
        Row { ip: ip.parse().unwrap(), traffic: Traffic { tx, rx: 1, interval_tx: tx / 2, interval_rx: 1, owner, ..Traffic::default() } }
    }

    #[test]
    fn each_report_is_one_line_of_json_with_exact_counts_and_names_as_text() {
        let hostile = b"\"}\n{\"type\":\"x";
        let rows = vec![row("198.51.100.7", 3_000_000, hostile), row("2001:db8::2", 10, b"curl")];
        let view = View { top: 1, color: false, locator: None, json: true };
        let interval = Interval { rows: rows.clone(), active: 2, tx: 1_500_005, rx: 2, tracked: 5, folded_ips: 3 };
        let mut out = Vec::new();
        super::super::interval_table(&mut out, &interval, &view, Duration::from_millis(2500)).unwrap();
        super::super::summary(&mut out, Summary::Final, &rows, &view, Duration::from_secs(30)).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect(l)).collect();
        assert_eq!(lines.len(), 2, "one line each: {text}");
        let (i, s) = (&lines[0], &lines[1]);
        assert_eq!((i["type"].as_str(), i["elapsed_seconds"].as_f64(), i["active_ips"].as_u64()), (Some("interval"), Some(2.5), Some(2)));
        assert_eq!((i["tracked_ips"].as_u64(), i["folded_ips"].as_u64(), i["tx_bytes"].as_u64()), (Some(5), Some(3), Some(1_500_005)));
        let top = i["top"].as_array().unwrap();
        assert_eq!(top.len(), 1, "--top rows");
        assert_eq!(top[0]["remote_ip"], "198.51.100.7");
        assert_eq!((top[0]["tx_bytes"].as_u64(), top[0]["tx_total_bytes"].as_u64()), (Some(1_500_000), Some(3_000_000)));
        assert_eq!(top[0]["process"].as_str(), Some(Comm::new(hostile).display().as_str()), "the name is a string, whatever it holds");
        assert_eq!((top[0]["pid"].as_u64(), top[0]["country"].as_str()), (Some(7), Some("Unknown")));
        assert_eq!((s["type"].as_str(), s["remote_ips"].as_u64(), s["tx_bytes"].as_u64()), (Some("summary"), Some(2), Some(3_000_010)));
        assert_eq!(s["top"][0]["tx_bytes"].as_u64(), Some(3_000_000));
    }

    #[test]
    fn json_strings_escape_what_json_requires() {
        assert_eq!(string("a\"b\\c\n\u{1}中"), "\"a\\\"b\\\\c\\u000a\\u0001中\"");
    }
}
