//! The monitor's own nf_tables table, created over netlink in two batches
//! (each all of it or nothing; see [`create`]), never touching any other
//! table: an `inet` table
//! with sets of peers with per-element counters (per direction and family,
//! key = the remote address: a front set and [`SHARDS`] shards, in two
//! [`Generation`]s), counter objects per generation (`tx_a`, `rx_a`, …: the
//! bytes whose peer found no room in a set), one counter object whose bytes
//! are the number of the last harvest ([`HARVESTS`]), and two base chains:
//!
//! - `rx`, hook prerouting, priority INT_MIN: every packet a device hands to
//!   the stack, before any other table can drop, defragment or rewrite it:
//!   the remote address is the source;
//! - `tx`, hook postrouting, priority INT_MAX: every packet about to be
//!   queued to a device, after every other table had its say: the remote
//!   address is the destination.
//!
//! So local and forwarded traffic count on the devices they cross, as the
//! other backends count them (docs/ACCOUNTING.md). In each chain, in order:
//!
//! ```text
//! @nh,96,32 0xc6336407 @nh,0,8 0x45 iif != "lo" counter name "rx_a_lane_c6336407" return
//!                                    a lane: a peer that sent an eighth of
//!                                    the last interval's packets, counted
//!                                    by a rule and counter of its own
//!                                    (at most [`LANES`]; [`lane_rule`])
//! iif != "lo" ip saddr != 0.0.0.0/8 ip saddr != 10.0.0.0/8 … update @rx4_front_a { ip saddr } return
//!                                    the common path, all in one rule with
//!                                    the address loaded once ([`Counting::fast_rule`]):
//!                                    a packet it does not end goes on to
//!                                    the same tests step by step:
//! meta iif 1 return                  (loopback; with -i: meta iif != N meta iifname != "IFX" return)
//! meta nfproto ipv6 goto rx6         (IPv6 to its own chain; what stays is IPv4)
//! @nh,96,8 10 return                 skipped blocks (never counted, private,
//! @nh,96,8 172 ip saddr @skip4 return  --exclude), a rule per block of
//! …                                  leading bytes (8 of IPv4 by default,
//!                                    compares the interpreter inlines; with
//!                                    many blocks one bitmap lookup of the
//!                                    leads instead), and the interval set's
//!                                    lookup only for a lead partly skipped:
//!                                    no room taken ([`skip_rules`])
//! update @rx4_front_a { ip saddr } return
//!                                    the first peers of an interval, as many
//!                                    as a shard holds
//! jhash ip saddr mod 32 seed S vmap @rx4_shards
//!                                    the others: a peer the front set has no
//!                                    room for, to its shard
//!
//! chain rx6:
//! @nh,64,128 0x20010db8… counter name "rx_a_lane_20010db8…" return  (its lanes)
//! @nh,64,128 != ::/8 … update @rx6_front_a { ip6 saddr } return     (its fast rule)
//! @nh,64,8 0 return                  (::/8; fc00::/7, fe80::/10 and ff00::/8
//! …                                  likewise: 4 rules by default)
//! update @rx6_front_a { ip6 saddr } return
//! jhash ip6 saddr mod 32 seed S vmap @rx6_shards
//!
//! chain rx4_7_a (one per shard and generation; @rx4_shards maps 7 to a
//! goto to the active generation's):
//! update @rx4_7_a { ip saddr } return
//! counter name "rx_a"                only what a full set refused gets here
//! ```
//!
//! Why a front set: the kernel dumps a set at a cost that grows with the
//! square of its size ([`SHARDS`]), so peers are spread over small sets; but
//! reaching a shard (the hash, the map's lookup, the `goto` and a chain's
//! entry) costs a packet about 150–200 ns here, a third of the table's
//! cost. Most intervals see fewer peers than one shard holds: their packets
//! all count in the front set, in the base chain, and only an interval with
//! more peers pays for the shards (and, for those peers, for the front
//! set's refusal first). A peer is counted in one set of a generation: in
//! the front set if it was there, else in its shard (two CPUs that race for
//! the front set's last room may put one peer in both, each with its own
//! packets: the harvest adds them up).
//!
//! Every step is a `goto`, never a `jump`: no chain returns to the one
//! before it, so the first `return` (or a chain's end) ends the table's
//! work on a packet, and an IPv4 packet meets one rule about its family, an
//! IPv6 packet two. An `inet` chain at these hooks sees IPv4 and IPv6 only.
//! Each rule a packet meets costs it tens of nanoseconds here (`make bench`,
//! hook cost): the table is as short as what it must do.
//!
//! Generations: the rules of one generation feed its sets while the
//! other's (sets and refused counters), fed until the last harvest, are
//! read; then one transaction points the shard maps at the chains of the
//! generation just read, writes the few rules of the base and IPv6 chains
//! anew for its front sets, makes anew, empty, those of its sets that held
//! elements (and its counters of refused bytes, if they counted any), and
//! numbers the harvest ([`swap`]). So no element needs a timeout and no
//! counter is ever reset: a set holds only what its peers sent in one
//! interval, read once, whole, after nothing writes to it any more; and a
//! harvest of a quiet interval changes four maps and a dozen rules, not
//! hundreds.
//!
//! What `nft --debug=netlink` shows for these, encoded by hand. A full set
//! refuses the update, which ends that rule (`NFT_BREAK`) before its
//! `return`: the packet goes on to the next rule (from the front set, to
//! the shards; in a shard's chain, to the counter of refused bytes). So
//! every counted byte is in exactly one place: an element or that counter.

use std::io;
use std::net::IpAddr;

use super::netlink::{Builder, NLM_F_ACK, NLM_F_REQUEST};
use super::socket::Socket;
use super::{FAMILY_INET, SUBSYS};
use crate::filter::Cidr;

const NEWTABLE: u16 = SUBSYS; // | 0
const GETTABLE: u16 = SUBSYS | 1;
const DELTABLE: u16 = SUBSYS | 2;
const NEWCHAIN: u16 = SUBSYS | 3;
const NEWRULE: u16 = SUBSYS | 6;
const DELRULE: u16 = SUBSYS | 8;
const NEWSET: u16 = SUBSYS | 9;
const DELSET: u16 = SUBSYS | 11;
const NEWSETELEM: u16 = SUBSYS | 12;
const DELSETELEM: u16 = SUBSYS | 14;
const NEWOBJ: u16 = SUBSYS | 18;
const DELOBJ: u16 = SUBSYS | 20;
const BATCH_BEGIN: u16 = 0x10;
const BATCH_END: u16 = 0x11;
const NLM_F_CREATE: u16 = 0x400;
/// A new rule goes to the end of its chain (without it, to the front).
const NLM_F_APPEND: u16 = 0x800;

const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const HOOK_PRE_ROUTING: u32 = 0;
const HOOK_POST_ROUTING: u32 = 4;
/// `NFT_REG_1`.
const REG: u32 = 1;
/// `NFT_REG_2`: a masked copy of the address's first bytes, beside it.
const MASKED: u32 = 2;
/// `NFTA_LOOKUP_FLAGS`: the lookup matches when the key is not there.
const NFT_LOOKUP_F_INV: u32 = 1;
const NFT_RETURN: i32 = -5;
const NFT_GOTO: i32 = -4;
/// `NFTA_SET_DATA_TYPE` of a verdict map.
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_META_IIF: u32 = 4;
const NFT_META_OIF: u32 = 5;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_NFPROTO: u32 = 15;
pub const NFT_OBJECT_COUNTER: u32 = 1;
/// The loopback device's index, the same in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;
/// `NFTA_TABLE_USERDATA`: who made the table (see [`owner_note`]).
const NFTA_TABLE_USERDATA: u16 = 6;

/// Each direction and family spreads its peers over this many sets, by a
/// seeded hash of the address. The kernel dumps a set in parts of 32 KiB
/// (about 400 elements), walking it from its start again for each part, so
/// a dump costs the square of the set's size: 100,000 peers in one set take
/// 0.4–0.5 s to read (1.6 s when its elements had timeouts too), in 32 sets
/// of ~3,000 a thirty-second of that.
pub const SHARDS: u32 = 32;

/// What [`create`] makes, numbered: raised with every change to it, so
/// that a table an older build left is replaced, not taken up (2: a shard
/// chain per generation, maps that are swapped; 3: `goto` only, IPv6 in a
/// chain of its own; 4: a front set before the shards; 5: the skipped
/// blocks' leads compared inline, and the common path in one rule first;
/// 6: lanes).
const STRUCTURE: u32 = 6;

/// Lanes per direction, at most: each costs every other packet of its
/// direction a load and a compare that fail (about 9 ns here).
pub const LANES: usize = 4;

/// A peer that has a rule of its own for a generation: its packets are
/// counted there, before anything else, in a counter object named after
/// it ([`lane_name`]), for about 145 ns less than the common path's (a set
/// update, the device, the family and the skipped leads' tests:
/// `benches/rule-cost.sh`, variants `lane` and the monitor's table). Which
/// peers get one is the harvest's choice (`super::lanes`); the table holds
/// whatever [`swap`] is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lane {
    /// 0 tx, 1 rx.
    pub dir: usize,
    pub ip: IpAddr,
}

/// One direction: its base chain, hook, the device it is matched on, and
/// its counter of refused bytes (named like the chain).
struct Direction {
    name: &'static str,
    hook: u32,
    priority: i32,
    /// `meta iif` (received) or `meta oif` (sent), and by name.
    device: u32,
    device_name: u32,
    peers: [Peers; 2],
}

/// Peers of one family: where the remote address is in the packet.
struct Peers {
    family: &'static str,
    nfproto: u8,
    /// Offset of the remote address in the network header, and its length.
    offset: u32,
    len: u32,
}

