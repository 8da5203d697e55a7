//! A started backend as the monitor sees it, whatever runs it: a child
//! process ([`super::child`]) or a thread of the monitor that reads the
//! kernel itself ([`super::in_process`]). Either way one reader thread
//! applies each complete report to the store and tells the main thread with
//! an [`Event`]; the monitor stops, kills and waits for it through
//! [`Running`] without knowing which it is.

use std::collections::VecDeque;
use std::io::Write;
use std::process::{Child, ChildStdin, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::sys;

/// What the reader thread tells the main thread.
#[derive(Debug)]
pub enum Event {
    /// The backend attached its probes: counting has begun.
    Attached,
    /// A complete report was added to the store.
    Report,
    /// The backend's stdout closed: it exited or is about to.
    Exited,
    /// SIGINT or SIGTERM arrived.
    Signal,
    /// SIGUSR1 arrived: print the totals so far, and go on.
    ShowTotals,
    /// The backend asks for the state to be saved now (its harvest journal
    /// grew long; a save lets it start afresh).
    SaveSoon,
}

/// How a backend asked to stop went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// It ended by itself, after its last report (a thread always does).
    Ended,
    /// It had not ended within the grace time and was killed.
    Killed,
}

/// The last lines a backend wrote to stderr (a child) or said went wrong
/// (a thread).
#[derive(Default)]
pub struct StderrTail {
    lines: Mutex<VecDeque<String>>,
    echo: AtomicBool,
}

const STDERR_TAIL_LINES: usize = 40;

impl StderrTail {
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.iter().cloned().collect()).unwrap_or_default()
    }

    /// From now on, pass the backend's messages through (after a successful start).
    pub fn start_echo(&self) {
        self.echo.store(true, Ordering::Relaxed);
    }

    /// Keeps `line`, and prints it as `name: line` once echoing.
    pub fn push(&self, name: &str, line: String) {
        if self.echo.load(Ordering::Relaxed) {
            eprintln!("{name}: {line}");
        }
        if let Ok(mut lines) = self.lines.lock() {
            if lines.len() == STDERR_TAIL_LINES {
                lines.pop_front();
            }
            lines.push_back(line);
        }
    }
}

/// What does the counting.
enum Worker {
    /// A child process in its own process group, and its stdin for
    /// backends driven by keys (iftop's `u`).
    Child { child: Child, stdin: Arc<Mutex<Option<ChildStdin>>> },
    /// A thread of the monitor: dropping the sender tells it to harvest one
    /// last time, take its counting down and end.
    Thread { stop: Mutex<Option<Sender<()>>> },
}

/// A running backend and its reader thread.
pub struct Running {
    worker: Worker,
    reader: Option<JoinHandle<()>>,
    pub stderr: Arc<StderrTail>,
    pub name: &'static str,
}

impl Running {
    pub(super) fn child(child: Child, stdin: Option<ChildStdin>, reader: Option<JoinHandle<()>>, stderr: Arc<StderrTail>, name: &'static str) -> Running {
        Running { worker: Worker::Child { child, stdin: Arc::new(Mutex::new(stdin)) }, reader, stderr, name }
    }

    pub(super) fn thread(stop: Sender<()>, reader: JoinHandle<()>, stderr: Arc<StderrTail>, name: &'static str) -> Running {
        Running { worker: Worker::Thread { stop: Mutex::new(Some(stop)) }, reader: Some(reader), stderr, name }
    }

    /// The child's PID; `None` for a backend that runs in the monitor.
    pub fn pid(&self) -> Option<u32> {
        match &self.worker {
            Worker::Child { child, .. } => Some(child.id()),
            Worker::Thread { .. } => None,
        }
    }

    /// Writes `keys` to the child's stdin; false once it is gone.
    pub fn send_keys(&self, keys: &[u8]) -> bool {
        match &self.worker {
            Worker::Child { stdin, .. } => send_keys(stdin, keys),
            Worker::Thread { .. } => false,
        }
    }

    /// Sends `keys` every `period` from a thread, for as long as the child reads them.
    pub fn send_keys_every(&self, keys: &'static [u8], period: Duration) {
        let Worker::Child { stdin, .. } = &self.worker else { return };
        let stdin = Arc::clone(stdin);
        let _ = thread::Builder::new().name("keys".into()).spawn(move || {
            while send_keys(&stdin, keys) {
                thread::sleep(period);
            }
        });
    }

    /// Asks the backend to finish with a last report (SIGINT lets bpftrace
    /// print what its maps still hold; a thread harvests once more), waits
    /// for the reader to consume it, and kills a child that has not gone
    /// within `grace`: then its last report may be missing or cut short.
    pub fn stop(&mut self, grace: Duration) -> Stopped {
        let stopped = match &mut self.worker {
            Worker::Child { child, .. } => {
                sys::signal_group(child.id(), sys::SIGINT);
                reap(child, grace).0
            }
            Worker::Thread { stop } => {
                drop(stop.get_mut().ok().and_then(Option::take));
                Stopped::Ended
            }
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        stopped
    }

    /// Ends a hung backend at once: a child and its process group are
    /// killed (a stopped process would not act on SIGINT); a thread is told
    /// to stop (its kernel calls time out).
    pub fn kill(&self) {
        match &self.worker {
            Worker::Child { child, .. } => sys::signal_group(child.id(), sys::SIGKILL),
            Worker::Thread { stop } => drop(stop.lock().ok().and_then(|mut s| s.take())),
        }
    }

    /// Waits for a backend whose reader already ended; how it ended. A
    /// child that closed its output but lives on can report nothing more:
    /// it is killed after `grace`, so the monitor never waits on it for good.
    pub fn wait(&mut self, grace: Duration) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        match &mut self.worker {
            Worker::Child { child, .. } => match reap(child, grace) {
                (Stopped::Ended, status) => status.map_or_else(|| "unknown status".into(), |s| s.to_string()),
                (Stopped::Killed, _) => format!("it closed its output, and was killed still running {} s later", grace.as_secs_f64()),
            },
            Worker::Thread { .. } => "its thread ended".into(),
        }
    }
}

/// Waits up to `grace` for `child` to exit, then kills its process group;
/// whether it had to be killed, and how it ended.
fn reap(child: &mut Child, grace: Duration) -> (Stopped, Option<ExitStatus>) {
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (Stopped::Ended, Some(status)),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                sys::signal_group(child.id(), sys::SIGKILL);
                return (Stopped::Killed, child.wait().ok());
            }
        }
    }
}

fn send_keys(stdin: &Mutex<Option<ChildStdin>>, keys: &[u8]) -> bool {
    let Ok(mut stdin) = stdin.lock() else { return false };
    match stdin.as_mut() {
        Some(pipe) => pipe.write_all(keys).and_then(|()| pipe.flush()).is_ok(),
        None => false,
    }
}
