//! The in-memory totals: per remote IP, the cumulative TX and RX bytes, the
//! bytes since the console last looked, the local process that last talked
//! to it, and whether it has its own Prometheus series yet. One `Mutex`
//! guards everything; the backend's reader thread applies a whole report
//! under one lock, so readers never see half a report.
//!
//! Export rule (`-t`, docs/ACCOUNTING.md): an IP gets its own series in the
//! report where its traffic first exceeds the threshold, and keeps it while
//! it is tracked. Its series counts from that report on (bytes of that report
//! included); the bytes it had before stay in the `unexported` sums. When
//! `--max-ips` is reached the quietest IPs give way, exported ones too once
//! they are the quietest: their series end and their bytes move to the
//! unexported sums ("bytes not on a current series"). So every counter only
//! grows, and the per-IP series plus the unexported sums equal all counted
//! bytes, and a flood never locks later IPs out of a series of their own. That invariant is kept here: callers change the
//! totals only through [`Store::apply_report`] and read them as copies.
//! The backend's health is beside the totals, in [`Health`].

mod health;
mod ips;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

pub use health::{Health, HealthState};

use crate::period::Periods;
use ips::Ips;

/// A process command name as the kernel keeps it (at most 15 bytes), stored
/// inline so that recording an owner never allocates.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Comm {
    len: u8,
    bytes: [u8; 16],
}

impl Comm {
    pub fn new(name: &[u8]) -> Self {
        let mut comm = Comm::default();
        let len = name.len().min(comm.bytes.len());
        comm.bytes[..len].copy_from_slice(&name[..len]);
        comm.len = len as u8;
        comm
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The name to show: a process chooses its own name, so control
    /// characters (a newline, a terminal escape) and bytes that are not
    /// UTF-8 are shown as `\xNN` and a backslash as `\\`; nothing in it
    /// can act on a terminal or a parser.
    pub fn display(&self) -> String {
        let mut out = String::with_capacity(usize::from(self.len));
        for chunk in self.as_bytes().utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    c if c.is_control() => {
                        let mut utf8 = [0u8; 4];
                        c.encode_utf8(&mut utf8).bytes().for_each(|b| push_hex_escape(&mut out, b));
                    }
                    c => out.push(c),
                }
            }
            chunk.invalid().iter().for_each(|&b| push_hex_escape(&mut out, b));
        }
        out
    }
}

fn push_hex_escape(out: &mut String, byte: u8) {
    use std::fmt::Write;
    let _ = write!(out, "\\x{byte:02x}");
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.display())
    }
}

/// The local process last seen talking to a remote IP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub comm: Comm,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub tx: u64,
    pub rx: u64,
    pub interval_tx: u64,
    pub interval_rx: u64,
    pub owner: Option<Owner>,
    /// `Some((tx, rx))`: exported, with the totals it had before its series began.
    pub export_base: Option<(u64, u64)>,
    /// The report that last brought it bytes: the quietest make room first.
    pub last_seen: u64,
}

impl Traffic {
    /// The values of its Prometheus series, if it has them.
    pub fn exported(&self) -> Option<(u64, u64)> {
        self.export_base.map(|(tx, rx)| (self.tx - tx, self.rx - rx))
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Tx,
    Rx,
}

/// One fact from a backend report: 32 bytes (the rare owner is boxed, so a
/// report of 100,000 IPs takes 3 MiB, not 5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Tx(IpAddr, u64),
    Rx(IpAddr, u64),
    Owner(IpAddr, Box<Owner>),
    /// Bytes the backend counted but could not put on an IP (its per-IP
    /// maps were full): `(tx, rx)`.
    Unkeyed(u64, u64),
    /// The report holds every harvest of the kernel's counters up to this
    /// number (nftables): saved with the totals, so that a restart knows
    /// which harvests written down since it still lacks.
    Harvest(u64),
}

/// A remote IP as the table keys it: 16 bytes, an IPv4 address in its
/// IPv4-mapped IPv6 form (the store only ever sees canonical addresses,
/// where a mapped address is IPv4 already, so no two addresses share a key).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key([u8; 16]);

impl From<IpAddr> for Key {
    fn from(ip: IpAddr) -> Key {
        match ip {
            IpAddr::V4(v4) => Key(v4.to_ipv6_mapped().octets()),
            IpAddr::V6(v6) => Key(v6.octets()),
        }
    }
}

impl Key {
    fn ip(self) -> IpAddr {
        let v6 = std::net::Ipv6Addr::from(self.0);
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    }
}

/// What the table holds per remote IP: 56 bytes (72 with its key), so that
/// 100,000 IPs take about 9 MiB. The owner and the export base live beside
/// it, for the few IPs that have them.
#[derive(Clone, Copy, Default)]
pub(super) struct Entry {
    tx: u64,
    rx: u64,
    interval_tx: u64,
    interval_rx: u64,
    /// Since the billing period began (or since the IP came, if later).
    period_tx: u64,
    period_rx: u64,
    /// The report that last brought it bytes (reports fit 32 bits for 136
    /// years at one a second; the count saturates beyond).
    last_seen: u32,
    /// Whether it has its own series (its base is in `Totals::bases`).
    exported: bool,
}

#[derive(Default)]
struct Totals {
    ips: Ips,
    /// The local process last seen talking to an IP, for those it is known of.
    owners: HashMap<Key, Owner>,
    /// For exported IPs: the totals they had before their series began.
    bases: HashMap<Key, (u64, u64)>,
    /// Complete reports received from the backend.
    reports: u64,
    last_report: Option<SystemTime>,
    /// Backend lines that could not be read.
    parse_errors: u64,
    /// Bytes of IPs while they had no series of their own.
    unexported_tx: u64,
    unexported_rx: u64,
    /// IPs dropped by the `--max-ips` cap, their bytes kept in the unexported sums.
    folded_ips: u64,
    /// Of those, IPs that had their own series (it ended when they went).
    evicted_series: u64,
    /// Bytes counted without an IP (the backend's maps were full), in the
    /// unexported sums too: `(tx, rx)`.
    unkeyed: (u64, u64),
    /// IPs evicted since the location totals last took them: `(ip, tx, rx)`,
    /// so their bytes stay in their place's totals. Kept only while
    /// [`Store::keep_retired`] is on (an exporter is serving).
    retiring: Vec<(IpAddr, u64, u64)>,
    keep_retired: bool,
    /// This billing period's host totals, and the last ones' (oldest first).
    period: Period,
    previous: Vec<PastPeriod>,
    /// The last kernel harvest applied ([`Record::Harvest`]).
    harvest: u64,
    /// Every counted byte of each recent report, for the live page's chart.
    history: VecDeque<HistoryPoint>,
}