const DIRECTIONS: [Direction; 2] = [
    Direction {
        name: "tx",
        hook: HOOK_POST_ROUTING,
        priority: i32::MAX,
        device: NFT_META_OIF,
        device_name: NFT_META_OIFNAME,
        peers: [
            Peers { family: "4", nfproto: NFPROTO_IPV4, offset: 16, len: 4 },
            Peers { family: "6", nfproto: NFPROTO_IPV6, offset: 24, len: 16 },
        ],
    },
    Direction {
        name: "rx",
        hook: HOOK_PRE_ROUTING,
        priority: i32::MIN,
        device: NFT_META_IIF,
        device_name: NFT_META_IIFNAME,
        peers: [
            Peers { family: "4", nfproto: NFPROTO_IPV4, offset: 12, len: 4 },
            Peers { family: "6", nfproto: NFPROTO_IPV6, offset: 8, len: 16 },
        ],
    },
];

/// The counter object that holds the table's [`Stamp`].
pub const HARVESTS: &str = "harvests";

/// What the table says of its state, in counter [`HARVESTS`] (made anew
/// with each [`swap`], so it changes with the rules in one transaction):
/// its bytes are the number of the last harvest whose swap went through (a
/// run that dies between writing a harvest down and swapping leaves the
/// next run able to tell whether the kernel still holds that harvest's
/// bytes); its packets are the PID of the monitor that runs it, shifted
/// left by one, and the active generation in the lowest bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub number: u64,
    pub owner: u32,
    pub active: Generation,
}

impl Stamp {
    fn packets(self) -> u64 {
        u64::from(self.owner) << 1 | u64::from(self.active == Generation::B)
    }

    /// The stamp a counter of `bytes` and `packets` holds.
    pub fn read(bytes: u64, packets: u64) -> Option<Stamp> {
        let owner = u32::try_from(packets >> 1).ok()?;
        Some(Stamp { number: bytes, owner, active: if packets & 1 == 0 { Generation::A } else { Generation::B } })
    }
}

/// The counters of bytes a full set refused in `generation`, by direction
/// (0 tx, 1 rx): `tx_a`, `rx_a`. Made anew with their generation's sets, so
/// that they too are read once, whole, after nothing counts in them.
pub fn refused(generation: Generation) -> [String; 2] {
    DIRECTIONS.map(|direction| refused_name(&direction, generation))
}

fn refused_name(direction: &Direction, generation: Generation) -> String {
    format!("{}_{}", direction.name, generation.suffix())
}

/// A lane's counter in `generation`: `tx_a_lane_c6336407` (the address in
/// hex, as the rule compares it: 8 digits for IPv4, 32 for IPv6).
fn lane_name(direction: &Direction, generation: Generation, ip: IpAddr) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut name = format!("{}_{}_lane_", direction.name, generation.suffix());
    for byte in address_bytes(ip) {
        name.push(char::from(DIGITS[usize::from(byte >> 4)]));
        name.push(char::from(DIGITS[usize::from(byte & 15)]));
    }
    name
}

/// The lane whose counter object is named `name`, and its generation;
/// `None` for any other name.
pub fn lane_of(name: &str) -> Option<(Lane, Generation)> {
    let (dir, rest) = DIRECTIONS.iter().enumerate().find_map(|(dir, d)| Some((dir, name.strip_prefix(d.name)?)))?;
    let generation = [Generation::A, Generation::B].into_iter().find(|g| rest.starts_with(&format!("_{}_lane_", g.suffix())))?;
    let hex = &rest.as_bytes()[8..];
    let mut bytes = [0u8; 16];
    if !matches!(hex.len(), 8 | 32) {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    for (i, pair) in hex.chunks(2).enumerate() {
        bytes[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    let ip = match hex.len() {
        8 => IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]]),
        _ => IpAddr::from(bytes),
    };
    Some((Lane { dir, ip }, generation))
}

/// An address as the packet carries it.
fn address_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// The sets the shard chains feed, and the other ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generation {
    A,
    B,
}

impl Generation {
    pub fn other(self) -> Generation {
        match self {
            Generation::A => Generation::B,
            Generation::B => Generation::A,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Generation::A => "a",
            Generation::B => "b",
        }
    }
}

/// Every set of peers of generation `generation`, `(name, direction)` with
/// direction 0 for tx and 1 for rx: per direction and family its shards'
/// sets, then its front set (`tx4_0_a` … `tx4_31_a`, `tx4_front_a`, …).
pub fn sets(generation: Generation) -> Vec<(String, usize)> {
    let mut sets = Vec::with_capacity(4 * (SHARDS as usize + 1));
    for (dir, direction) in DIRECTIONS.iter().enumerate() {
        for peers in &direction.peers {
            sets.extend((0..SHARDS).map(|shard| (set_name(direction, peers, shard, generation), dir)));
            sets.push((front_name(direction, peers, generation), dir));
        }
    }
    sets
}

/// The front set of one direction and family in one generation: `tx4_front_a`.
fn front_name(direction: &Direction, peers: &Peers, generation: Generation) -> String {
    format!("{}{}_front_{}", direction.name, peers.family, generation.suffix())
}

/// A shard's set in one generation, and the chain that feeds it: `tx4_7_a`.
fn set_name(direction: &Direction, peers: &Peers, shard: u32, generation: Generation) -> String {
    format!("{}{}_{shard}_{}", direction.name, peers.family, generation.suffix())
}

/// The chain of a direction's rules for peers of `peers`' family: the
/// base chain itself for IPv4, `rx6` for IPv6.
fn family_chain(direction: &Direction, peers: &Peers) -> String {
    if peers.nfproto == NFPROTO_IPV4 { direction.name.to_string() } else { format!("{}{}", direction.name, peers.family) }
}

/// The verdict map from a peer's hash to its shard's chain of the active
/// generation.
fn shard_map(direction: &Direction, peers: &Peers) -> String {
    format!("{}{}_shards", direction.name, peers.family)
}

/// What the table counts and how much room it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Peers per direction and family in one interval: peers beyond it
    /// count only in the counters of refused bytes. Each shard gets a
    /// quarter more than its share, so the seeded hash's unevenness (about
    /// 2 % at 100,000 peers) refuses no one before the whole is full.
    pub size: u32,
    /// Remote blocks never counted.
    pub skipped: Vec<Cidr>,
    /// Count only on this device; `None`: every device but loopback.
    pub iface: Option<Device>,
}

/// The device `-i` names, and the index it had when the monitor started.
/// The table matches it by name (a PPPoE or VPN device that comes back gets
/// a new index), but looks at the index first: a packet on the device as
/// it was then is known by one 4-byte compare instead of a copy and compare
/// of its 16-byte name (about 75 ns less a packet, benches/rule-cost.sh).
/// The kernel numbers new devices upwards (cyclically, from 2^31 on), so
/// the old index does not come back on another device in practice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub index: u32,
}

impl Layout {
    /// FNV-1a of the layout (the skipped ranges as the table holds them)
    /// and of this monitor's version (whose tables may be built otherwise).
    fn fingerprint(&self) -> u64 {
        let iface = self.iface.as_ref().map_or_else(|| "*".to_string(), |device| format!("{} {}", device.name, device.index));
        let mut text = format!("{} {STRUCTURE} {} {iface}", env!("CARGO_PKG_VERSION"), self.size);
        for v4 in [true, false] {
            for (first, last) in skipped_ranges(&self.skipped, v4) {
                text.push_str(&format!(" {first:x}-{last:x}"));
            }
        }
        text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    }
}

