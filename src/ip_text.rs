//! Addresses as text, both ways, without std's general machinery: the
//! backends' parsers read an address from every line ([`parse_ip`]) and the
//! exporter writes one into every series ([`push_ip`]), so these are most
//! of their cost. Dotted-quad IPv4 and plain IPv6 (hex groups, at most one
//! `::`) are read by hand; anything else (an IPv6 address ending in dotted
//! IPv4) goes to the std parser, which also has the last word on whatever
//! the fast paths reject. Both directions agree with std exactly (tested
//! against it below); parsed IPv4-mapped IPv6 becomes IPv4. Numbers are
//! written the same way ([`push_u64`]).

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::filter::canonical;

pub fn parse_ip(text: &[u8]) -> Option<IpAddr> {
    if let Some(v4) = parse_ipv4(text) {
        return Some(IpAddr::V4(v4));
    }
    if let Some(v6) = parse_ipv6(text) {
        return Some(canonical(IpAddr::V6(v6)));
    }
    let text = std::str::from_utf8(text).ok()?;
    text.parse().ok().map(canonical)
}

/// Four decimal octets of at most 255, no leading zeros (as std demands),
/// octet by octet with the digits unrolled.
fn parse_ipv4(text: &[u8]) -> Option<Ipv4Addr> {
    let digit = |at: usize| text.get(at).filter(|b| b.is_ascii_digit()).map(|b| u16::from(b - b'0'));
    let mut octets = [0u8; 4];
    let mut at = 0;
    for (i, octet) in octets.iter_mut().enumerate() {
        if i > 0 {
            if text.get(at) != Some(&b'.') {
                return None;
            }
            at += 1;
        }
        let mut value = digit(at)?;
        at += 1;
        if let Some(second) = digit(at) {
            if value == 0 {
                return None; // a leading zero
            }
            value = value * 10 + second;
            at += 1;
            if let Some(third) = digit(at) {
                value = value * 10 + third;
                at += 1;
            }
        }
        *octet = u8::try_from(value).ok()?;
    }
    (at == text.len()).then(|| Ipv4Addr::from(octets))
}

/// Eight groups of one to four hex digits, or fewer around one `::` that
/// stands for at least one zero group. No dotted IPv4 tail (std's job).
fn parse_ipv6(text: &[u8]) -> Option<Ipv6Addr> {
    let mut head = [0u16; 8];
    let mut tail = [0u16; 8];
    let (mut heads, mut tails) = (0, 0);
    let mut gap = false;
    let mut at = 0;
    if text.starts_with(b"::") {
        gap = true;
        at = 2;
    }
    while at < text.len() {
        let (group, digits) = hex_group(&text[at..])?;
        if heads + tails == 8 {
            return None;
        }
        if gap {
            tail[tails] = group;
            tails += 1;
        } else {
            head[heads] = group;
            heads += 1;
        }
        at += digits;
        if at == text.len() {
            break;
        }
        if text[at] != b':' {
            return None;
        }
        at += 1;
        if text.get(at) == Some(&b':') {
            if gap {
                return None; // a second `::`
            }
            gap = true;
            at += 1;
        } else if at == text.len() {
            return None; // a lone `:` at the end
        }
    }
    let groups = heads + tails;
    if (gap && groups > 7) || (!gap && groups != 8) {
        return None;
    }
    let mut all = head;
    all[8 - tails..].copy_from_slice(&tail[..tails]);
    Some(Ipv6Addr::from(all))
}

/// Appends `ip` as std's `Display` writes it: dotted quad; IPv6 in lower-case
/// hex with the longest run of two or more zero groups (the first of equals)
/// as `::`, and mapped IPv4 as `::ffff:a.b.c.d` (left to std: never stored,
/// as parsing makes those IPv4).
pub fn push_ip(out: &mut String, ip: IpAddr) {
    let mut text = [0u8; 39];
    let len = match ip {
        IpAddr::V4(v4) => ipv4_text(&mut text, v4),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            let _ = write!(out, "{v6}");
            return;
        }
        IpAddr::V6(v6) => ipv6_text(&mut text, v6),
    };
    // SAFETY: only ASCII digits, letters, dots and colons were written. (Not
    // `from_utf8`: validating costs as much as writing, in the hot loops.)
    out.push_str(unsafe { std::str::from_utf8_unchecked(&text[..len]) });
}

