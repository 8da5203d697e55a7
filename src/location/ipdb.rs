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
        let meta = Meta::parse(meta).ok_or("its metadata is not the JSON object an ipdb file starts with")?;
        let base = 4 + meta_len;
        // As the official readers check: the metadata says how long the rest is.
        if base.checked_add(meta.total_size) != Some(bytes.len()) {
            return Err(format!(
                "database size error: the metadata says {} bytes follow it, the file has {} (truncated or damaged)",
                meta.total_size,
                bytes.len() - base
            ));
        }
        let Meta { node_count, fields, language_offset, .. } = meta;
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
            // The structured field drops 市 (荆门), where qqwry.dat writes
            // 荆门市: one label for both editions.
            if country == super::china::CHINA_ZH && !city.is_empty() && !["市", "自治州", "盟", "地区", "区", "县", "旗"].iter().any(|s| city.ends_with(s)) {
                place.push('市');
            }
        }
        let carrier = [self.field(&record, "isp_domain"), self.field(&record, "owner_domain")]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or("");
        Ok(Some((place, carrier.to_string())))
    }
}

/// What the metadata says: `{"node_count": N, "total_size": N, "fields":
/// ["…"], "languages": {"CN": N}, …}`, read strictly (the whole text one
/// JSON object; other keys skipped but checked).
struct Meta {
    node_count: usize,
    total_size: usize,
    fields: Vec<String>,
    /// Index of the first field of the CN language block (else EN's).
    language_offset: usize,
}

impl Meta {
    fn parse(text: &str) -> Option<Meta> {
        let mut json = Json { text: text.as_bytes(), at: 0, depth: 0 };
        let (mut node_count, mut total_size, mut fields, mut languages) = (None, None, None, Vec::new());
        json.object(|json, key| {
            match key {
                "node_count" => node_count = Some(json.number()?),
                "total_size" => total_size = Some(json.number()?),
                "fields" => fields = Some(json.strings()?),
                "languages" => json.object(|json, language| {
                    languages.push((language.to_string(), json.number()?));
                    Some(())
                })?,
                _ => json.skip()?,
            }
            Some(())
        })?;
        json.space();
        if json.at != json.text.len() {
            return None;
        }
        let offset = |name: &str| languages.iter().find(|(l, _)| l == name).map(|(_, n)| *n);
        Some(Meta { node_count: node_count?, total_size: total_size?, fields: fields?, language_offset: offset("CN").or_else(|| offset("EN")).unwrap_or(0) })
    }
}

/// A strict reader of the JSON the metadata is (RFC 8259: objects,
/// arrays, strings, numbers, true, false, null).
struct Json<'a> {
    text: &'a [u8],
    at: usize,
    /// Objects and arrays open around the reader: a file nested deeper
    /// than [`MAX_DEPTH`] is refused, not followed down the stack.
    depth: usize,
}

const MAX_DEPTH: usize = 32;

