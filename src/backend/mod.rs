//! Backends: what watches the traffic in the kernel and reports it. Each
//! backend is a folder here (how it runs, how it reads what the kernel
//! counted, how it explains a failed start, what it needs beside it) behind
//! one interface, [`Backend`]. It runs either as a child process whose
//! stdout one reader thread parses ([`child`]: bpftrace, iftop) or as a
//! thread that reads the kernel's own counters ([`in_process`]: nftables);
//! either way [`start`] hands the monitor a [`Running`] to supervise without
//! knowing which it is. Adding a backend means adding a folder and a line
//! in [`Kind`]; the command line builds each backend's own parameters
//! (backends never see the flags). What every backend counts is defined in
//! docs/ACCOUNTING.md.

pub mod bpftrace;
pub mod child;
pub mod iftop;
pub mod in_process;
pub mod nftables;
pub mod owners;
pub mod running;
pub mod trusted;

use std::fmt::Debug;
use std::process::Command;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::store::{Record, Store};
pub use running::{Event, Running, Stopped};

/// The backends there are, in the order `-b auto` tries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Nftables,
    Bpftrace,
    Iftop,
}

impl Kind {
    /// nftables first: exact, no user-space package, the lightest; then
    /// bpftrace (exact, attributes short-lived processes at the socket);
    /// then iftop (captures packets, exact to its 2-second blocks).
    pub const ALL: [Kind; 3] = [Kind::Nftables, Kind::Bpftrace, Kind::Iftop];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Nftables => "nftables",
            Kind::Bpftrace => "bpftrace",
            Kind::Iftop => "iftop",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// How a backend counts: a child process and the parser of its output, or
/// a counter in the kernel that a thread of the monitor reads.
pub enum Runner {
    Child { command: Command, parser: Box<dyn LineParser> },
    InProcess(Box<dyn in_process::Counter>),
}

/// Starts `backend`: its child with a reader thread, or its counting thread.
pub fn start(backend: &dyn Backend, store: Arc<Store>, events: Sender<Event>) -> Result<Running, Error> {
    match backend.runner()? {
        Runner::Child { command, parser } => child::start(command, parser, backend.name(), store, events),
        Runner::InProcess(counter) => in_process::start(counter, backend.name(), backend.report_interval(), store, events),
    }
}

/// One way of counting, and what it needs around it. Only `name`, `probe`,
/// `method`, `runner`, `report_interval` and `explain_start_failure` are
/// required; the rest have do-nothing defaults.
pub trait Backend: Send + Sync + Debug {
    fn name(&self) -> &'static str;

    /// Whether it can run here (programs installed, kernel features there);
    /// the error says what is missing and how to fix it.
    fn probe(&self) -> Result<(), Error>;

    /// How it counts and attributes processes, for the startup line.
    fn method(&self) -> String;

    /// What to start, after the same checks as [`Backend::probe`]: a child's
    /// command (with its arguments and stdin; [`child::start`] pipes its
    /// stdout and stderr and ties it to the monitor) and a fresh parser for
    /// its stdout, or a counter for [`in_process::start`].
    fn runner(&self) -> Result<Runner, Error>;

    /// How often a running child prints a report: the watchdog's clock.
    fn report_interval(&self) -> Duration;

    /// One line saying why it ended before it attached, from the tail of
    /// its stderr.
    fn explain_start_failure(&self, stderr: &[String]) -> String;

    /// Starts what the backend needs beside its child for the whole run.
    fn start_helpers(&self, _store: &Arc<Store>) {}

    /// The child attached: counting has begun.
    fn counting_began(&self, _child: &Running) {}

    /// Why bytes can reach no remote IP with this backend, for the warning.
    fn why_unkeyed(&self) -> &'static str {
        "the backend could not key them"
    }

    /// Packets the kernel did not hand to this child's counting, since it
    /// started.
    fn missed_events(&self, _child: &Running) -> u64 {
        0
    }

    /// Before the child is stopped: makes it report everything counted so
    /// far, if stopping it does not already do that. Returns the moment from
    /// which a report read is that final one.
    fn request_final_report(&self, _child: &Running, _last_report: Option<SystemTime>) -> Option<SystemTime> {
        None
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_found_by_its_name() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(Kind::from_name("auto"), None);
    }
}
