//! The console: one table per report with the busiest remote IPs of that
//! interval, and the summary of totals at the end. Sizes in binary units
//! (KiB, MiB, ...); the summary also gives exact byte counts, since
//! precision is the point. Bold headers only on a terminal. With `--json`
//! the same reports are JSON lines ([`json`]).

pub mod json;

use std::io::Write;
use std::time::Duration;

use crate::location::{Locator, UNKNOWN};
use crate::store::{Interval, Row, Traffic};

/// How tables are drawn.
pub struct View<'a> {
    /// Rows per table.
    pub top: usize,
    /// Bold headers (a terminal).
    pub color: bool,
    /// Adds a LOCATION column when databases are configured.
    pub locator: Option<&'a Locator>,
    /// JSON lines instead of tables (`--json`).
    pub json: bool,
}

impl View<'_> {
    /// The LOCATION cell: the known labels, country to ISP, or nothing.
    fn location(&self, row: &Row) -> String {
        let Some(locator) = self.locator.filter(|l| !l.is_empty()) else { return String::new() };
        let labels = locator.lookup(row.ip);
        let known: Vec<&str> = [labels.country(), labels.province(), labels.city(), labels.isp()]
            .into_iter()
            .filter(|v| *v != UNKNOWN)
            .collect();
        format!("  {}", if known.is_empty() { UNKNOWN.to_string() } else { known.join(" ") })
    }

    fn location_header(&self) -> &'static str {
        if self.locator.is_some_and(|l| !l.is_empty()) { "  LOCATION" } else { "" }
    }
}

const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/// `1536` → `1.5 KiB`; whole bytes below 1 KiB.
pub fn human_bytes(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn owner_cells(row: &Row) -> (String, String) {
    match row.traffic.owner {
        Some(owner) => (owner.pid.to_string(), owner.comm.display()),
        None => ("-".into(), "-".into()),
    }
}

fn header(out: &mut impl Write, color: bool, text: &str) -> std::io::Result<()> {
    if color {
        writeln!(out, "\x1b[1m{text}\x1b[0m")
    } else {
        writeln!(out, "{text}")
    }
}

/// Which byte columns a table shows.
#[derive(Clone, Copy)]
enum Columns {
    /// The interval's bytes and the totals, in human units.
    Interval,
    /// The totals in human units and in exact bytes.
    Totals,
}

impl Columns {
    fn titles(self) -> [&'static str; 4] {
        match self {
            Columns::Interval => ["TX", "RX", "TX TOTAL", "RX TOTAL"],
            Columns::Totals => ["TX", "RX", "TX BYTES", "RX BYTES"],
        }
    }

    fn cells(self, t: &Traffic) -> [String; 4] {
        match self {
            Columns::Interval => {
                [human_bytes(t.interval_tx), human_bytes(t.interval_rx), human_bytes(t.tx), human_bytes(t.rx)]
            }
            Columns::Totals => [human_bytes(t.tx), human_bytes(t.rx), t.tx.to_string(), t.rx.to_string()],
        }
    }

    /// Exact byte counts need room for 15 digits.
    fn width(self) -> usize {
        match self {
            Columns::Interval => 10,
            Columns::Totals => 15,
        }
    }
}

/// The rows of either table, the first `view.top` of them; `of` rows in all.
fn table(out: &mut impl Write, rows: &[Row], of: usize, view: &View, columns: Columns) -> std::io::Result<()> {
    let [a, b, c, d] = columns.titles();
    let w = columns.width();
    let title = format!(
        "{:<39} {a:>10} {b:>10} {c:>w$} {d:>w$} {:>8}  {:<15}{}",
        "REMOTE IP", "PID", "PROCESS", view.location_header()
    );
    header(out, view.color, &title)?;
    for row in rows.iter().take(view.top) {
        let (pid, process) = owner_cells(row);
        let [a, b, c, d] = columns.cells(&row.traffic);
        writeln!(
            out,
            "{:<39} {a:>10} {b:>10} {c:>w$} {d:>w$} {pid:>8}  {process:<15}{}",
            row.ip.to_string(),
            view.location(row)
        )?;
    }
    let shown = rows.len().min(view.top);
    if of > shown {
        writeln!(out, "... and {} more (--top to show more)", of - shown)?;
    }
    Ok(())
}

/// The table printed after every report.
pub fn interval_table(out: &mut impl Write, interval: &Interval, view: &View, elapsed: Duration) -> std::io::Result<()> {
    if view.json {
        return json::interval(out, interval, view, elapsed);
    }
    let folded = match interval.folded_ips {
        0 => String::new(),
        n => format!(" ({n} folded by --max-ips)"),
    };
    writeln!(
        out,
        "\n[{:>6.1}s] {} active / {} tracked remote IPs{folded}, this interval TX {} RX {}",
        elapsed.as_secs_f64(),
        interval.active,
        interval.tracked,
        human_bytes(interval.tx),
        human_bytes(interval.rx)
    )?;
    if interval.active == 0 {
        return writeln!(out, "(no traffic to counted remote IPs in this interval)");
    }
    table(out, &interval.rows, interval.active, view, Columns::Interval)
}

/// Which totals table: the one at the end of the run, or one asked for
/// while it goes on (SIGUSR1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Summary {
    Final,
    SoFar,
}

