//! Process association for backends that see packets, not sockets (iftop,
//! nftables): remote
//! IP → socket inode from /proc/net/{tcp,tcp6,udp,udp6}, inode → PID from
//! the `socket:[inode]` links in /proc/*/fd, command from /proc/PID/comm.
//! Runs on its own thread every two seconds, never on the parsing thread,
//! and only after a report brought bytes of a remote IP (an idle host costs
//! nothing: reading /proc/net/tcp walks the kernel's whole established-socket
//! hash table, 5 ms on a host with 24 GiB whose table has 262,144 buckets);
//! the expensive /proc/*/fd walk happens only when a socket of a remote IP
//! has an inode not seen before, and at most once per round. Only IPs the
//! store already tracks get an owner; a socket that lives less than a round
//! may go unseen (the bpftrace backend names the sender at the packet).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::filter::canonical;
use crate::store::{Comm, Owner, Store};

const ROUND: Duration = Duration::from_secs(2);

pub fn spawn(store: Arc<Store>) {
    let _ = thread::Builder::new().name("owners".into()).spawn(move || {
        let mut rounds = Rounds::default();
        loop {
            rounds.round(&store, remote_sockets, owners_of);
            thread::sleep(ROUND);
        }
    });
}

/// What the rounds remember: the owners found so far, and the store's
/// [`Store::keyed_reports`] at the last look.
#[derive(Default)]
struct Rounds {
    owners_by_inode: HashMap<u64, Owner>,
    looked_at: Option<u64>,
}

impl Rounds {
    /// One round: if bytes of a remote IP came since the last look, the
    /// sockets (`sockets()`), their owners where an inode is new
    /// (`owners_of`), handed to the store. Returns whether it looked.
    fn round(
        &mut self,
        store: &Store,
        sockets: impl FnOnce() -> Vec<(IpAddr, u64)>,
        owners_of: impl FnOnce(std::collections::HashSet<u64>) -> HashMap<u64, Owner>,
    ) -> bool {
        let reports = store.keyed_reports();
        if self.looked_at == Some(reports) {
            return false;
        }
        self.looked_at = Some(reports);
        let sockets = sockets();
        if sockets.iter().any(|(_, inode)| !self.owners_by_inode.contains_key(inode)) {
            self.owners_by_inode = owners_of(sockets.iter().map(|(_, inode)| *inode).collect());
        }
        let found: Vec<(IpAddr, Owner)> =
            sockets.iter().filter_map(|(ip, inode)| self.owners_by_inode.get(inode).map(|owner| (*ip, *owner))).collect();
        store.set_owners(&found);
        true
    }
}

/// (remote IP, socket inode) of every inet socket with a remote address.
fn remote_sockets() -> Vec<(IpAddr, u64)> {
    let mut sockets = Vec::new();
    for table in ["tcp", "udp", "tcp6", "udp6"] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/net/{table}")) {
            sockets.extend(text.lines().skip(1).filter_map(parse_socket_line));
        }
    }
    sockets
}

/// `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...`
fn parse_socket_line(line: &str) -> Option<(IpAddr, u64)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let remote = parse_proc_address(fields.get(2)?.split(':').next()?)?;
    let inode: u64 = fields.get(9)?.parse().ok()?;
    (!remote.is_unspecified() && inode != 0).then_some((canonical(remote), inode))
}

/// The kernel prints addresses as 32-bit words in host byte order, in hex.
fn parse_proc_address(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok().map(u32::to_ne_bytes);
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// The processes holding these socket inodes, from /proc/*/fd.
fn owners_of(inodes: std::collections::HashSet<u64>) -> HashMap<u64, Owner> {
    let mut owners = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return owners };
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let inode = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok());
            if let Some(inode) = inode.filter(|i| inodes.contains(i)) {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                owners.insert(inode, Owner { pid, comm: Comm::new(comm.trim_end().as_bytes()) });
            }
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_lines_give_remote_and_inode() {
        // Recorded from /proc/net/tcp and tcp6 on x86_64 (little endian).
        let v4 = "   1: 010200C0:B5A8 0764336C:1451 01 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(parse_socket_line(v4), Some(("108.51.100.7".parse().unwrap(), 123456)));
        let v6 = "   0: B80D0120000000000000000001000000:9656 B80D0120000000000000000002000000:1451 01 00000000:00000000 00:00000000 00000000     0        0 654321 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(parse_socket_line(v6), Some(("2001:db8::2".parse().unwrap(), 654321)));
        let mapped = "   0: 0000000000000000FFFF0000010200C0:1451 0000000000000000FFFF00000764336C:B5A8 01 00000000:00000000 00:00000000 00000000     0        0 777 1";
        assert_eq!(parse_socket_line(mapped), Some(("108.51.100.7".parse().unwrap(), 777)), "mapped IPv4 is IPv4");
        let listening = "   0: 00000000:1451 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1";
        assert_eq!(parse_socket_line(listening), None, "no remote");
    }

    #[test]
    fn a_round_looks_at_proc_only_after_bytes_of_a_remote_ip() {
        use crate::store::Record;
        let store = Store::new(0, 10);
        let peer: IpAddr = "198.51.100.7".parse().unwrap();
        let owner = Owner { pid: 42, comm: Comm::new(b"curl") };
        let mut rounds = Rounds::default();
        let round = |rounds: &mut Rounds, store: &Store| {
            rounds.round(store, || vec![(peer, 7)], |_| HashMap::from([(7, owner)]))
        };
        assert!(round(&mut rounds, &store), "the first round looks");
        // A harvest with no bytes (an idle host): nothing new to name.
        store.apply_report(&[Record::Harvest(1), Record::Unkeyed(100, 0)], 0);
        assert!(!round(&mut rounds, &store), "no look without bytes of a remote IP");
        let before = store.generation();
        assert!(!round(&mut rounds, &store));
        assert_eq!(store.generation(), before, "a round that does not look changes nothing");
        store.apply_report(&[Record::Tx(peer, 1200), Record::Harvest(2)], 0);
        assert!(round(&mut rounds, &store), "bytes of a remote IP: a look");
        let rows = store.totals_by_volume();
        assert_eq!(rows.iter().find(|r| r.ip == peer).and_then(|r| r.traffic.owner), Some(owner), "and its owner named");
        let named = store.generation();
        store.apply_report(&[Record::Rx(peer, 80)], 0);
        let after_bytes = store.generation();
        assert!(round(&mut rounds, &store));
        assert_ne!(named, after_bytes);
        assert_eq!(store.generation(), after_bytes, "the same owner again: the store's generation stands");
    }

    #[test]
    fn this_processes_own_socket_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let sockets = remote_sockets();
        let port = client.local_addr().unwrap().port();
        let inodes: std::collections::HashSet<u64> = sockets.iter().filter(|(ip, _)| ip.is_loopback()).map(|(_, i)| *i).collect();
        let owners = owners_of(inodes);
        let me = std::process::id();
        assert!(owners.values().any(|o| o.pid == me), "port {port}: {owners:?}");
    }
}
