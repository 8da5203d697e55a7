//! The monitor's main loop with a fake backend: any type behind the
//! `Backend` interface is started, read, marked up, restarted when it dies
//! and counted on, without the monitor knowing what it is. The fake's child
//! is a small `sh` script printing reports in the bpftrace script's format,
//! so no kernel tracing is involved; the monitor still needs root.
//!
//! What only the monitor's stderr shows is tested on the binary, with a
//! fake `bpftrace` put first in its search path in a private mount
//! namespace (nothing outside it sees the fake).

mod lab;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ip_traffic_monitor_cli::backend::bpftrace::BpftraceParser;
use ip_traffic_monitor_cli::backend::{Backend, LineParser, Runner};
use ip_traffic_monitor_cli::cli::Config;
use ip_traffic_monitor_cli::error::Error;
use ip_traffic_monitor_cli::filter::AddressFilter;
use ip_traffic_monitor_cli::location::Lang;
use ip_traffic_monitor_cli::monitor;

/// One report in the bpftrace script's format: 5 bytes sent to
/// 198.51.100.7 by PID 7, named "fake" (hex-escaped, as the script prints names).
const ONE_REPORT: &str = "@attached\\n@tx[198.51.100.7]: 5\\n@comm[7]: \\\\x66\\\\x61\\\\x6b\\\\x65\\n@proc[198.51.100.7]: 7\\n@end\\n";

/// A backend whose child is a small shell script: `name` in the metrics,
/// `script` run by /bin/sh, a report due every `interval`.
#[derive(Debug)]
struct Fake {
    name: &'static str,
    script: &'static str,
    interval: Duration,
}

/// Prints one report, then exits: every child the monitor starts adds 5
/// bytes and then dies.
const ONE_REPORT_THEN_EXIT: Fake = Fake { name: "fake", script: "", interval: Duration::from_secs(1) };

/// Prints one report, then lives on without a word (a hung backend).
const ONE_REPORT_THEN_SILENCE: Fake =
    Fake { name: "silent", script: "; exec sleep 600", interval: Duration::from_millis(200) };

/// Prints one report, then closes its output and lives on: it can report
/// nothing more, yet it has not exited (30 s, so a failing run leaves
/// nothing behind for long).
const ONE_REPORT_THEN_CLOSED: Fake = Fake { name: "closed", script: "; exec sleep 30 >&-", interval: Duration::from_secs(1) };

impl Backend for Fake {
    fn name(&self) -> &'static str {
        self.name
    }
    fn probe(&self) -> Result<(), Error> {
        Ok(())
    }
    fn method(&self) -> String {
        format!("printf, then `{}`", self.script)
    }
    fn runner(&self) -> Result<Runner, Error> {
        let mut command = Command::new("/bin/sh");
        command.args(["-c", &format!("printf '{ONE_REPORT}'{}", self.script)]);
        command.stdin(Stdio::null());
        let parser: Box<dyn LineParser> = Box::new(BpftraceParser::new(AddressFilter::default()));
        Ok(Runner::Child { command, parser })
    }
    fn report_interval(&self) -> Duration {
        self.interval
    }
    fn explain_start_failure(&self, _stderr: &[String]) -> String {
        "the fake did not start".into()
    }
}

fn config(backend: Arc<dyn Backend>, listen: SocketAddr, seconds: u64) -> Config {
    Config {
        backend,
        backend_reason: "a test".into(),
        iface: None,
        duration: Some(Duration::from_secs(seconds)),
        sample_interval: Duration::from_secs(1),
        top: 10,
        quiet: true,
        color: false,
        listen: Some(listen),
        export_threshold: 0,
        geoip_db: None,
        isp_db: None,
        qqwry: None,
        lang: Lang::ZhCn,
        lookup: Vec::new(),
        max_ips: 1000,
        state: None,
        save_interval: Duration::from_secs(300),
        report: false,
        json: false,
        billing_day: 1,
    }
}

