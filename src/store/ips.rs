//! The tracked IPs: a hash map from address to [`Entry`], split into
//! sixteen by a seeded hash of the address, each growing on its own. A hash
//! map grows by copying itself into one twice as large, the old and the new
//! both held meanwhile: for 100,000 IPs (72 bytes each) that is 14 MB at the
//! moment a flood's report is applied, on top of the report. Split, a
//! growth copies a sixteenth: the monitor's peak stays near its size.

use std::collections::HashMap;
use std::hash::BuildHasher;

use super::{Entry, Key};

const PARTS: usize = 16;

#[derive(Default)]
pub(super) struct Ips {
    parts: [HashMap<Key, Entry>; PARTS],
    /// Which part an address is in (a sender cannot choose it).
    seed: std::collections::hash_map::RandomState,
}

impl Ips {
    fn part(&self, key: &Key) -> usize {
        (self.seed.hash_one(key) % PARTS as u64) as usize
    }

    pub fn len(&self) -> usize {
        self.parts.iter().map(HashMap::len).sum()
    }

    pub fn contains_key(&self, key: &Key) -> bool {
        self.parts[self.part(key)].contains_key(key)
    }

    pub fn get(&self, key: &Key) -> Option<&Entry> {
        self.parts[self.part(key)].get(key)
    }

    /// The entry of `key`, made empty if it has none.
    pub fn slot(&mut self, key: Key) -> &mut Entry {
        let part = self.part(&key);
        self.parts[part].entry(key).or_default()
    }

    pub fn insert(&mut self, key: Key, entry: Entry) {
        let part = self.part(&key);
        self.parts[part].insert(key, entry);
    }

    pub fn remove(&mut self, key: &Key) -> Option<Entry> {
        let part = self.part(key);
        self.parts[part].remove(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Entry)> {
        self.parts.iter().flat_map(|part| part.iter())
    }

    pub fn values(&self) -> impl Iterator<Item = &Entry> {
        self.parts.iter().flat_map(|part| part.values())
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.parts.iter_mut().flat_map(|part| part.values_mut())
    }
}
