//! The ipdb edition of the 纯真 database (IPIP.net's ipdb format, IPv4 and
//! IPv6), memory-mapped. Layout: a big-endian u32 length, that many bytes of
//! JSON metadata (`node_count`, `fields`, `languages`), then a binary trie
//! of `node_count` 8-byte nodes (two big-endian u32 children) and the data:
//! a child above `node_count` points at a record, a big-endian u16 length
//! and tab-separated fields. IPv4 addresses live under ::ffff:0:0/96.

use std::net::IpAddr;

use super::{ChineseDb, LookupError};

pub struct Ipdb<D> {
    data: D,
    /// Where the trie starts in `data`.
    base: usize,
    node_count: usize,
    fields: Vec<String>,
    /// Index of the first field of the CN language block.
    language_offset: usize,
    /// The node reached by ::ffff:0:0/96, where IPv4 lookups start.
    v4_root: Option<usize>,
}

impl<D: AsRef<[u8]>> Ipdb<D> {
    pub fn parse(data: D) -> Result<Ipdb<D>, String> {
        let bytes = data.as_ref();
        let meta_len = bytes.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).ok_or("too short")?;
        let meta = bytes
            .get(4..4usize.saturating_add(meta_len))
            .and_then(|m| std::str::from_utf8(m).ok())
            .ok_or("truncated or unreadable ipdb metadata")?;
        let node_count = json_number(meta, "node_count").ok_or("ipdb metadata lacks node_count")?;
        let fields = json_strings(meta, "fields").ok_or("ipdb metadata lacks fields")?;
        let language_offset = json_number(meta, "CN").or_else(|| json_number(meta, "EN")).unwrap_or(0);
        let base = 4 + meta_len;
        if node_count == 0 || base.saturating_add(node_count.saturating_mul(8)) > bytes.len() {
            return Err("truncated ipdb file (its tree lies outside the file)".into());
        }
        let mut db = Ipdb { data, base, node_count, fields, language_offset, v4_root: None };
        db.v4_root = db.walk(0, &[0u8; 10].iter().chain(&[0xff, 0xff]).copied().collect::<Vec<u8>>(), 96).ok();
        Ok(db)
    }

    fn child(&self, node: usize, bit: u8) -> Result<usize, LookupError> {
        let at = self.base + node * 8 + usize::from(bit) * 4;
        let b = self.data.as_ref().get(at..at + 4).ok_or(LookupError)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    /// Follows `bits` bits of `addr` from `node`; stops early at a record.
    fn walk(&self, mut node: usize, addr: &[u8], bits: usize) -> Result<usize, LookupError> {
        for i in 0..bits {
            if node >= self.node_count {
                break;
            }
            let bit = (addr[i / 8] >> (7 - i % 8)) & 1;
            node = self.child(node, bit)?;
        }
        Ok(node)
    }

    pub fn find(&self, ip: IpAddr) -> Result<Option<Vec<String>>, LookupError> {
        let node = match ip {
            IpAddr::V4(v4) => match self.v4_root {
                Some(root) => self.walk(root, &v4.octets(), 32)?,
                None => return Ok(None),
            },
            IpAddr::V6(v6) => self.walk(0, &v6.octets(), 128)?,
        };
        if node <= self.node_count {
            return Ok(None); // node_count itself marks "no data"
        }
        let at = (node - self.node_count).checked_add(self.node_count * 8).ok_or(LookupError)? + self.base;
        let bytes = self.data.as_ref();
        let len = bytes.get(at..at + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))).ok_or(LookupError)?;
        let text = bytes.get(at + 2..at + 2 + len).and_then(|t| std::str::from_utf8(t).ok()).ok_or(LookupError)?;
        let all: Vec<&str> = text.split('\t').collect();
        let mine = all.get(self.language_offset..self.language_offset + self.fields.len()).ok_or(LookupError)?;
        Ok(Some(mine.iter().map(|s| s.to_string()).collect()))
    }

    fn field<'a>(&self, record: &'a [String], name: &str) -> &'a str {
        self.fields.iter().position(|f| f == name).and_then(|i| record.get(i)).map_or("", String::as_str)
    }
}

impl<D: AsRef<[u8]> + Send + Sync> ChineseDb for Ipdb<D> {
    /// The place is country + region + city joined the way qqwry.dat writes
    /// it (the labels code splits it the same way); the carrier is `isp_domain`
    /// or `owner_domain`.
    fn lookup(&self, ip: IpAddr) -> Result<Option<(String, String)>, LookupError> {
        let Some(record) = self.find(ip)? else { return Ok(None) };
        let country = self.field(&record, "country_name");
        let region = self.field(&record, "region_name");
        let city = self.field(&record, "city_name");
        let mut place = String::new();
        if country != super::china::CHINA_ZH || region.is_empty() {
            place.push_str(country);
        }
        if region != country {
            place.push_str(region);
        }
        if city != region {
            place.push_str(city);
        }
        let carrier = [self.field(&record, "isp_domain"), self.field(&record, "owner_domain")]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or("");
        Ok(Some((place, carrier.to_string())))
    }
}

