//! Which remote addresses are counted (docs/ACCOUNTING.md, "Which remote
//! addresses count"). Owns the default exclusions
//! (loopback, link-local, multicast, broadcast, unspecified and, unless
//! `--include-private`, the private ranges), the user's `--exclude` CIDRs,
//! this host's own addresses and its subnets' broadcast addresses (which
//! the CLI finds), and the folding of IPv4-mapped IPv6 addresses into plain
//! IPv4 so one host is one key. Documentation and benchmarking ranges
//! count like public ones.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address block such as `203.0.113.0/24` or `2001:db8::/32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `network/prefix`, or `None` if the prefix is too long for the family.
    pub fn new(network: IpAddr, prefix: u8) -> Option<Cidr> {
        (prefix <= if network.is_ipv4() { 32 } else { 128 }).then_some(Cidr { network, prefix })
    }

    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(ip) as u128, 32, self.prefix) == u32::from(net) as u128
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(ip), 128, self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn masked(bits: u128, width: u8, prefix: u8) -> u128 {
    let host_bits = u32::from(width - prefix);
    bits.checked_shr(host_bits).unwrap_or(0).checked_shl(host_bits).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    /// `ADDR/PREFIX`, or a bare address meaning that one host. Host bits must
    /// be zero, so a typo such as `10.0.0.1/8` is caught rather than guessed.
    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| format!("'{text}' is not a CIDR"))?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= width => p,
                _ => return Err(format!("'{text}': prefix must be 0..={width}")),
            },
        };
        if masked_differs(network, prefix) {
            return Err(format!("'{text}' has host bits set"));
        }
        Ok(Cidr { network, prefix }.canonical())
    }
}

impl Cidr {
    /// A block of IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d/n`, n >= 96)
    /// as the IPv4 block it stands for: addresses are compared in
    /// [`canonical`] form, where a mapped address is IPv4.
    fn canonical(self) -> Cidr {
        match self.network {
            IpAddr::V6(v6) if self.prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => Cidr { network: IpAddr::V4(v4), prefix: self.prefix - 96 },
                None => self,
            },
            _ => self,
        }
    }
}