fn ipv4_text(text: &mut [u8; 39], ip: Ipv4Addr) -> usize {
    // Plain indexing: the binary is built for size, where iterator adapters
    // stay calls (this is the journal's and the exporter's inner loop).
    let octets = ip.octets();
    let mut len = 0;
    let mut i = 0;
    while i < 4 {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        let octet = u32::from(octets[i]);
        let (hundreds, tens) = ((octet * 41) >> 12, (octet * 205) >> 11); // octet / 100, octet / 10
        if octet >= 100 {
            text[len] = b'0' + hundreds as u8;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + (tens - hundreds * 10) as u8;
            len += 1;
        }
        text[len] = b'0' + (octet - tens * 10) as u8;
        len += 1;
        i += 1;
    }
    len
}

fn ipv6_text(text: &mut [u8; 39], ip: Ipv6Addr) -> usize {
    let groups = ip.segments();
    let (mut zeros_at, mut zeros) = (0, 0);
    let (mut run_at, mut run) = (0, 0);
    for (i, &group) in groups.iter().enumerate() {
        if group != 0 {
            run = 0;
            continue;
        }
        if run == 0 {
            run_at = i;
        }
        run += 1;
        if run > zeros {
            (zeros_at, zeros) = (run_at, run);
        }
    }
    if zeros < 2 {
        return hex_groups(text, 0, &groups);
    }
    let len = hex_groups(text, 0, &groups[..zeros_at]);
    text[len..len + 2].copy_from_slice(b"::");
    hex_groups(text, len + 2, &groups[zeros_at + zeros..])
}

/// Writes `groups` colon-separated from `at`; returns the new end.
fn hex_groups(text: &mut [u8; 39], mut at: usize, groups: &[u16]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, &group) in groups.iter().enumerate() {
        if i > 0 {
            text[at] = b':';
            at += 1;
        }
        let digits = (16 - group.leading_zeros() as usize).div_ceil(4).max(1);
        for k in (0..digits).rev() {
            text[at] = HEX[usize::from(group >> (4 * k)) & 0xf];
            at += 1;
        }
    }
    at
}

/// One to four hex digits at the start of `text`, and how many there were.
fn hex_group(text: &[u8]) -> Option<(u16, usize)> {
    let mut value = 0u16;
    let mut digits = 0;
    while let Some(digit) = text.get(digits).and_then(|&b| char::from(b).to_digit(16)) {
        if digits == 4 {
            return None;
        }
        value = value << 4 | digit as u16;
        digits += 1;
    }
    (digits > 0).then_some((value, digits))
}

/// Decimal digits of `n`, without the formatting machinery (the exporter's
/// hot loop writes 200,000 of them for 100,000 IPs).
pub fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        let tenth = div10(n);
        at -= 1;
        digits[at] = b'0' + (n - tenth * 10) as u8;
        n = tenth;
        if n == 0 {
            break;
        }
    }
    // SAFETY: only ASCII digits were written.
    out.push_str(unsafe { std::str::from_utf8_unchecked(&digits[at..]) });
}

