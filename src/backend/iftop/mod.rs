//! The iftop backend: one long-lived `iftop` in text mode for the whole run,
//! its stdout line-buffered through `stdbuf -oL` (iftop block-buffers into
//! a pipe otherwise), numeric hosts, sizes in bytes, and a line limit high
//! enough that every host pair is printed. iftop counts what libpcap sees on
//! one interface, so `-i` defaults to the default route's interface.
//!
//! iftop's text mode prints a block only when a packet arrives or a key is
//! pressed, at most once per [`RESOLUTION`]: the monitor presses [`REFRESH_KEY`]
//! every sample interval, so blocks keep coming on a quiet link, and once more
//! at the end so the last bytes are printed before iftop is stopped.
//!
//! iftop sees packets, not sockets: which side of a host pair is remote is
//! decided by [`direction`], and the local process by [`super::owners`], a
//! /proc scan on its own thread. [`parse`] reads its blocks.

pub mod direction;
pub mod parse;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::trusted::{self, require_program};
use super::{Backend, LineParser, Runner, Running, owners};
use crate::error::Error;
use crate::filter::AddressFilter;
use crate::store::Store;
use direction::Direction;
use parse::IftopParser;

/// What the iftop backend is told.
#[derive(Clone, Debug)]
pub struct Params {
    /// The capture interface (iftop watches exactly one).
    pub iface: String,
    pub sample_interval: Duration,
    pub filter: AddressFilter,
}

#[derive(Debug)]
pub struct Iftop {
    params: Params,
}

impl Iftop {
    pub fn new(params: Params) -> Iftop {
        Iftop { params }
    }
}

const INSTALL_HINT: &str = "install it: apt-get install iftop";
const STDBUF_HINT: &str = "it comes with coreutils and makes iftop's output arrive line by line";

impl Backend for Iftop {
    fn name(&self) -> &'static str {
        "iftop"
    }

    fn probe(&self) -> Result<(), Error> {
        require_program("iftop", INSTALL_HINT).and(require_program("stdbuf", STDBUF_HINT)).map(drop)
    }

    fn method(&self) -> String {
        "cumulative column, 3 significant digits; process from /proc".into()
    }

    fn runner(&self) -> Result<Runner, Error> {
        let iftop = require_program("iftop", INSTALL_HINT)?;
        let stdbuf = require_program("stdbuf", STDBUF_HINT)?;
        let parser: Box<dyn LineParser> = Box::new(IftopParser::new(self.params.filter.clone(), Direction::new(&self.params.iface)));
        Ok(Runner::Child { command: command(&iftop, &stdbuf, &self.params.iface), parser })
    }

    fn report_interval(&self) -> Duration {
        self.params.sample_interval.max(RESOLUTION)
    }

    fn explain_start_failure(&self, stderr: &[String]) -> String {
        explain_start_failure(stderr)
    }

    fn start_helpers(&self, store: &Arc<Store>) {
        owners::spawn(Arc::clone(store));
    }

    /// iftop prints a block only when a packet comes or a key is pressed:
    /// the refresh key every interval keeps blocks coming on a quiet link.
    fn counting_began(&self, child: &Running) {
        child.send_keys_every(REFRESH_KEY, self.report_interval());
    }

    /// iftop prints nothing on exit: its last block is the last word. As
    /// soon as its figures can be recomputed, asks for one more block; a
    /// block read from then on is the final one.
    fn request_final_report(&self, child: &Running, last_report: Option<SystemTime>) -> Option<SystemTime> {
        std::thread::sleep(until_next_block(last_report, SystemTime::now()));
        let asked = SystemTime::now();
        child.send_keys(REFRESH_KEY).then_some(asked)
    }
}

/// iftop's `u` key: "update the display now".
pub const REFRESH_KEY: &[u8] = b"u";

/// iftop recomputes its figures when `time()` has advanced this many whole
/// seconds since the last block (its `RESOLUTION`).
pub const RESOLUTION_SECS: u64 = 2;

/// A block interval that is always long enough, whenever the last one came.
pub const RESOLUTION: Duration = Duration::from_millis(RESOLUTION_SECS * 1000 + 50);

/// How long until iftop can print a block with new figures, given when the
/// last one was read (`None`: none yet). iftop stamps a block with `time()`
/// when it prints it, no later than we read it, so the next one is due at the
/// start of the wall-clock second `floor(last) + RESOLUTION_SECS` at the
/// latest; 10 ms more covers `time()` running on the coarse clock.
pub fn until_next_block(last: Option<SystemTime>, now: SystemTime) -> Duration {
    let Some(last) = last else { return RESOLUTION };
    let second = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let due = UNIX_EPOCH + Duration::from_secs(second(last) + RESOLUTION_SECS) + Duration::from_millis(10);
    due.duration_since(now).unwrap_or(Duration::ZERO)
}

/// Pairs iftop may print per block (its `-L`): far above any real count, so
/// no pair is ever left out of a block and mistaken for gone.
const MAX_PAIRS: &str = "1000000";

fn command(iftop: &Path, stdbuf: &Path, iface: &str) -> Command {
    let mut cmd = trusted::command(stdbuf);
    cmd.arg("-oL")
        .arg(iftop)
        .args(["-t", "-n", "-N", "-B", "-L", MAX_PAIRS, "-i", iface])
        // A pipe, never /dev/null: iftop's text mode reads keys from stdin
        // and spins at 100 % CPU on end-of-file. The key `u` makes it print.
        .stdin(Stdio::piped());
    cmd
}

/// One line saying why iftop did not start.
fn explain_start_failure(stderr: &[String]) -> String {
    // iftop prints interface details first; its error is the last line.
    let error = stderr
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with("interface:") && !l.contains("address is:"))
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| "it exited without saying why".into());
    let hint = if error.contains("ermitted") { " (run as root, or grant CAP_NET_RAW)" } else { "" };
    format!("iftop failed to start: {error}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_block_is_due_two_wall_clock_seconds_after_the_last_ones_second() {
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        // Last block read at 10.999: iftop stamped it 10, so 12.010 will do.
        assert_eq!(until_next_block(Some(at(10_999)), at(11_000)), Duration::from_millis(1_010));
        assert_eq!(until_next_block(Some(at(10_001)), at(10_500)), Duration::from_millis(1_510));
        assert_eq!(until_next_block(Some(at(10_001)), at(13_000)), Duration::ZERO);
        assert_eq!(until_next_block(None, at(13_000)), RESOLUTION);
    }
}
