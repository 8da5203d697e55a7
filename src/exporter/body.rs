//! The /metrics body, rendered once and shared: every connection sends the
//! same bytes behind an `Arc`, so a hundred scrapers cost one body, not a
//! hundred. A body is rendered again only when the store has changed since
//! (a new report, an owner, the backend's health) or when it is older than
//! [`MAX_AGE`] (so the `process_*` metrics stay fresh while no report
//! comes). Connections that do not read keep the body they started with
//! alive; at most [`MAX_LIVE`] bodies exist at once: while that many are
//! still being sent, new requests get the newest of them rather than a new
//! render, so clients that never read cannot multiply the memory.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Bodies alive at once (the newest and one older still being sent).
pub const MAX_LIVE: usize = 2;
/// A body this old is rendered again even if the store has not changed.
pub const MAX_AGE: Duration = Duration::from_secs(10);

pub type Body = Arc<Vec<u8>>;

#[derive(Default)]
pub struct Bodies {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    latest: Option<Latest>,
    /// Earlier bodies, alive while a connection is still sending them.
    older: Vec<Weak<Vec<u8>>>,
}

struct Latest {
    generation: u64,
    rendered: Instant,
    body: Body,
}

impl Bodies {
    /// The body for the store at `generation`: the latest one if it is
    /// current (or if too many are still being sent), else a new one from
    /// `render`. Concurrent callers wait for one render rather than each
    /// doing their own.
    pub fn get(&self, generation: u64, render: impl FnOnce() -> Vec<u8>) -> Body {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.older.retain(|body| body.strong_count() > 0);
        if let Some(latest) = &state.latest {
            let current = latest.generation == generation && latest.rendered.elapsed() < MAX_AGE;
            let in_use = state.older.len() + usize::from(Arc::strong_count(&latest.body) > 1);
            if current || in_use >= MAX_LIVE {
                return Arc::clone(&latest.body);
            }
        }
        // The latest goes before the new one is rendered, so at most
        // MAX_LIVE bodies ever exist, the one being rendered included.
        if let Some(old) = state.latest.take() {
            if Arc::strong_count(&old.body) > 1 {
                state.older.push(Arc::downgrade(&old.body));
            }
        }
        let mut body = render();
        body.shrink_to_fit();
        let body = Arc::new(body);
        state.latest = Some(Latest { generation, rendered: Instant::now(), body: Arc::clone(&body) });
        body
    }

    /// Bodies alive now.
    #[cfg(test)]
    fn alive(&self) -> usize {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.older.iter().filter(|b| b.strong_count() > 0).count() + usize::from(state.latest.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn one_render_per_generation_shared_by_every_request() {
        let bodies = Bodies::default();
        let renders = Cell::new(0);
        let render = || {
            renders.set(renders.get() + 1);
            format!("render {}", renders.get()).into_bytes()
        };
        let a = bodies.get(1, render);
        let b = bodies.get(1, render);
        assert!(Arc::ptr_eq(&a, &b), "the same bytes, not a copy");
        assert_eq!(renders.get(), 1);
        drop((a, b));
        let c = bodies.get(2, render);
        assert_eq!((renders.get(), c.as_slice()), (2, &b"render 2"[..]));
        assert_eq!(bodies.alive(), 1, "an unsent old body is freed");
    }

    #[test]
    fn clients_that_never_read_pin_at_most_max_live_bodies() {
        let bodies = Bodies::default();
        let mut renders = 0;
        let mut held = Vec::new();
        // A new generation before every request, and every body kept (a client that never reads).
        for generation in 0..50 {
            held.push(bodies.get(generation, || {
                renders += 1;
                vec![0; 1000]
            }));
            assert!(bodies.alive() <= MAX_LIVE, "{} bodies alive", bodies.alive());
        }
        assert_eq!(renders, MAX_LIVE, "the rest were served the newest body");
        let distinct = held.iter().filter(|b| Arc::ptr_eq(b, &held[49])).count();
        assert_eq!(distinct, 49, "all but the first got the newest");
        // Once they are gone, the next request renders the current state.
        held.clear();
        let fresh = bodies.get(99, || b"fresh".to_vec());
        assert_eq!(fresh.as_slice(), b"fresh");
    }
}
