//! Location and ISP labels for a remote IP — country, province, city, isp —
//! from the databases users have: MaxMind GeoIP2/GeoLite2 City or Country
//! (`-g`), GeoIP2-ISP or GeoLite2-ASN (`--isp-db`), and the 纯真 database,
//! qqwry.dat or its ipdb edition (`--qqwry`). Owns the precedence between
//! them and a bounded per-IP cache. Lookups run where labels are needed (a
//! scrape, a console table), never under the store's lock and never on the
//! backend's parsing thread, so a slow lookup cannot delay counting.
//!
//! Precedence, per label: for addresses in mainland China (纯真 says 中国,
//! or MaxMind says CN) 纯真 first, because its Chinese province, city and
//! carrier data are better; elsewhere MaxMind first. ISP: `--isp-db` first
//! outside China, 纯真's carrier first inside. A source that has nothing
//! for a label leaves it to the next; `Unknown` when none has it.
//! [`Ledger`] keeps the exact bytes per place (`totals.rs`).

mod china;
mod countries;
mod gbk;
mod ipdb;
mod maxmind;
mod qqwry;
mod totals;

pub use totals::{Ledger, PlaceTotals};

/// Writers of small 纯真 files with known content, for tests and benchmarks,
/// and the readers' entry points for fuzzing.
#[doc(hidden)]
pub mod testing {
    use std::net::IpAddr;

    pub use super::ipdb::writer::build as ipdb;
    pub use super::qqwry::writer::{Layout as QqwryLayout, build as qqwry_dat};
    use super::ChineseDb;

    /// Addresses the fuzz targets look up: inside the ranges of the fuzz corpus' files, the
    /// last IPv4 address, and an IPv6 one.
    const PROBES: [IpAddr; 4] = [
        IpAddr::V4(std::net::Ipv4Addr::new(1, 13, 0, 1)),
        IpAddr::V4(std::net::Ipv4Addr::new(14, 0, 0, 9)),
        IpAddr::V4(std::net::Ipv4Addr::BROADCAST),
        IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 7)),
    ];

    /// Opens `data` as a qqwry.dat and looks a few addresses up: for fuzzing.
    pub fn read_qqwry(data: &[u8]) {
        if let Ok(db) = super::qqwry::Qqwry::parse(data) {
            look_up(&db);
        }
    }

    /// Opens `data` as an ipdb file and looks a few addresses up: for fuzzing.
    pub fn read_ipdb(data: &[u8]) {
        if let Ok(db) = super::ipdb::Ipdb::parse(data) {
            look_up(&db);
        }
    }

    fn look_up(db: &dyn ChineseDb) {
        for ip in &PROBES {
            if let Ok(Some((place, carrier))) = db.lookup(*ip) {
                let _ = super::china::labels_from_text(&place, &carrier, super::Lang::ZhCn);
            }
        }
    }
}

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::Error;

pub const UNKNOWN: &str = "Unknown";

/// Which language place names are in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lang {
    #[default]
    ZhCn,
    En,
}

impl Lang {
    /// The MaxMind `names` key.
    fn key(self) -> &'static str {
        match self {
            Lang::ZhCn => "zh-CN",
            Lang::En => "en",
        }
    }
}

/// The labels of one remote IP; a missing one is `None` until shown as `Unknown`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels {
    pub country: Option<String>,
    pub province: Option<String>,
    pub city: Option<String>,
    pub isp: Option<String>,
}

impl Labels {
    pub fn country(&self) -> &str {
        self.country.as_deref().unwrap_or(UNKNOWN)
    }
    pub fn province(&self) -> &str {
        self.province.as_deref().unwrap_or(UNKNOWN)
    }
    pub fn city(&self) -> &str {
        self.city.as_deref().unwrap_or(UNKNOWN)
    }
    pub fn isp(&self) -> &str {
        self.isp.as_deref().unwrap_or(UNKNOWN)
    }

    /// Each label from `self`, or from `other` where `self` has none.
    fn or(self, other: Labels) -> Labels {
        Labels {
            country: self.country.or(other.country),
            province: self.province.or(other.province),
            city: self.city.or(other.city),
            isp: self.isp.or(other.isp),
        }
    }
}

/// What a database lookup can fail with: the damaged record counts, its IP
/// gets `Unknown`.
#[derive(Debug)]
pub struct LookupError;

/// The configured databases.
pub struct Sources {
    pub city: Option<maxmind::CityDb>,
    pub isp: Option<maxmind::IspDb>,
    pub chinese: Option<Box<dyn ChineseDb>>,
}

