//! The monitor's own nf_tables table, created over netlink in one batch
//! (all of it or nothing): an `inet` table with four sets of peers with
//! per-element counters (`tx4`, `tx6`, `rx4`, `rx6`, key = the remote
//! address) and two base chains that put every packet's peer into its
//! set: `out` (hook output: destination address) and `in` (hook input:
//! source address). What `nft --debug=netlink` shows for
//! `update @tx4 { ip daddr }`, encoded by hand:
//!
//! ```text
//! [ meta load nfproto => reg 1 ]  [ cmp eq reg 1 0x02 ]
//! [ payload load 4b @ network header + 16 => reg 1 ]  [ dynset update reg_key 1 set tx4 ]
//! ```
//!
//! Before the updates, one rule per never-counted block (and per private
//! one unless asked to count them) returns from the chain, so those
//! addresses take no room in a set. Still to come (issue 17): `--exclude`,
//! a total per direction for a full set, forwarded traffic and `-i`,
//! removal at exit, a stale table at start.

use std::io;

use super::netlink::{Builder, NLM_F_ACK, NLM_F_REQUEST};
use super::socket::Socket;

const SUBSYS: u16 = 10 << 8; // NFNL_SUBSYS_NFTABLES
const NEWTABLE: u16 = SUBSYS; // | 0
const NEWCHAIN: u16 = SUBSYS | 3;
const NEWRULE: u16 = SUBSYS | 6;
const NEWSET: u16 = SUBSYS | 9;
const DELTABLE: u16 = SUBSYS | 2;
const BATCH_BEGIN: u16 = 0x10;
const BATCH_END: u16 = 0x11;
const NLM_F_CREATE: u16 = 0x400;
/// A new rule goes to the end of its chain (without it, to the front).
const NLM_F_APPEND: u16 = 0x800;

const FAMILY_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const HOOK_LOCAL_IN: u32 = 1;
const HOOK_LOCAL_OUT: u32 = 3;
/// `NFT_REG_1`.
const REG: u32 = 1;

/// One set of peers and the rule that fills it.
struct Peers {
    set: &'static str,
    chain: &'static str,
    nfproto: u8,
    /// Offset of the remote address in the network header, and its length.
    offset: u32,
    len: u32,
}

const PEERS: [Peers; 4] = [
    Peers { set: "tx4", chain: "out", nfproto: NFPROTO_IPV4, offset: 16, len: 4 },
    Peers { set: "tx6", chain: "out", nfproto: NFPROTO_IPV6, offset: 24, len: 16 },
    Peers { set: "rx4", chain: "in", nfproto: NFPROTO_IPV4, offset: 12, len: 4 },
    Peers { set: "rx6", chain: "in", nfproto: NFPROTO_IPV6, offset: 8, len: 16 },
];

/// Address blocks never counted, by their first two bytes: `(mask, value)`.
/// The same as `filter.rs` decides, so that they take no room in a set.
const NEVER_V4: [(u16, u16); 4] = [(0xff00, 0x0000), (0xff00, 0x7f00), (0xffff, 0xa9fe), (0xe000, 0xe000)];
const PRIVATE_V4: [(u16, u16); 4] = [(0xff00, 0x0a00), (0xfff0, 0xac10), (0xffff, 0xc0a8), (0xffc0, 0x6440)];
const NEVER_V6: [(u16, u16); 3] = [(0xff00, 0x0000), (0xff00, 0xff00), (0xffc0, 0xfe80)];
const PRIVATE_V6: [(u16, u16); 1] = [(0xfe00, 0xfc00)];

