//! The bpftrace output parser: one line in, one [`Line`] out, by hand with
//! `memchr` and without allocating. The accepted format is documented in
//! README ("自定义 bpftrace 脚本") so that users can write their own scripts:
//!
//! ```text
//! @tx0[198.51.100.7]: 20992712       bytes sent to an IP since the last report,
//!                                     from buffer 0 (any map named tx or txN, N a digit)
//! @rx1[2001:db8::2]: 10506212        bytes received from it, from buffer 1 (rx, rxN)
//! @cum0[0]: 20992712                 optional, after buffer 0's per-IP lines: every
//! @cum0[1]: 10506212                 byte buffer 0 ever sent (key 0) and received (key 1),
//!                                     never cleared (a map named cum or cumN)
//! @proc[198.51.100.7]: 2135          the PID of the local process talking to it
//! @comm[2135]: \x69\x70\x65...       that process's name, each byte as \xNN
//!                                     (printf "%rx" of buf(comm, 16)), NUL-padded
//! @end                               the report is complete
//! @attached                          printed once from BEGIN: counting has begun
//! ```
//!
//! No line carries text a process chose: a process names itself (with
//! newlines, if it likes), so its name is accepted only hex-escaped, and
//! every field is checked against its exact grammar.
//! Blank lines and bpftrace's own `Attaching N probes...` (printed before
//! the probes are attached, so it does not mean counting has begun) are
//! expected; anything else is malformed and is counted, never guessed at.

use std::net::IpAddr;

use memchr::memchr;

use crate::ip_text::parse_ip;
use crate::store::Comm;

/// A direction, as the script's map names spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Tx,
    Rx,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    /// Bytes of one IP, from one buffer (0 to 9).
    Tx(IpAddr, u64, u8),
    Rx(IpAddr, u64, u8),
    /// Every byte a buffer ever took in one direction.
    Total(Dir, u8, u64),
    /// The PID that last sent to the IP.
    Owner(IpAddr, u32),
    /// A PID's name.
    Name(u32, Comm),
    End,
    /// The script's BEGIN ran: every probe is attached, counting has begun.
    Attached,
    Blank,
    Malformed,
}

pub fn parse_line(line: &[u8]) -> Line {
    let line = trim_end(line);
    if line.is_empty() {
        return Line::Blank;
    }
    if line.starts_with(b"@end") {
        return Line::End;
    }
    if line.starts_with(b"@attached") {
        return Line::Attached;
    }
    if line.starts_with(b"Attaching ") {
        return Line::Blank;
    }
    parse_map_entry(line).unwrap_or(Line::Malformed)
}

/// `tx`, `tx0` ... `rx9`, `cum`, `cum3`: the name and the buffer (0 when unnumbered).
fn name_and_buffer(name: &[u8]) -> Option<(&[u8], u8)> {
    match name {
        [base @ .., d @ b'0'..=b'9'] => Some((base, d - b'0')),
        _ => Some((name, 0)),
    }
}

fn direction(name: &[u8]) -> Option<Dir> {
    match name {
        b"tx" => Some(Dir::Tx),
        b"rx" => Some(Dir::Rx),
        _ => None,
    }
}

/// `@NAME[KEY]: VALUE`
fn parse_map_entry(line: &[u8]) -> Option<Line> {
    let rest = line.strip_prefix(b"@")?;
    let open = memchr(b'[', rest)?;
    let (name, rest) = (&rest[..open], &rest[open + 1..]);
    let close = memchr(b']', rest)?;
    let (key, value) = (&rest[..close], rest[close + 1..].strip_prefix(b": ")?);
    if name.starts_with(b"comm") {
        return Some(Line::Name(parse_pid(key)?, parse_hex_name(value)?));
    }
    let (base, buffer) = name_and_buffer(name)?;
    if base == b"cum" {
        let dir = match key {
            b"0" => Dir::Tx,
            b"1" => Dir::Rx,
            _ => return None,
        };
        return Some(Line::Total(dir, buffer, parse_u64(value)?));
    }
    let ip = parse_ip(key)?;
    if name.starts_with(b"proc") {
        return Some(Line::Owner(ip, parse_pid(value)?));
    }
    let bytes = parse_u64(value)?;
    Some(match direction(base)? {
        Dir::Tx => Line::Tx(ip, bytes, buffer),
        Dir::Rx => Line::Rx(ip, bytes, buffer),
    })
}