impl Sources {
    pub fn none() -> Sources {
        Sources { city: None, isp: None, chinese: None }
    }
}

/// The 纯真 database in either edition: the text it holds for an address.
pub trait ChineseDb: Send + Sync {
    /// (place, carrier) text, e.g. ("广东省深圳市", "电信").
    fn lookup(&self, ip: IpAddr) -> Result<Option<(String, String)>, LookupError>;
}

const CACHE_LIMIT: usize = 100_000;

pub struct Locator {
    sources: Sources,
    lang: Lang,
    cache: Mutex<Cache>,
    failures: AtomicU64,
}

/// IP → labels, with each distinct set of labels stored once: thousands of
/// places for 100,000 IPs, so an entry costs a key and a pointer.
#[derive(Default)]
struct Cache {
    by_ip: HashMap<IpAddr, Arc<Labels>>,
    distinct: std::collections::HashSet<Arc<Labels>>,
}

impl Locator {
    /// Opens every database given; a missing, unreadable or corrupt file,
    /// or one of the wrong kind, is an error naming the flag and the file.
    pub fn open(city: Option<&Path>, isp: Option<&Path>, chinese: Option<&Path>, lang: Lang) -> Result<Locator, Error> {
        let sources = Sources {
            city: city.map(maxmind::CityDb::open).transpose()?,
            isp: isp.map(maxmind::IspDb::open).transpose()?,
            chinese: chinese.map(open_chinese).transpose()?,
        };
        Ok(Locator::from_sources(sources, lang))
    }

    pub fn from_sources(sources: Sources, lang: Lang) -> Locator {
        Locator { sources, lang, cache: Mutex::default(), failures: AtomicU64::new(0) }
    }

    pub fn is_empty(&self) -> bool {
        self.sources.city.is_none() && self.sources.isp.is_none() && self.sources.chinese.is_none()
    }

    /// Lookups that hit a damaged record (their labels are `Unknown`).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub fn lookup(&self, ip: IpAddr) -> Arc<Labels> {
        if let Some(labels) = self.cache.lock().ok().and_then(|c| c.by_ip.get(&ip).cloned()) {
            return labels;
        }
        // Looked up without the cache's lock: other lookups go on meanwhile.
        let labels = self.lookup_uncached(ip);
        let Ok(mut cache) = self.cache.lock() else { return Arc::new(labels) };
        if cache.by_ip.len() >= CACHE_LIMIT {
            *cache = Cache::default(); // simple and bounded; busy IPs come back at once
        }
        let labels = match cache.distinct.get(&labels) {
            Some(known) => Arc::clone(known),
            None => {
                let new = Arc::new(labels);
                cache.distinct.insert(Arc::clone(&new));
                new
            }
        };
        cache.by_ip.insert(ip, Arc::clone(&labels));
        labels
    }

    pub fn lookup_uncached(&self, ip: IpAddr) -> Labels {
        let maxmind = self.maxmind_labels(ip);
        let chinese = self.chinese_labels(ip);
        let in_china = chinese.country.as_deref() == Some(china::CHINA_ZH)
            || self.sources.city.as_ref().and_then(|db| self.counted(db.iso_code(ip))).flatten().as_deref() == Some("CN");
        let isp = self.sources.isp.as_ref().and_then(|db| self.counted(db.isp(ip))).flatten();
        let isp_labels = Labels { isp, ..Labels::default() };
        if in_china {
            chinese.or(maxmind).or(isp_labels)
        } else {
            maxmind.or(isp_labels).or(chinese)
        }
    }

    fn maxmind_labels(&self, ip: IpAddr) -> Labels {
        match &self.sources.city {
            Some(db) => self.counted(db.labels(ip, self.lang)).unwrap_or_default(),
            None => Labels::default(),
        }
    }

    fn chinese_labels(&self, ip: IpAddr) -> Labels {
        let Some(db) = &self.sources.chinese else { return Labels::default() };
        match self.counted(db.lookup(ip)).flatten() {
            Some((place, carrier)) => china::labels_from_text(&place, &carrier, self.lang),
            None => Labels::default(),
        }
    }

    fn counted<T>(&self, result: Result<T, LookupError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(LookupError) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// A database given to `flag` is a regular file (a directory or a device
/// cannot be mapped; the system's word for it, "No such device", would
/// not say so).
fn must_be_a_file(path: &Path, flag: &str) -> Result<(), Error> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(meta) => {
            let what = if meta.is_dir() { "a directory" } else { "not a regular file" };
            Err(Error::fatal(format!("{flag} {}: {what}; give the database file", path.display())))
        }
        Err(err) => Err(Error::fatal(format!("{flag} {}: {err}", path.display()))),
    }
}