/// Creates table `name` with its sets of at most `size` peers each and
/// its chains, in one transaction. Never-counted blocks (and private ones
/// unless `include_private`) return from the chain before the set update.
pub fn create(socket: &mut Socket, name: &str, size: u32, include_private: bool) -> io::Result<()> {
    let seq = socket.next_seq();
    let mut batch = batch_marker(BATCH_BEGIN, seq);
    let create = NLM_F_REQUEST | NLM_F_CREATE;
    let mut table = Builder::new(NEWTABLE, create, seq, FAMILY_INET);
    table.attr_str(1, name); // NFTA_TABLE_NAME
    batch.extend(table.finish());
    for (id, peers) in PEERS.iter().enumerate() {
        batch.extend(new_set(name, peers, id as u32 + 1, size, seq));
    }
    for (chain, hook) in [("out", HOOK_LOCAL_OUT), ("in", HOOK_LOCAL_IN)] {
        batch.extend(new_chain(name, chain, hook, seq));
    }
    let create = create | NLM_F_APPEND; // rules, from here on, in the order written
    for peers in &PEERS {
        let (never, private): (&[(u16, u16)], &[(u16, u16)]) =
            if peers.len == 4 { (&NEVER_V4, &PRIVATE_V4) } else { (&NEVER_V6, &PRIVATE_V6) };
        let skipped = never.iter().chain(if include_private { &[][..] } else { private });
        for &(mask, value) in skipped {
            batch.extend(skip_rule(name, peers, mask, value, create, seq));
        }
    }
    for (id, peers) in PEERS.iter().enumerate() {
        // The last message asks for the acknowledgement that ends the exchange.
        let flags = if id == PEERS.len() - 1 { create | NLM_F_ACK } else { create };
        batch.extend(new_rule(name, peers, id as u32 + 1, flags, seq));
    }
    batch.extend(batch_marker(BATCH_END, seq));
    socket.exchange(&batch, seq, |_| {})
}

/// Deletes table `name` and everything in it.
pub fn delete(socket: &mut Socket, name: &str) -> io::Result<()> {
    let seq = socket.next_seq();
    let mut batch = batch_marker(BATCH_BEGIN, seq);
    let mut table = Builder::new(DELTABLE, NLM_F_REQUEST | NLM_F_ACK, seq, FAMILY_INET);
    table.attr_str(1, name);
    batch.extend(table.finish());
    batch.extend(batch_marker(BATCH_END, seq));
    socket.exchange(&batch, seq, |_| {})
}

/// A batch begin or end: the nfgenmsg's resource id names the subsystem.
fn batch_marker(kind: u16, seq: u32) -> Vec<u8> {
    let mut marker = Builder::new(kind, NLM_F_REQUEST, seq, 0).finish();
    marker[super::netlink::HEADER_LEN + 2..super::netlink::HEADER_LEN + 4].copy_from_slice(&10u16.to_be_bytes());
    marker
}

fn new_set(table: &str, peers: &Peers, id: u32, size: u32, seq: u32) -> Vec<u8> {
    let mut set = Builder::new(NEWSET, NLM_F_REQUEST | NLM_F_CREATE, seq, FAMILY_INET);
    set.attr_str(1, table) // NFTA_SET_TABLE
        .attr_str(2, peers.set) // NFTA_SET_NAME
        .attr_u32(3, 0x20) // NFTA_SET_FLAGS: NFT_SET_EVAL (updated from the packet path)
        .attr_u32(4, if peers.len == 4 { 7 } else { 8 }) // NFTA_SET_KEY_TYPE: ipv4_addr / ipv6_addr
        .attr_u32(5, peers.len) // NFTA_SET_KEY_LEN
        .attr_u32(10, id); // NFTA_SET_ID
    let desc = set.begin_nest(9); // NFTA_SET_DESC
    set.attr_u32(1, size); // NFTA_SET_DESC_SIZE
    set.end_nest(desc);
    let expr = set.begin_nest(17); // NFTA_SET_EXPR: every element gets a counter
    set.attr_str(1, "counter");
    set.end_nest(expr);
    set.finish()
}

fn new_chain(table: &str, name: &str, hook: u32, seq: u32) -> Vec<u8> {
    let mut chain = Builder::new(NEWCHAIN, NLM_F_REQUEST | NLM_F_CREATE, seq, FAMILY_INET);
    chain.attr_str(1, table).attr_str(3, name); // NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME
    let h = chain.begin_nest(4); // NFTA_CHAIN_HOOK
    chain.attr_u32(1, hook).attr_u32(2, 0); // NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY
    chain.end_nest(h);
    chain.attr_str(7, "filter"); // NFTA_CHAIN_TYPE
    chain.finish()
}

