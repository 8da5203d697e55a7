//! GBK text, as the 纯真 qqwry.dat stores place and carrier names, to
//! UTF-8. ASCII bytes are themselves, 0x80 is €, and a lead byte
//! 0x81..=0xFE with a trail byte 0x40..=0xFE (but 0x7F) is looked up in the
//! table build.rs takes from encoding_rs (the WHATWG GBK index). Anything
//! else is U+FFFD, one per bad byte, and an ASCII byte after a lead byte is
//! read again as itself, as WHATWG says. GB18030's four-byte sequences,
//! which these databases do not use, are not decoded (each gives U+FFFD and
//! its digits).

/// The code points of two-byte codes: 126 lead bytes × 191 trail bytes, u16 LE.
static TABLE: &[u8; 126 * 191 * 2] = include_bytes!(concat!(env!("OUT_DIR"), "/gbk.bin"));

/// `bytes` decoded, bad sequences as U+FFFD.
pub fn decode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3 / 2);
    let mut rest = bytes;
    while let Some((&byte, after)) = rest.split_first() {
        rest = after;
        match byte {
            0x00..=0x7F => out.push(char::from(byte)),
            0x80 => out.push('€'),
            0x81..=0xFE => {
                let trail = rest.first().copied();
                match trail.and_then(|trail| two_byte(byte, trail)) {
                    Some(c) => {
                        out.push(c);
                        rest = &rest[1..];
                    }
                    None => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        // A non-ASCII byte that is no trail is part of the error.
                        if trail.is_some_and(|t| t >= 0x80) {
                            rest = &rest[1..];
                        }
                    }
                }
            }
            0xFF => out.push(char::REPLACEMENT_CHARACTER),
        }
    }
    out
}

/// The character of a two-byte code, if it is one.
fn two_byte(lead: u8, trail: u8) -> Option<char> {
    if !(0x40..=0xFE).contains(&trail) {
        return None;
    }
    let at = 2 * (usize::from(lead - 0x81) * 191 + usize::from(trail - 0x40));
    let code = u16::from_le_bytes([TABLE[at], TABLE[at + 1]]);
    if code == 0 { None } else { char::from_u32(u32::from(code)) }
}

/// `text` in GBK, for the test databases' writer: each character found by
/// a walk through the table (slow, and never in the monitor's binary); one
/// GBK lacks is `?`.
pub fn encode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 * text.len());
    for c in text.chars() {
        if c.is_ascii() || c == '€' {
            out.push(if c == '€' { 0x80 } else { c as u8 });
            continue;
        }
        let code = u16::try_from(u32::from(c)).ok().filter(|&code| code != 0);
        let at = code.and_then(|code| TABLE.chunks_exact(2).position(|pair| pair == code.to_le_bytes()));
        match at {
            Some(at) => out.extend([0x81 + (at / 191) as u8, 0x40 + (at % 191) as u8]),
            None => out.push(b'?'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(bytes: &[u8]) -> String {
        encoding_rs::GBK.decode_without_bom_handling(bytes).0.into_owned()
    }

    #[test]
    fn every_single_and_two_byte_code_decodes_as_encoding_rs_does() {
        for byte in 0..=0xFFu8 {
            assert_eq!(decode(&[byte]), reference(&[byte]), "{byte:#04x}");
            for trail in 0..=0xFFu8 {
                // Digits after a lead byte begin GB18030's four-byte codes.
                if !trail.is_ascii_digit() {
                    assert_eq!(decode(&[byte, trail]), reference(&[byte, trail]), "{byte:#04x} {trail:#04x}");
                }
            }
        }
    }

    #[test]
    fn random_text_decodes_as_encoding_rs_does_and_round_trips() {
        let mut next = crate::testing::xorshift(0x9e37_79b9);
        for _ in 0..20_000 {
            let len = (next() % 12) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).map(|b| if b.is_ascii_digit() { b'x' } else { b }).collect();
            assert_eq!(decode(&bytes), reference(&bytes), "{bytes:02x?}");
        }
        for text in ["中国 广东省 深圳市", "电信", "北京市 联通 ADSL", "€ 5", "臺灣"] {
            assert_eq!(decode(&encode(text)), text);
            assert_eq!(encode(text), encoding_rs::GBK.encode(text).0.into_owned(), "{text}");
        }
    }
}