/// The bytes of one report and when it was applied (Unix milliseconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryPoint {
    pub at_ms: u64,
    pub tx: u64,
    pub rx: u64,
}

/// How far back the history goes, and how many points it holds at most.
const HISTORY_SPAN_MS: u64 = 15 * 60 * 1000;
const HISTORY_POINTS: usize = 1024;

/// The `top` IPs of the largest scores, ties to the lowest address, kept
/// in a min-heap of `top` while the table is walked once (the console's
/// interval table and the live page): no copy of the whole table.
struct Largest {
    top: usize,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(u64, std::cmp::Reverse<IpAddr>)>>,
}

impl Largest {
    fn new(top: usize) -> Largest {
        Largest { top, heap: std::collections::BinaryHeap::with_capacity(top.saturating_add(1).min(1 << 16)) }
    }

    fn offer(&mut self, score: u64, ip: IpAddr) {
        if self.top == 0 {
            return;
        }
        self.heap.push(std::cmp::Reverse((score, std::cmp::Reverse(ip))));
        if self.heap.len() > self.top {
            self.heap.pop();
        }
    }

    /// The addresses, largest score first.
    fn into_vec(self) -> Vec<IpAddr> {
        self.heap.into_sorted_vec().into_iter().map(|std::cmp::Reverse((_, std::cmp::Reverse(ip)))| ip).collect()
    }

    fn of(scored: impl Iterator<Item = (u64, IpAddr)>, top: usize) -> Vec<IpAddr> {
        let mut largest = Largest::new(top);
        scored.for_each(|(score, ip)| largest.offer(score, ip));
        largest.into_vec()
    }
}

/// What the live page shows (`Store::live`).
#[derive(Clone, Debug, Default)]
pub struct Live {
    /// The busiest IPs by total bytes, busiest first.
    pub rows: Vec<Row>,
    pub tracked: usize,
    /// Every counted byte since the counters began (restored ones included).
    pub tx: u64,
    pub rx: u64,
    pub period: Period,
    pub history: Vec<HistoryPoint>,
    pub last_report: Option<SystemTime>,
}

impl Totals {
    /// The public view of one entry.
    fn traffic(&self, key: &Key, e: &Entry) -> Traffic {
        Traffic {
            tx: e.tx,
            rx: e.rx,
            interval_tx: e.interval_tx,
            interval_rx: e.interval_rx,
            owner: self.owners.get(key).copied(),
            export_base: if e.exported { self.bases.get(key).copied() } else { None },
            last_seen: u64::from(e.last_seen),
        }
    }

    /// Drops an IP and what lies beside it.
    fn remove(&mut self, key: &Key) -> Option<Traffic> {
        let e = self.ips.remove(key)?;
        let traffic = self.traffic(key, &e);
        self.owners.remove(key);
        self.bases.remove(key);
        Some(traffic)
    }

    fn progress(&self) -> Progress {
        Progress {
            reports: self.reports,
            last_report: self.last_report,
            parse_errors: self.parse_errors,
            unkeyed_bytes: self.unkeyed.0 + self.unkeyed.1,
        }
    }
}

/// How the backend's reports have been going, for the monitor's warnings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub reports: u64,
    pub last_report: Option<SystemTime>,
    pub parse_errors: u64,
    pub unkeyed_bytes: u64,
}

/// One remote IP with its own Prometheus series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Series {
    pub ip: IpAddr,
    pub tx: u64,
    pub rx: u64,
    pub owner: Option<Owner>,
}

/// What one scrape shows, copied under the lock: the series and the
/// unexported sums together equal every byte counted.
#[derive(Clone, Debug, Default)]
pub struct Exported {
    pub series: Vec<Series>,
    pub unexported_tx: u64,
    pub unexported_rx: u64,
    pub tracked: usize,
    pub folded_ips: u64,
    pub evicted_series: u64,
    pub progress: Progress,
    /// `None` without billing periods (a store made without them).
    pub period: Option<Period>,
}

/// Reports within which an IP counts as active: among active IPs the
/// smallest give way first, so a flood of new one-packet sources evicts
/// itself rather than a busy peer whose bytes of this report are not applied yet.
const ACTIVE_REPORTS: u32 = 2;

/// The eviction order, quietest first: not seen for the longest, and among
/// the IPs active in the last [`ACTIVE_REPORTS`] reports, the fewest bytes.
fn quietness(e: &Entry, now: u32) -> (u32, u64) {
    (e.last_seen.min(now.saturating_sub(ACTIVE_REPORTS)), e.tx + e.rx)
}

/// Every byte counted, by IP: see [`Store::by_ip`]. `(ip, tx, rx)`.
#[derive(Clone, Debug, Default)]
pub struct ByIp {
    pub tracked: Vec<(IpAddr, u64, u64)>,
    pub retired: Vec<(IpAddr, u64, u64)>,
    pub unkeyed: (u64, u64),
}

/// One billing period's host totals: every counted byte from `start` to
/// `end` (Unix seconds), on an IP or not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Period {
    pub start: i64,
    pub end: i64,
    pub tx: u64,
    pub rx: u64,
}

/// Past periods kept (their host totals and busiest IPs).
pub const PREVIOUS_PERIODS: usize = 12;
/// The busiest IPs kept of each past period.
pub const PERIOD_TOP: usize = 100;

/// A billing period that is over: its host totals and its busiest IPs
/// (those tracked when it ended), busiest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PastPeriod {
    pub period: Period,
    pub top: Vec<PeriodIp>,
}

/// One IP's bytes in one billing period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeriodIp {
    pub ip: IpAddr,
    pub tx: u64,
    pub rx: u64,
}

/// The `PERIOD_TOP` busiest of `ips` (with any bytes), busiest first, by
/// address on a tie.
pub fn busiest(mut ips: Vec<PeriodIp>) -> Vec<PeriodIp> {
    ips.retain(|p| p.tx + p.rx > 0);
    // Once a period: a whole sort is fast enough, and small in the binary.
    ips.sort_unstable_by(|a, b| (b.tx + b.rx).cmp(&(a.tx + a.rx)).then(a.ip.cmp(&b.ip)));
    ips.truncate(PERIOD_TOP);
    ips
}

