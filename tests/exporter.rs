//! The Prometheus exporter end to end: a real Prometheus scrapes the binary
//! in the lab and agrees with nftables; promtool accepts the exposition; the
//! export threshold; and the hand-written HTTP server under normal, odd and
//! hostile clients.

mod lab;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use lab::{BIN, Lab, byte_series, metric_value};

const PORT: &str = "9464";

#[test]
fn prometheus_scrapes_what_nftables_counted() {
    if !lab::require("prometheus_scrapes_what_nftables_counted", &["prometheus", "promtool"]) {
        return;
    }
    let mut lab = Lab::new();
    lab.start_iperf_server();
    let mut monitor = lab.spawn_in_host(&[BIN, "-b", "bpftrace", "-i", "vh", "-d", "0", "-s", "1", "-q", "-t", "0", "-p", PORT]);
    monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(120));
    lab.start_prometheus(&format!("127.0.0.1:{PORT}"));

    lab.iperf(&["-c", "198.51.100.7", "-n", "8M"]);
    lab.iperf(&["-6", "-c", "2001:db8::2", "-n", "8M", "-R"]);
    // A process whose name needs escaping in a label value.
    let odd = std::env::temp_dir().join("q\"x\\y中");
    std::fs::copy("/usr/bin/socat", &odd).expect("copy socat");
    let odd_path = odd.to_string_lossy().into_owned();
    lab.host_shell(&format!(
        "'{odd_path}' -u -b 1200 OPEN:/dev/zero,readbytes=1200000 UDP-SENDTO:203.0.113.9:9,bind=192.0.2.1"
    ));
    let _ = std::fs::remove_file(&odd);
    let exposition = lab.scrape_when_counted(9464, &["198.51.100.7", "2001:db8::2", "203.0.113.9"]);
    lab.wait_until_prometheus_has(&exposition);
    let check = lab::promtool_check(&exposition);
    assert!(check.0, "promtool check metrics: {}", check.1);
    // Shown as `q"x\\y中` (a backslash doubled), then escaped for the label.
    assert!(exposition.contains(r#"process="q\"x\\\\y中""#), "escaped process label:\n{exposition}");

    let truth = lab.truth();
    println!("{:<14} {:<3} {:>10} {:>10}", "remote", "dir", "nftables", "prometheus");
    for ip in ["198.51.100.7", "2001:db8::2", "203.0.113.9"] {
        for dir in ["tx", "rx"] {
            let want = truth[&(ip.to_string(), dir)] as f64;
            let got = lab.promql(&format!("ip_traffic_{dir}_bytes_total{{remote_ip=\"{ip}\"}}"));
            let got = got.first().map_or(0.0, |(_, v)| *v);
            println!("{ip:<14} {dir:<3} {want:>10} {got:>10}");
            if want > 0.0 {
                assert!((got - want).abs() <= 0.001 * want, "{ip} {dir}: Prometheus {got}, nftables {want}");
            }
        }
    }
    let up = lab.promql("up{job=\"ip_traffic\"}");
    assert_eq!(up.first().map(|(_, v)| *v), Some(1.0), "{up:?}");
    let backend_up = lab.promql("ip_traffic_monitor_backend_up");
    assert_eq!(backend_up.first().map(|(_, v)| *v), Some(1.0));
    drop(monitor);
}

#[test]
fn threshold_hides_small_ips_until_they_pass_it_and_never_again() {
    if !lab::require_lab("threshold_hides_small_ips_until_they_pass_it_and_never_again") {
        return;
    }
    let mut lab = Lab::new();
    lab.start_iperf_server();
    let threshold = 5_000_000u64;
    let mut monitor = lab.spawn_in_host(&[BIN, "-b", "bpftrace", "-i", "vh", "-d", "0", "-s", "1", "-q", "-t", &threshold.to_string(), "-p", PORT]);
    monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(120));
    let ip = "198.51.100.7";
    let tx_series = byte_series("tx", ip);

    lab.iperf(&["-c", ip, "-n", "1M"]);
    let before = lab.scrape_when_counted(9464, &[ip]);
    let sent = lab.truth()[&(ip.to_string(), "tx")];
    assert!(sent < threshold, "{sent}");
    assert_eq!(metric_value(&before, &tx_series), None, "below -t: no series");
    assert_eq!(metric_value(&before, "ip_traffic_unexported_tx_bytes_total"), Some(sent as f64), "its bytes are in the unexported family");

    lab.iperf(&["-c", ip, "-n", "8M"]);
    let after = lab.scrape_when_counted(9464, &[ip]);
    let series = metric_value(&after, &tx_series).expect("past -t: a series");
    let unexported = metric_value(&after, "ip_traffic_unexported_tx_bytes_total").expect("unexported");
    let total = lab.truth()[&(ip.to_string(), "tx")] as f64;
    println!("nftables {total}, series {series} + unexported {unexported}");
    assert_eq!(series + unexported, total, "all families together equal what was counted");
    assert!(unexported >= sent as f64, "counters never go down");

    // Quiet from now on: the series stays.
    for _ in 0..3 {
        thread::sleep(Duration::from_secs(1));
        let later = lab.http_get_in_host(9464, "/metrics");
        assert_eq!(metric_value(&later, &tx_series), Some(series), "the series never disappears");
    }
}