impl Json<'_> {
    fn space(&mut self) {
        while self.text.get(self.at).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        self.space();
        (self.text.get(self.at) == Some(&byte)).then(|| self.at += 1)
    }

    fn peek(&mut self) -> Option<u8> {
        self.space();
        self.text.get(self.at).copied()
    }

    /// `{ "key": value, … }`, each value read by `value`.
    fn object(&mut self, mut value: impl FnMut(&mut Self, &str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            value(self, &key)?;
            if self.eat(b'}').is_some() {
                return Some(());
            }
            self.eat(b',')?;
        }
    }

    fn strings(&mut self) -> Option<Vec<String>> {
        let mut list = Vec::new();
        self.eat(b'[')?;
        if self.eat(b']').is_some() {
            return Some(list);
        }
        loop {
            list.push(self.string()?);
            if self.eat(b']').is_some() {
                return Some(list);
            }
            self.eat(b',')?;
        }
    }

    /// A string without escapes other than `\"`, `\\`, `\/` (the names
    /// an ipdb file holds); others are refused rather than misread.
    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            let byte = *self.text.get(self.at)?;
            self.at += 1;
            match byte {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let escaped = *self.text.get(self.at)?;
                    self.at += 1;
                    out.push(match escaped {
                        b'"' | b'\\' | b'/' => escaped,
                        _ => return None,
                    });
                }
                0..=0x1f => return None,
                _ => out.push(byte),
            }
        }
    }

    fn number(&mut self) -> Option<usize> {
        self.space();
        let start = self.at;
        while self.text.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        std::str::from_utf8(&self.text[start..self.at]).ok()?.parse().ok()
    }

    /// `-? digits (. digits)? ([eE] [+-]? digits)?`, checked by its grammar
    /// (not parsed: a float parser would cost the binary 10 KiB).
    fn skip_number(&mut self) -> Option<()> {
        let digits = |json: &mut Self| {
            let start = json.at;
            while json.text.get(json.at).is_some_and(u8::is_ascii_digit) {
                json.at += 1;
            }
            (json.at > start).then_some(())
        };
        if self.text.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        digits(self)?;
        if self.text.get(self.at) == Some(&b'.') {
            self.at += 1;
            digits(self)?;
        }
        if self.text.get(self.at).is_some_and(|b| matches!(b, b'e' | b'E')) {
            self.at += 1;
            if self.text.get(self.at).is_some_and(|b| matches!(b, b'+' | b'-')) {
                self.at += 1;
            }
            digits(self)?;
        }
        Some(())
    }

    /// Any value, checked and left aside.
    fn skip(&mut self) -> Option<()> {
        self.depth += 1;
        let skipped = if self.depth > MAX_DEPTH { None } else { self.skip_value() };
        self.depth -= 1;
        skipped
    }

    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(|json, _| json.skip()),
            b'[' => {
                self.eat(b'[')?;
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.skip()?;
                    if self.eat(b']').is_some() {
                        return Some(());
                    }
                    self.eat(b',')?;
                }
            }
            b'"' => self.string().map(drop),
            b'-' | b'0'..=b'9' => self.skip_number(),
            _ => ["true", "false", "null"].iter().find(|w| self.text[self.at..].starts_with(w.as_bytes())).map(|w| self.at += w.len()),
        }
    }
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
            for (bit, &child) in children.iter().enumerate() {
                let value = match leaves.iter().find(|(node, b, _)| *node == n && *b == bit) {
                    Some((_, _, rec)) => node_count + record_at[*rec],
                    None if child == usize::MAX => node_count,
                    None => child,
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
        assert_eq!(db.lookup(ip("14.0.0.9")).unwrap(), Some(("广东深圳市".into(), "电信".into())));
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
        // Cut anywhere, or one byte more: the size the metadata gives differs.
        for len in (0..data.len()).step_by(7) {
            assert!(Ipdb::parse(data[..len].to_vec()).is_err(), "truncated to {len}");
        }
        let mut longer = data.clone();
        longer.push(0);
        assert!(Ipdb::parse(longer).err().is_some_and(|e| e.contains("database size error")));
    }

    #[test]
    fn metadata_must_be_whole_json() {
        let data = sample();
        let meta_len = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
        let meta = std::str::from_utf8(&data[4..4 + meta_len]).unwrap().to_string();
        assert!(Meta::parse(&meta).is_some());
        // Every cut of the metadata, and broken variants of it, is refused.
        for len in 0..meta.len() {
            assert!(Meta::parse(&meta[..len]).is_none(), "metadata cut to {len}");
        }
        for broken in [meta.replacen(':', "", 1), meta.replacen(',', ",,", 1), format!("{meta}x"), meta.replacen('"', "", 1), meta.replace("node_count", "nodes")] {
            assert!(Meta::parse(&broken).is_none(), "{broken}");
        }
        // Nesting deeper than any metadata needs is refused, not recursed into.
        let deep = meta.replacen('{', &format!("{{\"deep\": {}1{}, ", "[".repeat(100_000), "]".repeat(100_000)), 1);
        assert!(Meta::parse(&deep).is_none());
        let shallow = meta.replacen('{', &format!("{{\"deep\": {}1{}, ", "[".repeat(20), "]".repeat(20)), 1);
        assert!(Meta::parse(&shallow).is_some());
        // Other keys, spaces and nesting are fine.
        let roomy = meta.replacen('{', "{ \"extra\": [1.5, true, null, {\"a\": \"b\\\"\"}], ", 1).replace(',', " ,\n ");
        assert_eq!(Meta::parse(&roomy).map(|m| m.fields.len()), Some(FIELDS.len()));
    }
}