/// Creates table `name` as `layout` says, its shard chains feeding
/// `stamp.active`, in two transactions. The first makes everything but the
/// rules of the base chains, which count nothing while they are empty
/// (with `replace`, it deletes an existing table of that name first). The
/// second adds those rules and the [`HARVESTS`] counter, whose stamp marks
/// the table whole: a run killed between the two leaves a table without a
/// stamp, which the next run replaces.
///
/// Why two: the kernel makes a transaction's rules live before it finishes
/// publishing its new sets' elements. An interval set, on kernels that
/// search a sorted array of its ranges (6.18 here: `nft_rbtree_commit`),
/// gets that array at the end of the commit, so for its last part (some
/// hundred microseconds at this table's size) the skipped blocks' lookup
/// finds nothing and packets of never-counted or excluded peers went into
/// the sets (lab test `a_table_counts_no_skipped_peer_from_its_first_packet`).
pub fn create(socket: &mut Socket, name: &str, layout: &Layout, replace: bool, stamp: Stamp) -> io::Result<()> {
    let seq = socket.next_seq();
    let mut messages = Vec::new();
    if replace {
        messages.push(delete_message(name, NLM_F_REQUEST, seq));
    }
    let create = NLM_F_REQUEST | NLM_F_CREATE;
    let mut table = Builder::new(NEWTABLE, create, seq, FAMILY_INET);
    let note = owner_note(std::process::id(), layout);
    table.attr_str(1, name).attr(NFTA_TABLE_USERDATA, note.as_bytes()); // NFTA_TABLE_NAME
    messages.push(table.finish());
    let mut ids = 0;
    let mut next_id = || {
        ids += 1;
        ids
    };
    let mut maps = Vec::new();
    for direction in &DIRECTIONS {
        for generation in [Generation::A, Generation::B] {
            messages.push(new_counter(name, &refused_name(direction, generation), 0, 0, seq));
        }
        messages.push(new_base_chain(name, direction, seq));
        messages.push(new_chain(name, &family_chain(direction, &direction.peers[1]), seq));
        for peers in &direction.peers {
            for shard in 0..SHARDS {
                for generation in [Generation::A, Generation::B] {
                    let set = set_name(direction, peers, shard, generation);
                    messages.push(new_set(name, &set, peers, next_id(), set_room(layout), seq));
                    messages.push(new_chain(name, &set, seq)); // its chain: named like it
                }
            }
            for generation in [Generation::A, Generation::B] {
                messages.push(new_set(name, &front_name(direction, peers, generation), peers, next_id(), set_room(layout), seq));
            }
            let map = shard_map(direction, peers);
            let id = next_id();
            messages.push(new_shard_map(name, &map, id, seq));
            messages.push(shard_map_elements(NEWSETELEM, name, &map, Some(id), direction, peers, stamp.active, seq));
            maps.push((map, id));
        }
    }
    for direction in &DIRECTIONS {
        for peers in &direction.peers {
            for shard in 0..SHARDS {
                for generation in [Generation::A, Generation::B] {
                    messages.extend(shard_rules(name, direction, peers, shard, generation, seq));
                }
            }
        }
    }
    // The skipped blocks: one interval set per family, shared by both
    // chains, and, if they have too many blocks of leads for a rule each,
    // the set of their leads that spares most packets the interval lookup.
    let mut skip_sets = Vec::new();
    for peers in &DIRECTIONS[0].peers {
        let ranges = skipped_ranges(&layout.skipped, peers.len == 4);
        if let Some(mut skip) = SkipSets::made_for(layout, peers) {
            skip.id = next_id();
            messages.push(new_skip_set(name, &skip.set, peers, skip.id, seq));
            messages.extend(skip_set_elements(name, &skip.set, skip.id, peers, &ranges, seq));
            if let (Prefilter::Bitmap(lead_set, lead_id), Some(leads)) = (&mut skip.prefilter, leads(&ranges, peers.len == 4)) {
                *lead_id = next_id();
                messages.push(new_lead_set(name, lead_set, peers, *lead_id, leads.len(), seq));
                messages.push(lead_set_elements(name, lead_set, *lead_id, peers, &leads, seq));
            }
            skip_sets.push(skip);
        }
    }
    let counting = Counting { table: name, layout, skip_sets: &skip_sets, maps: &maps, generation: stamp.active, seed: hash_seed(), lanes: &[] };
    // The IPv6 chains' rules count nothing until a base chain sends them packets.
    for direction in &DIRECTIONS {
        messages.extend(counting.family_rules(direction, &direction.peers[1], seq));
    }
    let live_seq = socket.next_seq();
    let mut live = vec![new_counter(name, HARVESTS, stamp.number, stamp.packets(), live_seq)];
    for direction in &DIRECTIONS {
        live.extend(counting.base_rules(direction, live_seq));
    }
    socket.exchange(&batch(messages, seq), seq, |_| {})?;
    socket.exchange(&batch(live, live_seq), live_seq, |_| {}).inspect_err(|_| {
        // A table that counts nothing is no use to leave behind.
        let _ = delete(socket, name);
    })
}

/// What the rules of the chains that count a packet (the base chains and
/// the IPv6 chains: [`family_chain`]) refer to: they name the front sets of
/// the generation they feed, so each [`swap`] writes them anew.
struct Counting<'a> {
    table: &'a str,
    layout: &'a Layout,
    /// The skipped blocks' sets, with the ids [`create`] gave them (by
    /// name only, 0, afterwards).
    skip_sets: &'a [SkipSets],
    /// The shard maps, with their ids, by direction and family (none
    /// afterwards: they are found by name).
    maps: &'a [(String, u32)],
    generation: Generation,
    seed: u32,
    /// The lanes of `generation`, busiest first.
    lanes: &'a [Lane],
}

impl Counting<'_> {
    /// A base chain's rules: not the loopback (or only `-i`'s device),
    /// IPv6 to its chain, then IPv4's [`Counting::family_rules`].
    fn base_rules(&self, direction: &Direction, seq: u32) -> Vec<Vec<u8>> {
        let flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND;
        let mut rules = self.lane_rules(direction, &direction.peers[0], seq);
        rules.extend([
            self.fast_rule(direction, &direction.peers[0], seq),
            device_rule(self.table, direction, self.layout.iface.as_ref(), flags, seq),
            ipv6_rule(self.table, direction, &direction.peers[1], flags, seq),
        ]);
        rules.extend(self.family_rules(direction, &direction.peers[0], seq));
        rules
    }

    /// The rules that count peers of `peers`' family: skip the blocks never
    /// counted, count in the front set while it has room, else in a shard.
    fn family_rules(&self, direction: &Direction, peers: &Peers, seq: u32) -> Vec<Vec<u8>> {
        let (table, chain) = (self.table, family_chain(direction, peers));
        let flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND;
        let mut rules = Vec::new();
        if peers.nfproto == NFPROTO_IPV6 {
            rules.extend(self.lane_rules(direction, peers, seq));
            rules.push(self.fast_rule(direction, peers, seq));
        }
        if let Some(skip) = self.skip_sets.iter().find(|skip| skip.len == peers.len) {
            rules.extend(skip_rules(table, &chain, peers, skip, flags, seq));
        }
        rules.push(update_rule(table, &chain, &front_name(direction, peers, self.generation), peers, flags, seq));
        let map = shard_map(direction, peers);
        let map_id = self.maps.iter().find(|(name, _)| *name == map).map_or(0, |(_, id)| *id);
        rules.push(dispatch_rule(table, &chain, peers, &map, map_id, self.seed, flags, seq));
        rules
    }

    /// The common path of a peer of `peers`' family as one rule, with its
    /// address loaded once: (IPv4, in the base chain) the device and the
    /// family, then a lead not skipped ([`not_skipped`]), then the front
    /// set's update and `return`. Every other packet (another device or
    /// family, a lead skipped or partly skipped, a full front set) goes on
    /// to the rules after it, which decide step by step as this rule does
    /// at once: the same packets count in the same sets. What it spares a
    /// packet is a load of the address for each skipped lead's rule (13 ns
    /// in all here, `benches/rule-cost.sh`); a peer beyond the front set's
    /// room pays a second refusal there (about 50 ns).
    fn fast_rule(&self, direction: &Direction, peers: &Peers, seq: u32) -> Vec<u8> {
        let flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND;
        let skip = self.skip_sets.iter().find(|skip| skip.len == peers.len);
        rule(self.table, &family_chain(direction, peers), flags, seq, |r| {
            if peers.nfproto == NFPROTO_IPV4 {
                self.on_a_counted_device(r, direction);
                load_meta(r, NFT_META_NFPROTO);
                compare(r, NFT_CMP_EQ, &[peers.nfproto]);
            }
            load_address(r, peers, peers.len);
            if let Some(skip) = skip {
                not_skipped(r, skip);
            }
            update_set(r, &front_name(direction, peers, self.generation));
            verdict_return(r);
        })
    }
}

impl Counting<'_> {
    /// The rules of the lanes of `direction` and `peers`' family, busiest
    /// first: each [`Lane`]'s address first, so that every other packet
    /// leaves the rule at its first compare; then (IPv4, in the base
    /// chain) the family, as an IPv4 header without options (two
    /// expressions the interpreter inlines, where `meta nfproto` is a
    /// call; no IPv6 header starts with 0x45, and a packet with options
    /// takes the common path and counts in a set: the harvest adds both)
    /// and the device as the fast rule tests it; then the lane's counter
    /// and `return`. An IPv6 packet reaches its chain past the device rule.
    fn lane_rules(&self, direction: &Direction, peers: &Peers, seq: u32) -> Vec<Vec<u8>> {
        let flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND;
        let ours = |lane: &&Lane| DIRECTIONS[lane.dir].name == direction.name && address_bytes(lane.ip).len() as u32 == peers.len;
        let rule_of = |lane: &Lane| {
            rule(self.table, &family_chain(direction, peers), flags, seq, |r| {
                load_address(r, peers, peers.len);
                compare(r, NFT_CMP_EQ, &address_bytes(lane.ip));
                if peers.nfproto == NFPROTO_IPV4 {
                    load_network_header(r, 0, 1);
                    compare(r, NFT_CMP_EQ, &[0x45]); // version 4, a header of 5 words
                    self.on_a_counted_device(r, direction);
                }
                count_in(r, &lane_name(direction, self.generation, lane.ip));
                verdict_return(r);
            })
        };
        self.lanes.iter().filter(ours).map(rule_of).collect()
    }

    /// The packet crossed a device that counts: `-i`'s, by the index it
    /// had at start (the device rule after it also knows it by name), or
    /// any but loopback.
    fn on_a_counted_device(&self, r: &mut Builder, direction: &Direction) {
        load_meta(r, direction.device);
        match &self.layout.iface {
            Some(device) => compare(r, NFT_CMP_EQ, &device.index.to_ne_bytes()),
            None => compare(r, NFT_CMP_NEQ, &LOOPBACK_IFINDEX.to_ne_bytes()),
        }
    }
}

/// With the remote address in the register: its lead in no block of
/// `skip`'s prefilter (a compare per block, whole or partly skipped, the
/// masked ones through a second register; or the bitmap's lookup, or with
/// no prefilter the interval set's, inverted).
fn not_skipped(rule: &mut Builder, skip: &SkipSets) {
    let inverted_lookup = |rule: &mut Builder, set: &str| {
        expression(rule, "lookup", |e| {
            e.attr_str(1, set).attr_u32(2, REG).attr_u32(5, NFT_LOOKUP_F_INV); // NFTA_LOOKUP_SET, _SREG, _FLAGS
        });
    };
    match &skip.prefilter {
        Prefilter::Inline(blocks) => {
            for block in blocks {
                match block.whole_bytes() {
                    Some(len) => compare(rule, NFT_CMP_NEQ, &block.prefix.to_be_bytes()[..len]),
                    None => {
                        bitwise_and(rule, REG, MASKED, block.mask());
                        compare_in(rule, MASKED, NFT_CMP_NEQ, &block.masked_prefix());
                    }
                }
            }
        }
        Prefilter::Bitmap(lead_set, _) => inverted_lookup(rule, lead_set),
        Prefilter::None => inverted_lookup(rule, &skip.set),
    }
}

