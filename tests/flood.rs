//! A spoofed-source flood against a monitor that exports every IP (-t 0)
//! with the table capped (--max-ips 100000): 1,000,000 IPv6 sources in
//! a few seconds. Scrapes (once a second, from the test process over its own
//! veth) must keep answering within 1 s, every byte must be counted (all
//! families equal nftables), and afterwards new sources must still get
//! series of their own: a flood must not lock the table.

mod lab;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use lab::{Lab, MANY_IPS_RANGE, MANY_IPS_RANGE_V6};

fn scrape(server: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}


#[test]
fn a_million_spoofed_sources_neither_stall_scrapes_nor_lose_bytes_nor_lock_the_table() {
    if !lab::require("a_million_spoofed_sources_neither_stall_scrapes_nor_lose_bytes_nor_lock_the_table", &["python3"]) {
        return;
    }
    let mut lab = Lab::new();
    lab.accept_any_source_in_remote();
    let [host, _] = lab.link_to_test();
    let port = lab::free_port();
    let listen = format!("0.0.0.0:{port}");
    // Timings and memory of the build people run.
    let mut monitor = lab.spawn_in_host(&[lab::shipped_binary(), "-b", "bpftrace", "-i", "vh", "-d", "0", "-q", "-t", "0", "--max-ips", "100000", "--listen", &listen]);
    monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(120));
    let server = SocketAddr::new(host, port);
    let pid = monitor.pid();

    // Scrapes once a second for as long as the flood and its aftermath last.
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut times = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let ok = scrape(server).is_some_and(|body| body.contains("ip_traffic_monitor_backend_up"));
                times.push((start.elapsed(), ok));
                thread::sleep(Duration::from_secs(1).saturating_sub(start.elapsed()));
            }
            times
        })
    };
    let started = Instant::now();
    lab.udp_from_many_sources(true, 1_000_000, 1);
    println!("1,000,000 IPv6 sources sent in {:?}", started.elapsed());
    let truth = |lab: &Lab| lab.truth()[&(MANY_IPS_RANGE_V6.to_string(), "rx")] as f64;
    let want = truth(&lab);
    let metrics = lab.scrape_until(port, Duration::from_secs(30), |m| lab::family_sum(m, "rx") >= want);
    let got = lab::family_sum(&metrics, "rx");
    let value = |name: &str| lab::metric_value(&metrics, name).unwrap_or(-1.0);
    println!(
        "flood: tracked {}, evicted series {}, bytes on no IP {}",
        value("ip_traffic_monitor_tracked_ips"),
        value("ip_traffic_monitor_evicted_series_total"),
        value("ip_traffic_monitor_unattributed_bytes_total")
    );
    // Each datagram: 40 bytes of IPv6 header, 8 of UDP, 2 of data.
    lab::assert_counted("the flood, all families", want, got, &metrics, 50.0);
    assert!(value("ip_traffic_monitor_tracked_ips") <= 100_000.0);

    // 30,000 fresh IPv4 sources, 3 packets each: they get series of their own.
    lab.udp_from_many_sources(false, 30_000, 3);
    let fresh = lab.truth()[&(MANY_IPS_RANGE.to_string(), "rx")] as f64;
    let metrics = lab.scrape_until(port, Duration::from_secs(30), |m| lab::series_sum(m, "rx", "198.18.") + lab::series_sum(m, "rx", "198.19.") >= fresh * 0.9);
    let with_series = metrics.lines().filter(|l| l.starts_with("ip_traffic_rx_bytes_total{remote_ip=\"198.1")).count();
    println!("30,000 fresh sources after the flood: {with_series} have their own series");
    assert!(with_series >= 27_000, "at least 90 % of the fresh sources have a series: {with_series}");
    let metrics = lab.scrape_until(port, Duration::from_secs(30), |m| lab::family_sum(m, "rx") >= truth(&lab) + fresh);
    lab::assert_counted("flood and fresh sources", truth(&lab) + fresh, lab::family_sum(&metrics, "rx"), &metrics, 50.0);

    stop.store(true, Ordering::Relaxed);
    let times = scraper.join().expect("scraper");
    let slowest = times.iter().map(|(t, _)| *t).max().unwrap_or_default();
    let failed = times.iter().filter(|(_, ok)| !ok).count();
    let peak = lab::status_kib(pid, "VmHWM:");
    println!("{} scrapes during it all, slowest {slowest:?}, {failed} failed; monitor peak RSS {peak} KiB", times.len());
    let slow: Vec<String> = times.iter().enumerate().filter(|(_, (t, _))| *t > Duration::from_millis(300)).map(|(i, (t, _))| format!("#{i} {t:?}")).collect();
    println!("scrapes over 300 ms: {slow:?}");
    assert_eq!(failed, 0, "every scrape answered");
    assert!(slowest < Duration::from_secs(1), "every scrape within 1 s: slowest {slowest:?}");
    assert!(peak <= 128 * 1024, "peak RSS {peak} KiB");
    drop(monitor);
}
