//! Backends: a child process that watches the kernel and prints reports, and
//! the one reader thread that parses its stdout into the [`Store`]. This
//! module owns the child's lifetime (own process group, SIGINT to stop,
//! SIGKILL if it lingers), keeps the tail of its stderr for error messages,
//! and turns each complete report into one store update and one event.

pub mod bpftrace;
pub mod parse;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, ExitStatus};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::filter::AddressFilter;
use crate::store::{Comm, Owner, Record, Store};
use crate::sys;
use parse::{Line, parse_line};

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
}

/// The last lines a child wrote to stderr.
#[derive(Default)]
pub struct StderrTail {
    lines: Mutex<VecDeque<String>>,
    echo: std::sync::atomic::AtomicBool,
}

const STDERR_TAIL_LINES: usize = 40;

impl StderrTail {
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.iter().cloned().collect()).unwrap_or_default()
    }

    /// From now on, pass the child's stderr through (after a successful start).
    pub fn start_echo(&self) {
        self.echo.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A running backend child and its reader threads.
pub struct Running {
    child: Child,
    reader: Option<JoinHandle<()>>,
    pub stderr: Arc<StderrTail>,
    pub name: &'static str,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the child to finish (SIGINT lets bpftrace print what its maps
    /// still hold), waits for the reader to consume it, and kills the child
    /// if it has not gone within `grace`.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        sys::signal_group(self.child.id(), sys::SIGINT);
        let deadline = Instant::now() + grace;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    sys::signal_group(self.child.id(), sys::SIGKILL);
                    break self.child.wait().ok();
                }
            }
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        status
    }

    /// Waits for a child whose stdout already closed.
    pub fn wait(&mut self) -> Option<ExitStatus> {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.child.wait().ok()
    }
}

/// Takes ownership of a freshly spawned child's pipes and starts the reader
/// thread (stdout → store) and the stderr collector.
pub fn supervise(
    mut child: Child,
    name: &'static str,
    filter: AddressFilter,
    store: Arc<Store>,
    events: Sender<Event>,
) -> Running {
    let stderr = Arc::new(StderrTail::default());
    if let Some(pipe) = child.stderr.take() {
        let tail = Arc::clone(&stderr);
        thread::spawn(move || collect_stderr(pipe, name, &tail));
    }
    let reader = child.stdout.take().map(|stdout| {
        thread::spawn(move || read_reports(stdout, &filter, &store, &events))
    });
    Running { child, reader, stderr, name }
}

/// The reader thread: parses every line, collects one report's records and
/// applies them to the store at its `@end`, so each delta is added once.
fn read_reports(stdout: ChildStdout, filter: &AddressFilter, store: &Store, events: &Sender<Event>) {
    let mut reader = BufReader::with_capacity(1 << 16, stdout);
    let mut line = Vec::with_capacity(256);
    let mut report: Vec<Record> = Vec::new();
    let mut malformed = 0u64;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        match parse_line(&line) {
            Line::Tx(ip, bytes) if bytes > 0 && filter.counts(ip) => report.push(Record::Tx(ip, bytes)),
            Line::Rx(ip, bytes) if bytes > 0 && filter.counts(ip) => report.push(Record::Rx(ip, bytes)),
            Line::Owner(ip, pid, comm) if filter.counts(ip) => {
                report.push(Record::Owner(ip, Owner { pid, comm: Comm::new(comm) }))
            }
            Line::End => {
                store.apply_report(&report, malformed);
                report.clear();
                malformed = 0;
                let _ = events.send(Event::Report);
            }
            Line::Attached => {
                let _ = events.send(Event::Attached);
            }
            Line::Malformed => malformed += 1,
            Line::Tx(..) | Line::Rx(..) | Line::Owner(..) | Line::Blank => {}
        }
    }
    // Whatever a dying child printed after its last @end still counts.
    if !report.is_empty() || malformed > 0 {
        store.apply_report(&report, malformed);
    }
    let _ = events.send(Event::Exited);
}

fn collect_stderr(pipe: impl Read, name: &str, tail: &StderrTail) {
    for line in BufReader::new(pipe).lines() {
        let Ok(line) = line else { break };
        // bpftrace warns about RLIMIT_MEMLOCK on kernels that account BPF
        // memory to cgroups instead; the program loads regardless.
        if line.contains("RLIMIT_MEMLOCK") {
            continue;
        }
        if tail.echo.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!("{name}: {line}");
        }
        if let Ok(mut lines) = tail.lines.lock() {
            if lines.len() == STDERR_TAIL_LINES {
                lines.pop_front();
            }
            lines.push_back(line);
        }
    }
}
