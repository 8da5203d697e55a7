//! The nftables backend: the kernel counts, in sets of peers with
//! per-element counters in the monitor's own table ([`table`]), and a thread
//! of the monitor reads them over netlink every interval ([`harvest`]): no
//! child process, no user-space package, no packet copied to user space.
//! [`netlink`] builds and walks messages (pure, checked), [`socket`] is the
//! one NETLINK_NETFILTER exchange, [`elements`] reads a set-element dump,
//! [`lanes`] picks the peers busy enough for a rule of their own.
//! Process association comes from /proc, as for iftop
//! ([`super::owners`]). What it needs: Linux 5.7+ with nf_tables (set
//! expressions); no counter is ever reset, so nothing newer.

pub mod elements;
pub mod harvest;
pub mod journal;
pub mod lanes;
pub mod netlink;
pub mod socket;
pub mod table;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::{Backend, Runner, owners};
use crate::error::Error;
use crate::filter::AddressFilter;
use crate::store::Store;
use netlink::{Builder, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, attributes, be_u64};

/// The monitor's table: `inet ip_traffic_monitor`.
pub const TABLE: &str = "ip_traffic_monitor";
/// `NFNL_SUBSYS_NFTABLES << 8`: the message types below are `SUBSYS | NFT_MSG_*`.
pub(crate) const SUBSYS: u16 = 10 << 8;
const GET_SET_ELEMENTS: u16 = SUBSYS | 13;
const GET_OBJECT: u16 = SUBSYS | 19;
const GET_FLOWTABLE: u16 = SUBSYS | 23;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
/// `NFPROTO_INET`: a table of family `inet`.
pub const FAMILY_INET: u8 = 1;

/// What the nftables backend is told.
#[derive(Clone, Debug)]
pub struct Params {
    pub sample_interval: Duration,
    pub filter: AddressFilter,
    /// Count only on this device; `None`: every device but loopback.
    pub iface: Option<table::Device>,
    /// Peers per set (`--max-ips`).
    pub set_size: u32,
    /// Where harvests are written down before the kernel forgets them
    /// (beside `--state`): see [`journal`].
    pub journal: Option<std::path::PathBuf>,
}

#[derive(Debug)]
pub struct Nftables {
    params: Params,
}

impl Nftables {
    pub fn new(params: Params) -> Nftables {
        Nftables { params }
    }

    fn layout(&self) -> table::Layout {
        table::Layout {
            size: self.params.set_size,
            skipped: self.params.filter.skipped_blocks(),
            iface: self.params.iface.clone(),
        }
    }
}

const OTHERS: &str = "use -b bpftrace or -b iftop";

impl Backend for Nftables {
    fn name(&self) -> &'static str {
        "nftables"
    }

    /// Creates and deletes a small table of the same layout: proof that the
    /// kernel has every part and that we may use it. A flowtable in any
    /// table would hide offloaded flows from the hooks: `-b auto` then
    /// prefers another backend.
    fn probe(&self) -> Result<(), Error> {
        let mut socket = harvest::open_socket().map_err(Error::fatal)?;
        let name = format!("{TABLE}_probe_{}", std::process::id());
        let layout = table::Layout { size: 16, ..self.layout() };
        let stamp = table::Stamp { number: 0, owner: std::process::id(), active: table::Generation::A };
        table::create(&mut socket, &name, &layout, false, stamp).map_err(|e| Error::fatal(harvest::explain(&e)))?;
        let _ = table::delete(&mut socket, &name);
        match flowtables(&mut socket) {
            Ok(found) if !found.is_empty() => Err(Error::fatal(format!(
                "flowtable {} offloads established flows past the nftables hooks",
                found.join(", ")
            ))),
            _ => Ok(()),
        }
    }

    fn method(&self) -> String {
        format!(
            "kernel counters in table inet {TABLE}, read over netlink every {} s; process from /proc",
            self.params.sample_interval.as_secs_f64()
        )
    }

    fn runner(&self) -> Result<Runner, Error> {
        let harvester = harvest::Harvester::new(self.layout(), self.params.journal.clone()).without(self.params.filter.this_host.clone());
        Ok(Runner::InProcess(Box::new(harvester)))
    }

    fn report_interval(&self) -> Duration {
        self.params.sample_interval
    }

    fn explain_start_failure(&self, stderr: &[String]) -> String {
        match stderr.last() {
            Some(line) => format!("nftables: {line}"),
            None => format!("nftables: counting could not be set up; {OTHERS}"),
        }
    }

    fn why_unkeyed(&self) -> &'static str {
        "a full set refused their peers (more new remote IPs in one interval than --max-ips, per direction)"
    }

    fn start_helpers(&self, store: &Arc<Store>) {
        owners::spawn(Arc::clone(store));
    }
}