fn parse_pid(digits: &[u8]) -> Option<u32> {
    u32::try_from(parse_u64(digits)?).ok()
}

/// 1 to 16 bytes, each `\xNN` (NN in hex), as bpftrace's `%rx` prints a
/// buffer; the name ends at the first NUL.
fn parse_hex_name(value: &[u8]) -> Option<Comm> {
    if value.is_empty() || value.len() % 4 != 0 || value.len() > 16 * 4 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (byte, escape) in bytes.iter_mut().zip(value.chunks_exact(4)) {
        let [b'\\', b'x', hi, lo] = *escape else { return None };
        *byte = hex_digit(hi)? << 4 | hex_digit(lo)?;
    }
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(value.len() / 4);
    Some(Comm::new(&bytes[..len]))
}

fn hex_digit(d: u8) -> Option<u8> {
    match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        b'A'..=b'F' => Some(d - b'A' + 10),
        _ => None,
    }
}

/// Decimal digits only, no sign, no overflow.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(n)
}

fn trim_end(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r'] = line {
        line = rest;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Recorded from bpftrace 0.17 running bpftrace/traffic.bt between two
    /// namespaces (a UDP datagram from bash, the ICMP error back), then
    /// stopped: END prints the running totals once more.
    const RECORDED: &str = "Attaching 5 probes...\n\
        @attached\n\
        @comm[15866]: \\x62\\x61\\x73\\x68\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\n\
        @tx0[192.0.2.2]: 31\n\
        @rx0[192.0.2.2]: 59\n\
        @cum0[0]: 31\n\
        @cum0[1]: 59\n\
        @proc[192.0.2.2]: 15866\n\
        @end\n\
        \n\
        @cum0[0]: 31\n\
        @end\n";

    #[test]
    fn recorded_output_parses_line_by_line() {
        let lines: Vec<Line> = RECORDED.lines().map(|l| parse_line(l.as_bytes())).collect();
        assert_eq!(
            lines,
            vec![
                Line::Blank,
                Line::Attached,
                Line::Name(15866, Comm::new(b"bash")),
                Line::Tx(ip("192.0.2.2"), 31, 0),
                Line::Rx(ip("192.0.2.2"), 59, 0),
                Line::Total(Dir::Tx, 0, 31),
                Line::Total(Dir::Rx, 0, 59),
                Line::Owner(ip("192.0.2.2"), 15866),
                Line::End,
                Line::Blank,
                Line::Total(Dir::Tx, 0, 31),
                Line::End,
            ]
        );
    }

    #[test]
    fn mapped_ipv6_becomes_ipv4_and_crlf_is_tolerated() {
        assert_eq!(parse_line(b"@rx0[::ffff:198.51.100.7]: 5\r\n"), Line::Rx(ip("198.51.100.7"), 5, 0));
        assert_eq!(parse_line(b"@tx[203.0.113.9]: 0"), Line::Tx(ip("203.0.113.9"), 0, 0));
        assert_eq!(parse_line(b"@tx7[203.0.113.9]: 3"), Line::Tx(ip("203.0.113.9"), 3, 7));
    }

    #[test]
    fn running_totals_name_their_direction_and_buffer() {
        assert_eq!(parse_line(b"@cum0[0]: 20992712"), Line::Total(Dir::Tx, 0, 20992712));
        assert_eq!(parse_line(b"@cum1[1]: 0"), Line::Total(Dir::Rx, 1, 0));
        assert_eq!(parse_line(b"@cum[1]: 7\n"), Line::Total(Dir::Rx, 0, 7));
        for bad in ["@cum0[2]: 5", "@cum12[0]: 5", "@cumx[0]: 1", "@cum0[0]:5", "@cum0[0]: -1", "@cum0[0]: 1x", "@cum0: 1", "@cum0[1.2.3.4]: 5"] {
            assert_eq!(parse_line(bad.as_bytes()), Line::Malformed, "{bad:?}");
        }
    }

    #[test]
    fn names_are_read_from_hex_and_end_at_the_first_nul() {
        let name = |line: &str| match parse_line(line.as_bytes()) {
            Line::Name(pid, comm) => Some((pid, comm)),
            _ => None,
        };
        let curl = "\\x63\\x75\\x72\\x6c\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00";
        assert_eq!(name(&format!("@comm[7]: {curl}")), Some((7, Comm::new(b"curl"))));
        // A name holding a newline and what looks like a report line stays one name.
        assert_eq!(
            name("@comm[9]: \\x0a\\x40\\x65\\x6e\\x64\\x0A\\x29"),
            Some((9, Comm::new(b"\n@end\n)")))
        );
        // 16 bytes without a NUL (not from bpftrace's comm, but well formed).
        let sixteen = "\\x61".repeat(16);
        assert_eq!(name(&format!("@comm[1]: {sixteen}")), Some((1, Comm::new(&[b'a'; 16]))));
        assert_eq!(parse_line(b"@proc[203.0.113.9]: 7"), Line::Owner(ip("203.0.113.9"), 7));
    }

    #[test]
    fn malformed_and_truncated_lines_are_rejected() {
        for bad in [
            "@tx0[198.51.100.7]: ",
            "@tx0[198.51.100.7]: 12x",
            "@tx0[198.51.100.7]: -5",
            "@tx0[198.51.100.7]: 99999999999999999999999",
            "@tx0[198.51.100.7]:5",
            "@tx0[198.51.100.7] 5",
            "@tx0[198.51.100.7",
            "@tx0[198.51.100.",
            "@tx0[]: 5",
            "@tx0[hello]: 5",
            "@tx0[1.2.3.4.5]: 5",
            "@other[198.51.100.7]: 5",
            "@txbytes[198.51.100.7]: 5",
            "@tx10[198.51.100.7]: 5",
            "@txall0: 5",
            "@proc[198.51.100.7]: (12, curl)",
            "@proc[198.51.100.7]: x",
            "@proc[198.51.100.7]: 99999999999",
            "@proc[198.51.100.7]: 12 ",
            "@comm[12]: curl",
            "@comm[12]: \\x63\\x75\\x72\\x6",
            "@comm[12]: \\x63\\x75\\x72\\x6g",
            "@comm[12]: \\x63curl",
            "@comm[12]: ",
            "@comm[x]: \\x63",
            "@comm[198.51.100.7]: \\x63",
            "tx0[198.51.100.7]: 5",
            "ERROR: something",
            "@",
            "@tx",
            "\u{0}\u{ff}",
        ] {
            assert_eq!(parse_line(bad.as_bytes()), Line::Malformed, "{bad:?}");
        }
        assert_eq!(parse_line(b"@tx0[198.51.100.7]: \xff"), Line::Malformed);
        let seventeen = "\\x61".repeat(17);
        assert_eq!(parse_line(format!("@comm[1]: {seventeen}").as_bytes()), Line::Malformed);
    }

    #[test]
    fn largest_counter_value_is_exact() {
        assert_eq!(parse_line(b"@tx[8.8.8.8]: 18446744073709551615"), Line::Tx(ip("8.8.8.8"), u64::MAX, 0));
        assert_eq!(parse_line(b"@tx[8.8.8.8]: 18446744073709551616"), Line::Malformed);
    }
}
