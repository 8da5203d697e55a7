//! The main thread's job: open the location databases (or answer
//! `--lookup`), check privileges, bind the exporter, start the backend, wait
//! for it to attach, print a table per report, restart the backend with
//! backoff if it dies (said loudly, never shown as "no traffic"), and end
//! the run (duration reached, SIGINT or SIGTERM) by stopping the backend,
//! reading its last report and printing the summary.

use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;

use crate::backend::{self, Backend, Event, Running, Stopped};
use crate::cli::Config;
use crate::error::Error;
use crate::exporter;
use crate::location::{Ledger, Locator};
use crate::period::{Periods, Zone};
use crate::report;
use crate::state;
use crate::store::Store;
use crate::sys;

/// How long a backend may take to attach (bpftrace compiles first; slow routers).
const ATTACH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the backend may take to print its final report when stopped.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long a backend whose output closed may take to exit before it is
/// killed (a dying one takes milliseconds).
const OUTPUT_CLOSED_GRACE: Duration = Duration::from_secs(1);
/// How long a backend asked for a final report may take to print it.
const FINAL_REPORT_TIMEOUT: Duration = Duration::from_secs(3);

pub fn run(config: &Config) -> Result<i32, Error> {
    let locator = Arc::new(Locator::open(
        config.geoip_db.as_deref(),
        config.isp_db.as_deref(),
        config.qqwry.as_deref(),
        config.lang,
    )?);
    if !config.lookup.is_empty() {
        if locator.is_empty() {
            return Err(Error::usage("--lookup needs a location database: give -g/--geoip-db, --isp-db or --qqwry"));
        }
        print_lookups(&locator, &config.lookup);
        return Ok(0);
    }
    if config.report {
        return print_state_report(config, &locator);
    }
    if !sys::is_root() {
        return Err(Error::fatal(
            "must run as root: bpftrace needs CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN, iftop CAP_NET_RAW (try: sudo ip_traffic_monitor_cli ...)",
        ));
    }
    let backend = &*config.backend;
    let periods = Periods { billing_day: config.billing_day, zone: Zone::local() };
    let store = Arc::new(Store::new(config.export_threshold, config.max_ips).with_periods(periods, sys::unix_now() as i64));
    let ledger = Arc::new(Ledger::default());
    // A state that cannot be read stops the run here, before anything is
    // counted or saved over it.
    if let Some(path) = &config.state {
        continue_from_state(path, &store, &ledger)?;
    }
    let (events_tx, events) = mpsc::channel();
    watch_signals(events_tx.clone())?;
    // The location totals need the evicted IPs: kept while someone can
    // scrape them or a state file keeps them.
    if config.listen.is_some() || config.state.is_some() {
        store.keep_retired();
    }
    // Bind before starting the backend: a port in use fails fast.
    if let Some(addr) = config.listen {
        let shared = Arc::new(exporter::Shared::new(Arc::clone(&store), backend.name(), backend.report_interval(), Arc::clone(&locator), Arc::clone(&ledger)));
        let bound = exporter::start(addr, shared)?;
        eprintln!("serving Prometheus metrics on http://{bound}/metrics");
    }
    backend.start_helpers(&store);
    let mut running = backend::start(backend, Arc::clone(&store), events_tx.clone())?;
    // The run's clock (-d, elapsed times) starts when counting does.
    let mut started = Instant::now();
    let outcome = match wait_attached(backend, &events, &mut running) {
        Ok(true) => {
            started = Instant::now();
            counting_began(backend, &store, &running);
            announce(config, &running);
            let ctx = Ctx { config, backend, store: &store, locator: &locator, ledger: &ledger, events: &events, events_tx: &events_tx, started };
            count_until_stopped(&ctx, &mut running)
        }
        Ok(false) => Ok(()), // stopped by a signal before counting began
        Err(err) => {
            running.stop(STOP_GRACE);
            return Err(err);
        }
    };
    store.health().set_up(false);
    let mut out = std::io::stdout().lock();
    let view = report::View { top: config.top, color: config.color, locator: Some(&locator), json: config.json };
    let _ = report::summary(&mut out, report::Summary::Final, &store.totals_by_volume(), &view, started.elapsed());
    let _ = out.flush();
    outcome?;
    if let Some(path) = &config.state {
        save_state(path, &store, &ledger, &locator)
            .map_err(|e| Error::fatal(format!("--state {}: the totals could not be saved: {e}", path.display())))?;
    }
    Ok(0)
}