fn new_rule(table: &str, peers: &Peers, set_id: u32, flags: u16, seq: u32) -> Vec<u8> {
    let mut rule = Builder::new(NEWRULE, flags, seq, FAMILY_INET);
    rule.attr_str(1, table).attr_str(2, peers.chain); // NFTA_RULE_TABLE, NFTA_RULE_CHAIN
    let list = rule.begin_nest(4); // NFTA_RULE_EXPRESSIONS
    match_nfproto(&mut rule, peers.nfproto);
    expression(&mut rule, "payload", |e| {
        // NFTA_PAYLOAD_DREG, _BASE (network header), _OFFSET, _LEN
        e.attr_u32(1, REG).attr_u32(2, 1).attr_u32(3, peers.offset).attr_u32(4, peers.len);
    });
    expression(&mut rule, "dynset", |e| {
        // NFTA_DYNSET_SET_NAME, _SET_ID, _OP (update), _SREG_KEY
        e.attr_str(1, peers.set).attr_u32(2, set_id).attr_u32(3, 1).attr_u32(4, REG);
    });
    rule.end_nest(list);
    rule.finish()
}

/// `meta nfproto == P` then `@nh,OFFSET,16 & mask == value return`: a
/// packet whose remote address is in the block leaves the chain uncounted.
fn skip_rule(table: &str, peers: &Peers, mask: u16, value: u16, flags: u16, seq: u32) -> Vec<u8> {
    let mut rule = Builder::new(NEWRULE, flags, seq, FAMILY_INET);
    rule.attr_str(1, table).attr_str(2, peers.chain);
    let list = rule.begin_nest(4);
    match_nfproto(&mut rule, peers.nfproto);
    expression(&mut rule, "payload", |e| {
        e.attr_u32(1, REG).attr_u32(2, 1).attr_u32(3, peers.offset).attr_u32(4, 2);
    });
    expression(&mut rule, "bitwise", |e| {
        // NFTA_BITWISE_SREG, _DREG, _LEN, _MASK, _XOR: reg = reg & mask ^ 0
        e.attr_u32(1, REG).attr_u32(2, REG).attr_u32(3, 2);
        data(e, 4, &mask.to_be_bytes());
        data(e, 5, &[0, 0]);
    });
    expression(&mut rule, "cmp", |e| {
        e.attr_u32(1, REG).attr_u32(2, 0);
        data(e, 3, &value.to_be_bytes());
    });
    expression(&mut rule, "immediate", |e| {
        e.attr_u32(1, 0); // NFTA_IMMEDIATE_DREG: NFT_REG_VERDICT
        let d = e.begin_nest(2); // NFTA_IMMEDIATE_DATA
        let verdict = e.begin_nest(2); // NFTA_DATA_VERDICT
        e.attr_u32(1, NFT_RETURN as u32); // NFTA_VERDICT_CODE
        e.end_nest(verdict);
        e.end_nest(d);
    });
    rule.end_nest(list);
    rule.finish()
}

const NFT_RETURN: i32 = -5;

/// `meta nfproto == P`.
fn match_nfproto(rule: &mut Builder, nfproto: u8) {
    expression(rule, "meta", |e| {
        e.attr_u32(1, REG).attr_u32(2, 15); // NFTA_META_DREG, NFTA_META_KEY: NFT_META_NFPROTO
    });
    expression(rule, "cmp", |e| {
        e.attr_u32(1, REG).attr_u32(2, 0); // NFTA_CMP_SREG, NFTA_CMP_OP: NFT_CMP_EQ
        data(e, 3, &[nfproto]);
    });
}

/// A nested `nft_data` attribute holding `value` (NFTA_DATA_VALUE).
fn data(e: &mut Builder, kind: u16, value: &[u8]) {
    let d = e.begin_nest(kind);
    e.attr(1, value);
    e.end_nest(d);
}

/// One `NFTA_LIST_ELEM` expression: its name and its data attributes.
fn expression(rule: &mut Builder, name: &str, data: impl FnOnce(&mut Builder)) {
    let elem = rule.begin_nest(1); // NFTA_LIST_ELEM
    rule.attr_str(1, name); // NFTA_EXPR_NAME
    let d = rule.begin_nest(2); // NFTA_EXPR_DATA
    data(rule);
    rule.end_nest(d);
    rule.end_nest(elem);
}