/// `"key":123` in the metadata JSON.
fn json_number(json: &str, key: &str) -> Option<usize> {
    let rest = &json[json.find(&format!("\"{key}\""))? + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `"key":["a","b"]` in the metadata JSON (no escapes in field names).
fn json_strings(json: &str, key: &str) -> Option<Vec<String>> {
    let rest = &json[json.find(&format!("\"{key}\""))? + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start().strip_prefix('[')?;
    let list = &rest[..rest.find(']')?];
    Some(list.split(',').map(|s| s.trim().trim_matches('"').to_string()).filter(|s| !s.is_empty()).collect())
}

/// Builds small ipdb files for tests.
#[doc(hidden)]
pub mod writer {
    use std::net::IpAddr;

    /// Networks (address, prefix length in the 128-bit space, fields) —
    /// an IPv4 network is given as its ::ffff: form with prefix 96 + n.
    pub fn build(fields: &[&str], networks: &[(IpAddr, usize, Vec<&str>)]) -> Vec<u8> {
        // Trie nodes: [left, right], usize::MAX = empty.
        let mut nodes: Vec<[usize; 2]> = vec![[usize::MAX; 2]];
        let mut leaves: Vec<(usize, usize, usize)> = Vec::new(); // (node, bit, record)
        let mut records = Vec::new();
        for (i, (addr, prefix, values)) in networks.iter().enumerate() {
            let octets = match addr {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            let mut node = 0;
            for b in 0..*prefix {
                let bit = ((octets[b / 8] >> (7 - b % 8)) & 1) as usize;
                if b + 1 == *prefix {
                    leaves.push((node, bit, i));
                } else {
                    if nodes[node][bit] == usize::MAX {
                        nodes.push([usize::MAX; 2]);
                        nodes[node][bit] = nodes.len() - 1;
                    }
                    node = nodes[node][bit];
                }
            }
            records.push(values.join("\t"));
        }
        let node_count = nodes.len();
        // Record data follows the tree; a pointer is node_count + the record's
        // offset in the data area. Offset 0 would read as "no data", so the
        // area starts with an empty record.
        let mut data = vec![0u8, 0];
        let mut record_at = Vec::new();
        for r in &records {
            record_at.push(data.len());
            data.extend((r.len() as u16).to_be_bytes());
            data.extend(r.as_bytes());
        }
        let mut tree = Vec::new();
        for (n, children) in nodes.iter().enumerate() {
            for bit in 0..2 {
                let value = match leaves.iter().find(|(node, b, _)| *node == n && *b == bit) {
                    Some((_, _, rec)) => node_count + record_at[*rec],
                    None if children[bit] == usize::MAX => node_count,
                    None => children[bit],
                };
                tree.extend((value as u32).to_be_bytes());
            }
        }
        let fields_json: Vec<String> = fields.iter().map(|f| format!("\"{f}\"")).collect();
        let meta = format!(
            "{{\"build\":1,\"ip_version\":3,\"languages\":{{\"CN\":0}},\"node_count\":{node_count},\"total_size\":{},\"fields\":[{}]}}",
            tree.len() + data.len(),
            fields_json.join(",")
        );
        let mut out = (meta.len() as u32).to_be_bytes().to_vec();
        out.extend(meta.as_bytes());
        out.extend(tree);
        out.extend(data);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: [&str; 5] = ["country_name", "region_name", "city_name", "owner_domain", "isp_domain"];

    fn sample() -> Vec<u8> {
        writer::build(
            &FIELDS,
            &[
                ("14.0.0.0".parse().unwrap(), 96 + 24, vec!["中国", "广东", "深圳", "", "电信"]),
                ("2001:db8:2::".parse().unwrap(), 48, vec!["中国", "北京", "北京", "", "联通"]),
                ("203.0.113.0".parse().unwrap(), 96 + 24, vec!["日本", "日本", "", "", ""]),
            ],
        )
    }

    #[test]
    fn ipv4_and_ipv6_records_read_back() {
        let db = Ipdb::parse(sample()).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(db.lookup(ip("14.0.0.9")).unwrap(), Some(("广东深圳".into(), "电信".into())));
        assert_eq!(db.lookup(ip("2001:db8:2::7")).unwrap(), Some(("北京".into(), "联通".into())));
        assert_eq!(db.lookup(ip("203.0.113.200")).unwrap(), Some(("日本".into(), "".into())));
        assert_eq!(db.lookup(ip("14.0.1.1")).unwrap(), None);
        assert_eq!(db.lookup(ip("2001:db8:3::1")).unwrap(), None);
    }

    #[test]
    fn truncated_files_fail_cleanly() {
        let data = sample();
        for len in [0, 3, 4, 10, 40, data.len() / 2] {
            assert!(Ipdb::parse(data[..len].to_vec()).is_err(), "truncated to {len}");
        }
        // Tree intact, data cut: lookups give an error, never a panic.
        let meta_len = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
        let nodes = json_number(std::str::from_utf8(&data[4..4 + meta_len]).unwrap(), "node_count").unwrap();
        let db = Ipdb::parse(data[..4 + meta_len + nodes * 8 + 3].to_vec()).unwrap();
        assert!(db.lookup("14.0.0.9".parse().unwrap()).is_err());
    }
}
