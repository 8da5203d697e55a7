//! The bpftrace backend: finds `bpftrace`, checks what the kernel must offer
//! (tracefs, BTF), builds the command line for the embedded script
//! `bpftrace/traffic.bt` (or the user's, vetted and read once at startup),
//! handed over as an argument so no temporary file is written and no file
//! is read again, reads its output ([`parse`] for a line,
//! [`reports`] for a report), explains start failures in one line, and reads
//! how many probe runs the kernel skipped. The script names each packet's
//! process itself, from the sending socket.

pub mod parse;
pub mod reports;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Backend, LineParser, Runner, Running, trusted};
use crate::error::Error;
use crate::filter::AddressFilter;
pub use reports::BpftraceParser;

/// What the bpftrace backend is told.
#[derive(Clone, Debug)]
pub struct Params {
    /// `None`: the embedded traffic.bt.
    pub script: Option<Script>,
    pub sample_interval: Duration,
    /// Inode of the network namespace being measured (the monitor's own).
    pub netns_inode: u64,
    /// The interface to count on; 0 = every interface but loopback.
    pub ifindex: u32,
    pub filter: AddressFilter,
}

/// A user's script (`--bpftrace-script`), read once: every child of the
/// run gets this text, whatever happens to the file later.
#[derive(Clone, Debug)]
pub struct Script {
    pub path: PathBuf,
    text: String,
}

/// The longest script accepted: it travels as one argument (`-e`), and
/// Linux limits one argument to 128 KiB.
pub const MAX_SCRIPT_BYTES: usize = 128 * 1024 - 1;

impl Script {
    /// Reads and vets the script root will run (see [`trusted::read_vetted_text`]).
    pub fn load(path: &Path) -> Result<Script, Error> {
        let text = trusted::read_vetted_text(path, MAX_SCRIPT_BYTES, "--bpftrace-script")?;
        Ok(Script { path: path.to_path_buf(), text })
    }
}

#[derive(Debug)]
pub struct Bpftrace {
    params: Params,
}

impl Bpftrace {
    pub fn new(params: Params) -> Bpftrace {
        Bpftrace { params }
    }
}

impl Backend for Bpftrace {
    fn name(&self) -> &'static str {
        "bpftrace"
    }

    fn probe(&self) -> Result<(), Error> {
        find().and_then(|_| check_kernel())
    }

    fn method(&self) -> String {
        match &self.params.script {
            Some(script) => format!("script {}, process from the sending socket", script.path.display()),
            None => "built-in traffic.bt, process from the sending socket".into(),
        }
    }

    fn runner(&self) -> Result<Runner, Error> {
        let bpftrace = find()?;
        check_kernel()?;
        let parser: Box<dyn LineParser> = Box::new(BpftraceParser::new(self.params.filter.clone()));
        Ok(Runner::Child { command: command(&bpftrace, &self.params)?, parser })
    }

    fn report_interval(&self) -> Duration {
        self.params.sample_interval
    }

    fn explain_start_failure(&self, stderr: &[String]) -> String {
        explain_start_failure(stderr)
    }

    fn why_unkeyed(&self) -> &'static str {
        "bpftrace's maps were full (more remote IPs in one interval than BPFTRACE_MAP_KEYS_MAX) or it printed them too late (starved of CPU)"
    }

    fn missed_events(&self, child: &Running) -> u64 {
        child.pid().map_or(0, recursion_misses)
    }
}

/// The counting script, compiled into the binary so a copied binary works
/// alone: `bpftrace/traffic.bt` without its comments (build.rs).
pub const SCRIPT: &str = include_str!(concat!(env!("OUT_DIR"), "/traffic.bt"));

/// Keys per bpftrace map, i.e. distinct remote IPs per direction in one
/// report, unless the environment sets BPFTRACE_MAP_KEYS_MAX (a memory knob
/// for small routers). bpftrace's own default (4096) is far too small; bytes
/// of IPs beyond the maps' room still reach the totals under key 0.0.0.0.
pub const MAP_KEYS_MAX: u32 = 131_072;

const INSTALL_HINT: &str = "install it: apt-get install bpftrace (Debian/Ubuntu), dnf install bpftrace, or use -b iftop";

fn find() -> Result<PathBuf, Error> {
    trusted::require_program("bpftrace", INSTALL_HINT)
}

/// The kernel features the script needs, checked up front so the user gets
/// the fix rather than bpftrace's symptoms.
fn check_kernel() -> Result<(), Error> {
    let tracefs = ["/sys/kernel/tracing/events/net", "/sys/kernel/debug/tracing/events/net"];
    if !tracefs.iter().any(|dir| Path::new(dir).is_dir()) {
        return Err(Error::fatal(
            "tracefs is not mounted, so bpftrace cannot see the net tracepoints; \
             fix: mount -t tracefs nodev /sys/kernel/tracing",
        ));
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(Error::fatal(
            "this kernel has no BTF (/sys/kernel/btf/vmlinux), which the bpftrace script needs \
             to read packets; use a kernel built with CONFIG_DEBUG_INFO_BTF=y, or -b iftop",
        ));
    }
    Ok(())
}

