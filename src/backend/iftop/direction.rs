//! Which side of an iftop host pair is this host, so the other side is the
//! remote IP: this host's own addresses (every address of every interface,
//! IPv4 and IPv6, from getifaddrs), and, for forwarded pairs where neither
//! side is local, the routing table: the side routed out through the
//! capture interface is the remote one (a router capturing on its WAN side
//! counts its LAN's traffic against the internet hosts, as bpftrace would).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The remote side of a pair and whether it is the pair's first host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remote {
    First,
    Second,
}

pub struct Direction {
    capture_iface: String,
    locals: HashSet<IpAddr>,
    routes: Vec<Route>,
    /// Given, not read from the system: refresh keeps them.
    fixed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Route {
    network: IpAddr,
    prefix: u8,
    iface: String,
}

impl Direction {
    pub fn new(capture_iface: &str) -> Direction {
        let mut d = Direction {
            capture_iface: capture_iface.to_string(),
            locals: HashSet::new(),
            routes: Vec::new(),
            fixed: false,
        };
        d.refresh();
        d
    }

    /// A fixed set of local addresses and no routes, for tests and fuzzing.
    #[doc(hidden)]
    pub fn with_locals(locals: &[&str]) -> Direction {
        Direction::with("eth0", locals, &[])
    }

    fn with(capture_iface: &str, locals: &[&str], routes: &[(&str, u8, &str)]) -> Direction {
        Direction {
            capture_iface: capture_iface.into(),
            locals: locals.iter().map(|a| a.parse().unwrap()).collect(),
            routes: routes
                .iter()
                .map(|(n, p, i)| Route { network: n.parse().unwrap(), prefix: *p, iface: i.to_string() })
                .collect(),
            fixed: true,
        }
    }

    /// Re-reads addresses and routes (DHCP, SLAAC and admins change them).
    pub fn refresh(&mut self) {
        if self.fixed {
            return;
        }
        self.locals = crate::sys::local_addresses().into_iter().collect();
        self.routes = read_routes();
    }

    pub fn remote_of(&self, first: IpAddr, second: IpAddr) -> Remote {
        if self.locals.contains(&first) {
            return Remote::Second;
        }
        if self.locals.contains(&second) {
            return Remote::First;
        }
        // Forwarded: the side reached through the capture interface is outside.
        match (self.is_outside(first), self.is_outside(second)) {
            (true, false) => Remote::First,
            _ => Remote::Second,
        }
    }

    fn is_outside(&self, ip: IpAddr) -> bool {
        self.routes
            .iter()
            .filter(|r| crate::filter::Cidr::new(r.network, r.prefix).is_some_and(|c| c.contains(ip)))
            .max_by_key(|r| r.prefix)
            .is_some_and(|r| r.iface == self.capture_iface)
    }
}

/// The interface of the default route (IPv4 first, then IPv6), for `-b iftop`
/// without `-i`.
pub fn default_route_iface() -> Option<String> {
    let routes = read_routes();
    let default = |v4: bool| {
        routes.iter().find(|r| r.prefix == 0 && r.network.is_ipv4() == v4 && r.iface != "lo").map(|r| r.iface.clone())
    };
    default(true).or_else(|| default(false))
}

fn read_routes() -> Vec<Route> {
    let mut routes = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/proc/net/route") {
        routes.extend(text.lines().skip(1).filter_map(parse_route_v4));
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/ipv6_route") {
        routes.extend(text.lines().filter_map(parse_route_v6));
    }
    routes
}

/// `Iface Destination Gateway Flags RefCnt Use Metric Mask ...`, addresses
/// as native-endian hex.
fn parse_route_v4(line: &str) -> Option<Route> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
    let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
    Some(Route {
        network: IpAddr::V4(Ipv4Addr::from(dest.to_ne_bytes())),
        prefix: u32::from_be_bytes(mask.to_ne_bytes()).leading_ones() as u8,
        iface: f.first()?.to_string(),
    })
}

/// `dest plen src splen nexthop metric refcnt use flags iface`, hex.
fn parse_route_v6(line: &str) -> Option<Route> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let dest = u128::from_str_radix(f.first()?, 16).ok()?;
    Some(Route {
        network: IpAddr::V6(Ipv6Addr::from(dest)),
        prefix: u8::from_str_radix(f.get(1)?, 16).ok()?,
        iface: f.get(9)?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn local_addresses_decide_first() {
        let d = Direction::with("eth0", &["192.0.2.1", "2001:db8::1", "2001:db8::99"], &[]);
        assert_eq!(d.remote_of(ip("192.0.2.1"), ip("198.51.100.7")), Remote::Second);
        assert_eq!(d.remote_of(ip("198.51.100.7"), ip("192.0.2.1")), Remote::First);
        assert_eq!(d.remote_of(ip("2001:db8::2"), ip("2001:db8::99")), Remote::First, "every address, not just the first");
    }

    #[test]
    fn given_addresses_survive_the_periodic_refresh() {
        let mut d = Direction::with_locals(&["192.0.2.1"]);
        d.refresh();
        assert_eq!(d.remote_of(ip("198.51.100.7"), ip("192.0.2.1")), Remote::First);
    }

    #[test]
    fn forwarded_pairs_count_against_the_side_beyond_the_capture_interface() {
        let d = Direction::with(
            "wan",
            &["192.0.2.1"],
            &[("0.0.0.0", 0, "wan"), ("192.0.2.0", 24, "wan"), ("203.0.113.0", 24, "lan")],
        );
        assert_eq!(d.remote_of(ip("203.0.113.5"), ip("8.8.8.8")), Remote::Second);
        assert_eq!(d.remote_of(ip("8.8.8.8"), ip("203.0.113.5")), Remote::First);
    }

    #[test]
    fn proc_route_lines_parse() {
        let r = parse_route_v4("eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0").unwrap();
        assert_eq!((r.network, r.prefix, r.iface.as_str()), (ip("192.0.2.0"), 24, "eth0"));
        let r = parse_route_v6("20010db8000000000000000000000000 20 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth1").unwrap();
        assert_eq!((r.network, r.prefix, r.iface.as_str()), (ip("2001:db8::"), 32, "eth1"));
    }
}
