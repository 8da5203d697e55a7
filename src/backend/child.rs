//! A backend's child process, whichever the backend: started in its own
//! process group and tied to the monitor's life, its stdout parsed line by
//! line by one reader thread that applies each complete report to the
//! [`Store`] at once and tells the main thread with an [`Event`], the tail of
//! its stderr kept for error messages, keys written to its stdin for
//! backends driven by keys, and a stop that lets it print its last report
//! (SIGINT) before it is killed.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, ExitStatus, Stdio};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{Backend, LineParser, Step};
use crate::error::Error;
use crate::store::{Record, Store};
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
    /// The child's stdin, for backends driven by keys (iftop's `u`).
    stdin: Arc<Mutex<Option<ChildStdin>>>,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes `keys` to the child's stdin; false once it is gone.
    pub fn send_keys(&self, keys: &[u8]) -> bool {
        send_keys(&self.stdin, keys)
    }

    /// Sends `keys` every `period` from a thread, for as long as the child reads them.
    pub fn send_keys_every(&self, keys: &'static [u8], period: Duration) {
        let stdin = Arc::clone(&self.stdin);
        let _ = thread::Builder::new().name("keys".into()).spawn(move || {
            while send_keys(&stdin, keys) {
                thread::sleep(period);
            }
        });
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

    /// Kills the child and its process group at once (it is hung: a
    /// stopped process would not act on SIGINT).
    pub fn kill(&self) {
        sys::signal_group(self.child.id(), sys::SIGKILL);
    }

    /// Waits for a child whose stdout already closed.
    pub fn wait(&mut self) -> Option<ExitStatus> {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.child.wait().ok()
    }
}

/// What every backend child gets: its own process group (a terminal's
/// Ctrl-C reaches only the monitor, which stops the child in order and reads
/// its final report) and death with the monitor, even a SIGKILLed one.
fn tie_to_monitor(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    // SAFETY: the closure runs between fork and exec and only calls prctl.
    unsafe {
        cmd.pre_exec(sys::die_with_parent);
    }
}

fn send_keys(stdin: &Mutex<Option<ChildStdin>>, keys: &[u8]) -> bool {
    let Ok(mut stdin) = stdin.lock() else { return false };
    match stdin.as_mut() {
        Some(pipe) => pipe.write_all(keys).and_then(|()| pipe.flush()).is_ok(),
        None => false,
    }
}

/// Starts `backend`'s child in its own process group, tied to the monitor's
/// life, with its stdout read into `store` by a new reader thread.
pub fn start(backend: &dyn Backend, store: Arc<Store>, events: Sender<Event>) -> Result<Running, Error> {
    let mut cmd = backend.command()?;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    tie_to_monitor(&mut cmd);
    let child = cmd
        .spawn()
        .map_err(|e| Error::fatal(format!("cannot run {}: {e}", Path::new(cmd.get_program()).display())))?;
    Ok(supervise(child, backend.name(), backend.parser(), store, events))
}

/// Takes ownership of a freshly spawned child's pipes and starts the reader
/// thread (stdout → store) and the stderr collector.
fn supervise(
    mut child: Child,
    name: &'static str,
    parser: Box<dyn LineParser>,
    store: Arc<Store>,
    events: Sender<Event>,
) -> Running {
    let stderr = Arc::new(StderrTail::default());
    if let Some(pipe) = child.stderr.take() {
        let tail = Arc::clone(&stderr);
        thread::spawn(move || collect_stderr(pipe, name, &tail));
    }
    let reader = child.stdout.take().map(|stdout| {
        thread::spawn(move || read_reports(stdout, parser, &store, &events))
    });
    let stdin = Arc::new(Mutex::new(child.stdin.take()));
    Running { child, reader, stderr, name, stdin }
}

/// Records a report buffer keeps between reports.
const REPORT_CAPACITY_KEPT: usize = 4096;

/// The reader thread: parses every line, collects one report's records and
/// applies them to the store at its end, so each delta is added once.
fn read_reports(stdout: ChildStdout, mut parser: Box<dyn LineParser>, store: &Store, events: &Sender<Event>) {
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
        match parser.feed(&line, &mut report) {
            Step::Continue => {}
            Step::Malformed => malformed += 1,
            Step::Attached => {
                let _ = events.send(Event::Attached);
            }
            Step::ReportEnd => {
                store.apply_report(&report, malformed);
                report.clear();
                // One report of 100,000 IPs need not keep its 5 MB for good.
                report.shrink_to(REPORT_CAPACITY_KEPT);
                malformed = 0;
                let _ = events.send(Event::Report);
            }
        }
    }
    // Whatever a dying child printed after its last report end still counts.
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