/// `--report`: what the state file holds, as a table or one JSON document.
fn print_state_report(config: &Config, locator: &Locator) -> Result<i32, Error> {
    let Some(path) = config.state.as_deref() else {
        return Err(Error::usage("--report reads a state file: give it with --state PATH"));
    };
    let saved = state::file::load(path)?
        .ok_or_else(|| Error::fatal(format!("--state {}: no such file (nothing saved there yet)", path.display())))?;
    let mut out = std::io::stdout().lock();
    let printed = if config.json {
        state::report::print_json(&mut out, path, &saved, locator, config.top)
    } else {
        let view = report::View { top: config.top, color: config.color, locator: Some(locator), json: false };
        state::report::print(&mut out, path, &saved, &view, sys::unix_now(), &crate::period::Zone::local())
    };
    let _ = printed.and_then(|()| out.flush());
    Ok(0)
}

/// Loads `--state` into the store and the ledger, and says from when.
fn continue_from_state(path: &std::path::Path, store: &Store, ledger: &Ledger) -> Result<(), Error> {
    match state::file::load(path)? {
        Some(saved) => {
            store.restore(&saved.store);
            ledger.restore(&saved.places);
            let age = sys::unix_now().saturating_sub(saved.saved_at);
            eprintln!("continuing from --state {} (saved {age} s ago, {} remote IPs)", path.display(), saved.store.ips.len());
        }
        None => eprintln!("no --state at {} yet: starting from zero", path.display()),
    }
    Ok(())
}

/// Writes the store and the ledger to `path` (atomically).
fn save_state(path: &std::path::Path, store: &Store, ledger: &Ledger, locator: &Locator) -> std::io::Result<()> {
    // IPs evicted since the last report join their places first, or they
    // would be in neither the store's part nor the ledger's.
    ledger.absorb(store, locator);
    let saved = state::State { saved_at: sys::unix_now(), store: store.save(), places: ledger.retired_places() };
    state::file::save(path, &saved)?;
    store.saved(&saved.store);
    Ok(())
}

fn watch_signals(events: Sender<Event>) -> Result<(), Error> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2])
        .map_err(|e| Error::fatal(format!("cannot install signal handlers: {e}")))?;
    thread::spawn(move || {
        for signal in signals.forever() {
            let event = match signal {
                // A closed terminal, `systemctl reload`: there is no file to
                // reopen, so it is noted and counting goes on.
                SIGHUP => {
                    eprintln!("SIGHUP received: ignored, counting goes on (stop with SIGINT or SIGTERM)");
                    continue;
                }
                SIGUSR2 => {
                    eprintln!("SIGUSR2 received: ignored (SIGUSR1 prints the totals so far)");
                    continue;
                }
                SIGUSR1 => Event::ShowTotals,
                _ => Event::Signal,
            };
            if events.send(event).is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// `Ok(true)` once the backend attached, `Ok(false)` if a signal came first.
fn wait_attached(backend: &dyn Backend, events: &Receiver<Event>, running: &mut Running) -> Result<bool, Error> {
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(Event::Attached) => return Ok(true),
            Ok(Event::Signal) => {
                running.stop(STOP_GRACE);
                return Ok(false);
            }
            Ok(Event::Exited) => {
                running.wait(OUTPUT_CLOSED_GRACE);
                return Err(Error::fatal(backend.explain_start_failure(&running.stderr.lines())));
            }
            Ok(Event::Report | Event::ShowTotals | Event::SaveSoon) => {}
            Err(_) => {
                return Err(Error::fatal(format!(
                    "{} did not attach within {} s",
                    backend.name(),
                    ATTACH_TIMEOUT.as_secs()
                )))
            }
        }
    }
}

fn announce(config: &Config, running: &Running) {
    running.stderr.start_echo();
    let how = config.backend.method();
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
        running.name,
        config.backend_reason,
        config.sample_interval.as_secs()
    );
}