fn masked_differs(ip: IpAddr, prefix: u8) -> bool {
    match ip {
        IpAddr::V4(v4) => masked(u32::from(v4) as u128, 32, prefix) != u32::from(v4) as u128,
        IpAddr::V6(v6) => masked(u128::from(v6), 128, prefix) != u128::from(v6),
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`, what a dual-stack socket reports)
/// becomes the IPv4 address it carries.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// Decides, per remote address, whether it is counted.
#[derive(Clone, Debug, Default)]
pub struct AddressFilter {
    pub include_private: bool,
    pub exclude: Vec<Cidr>,
    /// This host's own addresses and its IPv4 subnets' broadcast addresses,
    /// never a peer. Only this host's own broadcasts (seen twice on the
    /// way out: the packet and its looped-back copy) go to one, and only a
    /// looped-back copy of its own multicast or broadcast comes from one.
    /// A kernel-side filter leaves them to user space ([`Self::skipped_blocks`]
    /// does not list them): in the kernel, every peer that shares a leading
    /// byte with one would pay the interval lookup, to spare a few elements
    /// of room.
    pub this_host: Vec<IpAddr>,
}

impl AddressFilter {
    /// `ip` must already be [`canonical`].
    pub fn counts(&self, ip: IpAddr) -> bool {
        let special = match ip {
            IpAddr::V4(v4) => never_counted_v4(v4) || (!self.include_private && private_v4(v4)),
            IpAddr::V6(v6) => never_counted_v6(v6) || (!self.include_private && private_v6(v6)),
        };
        !special && !self.exclude.iter().any(|cidr| cidr.contains(ip)) && !self.this_host.contains(&ip)
    }

    /// This filter, with `addresses` as [`Self::this_host`] (those it would
    /// count; each once).
    pub fn with_this_host(mut self, addresses: impl IntoIterator<Item = IpAddr>) -> AddressFilter {
        for ip in addresses.into_iter().map(canonical) {
            if self.counts(ip) {
                self.this_host.push(ip);
            }
        }
        self
    }
}

/// The broadcast address the kernel gives the subnet of `addr` with
/// `netmask` (a broadcast route for it, `ip addr add` with `brd` or not):
/// its last address, for subnets of more than two addresses.
pub fn subnet_broadcast(addr: Ipv4Addr, netmask: Ipv4Addr) -> Option<Ipv4Addr> {
    let mask = u32::from(netmask);
    (mask.leading_ones() < 31 && mask.count_zeros() == mask.trailing_zeros()).then(|| Ipv4Addr::from(u32::from(addr) | !mask))
}

/// The never-counted blocks, as CIDRs (for a kernel-side filter); the
/// predicates below say the same, and a test holds them to it.
const NEVER_COUNTED: [&str; 7] = ["0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3", "::/8", "ff00::/8", "fe80::/10"];
const PRIVATE: [&str; 5] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"];

impl AddressFilter {
    /// Every block this filter leaves out, as CIDRs: what a kernel-side
    /// filter (the nftables backend) must skip to decide as [`Self::counts`].
    pub fn skipped_blocks(&self) -> Vec<Cidr> {
        let private: &[&str] = if self.include_private { &[] } else { &PRIVATE };
        NEVER_COUNTED
            .iter()
            .chain(private)
            .filter_map(|text| text.parse().ok())
            .chain(self.exclude.iter().copied())
            .collect()
    }
}

fn never_counted_v4(ip: Ipv4Addr) -> bool {
    ip.octets()[0] == 0 // "this network", including 0.0.0.0
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.octets()[0] >= 224 // multicast, reserved 240/4, broadcast
}

fn private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private() || (a == 100 && (64..128).contains(&b)) // RFC 6598 shared space
}

fn never_counted_v6(ip: Ipv6Addr) -> bool {
    // ::/8 holds the unspecified, loopback and IPv4-compatible addresses,
    // none of them a real peer on the wire (mapped ones were made IPv4).
    ip.segments()[0] & 0xff00 == 0
        || ip.is_multicast()
        || (ip.segments()[0] & 0xffc0) == 0xfe80 // link-local
}

fn private_v6(ip: Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xfe00) == 0xfc00 // unique local, fc00::/7
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        canonical(s.parse().unwrap())
    }

    #[test]
    fn a_subnets_broadcast_is_its_last_address_if_it_has_more_than_two() {
        let v4 = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(subnet_broadcast(v4("192.0.2.1"), v4("255.255.255.0")), Some(v4("192.0.2.255")));
        assert_eq!(subnet_broadcast(v4("198.51.100.129"), v4("255.255.255.128")), Some(v4("198.51.100.255")));
        assert_eq!(subnet_broadcast(v4("203.0.113.9"), v4("255.255.255.252")), Some(v4("203.0.113.11")));
        assert_eq!(subnet_broadcast(v4("10.1.2.3"), v4("255.0.0.0")), Some(v4("10.255.255.255")));
        assert_eq!(subnet_broadcast(v4("203.0.113.8"), v4("255.255.255.254")), None, "/31: two hosts, no broadcast");
        assert_eq!(subnet_broadcast(v4("203.0.113.8"), v4("255.255.255.255")), None, "/32");
        assert_eq!(subnet_broadcast(v4("203.0.113.8"), v4("255.0.255.0")), None, "not a prefix");
    }

    #[test]
    fn this_hosts_addresses_count_for_nothing_but_are_left_to_user_space() {
        let f = AddressFilter { exclude: vec!["203.0.113.0/24".parse().unwrap()], ..Default::default() }
            .with_this_host(["192.0.2.1", "203.0.113.5", "10.0.0.1", "::ffff:198.51.100.9", "2001:db8::1", "192.0.2.1", "192.0.2.255"].map(ip));
        assert_eq!(f.this_host, ["192.0.2.1", "198.51.100.9", "2001:db8::1", "192.0.2.255"].map(ip), "only what it counted, once");
        assert!(!f.counts(ip("192.0.2.1")) && !f.counts(ip("2001:db8::1")) && !f.counts(ip("192.0.2.255")) && f.counts(ip("192.0.2.2")));
        assert_eq!(f.skipped_blocks(), AddressFilter { exclude: f.exclude.clone(), ..Default::default() }.skipped_blocks());
    }

    #[test]
    fn default_filter_counts_public_and_documentation_ranges_only() {
        let f = AddressFilter::default();
        for counted in ["8.8.8.8", "192.0.2.1", "198.51.100.7", "203.0.113.9", "198.18.0.1", "2001:db8::2", "2606:4700::1111"] {
            assert!(f.counts(ip(counted)), "{counted} should count");
        }
        for skipped in [
            "0.0.0.0", "127.0.0.1", "169.254.1.1", "224.0.0.251", "255.255.255.255", "10.1.2.3",
            "172.16.0.1", "172.31.255.255", "192.168.1.1", "100.64.0.1", "100.127.255.255", "::",
            "::1", "::2", "fe80::1", "ff02::1", "240.0.0.1", "fd00::1", "fc00::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1",
        ] {
            assert!(!f.counts(ip(skipped)), "{skipped} should not count");
        }
        assert!(f.counts(ip("100.128.0.1")) && f.counts(ip("172.32.0.1")));
    }

    #[test]
    fn include_private_admits_private_but_not_special_ranges() {
        let f = AddressFilter { include_private: true, ..Default::default() };
        for counted in ["10.1.2.3", "192.168.1.1", "100.64.0.1", "fd00::1"] {
            assert!(f.counts(ip(counted)), "{counted}");
        }
        for skipped in ["127.0.0.1", "fe80::1", "ff02::1", "224.0.0.1"] {
            assert!(!f.counts(ip(skipped)), "{skipped}");
        }
    }

    #[test]
    fn exclude_cidrs_apply_to_both_families() {
        let f = AddressFilter {
            exclude: vec!["203.0.113.0/24".parse().unwrap(), "2001:db8:1::/48".parse().unwrap()],
            ..Default::default()
        };
        assert!(!f.counts(ip("203.0.113.200")));
        assert!(f.counts(ip("203.0.114.1")));
        assert!(!f.counts(ip("2001:db8:1:ffff::1")));
        assert!(f.counts(ip("2001:db8:2::1")));
        assert!(!f.counts(ip("::ffff:203.0.113.5")), "mapped addresses are IPv4");
    }

    #[test]
    fn ipv4_mapped_blocks_match_the_ipv4_addresses_they_map() {
        let filter = AddressFilter { exclude: vec!["::ffff:203.0.113.0/120".parse().unwrap()], ..Default::default() };
        assert_eq!(filter.exclude[0], "203.0.113.0/24".parse().unwrap());
        for counted_as in ["203.0.113.9", "::ffff:203.0.113.9"] {
            assert!(!filter.counts(canonical(ip(counted_as))), "{counted_as} is excluded");
        }
        assert!(filter.counts(canonical(ip("::ffff:198.51.100.7"))));
        assert_eq!("::ffff:198.51.100.7".parse::<Cidr>().unwrap(), "198.51.100.7/32".parse().unwrap());
    }

    /// The CIDR list a kernel filter gets decides as `counts` does, at the
    /// edges of every block and in between.
    #[test]
    fn skipped_blocks_decide_as_the_filter_does() {
        let filters = [
            AddressFilter::default(),
            AddressFilter { include_private: true, ..Default::default() },
            AddressFilter { exclude: vec!["203.0.113.0/24".parse().unwrap(), "2001:db8:1::/48".parse().unwrap()], ..Default::default() },
        ];
        let mut probes: Vec<IpAddr> = Vec::new();
        for block in NEVER_COUNTED.iter().chain(&PRIVATE).chain(&["203.0.113.0/24", "2001:db8:1::/48"]) {
            let cidr: Cidr = block.parse().unwrap();
            let (width, bits) = match cidr.network {
                IpAddr::V4(v4) => (32u32, u128::from(u32::from(v4))),
                IpAddr::V6(v6) => (128, u128::from(v6)),
            };
            let size = 1u128.checked_shl(width - u32::from(cidr.prefix)).unwrap_or(0);
            for edge in [bits.wrapping_sub(1), bits, bits.wrapping_add(size / 2), bits.wrapping_add(size.wrapping_sub(1)), bits.wrapping_add(size)] {
                probes.push(match cidr.network {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(edge as u32)),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(edge)),
                });
            }
        }
        probes.extend(["8.8.8.8", "198.51.100.7", "2606:4700::1111"].map(ip));
        assert_eq!(AddressFilter::default().skipped_blocks().len(), NEVER_COUNTED.len() + PRIVATE.len());
        for filter in &filters {
            let blocks = filter.skipped_blocks();
            for &probe in &probes {
                let probe = canonical(probe);
                assert_eq!(!blocks.iter().any(|b| b.contains(probe)), filter.counts(probe), "{probe} with {filter:?}");
            }
        }
    }

    #[test]
    fn cidr_parsing_rejects_nonsense() {
        assert_eq!("198.51.100.7".parse::<Cidr>().unwrap().prefix, 32);
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().prefix, 0);
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        assert!("::/0".parse::<Cidr>().unwrap().contains(ip("2001:db8::1")));
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "2001:db8::/129", "foo", "10.0.0.0/", "10.0.0.0/x", "", "::ffff:203.0.113.1/120"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad} should be rejected");
        }
    }
}