/// What the harvest found in the generation a [`swap`] makes anew.
pub struct Retired<'a> {
    /// Which of its sets held elements ([`sets`] order).
    pub occupied: &'a [bool],
    /// Whether its counters of refused bytes counted any (0 tx, 1 rx).
    pub refused: [bool; 2],
    /// Its lanes' counters, by name.
    pub lanes: &'a [String],
}

/// Points the shard maps of table `name` at the chains of generation
/// `stamp.active`, writes anew the rules of the chains that count (naming
/// that generation's front sets and its `lanes`' counters, made here, and
/// with a new seed for the shard hash), makes anew, empty, those of its
/// sets and counters of refused bytes that held something and deletes its
/// old lanes' counters (`retired`), and stamps the table, all in one transaction: a
/// packet counts either in the old generation or in the new one (the
/// kernel switches every chain's rules at once), and the stamp says which
/// harvests' bytes have left the kernel. The old generation is left as it
/// is, for reading.
///
/// The rest of the new generation was read empty, and nothing has written
/// to it since the swap before: it is empty still, and left as it is.
/// (Making a set costs its hash buckets, allocated and cleared for all its
/// room; making a rule, a search of the table's sets by name: a quiet
/// interval's swap changes the maps, the few rules of the chains that
/// count, and the stamp.)
pub fn swap(socket: &mut Socket, name: &str, layout: &Layout, stamp: Stamp, retired: &Retired, lanes: &[Lane]) -> io::Result<()> {
    let to = stamp.active;
    let seq = socket.next_seq();
    let mut messages = vec![delete_object(name, HARVESTS, seq), new_counter(name, HARVESTS, stamp.number, stamp.packets(), seq)];
    // Rules go before what they use: a set or counter still used cannot go.
    for direction in &DIRECTIONS {
        messages.push(flush_chain(name, direction.name, seq));
        messages.push(flush_chain(name, &family_chain(direction, &direction.peers[1]), seq));
    }
    let mut remade = Vec::new();
    let mut id = 0;
    // A set past the end of `occupied` is made anew, to be sure.
    let mut held = retired.occupied.iter().copied().chain(std::iter::repeat(true));
    for (dir, direction) in DIRECTIONS.iter().enumerate() {
        let refused = retired.refused[dir];
        for peers in &direction.peers {
            for shard in 0..SHARDS {
                let occupied = held.next().unwrap_or(true);
                if occupied || refused {
                    let chain = set_name(direction, peers, shard, to);
                    messages.push(flush_chain(name, &chain, seq));
                    remade.push((direction, peers, shard, occupied.then_some(chain)));
                }
            }
            if held.next().unwrap_or(true) {
                let front = front_name(direction, peers, to);
                id += 1;
                messages.push(delete_set(name, &front, seq));
                messages.push(new_set(name, &front, peers, id, set_room(layout), seq));
            }
            let map = shard_map(direction, peers);
            messages.push(shard_map_elements(DELSETELEM, name, &map, None, direction, peers, to.other(), seq));
            messages.push(shard_map_elements(NEWSETELEM, name, &map, None, direction, peers, to, seq));
        }
        if refused {
            messages.push(delete_object(name, &refused_name(direction, to), seq));
            messages.push(new_counter(name, &refused_name(direction, to), 0, 0, seq));
        }
    }
    for (direction, peers, shard, set) in remade {
        if let Some(set) = set {
            id += 1;
            messages.push(delete_set(name, &set, seq));
            messages.push(new_set(name, &set, peers, id, set_room(layout), seq));
        }
        messages.extend(shard_rules(name, direction, peers, shard, to, seq));
    }
    // The old lanes' counters: no rule names them since the swap before.
    messages.extend(retired.lanes.iter().map(|lane| delete_object(name, lane, seq)));
    let lanes: Vec<Lane> = lanes.iter().copied().filter(|lane| lane.dir < DIRECTIONS.len()).collect();
    for lane in &lanes {
        messages.push(new_counter(name, &lane_name(&DIRECTIONS[lane.dir], to, lane.ip), 0, 0, seq));
    }
    let skip_sets: Vec<SkipSets> = DIRECTIONS[0].peers.iter().filter_map(|peers| SkipSets::made_for(layout, peers)).collect();
    let counting = Counting { table: name, layout, skip_sets: &skip_sets, maps: &[], generation: to, seed: hash_seed(), lanes: &lanes };
    for direction in &DIRECTIONS {
        messages.extend(counting.base_rules(direction, seq));
        messages.extend(counting.family_rules(direction, &direction.peers[1], seq));
    }
    socket.exchange(&batch(messages, seq), seq, |_| {})
}

/// Room in each set of peers (a shard's, and the front set's, which holds
/// as many): a shard's share of the peers and a quarter more, or, where
/// that is less, four standard deviations and 16 more: the hash
/// gives some shards more than their share, and relatively more the fewer
/// each expects. No fixed floor: the kernel allocates a set's hash buckets
/// for its room up front (all sets of both generations, whether used or
/// not), so a small `--max-ips` must make small sets on a small router.
pub fn set_room(layout: &Layout) -> u32 {
    let share = layout.size.div_ceil(SHARDS);
    let spread = 4 * share.isqrt() + 16;
    share.saturating_add((share / 4).max(spread))
}

/// The two rules of a shard's chain of `generation`: count in its set, or,
/// if that is full, in the generation's counter of refused bytes.
fn shard_rules(table: &str, direction: &Direction, peers: &Peers, shard: u32, generation: Generation, seq: u32) -> [Vec<u8>; 2] {
    let flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND;
    let set = set_name(direction, peers, shard, generation);
    let refused = refused_name(direction, generation);
    [update_rule(table, &set, &set, peers, flags, seq), refused_rule(table, &set, &refused, flags, seq)]
}

/// Deletes every rule of chain `chain`.
fn flush_chain(table: &str, chain: &str, seq: u32) -> Vec<u8> {
    let mut rule = Builder::new(DELRULE, NLM_F_REQUEST, seq, FAMILY_INET);
    rule.attr_str(1, table).attr_str(2, chain); // NFTA_RULE_TABLE, NFTA_RULE_CHAIN; no handle: all of them
    rule.finish()
}

fn delete_object(table: &str, name: &str, seq: u32) -> Vec<u8> {
    let mut obj = Builder::new(DELOBJ, NLM_F_REQUEST, seq, FAMILY_INET);
    obj.attr_str(1, table).attr_str(2, name).attr_u32(3, NFT_OBJECT_COUNTER); // NFTA_OBJ_TABLE, _NAME, _TYPE
    obj.finish()
}

fn delete_set(table: &str, name: &str, seq: u32) -> Vec<u8> {
    let mut set = Builder::new(DELSET, NLM_F_REQUEST, seq, FAMILY_INET);
    set.attr_str(1, table).attr_str(2, name); // NFTA_SET_TABLE, NFTA_SET_NAME
    set.finish()
}

/// A seed for the shard hash, different per table: no sender can aim all
/// its addresses at one shard (at worst that would fill the shard, whose
/// refused bytes still count).
fn hash_seed() -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}

/// `messages` between a batch's begin and end; the last asks for the
/// acknowledgement that ends the exchange (errors come earlier, by message).
fn batch(mut messages: Vec<Vec<u8>>, seq: u32) -> Vec<u8> {
    if let Some(last) = messages.last_mut() {
        let flags = u16::from_ne_bytes([last[6], last[7]]) | NLM_F_ACK;
        last[6..8].copy_from_slice(&flags.to_ne_bytes());
    }
    let mut batch = batch_marker(BATCH_BEGIN, seq);
    messages.iter().for_each(|m| batch.extend(m));
    batch.extend(batch_marker(BATCH_END, seq));
    batch
}

/// Deletes table `name` and everything in it.
pub fn delete(socket: &mut Socket, name: &str) -> io::Result<()> {
    let seq = socket.next_seq();
    socket.exchange(&batch(vec![delete_message(name, NLM_F_REQUEST, seq)], seq), seq, |_| {})
}

/// What table `name` says about who made it (its user data), if it exists.
pub fn find(socket: &mut Socket, name: &str) -> io::Result<Option<String>> {
    let seq = socket.next_seq();
    let mut request = Builder::new(GETTABLE, NLM_F_REQUEST | NLM_F_ACK, seq, FAMILY_INET);
    request.attr_str(1, name);
    let mut note = None;
    let found = socket.exchange(&request.finish(), seq, |message| {
        let data = message.attributes().find(NFTA_TABLE_USERDATA).unwrap_or_default();
        note = Some(String::from_utf8_lossy(data).into_owned());
    });
    match found {
        Ok(()) => Ok(note),
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(err) => Err(err),
    }
}

/// The table's user data: which program and process made it (so a later
/// run can tell a live monitor's table from one a crash left behind), and
/// a fingerprint of its layout (so a later run knows whether it may go on
/// with the table as it is).
pub fn owner_note(pid: u32, layout: &Layout) -> String {
    format!("ip_traffic_monitor_cli pid {pid} layout {:016x}", layout.fingerprint())
}

