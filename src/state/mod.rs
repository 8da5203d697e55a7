//! Totals that survive restarts (`--state`): what the store and the
//! location ledger hold, written atomically to a file ([`file`]) and read
//! back at start, so every counter goes on where it was. The format is
//! text, one record per tab-separated line, versioned on its first line and
//! closed by a line that counts the lines and checksums the bytes before
//! it: a truncated, altered or foreign file is refused, never taken for a
//! smaller state (docs/STATE.md is the reference). Fields are separated
//! by one tab (→ below):
//!
//! ```text
//! ip_traffic_monitor_cli state → 2
//! saved → 1764422400
//! unexported → TX → RX
//! unkeyed → TX → RX
//! folded → IPS → SERIES
//! period → START → END → TX → RX
//! harvest → N                             (the last nftables harvest in it)
//! previous → START → END → TX → RX
//! previous_ip → ADDRESS → TX → RX          (the busiest of the period above)
//! ip → ADDRESS → TX → RX → PERIOD_TX → PERIOD_RX → BASE_TX|- → BASE_RX|- → PID|- → COMM_HEX|-
//! place → COUNTRY → PROVINCE → CITY → ISP → TX → RX
//! end → LINES → FNV1A64_HEX
//! ```
//!
//! Versions 1 and 2 are read too: version 1 (before per-IP period bytes)
//! lacks the two period fields of `ip` lines and `previous_ip` lines;
//! neither has a `harvest` line (0: no harvest journal to resume from).

pub mod file;
pub mod report;

use std::fmt::Write;
use std::net::IpAddr;

use crate::location::Labels;
use crate::store::{Comm, Owner, PastPeriod, Period, PeriodIp, Saved, SavedIp};

/// The first line: what the file is, and which version of the format.
const MAGIC: &str = "ip_traffic_monitor_cli state";
pub const VERSION: u32 = 3;
/// Versions this monitor reads.
const READS: [&str; 3] = ["1", "2", "3"];

/// Everything a restart needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// When it was written (Unix seconds).
    pub saved_at: u64,
    pub store: Saved,
    /// Bytes per place of the IPs the store no longer tracks.
    pub places: Vec<(Labels, u64, u64)>,
}

impl State {
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(64 * (self.store.ips.len() + self.places.len() + 8));
        let s = &self.store;
        let _ = writeln!(out, "{MAGIC}\t{VERSION}");
        let _ = writeln!(out, "saved\t{}", self.saved_at);
        let _ = writeln!(out, "unexported\t{}\t{}", s.unexported.0, s.unexported.1);
        let _ = writeln!(out, "unkeyed\t{}\t{}", s.unkeyed.0, s.unkeyed.1);
        let _ = writeln!(out, "folded\t{}\t{}", s.folded_ips, s.evicted_series);
        let p = s.period;
        let _ = writeln!(out, "period\t{}\t{}\t{}\t{}", p.start, p.end, p.tx, p.rx);
        let _ = writeln!(out, "harvest\t{}", s.harvest);
        for past in &s.previous {
            let p = past.period;
            let _ = writeln!(out, "previous\t{}\t{}\t{}\t{}", p.start, p.end, p.tx, p.rx);
            for ip in &past.top {
                let _ = writeln!(out, "previous_ip\t{}\t{}\t{}", ip.ip, ip.tx, ip.rx);
            }
        }
        for ip in &s.ips {
            let (base_tx, base_rx) = ip.base.map_or(("-".into(), "-".into()), |(t, r)| (t.to_string(), r.to_string()));
            let (pid, comm) = ip.owner.map_or(("-".into(), "-".into()), |o| (o.pid.to_string(), hex(o.comm.as_bytes())));
            let (ptx, prx) = ip.period;
            let _ = writeln!(out, "ip\t{}\t{}\t{}\t{ptx}\t{prx}\t{base_tx}\t{base_rx}\t{pid}\t{comm}", ip.ip, ip.tx, ip.rx);
        }
        for (labels, tx, rx) in &self.places {
            let [country, province, city, isp] =
                [&labels.country, &labels.province, &labels.city, &labels.isp].map(|l| escape(l.as_deref()));
            let _ = writeln!(out, "place\t{country}\t{province}\t{city}\t{isp}\t{tx}\t{rx}");
        }
        let lines = out.lines().count();
        let sum = fnv1a64(out.as_bytes());
        let _ = writeln!(out, "end\t{lines}\t{sum:016x}");
        out
    }

    /// Reads a state file's text; the error says what is wrong with it.
    pub fn from_text(text: &str) -> Result<State, String> {
        let body_end = text.trim_end_matches('\n').rfind('\n').map_or(0, |i| i + 1);
        let (body, last) = text.split_at(body_end);
        let first = body.lines().next().unwrap_or(last);
        let version = match first.split_once('\t') {
            Some((MAGIC, version)) if READS.contains(&version) => version,
            Some((MAGIC, version)) => {
                return Err(format!("it is format version {version}; this monitor reads versions {}", READS.join(", ")));
            }
            _ => return Err("it is not a state file of ip_traffic_monitor_cli".into()),
        };
        let end: Vec<&str> = last.trim_end_matches('\n').split('\t').collect();
        let complete = match end[..] {
            ["end", lines, sum] => {
                lines.parse::<usize>().ok() == Some(body.lines().count())
                    && u64::from_str_radix(sum, 16).ok() == Some(fnv1a64(body.as_bytes()))
            }
            _ => false,
        };
        if !complete || !text.ends_with('\n') {
            return Err("it is truncated or altered (its last line does not match what comes before)".into());
        }
        let mut state = State::default();
        for (n, line) in body.lines().enumerate().skip(1) {
            read_line(line, version, &mut state).map_err(|what| format!("line {}: {what}", n + 1))?;
        }
        Ok(state)
    }
}