/// What a restart needs of the store (`--state`): every tracked IP with its
/// totals, export base and owner, and the sums beside them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Saved {
    pub ips: Vec<SavedIp>,
    pub unexported: (u64, u64),
    pub unkeyed: (u64, u64),
    pub folded_ips: u64,
    pub evicted_series: u64,
    /// The billing period in progress, and the ones before it (oldest first).
    pub period: Period,
    pub previous: Vec<PastPeriod>,
    /// The last kernel harvest in these totals ([`Record::Harvest`]).
    pub harvest: u64,
}

/// One tracked IP as saved: `base` is `Some` for an IP with its own series;
/// `period` its bytes in the billing period in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedIp {
    pub ip: IpAddr,
    pub tx: u64,
    pub rx: u64,
    pub period: (u64, u64),
    pub base: Option<(u64, u64)>,
    pub owner: Option<Owner>,
}

/// The console's view of one interval.
#[derive(Clone, Debug, Default)]
pub struct Interval {
    /// The busiest IPs of the interval, busiest first (as many as asked for).
    pub rows: Vec<Row>,
    /// IPs with traffic in the interval, and its bytes, all of them.
    pub active: usize,
    pub tx: u64,
    pub rx: u64,
    pub tracked: usize,
    pub folded_ips: u64,
}

#[derive(Default)]
pub struct Store {
    totals: Mutex<Totals>,
    health: Health,
    /// `-t`: an IP is exported once tx + rx exceeds this many bytes.
    export_threshold: u64,
    /// `--max-ips`: how many remote IPs are held at most.
    max_ips: usize,
    /// Bumped by every change to the totals (see [`Store::generation`]).
    changes: AtomicU64,
    /// Where billing periods begin (`--billing-day` in the local zone).
    periods: Option<Periods>,
    /// The last kernel harvest in a state on disk ([`Store::saved`]).
    saved_harvest: AtomicU64,
    /// Bumped by every report that brought bytes of a remote IP (see
    /// [`Store::keyed_reports`]).
    keyed_reports: AtomicU64,
}

/// Which kernel harvests the store holds ([`Record::Harvest`]): `applied`
/// ones are in its totals, `saved` ones in a state on disk too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HarvestMarks {
    pub applied: u64,
    pub saved: u64,
}

/// A row for the console: a remote IP with its counters at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub ip: IpAddr,
    pub traffic: Traffic,
}

impl Store {
    pub fn new(export_threshold: u64, max_ips: usize) -> Store {
        Store {
            totals: Mutex::default(),
            health: Health::default(),
            export_threshold,
            max_ips: max_ips.max(1),
            changes: AtomicU64::new(0),
            periods: None,
            saved_harvest: AtomicU64::new(0),
            keyed_reports: AtomicU64::new(0),
        }
    }

    /// A number that changes whenever a report brings bytes of a remote
    /// IP: while it stands still, no socket can have a new owner to name.
    pub fn keyed_reports(&self) -> u64 {
        self.keyed_reports.load(Ordering::Acquire)
    }

    /// Keeps host totals per billing period, the current one from `now`.
    pub fn with_periods(mut self, periods: Periods, now: i64) -> Store {
        let start = periods.start_of(now);
        self.totals.get_mut().unwrap_or_else(|p| p.into_inner()).period = Period { start, end: periods.after(start), tx: 0, rx: 0 };
        self.periods = Some(periods);
        self
    }

    /// Moves on to the period that holds `now` if the current one is over
    /// (a report is in the period in force when it is applied).
    fn roll_period(&self, totals: &mut Totals, now: i64) {
        let Some(periods) = &self.periods else { return };
        while now >= totals.period.end {
            let done = totals.period;
            let ips = totals.ips.iter().map(|(key, e)| PeriodIp { ip: key.ip(), tx: e.period_tx, rx: e.period_rx }).collect();
            totals.previous.push(PastPeriod { period: done, top: busiest(ips) });
            if totals.previous.len() > PREVIOUS_PERIODS {
                totals.previous.remove(0);
            }
            for entry in totals.ips.values_mut() {
                (entry.period_tx, entry.period_rx) = (0, 0);
            }
            totals.period = Period { start: done.end, end: periods.after(done.end), tx: 0, rx: 0 };
        }
    }

    /// A number that changes whenever the totals or the health do: what
    /// was rendered from them at one generation holds until the next.
    pub fn generation(&self) -> u64 {
        self.changes.load(Ordering::Acquire).wrapping_add(self.health.changes())
    }

    fn lock(&self) -> MutexGuard<'_, Totals> {
        // A panic while holding the lock cannot leave the counters half
        // updated in a way worse than losing them, so keep serving them.
        self.totals.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds one complete report. An owner may arrive a report before its
    /// IP's bytes (the script prints owners at once, bytes 1/8 to 2/8 of an interval
    /// later), so it creates the entry; the reader only passes owners of
    /// addresses the filter counts.
    pub fn apply_report(&self, records: &[Record], parse_errors: u64) {
        self.apply_report_at(records, parse_errors, crate::sys::unix_now() as i64);
    }

    /// [`Store::apply_report`] at a given moment (Unix seconds), for the billing period.
    pub fn apply_report_at(&self, records: &[Record], parse_errors: u64, now: i64) {
        let mut guard = self.lock();
        self.changes.fetch_add(1, Ordering::Release);
        let totals = &mut *guard;
        self.roll_period(totals, now);
        let mut point = HistoryPoint::default();
        let mut keyed = false;
        for record in records {
            match *record {
                Record::Tx(ip, bytes) => {
                    keyed = true;
                    point.tx += bytes;
                    self.add(totals, ip, bytes, Direction::Tx);
                }
                Record::Rx(ip, bytes) => {
                    keyed = true;
                    point.rx += bytes;
                    self.add(totals, ip, bytes, Direction::Rx);
                }
                Record::Owner(ip, ref owner) => {
                    // An owner never makes room: it waits for its IP's bytes.
                    let key = Key::from(ip);
                    if totals.ips.contains_key(&key) || totals.ips.len() < self.max_ips {
                        totals.ips.slot(key);
                        totals.owners.insert(key, **owner);
                    }
                }
                Record::Harvest(number) => totals.harvest = totals.harvest.max(number),
                Record::Unkeyed(tx, rx) => {
                    (point.tx, point.rx) = (point.tx + tx, point.rx + rx);
                    totals.period.tx += tx;
                    totals.period.rx += rx;
                    totals.unexported_tx += tx;
                    totals.unexported_rx += rx;
                    totals.unkeyed.0 += tx;
                    totals.unkeyed.1 += rx;
                }
            }
        }
        if keyed {
            self.keyed_reports.fetch_add(1, Ordering::Release);
        }
        totals.reports += 1;
        let applied = SystemTime::now();
        totals.last_report = Some(applied);
        totals.parse_errors += parse_errors;
        point.at_ms = applied.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let history = &mut totals.history;
        history.push_back(point);
        while history.len() > HISTORY_POINTS || history.front().is_some_and(|p| p.at_ms + HISTORY_SPAN_MS < point.at_ms) {
            history.pop_front();
        }
    }