/// The PID in a table's user data, if the note is ours.
pub fn owner_pid(note: &str) -> Option<u32> {
    let rest = note.strip_prefix("ip_traffic_monitor_cli pid ")?;
    rest.split(' ').next()?.parse().ok()
}

/// Whether a table's user data says it was made with `layout`.
pub fn made_with(note: &str, layout: &Layout) -> bool {
    note.ends_with(&format!(" layout {:016x}", layout.fingerprint()))
}

fn delete_message(name: &str, flags: u16, seq: u32) -> Vec<u8> {
    let mut table = Builder::new(DELTABLE, flags, seq, FAMILY_INET);
    table.attr_str(1, name);
    table.finish()
}

/// A batch begin or end: the nfgenmsg's resource id names the subsystem.
fn batch_marker(kind: u16, seq: u32) -> Vec<u8> {
    let mut marker = Builder::new(kind, NLM_F_REQUEST, seq, 0).finish();
    marker[super::netlink::HEADER_LEN + 2..super::netlink::HEADER_LEN + 4].copy_from_slice(&10u16.to_be_bytes());
    marker
}

/// `counter NAME { packets PACKETS bytes BYTES }`: a named counter object.
fn new_counter(table: &str, name: &str, bytes: u64, packets: u64, seq: u32) -> Vec<u8> {
    let mut obj = Builder::new(NEWOBJ, NLM_F_REQUEST | NLM_F_CREATE, seq, FAMILY_INET);
    obj.attr_str(1, table).attr_str(2, name).attr_u32(3, NFT_OBJECT_COUNTER); // NFTA_OBJ_TABLE, _NAME, _TYPE
    let data = obj.begin_nest(4); // NFTA_OBJ_DATA
    obj.attr(1, &bytes.to_be_bytes()).attr(2, &packets.to_be_bytes()); // NFTA_COUNTER_BYTES, _PACKETS
    obj.end_nest(data);
    obj.finish()
}

/// A set of peers with a counter per element, filled from the packet path,
/// without timeouts: it is emptied by being made anew (see [`swap`]).
fn new_set(table: &str, name: &str, peers: &Peers, id: u32, size: u32, seq: u32) -> Vec<u8> {
    let mut set = Builder::new(NEWSET, NLM_F_REQUEST | NLM_F_CREATE, seq, FAMILY_INET);
    set.attr_str(1, table) // NFTA_SET_TABLE
        .attr_str(2, name) // NFTA_SET_NAME
        .attr_u32(3, 0x20) // NFTA_SET_FLAGS: NFT_SET_EVAL (updated from the packet path)
        .attr_u32(4, if peers.len == 4 { 7 } else { 8 }) // NFTA_SET_KEY_TYPE: ipv4_addr / ipv6_addr
        .attr_u32(5, peers.len) // NFTA_SET_KEY_LEN
        .attr_u32(10, id); // NFTA_SET_ID
    set_size(&mut set, size);
    let expr = set.begin_nest(17); // NFTA_SET_EXPR: every element gets a counter
    set.attr_str(1, "counter");
    set.end_nest(expr);
    set.finish()
}

/// A verdict map from a shard number (a 32-bit register value) to a goto.
fn new_shard_map(table: &str, name: &str, id: u32, seq: u32) -> Vec<u8> {
    let mut map = Builder::new(NEWSET, NLM_F_REQUEST | NLM_F_CREATE, seq, FAMILY_INET);
    map.attr_str(1, table)
        .attr_str(2, name)
        .attr_u32(3, 0x08) // NFT_SET_MAP (not constant: each swap changes where it jumps)
        .attr_u32(4, 0) // NFTA_SET_KEY_TYPE: informational only
        .attr_u32(5, 4) // NFTA_SET_KEY_LEN
        .attr_u32(6, NFT_DATA_VERDICT) // NFTA_SET_DATA_TYPE
        .attr_u32(10, id);
    // Its size: a map of a known size and 4-byte keys is the kernel's
    // fixed hash table, a cheaper lookup than the resizable one.
    set_size(&mut map, SHARDS);
    map.finish()
}

/// The map's elements, added (`NEWSETELEM`) or deleted (`DELSETELEM`):
/// shard k goes to the chain of set k of `generation`. (`id`: the map's,
/// if it is made in the same transaction.)
#[allow(clippy::too_many_arguments)]
fn shard_map_elements(
    kind: u16,
    table: &str,
    map: &str,
    id: Option<u32>,
    direction: &Direction,
    peers: &Peers,
    generation: Generation,
    seq: u32,
) -> Vec<u8> {
    let flags = if kind == NEWSETELEM { NLM_F_REQUEST | NLM_F_CREATE } else { NLM_F_REQUEST };
    let mut elements = Builder::new(kind, flags, seq, FAMILY_INET);
    elements.attr_str(1, table).attr_str(2, map); // NFTA_SET_ELEM_LIST_TABLE, _SET
    if let Some(id) = id {
        elements.attr_u32(4, id); // NFTA_SET_ELEM_LIST_SET_ID
    }
    let list = elements.begin_nest(3); // NFTA_SET_ELEM_LIST_ELEMENTS
    for shard in 0..SHARDS {
        let element = elements.begin_nest(1); // NFTA_LIST_ELEM
        // The hash leaves a u32 in its register in the CPU's byte order.
        data(&mut elements, 1, &shard.to_ne_bytes()); // NFTA_SET_ELEM_KEY
        let value = elements.begin_nest(2); // NFTA_SET_ELEM_DATA
        let verdict = elements.begin_nest(2); // NFTA_DATA_VERDICT
        let chain = set_name(direction, peers, shard, generation);
        elements.attr_u32(1, NFT_GOTO as u32).attr_str(2, &chain); // NFTA_VERDICT_CODE, _CHAIN
        elements.end_nest(verdict);
        elements.end_nest(value);
        elements.end_nest(element);
    }
    elements.end_nest(list);
    elements.finish()
}

fn new_base_chain(table: &str, direction: &Direction, seq: u32) -> Vec<u8> {
    let mut chain = Builder::new(NEWCHAIN, NLM_F_REQUEST | NLM_F_CREATE, seq, FAMILY_INET);
    chain.attr_str(1, table).attr_str(3, direction.name); // NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME
    let h = chain.begin_nest(4); // NFTA_CHAIN_HOOK
    // NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY (a signed 32-bit number, sent as its bits)
    chain.attr_u32(1, direction.hook).attr_u32(2, direction.priority as u32);
    chain.end_nest(h);
    chain.attr_str(7, "filter"); // NFTA_CHAIN_TYPE
    chain.finish()
}

/// A regular chain (no hook), reached by a jump.
fn new_chain(table: &str, name: &str, seq: u32) -> Vec<u8> {
    let mut chain = Builder::new(NEWCHAIN, NLM_F_REQUEST | NLM_F_CREATE, seq, FAMILY_INET);
    chain.attr_str(1, table).attr_str(3, name);
    chain.finish()
}

fn rule(table: &str, chain: &str, flags: u16, seq: u32, expressions: impl FnOnce(&mut Builder)) -> Vec<u8> {
    let mut rule = Builder::new(NEWRULE, flags, seq, FAMILY_INET);
    rule.attr_str(1, table).attr_str(2, chain); // NFTA_RULE_TABLE, NFTA_RULE_CHAIN
    let list = rule.begin_nest(4); // NFTA_RULE_EXPRESSIONS
    expressions(&mut rule);
    rule.end_nest(list);
    rule.finish()
}

/// `meta iif 1 return` (loopback), or with a device `meta iif != N meta
/// iifname != IFX return`: the device's packets end the rule at its first
/// compare, unless the device was made anew since (then at its second).
fn device_rule(table: &str, direction: &Direction, iface: Option<&Device>, flags: u16, seq: u32) -> Vec<u8> {
    rule(table, direction.name, flags, seq, |r| match iface {
        Some(device) => {
            load_meta(r, direction.device);
            compare(r, NFT_CMP_NEQ, &device.index.to_ne_bytes()); // an ifindex is kept in host order
            load_meta(r, direction.device_name);
            compare(r, NFT_CMP_NEQ, &ifname(&device.name));
            verdict_return(r);
        }
        None => {
            load_meta(r, direction.device);
            compare(r, NFT_CMP_EQ, &LOOPBACK_IFINDEX.to_ne_bytes()); // an ifindex is kept in host order
            verdict_return(r);
        }
    })
}

/// A device name as `meta iifname` loads it: IFNAMSIZ bytes, zero-padded.
fn ifname(name: &str) -> [u8; 16] {
    let mut padded = [0u8; 16];
    let len = name.len().min(15);
    padded[..len].copy_from_slice(&name.as_bytes()[..len]);
    padded
}

/// The skipped blocks of one family as sorted, merged ranges `[first,
/// last]` of addresses (IPv4 in the low 32 bits): an interval set holds no
/// overlapping ranges, and `--exclude` may overlap the default blocks.
pub fn skipped_ranges(blocks: &[Cidr], v4: bool) -> Vec<(u128, u128)> {
    let width: u32 = if v4 { 32 } else { 128 };
    // In order as they come (a few dozen at most: no sort routine for so few).
    let mut ranges: Vec<(u128, u128)> = Vec::with_capacity(blocks.len());
    for block in blocks.iter().filter(|block| block.network().is_ipv4() == v4) {
        let bits = match block.network() {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        let host_bits = width - u32::from(block.prefix());
        let span = u128::MAX.checked_shr(128 - host_bits).unwrap_or(0);
        let range = (bits & !span, bits | span);
        ranges.insert(ranges.partition_point(|r| *r < range), range);
    }
    let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match merged.last_mut() {
            Some(previous) if first <= previous.1.saturating_add(1) => previous.1 = previous.1.max(last),
            _ => merged.push((first, last)),
        }
    }
    merged
}

