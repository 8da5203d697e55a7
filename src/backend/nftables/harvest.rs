//! One run of the nftables backend: the table set up at attach (a table a
//! crashed run left is read, then replaced in the same transaction as the
//! new one is created; a live monitor's table is never touched), read every
//! interval, and read a last time and deleted at the end.
//!
//! Each harvest reads the generation of sets the rules fed until the last
//! harvest ([`table::Generation`]): nothing has written to it for a whole
//! interval, so its dump is a snapshot and every element is read once,
//! whole. Then one transaction makes that generation anew, empty, and points
//! the rules at it; the one they leave is read at the next harvest. A byte
//! is so handed over one to two intervals after its packet, exactly once,
//! and a harvest costs what the last interval's peers cost, whatever the
//! table held before. The counters of bytes a full set refused are read and
//! zeroed in one step (`Record::Unkeyed`).

use std::io;
use std::net::IpAddr;

use super::socket::Socket;
use super::table::{self, Generation, Layout, REFUSED};
use super::{FAMILY_INET, OTHERS, TABLE, dump_set, flowtables, take_counter};
use crate::backend::in_process::Counter;
use crate::filter::canonical;
use crate::store::Record;

pub struct Harvester {
    layout: Layout,
    /// The first for everything, all of them for reading sets ([`readers`]);
    /// none before attach.
    sockets: Vec<Socket>,
    /// The generation the rules feed.
    active: Generation,
    /// What a crashed run's table held, handed over with the first harvest.
    leftover: Vec<Record>,
}

impl Harvester {
    pub fn new(layout: Layout) -> Harvester {
        Harvester { layout, sockets: Vec::new(), active: Generation::A, leftover: Vec::new() }
    }

    fn sockets(&mut self) -> Result<&mut [Socket], String> {
        if self.sockets.is_empty() { Err("not attached".to_string()) } else { Ok(&mut self.sockets) }
    }

    /// A table of ours left by a run that is gone: read it, then replace
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
        let bytes = read_everything(std::slice::from_mut(socket), &mut leftover);
        eprintln!(
            "found table inet {TABLE} left by {who}: the {bytes} bytes it counted after that run's \
             last harvest are counted now, and it is replaced"
        );
        self.leftover = leftover;
        Ok(true)
    }
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
        self.active = Generation::A;
        self.sockets = vec![socket];
        for _ in 1..readers() {
            self.sockets.push(open_socket()?);
        }
        Ok(())
    }

    /// Reads the generation the rules left at the last harvest, then makes
    /// it anew and points the rules at it. The records are handed over only
    /// when that succeeded: a run that dies before leaves them in the table,
    /// for the next run to find.
    fn harvest(&mut self, report: &mut Vec<Record>) -> Result<(), String> {
        let retired = self.active.other();
        let layout = self.layout.clone();
        let sockets = self.sockets()?;
        read_generation(sockets, retired, report).map_err(|e| lost_table(&e))?;
        read_refused(&mut sockets[0], report).map_err(|e| lost_table(&e))?;
        table::swap(&mut sockets[0], TABLE, &layout, retired).map_err(|e| lost_table(&e))?;
        self.active = retired;
        report.append(&mut self.leftover);
        Ok(())
    }

    /// Reads both generations (what came since the last harvest), then
    /// deletes the table.
    fn detach(&mut self, report: &mut Vec<Record>) -> Result<(), String> {
        report.append(&mut self.leftover);
        let sockets = self.sockets()?;
        read_everything(sockets, report);
        table::delete(&mut sockets[0], TABLE).map_err(|e| format!("could not delete table inet {TABLE}: {e}"))
    }
}

/// Sets read at once, each by a thread of its own with its own socket: the
/// kernel fills a dump's messages (about 1.5 µs per element) on the CPU of
/// the thread that asks, so a harvest of many peers takes its time divided
/// among the CPUs.
fn readers() -> usize {
    // (Not available_parallelism, whose cgroup parsing costs the static
    // binary 16 KiB.) SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(online).unwrap_or(1).clamp(1, 4)
}

/// Adds the records of every set of `generation` to `report`, the sets
/// shared among `sockets`; returns their bytes.
fn read_generation(sockets: &mut [Socket], generation: Generation, report: &mut Vec<Record>) -> io::Result<u64> {
    let sets = table::sets(generation);
    let n = sockets.len();
    std::thread::scope(|scope| {
        let mut readers = Vec::new();
        // Every n-th set to each socket: the peers of one direction and
        // family (all of a flood's) are spread over all of them.
        let mut shares = sockets.iter_mut().enumerate().map(|(i, socket)| (socket, sets.iter().skip(i).step_by(n)));
        // The first share is read on this thread, the others beside it.
        let Some((own_socket, own_sets)) = shares.next() else { return Ok(0) };
        for (socket, share) in shares {
            let reader = std::thread::Builder::new().stack_size(64 << 10).spawn_scoped(scope, move || read_sets(socket, share));
            readers.push(reader?);
        }
        let mut bytes = read_sets(own_socket, own_sets).map(|(records, bytes)| {
            report.extend(records);
            bytes
        })?;
        for reader in readers {
            let (records, more) = reader.join().map_err(|_| io::Error::other("a set reader failed"))??;
            report.extend(records);
            bytes += more;
        }
        Ok(bytes)
    })
}

/// The records of `sets` (`(name, direction)`), and their bytes.
fn read_sets<'a>(socket: &mut Socket, sets: impl Iterator<Item = &'a (String, usize)>) -> io::Result<(Vec<Record>, u64)> {
    let (mut records, mut bytes) = (Vec::new(), 0);
    for (set, dir) in sets {
        let (elements, _unreadable) = dump_set(socket, FAMILY_INET, TABLE, set)?;
        records.reserve(elements.len());
        for (ip, n) in elements.into_iter().filter(|(_, n)| *n > 0) {
            bytes += n;
            records.push(record(*dir, ip, n));
        }
    }
    Ok((records, bytes))
}

/// Adds the bytes the full sets refused since the last read (and zeroes
/// them) to `report`; returns them.
fn read_refused(socket: &mut Socket, report: &mut Vec<Record>) -> io::Result<u64> {
    let mut refused = [0; 2];
    for (dir, name) in REFUSED.iter().enumerate() {
        refused[dir] = take_counter(socket, TABLE, name)?;
    }
    if refused != [0, 0] {
        report.push(Record::Unkeyed(refused[0], refused[1]));
    }
    Ok(refused[0] + refused[1])
}

/// Everything the table holds that no harvest handed over: both
/// generations and the refused bytes, into `report`; their bytes. What
/// cannot be read (a table of an older layout) is left out.
fn read_everything(sockets: &mut [Socket], report: &mut Vec<Record>) -> u64 {
    let mut bytes = read_refused(&mut sockets[0], report).unwrap_or(0);
    for generation in [Generation::A, Generation::B] {
        bytes += read_generation(sockets, generation, report).unwrap_or(0);
    }
    bytes
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
}