/// Whether `test` can run: the monitor needs root, and the test `tools`.
fn as_root(test: &str, tools: &[&str]) -> bool {
    let root = (!lab::is_root()).then(|| "root".to_string());
    lab::skip_unless_none_missing(test, root.into_iter().chain(tools.iter().filter(|t| !lab::on_path(t)).map(|t| t.to_string())).collect())
}

/// Scrapes `addr` until `done` holds for its metrics or `within` has
/// passed; the last metrics scraped.
fn scrape_until(addr: SocketAddr, within: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        let metrics = scrape(addr).unwrap_or_default();
        if done(&metrics) || Instant::now() >= deadline {
            return metrics;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn scrape(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

#[test]
fn any_backend_is_supervised_restarted_and_counted_on() {
    if !as_root("any_backend_is_supervised_restarted_and_counted_on", &[]) {
        return;
    }
    let listen: SocketAddr = ([127, 0, 0, 1], lab::free_port()).into();
    let config = config(Arc::new(ONE_REPORT_THEN_EXIT), listen, 6);
    let run = std::thread::spawn(move || monitor::run(&config).map_err(|e| e.to_string()));

    // Restarts come after 1 s, then 2 s of backoff: by then three children
    // have each added their 5 bytes, and the totals carried on.
    let series = lab::byte_series("tx", "198.51.100.7");
    let metrics = scrape_until(listen, Duration::from_secs(5), |metrics| {
        let restarts = lab::metric_value(metrics, "ip_traffic_monitor_backend_restarts_total").unwrap_or(0.0);
        // A restart is counted when the new child attaches, before its report is read.
        restarts >= 2.0 && lab::metric_value(metrics, &series).is_some_and(|tx| tx >= 5.0 * (restarts + 1.0))
    });
    println!("{}", metrics.lines().filter(|l| l.starts_with("ip_traffic")).collect::<Vec<_>>().join("\n"));
    let restarts = lab::metric_value(&metrics, "ip_traffic_monitor_backend_restarts_total").expect("restarts");
    let tx = lab::metric_value(&metrics, &series).expect("a series for the fake's IP");
    assert!(restarts >= 2.0, "each dead child restarted: {restarts}");
    assert_eq!(tx, 5.0 * (restarts + 1.0), "5 bytes from each of {} children, none lost or doubled", restarts + 1.0);
    let build_info = format!("ip_traffic_monitor_build_info{{version=\"{}\",backend=\"fake\"}} 1", env!("CARGO_PKG_VERSION"));
    assert!(metrics.contains(&build_info), "{metrics}");
    assert!(metrics.contains("ip_traffic_remote_process_info{remote_ip=\"198.51.100.7\",pid=\"7\",process=\"fake\"} 1"));
    assert_eq!(run.join().expect("the monitor thread"), Ok(0), "the run ends (its next restart would come after -d) with exit code 0");
}

#[test]
fn a_silent_backend_is_marked_down_then_killed_and_restarted() {
    if !as_root("a_silent_backend_is_marked_down_then_killed_and_restarted", &[]) {
        return;
    }
    let listen: SocketAddr = ([127, 0, 0, 1], lab::free_port()).into();
    let config = config(Arc::new(ONE_REPORT_THEN_SILENCE), listen, 8);
    let started = Instant::now();
    let run = std::thread::spawn(move || monitor::run(&config).map_err(|e| e.to_string()));

    // Up after its report; down 3 intervals (0.6 s) later without one;
    // killed after 10 (2 s) and restarted 1 s after that (the backoff).
    let value = |m: &str, name: &str| lab::metric_value(m, name).unwrap_or(-1.0);
    let mut seen_down_at = None;
    let mut restarted_at = None;
    while started.elapsed() < Duration::from_secs(7) && restarted_at.is_none() {
        let metrics = scrape(listen).unwrap_or_default();
        let (up, restarts) = (value(&metrics, "ip_traffic_monitor_backend_up"), value(&metrics, "ip_traffic_monitor_backend_restarts_total"));
        if up == 0.0 && restarts == 0.0 && value(&metrics, &lab::byte_series("tx", "198.51.100.7")) == 5.0 {
            seen_down_at.get_or_insert(started.elapsed());
        }
        if restarts == 1.0 && up == 1.0 {
            restarted_at = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("marked down at {seen_down_at:?}, restarted at {restarted_at:?}");
    let down = seen_down_at.expect("backend_up went to 0 while the child was silent");
    let back = restarted_at.expect("the silent child was killed and a new one counted as a restart");
    assert!(down < back, "down before the restart");
    assert!(back >= ONE_REPORT_THEN_SILENCE.interval * 10, "not killed before 10 intervals of silence: {back:?}");
    assert_eq!(run.join().expect("the monitor thread"), Ok(0));
}

#[test]
fn a_backend_that_closes_its_output_and_lives_on_is_killed_and_restarted() {
    if !as_root("a_backend_that_closes_its_output_and_lives_on_is_killed_and_restarted", &[]) {
        return;
    }
    let listen: SocketAddr = ([127, 0, 0, 1], lab::free_port()).into();
    let config = config(Arc::new(ONE_REPORT_THEN_CLOSED), listen, 5);
    let run = std::thread::spawn(move || monitor::run(&config).map_err(|e| e.to_string()));

    // The first child's output closes at once; it is killed 1 s later and
    // a second one started 1 s after that (the backoff), adding its 5 bytes.
    let series = lab::byte_series("tx", "198.51.100.7");
    let metrics = scrape_until(listen, Duration::from_millis(4500), |metrics| lab::metric_value(metrics, &series) == Some(10.0));
    let restarts = lab::metric_value(&metrics, "ip_traffic_monitor_backend_restarts_total");
    assert_eq!(
        (restarts, lab::metric_value(&metrics, &series)),
        (Some(1.0), Some(10.0)),
        "the child that closed its output was killed and replaced, and the new one counted: {metrics}"
    );
    assert_eq!(run.join().expect("the monitor thread"), Ok(0), "the run ends at -d");
}

/// The fake bpftrace: one report of 5 bytes, then it waits; on SIGINT it
/// does `on_sigint` (a shell trap's action; empty: it ignores SIGINT).
const FAKE_BPFTRACE: &str = "#!/bin/sh\ntrap '{on_sigint}' INT\n\
    printf '@attached\\n@tx[198.51.100.7]: 5\\n@end\\n'\nsleep 600 & child=$!\nwait\nkill $child\n";

/// The fake iftop: a block in which 127.0.0.1 has sent 198.51.100.7 5
/// bytes, then `then` (shell). iftop's frame, cut to what the parser reads.
const FAKE_IFTOP: &str = "#!/bin/sh\nblock() {\n\
    printf '   # Host name (port/service if enabled)   last 2s   last 10s   last 40s cumulative\\n---\\n'\n\
    printf '   1 127.0.0.1  =>  0B  0B  0B  %s\\n     198.51.100.7  <=  0B  0B  0B  0B\\n' \"$1\"\n\
    printf -- '---\\nTotal send rate: 0B 0B 0B\\n=====\\n'\n}\n\
    printf 'Listening on lo\\n'\nblock 5B\n{then}\n";

/// Runs the monitor for 2 s as `-b backend` (with `args`), the program it
/// runs being the shell script `fake`: in private mount and network
/// namespaces (only `lo`, up), on a tmpfs over /usr/local/sbin, the first
/// directory the monitor looks in. Its exit code, the summary's tx bytes
/// for 198.51.100.7, and its stderr.
fn run_with_fake(backend: &str, fake: &str, args: &[&str]) -> (Option<i32>, u64, String) {
    let script = lab::TempFile::new(&format!("fake-{backend}"), fake.as_bytes());
    let port = lab::free_port().to_string();
    let setup = format!(
        "ip link set lo up && mount -t tmpfs itm-fake /usr/local/sbin && cp \"$1\" /usr/local/sbin/{backend} && \
         chmod 755 /usr/local/sbin/{backend} && {{ mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null; true; }} && \
         shift && exec \"$@\""
    );
    let out = Command::new("unshare")
        .args(["-m", "-n", "--propagation", "private", "sh", "-c", &setup, "sh", script.path()])
        .args([lab::BIN, "-b", backend, "-d", "2", "-s", "1", "-q", "-p", &port])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("unshare");
    let stdout: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let tx = lab::summary_rows(&stdout).get("198.51.100.7").map_or(0, |row| row.0);
    (out.status.code(), tx, stderr)
}

fn stop_the_fake_bpftrace(on_sigint: &str) -> (Option<i32>, u64, String) {
    run_with_fake("bpftrace", &FAKE_BPFTRACE.replace("{on_sigint}", on_sigint), &[])
}

fn stop_the_fake_iftop(then: &str) -> (Option<i32>, u64, String) {
    run_with_fake("iftop", &FAKE_IFTOP.replace("{then}", then), &["-i", "lo"])
}

#[test]
fn a_backend_killed_before_its_last_report_is_said_to_have_lost_it() {
    if !as_root("a_backend_killed_before_its_last_report_is_said_to_have_lost_it", &["unshare"]) {
        return;
    }
    let lost = "warning: the last report of bpftrace did not come (it had not ended 5 s after SIGINT and was killed)";

    // As bpftrace does: its last report (7 bytes more) as it ends.
    let (code, tx, stderr) = stop_the_fake_bpftrace("kill $child; printf \"@tx[198.51.100.7]: 7\\n@end\\n\"; exit 0");
    println!("reports as it ends: exit {code:?}, tx {tx}\n{stderr}");
    assert_eq!((code, tx), (Some(0), 12), "both reports counted: {stderr}");
    assert!(!stderr.contains("the last report of"), "nothing lost, nothing said: {stderr}");

    // Its last report, then slow to end (as bpftrace detaching its probes
    // on a slow machine): killed, but nothing was lost, so nothing is said.
    let (code, tx, stderr) = stop_the_fake_bpftrace("kill $child; printf \"@tx[198.51.100.7]: 7\\n@end\\n\"; exec sleep 600");
    println!("reports, then does not end: exit {code:?}, tx {tx}\n{stderr}");
    assert_eq!((code, tx), (Some(0), 12), "both reports counted: {stderr}");
    assert!(!stderr.contains("the last report of"), "nothing lost, nothing said: {stderr}");

    // Deaf to SIGINT: killed after the grace time, its last report never printed.
    let (code, tx, stderr) = stop_the_fake_bpftrace("");
    println!("deaf to SIGINT: exit {code:?}, tx {tx}\n{stderr}");
    assert_eq!((code, tx), (Some(0), 5), "the report before is counted, and the run ends as usual: {stderr}");
    assert!(stderr.lines().any(|line| line.starts_with(lost)), "the loss is said: {stderr}");
}

#[test]
fn an_iftop_that_never_prints_the_block_asked_for_is_said_to_have_lost_it() {
    if !as_root("an_iftop_that_never_prints_the_block_asked_for_is_said_to_have_lost_it", &["unshare"]) {
        return;
    }
    // As iftop does: a block for each key the monitor sends (the refresh
    // key `u`), here with 12 bytes sent in all.
    let answers = "while key=$(dd bs=1 count=1 2>/dev/null) && [ -n \"$key\" ]; do block 12B; done";
    let (code, tx, stderr) = stop_the_fake_iftop(answers);
    println!("answers: exit {code:?}, tx {tx}\n{stderr}");
    assert_eq!((code, tx), (Some(0), 12), "both blocks counted: {stderr}");
    assert!(!stderr.contains("the last report of"), "nothing lost, nothing said: {stderr}");

    // Deaf to keys: the block asked for at the end never comes.
    let (code, tx, stderr) = stop_the_fake_iftop("exec sleep 600");
    println!("deaf to keys: exit {code:?}, tx {tx}\n{stderr}");
    assert_eq!((code, tx), (Some(0), 5), "the block before is counted, and the run ends as usual: {stderr}");
    let lost = "warning: the last report of iftop did not come (none within 3 s of asking)";
    assert!(stderr.lines().any(|line| line.starts_with(lost)), "the loss is said: {stderr}");
}