/// A constant interval set of addresses of one family.
fn new_skip_set(table: &str, name: &str, peers: &Peers, id: u32, seq: u32) -> Vec<u8> {
    let mut set = Builder::new(NEWSET, NLM_F_REQUEST | NLM_F_CREATE, seq, FAMILY_INET);
    set.attr_str(1, table)
        .attr_str(2, name)
        .attr_u32(3, 0x02 | 0x04) // NFT_SET_CONSTANT | NFT_SET_INTERVAL
        .attr_u32(4, if peers.len == 4 { 7 } else { 8 })
        .attr_u32(5, peers.len)
        .attr_u32(10, id);
    set.finish()
}

/// Ranges per message of [`skip_set_elements`]: an attribute's length is 16
/// bits, so a message's list of elements must stay under 64 KiB (at most 72
/// bytes a range, an IPv6 one with its end), whatever `--exclude` lists.
const RANGES_PER_MESSAGE: usize = 800;

/// The set's elements, in as many messages as they need: each range as its
/// first address, and the address after its last flagged as an interval's
/// end (none for a range that runs to the family's last address).
fn skip_set_elements(table: &str, set: &str, id: u32, peers: &Peers, ranges: &[(u128, u128)], seq: u32) -> Vec<Vec<u8>> {
    let address = |bits: u128| if peers.len == 4 { (bits as u32).to_be_bytes().to_vec() } else { bits.to_be_bytes().to_vec() };
    let top = if peers.len == 4 { u128::from(u32::MAX) } else { u128::MAX };
    let mut messages = Vec::new();
    for ranges in ranges.chunks(RANGES_PER_MESSAGE) {
        let mut elements = Builder::new(NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE, seq, FAMILY_INET);
        elements.attr_str(1, table).attr_str(2, set).attr_u32(4, id);
        let list = elements.begin_nest(3);
        for &(first, last) in ranges {
            let element = elements.begin_nest(1);
            data(&mut elements, 1, &address(first)); // NFTA_SET_ELEM_KEY
            elements.end_nest(element);
            if last < top {
                let element = elements.begin_nest(1);
                data(&mut elements, 1, &address(last + 1));
                elements.attr_u32(3, 1); // NFTA_SET_ELEM_FLAGS: NFT_SET_ELEM_INTERVAL_END
                elements.end_nest(element);
            }
        }
        elements.end_nest(list);
        messages.push(elements.finish());
    }
    messages
}

/// A family's sets of skipped blocks: the interval set, and how a rule
/// finds the few addresses that need its lookup.
struct SkipSets {
    /// The family's address length: 4 or 16.
    len: u32,
    set: String,
    id: u32,
    prefilter: Prefilter,
}

/// What spares most packets the interval set's lookup: the skipped
/// blocks' leading byte (IPv4) or two (IPv6), compared before it.
enum Prefilter {
    /// A rule per aligned block of leads ([`lead_blocks`]): its compares
    /// are inlined by the kernel's interpreter, so a packet pays about 6 ns
    /// for each block it is not in (`benches/rule-cost.sh`, `+cmp8`).
    Inline(Vec<LeadBlock>),
    /// The leads in a constant set the kernel keeps as a bitmap: one
    /// lookup of about 95 ns here, whatever it holds (its calls pay for
    /// this CPU's slow returns).
    Bitmap(String, u32),
    /// Too many leads to spare anything: the interval lookup for all.
    None,
}

/// Beyond this many blocks of leads, one bitmap lookup costs a packet less
/// than a rule per block (the defaults: 8 of IPv4, 4 of IPv6).
const MAX_INLINE_BLOCKS: usize = 12;

impl SkipSets {
    /// The sets [`create`] makes for `layout`'s skipped blocks of `peers`'
    /// family, by name (ids 0: given when they are made); `None` if that
    /// family skips nothing.
    fn made_for(layout: &Layout, peers: &Peers) -> Option<SkipSets> {
        let v4 = peers.len == 4;
        let ranges = skipped_ranges(&layout.skipped, v4);
        let prefilter = match lead_blocks(&ranges, v4) {
            Some(blocks) if blocks.len() <= MAX_INLINE_BLOCKS => Prefilter::Inline(blocks),
            Some(_) => Prefilter::Bitmap(format!("skip{}_lead", peers.family), 0),
            None => Prefilter::None,
        };
        (!ranges.is_empty()).then(|| SkipSets { len: peers.len, set: format!("skip{}", peers.family), id: 0, prefilter })
    }
}

/// The rules that let a packet whose remote address is in a skipped block
/// leave the chain uncounted, so it takes no room in a set. Most public
/// addresses end each rule at its first compare, before the interval
/// set's binary search:
///
/// ```text
/// @nh,OFFSET,8 10 return                      a block of leads all skipped (10/8)
/// @nh,OFFSET,32 & 0xe0000000 == 0xe0000000 return        (224/3)
/// @nh,OFFSET,8 172 ADDRESS @skip4 return      a lead partly skipped (172.16/12)
/// ```
///
/// or, with more blocks of leads than [`MAX_INLINE_BLOCKS`], one rule
/// `@nh,OFFSET,LEAD @skip4_lead ADDRESS @skip4 return`.
fn skip_rules(table: &str, chain: &str, peers: &Peers, skip: &SkipSets, flags: u16, seq: u32) -> Vec<Vec<u8>> {
    let interval_lookup = |r: &mut Builder| {
        load_address(r, peers, peers.len);
        lookup(r, &skip.set, skip.id);
    };
    let blocks = match &skip.prefilter {
        Prefilter::Inline(blocks) => blocks,
        Prefilter::Bitmap(lead_set, lead_id) => {
            return vec![rule(table, chain, flags, seq, |r| {
                load_address(r, peers, lead_len(peers));
                lookup(r, lead_set, *lead_id);
                interval_lookup(r);
                verdict_return(r);
            })];
        }
        Prefilter::None => {
            return vec![rule(table, chain, flags, seq, |r| {
                interval_lookup(r);
                verdict_return(r);
            })];
        }
    };
    let rules = blocks.iter().map(|block| {
        rule(table, chain, flags, seq, |r| {
            compare_lead(r, peers, block);
            if !block.whole {
                interval_lookup(r);
            }
            verdict_return(r);
        })
    });
    rules.collect()
}

/// An aligned block of leads: the addresses whose first `bits` bits are
/// those of `prefix` (an address's first 32 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LeadBlock {
    prefix: u32,
    bits: u32,
    /// Every address in the block is skipped: no interval lookup needed.
    whole: bool,
}

impl LeadBlock {
    /// The block's bits as whole bytes (1 or 2), if they are: compared as
    /// they are loaded, with no mask.
    fn whole_bytes(&self) -> Option<usize> {
        (self.bits % 8 == 0 && self.bits > 0).then_some(self.bits as usize / 8)
    }

    /// `bits` leading ones, over an address's first 32 bits.
    fn mask(&self) -> u32 {
        u32::MAX.checked_shl(32 - self.bits).unwrap_or(0)
    }

    fn masked_prefix(&self) -> [u8; 4] {
        (self.prefix & self.mask()).to_be_bytes()
    }
}

/// The leads of `ranges` ([`leads`]) as the fewest aligned blocks, in
/// order: 224–255 is one block of 3 bits; `None` where [`leads`] gives none.
fn lead_blocks(ranges: &[(u128, u128)], v4: bool) -> Option<Vec<LeadBlock>> {
    let leads = leads(ranges, v4)?;
    let (lead_bits, shift) = if v4 { (8u32, 24u32) } else { (16, 112) };
    let mut blocks = Vec::new();
    let mut at = 0;
    while at < leads.len() {
        let first = u32::from(leads[at]);
        // Double the block while it stays aligned and every lead in it is
        // listed (the leads are distinct and ascending: its last tells).
        let mut count = 1u32;
        while first % (count * 2) == 0 && count * 2 <= 1 << lead_bits {
            let last = at + (count * 2) as usize - 1;
            if leads.get(last).map(|&lead| u32::from(lead)) != Some(first + count * 2 - 1) {
                break;
            }
            count *= 2;
        }
        let span_bits = shift + count.trailing_zeros();
        let low = u128::from(first) << shift;
        let high = low | u128::MAX >> (128 - span_bits);
        let whole = ranges.iter().any(|&(from, to)| from <= low && high <= to);
        blocks.push(LeadBlock { prefix: first << (32 - lead_bits), bits: lead_bits - count.trailing_zeros(), whole });
        at += count as usize;
    }
    Some(blocks)
}

/// The remote address's first `block.bits` bits equal the block's: a
/// whole byte or two loaded and compared, else the first 32 bits loaded,
/// masked and compared (all three inlined by the interpreter, which has
/// fast paths for loads of 1, 2 and 4 bytes and for masks and compares of
/// 4; `nf_tables_core.c`).
fn compare_lead(rule: &mut Builder, peers: &Peers, block: &LeadBlock) {
    match block.whole_bytes() {
        Some(len) => {
            load_address(rule, peers, len as u32);
            compare(rule, NFT_CMP_EQ, &block.prefix.to_be_bytes()[..len]);
        }
        None => {
            load_address(rule, peers, 4);
            bitwise_and(rule, REG, REG, block.mask());
            compare(rule, NFT_CMP_EQ, &block.masked_prefix());
        }
    }
}

