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

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::Error;

/// iftop's `u` key: "update the display now".
pub const REFRESH_KEY: &[u8] = b"u";

/// iftop recomputes its figures at most this often (whole seconds of `time()`).
pub const RESOLUTION: std::time::Duration = std::time::Duration::from_millis(2050);

/// Pairs iftop may print per block (its `-L`): far above any real count, so
/// no pair is ever left out of a block and mistaken for gone.
const MAX_PAIRS: &str = "1000000";

pub fn find(program: &str, hint: &str) -> Result<PathBuf, Error> {
    super::bpftrace::find_program(program).ok_or_else(|| Error::fatal(format!("{program} not found in PATH; {hint}")))
}

pub fn command(iftop: &Path, stdbuf: &Path, iface: &str) -> Command {
    let mut cmd = Command::new(stdbuf);
    cmd.arg("-oL")
        .arg(iftop)
        .args(["-t", "-n", "-N", "-B", "-L", MAX_PAIRS, "-i", iface])
        // A pipe, never /dev/null: iftop's text mode reads keys from stdin
        // and spins at 100 % CPU on end-of-file. The key `u` makes it print.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    super::tie_to_monitor(&mut cmd);
    cmd
}

/// One line saying why iftop did not start.
pub fn explain_start_failure(stderr: &[String]) -> String {
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
