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
//! zeroed in one step (`Record::Unkeyed`), and so are the counters of its
//! lanes (`super::lanes`), whose packets, with its elements', choose the
//! lanes of the generation the swap makes anew.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use super::journal::{Entry, Journal};
use super::lanes::Traffic;
use super::socket::Socket;
use super::table::{self, Generation, HARVESTS, Layout, Stamp};
use super::{FAMILY_INET, OTHERS, TABLE, dump_counters, dump_set, flowtables, read_counter_values};
use crate::backend::in_process::Counter;
use crate::filter::canonical;
use crate::store::{HarvestMarks, Record};

/// A journal this long asks for the state to be saved (which empties it),
/// before the periodic save: a flood of new peers does not grow it for long.
const JOURNAL_SAVE_AT: u64 = 4 << 20;

pub struct Harvester {
    layout: Layout,
    /// The first for everything, all of them for reading sets ([`readers`]);
    /// none before attach.
    sockets: Vec<Socket>,
    /// The generation the rules feed.
    active: Generation,
    /// The number of the last harvest whose swap went through (the table's).
    number: u64,
    /// What a crashed run's table and journal held, handed over with the
    /// first harvest.
    leftover: Vec<Record>,
    /// Where harvests are written down (`--state`), and the open journal.
    journal_path: Option<PathBuf>,
    journal: Option<Journal>,
    /// The journal has asked for a save since it was last emptied.
    asked_to_save: bool,
    /// This host's own addresses, which the table counts (only this host's
    /// looped-back multicast and broadcast come from one) and no report
    /// hands over: see [`crate::filter::AddressFilter::this_host`].
    this_host: Vec<IpAddr>,
}

/// A table of ours left by a run that is gone.
struct StaleTable {
    /// Its stamp (`None`: a table of an older layout, without one).
    stamp: Option<Stamp>,
    /// Made with the layout of this run: it is taken up as it is.
    same_layout: bool,
    /// Who left it, for the line that says what became of it.
    who: String,
}

impl Harvester {
    /// A harvester of `layout` that writes its harvests down in `journal`
    /// (with `--state`) before the kernel forgets them.
    pub fn new(layout: Layout, journal: Option<PathBuf>) -> Harvester {
        Harvester {
            layout,
            sockets: Vec::new(),
            active: Generation::A,
            number: 0,
            leftover: Vec::new(),
            journal_path: journal,
            journal: None,
            asked_to_save: false,
            this_host: Vec::new(),
        }
    }

    /// This harvester, handing over nothing counted for `this_host`.
    pub fn without(mut self, this_host: Vec<IpAddr>) -> Harvester {
        self.this_host = this_host;
        self
    }

    /// Drops what `report` holds for this host's own addresses.
    fn drop_this_host(&self, report: &mut Vec<Record>) {
        if !self.this_host.is_empty() {
            report.retain(|record| !matches!(record, Record::Tx(ip, _) | Record::Rx(ip, _) if self.this_host.contains(ip)));
        }
    }

    fn sockets(&mut self) -> Result<&mut [Socket], String> {
        if self.sockets.is_empty() { Err("not attached".to_string()) } else { Ok(&mut self.sockets) }
    }

    /// A table of ours left by a run that is gone; a live monitor's: refuse.
    fn find_stale_table(&self, socket: &mut Socket) -> Result<Option<StaleTable>, String> {
        let Some(note) = table::find(socket, TABLE).map_err(|e| explain(&e))? else { return Ok(None) };
        let stamp = read_counter_values(socket, TABLE, HARVESTS).ok().and_then(|(bytes, packets)| Stamp::read(bytes, packets));
        // The stamp names the monitor that runs the table now; the note, the one that made it.
        let owner = stamp.map(|s| s.owner).or_else(|| table::owner_pid(&note));
        if let Some(pid) = owner.filter(|&pid| pid != std::process::id() && is_a_monitor(pid)) {
            return Err(format!(
                "table inet {TABLE} belongs to a monitor that is still running (pid {pid}) in this \
                 network namespace: stop it first (two monitors cannot share the kernel's counters)"
            ));
        }
        let who = owner.map_or_else(|| "an unknown program".to_string(), |pid| format!("an earlier run (pid {pid})"));
        let same_layout = stamp.is_some() && table::made_with(&note, &self.layout);
        Ok(Some(StaleTable { stamp, same_layout, who }))
    }