/// `reg to = reg from & MASK` over 4 bytes.
fn bitwise_and(rule: &mut Builder, from: u32, to: u32, mask: u32) {
    expression(rule, "bitwise", |e| {
        e.attr_u32(1, from).attr_u32(2, to).attr_u32(3, 4); // NFTA_BITWISE_SREG, _DREG, _LEN
        data(e, 4, &mask.to_be_bytes()); // NFTA_BITWISE_MASK
        data(e, 5, &[0; 4]); // NFTA_BITWISE_XOR
    });
}

/// `@nh,OFFSET,LEN`: the first `len` bytes of the remote address, into the register.
fn load_address(rule: &mut Builder, peers: &Peers, len: u32) {
    load_network_header(rule, peers.offset, len);
}

/// `@nh,OFFSET*8,LEN*8`, into the register.
fn load_network_header(rule: &mut Builder, offset: u32, len: u32) {
    expression(rule, "payload", |e| {
        // NFTA_PAYLOAD_DREG, _BASE (network header), _OFFSET, _LEN
        e.attr_u32(1, REG).attr_u32(2, 1).attr_u32(3, offset).attr_u32(4, len);
    });
}

/// `meta KEY`, into the register.
fn load_meta(rule: &mut Builder, key: u32) {
    expression(rule, "meta", |e| {
        e.attr_u32(1, REG).attr_u32(2, key); // NFTA_META_DREG, NFTA_META_KEY
    });
}

/// `update @SET { reg 1 }`: the address in the register counted in the
/// set (a full set refuses it, which ends the rule).
fn update_set(rule: &mut Builder, set: &str) {
    expression(rule, "dynset", |e| {
        e.attr_str(1, set).attr_u32(3, 1).attr_u32(4, REG); // NFTA_DYNSET_SET_NAME, _OP (update), _SREG_KEY
    });
}

/// `@SET`: a miss ends the rule. (`set_id`: the set's, if it is made in the
/// same transaction, else 0.)
fn lookup(rule: &mut Builder, set: &str, set_id: u32) {
    expression(rule, "lookup", |e| {
        e.attr_str(1, set).attr_u32(2, REG); // NFTA_LOOKUP_SET, _SREG
        set_id_attr(e, 4, set_id); // NFTA_LOOKUP_SET_ID
    });
}

/// A set's id, where a message refers to a set made in the same
/// transaction (the kernel finds one made before by its name).
fn set_id_attr(e: &mut Builder, kind: u16, set_id: u32) {
    if set_id != 0 {
        e.attr_u32(kind, set_id);
    }
}

/// The leading bytes the prefilter looks at: one of an IPv4 address, two
/// of an IPv6 one (keys of at most two bytes make the kernel's bitmap set).
fn lead_len(peers: &Peers) -> u32 {
    if peers.len == 4 { 1 } else { 2 }
}

/// Beyond this many leads the prefilter is left out: its elements go in
/// one attribute of at most 65,535 bytes (16 bytes each), and leads that
/// most addresses have would spare nothing. (The defaults: 39 of IPv4,
/// 1,088 of IPv6.)
const MAX_LEADS: usize = 3000;

/// Every value the leading byte (IPv4) or two (IPv6) of an address take
/// inside `ranges` (sorted and merged, as [`skipped_ranges`] gives them),
/// ascending; `None` if more than [`MAX_LEADS`].
pub fn leads(ranges: &[(u128, u128)], v4: bool) -> Option<Vec<u16>> {
    let shift = if v4 { 24 } else { 112 };
    let mut leads: Vec<u16> = Vec::new();
    for &(first, last) in ranges {
        let (from, to) = ((first >> shift) as u16, (last >> shift) as u16);
        if leads.len() + usize::from(to - from) >= MAX_LEADS {
            return None;
        }
        leads.extend((from..=to).filter(|lead| leads.last() != Some(lead)).collect::<Vec<u16>>());
    }
    Some(leads)
}

/// `NFTA_SET_DESC { NFTA_SET_DESC_SIZE }`: the room of a new set, from
/// which the kernel sizes (and, for constant sets, chooses) its table.
fn set_size(set: &mut Builder, size: u32) {
    let desc = set.begin_nest(9); // NFTA_SET_DESC
    set.attr_u32(1, size); // NFTA_SET_DESC_SIZE
    set.end_nest(desc);
}

/// A constant set of leads (`lead_len` bytes).
fn new_lead_set(table: &str, name: &str, peers: &Peers, id: u32, count: usize, seq: u32) -> Vec<u8> {
    let mut set = Builder::new(NEWSET, NLM_F_REQUEST | NLM_F_CREATE, seq, FAMILY_INET);
    set.attr_str(1, table)
        .attr_str(2, name)
        .attr_u32(3, 0x02) // NFT_SET_CONSTANT
        .attr_u32(4, 0) // NFTA_SET_KEY_TYPE: informational only
        .attr_u32(5, lead_len(peers))
        .attr_u32(10, id);
    set_size(&mut set, u32::try_from(count).unwrap_or(u32::MAX));
    set.finish()
}

fn lead_set_elements(table: &str, set: &str, id: u32, peers: &Peers, leads: &[u16], seq: u32) -> Vec<u8> {
    let mut elements = Builder::new(NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE, seq, FAMILY_INET);
    elements.attr_str(1, table).attr_str(2, set).attr_u32(4, id);
    let list = elements.begin_nest(3);
    for &lead in leads {
        let element = elements.begin_nest(1);
        let bytes = lead.to_be_bytes();
        data(&mut elements, 1, if lead_len(peers) == 1 { &bytes[1..] } else { &bytes }); // NFTA_SET_ELEM_KEY
        elements.end_nest(element);
    }
    elements.end_nest(list);
    elements.finish()
}

/// `counter name "tx_a"`: what a full set refused (every other packet has
/// returned from the shard's chain by now).
fn refused_rule(table: &str, chain: &str, counter: &str, flags: u16, seq: u32) -> Vec<u8> {
    rule(table, chain, flags, seq, |r| count_in(r, counter))
}

/// `counter name "COUNTER"`: the packet counted in a counter object.
fn count_in(rule: &mut Builder, counter: &str) {
    expression(rule, "objref", |e| {
        e.attr_u32(1, NFT_OBJECT_COUNTER).attr_str(2, counter); // NFTA_OBJREF_IMM_TYPE, _IMM_NAME
    });
}

/// `update @SET { ADDRESS } return`: in a shard's chain, and for the front
/// set (where a full set's refusal goes on to the shards).
fn update_rule(table: &str, chain: &str, set: &str, peers: &Peers, flags: u16, seq: u32) -> Vec<u8> {
    rule(table, chain, flags, seq, |r| {
        load_address(r, peers, peers.len);
        update_set(r, set);
        verdict_return(r);
    })
}

/// In a family's chain: `jhash ADDRESS mod SHARDS seed S  vmap @MAP`.
#[allow(clippy::too_many_arguments)]
fn dispatch_rule(table: &str, chain: &str, peers: &Peers, map: &str, map_id: u32, seed: u32, flags: u16, seq: u32) -> Vec<u8> {
    rule(table, chain, flags, seq, |r| {
        load_address(r, peers, peers.len);
        expression(r, "hash", |e| {
            // NFTA_HASH_SREG, _DREG, _LEN, _MODULUS, _SEED, _TYPE (jenkins)
            e.attr_u32(1, REG).attr_u32(2, REG).attr_u32(3, peers.len).attr_u32(4, SHARDS).attr_u32(5, seed).attr_u32(7, 0);
        });
        expression(r, "lookup", |e| {
            // NFTA_LOOKUP_SET, _SREG, _DREG (the verdict register), _SET_ID
            e.attr_str(1, map).attr_u32(2, REG).attr_u32(3, 0);
            set_id_attr(e, 4, map_id);
        });
    })
}

/// In a base chain: `meta nfproto ipv6 goto rx6`.
fn ipv6_rule(table: &str, direction: &Direction, ipv6: &Peers, flags: u16, seq: u32) -> Vec<u8> {
    rule(table, direction.name, flags, seq, |r| {
        load_meta(r, NFT_META_NFPROTO);
        compare(r, NFT_CMP_EQ, &[ipv6.nfproto]);
        verdict(r, NFT_GOTO, Some(&family_chain(direction, ipv6)));
    })
}

/// `cmp OP reg 1 VALUE`: the register's first `value.len()` bytes.
fn compare(rule: &mut Builder, op: u32, value: &[u8]) {
    compare_in(rule, REG, op, value);
}

fn compare_in(rule: &mut Builder, register: u32, op: u32, value: &[u8]) {
    expression(rule, "cmp", |e| {
        e.attr_u32(1, register).attr_u32(2, op); // NFTA_CMP_SREG, NFTA_CMP_OP
        data(e, 3, value);
    });
}

/// `return`: leave the table (no chain was reached by a jump, so there is
/// none to return to); the packet goes on as if we were not here.
fn verdict_return(rule: &mut Builder) {
    verdict(rule, NFT_RETURN, None);
}