/// What the counting loop works with.
struct Ctx<'a> {
    config: &'a Config,
    backend: &'a dyn Backend,
    store: &'a Arc<Store>,
    locator: &'a Locator,
    ledger: &'a Ledger,
    events: &'a Receiver<Event>,
    events_tx: &'a Sender<Event>,
    started: Instant,
}

/// The backend is attached: mark it up, and let it do what counting needs.
fn counting_began(backend: &dyn Backend, store: &Store, running: &Running) {
    store.health().set_up(true);
    backend.counting_began(running);
}

/// First delay before restarting a backend that died; doubles up to the cap.
const RESTART_DELAY: Duration = Duration::from_secs(1);
const RESTART_DELAY_MAX: Duration = Duration::from_secs(30);
/// A backend that ran this long before dying restarts after the first delay again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// No report for this many report intervals: the backend is marked down.
const STALL_INTERVALS: u32 = 3;
/// No report for this many: it is killed and restarted like a dead one.
const HUNG_INTERVALS: u32 = 10;

fn count_until_stopped(ctx: &Ctx, running: &mut Running) -> Result<(), Error> {
    let deadline = ctx.config.duration.map(|d| ctx.started + d);
    let mut seen = Seen::default();
    let mut delay = RESTART_DELAY;
    let mut up_since = Instant::now();
    let mut watchdog = Watchdog::new(ctx.backend.report_interval());
    let mut next_save = Instant::now() + ctx.config.save_interval;
    loop {
        let mut wake = deadline.map_or(watchdog.next_check(), |d| d.min(watchdog.next_check()));
        if ctx.config.state.is_some() {
            wake = wake.min(next_save);
        }
        let event = match ctx.events.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) if deadline.is_some_and(|d| Instant::now() >= d) => break,
            Err(RecvTimeoutError::Timeout) if ctx.config.state.is_some() && Instant::now() >= next_save => {
                save_periodically(ctx);
                next_save = Instant::now() + ctx.config.save_interval;
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {
                watchdog.check(ctx, running);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => Event::Exited,
        };
        match event {
            Event::Report => {
                watchdog.heard(ctx, running);
                on_report(ctx, running, &mut seen);
            }
            Event::Signal => break,
            Event::ShowTotals => show_totals(ctx),
            Event::SaveSoon => {
                save_periodically(ctx);
                next_save = Instant::now() + ctx.config.save_interval;
            }
            Event::Attached => {}
            Event::Exited => {
                if up_since.elapsed() >= HEALTHY_RUN {
                    delay = RESTART_DELAY;
                }
                match restart(ctx, running, &mut delay, deadline) {
                    Some(new) => {
                        *running = new;
                        up_since = Instant::now();
                        watchdog = Watchdog::new(ctx.backend.report_interval());
                    }
                    None => return Ok(()), // stopped (signal or duration) while it was down
                }
            }
        }
    }
    let asked_and_came = await_final_report(ctx, running, &mut seen);
    let stop_asked = SystemTime::now();
    let stopped = running.stop(STOP_GRACE);
    // A backend not asked for its last report gives it as it ends (bpftrace
    // prints its END report before it detaches, which may be slow).
    let came_as_it_ended = stopped == Stopped::Ended || reported_since(ctx.store, stop_asked);
    if !asked_and_came.unwrap_or(came_as_it_ended) {
        warn_about_lost_last_report(running.name, stopped);
    }
    Ok(())
}

fn warn_about_lost_last_report(backend: &str, stopped: Stopped) {
    let why = match stopped {
        Stopped::Killed => format!("it had not ended {} s after SIGINT and was killed", STOP_GRACE.as_secs()),
        Stopped::Ended => format!("none within {} s of asking", FINAL_REPORT_TIMEOUT.as_secs()),
    };
    eprintln!(
        "warning: the last report of {backend} did not come ({why}); what it counted since its report \
         before is missing from these totals"
    );
}

