//! One run of the nftables backend: the table set up at attach (a table a
//! crashed run left is harvested, then replaced in the same transaction as
//! the new one is created; a live monitor's table is never touched), read
//! every interval, and deleted at the end.
//!
//! Each harvest reads the four sets and the two counters of bytes a full
//! set refused, and turns them into a report. Where the kernel can (Linux
//! 6.5+) every read also zeroes what it read, atomically per counter, so a
//! byte is handed over exactly once; elsewhere the previous reading is
//! subtracted, which needs the last value of each element in memory.
//!
//! A dump of a set that packets are filling is not a snapshot: the kernel
//! resumes each part of it by position, so an element can be missed (or
//! met twice) while new peers arrive or the hash table grows. Nothing is
//! inferred from a dump's sum therefore: a missed element keeps its bytes
//! for the next harvest (read and reset), a second meeting reads what came
//! in between (zero, mostly), and in subtracting mode each element is
//! counted once per dump and remembered until it must have timed out.
//! Bytes on no peer are exactly the refused ones (`Record::Unkeyed`).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use super::socket::Socket;
use super::table::{self, Layout, REFUSED};
use super::{FAMILY_INET, KEYS_PER_REQUEST, OTHERS, Read, TABLE, dump_keys_with_bytes, dump_set, flowtables, read_counter, reset_elements};
use crate::backend::in_process::Counter;
use crate::filter::canonical;
use crate::store::Record;

pub struct Harvester {
    layout: Layout,
    interval: Duration,
    socket: Option<Socket>,
    read: Read,
    /// Every set of peers and its direction (0 tx, 1 rx).
    sets: Vec<(String, usize)>,
    /// [`Read::Keep`] only: each set's last reading per peer (with the
    /// harvest that last met it), and each refused counter's.
    last_sets: Vec<HashMap<IpAddr, Reading>>,
    last_refused: [u64; 2],
    /// Harvests so far.
    harvests: u64,
    /// What a crashed run's table held, handed over with the first harvest.
    leftover: Vec<Record>,
}

impl Harvester {
    pub fn new(layout: Layout, interval: Duration) -> Harvester {
        Harvester {
            layout,
            interval,
            socket: None,
            read: Read::AndReset,
            sets: table::sets(),
            last_sets: table::sets().iter().map(|_| HashMap::new()).collect(),
            last_refused: [0; 2],
            harvests: 0,
            leftover: Vec::new(),
        }
    }

    fn socket(&mut self) -> Result<&mut Socket, String> {
        self.socket.as_mut().ok_or_else(|| "not attached".to_string())
    }

    /// A table of ours left by a run that is gone: harvest it, then replace
    /// it. A live monitor's: refuse.
    fn take_over_stale_table(&mut self, socket: &mut Socket) -> Result<bool, String> {
        let Some(note) = table::find(socket, TABLE).map_err(|e| explain(&e))? else { return Ok(false) };
        let owner = table::owner_pid(&note);
        if let Some(pid) = owner.filter(|&pid| pid != std::process::id() && is_a_monitor(pid)) {
            return Err(format!(
                "table inet {TABLE} belongs to a monitor that is still running (pid {pid}) in this \
                 network namespace: stop it first (two monitors cannot share the kernel's counters)"
            ));
        }
        let who = owner.map_or_else(|| "an unknown program".to_string(), |pid| format!("an earlier run (pid {pid})"));
        let mut leftover = Vec::new();
        match read_leftover(socket, &mut leftover) {
            Some(bytes) => eprintln!(
                "found table inet {TABLE} left by {who}: the {bytes} bytes it counted after that run's \
                 last harvest are counted now, and it is replaced"
            ),
            None => eprintln!(
                "found table inet {TABLE} left by {who}: replaced; what it counted after that run's last \
                 harvest cannot be told apart on this kernel (no read-and-reset) and is not counted"
            ),
        }
        self.leftover = leftover;
        Ok(true)
    }

