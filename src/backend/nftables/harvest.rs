//! One run of the nftables backend: the table set up at attach (a table a
//! crashed run left is harvested, then replaced in the same transaction as
//! the new one is created; a live monitor's table is never touched), read
//! every interval, and deleted at the end.
//!
//! Each harvest reads the two totals first, then the four sets, and turns
//! them into a report. Where the kernel can (Linux 6.5+) every read also
//! zeroes what it read, atomically per counter, so a byte is handed over
//! exactly once; elsewhere the previous reading is subtracted, which needs
//! the last value of each element in memory.
//!
//! Bytes on no peer: a full set refuses new peers, and a peer whose
//! element timed out before a harvest read it takes its last bytes along;
//! both are still in the direction's total. With the totals read before
//! the sets, `total - keyed` read now can only fall short of what truly went
//! to no peer (bytes counted between the two reads show up in the sets
//! only), never exceed it; so the largest such difference seen is reported
//! as unkeyed (`Record::Unkeyed`), and equals the truth once traffic pauses.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;

use super::socket::Socket;
use super::table::{self, Layout, SETS, TOTALS};
use super::{FAMILY_INET, OTHERS, Read, TABLE, dump_set, flowtables, read_counter};
use crate::backend::in_process::Counter;
use crate::filter::canonical;
use crate::store::Record;

pub struct Harvester {
    layout: Layout,
    socket: Option<Socket>,
    read: Read,
    /// [`Read::Keep`] only: each set's last reading per peer, and each total's.
    last_sets: [HashMap<IpAddr, u64>; 4],
    last_totals: [u64; 2],
    /// Per direction (tx, rx), since attach: the totals' bytes, the bytes
    /// handed over on a peer, and those reported as on no peer.
    total: [u64; 2],
    keyed: [u64; 2],
    unkeyed: [u64; 2],
    /// What a crashed run's table held, handed over with the first harvest.
    leftover: Vec<Record>,
}

impl Harvester {
    pub fn new(layout: Layout) -> Harvester {
        Harvester {
            layout,
            socket: None,
            read: Read::AndReset,
            last_sets: Default::default(),
            last_totals: [0; 2],
            total: [0; 2],
            keyed: [0; 2],
            unkeyed: [0; 2],
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

    /// Whether set counters can be read and zeroed in one step here: tried
    /// on the new table's first set, whose reading joins the first harvest.
    fn choose_read(&mut self) -> Result<(), String> {
        let socket = self.socket()?;
        match dump_set(socket, FAMILY_INET, TABLE, SETS[0], Read::AndReset) {
            Ok((elements, _)) => {
                // In the tx total too: they count as keyed at the first harvest.
                for (ip, bytes) in elements.into_iter().filter(|(_, n)| *n > 0) {
                    self.keyed[0] += bytes;
                    self.leftover.push(Record::Tx(canonical(ip), bytes));
                }
                self.read = Read::AndReset;
            }
            Err(err) if matches!(err.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL)) => {
                eprintln!("this kernel cannot read and zero set counters in one step (Linux 6.5+): each harvest subtracts the previous one");
                self.read = Read::Keep;
            }
            Err(err) => return Err(explain(&err)),
        }
        Ok(())
    }

    /// Bytes since the last harvest of counter `name` (`dir`: 0 tx, 1 rx).
    fn total_since_last(&mut self, dir: usize) -> io::Result<u64> {
        let read = self.read;
        let socket = self.socket.as_mut().ok_or_else(|| io::Error::other("not attached"))?;
        let now = read_counter(socket, TABLE, TOTALS[dir], read)?;
        Ok(match read {
            Read::AndReset => now,
            Read::Keep => since(&mut self.last_totals[dir], now),
        })
    }

    /// Adds the records of set number `index` since the last harvest;
    /// returns their bytes.
    fn set_since_last(&mut self, index: usize, report: &mut Vec<Record>) -> io::Result<u64> {
        let read = self.read;
        let socket = self.socket.as_mut().ok_or_else(|| io::Error::other("not attached"))?;
        let (elements, _unreadable) = dump_set(socket, FAMILY_INET, TABLE, SETS[index], read)?;
        let last = &mut self.last_sets[index];
        let mut next = HashMap::new();
        let mut sum = 0;
        for (ip, now) in elements {
            let bytes = match read {
                Read::AndReset => now,
                Read::Keep => {
                    let mut previous = last.get(&ip).copied().unwrap_or(0);
                    next.insert(ip, now);
                    since(&mut previous, now)
                }
            };
            if bytes > 0 {
                sum += bytes;
                let ip = canonical(ip);
                report.push(if index < 2 { Record::Tx(ip, bytes) } else { Record::Rx(ip, bytes) });
            }
        }
        if read == Read::Keep {
            // Elements that timed out are gone from the dump, and from here.
            *last = next;
        }
        Ok(sum)
    }
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
        report.append(&mut self.leftover);
        let mut totals = [0; 2];
        for (dir, total) in totals.iter_mut().enumerate() {
            *total = self.total_since_last(dir).map_err(|e| lost_table(&e))?;
        }
        let mut keyed = [0; 2];
        for index in 0..SETS.len() {
            keyed[index / 2] += self.set_since_last(index, report).map_err(|e| lost_table(&e))?;
        }
        let mut on_no_peer = [0; 2];
        for dir in 0..2 {
            self.total[dir] += totals[dir];
            self.keyed[dir] += keyed[dir];
            let gap = self.total[dir].saturating_sub(self.keyed[dir]);
            on_no_peer[dir] = gap.saturating_sub(self.unkeyed[dir]);
            self.unkeyed[dir] += on_no_peer[dir];
        }
        if on_no_peer != [0, 0] {
            report.push(Record::Unkeyed(on_no_peer[0], on_no_peer[1]));
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
    let mut totals = [0; 2];
    for (dir, name) in TOTALS.iter().enumerate() {
        totals[dir] = read_counter(socket, TABLE, name, Read::AndReset).unwrap_or(0);
    }
    let mut keyed = [0; 2];
    for (index, set) in SETS.iter().enumerate() {
        let elements = match dump_set(socket, FAMILY_INET, TABLE, set, Read::AndReset) {
            Ok((elements, _)) => elements,
            Err(err) if matches!(err.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL)) => return None,
            Err(_) => continue, // an older layout
        };
        for (ip, n) in elements.into_iter().filter(|(_, n)| *n > 0) {
            keyed[index / 2] += n;
            let ip = canonical(ip);
            report.push(if index < 2 { Record::Tx(ip, n) } else { Record::Rx(ip, n) });
        }
    }
    let on_no_peer = [totals[0].saturating_sub(keyed[0]), totals[1].saturating_sub(keyed[1])];
    if on_no_peer != [0, 0] {
        report.push(Record::Unkeyed(on_no_peer[0], on_no_peer[1]));
    }
    Some(keyed[0] + keyed[1] + on_no_peer[0] + on_no_peer[1])
}

/// Whether `pid` is a running ip_traffic_monitor_cli (its command name, as
/// the kernel truncates it to 15 bytes).
fn is_a_monitor(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim_end() == "ip_traffic_moni")
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