fn read_line(line: &str, version: &str, state: &mut State) -> Result<(), String> {
    let fields: Vec<&str> = line.split('\t').collect();
    let s = &mut state.store;
    match (version, &fields[..]) {
        (_, ["saved", at]) => state.saved_at = number(at)?,
        (_, ["unexported", tx, rx]) => s.unexported = (number(tx)?, number(rx)?),
        (_, ["unkeyed", tx, rx]) => s.unkeyed = (number(tx)?, number(rx)?),
        (_, ["folded", ips, series]) => (s.folded_ips, s.evicted_series) = (number(ips)?, number(series)?),
        (_, ["period", start, end, tx, rx]) => s.period = period(start, end, tx, rx)?,
        (_, ["previous", start, end, tx, rx]) => s.previous.push(PastPeriod { period: period(start, end, tx, rx)?, top: Vec::new() }),
        ("3", ["harvest", n]) => s.harvest = number(n)?,
        ("2" | "3", ["previous_ip", ip, tx, rx]) => {
            let past = s.previous.last_mut().ok_or("an IP of a past period before any past period")?;
            past.top.push(PeriodIp { ip: address(ip)?, tx: number(tx)?, rx: number(rx)? });
        }
        ("2" | "3", ["ip", ip, tx, rx, period_tx, period_rx, base_tx, base_rx, pid, comm]) => {
            let period = (number(period_tx)?, number(period_rx)?);
            s.ips.push(saved_ip(ip, tx, rx, period, base_tx, base_rx, pid, comm)?);
        }
        ("1", ["ip", ip, tx, rx, base_tx, base_rx, pid, comm]) => s.ips.push(saved_ip(ip, tx, rx, (0, 0), base_tx, base_rx, pid, comm)?),
        (_, ["place", country, province, city, isp, tx, rx]) => {
            let labels = Labels { country: unescape(country)?, province: unescape(province)?, city: unescape(city)?, isp: unescape(isp)? };
            state.places.push((labels, number(tx)?, number(rx)?));
        }
        _ => return Err(format!("'{}' is not a record of version {version}", fields[0])),
    }
    Ok(())
}

