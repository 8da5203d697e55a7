//! The nftables backend (in progress, issue 17): the kernel counts in sets
//! with per-element counters, and the monitor creates them and reads them
//! over netlink itself, with no child process and no user-space package.
//! What exists so far: [`netlink`] (messages and attributes, pure and
//! checked), [`socket`] (one NETLINK_NETFILTER exchange), [`table`] (the
//! monitor's table, sets and chains, created and deleted in one batch) and
//! [`elements`] (a set-element dump: address and bytes), joined by
//! [`dump_set`]. The harvest per interval, the kernel-side filters, the
//! `Backend` implementation and `-b auto` are still to come.

pub mod elements;
pub mod netlink;
pub mod socket;
pub mod table;

use std::io;
use std::net::IpAddr;

use netlink::{Builder, NLM_F_DUMP, NLM_F_REQUEST};

/// `NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETSETELEM`.
const GET_SET_ELEMENTS: u16 = 10 << 8 | 13;
/// `... | NFT_MSG_GETSETELEM_RESET` (Linux 6.5+): read the counters and
/// zero them in the same step, so no byte falls between two harvests.
const GET_SET_ELEMENTS_RESET: u16 = 10 << 8 | 33;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
/// `NFPROTO_INET`: a table of family `inet`.
pub const FAMILY_INET: u8 = 1;

/// Whether a dump leaves the counters as they are or zeroes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    Keep,
    AndReset,
}

/// Every element of set `set` in table `table`: `(address, bytes)`, and how
/// many elements could not be read.
pub fn dump_set(socket: &mut socket::Socket, family: u8, table: &str, set: &str, read: Read) -> io::Result<(Vec<(IpAddr, u64)>, usize)> {
    let seq = socket.next_seq();
    let kind = match read {
        Read::Keep => GET_SET_ELEMENTS,
        Read::AndReset => GET_SET_ELEMENTS_RESET,
    };
    let mut request = Builder::new(kind, NLM_F_REQUEST | NLM_F_DUMP, seq, family);
    request.attr_str(NFTA_SET_ELEM_LIST_TABLE, table).attr_str(NFTA_SET_ELEM_LIST_SET, set);
    let (mut counted, mut unreadable) = (Vec::new(), 0);
    socket.exchange(&request.finish(), seq, |message| unreadable += elements::read_elements(message, &mut counted))?;
    Ok((counted, unreadable))
}