    /// The live page's view: the `top` IPs with the most bytes, every
    /// counted byte, this billing period, the last 15 minutes' reports.
    pub fn live(&self, top: usize) -> Live {
        let totals = self.lock();
        let (mut tx, mut rx) = (totals.unexported_tx, totals.unexported_rx);
        for (key, e) in totals.ips.iter() {
            if let Some((series_tx, series_rx)) = totals.traffic(key, e).exported() {
                (tx, rx) = (tx + series_tx, rx + series_rx);
            }
        }
        let busiest = Largest::of(totals.ips.iter().map(|(key, e)| (e.tx + e.rx, key.ip())), top);
        let rows = busiest
            .into_iter()
            .filter_map(|ip| {
                let key = Key::from(ip);
                Some(Row { ip, traffic: totals.traffic(&key, totals.ips.get(&key)?) })
            })
            .collect();
        Live {
            rows,
            tracked: totals.ips.len(),
            tx,
            rx,
            period: totals.period,
            history: totals.history.iter().copied().collect(),
            last_report: totals.last_report,
        }
    }

    fn add(&self, totals: &mut Totals, ip: IpAddr, bytes: u64, direction: Direction) {
        let key = Key::from(ip);
        if !totals.ips.contains_key(&key) {
            self.make_room(totals);
        }
        let report = reports_u32(totals.reports);
        match direction {
            Direction::Tx => totals.period.tx += bytes,
            Direction::Rx => totals.period.rx += bytes,
        }
        let t = totals.ips.slot(key);
        t.last_seen = report;
        let (tx_before, rx_before) = (t.tx, t.rx);
        match direction {
            Direction::Tx => {
                t.tx += bytes;
                t.interval_tx += bytes;
                t.period_tx += bytes;
            }
            Direction::Rx => {
                t.rx += bytes;
                t.interval_rx += bytes;
                t.period_rx += bytes;
            }
        }
        if !t.exported && t.tx + t.rx > self.export_threshold {
            // Its series starts from the totals it had before these bytes.
            t.exported = true;
            totals.bases.insert(key, (tx_before, rx_before));
        } else if !t.exported {
            match direction {
                Direction::Tx => totals.unexported_tx += bytes,
                Direction::Rx => totals.unexported_rx += bytes,
            }
        }
    }

    /// Makes room for one more IP under `--max-ips`: when the table is
    /// full, the quietest tenth gives way, exported IPs included (see
    /// [`quietness`]). An evicted IP's bytes are all in the unexported sums
    /// (an exported IP's series values move there and its series ends), so
    /// every family only grows and together they still hold every byte
    /// counted. One pass over the table frees room for a tenth of it: on
    /// average a new IP costs a constant, whatever the table holds.
    fn make_room(&self, totals: &mut Totals) {
        if totals.ips.len() < self.max_ips {
            return;
        }
        let now = reports_u32(totals.reports);
        let mut order: Vec<(u32, u64, Key)> =
            totals.ips.iter().map(|(key, e)| { let (a, b) = quietness(e, now); (a, b, *key) }).collect();
        let n = (self.max_ips / 10).clamp(1, order.len());
        order.select_nth_unstable(n - 1);
        order.truncate(n);
        for (_, _, key) in order {
            let Some(t) = totals.remove(&key) else { continue };
            let ip = key.ip();
            if let Some((tx, rx)) = t.exported() {
                totals.unexported_tx += tx;
                totals.unexported_rx += rx;
                totals.evicted_series += 1;
            }
            // An entry holding only an owner (its bytes not reported yet) folds no traffic.
            if t.tx + t.rx > 0 {
                totals.folded_ips += 1;
                if totals.keep_retired {
                    totals.retiring.push((ip, t.tx, t.rx));
                }
            }
        }
    }

    /// Sets the owner of each listed IP that is tracked already; the
    /// store's generation changes only if an owner did (what was rendered
    /// still holds otherwise).
    pub fn set_owners(&self, owners: &[(IpAddr, Owner)]) {
        let mut totals = self.lock();
        let mut changed = false;
        for (ip, owner) in owners {
            let key = Key::from(*ip);
            if totals.ips.contains_key(&key) {
                changed |= totals.owners.insert(key, *owner) != Some(*owner);
            }
        }
        if changed {
            self.changes.fetch_add(1, Ordering::Release);
        }
    }

    /// The backend's health, beside the totals.
    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn progress(&self) -> Progress {
        self.lock().progress()
    }

    /// The `top` busiest IPs since the previous call, busiest first, with
    /// the interval's sums, and resets the interval counters. Memory in
    /// `top`, not in the IPs tracked: a flood of 100,000 IPs costs the
    /// console nothing.
    pub fn take_interval(&self, top: usize) -> Interval {
        let mut totals = self.lock();
        let mut interval = Interval { tracked: totals.ips.len(), folded_ips: totals.folded_ips, ..Interval::default() };
        let mut busiest = Largest::new(top);
        for (key, t) in totals.ips.iter() {
            let volume = t.interval_tx + t.interval_rx;
            if volume == 0 {
                continue;
            }
            interval.active += 1;
            interval.tx += t.interval_tx;
            interval.rx += t.interval_rx;
            busiest.offer(volume, key.ip());
        }
        interval.rows = busiest
            .into_vec()
            .into_iter()
            .filter_map(|ip| {
                let key = Key::from(ip);
                Some(Row { ip, traffic: totals.traffic(&key, totals.ips.get(&key)?) })
            })
            .collect();
        for t in totals.ips.values_mut() {
            t.interval_tx = 0;
            t.interval_rx = 0;
        }
        interval
    }