    /// Whether set counters can be read and zeroed in one step here: asked
    /// of an address that is never in a set (the answer is "no such
    /// element" where the kernel can, "not supported" where it cannot).
    fn choose_read(&mut self) -> Result<(), String> {
        let socket = self.socket()?;
        let never = [IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)];
        let first = table::sets().swap_remove(0).0;
        match reset_elements(socket, TABLE, &first, &never, &mut Vec::new()) {
            Ok(()) => self.read = Read::AndReset,
            Err(err) if matches!(err.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL)) => {
                eprintln!("this kernel cannot read and zero set counters in one step (Linux 6.5+): each harvest subtracts the previous one");
                self.read = Read::Keep;
            }
            Err(err) => return Err(explain(&err)),
        }
        Ok(())
    }

    /// Bytes a full set refused since the last harvest (`dir`: 0 tx, 1 rx).
    fn refused_since_last(&mut self, dir: usize) -> io::Result<u64> {
        let read = self.read;
        let socket = self.socket.as_mut().ok_or_else(|| io::Error::other("not attached"))?;
        let now = read_counter(socket, TABLE, REFUSED[dir], read)?;
        Ok(match read {
            Read::AndReset => now,
            Read::Keep => since(&mut self.last_refused[dir], now),
        })
    }

    /// Adds the records of set number `index` since the last harvest.
    fn set_since_last(&mut self, index: usize, report: &mut Vec<Record>) -> io::Result<()> {
        let (set, dir) = self.sets[index].clone();
        let socket = self.socket.as_mut().ok_or_else(|| io::Error::other("not attached"))?;
        if self.read == Read::AndReset {
            return read_and_zero(socket, &set, dir, report).map(drop);
        }
        let (elements, _unreadable) = dump_set(socket, FAMILY_INET, TABLE, &set, Read::Keep)?;
        let counted = self.subtract_last(index, elements);
        report.extend(counted.into_iter().filter(|(_, bytes)| *bytes > 0).map(|(ip, bytes)| record(dir, ip, bytes)));
        Ok(())
    }

    /// A dump's readings less the last ones, each element once; the
    /// readings kept for the next harvest.
    fn subtract_last(&mut self, index: usize, elements: Vec<(IpAddr, u64)>) -> Vec<(IpAddr, u64)> {
        let harvest = self.harvests;
        let lifetime = self.lifetime_in_harvests();
        let last = &mut self.last_sets[index];
        let mut counted = Vec::with_capacity(elements.len());
        for (ip, now) in elements {
            let bytes = match last.get_mut(&ip) {
                Some(seen) if seen.harvest == harvest => 0, // met twice in one dump
                Some(seen) => {
                    seen.harvest = harvest;
                    since(&mut seen.bytes, now)
                }
                None => {
                    last.insert(ip, Reading { bytes: now, harvest });
                    now
                }
            };
            counted.push((ip, bytes));
        }
        // An element not met for longer than it can live has timed out;
        // one a dump missed is kept, or its whole count would come again.
        last.retain(|_, seen| harvest - seen.harvest <= lifetime);
        counted
    }

    /// Harvests an element outlives its last packet by, at the least.
    fn lifetime_in_harvests(&self) -> u64 {
        let interval = self.interval.as_secs_f64().max(0.001);
        (self.layout.timeout.as_secs_f64() / interval).ceil() as u64 + 1
    }
}

/// An element's last reading and the harvest that made it.
struct Reading {
    bytes: u64,
    harvest: u64,
}

/// `now - *last` for a counter that only grows unless it was created anew
/// (then all of `now` is new); `*last` becomes `now`.
fn since(last: &mut u64, now: u64) -> u64 {
    let new = if now >= *last { now - *last } else { now };
    *last = now;
    new
}