    /// Takes up the journal at start: the harvests whose bytes left the
    /// kernel (`kernel`: the table's harvest number; `None`: no table) but
    /// not the store (`marks.applied`) are counted again; those not in a
    /// saved state yet (`marks.saved`) are kept, and `leftover` is written
    /// down as the harvest of the number the table must get, [`Self::number`].
    /// Returns what to count again.
    fn resume_journal(&mut self, kernel: Option<u64>, marks: HarvestMarks, leftover: Option<&[Record]>) -> Vec<Record> {
        let entries = match &self.journal_path {
            Some(path) => Journal::read(path).unwrap_or_else(|err| {
                eprintln!("warning: cannot read the harvest journal {}: {err}; starting a new one", path.display());
                Vec::new()
            }),
            None => Vec::new(),
        };
        let newest = entries.iter().map(|e| e.number).max().unwrap_or(0);
        self.number = newest.max(kernel.unwrap_or(0)).max(marks.applied);
        if leftover.is_some() {
            self.number += 1;
        }
        let Some(path) = self.journal_path.clone() else { return Vec::new() };
        let gone: Vec<Entry> = entries.into_iter().filter(|e| e.gone_from_kernel(kernel)).collect();
        let again: Vec<Record> = gone.iter().filter(|e| e.number > marks.applied).flat_map(|e| e.records.iter().cloned()).collect();
        if !again.is_empty() {
            let bytes: u64 = again.iter().map(record_bytes).sum();
            eprintln!("the harvest journal {} holds {bytes} bytes that the saved state lacks: counted now", path.display());
        }
        let mut keep: Vec<Entry> = gone.into_iter().filter(|e| e.number > marks.saved).map(|e| Entry { done: true, ..e }).collect();
        if let Some(leftover) = leftover {
            keep.push(Entry { number: self.number, records: leftover.to_vec(), done: false });
        }
        self.journal = Journal::rewrite(&path, &keep).map_err(|err| journal_failed(&path, &err)).ok();
        again
    }

    /// Applies `write` to the journal, if there is one; a failure closes it.
    fn write_down(&mut self, write: impl FnOnce(&mut Journal) -> io::Result<()>) {
        let Some(journal) = self.journal.as_mut() else { return };
        if let Err(err) = write(journal) {
            let path = journal.path().to_path_buf();
            self.journal = None;
            journal_failed(&path, &err);
        }
    }

    fn stamp(&self, number: u64, active: Generation) -> Stamp {
        Stamp { number, owner: std::process::id(), active }
    }

    /// Goes on in a table left with this layout: two harvests at once
    /// read the generation it left and then the one it fed, each made anew
    /// in the swap after its reading, so no byte is counted elsewhere in
    /// between.
    fn take_up(&mut self, stale: &StaleTable, stamp: Stamp, marks: HarvestMarks) -> Result<Vec<Record>, String> {
        let again = self.resume_journal(Some(stamp.number), marks, None);
        self.active = stamp.active;
        let mut taken = Vec::new();
        for _ in 0..2 {
            let mut report = Vec::new();
            self.harvest(&mut report, marks)?;
            taken.append(&mut report);
        }
        let bytes: u64 = taken.iter().map(record_bytes).sum();
        eprintln!(
            "found table inet {TABLE} left by {}: the {bytes} bytes it counted after that run's last \
             harvest are counted now, and counting goes on in it",
            stale.who
        );
        Ok(again.into_iter().chain(taken).collect())
    }

    /// Replaces a table (of another layout, or none) by a new one: what the
    /// old one holds is read first and written down as the new one's first
    /// harvest.
    fn replace(&mut self, socket: &mut Socket, stale: Option<&StaleTable>, marks: HarvestMarks) -> Result<Vec<Record>, String> {
        let mut leftover = Vec::new();
        if let Some(stale) = stale {
            let bytes = read_everything(std::slice::from_mut(socket), &mut leftover);
            // No stamp: killed while it made the table (see table::create).
            let why = if stale.stamp.is_some() {
                "made for other options (--max-ips, -i, --exclude, --include-private) or by another version"
            } else {
                "unfinished (the run was stopped while making it)"
            };
            eprintln!(
                "found table inet {TABLE} left by {}, {why}: the {bytes} bytes it counted after that run's \
                 last harvest are counted now, and it is replaced (what it counts while that happens, \
                 some milliseconds' worth, is lost)",
                stale.who
            );
        }
        let kernel = stale.map(|table| table.stamp.map_or(0, |s| s.number));
        let mut records = self.resume_journal(kernel, marks, Some(&leftover));
        self.active = Generation::A;
        table::create(socket, TABLE, &self.layout, stale.is_some(), self.stamp(self.number, self.active)).map_err(|e| explain(&e))?;
        let number = self.number;
        self.write_down(|journal| journal.done(number));
        records.append(&mut leftover);
        Ok(records)
    }
}