/// The command for the counting child. Positional parameters: half the
/// sample interval in ms, the network namespace inode, the ifindex (0 = all),
/// an eighth of the sample interval in ms, 1 to count private addresses.
fn command(bpftrace: &Path, params: &Params) -> Result<Command, Error> {
    let mut cmd = trusted::command(bpftrace);
    let text = params.script.as_ref().map_or(SCRIPT, |script| &script.text);
    cmd.arg("-e").arg(text);
    let interval_ms = params.sample_interval.as_millis();
    cmd.arg((interval_ms / 2).to_string())
        .arg(params.netns_inode.to_string())
        .arg(params.ifindex.to_string())
        .arg((interval_ms / 8).to_string())
        .arg(if params.filter.include_private { "1" } else { "0" });
    // bpftrace's own knobs (BPFTRACE_MAP_KEYS_MAX and the like) pass
    // through the clean environment; nothing else does.
    cmd.envs(std::env::vars_os().filter(|(name, _)| name.as_encoded_bytes().starts_with(b"BPFTRACE_")));
    if std::env::var_os("BPFTRACE_MAP_KEYS_MAX").is_none() {
        cmd.env("BPFTRACE_MAP_KEYS_MAX", MAP_KEYS_MAX.to_string());
    }
    cmd.stdin(Stdio::null());
    Ok(cmd)
}

/// One line saying why bpftrace did not start, from what it wrote on stderr.
fn explain_start_failure(stderr: &[String]) -> String {
    let error = stderr
        .iter()
        .find(|line| line.contains("ERROR"))
        .or_else(|| stderr.iter().rev().find(|line| !line.trim().is_empty()))
        .map(|line| line.trim().to_string())
        .unwrap_or_else(|| "it exited before printing @attached, without an error (a script must print @attached from BEGIN)".into());
    let hint = if error.contains("Operation not permitted") || error.contains("ermission") {
        " (run as root, or grant CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE)"
    } else if error.contains("BTF") || error.contains("struct sk_buff") {
        " (the kernel's BTF is missing or unreadable: check /sys/kernel/btf/vmlinux)"
    } else if error.contains("tracepoint") || error.contains("probe") {
        " (a tracepoint is missing on this kernel: try -b iftop)"
    } else {
        ""
    };
    format!("bpftrace failed to start: {error}{hint}")
}

/// How many times the kernel skipped one of bpftrace's programs because
/// another BPF tracing program was running on that CPU (`recursion_misses`
/// in the programs' fdinfo). Each skip is an uncounted packet.
fn recursion_misses(pid: u32) -> u64 {
    program_stat(pid, "recursion_misses:")
}

/// One counter of the kernel's per-program statistics (a `/proc/PID/fdinfo`
/// field such as `recursion_misses:` or `run_time_ns:`), summed over the BPF
/// programs `pid` holds.
pub fn program_stat(pid: u32, field: &str) -> u64 {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return 0 };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
        .filter(|info| info.contains("prog_type:"))
        .filter_map(|info| info.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.trim().parse::<u64>().ok()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_failures_name_the_cause_and_a_fix() {
        let stderr = vec![
            "stdin:1:1-10: ERROR: Operation not permitted".to_string(),
            "more".to_string(),
        ];
        let msg = explain_start_failure(&stderr);
        assert!(msg.contains("Operation not permitted") && msg.contains("run as root"), "{msg}");
        assert!(explain_start_failure(&[]).contains("@attached from BEGIN"));
    }

    #[test]
    fn the_embedded_script_is_the_file_without_its_comments() {
        let file = include_str!("../../../bpftrace/traffic.bt");
        assert!(file.starts_with("/*") && file.contains("What it measures") && file.contains("Caveats"));
        for needle in ["$1", "$2", "$3", "$4", "$5", "@end", "@proc", "@comm", "net_dev_queue", "netif_receive_skb", "printf("] {
            assert!(SCRIPT.contains(needle), "{needle}");
        }
        assert!(!SCRIPT.contains("/*") && !SCRIPT.contains("What it measures"), "no comments");
        assert!(SCRIPT.len() * 2 < file.len(), "{} of {} bytes", SCRIPT.len(), file.len());
        // Every line of code is kept as it is.
        let code_lines = |text: &str| text.lines().filter(|l| l.contains("printf(") || l.contains("tracepoint:")).count();
        assert_eq!(code_lines(SCRIPT), code_lines(file));
    }
}
