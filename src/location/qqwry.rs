//! The classic 纯真 `qqwry.dat` (IPv4 only), memory-mapped. Layout, all
//! integers little-endian:
//!
//! - header: offset of the first and of the last 7-byte index entry;
//! - index: sorted entries of (first IP: u32, record offset: u24);
//! - record: last IP (u32), then the place and the carrier, GBK text, each
//!   NUL-terminated or replaced by a redirect: byte 1 = both place and
//!   carrier are at the u24 offset that follows (which may itself start
//!   with a byte-2 redirect for the place), byte 2 = only the place is there
//!   and the carrier follows here.
//!
//! Every offset is checked against the file, so a truncated or damaged file
//! is an error at open or `LookupError` for one address, never a panic.

use std::net::IpAddr;

use super::{ChineseDb, LookupError};

const INDEX_ENTRY: usize = 7;
const REDIRECT_BOTH: u8 = 1;
const REDIRECT_PLACE: u8 = 2;
/// Redirect chains longer than this are a damaged (or hostile) file.
const MAX_REDIRECTS: usize = 8;

pub struct Qqwry<D> {
    data: D,
    first: usize,
    count: usize,
}

impl<D: AsRef<[u8]>> Qqwry<D> {
    pub fn parse(data: D) -> Result<Qqwry<D>, String> {
        let bytes = data.as_ref();
        let header = |at: usize| read_u32(bytes, at).map(|v| v as usize);
        let (Some(first), Some(last)) = (header(0), header(4)) else {
            return Err("too short to be a qqwry.dat".into());
        };
        if first < 8 || last < first || (last - first) % INDEX_ENTRY != 0 || last + INDEX_ENTRY > bytes.len() {
            return Err("not a qqwry.dat, or truncated (its index lies outside the file)".into());
        }
        Ok(Qqwry { data, first, count: (last - first) / INDEX_ENTRY + 1 })
    }

    fn entry(&self, i: usize) -> Option<(u32, usize)> {
        let at = self.first + i * INDEX_ENTRY;
        Some((read_u32(self.data.as_ref(), at)?, read_u24(self.data.as_ref(), at + 4)?))
    }

    /// (place, carrier) for an IPv4 address.
    pub fn find(&self, ip: u32) -> Result<Option<(String, String)>, LookupError> {
        // The last entry whose first IP is <= ip.
        let (mut lo, mut hi) = (0, self.count);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if self.entry(mid).ok_or(LookupError)?.0 <= ip { lo = mid } else { hi = mid }
        }
        let (start, record) = self.entry(lo).ok_or(LookupError)?;
        let end = read_u32(self.data.as_ref(), record).ok_or(LookupError)?;
        if ip < start || ip > end {
            return Ok(None);
        }
        self.record_text(record + 4).map(Some)
    }

    fn record_text(&self, mut at: usize) -> Result<(String, String), LookupError> {
        let bytes = self.data.as_ref();
        let mut hops = 0;
        loop {
            match *bytes.get(at).ok_or(LookupError)? {
                REDIRECT_BOTH => {
                    hops += 1;
                    if hops > MAX_REDIRECTS {
                        return Err(LookupError);
                    }
                    at = read_u24(bytes, at + 1).ok_or(LookupError)?;
                }
                REDIRECT_PLACE => {
                    let place_at = read_u24(bytes, at + 1).ok_or(LookupError)?;
                    let (place, _) = self.string(place_at)?;
                    return Ok((place, self.carrier(at + 4)?));
                }
                _ => {
                    let (place, after) = self.string(at)?;
                    return Ok((place, self.carrier(after)?));
                }
            }
        }
    }

    /// The carrier is inline or behind a redirect (either byte); offset 0 means none.
    fn carrier(&self, at: usize) -> Result<String, LookupError> {
        let bytes = self.data.as_ref();
        match bytes.get(at) {
            None => Err(LookupError),
            Some(&REDIRECT_BOTH | &REDIRECT_PLACE) => match read_u24(bytes, at + 1).ok_or(LookupError)? {
                0 => Ok(String::new()),
                target => self.string(target).map(|(s, _)| s),
            },
            Some(_) => self.string(at).map(|(s, _)| s),
        }
    }

    /// A NUL-terminated GBK string at `at`, decoded; and the offset after it.
    fn string(&self, at: usize) -> Result<(String, usize), LookupError> {
        let bytes = self.data.as_ref().get(at..).ok_or(LookupError)?;
        let len = memchr::memchr(0, bytes).ok_or(LookupError)?;
        Ok((super::gbk::decode(&bytes[..len]), at + len + 1))
    }
}

