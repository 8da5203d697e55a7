//! Which connections the exporter keeps. Every new connection is taken in;
//! when its client address already holds [`PER_ADDRESS`] connections, or
//! the server holds [`MAX_CONNECTIONS`], the connection that has made no
//! progress for the longest (no request read, no part of a response
//! written) is closed to make room: a stalled or idle client gives way to a
//! new one, and a flood from one address only ever evicts its own. The
//! choice is a pure function ([`victim`]) of what each slot last did.

use std::collections::HashMap;
use std::net::{IpAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

pub const MAX_CONNECTIONS: usize = 256;
/// Connections one client address may hold.
pub const PER_ADDRESS: usize = 64;

#[derive(Default)]
pub struct Registry {
    conns: Mutex<HashMap<u64, Slot>>,
    next_id: AtomicU64,
}

struct Slot {
    /// The connection's socket, to shut it down from the accept thread. It
    /// stays open while the slot exists: its thread removes the slot
    /// before closing it (see [`Registry::remove`]). Not a cloned handle: a
    /// connection costs one descriptor, not two.
    fd: RawFd,
    peer: IpAddr,
    /// When it last made progress (accepted, a request read, a chunk written).
    active: Instant,
}

/// What a slot looks like to the eviction policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotView {
    pub id: u64,
    pub peer: IpAddr,
    pub active: Instant,
}

/// The connection to close before `peer` gets a new one: the least
/// recently active of `peer`'s own if it holds `per_address`, else the
/// least recently active of all if there are `max`; `None` if there is room.
pub fn victim(slots: &[SlotView], peer: IpAddr, per_address: usize, max: usize) -> Option<u64> {
    let stalest = |views: &mut dyn Iterator<Item = &SlotView>| views.min_by_key(|v| (v.active, v.id)).map(|v| v.id);
    if slots.iter().filter(|v| v.peer == peer).count() >= per_address {
        return stalest(&mut slots.iter().filter(|v| v.peer == peer));
    }
    if slots.len() >= max {
        return stalest(&mut slots.iter());
    }
    None
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Slot>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection, closing another first if there is no room.
    pub fn admit(&self, stream: &TcpStream, peer: IpAddr) -> u64 {
        let peer = crate::filter::canonical(peer);
        let mut conns = self.lock();
        let views: Vec<SlotView> =
            conns.iter().map(|(id, slot)| SlotView { id: *id, peer: slot.peer, active: slot.active }).collect();
        if let Some(id) = victim(&views, peer, PER_ADDRESS, MAX_CONNECTIONS) {
            evict(&mut conns, id);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        conns.insert(id, Slot { fd: stream.as_raw_fd(), peer, active: Instant::now() });
        id
    }

    /// Closes the connection that has made no progress for the longest
    /// (the process ran out of descriptors).
    pub fn evict_stalest(&self) {
        let mut conns = self.lock();
        if let Some(id) = conns.iter().min_by_key(|(id, slot)| (slot.active, **id)).map(|(id, _)| *id) {
            evict(&mut conns, id);
        }
    }

    /// The connection made progress.
    pub fn touch(&self, id: u64) {
        if let Some(slot) = self.lock().get_mut(&id) {
            slot.active = Instant::now();
        }
    }

    /// Forgets a connection; its thread calls this before it closes the socket.
    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }
}

/// Shuts a registered connection down, which wakes its thread from a
/// blocked read or write; the thread then closes it.
fn evict(conns: &mut HashMap<u64, Slot>, id: u64) {
    if let Some(slot) = conns.remove(&id) {
        // SAFETY: plain FFI on a descriptor that is still open: the slot
        // existed under the lock, and its thread closes the socket only
        // after removing the slot under the same lock.
        unsafe {
            libc::shutdown(slot.fd, libc::SHUT_RDWR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn view(id: u64, peer: &str, age_ms: u64, now: Instant) -> SlotView {
        SlotView { id, peer: peer.parse().unwrap(), active: now - Duration::from_millis(age_ms) }
    }

    #[test]
    fn room_means_no_victim() {
        let now = Instant::now();
        let slots = [view(1, "192.0.2.1", 5000, now)];
        assert_eq!(victim(&slots, "192.0.2.2".parse().unwrap(), 2, 4), None);
    }

    #[test]
    fn a_full_server_drops_the_connection_stalled_longest() {
        let now = Instant::now();
        let slots = [view(1, "192.0.2.1", 100, now), view(2, "192.0.2.2", 9000, now), view(3, "192.0.2.3", 20, now)];
        assert_eq!(victim(&slots, "192.0.2.9".parse().unwrap(), 64, 3), Some(2));
    }

    #[test]
    fn an_address_at_its_cap_evicts_only_its_own() {
        let now = Instant::now();
        // 192.0.2.1 floods; 192.0.2.2's connection is the stalest of all but is not touched.
        let mut slots = vec![view(0, "192.0.2.2", 60_000, now)];
        slots.extend((1..=3).map(|i| view(i, "192.0.2.1", 100 * i, now)));
        assert_eq!(victim(&slots, "192.0.2.1".parse().unwrap(), 3, 256), Some(3));
        assert_eq!(victim(&slots, "192.0.2.2".parse().unwrap(), 3, 256), None);
    }
}
