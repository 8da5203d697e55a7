//! The main thread's job: check privileges, start the backend, wait for it
//! to attach, print a table per report, and end the run (duration reached,
//! SIGINT or SIGTERM) by stopping the backend, reading its last report and
//! printing the summary. A backend that dies is an error, never "no traffic".

use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::backend::direction::Direction;
use crate::backend::iftop_parse::IftopParser;
use crate::backend::{self, BpftraceParser, Event, LineParser, Running, bpftrace, iftop, owners};
use crate::cli::{BackendKind, Config};
use crate::error::Error;
use crate::exporter;
use crate::location::Locator;
use crate::report;
use crate::store::Store;
use crate::sys;

/// How long bpftrace may take to compile and attach (slow routers).
const ATTACH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the backend may take to print its final report when stopped.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub fn run(config: &Config) -> Result<i32, Error> {
    let locator = Arc::new(Locator::open(
        config.geoip_db.as_deref(),
        config.isp_db.as_deref(),
        config.qqwry.as_deref(),
        config.lang,
    )?);
    if !config.lookup.is_empty() {
        print_lookups(&locator, &config.lookup);
        return Ok(0);
    }
    if !sys::is_root() {
        return Err(Error::fatal(
            "must run as root: bpftrace needs CAP_BPF and CAP_PERFMON (try: sudo ip_traffic_monitor_cli ...)",
        ));
    }
    let store = Arc::new(Store::new(config.export_threshold));
    let (events_tx, events) = mpsc::channel();
    watch_signals(events_tx.clone())?;
    // Bind before starting the backend: a port in use fails fast.
    if let Some(addr) = config.listen {
        let shared = Arc::new(exporter::Shared {
            store: Arc::clone(&store),
            backend: config.backend.name(),
            locator: Arc::clone(&locator),
        });
        let bound = exporter::start(addr, shared)?;
        eprintln!("serving Prometheus metrics on http://{bound}/metrics");
    }
    let mut backend = start_backend(config, &store, events_tx)?;
    // The run's clock (-d, elapsed times) starts when counting does.
    let mut started = Instant::now();
    let outcome = match wait_attached(&events, &mut backend) {
        Ok(true) => {
            started = Instant::now();
            store.lock().backend_up = true;
            if config.backend == BackendKind::Iftop {
                backend.send_keys_every(iftop::REFRESH_KEY, config.sample_interval.max(iftop::RESOLUTION));
            }
            announce(config, &backend);
            count_until_stopped(config, &store, &locator, &events, &mut backend, started)
        }
        Ok(false) => Ok(()), // stopped by a signal before counting began
        Err(err) => {
            backend.stop(STOP_GRACE);
            return Err(err);
        }
    };
    store.lock().backend_up = false;
    let mut out = std::io::stdout().lock();
    let view = report::View { top: config.top, color: config.color, locator: Some(&locator) };
    let _ = report::summary(&mut out, &store.totals_by_volume(), &view, started.elapsed());
    let _ = out.flush();
    outcome.map(|()| 0)
}

fn start_backend(config: &Config, store: &Arc<Store>, events: Sender<Event>) -> Result<Running, Error> {
    let (child, parser): (_, Box<dyn LineParser>) = match config.backend {
        BackendKind::Bpftrace => {
            let bin = bpftrace::find()?;
            bpftrace::check_kernel()?;
            let child = spawn(bpftrace::command(&bin, config)?, &bin)?;
            (child, Box::new(BpftraceParser { filter: config.filter.clone() }))
        }
        BackendKind::Iftop => {
            let iftop = iftop::find("iftop", "install it: apt-get install iftop")?;
            let stdbuf = iftop::find("stdbuf", "it comes with coreutils and makes iftop's output arrive line by line")?;
            let iface = config.iface.as_ref().map_or("", |i| i.name.as_str());
            let child = spawn(iftop::command(&iftop, &stdbuf, iface), &iftop)?;
            owners::spawn(Arc::clone(store));
            (child, Box::new(IftopParser::new(config.filter.clone(), Direction::new(iface))))
        }
    };
    Ok(backend::supervise(child, config.backend.name(), parser, Arc::clone(store), events))
}

fn spawn(mut cmd: std::process::Command, program: &std::path::Path) -> Result<std::process::Child, Error> {
    cmd.spawn().map_err(|e| Error::fatal(format!("cannot run {}: {e}", program.display())))
}