/// Every element of set `set` in table `table`, and how many elements could
/// not be read.
pub fn dump_set(socket: &mut socket::Socket, family: u8, table: &str, set: &str) -> io::Result<(Vec<elements::Counted>, usize)> {
    let seq = socket.next_seq();
    let mut request = Builder::new(GET_SET_ELEMENTS, NLM_F_REQUEST | NLM_F_DUMP, seq, family);
    request.attr_str(NFTA_SET_ELEM_LIST_TABLE, table).attr_str(NFTA_SET_ELEM_LIST_SET, set);
    let (mut counted, mut unreadable) = (Vec::new(), 0);
    socket.exchange(&request.finish(), seq, |message| unreadable += elements::read_elements(message, &mut counted))?;
    Ok((counted, unreadable))
}

/// The bytes of counter object `name` in table `table` (inet), left as
/// they are (a counter is emptied by being made anew, see [`table::swap`]).
pub fn read_counter(socket: &mut socket::Socket, table: &str, name: &str) -> io::Result<u64> {
    read_counter_values(socket, table, name).map(|(bytes, _)| bytes)
}

/// The bytes and packets of counter object `name` in table `table` (inet).
pub fn read_counter_values(socket: &mut socket::Socket, table: &str, name: &str) -> io::Result<(u64, u64)> {
    let seq = socket.next_seq();
    let mut request = Builder::new(GET_OBJECT, NLM_F_REQUEST | NLM_F_ACK, seq, FAMILY_INET);
    // NFTA_OBJ_TABLE, NFTA_OBJ_NAME, NFTA_OBJ_TYPE
    request.attr_str(1, table).attr_str(2, name).attr_u32(3, table::NFT_OBJECT_COUNTER);
    let mut values = None;
    socket.exchange(&request.finish(), seq, |message| values = counter_values(message))?;
    values.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("counter {name} came without its bytes")))
}

/// Every counter object of table `table` (inet): `(name, bytes, packets)`.
pub fn dump_counters(socket: &mut socket::Socket, table: &str) -> io::Result<Vec<(String, u64, u64)>> {
    let seq = socket.next_seq();
    let mut request = Builder::new(GET_OBJECT, NLM_F_REQUEST | NLM_F_DUMP, seq, FAMILY_INET);
    request.attr_str(1, table).attr_u32(3, table::NFT_OBJECT_COUNTER); // NFTA_OBJ_TABLE, NFTA_OBJ_TYPE: the dump's filter
    let mut counters = Vec::new();
    socket.exchange(&request.finish(), seq, |message| counters.extend(named_counter(message)))?;
    Ok(counters)
}

/// A counter object message's name (`NFTA_OBJ_NAME (2)`, a string), bytes
/// and packets ([`counter_values`]).
pub fn named_counter(message: &netlink::Message) -> Option<(String, u64, u64)> {
    let name = message.attributes().find(2)?;
    let name = std::str::from_utf8(name.strip_suffix(&[0]).unwrap_or(name)).ok()?;
    let (bytes, packets) = counter_values(message)?;
    Some((name.to_string(), bytes, packets))
}