    /// A copy of what /metrics shows (series in no particular order).
    pub fn exported(&self) -> Exported {
        let totals = self.lock();
        let series = totals
            .ips
            .iter()
            .filter(|(_, e)| e.exported)
            .filter_map(|(key, e)| {
                let (tx, rx) = totals.traffic(key, e).exported()?;
                Some(Series { ip: key.ip(), tx, rx, owner: totals.owners.get(key).copied() })
            })
            .collect();
        Exported {
            series,
            unexported_tx: totals.unexported_tx,
            unexported_rx: totals.unexported_rx,
            tracked: totals.ips.len(),
            folded_ips: totals.folded_ips,
            evicted_series: totals.evicted_series,
            progress: totals.progress(),
            period: self.periods.as_ref().map(|_| totals.period),
        }
    }

    /// From now on, remember evicted IPs for [`Store::by_ip`] (the
    /// location totals need them; nothing else does).
    pub fn keep_retired(&self) {
        self.lock().keep_retired = true;
    }

    /// Every byte counted, by IP, at one instant: the tracked IPs' totals,
    /// the IPs evicted since the last call (taken), and the bytes on no IP.
    pub fn by_ip(&self) -> ByIp {
        let mut totals = self.lock();
        ByIp {
            tracked: totals.ips.iter().filter(|(_, t)| t.tx + t.rx > 0).map(|(key, t)| (key.ip(), t.tx, t.rx)).collect(),
            retired: std::mem::take(&mut totals.retiring),
            unkeyed: totals.unkeyed,
        }
    }

    /// As [`Store::by_ip`], with the tracked IPs' totals summed into one row
    /// on the unspecified address: for a locator without databases, to which
    /// every IP is the same place (a render then copies no IP: 4 MB fewer at
    /// 100,000 tracked IPs).
    pub fn by_ip_in_one(&self) -> ByIp {
        let mut totals = self.lock();
        let (tx, rx) = totals.ips.values().fold((0, 0), |(tx, rx), t| (tx + t.tx, rx + t.rx));
        let unspecified = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
        ByIp { tracked: vec![(unspecified, tx, rx)], retired: std::mem::take(&mut totals.retiring), unkeyed: totals.unkeyed }
    }

    /// The IPs evicted since the last call (or [`Store::by_ip`]): `(ip, tx, rx)`.
    pub fn take_retired(&self) -> Vec<(IpAddr, u64, u64)> {
        std::mem::take(&mut self.lock().retiring)
    }

    /// Everything a restart needs, copied under the lock.
    pub fn save(&self) -> Saved {
        let totals = self.lock();
        let (unexported, unkeyed) = ((totals.unexported_tx, totals.unexported_rx), totals.unkeyed);
        let (folded_ips, evicted_series) = (totals.folded_ips, totals.evicted_series);
        let (period, previous, harvest) = (totals.period, totals.previous.clone(), totals.harvest);
        let mut ips: Vec<SavedIp> = totals
            .ips
            .iter()
            .map(|(key, e)| {
                let t = totals.traffic(key, e);
                SavedIp { ip: key.ip(), tx: t.tx, rx: t.rx, period: (e.period_tx, e.period_rx), base: t.export_base, owner: t.owner }
            })
            .collect();
        drop(totals);
        // By address: the same totals make the same file.
        ips.sort_unstable_by_key(|ip| ip.ip);
        Saved { ips, unexported, unkeyed, folded_ips, evicted_series, period, previous, harvest }
    }

    /// `saved` is on disk now: what it holds need not be kept elsewhere.
    pub fn saved(&self, saved: &Saved) {
        self.saved_harvest.fetch_max(saved.harvest, Ordering::Release);
    }

    pub fn harvest_marks(&self) -> HarvestMarks {
        HarvestMarks { applied: self.lock().harvest, saved: self.saved_harvest.load(Ordering::Acquire) }
    }

    /// Takes up a saved state (before counting begins): every total, series
    /// and sum continues from it. IPs beyond `--max-ips` (a smaller cap than
    /// the saving run's) are folded as the cap would have folded them.
    pub fn restore(&self, saved: &Saved) {
        let mut totals = self.lock();
        self.changes.fetch_add(1, Ordering::Release);
        totals.unexported_tx += saved.unexported.0;
        totals.unexported_rx += saved.unexported.1;
        totals.unkeyed.0 += saved.unkeyed.0;
        totals.unkeyed.1 += saved.unkeyed.1;
        totals.folded_ips += saved.folded_ips;
        totals.evicted_series += saved.evicted_series;
        totals.harvest = totals.harvest.max(saved.harvest);
        self.saved_harvest.fetch_max(saved.harvest, Ordering::Release);
        // The saved period goes on if it is the one in force; else it is over.
        totals.previous = saved.previous.clone();
        let goes_on = saved.period.start == totals.period.start;
        if goes_on {
            totals.period.tx += saved.period.tx;
            totals.period.rx += saved.period.rx;
        } else if saved.period.end > saved.period.start {
            let ips = saved.ips.iter().map(|ip| PeriodIp { ip: ip.ip, tx: ip.period.0, rx: ip.period.1 }).collect();
            totals.previous.push(PastPeriod { period: saved.period, top: busiest(ips) });
        }
        let excess = totals.previous.len().saturating_sub(PREVIOUS_PERIODS);
        totals.previous.drain(..excess);
        for ip in &saved.ips {
            if totals.ips.len() >= self.max_ips {
                // Its series' bytes join the unexported sums, as an eviction does.
                if let Some((base_tx, base_rx)) = ip.base {
                    totals.unexported_tx += ip.tx - base_tx.min(ip.tx);
                    totals.unexported_rx += ip.rx - base_rx.min(ip.rx);
                    totals.evicted_series += 1;
                }
                totals.folded_ips += 1;
                continue;
            }
            let key = Key::from(ip.ip);
            let (period_tx, period_rx) = if goes_on { ip.period } else { (0, 0) };
            let entry = Entry { tx: ip.tx, rx: ip.rx, period_tx, period_rx, exported: ip.base.is_some(), ..Entry::default() };
            totals.ips.insert(key, entry);
            if let Some(base) = ip.base {
                totals.bases.insert(key, base);
            }
            if let Some(owner) = ip.owner {
                totals.owners.insert(key, owner);
            }
        }
    }