/// An `ip` line's fields, checked: a series and a period hold no more
/// than the IP's totals.
#[allow(clippy::too_many_arguments)]
fn saved_ip(ip: &str, tx: &str, rx: &str, period: (u64, u64), base_tx: &str, base_rx: &str, pid: &str, comm: &str) -> Result<SavedIp, String> {
    let ip = address(ip)?;
    let base = match (base_tx, base_rx) {
        ("-", "-") => None,
        (t, r) => Some((number(t)?, number(r)?)),
    };
    let (tx, rx) = (number(tx)?, number(rx)?);
    // A series starts from totals the IP had: never more than it has.
    if base.is_some_and(|(t, r)| t > tx || r > rx) {
        return Err(format!("{ip}'s series would start above its totals"));
    }
    if period.0 > tx || period.1 > rx {
        return Err(format!("{ip} has more bytes in the billing period than in all"));
    }
    let owner = match (pid, comm) {
        ("-", "-") => None,
        (p, c) => Some(Owner { pid: u32::try_from(number(p)?).map_err(|_| "a PID too large")?, comm: Comm::new(&unhex(c)?) }),
    };
    Ok(SavedIp { ip, tx, rx, period, base, owner })
}

fn address(text: &str) -> Result<IpAddr, String> {
    text.parse().map_err(|_| format!("'{text}' is not an address"))
}

fn period(start: &str, end: &str, tx: &str, rx: &str) -> Result<Period, String> {
    let time = |t: &str| t.parse::<i64>().map_err(|_| format!("'{t}' is not a time"));
    let (start, end) = (time(start)?, time(end)?);
    if end < start {
        return Err(format!("a period that ends ({end}) before it starts ({start})"));
    }
    Ok(Period { start, end, tx: number(tx)?, rx: number(rx)? })
}

fn number(text: &str) -> Result<u64, String> {
    text.parse().map_err(|_| format!("'{text}' is not a number"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    if text.len() % 2 != 0 || text.len() > 32 {
        return Err(format!("'{text}' is not a process name in hex"));
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|_| format!("'{text}' is not hex"))).collect()
}

/// A label as a field: `-` for none; `\t`, `\n`, `\\` and a leading `-` escaped.
fn escape(label: Option<&str>) -> String {
    let Some(label) = label else { return "-".into() };
    let mut out = String::with_capacity(label.len());
    if label.starts_with('-') {
        out.push('\\');
    }
    for c in label.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(field: &str) -> Result<Option<String>, String> {
    if field == "-" {
        return Ok(None);
    }
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, false) => out.push(c),
            (_, true) => match chars.next() {
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some('-') => out.push('-'),
                _ => return Err(format!("'{field}' has a broken escape")),
            },
        }
    }
    Ok(Some(out))
}