impl<D: AsRef<[u8]> + Send + Sync> ChineseDb for Qqwry<D> {
    fn lookup(&self, ip: IpAddr) -> Result<Option<(String, String)>, LookupError> {
        match ip {
            IpAddr::V4(v4) => self.find(u32::from(v4)),
            IpAddr::V6(_) => Ok(None), // qqwry.dat holds IPv4 only
        }
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn read_u24(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at.checked_add(3)?)?;
    Some(usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16)
}

/// Builds small qqwry.dat files for tests, using every record layout.
#[doc(hidden)]
pub mod writer {
    /// How a record stores its text.
    #[derive(Clone, Copy)]
    pub enum Layout {
        Inline,
        /// Byte 1: place and carrier elsewhere.
        RedirectBoth,
        /// Byte 2: place elsewhere, carrier inline.
        RedirectPlace,
        /// Byte 1 to a block that starts with a byte-2 redirect.
        RedirectBothThenPlace,
    }

    fn u24(v: usize) -> [u8; 3] {
        [v as u8, (v >> 8) as u8, (v >> 16) as u8]
    }

    fn gbk(text: &str) -> Vec<u8> {
        let mut out = super::super::gbk::encode(text);
        out.push(0);
        out
    }

    /// Ranges (first, last, place, carrier, layout), sorted and disjoint.
    pub fn build(ranges: &[(u32, u32, &str, &str, Layout)]) -> Vec<u8> {
        let mut out = vec![0u8; 8];
        let mut index = Vec::new();
        for &(first, last, place, carrier, layout) in ranges {
            // Text blocks referred to by redirects come first.
            let (place_at, both_at) = {
                let place_at = out.len();
                out.extend(gbk(place));
                let both_at = out.len();
                match layout {
                    Layout::RedirectBothThenPlace => {
                        out.push(2);
                        out.extend(u24(place_at));
                        out.extend(gbk(carrier));
                    }
                    _ => {
                        out.extend(gbk(place));
                        out.extend(gbk(carrier));
                    }
                }
                (place_at, both_at)
            };
            let record = out.len();
            out.extend(last.to_le_bytes());
            match layout {
                Layout::Inline => {
                    out.extend(gbk(place));
                    out.extend(gbk(carrier));
                }
                Layout::RedirectBoth | Layout::RedirectBothThenPlace => {
                    out.push(1);
                    out.extend(u24(both_at));
                }
                Layout::RedirectPlace => {
                    out.push(2);
                    out.extend(u24(place_at));
                    out.extend(gbk(carrier));
                }
            }
            index.push((first, record));
        }
        let first_index = out.len();
        for (first, record) in &index {
            out.extend(first.to_le_bytes());
            out.extend(u24(*record));
        }
        let last_index = out.len() - 7;
        out[0..4].copy_from_slice(&(first_index as u32).to_le_bytes());
        out[4..8].copy_from_slice(&(last_index as u32).to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::writer::{Layout, build};
    use super::*;

    fn v4(s: &str) -> u32 {
        u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
    }

    fn sample() -> Vec<u8> {
        build(&[
            (v4("1.0.0.0"), v4("1.0.0.255"), "美国", " CZ88.NET", Layout::Inline),
            (v4("1.12.0.0"), v4("1.15.255.255"), "北京市", "腾讯云", Layout::RedirectBoth),
            (v4("14.0.0.0"), v4("14.0.0.255"), "广东省深圳市", "电信", Layout::RedirectPlace),
            (v4("36.0.0.0"), v4("36.0.0.255"), "新疆乌鲁木齐市", "移动", Layout::RedirectBothThenPlace),
        ])
    }

    #[test]
    fn every_layout_reads_back_its_gbk_text() {
        let db = Qqwry::parse(sample()).unwrap();
        let find = |ip: &str| db.find(v4(ip)).unwrap();
        assert_eq!(find("1.0.0.7"), Some(("美国".into(), " CZ88.NET".into())));
        assert_eq!(find("1.13.1.1"), Some(("北京市".into(), "腾讯云".into())));
        assert_eq!(find("14.0.0.255"), Some(("广东省深圳市".into(), "电信".into())));
        assert_eq!(find("36.0.0.0"), Some(("新疆乌鲁木齐市".into(), "移动".into())));
        assert_eq!(find("1.1.0.0"), None, "between ranges");
        assert_eq!(find("0.255.255.255"), None, "before the first");
        assert_eq!(find("200.0.0.0"), None, "after the last");
    }

    #[test]
    fn truncated_and_damaged_files_fail_cleanly() {
        let data = sample();
        for len in [0, 3, 7, 8, 20, data.len() - 1] {
            assert!(Qqwry::parse(data[..len].to_vec()).is_err(), "truncated to {len}");
        }
        // Index intact, records cut away: lookups fail, nothing panics.
        let mut cut = data.clone();
        let first = u32::from_le_bytes(cut[0..4].try_into().unwrap()) as usize;
        for b in &mut cut[8..first] {
            *b = 1; // every record now redirects to itself or garbage
        }
        let db = Qqwry::parse(cut).unwrap();
        for ip in ["1.0.0.7", "1.13.1.1", "14.0.0.1", "36.0.0.1"] {
            let _ = db.find(v4(ip)); // Err or Ok: only no panic, no endless loop
        }
        let mut huge = data;
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Qqwry::parse(huge).is_err());
    }
}