/// The monitor in the root network namespace, serving on loopback, with
/// tracefs mounted in a private mount namespace.
struct Served {
    child: Child,
    port: u16,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Served {
    fn start() -> Served {
        let serial = lab::serial();
        let port = lab::free_port();
        let mut child = Command::new("unshare")
            .args(["-m", "sh", "-c", "mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null; exec \"$0\" \"$@\""])
            .args([BIN, "-b", "bpftrace", "-d", "0", "-q", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the monitor");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let ready = lines.by_ref().map_while(Result::ok).any(|l| l.contains("counting with"));
        assert!(ready, "the monitor did not start");
        thread::spawn(move || lines.for_each(drop));
        Served { child, port, _serial: serial }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        stream
    }

    /// Open descriptors and threads once neither has changed for 300 ms
    /// (the monitor finishes starting its helper threads after it says
    /// "counting with").
    fn settled(&self) -> (usize, usize) {
        let now = || (self.open_fds(), threads_of(self.child.id()));
        let mut last = now();
        let mut stable_since = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(10);
        while stable_since.elapsed() < Duration::from_millis(300) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
            let current = now();
            if current != last {
                (last, stable_since) = (current, Instant::now());
            }
        }
        last
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).expect("fds").count()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // SIGTERM lets the monitor stop its bpftrace child and reap it.
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads one response: (status line, headers in lower case, body).
fn read_response(stream: &mut TcpStream, head_request: bool) -> (String, Vec<(String, String)>, Vec<u8>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).expect("read"), 1, "connection closed mid-head: {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let text = String::from_utf8(head).expect("ASCII head");
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    let length: usize = headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().expect("length"));
    let mut body = vec![0u8; if head_request { 0 } else { length }];
    stream.read_exact(&mut body).expect("body");
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn scrape_within(served: &Served, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut s = served.connect();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").expect("write");
    let (status, _, body) = read_response(&mut s, false);
    let took = start.elapsed();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(String::from_utf8_lossy(&body).contains("ip_traffic_monitor_build_info"));
    assert!(took < limit, "scrape took {took:?}");
    took
}

#[test]
fn http_server_handles_normal_odd_and_hostile_clients() {
    if !lab::require_lab("http_server_handles_normal_odd_and_hostile_clients") {
        return;
    }
    let served = Served::start();
    let (fds_before, _) = served.settled();

    // Keep-alive: two requests, one connection; HEAD has headers, no body.
    let mut s = served.connect();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").expect("write");
    let (status, headers, body) = read_response(&mut s, false);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(header(&headers, "content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    assert_eq!(header(&headers, "connection"), Some("keep-alive"));
    assert!(String::from_utf8_lossy(&body).contains("# TYPE ip_traffic_tx_bytes_total counter"));
    s.write_all(b"HEAD /metrics HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").expect("write");
    let (status, headers, _) = read_response(&mut s, true);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(header(&headers, "content-length").unwrap_or("0").parse::<usize>().unwrap() > 1000);
    let (status, headers, body) = read_response(&mut s, false);
    assert_eq!(status, "HTTP/1.1 200 OK", "pipelined request after HEAD: no stray body in between");
    assert!(String::from_utf8_lossy(&body).contains("href=\"/metrics\""));
    assert_eq!(header(&headers, "connection"), Some("close"));
    assert_eq!(s.read(&mut [0u8; 16]).expect("eof"), 0, "closed after Connection: close");

    // Errors.
    let huge = format!("GET /metrics HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "a".repeat(9000));
    for (request, want) in [
        ("GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", "HTTP/1.1 404 Not Found"),
        ("POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"),
        ("GARBAGE\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        ("GET /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        ("GET /metrics HTTP/2.0\r\nHost: t\r\n\r\n", "HTTP/1.1 505 HTTP Version Not Supported"),
        (huge.as_str(), "HTTP/1.1 431 Request Header Fields Too Large"),
    ] {
        let mut s = served.connect();
        s.write_all(request.as_bytes()).expect("write");
        let (status, headers, _) = read_response(&mut s, false);
        assert_eq!(status, want, "{:?}", &request[..request.len().min(40)]);
        if want.contains("405") {
            assert_eq!(header(&headers, "allow"), Some("GET, HEAD"));
        }
    }

    // A request with bare LF line ends is refused at once, not after the 10 s head timeout.
    let started = Instant::now();
    let mut s = served.connect();
    s.write_all(b"GET /metrics HTTP/1.1\nHost: t\n\n").expect("write");
    assert_eq!(read_response(&mut s, false).0, "HTTP/1.1 400 Bad Request");
    assert!(started.elapsed() < Duration::from_secs(1), "bare LF answered in {:?}", started.elapsed());
    // `close` wins over `keep-alive`, whatever their order.
    let mut s = served.connect();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close, keep-alive\r\n\r\n").expect("write");
    let (status, headers, _) = read_response(&mut s, false);
    assert_eq!((status.as_str(), header(&headers, "connection")), ("HTTP/1.1 200 OK", Some("close")));
    assert_eq!(s.read(&mut [0u8; 16]).expect("eof"), 0, "closed");

    // 200 idle connections, and a client sending one byte per second.
    let idle: Vec<TcpStream> = (0..200).map(|_| served.connect()).collect();
    let mut slow = served.connect();
    let slow_writer = thread::spawn(move || {
        for &b in b"GET /metrics HTTP/1.1\r\n" {
            if slow.write_all(&[b]).is_err() {
                break;
            }
            thread::sleep(Duration::from_secs(1));
        }
        slow
    });
    thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        let took = scrape_within(&served, Duration::from_secs(1));
        println!("scrape beside 200 idle connections and a slow client: {took:?}");
        thread::sleep(Duration::from_millis(500));
    }
    // Past the cap, the longest-idle connections make room.
    let more: Vec<TcpStream> = (0..100).map(|_| served.connect()).collect();
    scrape_within(&served, Duration::from_secs(1));
    drop(idle);
    drop(more);
    drop(slow_writer.join().expect("slow client"));

    // Nothing leaks: descriptors go back to where they were.
    let deadline = Instant::now() + Duration::from_secs(15);
    while served.open_fds() > fds_before && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    assert!(served.open_fds() <= fds_before, "fds: {} now, {fds_before} before", served.open_fds());
}

#[test]
fn a_port_in_use_is_one_clear_line() {
    if !lab::require_lab("a_port_in_use_is_one_clear_line") {
        return;
    }
    let served = Served::start();
    let out = Command::new(BIN).args(["-d", "1", "--listen", &format!("127.0.0.1:{}", served.port)]).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot serve /metrics on 127.0.0.1:") && stderr.contains("in use"), "{stderr}");
}

#[test]
fn promtool_accepts_labels_with_quotes_backslashes_newlines_and_chinese() {
    use ip_traffic_monitor_cli::exporter::metrics::render;
    use ip_traffic_monitor_cli::store::{Comm, Owner, Record, Store};
    if !lab::require_tools("promtool_accepts_labels_with_quotes_backslashes_newlines_and_chinese", &["promtool"]) {
        return;
    }
    let store = Store::new(0, 1_000_000);
    let names: [&[u8]; 4] = [b"a\"b", b"back\\slash", b"new\nline", "中国电信".as_bytes()];
    let records: Vec<Record> = names
        .iter()
        .enumerate()
        .flat_map(|(i, name)| {
            let ip = format!("203.0.113.{}", i + 1).parse().unwrap();
            [Record::Tx(ip, 10), Record::Owner(ip, Box::new(Owner { pid: i as u32, comm: Comm::new(name) }))]
        })
        .collect();
    store.apply_report(&records, 0);
    let text = render(&store, "bpftrace", &ip_traffic_monitor_cli::location::Locator::from_sources(ip_traffic_monitor_cli::location::Sources::none(), Default::default()), &Default::default());
    // Names are shown escaped (`back\\slash`, `new\x0aline`), then escaped for the format.
    for escaped in [r#"process="a\"b""#, r#"process="back\\\\slash""#, r#"process="new\\x0aline""#, r#"process="中国电信""#] {
        assert!(text.contains(escaped), "{escaped} in\n{text}");
    }
    let (ok, said) = lab::promtool_check(&text);
    assert!(ok, "promtool check metrics: {said}");
}

fn threads_of(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

#[test]
fn hostile_clients_never_stall_a_scrape_and_leave_nothing_behind() {
    if !lab::require_lab("hostile_clients_never_stall_a_scrape_and_leave_nothing_behind") {
        return;
    }
    let served = Served::start();
    let pid = served.child.id();
    let (fds_before, threads_before) = served.settled();

    // 500 connections, each sending one byte per second.
    let slow: Vec<TcpStream> = (0..500).map(|_| served.connect()).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dribbler = {
        let stop = std::sync::Arc::clone(&stop);
        thread::spawn(move || {
            let mut slow = slow;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for s in &mut slow {
                    let _ = s.write_all(b"G");
                }
                thread::sleep(Duration::from_secs(1));
            }
        })
    };
    // A 1 MB request head, random bytes, pipelined requests, a half-closed socket.
    let mut big = served.connect();
    let head = format!("GET /metrics HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20));
    let _ = big.write_all(head.as_bytes()); // the server may close after 8 KiB
    let mut noise = served.connect();
    let mut x: u32 = 12345;
    let junk: Vec<u8> = (0..65536).map(|_| { x = x.wrapping_mul(1103515245).wrapping_add(12345); (x >> 16) as u8 }).collect();
    let _ = noise.write_all(&junk);
    let mut pipelined = served.connect();
    pipelined.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(50).as_slice()).expect("pipeline");
    for _ in 0..50 {
        let (status, _, _) = read_response(&mut pipelined, false);
        assert_eq!(status, "HTTP/1.1 200 OK");
    }
    let mut half = served.connect();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").expect("write");
    half.shutdown(std::net::Shutdown::Write).expect("half-close");
    let (status, _, _) = read_response(&mut half, false);
    assert_eq!(status, "HTTP/1.1 200 OK", "a half-closed client still gets its answer");

    for _ in 0..5 {
        let took = scrape_within(&served, Duration::from_secs(1));
        println!("scrape during the abuse: {took:?}");
        thread::sleep(Duration::from_millis(700));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    dribbler.join().expect("dribbler");
    drop((big, noise, pipelined, half));

    let deadline = Instant::now() + Duration::from_secs(20);
    while (served.open_fds() > fds_before || threads_of(pid) > threads_before) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    println!("fds {} (before {fds_before}), threads {} (before {threads_before})", served.open_fds(), threads_of(pid));
    assert!(served.open_fds() <= fds_before, "fds: {} vs {fds_before}", served.open_fds());
    assert!(threads_of(pid) <= threads_before, "threads: {} vs {threads_before}", threads_of(pid));
}