/// The bytes and packets of a counter object message (`NFT_MSG_NEWOBJ`):
/// `NFTA_OBJ_DATA (4, nested)` holds `NFTA_COUNTER_BYTES (1)` and
/// `NFTA_COUNTER_PACKETS (2)`, big-endian u64s.
pub fn counter_values(message: &netlink::Message) -> Option<(u64, u64)> {
    let data = message.attributes().find(4)?;
    Some((be_u64(attributes(data).find(1)?)?, be_u64(attributes(data).find(2)?)?))
}

/// Every flowtable in any table, as [`describe_flowtable`] says it.
pub fn flowtables(socket: &mut socket::Socket) -> io::Result<Vec<String>> {
    let seq = socket.next_seq();
    let request = Builder::new(GET_FLOWTABLE, NLM_F_REQUEST | NLM_F_DUMP, seq, 0).finish();
    let mut found = Vec::new();
    socket.exchange(&request, seq, |message| found.push(describe_flowtable(message)))?;
    Ok(found)
}

/// A flowtable message (`NFT_MSG_NEWFLOWTABLE`) as `FAMILY TABLE NAME
/// (devices A, B)`, for a warning. The grammar:
///
/// ```text
/// nfgenmsg: family (1 inet, 2 ip, 10 ip6, 5 netdev)
/// NFTA_FLOWTABLE_TABLE (1) string, NFTA_FLOWTABLE_NAME (2) string
/// NFTA_FLOWTABLE_HOOK (3, nested)
///   NFTA_FLOWTABLE_HOOK_DEVS (3, nested): NFTA_DEVICE_NAME (1) string, one per device
/// ```
pub fn describe_flowtable(message: &netlink::Message) -> String {
    let family = match message.payload.first() {
        Some(1) => "inet",
        Some(2) => "ip",
        Some(10) => "ip6",
        Some(5) => "netdev",
        _ => "?",
    };
    let text = |t: &[u8]| String::from_utf8_lossy(t.strip_suffix(&[0]).unwrap_or(t)).into_owned();
    let attribute = |kind| message.attributes().find(kind).map(text).unwrap_or_default();
    let devices: Vec<String> = message
        .attributes()
        .find(3) // NFTA_FLOWTABLE_HOOK
        .and_then(|hook| attributes(hook).find(3)) // NFTA_FLOWTABLE_HOOK_DEVS
        .map(|devs| attributes(devs).map(|(_, name)| text(name)).collect())
        .unwrap_or_default();
    format!("{family} {} {} (devices {})", attribute(1), attribute(2), devices.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This kernel has no flowtables (CONFIG_NF_FLOW_TABLE unset), so the
    /// message is the one `nft` shows for
    /// `table inet fw4 { flowtable ft { hook ingress priority 0; devices = { eth0, br-lan }; } }`.
    #[test]
    fn a_flowtable_is_named_with_its_table_and_devices() {
        let mut m = Builder::new(SUBSYS | 22, 0, 1, FAMILY_INET);
        m.attr_str(1, "fw4").attr_str(2, "ft");
        let hook = m.begin_nest(3);
        m.attr_u32(1, 0).attr_u32(2, 0);
        let devs = m.begin_nest(3);
        m.attr_str(1, "eth0").attr_str(1, "br-lan");
        m.end_nest(devs);
        m.end_nest(hook);
        let bytes = m.finish();
        let message = netlink::messages(&bytes).next().expect("a message");
        assert_eq!(describe_flowtable(&message), "inet fw4 ft (devices eth0, br-lan)");
        let empty = Builder::new(SUBSYS | 22, 0, 1, 0).finish();
        assert_eq!(describe_flowtable(&netlink::messages(&empty).next().expect("a message")), "?   (devices )");
    }
}