/// Says that the journal cannot be written, and that counting goes on without it.
fn journal_failed(path: &std::path::Path, err: &io::Error) {
    eprintln!(
        "warning: cannot write the harvest journal {}: {err}; counting goes on, but a kill \
         (SIGKILL, out of memory) would lose what was counted since the last save",
        path.display()
    );
}

impl Counter for Harvester {
    fn attach(&mut self, marks: HarvestMarks) -> Result<(), String> {
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
        let stale = self.find_stale_table(&mut socket)?;
        let leftover = match stale {
            Some(ref table @ StaleTable { stamp: Some(stamp), same_layout: true, .. }) => {
                self.sockets = vec![socket];
                self.take_up(table, stamp, marks)?
            }
            _ => {
                let leftover = self.replace(&mut socket, stale.as_ref(), marks)?;
                self.sockets = vec![socket];
                leftover
            }
        };
        self.leftover = leftover;
        for _ in 1..readers() {
            self.sockets.push(open_socket()?);
        }
        Ok(())
    }

    /// Reads the generation the rules left at the last harvest, writes it
    /// down, then makes it anew and points the rules at it. The records
    /// are handed over only when that succeeded: a run that dies before
    /// leaves them in the table, for the next run to find.
    fn harvest(&mut self, report: &mut Vec<Record>, marks: HarvestMarks) -> Result<(), String> {
        let retired = self.active.other();
        let sockets = self.sockets()?;
        let (_, occupied, mut traffic) = read_generation(sockets, retired, report).map_err(|e| lost_table(&e))?;
        let refused = read_refused(&mut sockets[0], retired, report, &mut traffic).map_err(|e| lost_table(&e))?;
        let old_lanes = read_lanes(&mut sockets[0], retired, report, &mut traffic).map_err(|e| lost_table(&e))?;
        let number = self.number + 1;
        // Every harvest written down so far is in a saved state: start afresh.
        if marks.saved >= self.number && self.journal.as_ref().is_some_and(|j| j.written() > 0) {
            self.write_down(Journal::clear);
            self.asked_to_save = false;
        }
        self.write_down(|journal| journal.append(number, report));
        let (layout, stamp) = (self.layout.clone(), self.stamp(number, retired));
        let sockets = self.sockets()?;
        let made_anew = table::Retired { occupied: &occupied, refused: refused.map(|bytes| bytes > 0), lanes: &old_lanes };
        table::swap(&mut sockets[0], TABLE, &layout, stamp, &made_anew, &traffic.lanes()).map_err(|e| lost_table(&e))?;
        (self.number, self.active) = (number, retired);
        self.write_down(|journal| journal.done(number));
        report.append(&mut self.leftover);
        report.push(Record::Harvest(number));
        self.drop_this_host(report);
        Ok(())
    }

    /// Reads both generations (what came since the last harvest), writes
    /// that down, then deletes the table.
    fn detach(&mut self, report: &mut Vec<Record>) -> Result<(), String> {
        let sockets = self.sockets()?;
        read_everything(sockets, report);
        let number = self.number + 1;
        // Done before the table goes: a kill between the two leaves the
        // table, whose number then says the kernel still holds these bytes.
        self.write_down(|journal| journal.append(number, report).and_then(|()| journal.done(number)));
        report.append(&mut self.leftover);
        report.push(Record::Harvest(number));
        self.drop_this_host(report);
        let sockets = self.sockets()?;
        table::delete(&mut sockets[0], TABLE).map_err(|e| format!("could not delete table inet {TABLE}: {e}"))
    }

    fn wants_save(&mut self) -> bool {
        let long = self.journal.as_ref().is_some_and(|j| j.written() > JOURNAL_SAVE_AT);
        let ask = long && !self.asked_to_save;
        self.asked_to_save |= ask;
        ask
    }
}