/// FNV-1a, 64 bits: enough to tell a damaged file from a whole one.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        State {
            saved_at: 1_764_422_400,
            store: Saved {
                ips: vec![
                    SavedIp { ip: ip("198.51.100.7"), tx: 3_000_000, rx: 20_000, period: (2_000, 20), base: Some((100, 7)), owner: Some(Owner { pid: 42, comm: Comm::new(b"curl\tx\n") }) },
                    SavedIp { ip: ip("2001:db8::2"), tx: 0, rx: 900, period: (0, 900), base: None, owner: None },
                ],
                unexported: (1_234, 5_678),
                unkeyed: (11, 22),
                folded_ips: 3,
                evicted_series: 1,
                period: Period { start: 1_764_547_200, end: 1_767_225_600, tx: 9_000, rx: 8_000 },
                previous: vec![
                    PastPeriod {
                        period: Period { start: 1_761_955_200, end: 1_764_547_200, tx: 1, rx: 2 },
                        top: vec![PeriodIp { ip: ip("198.51.100.9"), tx: 1, rx: 1 }],
                    },
                    PastPeriod { period: Period { start: 1_764_547_200, end: 1_764_547_200, tx: 0, rx: 0 }, top: vec![] },
                ],
                harvest: 41,
            },
            places: vec![
                (Labels { country: Some("中国".into()), province: Some("广东\t省".into()), city: None, isp: Some("-电信\\".into()) }, 10, 20),
                (Labels::default(), 5, 6),
            ],
        }
    }

    #[test]
    fn a_state_reads_back_as_it_was_written() {
        let state = sample();
        let text = state.to_text();
        assert!(text.starts_with("ip_traffic_monitor_cli state\t3\n"), "{text}");
        assert_eq!(State::from_text(&text), Ok(state));
    }

    /// A file of version 2 (before the harvest journal) is read, its harvest 0.
    #[test]
    fn a_version_2_file_is_read_with_no_harvest() {
        let v3 = sample().to_text();
        let body = v3[..v3.rfind("end\t").expect("end line")].replacen("state\t3", "state\t2", 1).replacen("harvest\t41\n", "", 1);
        let sealed = |body: &str| format!("{body}end\t{}\t{:016x}\n", body.lines().count(), fnv1a64(body.as_bytes()));
        let state = State::from_text(&sealed(&body)).expect("version 2 reads");
        assert_eq!(state.store, Saved { harvest: 0, ..sample().store });
        let with_v3_line = body.replacen("saved\t", "harvest\t41\nsaved\t", 1);
        let refused = State::from_text(&sealed(&with_v3_line)).expect_err("a version 3 record in a version 2 file");
        assert!(refused.contains("'harvest' is not a record of version 2"), "{refused}");
    }

    /// A file of version 1 (before per-IP period bytes) is read, those bytes 0.
    #[test]
    fn a_version_1_file_is_read_with_no_period_bytes_per_ip() {
        let v1 = "ip_traffic_monitor_cli state\t1\nsaved\t5\nperiod\t0\t10\t7\t8\nprevious\t-10\t0\t1\t2\n\
                  ip\t198.51.100.7\t300\t20\t100\t7\t42\t6375726c\n";
        let text = format!("{v1}end\t{}\t{:016x}\n", v1.lines().count(), fnv1a64(v1.as_bytes()));
        let state = State::from_text(&text).expect("version 1 reads");
        let ip = state.store.ips[0];
        assert_eq!((ip.tx, ip.rx, ip.period, ip.base, ip.owner.map(|o| o.pid)), (300, 20, (0, 0), Some((100, 7)), Some(42)));
        assert_eq!(state.store.previous[0].period.tx, 1);
        let with_v2_line = text.replace("ip\t198.51.100.7\t300\t20\t100", "previous_ip\t198.51.100.7\t1\t1\nip\t198.51.100.7\t300\t20\t100");
        assert!(State::from_text(&with_v2_line).is_err(), "a version 2 record in a version 1 file");
    }

    /// Cut anywhere, or one byte changed anywhere: refused, with a reason.
    #[test]
    fn a_truncated_or_altered_file_is_refused() {
        let text = sample().to_text();
        for cut in 0..text.len() {
            if text.is_char_boundary(cut) {
                assert!(State::from_text(&text[..cut]).is_err(), "cut at {cut}");
            }
        }
        let mut bytes = text.clone().into_bytes();
        for at in 0..bytes.len() {
            let was = bytes[at];
            bytes[at] = if was == b'1' { b'2' } else { b'1' };
            if let Ok(altered) = std::str::from_utf8(&bytes) {
                assert!(State::from_text(altered).is_err(), "byte {at} changed");
            }
            bytes[at] = was;
        }
    }

    /// Well-formed but impossible: refused like a damaged file (the sums
    /// below would go negative).
    #[test]
    fn a_whole_file_with_impossible_numbers_is_refused() {
        let mut state = sample();
        state.store.ips[0].base = Some((state.store.ips[0].tx + 1, 0));
        assert!(State::from_text(&state.to_text()).unwrap_err().contains("above its totals"));
        let mut state = sample();
        state.store.period.end = state.store.period.start - 1;
        assert!(State::from_text(&state.to_text()).unwrap_err().contains("before it starts"));
        let mut state = sample();
        state.store.ips[1].period.1 = state.store.ips[1].rx + 1;
        assert!(State::from_text(&state.to_text()).unwrap_err().contains("more bytes in the billing period"));
    }

    #[test]
    fn another_version_or_format_says_so() {
        let text = sample().to_text().replacen("state\t3", "state\t4", 1);
        assert!(State::from_text(&text).unwrap_err().contains("version 4"));
        for foreign in ["{\"json\": true}\n", "", "\n\n", "\u{0}\u{1}binary"] {
            assert!(State::from_text(foreign).unwrap_err().contains("not a state file"), "{foreign:?}");
        }
    }
}