/// Totals per remote IP with exact byte counts.
pub fn summary(out: &mut impl Write, which: Summary, rows: &[Row], view: &View, elapsed: Duration) -> std::io::Result<()> {
    if view.json {
        return json::summary(out, which, rows, view, elapsed);
    }
    let (tx, rx) = rows.iter().fold((0, 0), |(tx, rx), r| (tx + r.traffic.tx, rx + r.traffic.rx));
    let title = match which {
        Summary::Final => "Summary",
        Summary::SoFar => "Totals so far (SIGUSR1)",
    };
    writeln!(
        out,
        "\n== {title}: {:.1} s, {} remote IPs, TX {} ({tx} bytes), RX {} ({rx} bytes) ==",
        elapsed.as_secs_f64(),
        rows.len(),
        human_bytes(tx),
        human_bytes(rx)
    )?;
    if rows.is_empty() {
        return writeln!(out, "(no traffic to counted remote IPs)");
    }
    table(out, rows, rows.len(), view, Columns::Totals)
}

/// The `--report` of a saved state: what it holds in all, then its
/// busiest remote IPs with their exact totals.
pub fn saved_state(out: &mut impl Write, heading: &str, totals: (u64, u64), rows: &[Row], view: &View) -> std::io::Result<()> {
    let (tx, rx) = totals;
    writeln!(out, "== {heading}: {} remote IPs, TX {} ({tx} bytes), RX {} ({rx} bytes) in all ==", rows.len(), human_bytes(tx), human_bytes(rx))?;
    totals_table(out, rows, view)
}

/// One billing period of a saved state: its host totals (every counted
/// byte), then its busiest remote IPs with their bytes in that period.
pub fn period(out: &mut impl Write, heading: &str, totals: (u64, u64), rows: &[Row], view: &View) -> std::io::Result<()> {
    let (tx, rx) = totals;
    writeln!(out, "\n== {heading}: TX {} ({tx} bytes), RX {} ({rx} bytes) ==", human_bytes(tx), human_bytes(rx))?;
    totals_table(out, rows, view)
}

/// A saved state's rows with their exact totals, or a line saying there are none.
fn totals_table(out: &mut impl Write, rows: &[Row], view: &View) -> std::io::Result<()> {
    if rows.is_empty() {
        return writeln!(out, "(no remote IP)");
    }
    table(out, rows, rows.len(), view, Columns::Totals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Comm, Owner};

    #[test]
    fn human_units_are_binary_with_one_decimal() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(20 * 1024 * 1024), "20.0 MiB");
        assert_eq!(human_bytes(u64::MAX), "16384.0 PiB");
    }

    fn row(ip: &str, tx: u64, rx: u64) -> Row {
        Row {
            ip: ip.parse().unwrap(),
            traffic: Traffic {
                tx,
                rx,
                interval_tx: tx,
                interval_rx: rx,
                owner: Some(Owner { pid: 7, comm: Comm::new(b"curl") }),
                export_base: None,
                last_seen: 0,
            },
        }
    }

    #[test]
    fn tables_show_top_rows_owner_and_exact_totals() {
        let rows = vec![row("198.51.100.7", 3_000_000, 10), row("2001:db8::2", 5, 5)];
        let mut out = Vec::new();
        let interval = Interval { rows: rows[..1].to_vec(), active: 2, tx: 3_000_005, rx: 15, tracked: 2, folded_ips: 0 };
        interval_table(&mut out, &interval, &View { top: 1, color: false, locator: None, json: false }, Duration::from_secs(2)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("198.51.100.7") && text.contains("2.9 MiB") && text.contains("curl"), "{text}");
        assert!(!text.contains("2001:db8::2") && text.contains("1 more"), "{text}");
        assert!(!text.contains('\x1b'), "no colour off a terminal");
        let mut out = Vec::new();
        let interval = Interval { rows: rows[..1].to_vec(), active: 2, tx: 3_000_005, rx: 15, tracked: 2, folded_ips: 7 };
        interval_table(&mut out, &interval, &View { top: 1, color: false, locator: None, json: false }, Duration::from_secs(2)).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("2 tracked remote IPs (7 folded by --max-ips)"));

        let mut out = Vec::new();
        summary(&mut out, Summary::Final, &rows, &View { top: 10, color: false, locator: None, json: false }, Duration::from_secs(30)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("3000000") && text.contains("2001:db8::2") && text.contains("(3000005 bytes)"), "{text}");
    }
}