/// qqwry.dat or the ipdb edition, told apart by content: an ipdb file
/// starts with the length of its JSON metadata, then `{`. Memory-mapped.
fn open_chinese(path: &Path) -> Result<Box<dyn ChineseDb>, Error> {
    must_be_a_file(path, "--qqwry")?;
    let fail = |why: String| Error::fatal(format!("--qqwry {}: {why}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    // SAFETY: as with the MaxMind files, the database must not be truncated
    // in place while mapped; updates replace the file by rename.
    let data = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| fail(e.to_string()))?;
    if data.len() > 5 && data[4] == b'{' {
        Ok(Box::new(ipdb::Ipdb::parse(data).map_err(fail)?))
    } else {
        Ok(Box::new(qqwry::Qqwry::parse(data).map_err(fail)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/maxmind").join(name)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn four(l: &Labels) -> [&str; 4] {
        [l.country(), l.province(), l.city(), l.isp()]
    }

    #[test]
    fn china_prefers_chunzhen_elsewhere_maxmind_each_label_falling_back() {
        let ipdb = testing::ipdb(
            &["country_name", "region_name", "city_name", "owner_domain", "isp_domain"],
            &[
                (ip("2001:250::"), 32, vec!["中国", "广东", "深圳", "", "电信"]),
                (ip("89.160.20.0"), 96 + 24, vec!["瑞典", "瑞典", "", "", "Bredband2"]),
            ],
        );
        let sources = Sources {
            city: Some(maxmind::CityDb::open(&data("GeoIP2-City-Test.mmdb")).unwrap()),
            isp: None,
            chinese: Some(Box::new(ipdb::Ipdb::parse(ipdb).unwrap())),
        };
        let locator = Locator::from_sources(sources, Lang::ZhCn);
        // MaxMind: 中国, no province or city. 纯真: 广东省 深圳(市) 电信.
        assert_eq!(four(&locator.lookup(ip("2001:250::1"))), ["中国", "广东省", "深圳市", "电信"]);
        // MaxMind: 瑞典 / Östergötland County (no zh-CN, English) / 林雪平; ISP only in 纯真.
        assert_eq!(four(&locator.lookup(ip("89.160.20.129"))), ["瑞典", "Östergötland County", "林雪平", "Bredband2"]);
        // Only MaxMind knows it.
        assert_eq!(four(&locator.lookup(ip("2001:218::1"))), ["日本", "Unknown", "Unknown", "Unknown"]);
        assert_eq!(locator.failures(), 0);
    }

    #[test]
    fn a_damaged_record_is_unknown_and_counted() {
        let mut dat = testing::qqwry_dat(&[(0x0e00_0000, 0x0e00_00ff, "广东省深圳市", "电信", testing::QqwryLayout::Inline)]);
        let index = u32::from_le_bytes(dat[0..4].try_into().unwrap()) as usize;
        let record = usize::from(dat[index + 4]) | usize::from(dat[index + 5]) << 8 | usize::from(dat[index + 6]) << 16;
        // The record's text now redirects past the end of the file.
        dat[record + 4..record + 8].copy_from_slice(&[1, 0xff, 0xff, 0xff]);
        let sources = Sources { chinese: Some(Box::new(qqwry::Qqwry::parse(dat).unwrap())), ..Sources::none() };
        let locator = Locator::from_sources(sources, Lang::ZhCn);
        assert_eq!(four(&locator.lookup(ip("14.0.0.1"))), ["Unknown"; 4]);
        assert_eq!(locator.failures(), 1);
    }

    #[test]
    fn the_isp_database_comes_before_chunzhen_outside_china() {
        let dat = testing::qqwry_dat(&[(
            u32::from(std::net::Ipv4Addr::new(1, 128, 0, 0)),
            u32::from(std::net::Ipv4Addr::new(1, 128, 0, 255)),
            "澳大利亚",
            "某运营商",
            testing::QqwryLayout::Inline,
        )]);
        let sources = Sources {
            city: None,
            isp: Some(maxmind::IspDb::open(&data("GeoIP2-ISP-Test.mmdb")).unwrap()),
            chinese: Some(Box::new(qqwry::Qqwry::parse(dat).unwrap())),
        };
        let locator = Locator::from_sources(sources, Lang::ZhCn);
        assert_eq!(four(&locator.lookup(ip("1.128.0.1"))), ["澳大利亚", "Unknown", "Unknown", "Telstra Internet"]);
    }
}