/// The periodic save of `--state`: a failure is said and tried again at the
/// next one, and counting goes on.
fn save_periodically(ctx: &Ctx) {
    let Some(path) = &ctx.config.state else { return };
    if let Err(err) = save_state(path, ctx.store, ctx.ledger, ctx.locator) {
        eprintln!(
            "warning: could not save --state {}: {err}; trying again in {} s",
            path.display(),
            ctx.config.save_interval.as_secs()
        );
    }
}

/// Notices a backend that is alive but silent (stopped, hung, starved): no
/// report for [`STALL_INTERVALS`] intervals marks it down, for
/// [`HUNG_INTERVALS`] kills it, so that it is restarted like a dead one.
struct Watchdog {
    interval: Duration,
    last_report: Instant,
    stalled: bool,
}

impl Watchdog {
    fn new(interval: Duration) -> Watchdog {
        Watchdog { interval: interval.max(Duration::from_millis(100)), last_report: Instant::now(), stalled: false }
    }

    fn next_check(&self) -> Instant {
        let intervals = if self.stalled { HUNG_INTERVALS } else { STALL_INTERVALS };
        self.last_report + self.interval * intervals
    }

    fn heard(&mut self, ctx: &Ctx, running: &Running) {
        self.last_report = Instant::now();
        if std::mem::take(&mut self.stalled) {
            ctx.store.health().set_up(true);
            eprintln!("{} reports again", running.name);
        }
    }

    fn check(&mut self, ctx: &Ctx, running: &Running) {
        let silent = self.last_report.elapsed();
        if silent >= self.interval * HUNG_INTERVALS {
            eprintln!(
                "{} has sent no report for {:.1} s: killing it, to start a new one",
                running.name,
                silent.as_secs_f64()
            );
            // Its stdout closes, and the reader's Exited event restarts it.
            running.kill();
            self.last_report = Instant::now(); // no second kill before the Exited event
        } else if silent >= self.interval * STALL_INTERVALS && !self.stalled {
            self.stalled = true;
            ctx.store.health().set_up(false);
            eprintln!(
                "warning: {} has sent no report for {:.1} s (one is due every {:.1} s): marked down until it reports again",
                running.name,
                silent.as_secs_f64(),
                self.interval.as_secs_f64()
            );
        }
    }
}

/// The backend died: say so, mark it down, and start a new one after a
/// backoff (1 s doubling to 30 s), for as long as it takes. The totals carry
/// on: a new backend reports only what it counts itself. `None` when a
/// signal or the end of the run comes first.
fn restart(ctx: &Ctx, dead: &mut Running, delay: &mut Duration, deadline: Option<Instant>) -> Option<Running> {
    ctx.store.health().set_up(false);
    let status = dead.wait(OUTPUT_CLOSED_GRACE);
    let last = dead.stderr.lines().pop().map(|l| format!(": {l}")).unwrap_or_default();
    eprintln!("{} exited unexpectedly ({status}){last}", dead.name);
    loop {
        eprintln!("restarting {} in {} s", dead.name, delay.as_secs());
        let wake = Instant::now() + *delay;
        if deadline.is_some_and(|d| d <= wake) {
            return None;
        }
        if !wait_unless_stopped(ctx, *delay) {
            return None;
        }
        *delay = (*delay * 2).min(RESTART_DELAY_MAX);
        let mut new = match backend::start(ctx.backend, Arc::clone(ctx.store), ctx.events_tx.clone()) {
            Ok(new) => new,
            Err(err) => {
                eprintln!("{err}");
                continue;
            }
        };
        match wait_attached(ctx.backend, ctx.events, &mut new) {
            Ok(true) => {
                ctx.store.health().restarted();
                counting_began(ctx.backend, ctx.store, &new);
                new.stderr.start_echo();
                eprintln!("{} restarted", new.name);
                return Some(new);
            }
            Ok(false) => return None,
            Err(err) => eprintln!("{err}"),
        }
    }
}

