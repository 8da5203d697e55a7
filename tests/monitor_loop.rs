//! The monitor's main loop with a fake backend: any type behind the
//! `Backend` interface is started, read, marked up, restarted when it dies
//! and counted on, without the monitor knowing what it is. The fake's child
//! is a small `sh` script printing reports in the bpftrace script's format,
//! so no kernel tracing is involved; the monitor still needs root.

mod lab;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ip_traffic_monitor_cli::backend::bpftrace::BpftraceParser;
use ip_traffic_monitor_cli::backend::{Backend, LineParser};
use ip_traffic_monitor_cli::cli::Config;
use ip_traffic_monitor_cli::error::Error;
use ip_traffic_monitor_cli::filter::AddressFilter;
use ip_traffic_monitor_cli::location::Lang;
use ip_traffic_monitor_cli::monitor;

/// Prints one report of 5 bytes sent to 198.51.100.7, then exits: every
/// child the monitor starts adds 5 bytes and then dies.
#[derive(Debug)]
struct OneReportThenExit;

impl Backend for OneReportThenExit {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn probe(&self) -> Result<(), Error> {
        Ok(())
    }
    fn method(&self) -> String {
        "one report, then exit".into()
    }
    fn command(&self) -> Result<Command, Error> {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "printf '@attached\\n@tx[198.51.100.7]: 5\\n@proc[198.51.100.7]: (7, fake)\\n@end\\n'"]);
        cmd.stdin(Stdio::null());
        Ok(cmd)
    }
    fn parser(&self) -> Box<dyn LineParser> {
        Box::new(BpftraceParser::new(AddressFilter::default()))
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
    if !lab::is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        eprintln!("SKIPPED any_backend_is_supervised_restarted_and_counted_on: the monitor needs root");
        return;
    }
    let listen: SocketAddr = ([127, 0, 0, 1], lab::free_port()).into();
    let config = config(Arc::new(OneReportThenExit), listen, 6);
    let run = std::thread::spawn(move || monitor::run(&config).map_err(|e| e.to_string()));

    // Restarts come after 1 s, then 2 s of backoff: by then three children
    // have each added their 5 bytes, and the totals carried on.
    let series = lab::byte_series("tx", "198.51.100.7");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut metrics = String::new();
    while Instant::now() < deadline {
        metrics = scrape(listen).unwrap_or_default();
        let restarts = lab::metric_value(&metrics, "ip_traffic_monitor_backend_restarts_total").unwrap_or(0.0);
        // A restart is counted when the new child attaches, before its report is read.
        if restarts >= 2.0 && lab::metric_value(&metrics, &series).is_some_and(|tx| tx >= 5.0 * (restarts + 1.0)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
