//! Scrapers that misbehave on purpose, against the real monitor in the lab
//! with 100,000 series (a 24 MB /metrics body, far beyond any socket
//! buffer, so a client that does not read really blocks a response): they
//! must not multiply the monitor's memory, lock out a normal scrape, or stop
//! the server when descriptors run out. The test process is the client,
//! over a veth of its own into the host namespace (`Lab::link_to_test`).

mod lab;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use lab::{BIN, Lab, Monitor};

/// Resident memory the monitor may reach with 100,000 series, whatever the clients do.
const RSS_LIMIT_KIB: u64 = 96 * 1024;
const SOURCES: u32 = 100_000;

fn connect(server: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&server, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream
}

/// A client socket with a 4 KiB receive buffer: a slow reader should hold
/// little kernel memory while it blocks the server.
fn connect_small(server: SocketAddr) -> TcpStream {
    let stream = connect(server);
    let size: libc::c_int = 4096;
    // SAFETY: setsockopt on an open socket with a pointer to a live c_int.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    stream
}

/// One full response on `stream`: (status line, body).
fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).expect("read the head"), 1, "closed mid-head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().expect("length")))
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("read the body");
    (head.lines().next().unwrap_or_default().to_string(), body)
}

/// A normal scrape on a new connection: 200 with a whole body, and how long it took.
fn scrape(server: SocketAddr) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    let mut s = connect(server);
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n").expect("send");
    let (status, body) = read_response(&mut s);
    assert_eq!(status, "HTTP/1.1 200 OK");
    (start.elapsed(), body)
}


fn metric(body: &[u8], name: &str) -> f64 {
    lab::metric_value(&String::from_utf8_lossy(body), name).unwrap_or(0.0)
}

/// The lab with 100,000 remote sources counted and exported (-t 0); the
/// monitor serves on 0.0.0.0 and the test reaches it at two addresses.
fn lab_with_many_series() -> (Lab, Monitor, [SocketAddr; 2]) {
    let mut lab = Lab::new();
    lab.accept_any_source_in_remote();
    let hosts = lab.link_to_test();
    let port = lab::free_port();
    let listen = format!("0.0.0.0:{port}");
    let mut monitor = lab.spawn_in_host(&[lab::shipped_binary(), "-b", "bpftrace", "-i", "vh", "-d", "0", "-s", "4", "-q", "-t", "0", "--listen", &listen]);
    monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(120));
    let servers = hosts.map(|ip: IpAddr| SocketAddr::new(ip, port));
    lab.udp_from_remote_sources(SOURCES);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = scrape(servers[0]);
        let tracked = metric(&body, "ip_traffic_monitor_tracked_ips");
        if tracked >= f64::from(SOURCES) {
            println!("{tracked} series, /metrics is {} bytes", body.len());
            break;
        }
        assert!(Instant::now() < deadline, "only {tracked} IPs tracked after 30 s");
        thread::sleep(Duration::from_millis(500));
    }
    (lab, monitor, servers)
}

#[test]
fn clients_that_never_read_neither_multiply_memory_nor_lock_out_a_scrape() {
    if !lab::require("clients_that_never_read_neither_multiply_memory_nor_lock_out_a_scrape", &["python3"]) {
        return;
    }
    let (_lab, monitor, [server, other]) = lab_with_many_series();
    let pid = monitor.pid();
    println!("monitor with {SOURCES} series: RSS {} KiB, peak so far {} KiB", lab::status_kib(pid, "VmRSS:"), lab::status_kib(pid, "VmHWM:"));

    // A client of the other address holds a kept-alive connection through all of it.
    let mut regular = connect(other);
    regular.write_all(b"GET /metrics HTTP/1.1\r\nHost: lab\r\n\r\n").expect("send");
    assert_eq!(read_response(&mut regular).0, "HTTP/1.1 200 OK");

    // 50 clients each pipeline 100 requests (6.8 KB) and never read, while
    // a report every 4 s makes every body stale.
    let request = b"GET /metrics HTTP/1.1\r\nHost: lab\r\n\r\n".repeat(100);
    let pipeliners: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = connect_small(server);
            s.write_all(&request).expect("pipeline");
            s
        })
        .collect();
    let mut peak = 0;
    let watch_until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < watch_until {
        peak = peak.max(lab::status_kib(pid, "VmRSS:"));
        thread::sleep(Duration::from_millis(100));
    }
    let (took, _) = scrape(server);
    println!("50 non-reading pipelining clients: peak RSS {peak} KiB (VmHWM {} KiB); a scrape took {took:?}", lab::status_kib(pid, "VmHWM:"));
    assert!(took < Duration::from_secs(5), "scrape took {took:?}");

    // 300 slow readers (1 KB every 20 s) on top, all from one address.
    let mut slow: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = connect_small(server);
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: lab\r\n\r\n").expect("send");
            let _ = s.read(&mut [0u8; 1024]);
            s
        })
        .collect();
    for round in 0..3 {
        for (name, at) in [("same address", server), ("other address", other)] {
            let (took, body) = scrape(at);
            println!("round {round}: scrape from the {name} beside 300 slow readers: {took:?}, {} bytes", body.len());
            assert!(took < Duration::from_secs(5), "{name}: scrape took {took:?}");
            assert!(metric(&body, "ip_traffic_monitor_tracked_ips") >= f64::from(SOURCES));
        }
        for s in slow.iter_mut().take(10) {
            let _ = s.read(&mut [0u8; 1024]);
        }
    }
    // The other address's kept-alive connection was never given away.
    regular.write_all(b"GET /metrics HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n").expect("send again");
    assert_eq!(read_response(&mut regular).0, "HTTP/1.1 200 OK", "a flood from one address evicts only its own");

    let hwm = lab::status_kib(pid, "VmHWM:");
    peak = peak.max(lab::status_kib(pid, "VmRSS:"));
    println!("peak RSS {peak} KiB, VmHWM {hwm} KiB (limit {RSS_LIMIT_KIB} KiB)");
    assert!(hwm < RSS_LIMIT_KIB, "the monitor's resident memory peaked at {hwm} KiB");
    drop((pipeliners, slow));
}

#[test]
fn running_out_of_descriptors_never_stops_the_server() {
    if !lab::require("running_out_of_descriptors_never_stops_the_server", &["prlimit"]) {
        return;
    }
    let mut lab = Lab::new();
    let [server, _] = lab.link_to_test();
    let port = lab::free_port();
    let listen = format!("0.0.0.0:{port}");
    let mut monitor = lab.spawn_in_host(&[BIN, "-b", "bpftrace", "-i", "vh", "-d", "0", "-q", "--listen", &listen]);
    monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(120));
    let server = SocketAddr::new(server, port);
    let pid = monitor.pid();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("fds").count();
    let limit = open + 8;
    let status = Command::new("prlimit").args(["--pid", &pid.to_string(), &format!("--nofile={limit}:{limit}")]).status();
    assert!(status.expect("prlimit").success());
    // 40 idle connections: far more than the descriptors left.
    let idle: Vec<TcpStream> = (0..40).map(|_| connect(server)).collect();
    thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        let (took, _) = scrape(server);
        println!("scrape with {open} + 8 descriptors allowed and 40 idle connections: {took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
    drop(idle);
    let (took, _) = scrape(server);
    assert!(took < Duration::from_secs(5), "after the idle ones left: {took:?}");
}