impl Counter for Harvester {
    fn attach(&mut self) -> Result<(), String> {
        let mut socket = open_socket()?;
        if let Ok(found) = flowtables(&mut socket) {
            for flowtable in found {
                eprintln!(
                    "warning: flowtable {flowtable} offloads established flows past the nftables \
                     hooks: their packets after the first few are not counted; turn offloading off \
                     (OpenWrt: uci set firewall.@defaults[0].flow_offloading=0) or {OTHERS}"
                );
            }
        }
        let replace = self.take_over_stale_table(&mut socket)?;
        table::create(&mut socket, TABLE, &self.layout, replace).map_err(|e| explain(&e))?;
        self.socket = Some(socket);
        self.choose_read()
    }

    fn harvest(&mut self, report: &mut Vec<Record>) -> Result<(), String> {
        self.harvests += 1;
        report.append(&mut self.leftover);
        for index in 0..self.sets.len() {
            self.set_since_last(index, report).map_err(|e| lost_table(&e))?;
        }
        let mut refused = [0; 2];
        for (dir, bytes) in refused.iter_mut().enumerate() {
            *bytes = self.refused_since_last(dir).map_err(|e| lost_table(&e))?;
        }
        if refused != [0, 0] {
            report.push(Record::Unkeyed(refused[0], refused[1]));
        }
        Ok(())
    }

    fn detach(&mut self) -> Result<(), String> {
        let socket = self.socket()?;
        table::delete(socket, TABLE).map_err(|e| format!("could not delete table inet {TABLE}: {e}"))
    }
}

/// Reads and zeroes what a crashed run's table holds since that run's last
/// harvest, into `report` (its bytes on no peer included); the bytes, or
/// `None` where counters cannot be read and zeroed in one step (that run
/// subtracted its readings, which are lost with it).
fn read_leftover(socket: &mut Socket, report: &mut Vec<Record>) -> Option<u64> {
    let mut refused = [0; 2];
    for (dir, name) in REFUSED.iter().enumerate() {
        refused[dir] = read_counter(socket, TABLE, name, Read::AndReset).unwrap_or(0);
    }
    let mut keyed = 0;
    for (set, dir) in table::sets() {
        match read_and_zero(socket, &set, dir, report) {
            Ok(bytes) => keyed += bytes,
            Err(err) if matches!(err.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL)) => return None,
            Err(_) => continue, // an older layout
        }
    }
    if refused != [0, 0] {
        report.push(Record::Unkeyed(refused[0], refused[1]));
    }
    Some(keyed + refused[0] + refused[1])
}

/// Which elements of `set` have bytes (a dump that leaves the counters
/// be), then each of those read and zeroed by key, a request's worth at a
/// time (memory for the keys and the report only); adds their records to
/// `report` and returns their bytes.
fn read_and_zero(socket: &mut Socket, set: &str, dir: usize, report: &mut Vec<Record>) -> io::Result<u64> {
    let keys = dump_keys_with_bytes(socket, TABLE, set)?;
    report.reserve(keys.len());
    let (mut counted, mut bytes) = (Vec::with_capacity(KEYS_PER_REQUEST), 0);
    for chunk in keys.chunks(KEYS_PER_REQUEST) {
        counted.clear();
        reset_elements(socket, TABLE, set, chunk, &mut counted)?;
        for &(ip, n) in counted.iter().filter(|(_, n)| *n > 0) {
            bytes += n;
            report.push(record(dir, ip, n));
        }
    }
    Ok(bytes)
}

/// A set's reading as a report record (`dir`: 0 tx, 1 rx).
fn record(dir: usize, ip: IpAddr, bytes: u64) -> Record {
    let ip = canonical(ip);
    if dir == 0 { Record::Tx(ip, bytes) } else { Record::Rx(ip, bytes) }
}

/// Whether `pid` is a running ip_traffic_monitor_cli: its command name (as
/// the kernel truncates it to 15 bytes) and a state other than zombie (a
/// killed monitor whose parent has not reaped it yet).
fn is_a_monitor(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { return false };
    let state = stat[close + 1..].split_whitespace().next();
    &stat[open + 1..close] == "ip_traffic_moni" && !matches!(state, Some("Z" | "X"))
}

