//! Backends: a child process that watches the traffic and prints reports
//! (bpftrace or iftop), and the one reader thread that parses its stdout
//! with the backend's [`LineParser`] into the [`Store`]. This module owns
//! the child's lifetime (own process group, SIGINT to stop, SIGKILL if it
//! lingers), keeps the tail of its stderr for error messages, and turns each
//! complete report into one store update and one event.

pub mod bpftrace;
pub mod direction;
pub mod iftop;
pub mod iftop_parse;
pub mod owners;
pub mod parse;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, ExitStatus};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::filter::AddressFilter;
use crate::store::{Comm, Owner, Record, Store};
use crate::sys;
use parse::{Line, parse_line};

/// What one line of a backend's output meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to act on (a data line was added to the report, or a blank line).
    Continue,
    /// The backend is capturing: counting has begun.
    Attached,
    /// The report is complete: apply it.
    ReportEnd,
    /// The line could not be read.
    Malformed,
}

/// Turns a backend's output, line by line, into store records.
pub trait LineParser: Send {
    fn feed(&mut self, line: &[u8], report: &mut Vec<Record>) -> Step;
}

/// The bpftrace script's format (see [`parse`]), with the address filter.
/// It also checks each report's per-IP bytes against the script's totals
/// (key 0.0.0.0, never a peer): what the totals hold beyond them came from
/// IPs the maps had no room for.
pub struct BpftraceParser {
    filter: AddressFilter,
    /// Per-IP bytes in the report so far, filtered or not: `(tx, rx)`.
    keyed: (u64, u64),
    /// The report's totals, if the script prints them.
    all: (Option<u64>, Option<u64>),
}

impl BpftraceParser {
    pub fn new(filter: AddressFilter) -> BpftraceParser {
        BpftraceParser { filter, keyed: (0, 0), all: (None, None) }
    }

    /// Bytes of the totals that no per-IP line accounts for.
    fn end_report(&mut self) -> Option<Record> {
        let unkeyed = |all: Option<u64>, keyed: u64| all.map_or(0, |all| all.saturating_sub(keyed));
        let record = Record::Unkeyed(unkeyed(self.all.0, self.keyed.0), unkeyed(self.all.1, self.keyed.1));
        (self.keyed, self.all) = ((0, 0), (None, None));
        (record != Record::Unkeyed(0, 0)).then_some(record)
    }
}

impl LineParser for BpftraceParser {
    fn feed(&mut self, line: &[u8], report: &mut Vec<Record>) -> Step {
        let (ip, record) = match parse_line(line) {
            Line::Tx(ip, bytes) if ip.is_unspecified() => {
                self.all.0 = Some(self.all.0.unwrap_or(0).saturating_add(bytes));
                return Step::Continue;
            }
            Line::Rx(ip, bytes) if ip.is_unspecified() => {
                self.all.1 = Some(self.all.1.unwrap_or(0).saturating_add(bytes));
                return Step::Continue;
            }
            Line::Tx(ip, bytes) if bytes > 0 => {
                self.keyed.0 = self.keyed.0.saturating_add(bytes);
                (ip, Record::Tx(ip, bytes))
            }
            Line::Rx(ip, bytes) if bytes > 0 => {
                self.keyed.1 = self.keyed.1.saturating_add(bytes);
                (ip, Record::Rx(ip, bytes))
            }
            Line::Owner(ip, pid, comm) => (ip, Record::Owner(ip, Owner { pid, comm: Comm::new(comm) })),
            Line::Tx(..) | Line::Rx(..) | Line::Blank => return Step::Continue,
            Line::End => {
                report.extend(self.end_report());
                return Step::ReportEnd;
            }
            Line::Attached => return Step::Attached,
            Line::Malformed => return Step::Malformed,
        };
        if self.filter.counts(ip) {
            report.push(record);
        }
        Step::Continue
    }
}

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
pub fn tie_to_monitor(cmd: &mut std::process::Command) {
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

/// Takes ownership of a freshly spawned child's pipes and starts the reader
/// thread (stdout → store) and the stderr collector.
pub fn supervise(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(parser: &mut BpftraceParser, text: &str) -> Vec<Record> {
        let mut report = Vec::new();
        for line in text.lines() {
            parser.feed(line.as_bytes(), &mut report);
        }
        report
    }

    #[test]
    fn bytes_the_totals_hold_beyond_the_per_ip_lines_are_unkeyed() {
        let mut parser = BpftraceParser::new(AddressFilter::default());
        // The map had room for one IP of two: 40 of the 100 bytes sent have no IP.
        let report = feed_all(&mut parser, "@tx0[0.0.0.0]: 100\n@rx0[0.0.0.0]: 7\n@tx0[198.51.100.7]: 60\n@rx0[198.51.100.7]: 7\n@end\n");
        let ip = "198.51.100.7".parse().unwrap();
        assert_eq!(report, vec![Record::Tx(ip, 60), Record::Rx(ip, 7), Record::Unkeyed(40, 0)]);
        // The next report starts from zero.
        assert_eq!(feed_all(&mut parser, "@tx1[0.0.0.0]: 5\n@tx1[198.51.100.7]: 5\n@end\n"), vec![Record::Tx(ip, 5)]);
    }

    #[test]
    fn filtered_ips_and_scripts_without_totals_leave_nothing_unkeyed() {
        let mut parser = BpftraceParser::new(AddressFilter::default());
        // ff02::1:ff00:2 is not counted (multicast), but it is in the total.
        let report = feed_all(&mut parser, "@tx1[0.0.0.0]: 106\n@tx1[192.0.2.2]: 34\n@tx1[ff02::1:ff00:2]: 72\n@end\n");
        assert_eq!(report, vec![Record::Tx("192.0.2.2".parse().unwrap(), 34)]);
        assert_eq!(feed_all(&mut parser, "@tx[198.51.100.7]: 5\n@end\n").len(), 1);
    }
}
