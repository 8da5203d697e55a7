//! A backend that is a child process (bpftrace, iftop): started in its own
//! process group and tied to the monitor's life, its stdout parsed line by
//! line by one reader thread that applies each complete report to the
//! [`Store`] at once and tells the main thread with an [`Event`], the tail of
//! its stderr kept for error messages.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::thread;

use super::running::{Event, Running, StderrTail};
use super::{LineParser, Step};
use crate::error::Error;
use crate::store::{Record, Store};
use crate::sys;

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

/// Starts `command` in its own process group, tied to the monitor's life,
/// with its stdout read into `store` by a new reader thread.
pub fn start(mut cmd: Command, parser: Box<dyn LineParser>, name: &'static str, store: Arc<Store>, events: Sender<Event>) -> Result<Running, Error> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    tie_to_monitor(&mut cmd);
    let child = cmd
        .spawn()
        .map_err(|e| Error::fatal(format!("cannot run {}: {e}", Path::new(cmd.get_program()).display())))?;
    Ok(supervise(child, name, parser, store, events))
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
    let stdin = child.stdin.take();
    Running::child(child, stdin, reader, stderr, name)
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
        tail.push(name, line);
    }
}
