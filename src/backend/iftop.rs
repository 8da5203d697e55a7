//! The iftop backend: one long-lived `iftop` in text mode for the whole run,
//! its stdout line-buffered through `stdbuf -oL` (iftop block-buffers into
//! a pipe otherwise), numeric hosts, sizes in bytes, and a line limit high
//! enough that every host pair is printed. iftop counts what libpcap sees on
//! one interface, so `-i` defaults to the default route's interface.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::Error;

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
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    // SAFETY: the closure runs between fork and exec and only calls prctl.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, crate::sys::die_with_parent);
    }
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