/// `return`, or `goto CHAIN`.
fn verdict(rule: &mut Builder, code: i32, chain: Option<&str>) {
    expression(rule, "immediate", |e| {
        e.attr_u32(1, 0); // NFTA_IMMEDIATE_DREG: NFT_REG_VERDICT
        let d = e.begin_nest(2); // NFTA_IMMEDIATE_DATA
        let verdict = e.begin_nest(2); // NFTA_DATA_VERDICT
        e.attr_u32(1, code as u32); // NFTA_VERDICT_CODE
        if let Some(chain) = chain {
            e.attr_str(2, chain); // NFTA_VERDICT_CHAIN
        }
        e.end_nest(verdict);
        e.end_nest(d);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lanes_counter_names_its_direction_generation_and_peer() {
        for (dir, generation, ip, name) in [
            (0, Generation::A, "198.51.100.7", "tx_a_lane_c6336407"),
            (1, Generation::B, "2001:db8:2::7", "rx_b_lane_20010db8000200000000000000000007"),
            (0, Generation::B, "::ffff:198.51.100.7", "tx_b_lane_00000000000000000000ffffc6336407"),
        ] {
            let lane = Lane { dir, ip: ip.parse().unwrap() };
            assert_eq!(lane_name(&DIRECTIONS[dir], generation, lane.ip), name);
            assert_eq!(lane_of(name), Some((lane, generation)), "{name}: an IPv4-mapped peer stays IPv6, as its rule compares it");
        }
        for other in ["tx_a", "harvests", "tx_c_lane_c6336407", "tx_a_lane_c633640", "tx_a_lane_c633640g", "tx_a_lane_C6336407", "rx_b_lane_", "tx_a_lane_é6336407", "xx_a_lane_c6336407"] {
            assert_eq!(lane_of(other), None, "{other}");
        }
    }

    #[test]
    fn skipped_blocks_become_merged_ranges_per_family() {
        let cidrs = |list: &[&str]| list.iter().map(|c| c.parse().unwrap()).collect::<Vec<Cidr>>();
        let blocks = cidrs(&["10.0.0.0/8", "10.1.0.0/16", "11.0.0.0/8", "224.0.0.0/3", "0.0.0.0/8", "fe80::/10", "::/8"]);
        let v4 = |a: [u8; 4]| u128::from(u32::from_be_bytes(a));
        assert_eq!(
            skipped_ranges(&blocks, true),
            [(0, v4([0, 255, 255, 255])), (v4([10, 0, 0, 0]), v4([11, 255, 255, 255])), (v4([224, 0, 0, 0]), u128::from(u32::MAX))],
            "10/8 holds 10.1/16, and 11/8 follows it: one range"
        );
        let v6 = |s: &str| u128::from(s.parse::<std::net::Ipv6Addr>().unwrap());
        assert_eq!(skipped_ranges(&blocks, false), [(0, v6("ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")), (v6("fe80::"), v6("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))]);
        assert_eq!(skipped_ranges(&cidrs(&["0.0.0.0/0"]), true), [(0, u128::from(u32::MAX))]);
        assert_eq!(skipped_ranges(&cidrs(&["::/0"]), false), [(0, u128::MAX)]);
        assert_eq!(skipped_ranges(&cidrs(&["198.51.100.7"]), true), [(v4([198, 51, 100, 7]), v4([198, 51, 100, 7]))]);
    }

    /// Every shard has room for the peers a seeded hash gives it when all
    /// `--max-ips` peers talk in one interval (simulated: 40 spreads of
    /// each size over the shards, as uniform as a seeded jhash), and no
    /// more room than that needs: no floor for small sizes.
    #[test]
    fn each_shard_holds_its_share_of_the_peers_whatever_the_size() {
        let size = |peers: u32| set_room(&Layout { size: peers, skipped: Vec::new(), iface: None });
        assert_eq!(size(100_000), 3_906, "the default: its share, 3,125, and a quarter more");
        assert_eq!((size(10_000), size(1_000), size(1)), (397, 68, 21), "small: four standard deviations and 16");
        assert_eq!(size(u32::MAX), u32::MAX / SHARDS + 1 + (u32::MAX / SHARDS + 1) / 4);
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        for peers in [1, 10, 100, 1_000, 3_000, 10_000, 100_000] {
            for _ in 0..40 {
                let mut per_shard = [0u32; SHARDS as usize];
                for _ in 0..peers {
                    per_shard[(next() % u64::from(SHARDS)) as usize] += 1;
                }
                let fullest = per_shard.iter().max().copied().unwrap_or(0);
                assert!(fullest <= size(peers), "{peers} peers: a shard got {fullest}, room {}", size(peers));
            }
        }
    }

    /// The leads of the default blocks, of blocks meeting at a lead, of a
    /// block that is the whole family, and too many leads: no prefilter.
    #[test]
    fn leads_are_every_leading_byte_a_skipped_block_has() {
        let cidrs = |list: &[&str]| list.iter().map(|c| c.parse().unwrap()).collect::<Vec<Cidr>>();
        let v4 = skipped_ranges(&cidrs(&["10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "224.0.0.0/3", "203.0.113.9"]), true);
        let mut expected: Vec<u16> = vec![10, 100, 172, 203];
        expected.extend(224..=255);
        assert_eq!(leads(&v4, true), Some(expected));
        let meeting = skipped_ranges(&cidrs(&["10.0.0.0/9", "10.200.0.0/16", "11.0.0.0/8"]), true);
        assert_eq!(leads(&meeting, true), Some(vec![10, 11]), "10 once, though two ranges have it");
        assert_eq!(leads(&skipped_ranges(&cidrs(&["0.0.0.0/0"]), true), true), Some((0..=255).collect()));
        let v6 = skipped_ranges(&cidrs(&["::/8", "fe80::/10", "2001:db8:2::/48", "ff00::/8"]), false);
        let mut expected: Vec<u16> = (0..=0xff).collect();
        expected.push(0x2001);
        expected.extend(0xfe80..=0xfebf);
        expected.extend(0xff00..=0xffff);
        assert_eq!(leads(&v6, false), Some(expected));
        assert_eq!(leads(&skipped_ranges(&cidrs(&["2000::/3"]), false), false), None, "8,192 leads: no prefilter");
        let defaults = crate::filter::AddressFilter::default().skipped_blocks();
        assert_eq!(leads(&skipped_ranges(&defaults, true), true).map(|l| l.len()), Some(39)); // 0 10 100 127 169 172 192, 224–255
        assert_eq!(leads(&skipped_ranges(&defaults, false), false).map(|l| l.len()), Some(1088));
    }

    /// The leads as the fewest aligned blocks, each whole or not: the
    /// defaults need 8 rules of IPv4 and 4 of IPv6, none of them a lookup
    /// for IPv6; blocks meeting and not aligned; the whole family.
    #[test]
    fn leads_make_the_fewest_aligned_blocks() {
        let cidrs = |list: &[&str]| list.iter().map(|c| c.parse().unwrap()).collect::<Vec<Cidr>>();
        let block = |prefix: u32, bits: u32, whole: bool| LeadBlock { prefix, bits, whole };
        let defaults = crate::filter::AddressFilter::default().skipped_blocks();
        let v4 = lead_blocks(&skipped_ranges(&defaults, true), true).expect("blocks");
        let expected = [(0, 8, true), (10, 8, true), (100, 8, false), (127, 8, true), (169, 8, false), (172, 8, false), (192, 8, false), (224, 3, true)];
        assert_eq!(v4, expected.map(|(lead, bits, whole)| block(lead << 24, bits, whole)));
        let v6 = lead_blocks(&skipped_ranges(&defaults, false), false).expect("blocks");
        assert_eq!(v6, [block(0, 8, true), block(0xfc00 << 16, 7, true), block(0xfe80 << 16, 10, true), block(0xff00 << 16, 8, true)]);
        // 3–9: 3, 4–7 (aligned by 4), 8–9; then 10.0/9 is half of lead 10.
        let ragged = skipped_ranges(&cidrs(&["3.0.0.0/8", "4.0.0.0/6", "8.0.0.0/7", "10.0.0.0/9"]), true);
        let expected = [(3, 8, true), (4, 6, true), (8, 7, true), (10, 8, false)];
        assert_eq!(lead_blocks(&ragged, true), Some(expected.map(|(lead, bits, whole)| block(lead << 24, bits, whole)).to_vec()));
        assert_eq!(lead_blocks(&skipped_ranges(&cidrs(&["0.0.0.0/0"]), true), true), Some(vec![block(0, 0, true)]));
        assert_eq!(lead_blocks(&skipped_ranges(&cidrs(&["2000::/3"]), false), false), None, "8,192 leads: too many");
        // A whole block's first, middle and last addresses are skipped; a
        // block not whole (the defaults') has its first address counted.
        for (blocks, v4) in [(&v4, true), (&v6, false)] {
            let ranges = skipped_ranges(&defaults, v4);
            let skipped = |a: u128| ranges.iter().any(|&(from, to)| from <= a && a <= to);
            let (shift, unused_bits) = if v4 { (0, 96) } else { (96, 0) };
            for b in blocks.iter() {
                let low = u128::from(b.prefix) << shift;
                let high = low | u128::MAX >> (unused_bits + b.bits);
                let ends_and_middle = [low, low / 2 + high / 2, high].map(skipped);
                assert!(if b.whole { ends_and_middle == [true; 3] } else { !ends_and_middle[0] }, "{b:?}: {ends_and_middle:?}");
            }
        }
    }

    #[test]
    fn the_owner_note_names_the_pid_and_nothing_else_passes_for_it() {
        let layout = Layout { size: 100, skipped: Vec::new(), iface: None };
        assert_eq!(owner_pid(&owner_note(4242, &layout)), Some(4242));
        assert!(made_with(&owner_note(4242, &layout), &layout));
        assert!(!made_with(&owner_note(4242, &layout), &Layout { size: 101, ..layout.clone() }));
        assert!(!made_with("ip_traffic_monitor_cli pid 4242", &layout), "an older table");
        let stamp = Stamp { number: 7, owner: 4_194_304, active: Generation::B };
        assert_eq!(Stamp::read(stamp.number, stamp.packets()), Some(stamp));
        assert_eq!(owner_pid("ip_traffic_monitor_cli pid x"), None);
        assert_eq!(owner_pid(""), None);
    }
}
