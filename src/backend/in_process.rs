//! A backend that counts in the kernel by itself and is read from the
//! monitor (nftables): one thread attaches its [`Counter`], harvests it every
//! report interval into the [`Store`] (a whole report under one lock, like a
//! child's), and on stop reads what is left and takes the counting down.
//! What goes wrong is said in the backend's stderr tail, and the thread
//! ends, so the monitor restarts it like a dead child.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use super::running::{Event, Running, StderrTail};
use crate::error::Error;
use crate::store::{HarvestMarks, Record, Store};

/// Counting that lives in the kernel, driven from the monitor.
pub trait Counter: Send {
    /// Sets the counting up; from its return on, every packet is counted.
    /// `marks`: which of its harvests the store holds, and a saved state.
    fn attach(&mut self, marks: HarvestMarks) -> Result<(), String>;
    /// Adds to `report` what was counted since the last harvest.
    fn harvest(&mut self, report: &mut Vec<Record>, marks: HarvestMarks) -> Result<(), String>;
    /// Adds to `report` everything not harvested yet, and takes the
    /// counting down.
    fn detach(&mut self, report: &mut Vec<Record>) -> Result<(), String>;
    /// Whether the state should be saved before its time (once per ask).
    fn wants_save(&mut self) -> bool {
        false
    }
}

/// Starts `counter` on its own thread, harvesting every `interval`.
pub fn start(counter: Box<dyn Counter>, name: &'static str, interval: Duration, store: Arc<Store>, events: Sender<Event>) -> Result<Running, Error> {
    let (stop_tx, stop) = mpsc::channel();
    let stderr = Arc::new(StderrTail::default());
    let tail = Arc::clone(&stderr);
    let reader = thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let run = Run { name, interval, store: &store, events: &events, tail: &tail };
            run.count(counter, &stop);
            let _ = events.send(Event::Exited);
        })
        .map_err(|e| Error::fatal(format!("cannot start the {name} thread: {e}")))?;
    Ok(Running::thread(stop_tx, reader, stderr, name))
}

struct Run<'a> {
    name: &'static str,
    interval: Duration,
    store: &'a Store,
    events: &'a Sender<Event>,
    tail: &'a StderrTail,
}

impl Run<'_> {
    fn count(&self, mut counter: Box<dyn Counter>, stop: &Receiver<()>) {
        if let Err(err) = counter.attach(self.store.harvest_marks()) {
            self.tail.push(self.name, err);
            return;
        }
        let _ = self.events.send(Event::Attached);
        let mut report = Vec::new();
        let mut next = Instant::now() + self.interval;
        loop {
            let stopping = match stop.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Err(RecvTimeoutError::Timeout) => false,
                Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
            };
            // Harvests keep to the clock even when one ran late.
            next += self.interval;
            if next < Instant::now() {
                next = Instant::now() + self.interval;
            }
            if stopping {
                return self.finish(counter.as_mut(), &mut report, None);
            }
            match counter.harvest(&mut report, self.store.harvest_marks()) {
                Ok(()) => {
                    self.hand_over(&mut report);
                    if counter.wants_save() {
                        let _ = self.events.send(Event::SaveSoon);
                    }
                }
                Err(err) => return self.finish(counter.as_mut(), &mut report, Some(err)),
            }
        }
    }

    /// The last reading and the counting taken down, on stop or after a
    /// failed harvest (whose reason stays the last line of the tail; what
    /// it read is read again here, with the rest).
    fn finish(&self, counter: &mut dyn Counter, report: &mut Vec<Record>, failure: Option<String>) {
        report.clear();
        let detached = counter.detach(report);
        self.hand_over(report);
        match (failure, detached) {
            (Some(err), _) | (None, Err(err)) => self.tail.push(self.name, err),
            (None, Ok(())) => {}
        }
    }

    /// Applies `report` to the store and says so; empties it.
    fn hand_over(&self, report: &mut Vec<Record>) {
        self.store.apply_report(report, 0);
        report.clear();
        // One harvest of 100,000 IPs need not keep its memory for good.
        report.shrink_to(4096);
        let _ = self.events.send(Event::Report);
    }
}
