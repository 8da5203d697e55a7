//! The elements of an nf_tables set with counters, as a set-element dump
//! (`NFT_MSG_NEWSETELEM` messages) carries them: each element's key (a
//! remote IPv4 or IPv6 address) and its counter's bytes and packets. The grammar, from
//! the kernel's `nf_tables.h`:
//!
//! ```text
//! NFTA_SET_ELEM_LIST_ELEMENTS (3, nested)
//!   NFTA_LIST_ELEM (1, nested), one per element
//!     NFTA_SET_ELEM_KEY (1, nested)         NFTA_DATA_VALUE (1): 4 or 16 bytes
//!     NFTA_SET_ELEM_EXPR (7, nested)        one expression, or
//!     NFTA_SET_ELEM_EXPRESSIONS (11, nested) NFTA_LIST_ELEM (1) per expression
//!       NFTA_EXPR_NAME (1) "counter", NFTA_EXPR_DATA (2, nested)
//!         NFTA_COUNTER_BYTES (1): u64, big-endian; NFTA_COUNTER_PACKETS (2)
//! ```
//!
//! An element without a readable key or counter is skipped and counted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::netlink::{Message, attributes, be_u64};

const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_EXPR: u16 = 7;
const NFTA_SET_ELEM_EXPRESSIONS: u16 = 11;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;

/// One element: a peer and what its counter holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted {
    pub ip: IpAddr,
    pub bytes: u64,
    pub packets: u64,
}

/// Adds each element of a set-element message to `out`; returns how many
/// elements could not be read.
pub fn read_elements(message: &Message, out: &mut Vec<Counted>) -> usize {
    let Some(list) = message.attributes().find(NFTA_SET_ELEM_LIST_ELEMENTS) else { return 0 };
    let mut unreadable = 0;
    for (kind, element) in attributes(list) {
        if kind != NFTA_LIST_ELEM {
            continue;
        }
        match read_element(element) {
            Some(counted) => out.push(counted),
            None => unreadable += 1,
        }
    }
    unreadable
}

fn read_element(element: &[u8]) -> Option<Counted> {
    let key = attributes(attributes(element).find(NFTA_SET_ELEM_KEY)?).find(NFTA_DATA_VALUE)?;
    let ip = match key.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(key).ok()?)),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(key).ok()?)),
        _ => return None,
    };
    let (bytes, packets) = attributes(element).find_map(|(kind, payload)| match kind {
        NFTA_SET_ELEM_EXPR => counter(payload),
        NFTA_SET_ELEM_EXPRESSIONS => attributes(payload).filter(|(k, _)| *k == NFTA_LIST_ELEM).find_map(|(_, expr)| counter(expr)),
        _ => None,
    })?;
    Some(Counted { ip, bytes, packets })
}

/// The bytes and packets of a `counter` expression; `None` for any other
/// expression.
fn counter(expr: &[u8]) -> Option<(u64, u64)> {
    (attributes(expr).find(NFTA_EXPR_NAME)? == b"counter\0").then_some(())?;
    let data = attributes(expr).find(NFTA_EXPR_DATA)?;
    Some((be_u64(attributes(data).find(NFTA_COUNTER_BYTES)?)?, be_u64(attributes(data).find(NFTA_COUNTER_PACKETS)?)?))
}

#[cfg(test)]
mod tests {
    use super::super::netlink::{Builder, messages};
    use super::*;

    /// A set-element message as the kernel sends it, built field by field.
    fn element_message(elements: &[(&[u8], Option<u64>, bool)]) -> Vec<u8> {
        let mut b = Builder::new(0x0a0c, 0x2, 1, 1);
        b.attr_str(1, "itm").attr_str(2, "tx4");
        let list = b.begin_nest(NFTA_SET_ELEM_LIST_ELEMENTS);
        for (key, bytes, in_a_list) in elements {
            let element = b.begin_nest(NFTA_LIST_ELEM);
            let k = b.begin_nest(NFTA_SET_ELEM_KEY);
            b.attr(NFTA_DATA_VALUE, key);
            b.end_nest(k);
            if let Some(bytes) = bytes {
                let outer = if *in_a_list { Some(b.begin_nest(NFTA_SET_ELEM_EXPRESSIONS)) } else { None };
                let expr = b.begin_nest(if *in_a_list { NFTA_LIST_ELEM } else { NFTA_SET_ELEM_EXPR });
                b.attr_str(NFTA_EXPR_NAME, "counter");
                let data = b.begin_nest(NFTA_EXPR_DATA);
                b.attr(NFTA_COUNTER_BYTES, &bytes.to_be_bytes()).attr(2, &3u64.to_be_bytes());
                b.end_nest(data);
                b.end_nest(expr);
                if let Some(outer) = outer {
                    b.end_nest(outer);
                }
            }
            b.end_nest(element);
        }
        b.end_nest(list);
        b.finish()
    }

    #[test]
    fn addresses_and_counter_bytes_of_both_families_and_both_layouts() {
        let bytes = element_message(&[
            (&[198, 51, 100, 7], Some(20_992_712), false),
            (&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets(), Some(10_506_212), true),
            (&[1, 2, 3], Some(5), false), // a key of no address length
            (&[203, 0, 113, 9], None, false), // no counter
        ]);
        let message = messages(&bytes).next().unwrap();
        let mut out = Vec::new();
        assert_eq!(read_elements(&message, &mut out), 2, "two unreadable elements");
        let counted = |ip: &str, bytes| Counted { ip: ip.parse().unwrap(), bytes, packets: 3 };
        assert_eq!(out, [counted("198.51.100.7", 20_992_712), counted("2001:db8::2", 10_506_212)]);
    }
}