pub(super) fn open_socket() -> Result<Socket, String> {
    Socket::open().map_err(|e| match e.raw_os_error() {
        Some(libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT) => {
            format!("this kernel has no nfnetlink (CONFIG_NETFILTER_NETLINK); {OTHERS}")
        }
        _ => format!("cannot open a netfilter netlink socket: {e}; {OTHERS}"),
    })
}

/// One line for a failed table setup: what is missing, and the way out.
pub(super) fn explain(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => format!(
            "not permitted to create an nftables table: needs CAP_NET_ADMIN in this network namespace \
             (run as root; a container may not grant it); {OTHERS}"
        ),
        Some(libc::ENOENT | libc::EOPNOTSUPP | libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT) => format!(
            "this kernel lacks a part of nf_tables the backend needs (nf_tables with the inet family, \
             nft_set_hash, nft_dynset, nft_counter, nft_objref; Linux 5.7+): try modprobe nf_tables ({err}); {OTHERS}"
        ),
        _ => format!("nftables refused the table: {err}; {OTHERS}"),
    }
}

fn lost_table(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::ENOENT) => format!(
            "table inet {TABLE} is gone (deleted by someone else, e.g. `nft flush ruleset` in a \
             firewall reload): the bytes since the last harvest went with it; setting it up again"
        ),
        _ => format!("reading table inet {TABLE} failed: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Where the kernel cannot read and zero (before 6.5): each dump's
    /// readings less the last ones, an element met twice in one dump
    /// counted once, one a dump missed remembered, one gone for longer
    /// than it can live forgotten.
    #[test]
    fn subtracting_readings_counts_each_byte_once_whatever_the_dumps_miss() {
        let layout = Layout { size: 16, timeout: Duration::from_secs(4), skipped: vec![], iface: None };
        let mut h = Harvester::new(layout, Duration::from_secs(1)); // an element lives 4 harvests at least
        h.read = Read::Keep;
        let (a, b) = (ip("198.51.100.7"), ip("2001:db8::2"));
        h.harvests = 1;
        assert_eq!(h.subtract_last(0, vec![(a, 100), (b, 50)]), [(a, 100), (b, 50)]);
        h.harvests = 2;
        assert_eq!(h.subtract_last(0, vec![(a, 250), (a, 260)]), [(a, 150), (a, 0)], "met twice: counted once; b missed");
        h.harvests = 3;
        // a's 10 bytes between its two meetings come now; b's last reading was kept.
        assert_eq!(h.subtract_last(0, vec![(a, 260), (b, 70)]), [(a, 10), (b, 20)]);
        h.harvests = 9;
        assert!(h.last_sets[0].contains_key(&a));
        assert_eq!(h.subtract_last(0, vec![(b, 75)]), [(b, 5)]);
        assert!(!h.last_sets[0].contains_key(&a), "not met for 6 harvests: it timed out");
        h.harvests = 10;
        assert_eq!(h.subtract_last(0, vec![(a, 30)]), [(a, 30)], "created anew: all of it is new");
    }

    #[test]
    fn each_setup_failure_says_what_is_missing_and_the_other_backends() {
        for (errno, says) in [
            (libc::EPERM, "CAP_NET_ADMIN"),
            (libc::ENOENT, "lacks a part of nf_tables"),
            (libc::EOPNOTSUPP, "lacks a part of nf_tables"),
            (libc::EINVAL, "refused the table"),
        ] {
            let line = explain(&io::Error::from_raw_os_error(errno));
            assert!(line.contains(says) && line.ends_with("use -b bpftrace or -b iftop"), "{errno}: {line}");
            assert!(!line.contains('\n'));
        }
        assert!(lost_table(&io::Error::from_raw_os_error(libc::ENOENT)).contains("is gone"));
    }

    #[test]
    fn a_counter_that_restarted_counts_from_its_new_start() {
        let mut last = 0;
        assert_eq!(since(&mut last, 100), 100);
        assert_eq!(since(&mut last, 250), 150);
        assert_eq!(since(&mut last, 250), 0);
        assert_eq!(since(&mut last, 40), 40, "the element was created anew");
        assert_eq!(last, 40);
    }
}