fn watch_signals(events: Sender<Event>) -> Result<(), Error> {
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| Error::fatal(format!("cannot install signal handlers: {e}")))?;
    thread::spawn(move || {
        for _ in signals.forever() {
            if events.send(Event::Signal).is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// `Ok(true)` once the backend attached, `Ok(false)` if a signal came first.
fn wait_attached(events: &Receiver<Event>, backend: &mut Running) -> Result<bool, Error> {
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(Event::Attached) => return Ok(true),
            Ok(Event::Signal) => {
                backend.stop(STOP_GRACE);
                return Ok(false);
            }
            Ok(Event::Exited) => {
                backend.wait();
                let stderr = backend.stderr.lines();
                return Err(Error::fatal(match backend.name {
                    "iftop" => iftop::explain_start_failure(&stderr),
                    _ => bpftrace::explain_start_failure(&stderr),
                }));
            }
            Ok(Event::Report) => {}
            Err(_) => {
                return Err(Error::fatal(format!(
                    "{} did not attach its probes within {} s",
                    backend.name,
                    ATTACH_TIMEOUT.as_secs()
                )))
            }
        }
    }
}

fn announce(config: &Config, backend: &Running) {
    backend.stderr.start_echo();
    let how = match (config.backend, &config.bpftrace_script) {
        (BackendKind::Bpftrace, Some(path)) => format!("script {}, process from the sending socket", path.display()),
        (BackendKind::Bpftrace, None) => "built-in traffic.bt, process from the sending socket".into(),
        (BackendKind::Iftop, _) => "cumulative column, 3 significant digits; process from /proc".into(),
    };
    let scope = match &config.iface {
        Some(iface) => format!("interface {} (ifindex {})", iface.name, iface.ifindex),
        None => "every interface but loopback".into(),
    };
    let until = match config.duration {
        Some(d) => format!("for {} s", d.as_secs()),
        None => "until stopped".into(),
    };
    eprintln!(
        "counting with {} ({how}; {}) on {scope}, a report every {} s, {until}; Ctrl-C to stop",
        backend.name,
        config.backend_reason,
        config.sample_interval.as_secs()
    );
}

fn count_until_stopped(
    config: &Config,
    store: &Store,
    locator: &Locator,
    events: &Receiver<Event>,
    backend: &mut Running,
    started: Instant,
) -> Result<(), Error> {
    let deadline = config.duration.map(|d| started + d);
    let mut seen_errors = 0;
    loop {
        let event = match deadline {
            Some(deadline) => {
                match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(event) => event,
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => Event::Exited,
                }
            }
            None => events.recv().unwrap_or(Event::Exited),
        };
        match event {
            Event::Report => on_report(config, store, locator, backend, started, &mut seen_errors),
            Event::Signal => break,
            Event::Attached => {}
            Event::Exited => {
                store.lock().backend_up = false;
                let status = backend.wait();
                let last = backend.stderr.lines().pop().unwrap_or_default();
                let status = status.map_or_else(|| "unknown status".into(), |s| s.to_string());
                return Err(Error::fatal(format!(
                    "{} exited unexpectedly ({status}){}{last}",
                    backend.name,
                    if last.is_empty() { "" } else { ": " }
                )));
            }
        }
    }
    if config.backend == BackendKind::Iftop {
        await_final_iftop_block(config, store, locator, events, backend, started, &mut seen_errors);
    }
    backend.stop(STOP_GRACE);
    Ok(())
}

/// iftop prints nothing on exit: its last block is the last word. Once its
/// figures can be recomputed (a resolution after the last block), asks for
/// one more block and reads it, so every byte up to now is counted.
fn await_final_iftop_block(
    config: &Config,
    store: &Store,
    locator: &Locator,
    events: &Receiver<Event>,
    backend: &Running,
    started: Instant,
    seen_errors: &mut u64,
) {
    let since_last = store.lock().last_report.and_then(|t| t.elapsed().ok()).unwrap_or(iftop::RESOLUTION);
    thread::sleep(iftop::RESOLUTION.saturating_sub(since_last));
    if !backend.send_keys(iftop::REFRESH_KEY) {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Ok(event) = events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Event::Report = event {
            on_report(config, store, locator, backend, started, seen_errors);
            return;
        }
    }
}

fn on_report(config: &Config, store: &Store, locator: &Locator, backend: &Running, started: Instant, seen_errors: &mut u64) {
    warn_about_missed_events(store, backend);
    warn_about_unreadable_lines(store, backend.name, seen_errors);
    let rows = store.take_interval();
    if config.quiet {
        return;
    }
    let tracked = store.lock().ips.len();
    let mut out = std::io::stdout().lock();
    // A closed stdout (piped into `head`) must not stop the counting.
    let view = report::View { top: config.top, color: config.color, locator: Some(locator) };
    let _ = report::interval_table(&mut out, &rows, &view, started.elapsed(), tracked);
    let _ = out.flush();
}

fn warn_about_missed_events(store: &Store, backend: &Running) {
    let misses = bpftrace::recursion_misses(backend.pid());
    let mut totals = store.lock();
    if misses > totals.missed_events {
        let new = misses - totals.missed_events;
        totals.missed_events = misses;
        drop(totals);
        eprintln!(
            "warning: the kernel skipped {new} probe runs ({misses} in all) because another BPF \
             tracing program was running on the same CPU; up to that many packets were not counted"
        );
    }
}

fn warn_about_unreadable_lines(store: &Store, backend: &str, seen: &mut u64) {
    let errors = store.lock().parse_errors;
    if errors > *seen {
        eprintln!("warning: skipped {} unreadable lines from {backend} ({errors} in all)", errors - *seen);
        *seen = errors;
    }
}

/// `--lookup`: a tab-separated table of the labels each IP would get.
fn print_lookups(locator: &Locator, ips: &[std::net::IpAddr]) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "remote_ip\tcountry\tprovince\tcity\tisp");
    for ip in ips {
        let l = locator.lookup_uncached(crate::filter::canonical(*ip));
        let _ = writeln!(out, "{ip}\t{}\t{}\t{}\t{}", l.country(), l.province(), l.city(), l.isp());
    }
    let _ = out.flush();
}