/// The bytes of a record a harvest makes.
fn record_bytes(record: &Record) -> u64 {
    match *record {
        Record::Tx(_, n) | Record::Rx(_, n) => n,
        Record::Unkeyed(tx, rx) => tx + rx,
        Record::Owner(..) | Record::Harvest(_) => 0,
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
/// shared among `sockets`; returns their bytes, which of the sets
/// ([`table::sets`] order) held elements, and their packets.
fn read_generation(sockets: &mut [Socket], generation: Generation, report: &mut Vec<Record>) -> io::Result<(u64, Vec<bool>, Traffic)> {
    let sets = table::sets(generation);
    let mut occupied = vec![false; sets.len()];
    let mut traffic = Traffic::default();
    let n = sockets.len();
    let bytes = std::thread::scope(|scope| {
        let mut readers = Vec::new();
        // Every n-th set to each socket: the peers of one direction and
        // family (all of a flood's) are spread over all of them.
        let mut shares = sockets.iter_mut().enumerate().map(|(i, socket)| (socket, sets.iter().enumerate().skip(i).step_by(n)));
        // The first share is read on this thread, the others beside it.
        let Some((own_socket, own_sets)) = shares.next() else { return Ok::<u64, io::Error>(0) };
        for (socket, share) in shares {
            let reader = std::thread::Builder::new().stack_size(64 << 10).spawn_scoped(scope, move || read_sets(socket, share));
            readers.push(reader?);
        }
        let mut take = |reading: SetsRead| {
            report.extend(reading.records);
            reading.occupied.iter().for_each(|&i| occupied[i] = true);
            traffic.merge(reading.traffic);
            reading.bytes
        };
        let mut bytes = take(read_sets(own_socket, own_sets)?);
        for reader in readers {
            bytes += take(reader.join().map_err(|_| io::Error::other("a set reader failed"))??);
        }
        Ok(bytes)
    })?;
    Ok((bytes, occupied, traffic))
}

/// What one reader found in its share of a generation's sets.
struct SetsRead {
    records: Vec<Record>,
    bytes: u64,
    /// The indices of the sets that held elements.
    occupied: Vec<usize>,
    traffic: Traffic,
}

/// The records of `sets` (`(index, (name, direction))`), their bytes, and
/// which of them held elements.
fn read_sets<'a>(socket: &mut Socket, sets: impl Iterator<Item = (usize, &'a (String, usize))>) -> io::Result<SetsRead> {
    let mut read = SetsRead { records: Vec::new(), bytes: 0, occupied: Vec::new(), traffic: Traffic::default() };
    for (index, (set, dir)) in sets {
        let (elements, unreadable) = dump_set(socket, FAMILY_INET, TABLE, set)?;
        if elements.is_empty() && unreadable == 0 {
            continue;
        }
        read.occupied.push(index);
        read.records.reserve(elements.len());
        for element in elements.into_iter().filter(|e| e.bytes > 0) {
            read.bytes += element.bytes;
            read.records.push(record(*dir, element.ip, element.bytes));
            read.traffic.add(*dir, element.ip, element.packets);
        }
    }
    Ok(read)
}

/// Adds the bytes the full sets of `generation` refused to `report`, and
/// their packets to `traffic`; returns the bytes by direction (0 tx, 1 rx).
fn read_refused(socket: &mut Socket, generation: Generation, report: &mut Vec<Record>, traffic: &mut Traffic) -> io::Result<[u64; 2]> {
    let mut refused = [0; 2];
    for (dir, name) in table::refused(generation).iter().enumerate() {
        let (bytes, packets) = read_counter_values(socket, TABLE, name)?;
        refused[dir] = bytes;
        traffic.add_unkeyed(dir, packets);
    }
    if refused != [0, 0] {
        report.push(Record::Unkeyed(refused[0], refused[1]));
    }
    Ok(refused)
}

/// Adds what the lanes of `generation` counted to `report`, and their
/// packets to `traffic`; returns their counters' names.
fn read_lanes(socket: &mut Socket, generation: Generation, report: &mut Vec<Record>, traffic: &mut Traffic) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for (name, bytes, packets) in dump_counters(socket, TABLE)? {
        let Some((lane, _)) = table::lane_of(&name).filter(|(_, of)| *of == generation) else { continue };
        if bytes > 0 {
            report.push(record(lane.dir, lane.ip, bytes));
        }
        traffic.add(lane.dir, lane.ip, packets);
        names.push(name);
    }
    Ok(names)
}

/// Everything the table holds that no harvest handed over: both
/// generations' sets, lanes and refused bytes, into `report`; their bytes.
/// What cannot be read (a table of an older layout) is left out.
fn read_everything(sockets: &mut [Socket], report: &mut Vec<Record>) -> u64 {
    let mut bytes = 0;
    let mut traffic = Traffic::default();
    for generation in [Generation::A, Generation::B] {
        bytes += read_refused(&mut sockets[0], generation, report, &mut traffic).map_or(0, |[tx, rx]| tx + rx);
        bytes += read_generation(sockets, generation, report).map_or(0, |(bytes, ..)| bytes);
        let before = report.len();
        let _ = read_lanes(&mut sockets[0], generation, report, &mut traffic);
        bytes += report[before..].iter().map(record_bytes).sum::<u64>();
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
