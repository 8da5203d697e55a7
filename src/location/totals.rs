//! Exact totals per place: every counted byte in exactly one set of
//! location labels (country, province, city, isp), whether its IP has a
//! series, never had one, was evicted long ago, or the byte reached no IP
//! at all (`Unknown`). The store keeps bytes by IP and never looks anything
//! up; this ledger turns them into places outside the store's lock: the
//! tracked IPs at each call, and the evicted ones once, into sums it keeps
//! for the life of the run.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::{Labels, Locator};
use crate::store::Store;

/// Bytes per place of the IPs the store no longer tracks.
#[derive(Default)]
pub struct Ledger {
    retired: Mutex<Places>,
}

/// Bytes `(tx, rx)` per place. Keys compare by value; a tracked IP's key is
/// the locator's shared copy, so a render clones no label text.
type Places = HashMap<Arc<Labels>, (u64, u64)>;

/// One place and its bytes: `(labels, tx, rx)`.
pub type PlaceTotals = (Arc<Labels>, u64, u64);

impl Ledger {
    /// Takes the IPs the store evicted since the last call into the sums
    /// (the monitor calls it after each report, so they never pile up).
    pub fn absorb(&self, store: &Store, locator: &Locator) {
        let mut retired = self.lock();
        add_all(&mut retired, &store.take_retired(), locator, Lookup::Once);
    }

    /// Every byte counted, by place, sorted by labels: the retired sums, the
    /// tracked IPs' totals and the bytes on no IP, taken from the store at
    /// one instant (under the ledger's lock, so no IP is between the two).
    pub fn places(&self, store: &Store, locator: &Locator) -> Vec<PlaceTotals> {
        let mut retired = self.lock();
        let by_ip = if locator.is_empty() { store.by_ip_in_one() } else { store.by_ip() };
        add_all(&mut retired, &by_ip.retired, locator, Lookup::Once);
        let mut places = retired.clone();
        drop(retired);
        add_all(&mut places, &by_ip.tracked, locator, Lookup::Cached);
        add(&mut places, Arc::default(), by_ip.unkeyed.0, by_ip.unkeyed.1);
        let mut places: Vec<PlaceTotals> = places.into_iter().map(|(labels, (tx, rx))| (labels, tx, rx)).collect();
        places.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        places
    }

    /// The sums of the IPs the store no longer tracks, for a state file.
    pub fn retired_places(&self) -> Vec<(Labels, u64, u64)> {
        self.lock().iter().map(|(labels, &(tx, rx))| ((**labels).clone(), tx, rx)).collect()
    }

    /// Takes up saved sums (before counting begins).
    pub fn restore(&self, places: &[(Labels, u64, u64)]) {
        let mut retired = self.lock();
        for (labels, tx, rx) in places {
            add(&mut retired, Arc::new(labels.clone()), *tx, *rx);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Places> {
        self.retired.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How to look an IP up: tracked IPs are looked up at every render (the
/// locator's cache serves them); an evicted one once, never again, so it
/// must not push tracked IPs out of the cache.
#[derive(Clone, Copy)]
enum Lookup {
    Cached,
    Once,
}

fn add_all(places: &mut Places, ips: &[(IpAddr, u64, u64)], locator: &Locator, how: Lookup) {
    if locator.is_empty() {
        // Without databases every place is Unknown: no lookups, no cache.
        let (tx, rx) = ips.iter().fold((0, 0), |(tx, rx), (_, t, r)| (tx + t, rx + r));
        add(places, Arc::default(), tx, rx);
        return;
    }
    for &(ip, tx, rx) in ips {
        let labels = match how {
            Lookup::Cached => locator.lookup(ip),
            Lookup::Once => Arc::new(locator.lookup_uncached(ip)),
        };
        add(places, labels, tx, rx);
    }
}

fn add(places: &mut Places, labels: Arc<Labels>, tx: u64, rx: u64) {
    if tx + rx > 0 {
        let sums = places.entry(labels).or_default();
        sums.0 += tx;
        sums.1 += rx;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::Sources;
    use crate::store::Record;

    #[test]
    fn every_byte_is_in_exactly_one_place_evicted_and_unkeyed_ones_too() {
        let store = Store::new(100, 10);
        store.keep_retired();
        let ledger = Ledger::default();
        let locator = Locator::from_sources(Sources::none(), Default::default());
        let mut sent = (0u64, 0u64);
        for i in 0..1000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0xC612_0000 + i));
            store.apply_report(&[Record::Tx(ip, 500), Record::Rx(ip, 7), Record::Unkeyed(1, 2)], 0);
            sent = (sent.0 + 501, sent.1 + 9);
            if i % 3 == 0 {
                ledger.absorb(&store, &locator);
            }
            let places = ledger.places(&store, &locator);
            assert_eq!(places.len(), 1, "without databases, one place: Unknown");
            assert_eq!((places[0].1, places[0].2), sent, "after report {i}");
        }
        assert!(store.exported().evicted_series > 900, "IPs were evicted along the way");
    }

    #[test]
    fn places_come_from_the_databases_and_keep_an_evicted_ips_bytes() {
        let city = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/maxmind/GeoIP2-City-Test.mmdb");
        let sources = Sources { city: Some(super::super::maxmind::CityDb::open(&city).unwrap()), ..Sources::none() };
        let locator = Locator::from_sources(sources, crate::location::Lang::En);
        let store = Store::new(0, 2);
        store.keep_retired();
        let ledger = Ledger::default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        store.apply_report(&[Record::Tx(ip("81.2.69.142"), 100)], 0);
        store.apply_report(&[Record::Rx(ip("89.160.20.129"), 50)], 0);
        store.apply_report(&[Record::Tx(ip("216.160.83.56"), 30), Record::Unkeyed(0, 4)], 0); // evicts the first
        ledger.absorb(&store, &locator);
        let places: Vec<(String, u64, u64)> =
            ledger.places(&store, &locator).into_iter().map(|(l, tx, rx)| (l.country().to_string(), tx, rx)).collect();
        assert_eq!(
            places,
            [("Unknown".to_string(), 0, 4), ("Sweden".into(), 0, 50), ("United Kingdom".into(), 100, 0), ("United States".into(), 30, 0)]
                .into_iter()
                .collect::<Vec<_>>(),
            "sorted by labels (unknown first); the evicted British IP's bytes kept; the unkeyed ones Unknown"
        );
    }
}
