//! The backend's health, kept beside the traffic totals but apart from
//! them: whether it is up, how often it was restarted, and how many packets
//! the kernel did not hand to it. The monitor writes it; the exporter and
//! the console read copies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

#[derive(Default)]
pub struct Health {
    state: Mutex<HealthState>,
    /// Bumped by every change, so a rendered copy knows it is stale.
    changes: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HealthState {
    /// Whether the backend is running and reporting.
    pub up: bool,
    /// Times it was restarted after exiting unexpectedly.
    pub restarts: u64,
    /// Packets the kernel did not hand to the counting, over every child.
    pub missed_events: u64,
    /// `missed_events` when the current child started (its own count starts at 0).
    missed_base: u64,
}

impl Health {
    fn lock(&self) -> MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Locks the state for a change.
    fn change(&self) -> MutexGuard<'_, HealthState> {
        self.changes.fetch_add(1, Ordering::Release);
        self.lock()
    }

    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    pub fn get(&self) -> HealthState {
        *self.lock()
    }

    pub fn set_up(&self, up: bool) {
        if self.get().up != up {
            self.change().up = up;
        }
    }

    /// A new child replaced a dead one: counted, and its missed events
    /// count from what the dead ones missed.
    pub fn restarted(&self) {
        let mut state = self.change();
        state.restarts += 1;
        state.missed_base = state.missed_events;
    }

    /// The current child's own count of missed events; returns how many are
    /// new since the last call and how many there are in all, if any are new.
    pub fn observe_missed(&self, by_current_child: u64) -> Option<(u64, u64)> {
        let mut state = self.lock();
        let total = state.missed_base + by_current_child;
        let new = total.checked_sub(state.missed_events).filter(|n| *n > 0)?;
        self.changes.fetch_add(1, Ordering::Release);
        state.missed_events = total;
        Some((new, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_events_add_up_across_restarts() {
        let health = Health::default();
        assert_eq!(health.observe_missed(0), None);
        assert_eq!(health.observe_missed(6), Some((6, 6)));
        assert_eq!(health.observe_missed(6), None, "the same count again is nothing new");
        health.restarted();
        assert_eq!(health.observe_missed(2), Some((2, 8)), "a new child counts from zero");
        let state = health.get();
        assert_eq!((state.missed_events, state.restarts, state.up), (8, 1, false));
        health.set_up(true);
        assert!(health.get().up);
    }
}