/// `n / 10` by multiplying with its reciprocal (exact for every u64): a
/// binary built for size would otherwise divide, 20 to 90 cycles a digit.
fn div10(n: u64) -> u64 {
    ((u128::from(n) * 0xCCCC_CCCC_CCCC_CCCD) >> 67) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::xorshift;

    /// Every address written by hand reads as std writes it: random ones,
    /// sparse IPv6 (runs of zeros of every length and position), mapped IPv4.
    #[test]
    fn written_addresses_agree_with_std() {
        let mut next = xorshift(0x2d35_8dcc_aa6c_78a5u64);
        let check = |ip: IpAddr| {
            let mut ours = String::from("x");
            push_ip(&mut ours, ip);
            assert_eq!(ours, format!("x{ip}"));
        };
        for _ in 0..100_000 {
            check(IpAddr::V4(Ipv4Addr::from(next() as u32 >> (next() % 4 * 8))));
            let mut groups = [0u16; 8];
            for g in &mut groups {
                let r = next();
                *g = if r % 2 == 0 { 0 } else { (r >> 8) as u16 >> (r % 4 * 4) };
            }
            check(IpAddr::V6(Ipv6Addr::from(groups)));
        }
        for text in ["::", "::1", "1::", "::ffff:1.2.3.4", "::1.2.3.4", "0:0:1::", "1:0:0:1:0:0:0:1", "1:0:0:2:0:0:3:4"] {
            check(text.parse().expect("an address"));
        }
    }

    /// Numbers written by hand read as std writes them: the edges of every
    /// digit count (where dividing by multiplying would be off by one if
    /// it ever were) and random ones; every octet value in an address.
    #[test]
    fn written_numbers_agree_with_std() {
        let check = |n: u64| {
            let mut ours = String::from("x");
            push_u64(&mut ours, n);
            assert_eq!(ours, format!("x{n}"));
        };
        let mut power = 1u64;
        for _ in 0..20 {
            for n in [power - 1, power, power + 1, power.saturating_mul(10) - 1] {
                check(n);
            }
            power = power.saturating_mul(10);
        }
        check(u64::MAX);
        let mut next = xorshift(0x7a5c_9e3b_2d41_f60du64);
        for _ in 0..100_000 {
            check(next() >> (next() % 64));
        }
        for octet in 0..=255u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(octet, 0, octet, 9));
            let mut ours = String::new();
            push_ip(&mut ours, ip);
            assert_eq!(ours, ip.to_string());
        }
    }

    fn std_ip(text: &str) -> Option<IpAddr> {
        text.parse().ok().map(canonical)
    }

    #[test]
    fn the_ipv4_fast_path_agrees_with_std() {
        for text in [
            "0.0.0.0",
            "1.2.3.4",
            "255.255.255.255",
            "198.18.0.1",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1..3.4",
            "1.2.3.",
            ".1.2.3",
            "1.2.3.4a",
            "1.2.3.-4",
            "1000.1.1.1",
            "",
            "::1",
            "a.b.c.d",
            "1.2.3.04",
        ] {
            let std = text.parse::<Ipv4Addr>().ok();
            assert_eq!(parse_ipv4(text.as_bytes()), std, "{text:?}");
        }
        let mut next = xorshift(0x51_7cc1_b727_220au64);
        for _ in 0..50_000 {
            let addr = Ipv4Addr::from(next() as u32 >> (next() % 4 * 8));
            assert_eq!(parse_ipv4(addr.to_string().as_bytes()), Some(addr));
            let noise: Vec<u8> = (0..next() % 18).map(|_| b"0123456789.0.2550"[(next() % 17) as usize]).collect();
            let text = String::from_utf8(noise).expect("ASCII");
            assert_eq!(parse_ipv4(text.as_bytes()), text.parse().ok(), "{text:?}");
        }
    }

    #[test]
    fn the_ipv6_fast_path_agrees_with_std_on_edge_cases() {
        for text in [
            "::",
            "::1",
            "1::",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1::8",
            "1:2:3:4:5:6:7:8::",
            "::1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7",
            "1:2:3:4:5:6:7:8:9",
            "1:::2",
            "1::2::3",
            ":1::2",
            "1::2:",
            ":",
            ":::",
            "",
            "12345::",
            "ffff::FFFF",
            "0000:0000::0",
            "g::",
            "1:2:3:4:5:6::7:8",
            "2001:db8::2",
            "fe80::1%eth0",
            "1: 2::",
            "::ffff:1.2.3.4",
            "1:2:3:4:5:6:1.2.3.4",
            "1:2:3:4:5:6:7:",
            "1:",
            "::1:",
            "00000::1",
            "2001:0db8:0000:0000:0000:ff00:0042:8329",
        ] {
            let fast = parse_ipv6(text.as_bytes()).map(|v6| canonical(IpAddr::V6(v6)));
            if fast.is_some() {
                assert_eq!(fast, std_ip(text), "{text:?}");
            }
            assert_eq!(parse_ip(text.as_bytes()), std_ip(text), "{text:?}");
            let no_dot = !text.contains('.');
            assert_eq!(
                fast.is_some(),
                no_dot && std_ip(text).is_some(),
                "fast path coverage: {text:?}"
            );
        }
    }

    /// Every address std prints, compressed or in full, is read back by the
    /// fast path to the same value; random byte strings over the address
    /// alphabet get std's verdict.
    #[test]
    fn the_ipv6_fast_path_agrees_with_std_on_generated_text() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
        for _ in 0..20_000 {
            // Sparse groups, so that `::` compression shows up often.
            let mut groups = [0u16; 8];
            for g in &mut groups {
                let r = next();
                *g = if r % 3 == 0 { (r >> 8) as u16 } else { 0 };
            }
            let addr = Ipv6Addr::from(groups);
            for text in [addr.to_string(), groups.map(|g| format!("{g:X}")).join(":")] {
                let fast = parse_ipv6(text.as_bytes());
                if text.contains('.') {
                    continue; // std prints some addresses with a dotted tail
                }
                assert_eq!(fast, Some(addr), "{text}");
            }
            let noise: Vec<u8> = (0..next() % 16)
                .map(|_| b"0f:A.:1:"[(next() % 8) as usize])
                .collect();
            let text = String::from_utf8(noise).expect("ASCII");
            assert_eq!(parse_ip(text.as_bytes()), std_ip(&text), "{text:?}");
            if let Some(fast) = parse_ipv6(text.as_bytes()) {
                assert_eq!(Some(IpAddr::V6(fast)), text.parse().ok(), "{text:?}");
            }
        }
    }
}