    /// Every IP with counted bytes, by total traffic, busiest first.
    pub fn totals_by_volume(&self) -> Vec<Row> {
        let totals = self.lock();
        let mut rows: Vec<Row> = totals
            .ips
            .iter()
            .filter(|(_, t)| t.tx + t.rx > 0)
            .map(|(key, e)| Row { ip: key.ip(), traffic: totals.traffic(key, e) })
            .collect();
        drop(totals);
        sort_busiest_first(&mut rows);
        rows
    }
}

/// Rows by total traffic, busiest first, by address on a tie.
pub fn sort_busiest_first(rows: &mut [Row]) {
    let volume = |r: &Row| r.traffic.tx + r.traffic.rx;
    rows.sort_unstable_by(|a, b| volume(b).cmp(&volume(a)).then(a.ip.cmp(&b.ip)));
}

/// A report number as an entry keeps it.
fn reports_u32(reports: u64) -> u32 {
    u32::try_from(reports).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// What 100,000 tracked IPs cost is this times about 1.3 (the hash
    /// table's spare room), on 64-bit and 32-bit targets alike.
    /// The live view: every counted byte (series, unexported, unkeyed),
    /// the busiest IPs by bytes, and one history point per report.
    #[test]
    fn the_live_view_has_every_byte_the_busiest_ips_and_each_report() {
        let store = Store::new(1_000, 100);
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        store.apply_report(&[Record::Tx(ip("198.51.100.7"), 5_000), Record::Rx(ip("198.51.100.8"), 300), Record::Unkeyed(7, 9)], 0);
        store.apply_report(&[Record::Tx(ip("198.51.100.9"), 2_000), Record::Rx(ip("198.51.100.7"), 1)], 0);
        let live = store.live(2);
        assert_eq!((live.tx, live.rx), (5_000 + 2_000 + 7, 300 + 1 + 9));
        let rows: Vec<(String, u64)> = live.rows.iter().map(|r| (r.ip.to_string(), r.traffic.tx + r.traffic.rx)).collect();
        assert_eq!(rows, [("198.51.100.7".to_string(), 5_001), ("198.51.100.9".to_string(), 2_000)]);
        assert_eq!(live.tracked, 3);
        let points: Vec<(u64, u64)> = live.history.iter().map(|p| (p.tx, p.rx)).collect();
        assert_eq!(points, [(5_007, 309), (2_000, 1)]);
        assert!(live.history[0].at_ms <= live.history[1].at_ms && live.history[0].at_ms > 0);
        assert_eq!(store.live(0).rows.len(), 0);
        assert_eq!(store.live(10).rows.len(), 3);
    }

    #[test]
    fn an_entry_with_its_key_takes_72_bytes() {
        assert_eq!(std::mem::size_of::<(Key, Entry)>(), 72);
        assert!(std::mem::size_of::<Record>() <= 32, "a report's record");
    }

    #[test]
    fn a_saved_store_restores_every_series_and_sum() {
        let store = Store::new(100, 1000);
        let owner = Owner { pid: 9, comm: Comm::new(b"ssh") };
        store.apply_report(&[Record::Tx(ip("198.51.100.7"), 500), Record::Owner(ip("198.51.100.7"), Box::new(owner))], 0);
        store.apply_report(&[Record::Rx(ip("2001:db8::2"), 50), Record::Unkeyed(3, 4), Record::Tx(ip("198.51.100.7"), 7)], 0);
        let saved = store.save();
        let restored = Store::new(100, 1000);
        restored.restore(&saved);
        assert_eq!(restored.save(), saved);
        let (a, b) = (store.exported(), restored.exported());
        assert_eq!((&a.series, a.unexported_tx, a.unexported_rx), (&b.series, b.unexported_tx, b.unexported_rx));
        assert_eq!(b.series.len(), 1, "198.51.100.7's series goes on");
        assert_eq!(restored.progress().unkeyed_bytes, 7);

        // A smaller cap: the IPs beyond it are folded, their bytes kept.
        let small = Store::new(100, 1);
        small.restore(&saved);
        let e = small.exported();
        let sum = |x: &Exported| x.series.iter().map(|s| s.tx + s.rx).sum::<u64>() + x.unexported_tx + x.unexported_rx;
        assert_eq!(sum(&e), sum(&a), "every byte, on a series or in the sums");
        assert_eq!(e.tracked, 1);
    }

    /// Every counted byte (on an IP or not) goes to the billing period in
    /// force when its report is applied; a finished period is kept, the last
    /// twelve; a restart goes on with the period in force or starts anew.
    #[test]
    fn host_totals_go_to_the_billing_period_in_force() {
        use crate::period::{Periods, Zone};
        let (jan15, feb1, feb10, mar1, apr1) = (1_736_899_200, 1_738_368_000, 1_739_145_600, 1_740_787_200, 1_743_465_600);
        let periods = || Periods { billing_day: 1, zone: Zone::utc() };
        let store = Store::new(0, 100).with_periods(periods(), jan15);
        store.apply_report_at(&[Record::Tx(ip("198.51.100.7"), 100), Record::Unkeyed(5, 6)], 0, jan15);
        store.apply_report_at(&[Record::Rx(ip("198.51.100.7"), 7)], 0, feb1 - 1);
        assert_eq!(store.exported().period, Some(Period { start: 1_735_689_600, end: feb1, tx: 105, rx: 13 }));
        store.apply_report_at(&[Record::Tx(ip("2001:db8::2"), 50)], 0, feb10);
        assert_eq!(store.exported().period, Some(Period { start: feb1, end: mar1, tx: 50, rx: 0 }));
        let saved = store.save();
        let january = Period { start: 1_735_689_600, end: feb1, tx: 105, rx: 13 };
        let a = PeriodIp { ip: ip("198.51.100.7"), tx: 100, rx: 7 };
        assert_eq!(saved.previous, [PastPeriod { period: january, top: vec![a] }], "January's busiest IP kept with the period");
        // Per IP: the bytes of the period in force (198.51.100.7 has none in February).
        let period_of = |saved: &Saved, addr: &str| saved.ips.iter().find(|i| i.ip == ip(addr)).map(|i| i.period);
        assert_eq!((period_of(&saved, "198.51.100.7"), period_of(&saved, "2001:db8::2")), (Some((0, 0)), Some((50, 0))));

        let same = Store::new(0, 100).with_periods(periods(), feb10 + 60);
        same.restore(&saved);
        assert_eq!(same.exported().period.map(|p| (p.tx, p.rx)), Some((50, 0)), "the period goes on");
        same.apply_report_at(&[Record::Tx(ip("2001:db8::2"), 5)], 0, feb10 + 60);
        assert_eq!(period_of(&same.save(), "2001:db8::2"), Some((55, 0)), "and each IP's bytes in it");
        let later = Store::new(0, 100).with_periods(periods(), apr1);
        later.restore(&saved);
        let s = later.save();
        assert_eq!((s.period.start, s.period.tx), (apr1, 0), "a new period");
        assert_eq!(s.previous.iter().map(|p| p.period.start).collect::<Vec<_>>(), [1_735_689_600, feb1], "the saved one is over");
        assert_eq!(s.previous[1].top, [PeriodIp { ip: ip("2001:db8::2"), tx: 50, rx: 0 }], "with its busiest IPs");
        assert_eq!(period_of(&s, "2001:db8::2"), Some((0, 0)), "nothing yet in the new period");
        // Thirteen months on: twelve kept.
        let year = Store::new(0, 100).with_periods(periods(), jan15);
        year.apply_report_at(&[], 0, 1_775_001_600);
        assert_eq!(year.save().previous.len(), PREVIOUS_PERIODS);
    }

    /// A past period keeps its 100 busiest IPs, busiest first, ties by address.
    #[test]
    fn a_past_period_keeps_its_hundred_busiest() {
        let ips: Vec<PeriodIp> = (0..1000u32)
            .map(|i| PeriodIp { ip: IpAddr::V4(std::net::Ipv4Addr::from(0xc633_6400 + i)), tx: u64::from(i % 250), rx: 0 })
            .collect();
        let top = busiest(ips);
        assert_eq!(top.len(), PERIOD_TOP);
        assert!(top.iter().all(|p| p.tx >= 225), "the busiest: {:?}", &top[95..]);
        assert!(top.windows(2).all(|w| (w[0].tx, w[1].ip) >= (w[1].tx, w[0].ip)), "busiest first, ties by address");
        assert!(busiest(vec![PeriodIp { ip: ip("198.51.100.7"), tx: 0, rx: 0 }]).is_empty(), "no bytes, not kept");
    }

    /// The public view of one tracked IP.
    fn view(t: &Totals, ip: IpAddr) -> Traffic {
        let key = Key::from(ip);
        t.traffic(&key, t.ips.get(&key).unwrap())
    }

    #[test]
    fn reports_accumulate_and_interval_resets() {
        let store = Store::new(1 << 20, 1000);
        let owner = Owner { pid: 42, comm: Comm::new(b"curl") };
        store.apply_report(
            &[Record::Tx(ip("198.51.100.7"), 100), Record::Owner(ip("198.51.100.7"), Box::new(owner)), Record::Rx(ip("198.51.100.7"), 7)],
            1,
        );
        store.apply_report(&[Record::Tx(ip("198.51.100.7"), 50), Record::Rx(ip("2001:db8::2"), 900)], 0);
        let interval = store.take_interval(10);
        assert_eq!((interval.active, interval.tx, interval.rx), (2, 150, 907));
        let rows = interval.rows;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].ip, ip("2001:db8::2"), "busiest first");
        assert_eq!((rows[1].traffic.tx, rows[1].traffic.rx, rows[1].traffic.interval_tx), (150, 7, 150));
        assert_eq!(rows[1].traffic.owner, Some(owner));
        assert!(store.take_interval(10).rows.is_empty(), "interval counters reset");
        let totals = store.totals_by_volume();
        assert_eq!(totals[1].traffic.tx, 150, "totals survive the interval reset");
        let progress = store.progress();
        assert_eq!((progress.reports, progress.parse_errors), (2, 1));
    }

    #[test]
    fn series_and_unexported_sums_always_equal_every_counted_byte() {
        // Random reports against small caps and thresholds: IPs cross the
        // threshold, get folded, come back, arrive with every slot exported.
        for (threshold, max_ips, seed) in [(0, 4, 1), (50, 8, 2), (500, 16, 3), (1 << 20, 3, 4), (100, 1, 5)] {
            let store = Store::new(threshold, max_ips);
            let mut random = crate::testing::xorshift(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(seed));
            let mut next = |below: u64| random() % below;
            let (mut tx, mut rx) = (0u64, 0u64);
            for _ in 0..2_000 {
                let mut report = Vec::new();
                for _ in 0..next(6) {
                    let ip = IpAddr::from(std::net::Ipv4Addr::from(0xC612_0000 + next(40) as u32));
                    let bytes = next(300);
                    match next(4) {
                        0 => report.push(Record::Owner(ip, Box::default())),
                        1 => {
                            rx += bytes;
                            report.push(Record::Rx(ip, bytes));
                        }
                        2 if next(20) == 0 => {
                            (tx, rx) = (tx + bytes, rx + 1);
                            report.push(Record::Unkeyed(bytes, 1));
                        }
                        _ => {
                            tx += bytes;
                            report.push(Record::Tx(ip, bytes));
                        }
                    }
                }
                store.apply_report(&report, 0);
                let e = store.exported();
                let series_tx: u64 = e.series.iter().map(|s| s.tx).sum();
                let series_rx: u64 = e.series.iter().map(|s| s.rx).sum();
                assert_eq!((series_tx + e.unexported_tx, series_rx + e.unexported_rx), (tx, rx), "-t {threshold} --max-ips {max_ips}");
                assert!(e.tracked <= max_ips);
            }
        }
    }

    #[test]
    fn an_ip_is_exported_from_the_report_that_passes_the_threshold() {
        let store = Store::new(1000, 1000);
        let a = ip("198.51.100.7");
        store.apply_report(&[Record::Tx(a, 600), Record::Rx(a, 400)], 0);
        {
            let t = store.lock();
            assert_eq!(view(&t, a).exported(), None, "1000 bytes do not exceed 1000");
            assert_eq!((t.unexported_tx, t.unexported_rx), (600, 400));
        }
        store.apply_report(&[Record::Tx(a, 5), Record::Rx(a, 7)], 0);
        store.apply_report(&[Record::Tx(a, 100)], 0);
        let t = store.lock();
        assert_eq!(view(&t, a).exported(), Some((105, 7)), "series from the crossing report on");
        assert_eq!((t.unexported_tx, t.unexported_rx), (600, 400), "earlier bytes stay unexported");
        let (tx, rx) = (view(&t, a).tx, view(&t, a).rx);
        assert_eq!((tx, rx), (705, 407), "series + unexported = everything counted");
    }

    #[test]
    fn threshold_zero_exports_everything_from_the_first_byte() {
        let store = Store::new(0, 1000);
        let a = ip("2001:db8::2");
        store.apply_report(&[Record::Rx(a, 1), Record::Tx(a, 2)], 0);
        let t = store.lock();
        assert_eq!(view(&t, a).exported(), Some((2, 1)));
        assert_eq!((t.unexported_tx, t.unexported_rx), (0, 0));
    }

    #[test]
    fn an_owner_reported_before_the_bytes_is_kept() {
        let store = Store::new(0, 1000);
        let owner = Owner { pid: 9, comm: Comm::new(b"iperf3") };
        store.apply_report(&[Record::Owner(ip("198.51.100.7"), Box::new(owner))], 0);
        assert!(store.totals_by_volume().is_empty(), "no bytes yet, no summary row");
        store.apply_report(&[Record::Tx(ip("198.51.100.7"), 10)], 0);
        assert_eq!(store.totals_by_volume()[0].traffic.owner, Some(owner));
    }

    /// Every byte the store holds: the series plus the unexported sums.
    fn all_bytes(store: &Store) -> u64 {
        let e = store.exported();
        e.series.iter().map(|s| s.tx + s.rx).sum::<u64>() + e.unexported_tx + e.unexported_rx
    }

    #[test]
    fn a_full_table_evicts_the_quietest_exported_or_not_and_keeps_every_byte() {
        let store = Store::new(100, 10);
        let early: Vec<IpAddr> = (0..5).map(|i| ip(&format!("198.51.100.{i}"))).collect();
        for e in &early {
            store.apply_report(&[Record::Tx(*e, 1000)], 0); // past -t: exported, then silent
        }
        let mut sent = 5000;
        for i in 0..1000u32 {
            let small = IpAddr::from(std::net::Ipv4Addr::from(0xC612_0000 + i));
            store.apply_report(&[Record::Rx(small, 7)], 0);
            sent += 7;
        }
        let e = store.exported();
        assert!(e.tracked <= 10, "{} tracked", e.tracked);
        assert!(e.series.is_empty(), "the early IPs went silent and gave way: {:?}", e.series);
        assert_eq!(e.evicted_series, 5);
        assert_eq!(all_bytes(&store), sent, "all families together equal what was counted");
        assert!(e.folded_ips >= 990, "{}", e.folded_ips);
        let t = store.lock();
        assert!(t.ips.contains_key(&Key::from(IpAddr::from(std::net::Ipv4Addr::from(0xC612_0000 + 999)))), "the newest stays");
    }

    #[test]
    fn a_table_full_of_exported_ips_still_gives_a_new_ip_its_series() {
        let store = Store::new(0, 2);
        store.apply_report(&[Record::Tx(ip("198.51.100.1"), 1), Record::Tx(ip("198.51.100.2"), 1)], 0);
        store.apply_report(&[Record::Tx(ip("198.51.100.3"), 5), Record::Owner(ip("198.51.100.3"), Box::default())], 0);
        let e = store.exported();
        assert!(e.series.iter().any(|s| s.ip == ip("198.51.100.3") && s.tx == 5), "{:?}", e.series);
        assert_eq!((e.tracked, e.evicted_series, e.folded_ips, e.unexported_tx), (2, 1, 1, 1));
        assert_eq!(all_bytes(&store), 7);
    }

    #[test]
    fn busy_peers_keep_their_series_through_a_flood_of_new_sources() {
        let store = Store::new(0, 200);
        let busy: Vec<IpAddr> = (0..10).map(|i| ip(&format!("2001:db8::{i}"))).collect();
        let mut fresh = 0u32;
        for _ in 0..100 {
            // The flood's records come first: a busy peer's bytes of this report are not in yet.
            let mut report: Vec<Record> = (0..500)
                .map(|_| {
                    fresh += 1;
                    Record::Rx(IpAddr::from(std::net::Ipv4Addr::from(0xC612_0000 + fresh)), 60)
                })
                .collect();
            report.extend(busy.iter().map(|b| Record::Tx(*b, 1000)));
            store.apply_report(&report, 0);
        }
        let e = store.exported();
        for b in &busy {
            let series = e.series.iter().find(|s| s.ip == *b).map(|s| s.tx);
            assert_eq!(series, Some(100 * 1000), "{b}: every byte on its series since the first");
        }
        assert!(e.evicted_series > 40_000, "the flood made room for itself: {}", e.evicted_series);
        assert_eq!(all_bytes(&store), 100 * (500 * 60 + 10 * 1000));
    }

    #[test]
    fn an_interval_keeps_only_the_busiest_rows_but_sums_them_all() {
        let store = Store::new(0, 1000);
        let volumes = [("198.51.100.1", 5), ("198.51.100.2", 50), ("198.51.100.3", 7), ("198.51.100.4", 50), ("2001:db8::1", 1)];
        let records: Vec<Record> = volumes.iter().map(|(a, v)| Record::Tx(ip(a), *v)).collect();
        store.apply_report(&records, 0);
        let interval = store.take_interval(2);
        let shown: Vec<IpAddr> = interval.rows.iter().map(|r| r.ip).collect();
        assert_eq!(shown, [ip("198.51.100.2"), ip("198.51.100.4")], "busiest first, a tie by address");
        assert_eq!((interval.active, interval.tx, interval.rx, interval.tracked), (5, 113, 0, 5));
        assert_eq!(store.take_interval(0).active, 0, "every interval counter was reset, not only the rows shown");
    }

    #[test]
    fn comm_is_truncated_to_the_kernel_limit() {
        assert_eq!(Comm::new(b"a-very-long-process-name").display(), "a-very-long-proc");
    }

    #[test]
    fn hostile_names_are_shown_escaped() {
        for (name, shown) in [
            (&b"\n@rx[::]: 9999"[..], "\\x0a@rx[::]: 9999"),
            (b"a)\n@end\n", "a)\\x0a@end\\x0a"),
            (b"\x1b[2J\\x41\xff", "\\x1b[2J\\\\x41\\xff"),
            (b"\xe4\xb8\xad\xc2\x85", "\u{4e2d}\\xc2\\x85"), // 中, then U+0085 (a C1 control)
            (b"we\"ird, (x)", "we\"ird, (x)"),
        ] {
            assert_eq!(Comm::new(name).display(), shown, "{name:?}");
        }
    }
}
