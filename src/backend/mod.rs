//! Backends: what watches the traffic in the kernel and reports it. Each
//! backend is a folder here (its command, its output parser, how it explains
//! a failed start, what it needs beside its child) behind one interface,
//! [`Backend`]; [`child`] runs any of them as a child process whose stdout
//! one reader thread parses into the store, and the monitor supervises it
//! without knowing which it is. Adding a backend means adding a folder and
//! a line in [`Kind`]; the command line builds each backend's own parameters
//! (backends never see the flags). What every backend counts is defined in
//! docs/ACCOUNTING.md.

pub mod bpftrace;
pub mod child;
pub mod iftop;
pub mod nftables;
pub mod trusted;

use std::fmt::Debug;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::store::{Record, Store};
pub use child::{Event, Running};

/// The backends there are, in the order `-b auto` tries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bpftrace,
    Iftop,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Bpftrace, Kind::Iftop];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Bpftrace => "bpftrace",
            Kind::Iftop => "iftop",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// One way of counting: a child process that prints reports, and what it
/// needs around it. Only `name`, `probe`, `command`, `parser` and
/// `explain_start_failure` are required; the rest have do-nothing defaults.
pub trait Backend: Send + Sync + Debug {
    fn name(&self) -> &'static str;

    /// Whether it can run here (programs installed, kernel features there);
    /// the error says what is missing and how to fix it.
    fn probe(&self) -> Result<(), Error>;

    /// How it counts and attributes processes, for the startup line.
    fn method(&self) -> String;

    /// The child's command with its arguments and stdin, after the same
    /// checks as [`Backend::probe`]; [`child::start`] pipes its stdout and
    /// stderr and ties it to the monitor.
    fn command(&self) -> Result<Command, Error>;

    /// How often a running child prints a report: the watchdog's clock.
    fn report_interval(&self) -> Duration;

    /// A fresh parser for one child's stdout.
    fn parser(&self) -> Box<dyn LineParser>;

    /// One line saying why a child exited before it attached, from the tail
    /// of its stderr.
    fn explain_start_failure(&self, stderr: &[String]) -> String;

    /// Starts what the backend needs beside its child for the whole run.
    fn start_helpers(&self, _store: &Arc<Store>) {}

    /// The child attached: counting has begun.
    fn counting_began(&self, _child: &Running) {}

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
