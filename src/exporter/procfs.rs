//! The standard `process_*` metrics (as every Prometheus client library
//! exports them), read from /proc/self at scrape time. A file that cannot be
//! read leaves its metric out rather than reporting a false zero.

use super::exposition::{Metric, sample_f64};
use crate::sys;

const CPU: Metric = Metric { name: "process_cpu_seconds_total", kind: "counter", help: "Total user and system CPU time spent in seconds." };
const RSS: Metric = Metric { name: "process_resident_memory_bytes", kind: "gauge", help: "Resident memory size in bytes." };
const VSIZE: Metric = Metric { name: "process_virtual_memory_bytes", kind: "gauge", help: "Virtual memory size in bytes." };
const OPEN_FDS: Metric = Metric { name: "process_open_fds", kind: "gauge", help: "Number of open file descriptors." };
const MAX_FDS: Metric = Metric { name: "process_max_fds", kind: "gauge", help: "Maximum number of open file descriptors." };
const START: Metric = Metric { name: "process_start_time_seconds", kind: "gauge", help: "Start time of the process since unix epoch in seconds." };

pub fn write_process_metrics(out: &mut String) {
    if let Some(stat) = self_stat() {
        let ticks = sys::clock_ticks_per_second() as f64;
        sample_f64(out, &CPU, (stat.utime + stat.stime) as f64 / ticks);
        let rss = resident_bytes().unwrap_or(stat.rss_pages * sys::page_size());
        sample_f64(out, &RSS, rss as f64);
        sample_f64(out, &VSIZE, stat.vsize as f64);
        if let Some(boot) = boot_time() {
            sample_f64(out, &START, boot as f64 + stat.start_ticks as f64 / ticks);
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        // The directory being read is itself one open descriptor; not counted.
        sample_f64(out, &OPEN_FDS, fds.count().saturating_sub(1) as f64);
    }
    if let Some(max) = max_open_files() {
        sample_f64(out, &MAX_FDS, max as f64);
    }
}

struct Stat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

/// /proc/self/stat: fields after the parenthesised command name, which may
/// itself contain spaces and parentheses.
fn self_stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<u64> = text[text.rfind(')')? + 2..]
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // Field n of proc(5) is fields[n - 3].
    Some(Stat {
        utime: *fields.get(11)?,
        stime: *fields.get(12)?,
        start_ticks: *fields.get(19)?,
        vsize: *fields.get(20)?,
        rss_pages: *fields.get(21)?,
    })
}

/// VmRSS from /proc/self/status. The page count in /proc/self/stat lags by
/// up to one per-CPU counter batch (32 pages a CPU, 128 KiB here: 13 % of an
/// idle monitor); VmRSS is summed exactly on current kernels.
fn resident_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = text.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().strip_suffix("kB")?.trim();
    kib.parse::<u64>().ok().map(|k| k * 1024)
}

fn boot_time() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

fn max_open_files() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_metrics_are_read_from_proc() {
        let mut out = String::new();
        write_process_metrics(&mut out);
        for name in ["process_cpu_seconds_total ", "process_resident_memory_bytes ", "process_virtual_memory_bytes ",
                     "process_open_fds ", "process_max_fds ", "process_start_time_seconds "] {
            let line = out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {out}"));
            let v: f64 = line[name.len()..].parse().unwrap();
            assert!(v >= 0.0, "{line}");
        }
        let rss = out.lines().find_map(|l| l.strip_prefix("process_resident_memory_bytes ")).unwrap();
        assert!(rss.parse::<f64>().unwrap() > 100_000.0, "a test binary uses more than 100 kB: {rss}");
    }
}