/// Waits `delay`, answering SIGUSR1 meanwhile; false if a stop signal came.
fn wait_unless_stopped(ctx: &Ctx, delay: Duration) -> bool {
    let until = Instant::now() + delay;
    loop {
        match ctx.events.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(Event::Signal) => return false,
            Ok(Event::ShowTotals) => show_totals(ctx),
            Ok(_) => {}
            Err(_) => return true,
        }
    }
}

/// SIGUSR1: the totals table as at the end of a run, and counting goes on.
fn show_totals(ctx: &Ctx) {
    let mut out = std::io::stdout().lock();
    let view = report::View { top: ctx.config.top, color: ctx.config.color, locator: Some(ctx.locator), json: ctx.config.json };
    let _ = report::summary(&mut out, report::Summary::SoFar, &ctx.store.totals_by_volume(), &view, ctx.started.elapsed());
    let _ = out.flush();
}

/// Before stopping: a backend that does not print its last report when
/// stopped (iftop) is asked for it now, and it is read, so every byte up to
/// now is counted. Whether it came; `None` for a backend not asked.
fn await_final_report(ctx: &Ctx, running: &Running, seen: &mut Seen) -> Option<bool> {
    let asked = ctx.backend.request_final_report(running, ctx.store.progress().last_report)?;
    let deadline = Instant::now() + FINAL_REPORT_TIMEOUT;
    while let Ok(event) = ctx.events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Event::Report = event {
            on_report(ctx, running, seen);
            if reported_since(ctx.store, asked) {
                return Some(true);
            }
        }
    }
    Some(false)
}

/// Whether a report was applied at `time` or later.
fn reported_since(store: &Store, time: SystemTime) -> bool {
    store.progress().last_report.is_some_and(|t| t >= time)
}

/// What the warnings have already told the user.
#[derive(Default)]
struct Seen {
    unreadable_lines: u64,
    unkeyed_bytes: u64,
}

fn on_report(ctx: &Ctx, running: &Running, seen: &mut Seen) {
    // Evicted IPs into their places' totals, so they never pile up.
    ctx.ledger.absorb(ctx.store, ctx.locator);
    let progress = ctx.store.progress();
    warn_about_missed_events(ctx, running);
    warn_about_unreadable_lines(progress.parse_errors, running.name, &mut seen.unreadable_lines);
    warn_about_unkeyed_bytes(ctx.backend.why_unkeyed(), progress.unkeyed_bytes, &mut seen.unkeyed_bytes);
    let top = if ctx.config.quiet { 0 } else { ctx.config.top };
    let interval = ctx.store.take_interval(top);
    if ctx.config.quiet {
        return;
    }
    let mut out = std::io::stdout().lock();
    // A closed stdout (piped into `head`) must not stop the counting.
    let view = report::View { top: ctx.config.top, color: ctx.config.color, locator: Some(ctx.locator), json: ctx.config.json };
    let _ = report::interval_table(&mut out, &interval, &view, ctx.started.elapsed());
    let _ = out.flush();
}

fn warn_about_missed_events(ctx: &Ctx, running: &Running) {
    let by_this_child = ctx.backend.missed_events(running);
    if let Some((new, all)) = ctx.store.health().observe_missed(by_this_child) {
        eprintln!(
            "warning: the kernel skipped {new} probe runs ({all} in all) because another BPF \
             tracing program was running on the same CPU; up to that many packets were not counted"
        );
    }
}

fn warn_about_unkeyed_bytes(why: &str, unkeyed: u64, seen: &mut u64) {
    if unkeyed > *seen {
        eprintln!(
            "warning: {} bytes counted in the kernel reached no remote IP: {why}; they are in the \
             unexported totals and in ip_traffic_monitor_unattributed_bytes_total, so every total stays exact",
            unkeyed - *seen
        );
        *seen = unkeyed;
    }
}

fn warn_about_unreadable_lines(errors: u64, backend: &str, seen: &mut u64) {
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
