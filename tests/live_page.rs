//! The live page at `/` and its document at `/api/live`, served by the real
//! binary in the lab: the headers that keep outside text from ever running
//! (Content-Security-Policy, nosniff), the page's own files and nothing
//! from elsewhere, and a document whose remote IPs and byte totals equal
//! /metrics and the nftables truth. (Driving the page in a browser is not
//! here yet.)

mod lab;

use std::time::Duration;

use lab::{BIN, Lab};
use serde_json::Value;

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
}

#[test]
fn the_live_page_and_its_document_show_what_was_counted() {
    if !lab::require_lab("the_live_page_and_its_document_show_what_was_counted") {
        return;
    }
    let mut lab = Lab::new();
    let port = lab::free_port();
    let mut monitor = lab.spawn_in_host(&[BIN, "-b", "nftables", "-i", "vh", "-d", "0", "-s", "1", "-q", "-t", "0", "-p", &port.to_string()]);
    monitor.wait_for_stderr("counting with nftables", Duration::from_secs(20));
    lab.udp_flow(true, "198.51.100.7", 600_000);
    lab.udp_flow(true, "203.0.113.9", 120_000);
    let metrics = lab.scrape_when_series_hold(port, &[("tx", "198.51.100.7", 614_000.0), ("tx", "203.0.113.9", 122_800.0)]);

    // The page, its script and style: the page's own, with the headers.
    for (path, kind) in [("/", "text/html"), ("/app.js", "text/javascript"), ("/app.css", "text/css")] {
        let (head, body) = lab.http_response_in_host(port, path);
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
        assert!(header(&head, "content-type").is_some_and(|t| t.starts_with(kind)), "{path}: {head}");
        let csp = header(&head, "content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"), "{path}");
        // Nothing is fetched from another host (the SVG namespace is a name, not a request).
        let without_namespace = body.replace("http://www.w3.org/2000/svg", "");
        assert!(!without_namespace.contains("http://") && !without_namespace.contains("https://") && !without_namespace.contains("//cdn"), "{path}");
        assert!(!body.contains("innerHTML") && !body.contains("<script>"), "{path}: no markup built from text, no inline script");
    }

    // The document: every byte and each IP as /metrics says.
    let doc: Value = serde_json::from_str(&lab.http_get_in_host(port, "/api/live?top=5")).expect("JSON");
    let top = doc["top"].as_array().expect("top");
    assert!(top.len() <= 20, "top=5 is served from the list of 20 at most");
    for ip in ["198.51.100.7", "203.0.113.9"] {
        let row = top.iter().find(|r| r["remote_ip"] == ip).unwrap_or_else(|| panic!("{ip} in {doc}"));
        let series = lab::metric_value(&metrics, &lab::byte_series("tx", ip)).expect("series");
        let listed = row["tx_bytes"].as_f64().expect("tx_bytes");
        assert!(listed >= series, "{ip}: the document ({listed}) is as new as the scrape ({series}) or newer");
        assert_eq!(listed, lab.truth()[&(ip.to_string(), "tx")] as f64, "{ip}: equal to nftables");
    }
    let every_tx = lab::family_sum(&metrics, "tx");
    assert!(doc["tx_bytes"].as_f64().expect("tx_bytes") >= every_tx, "{doc}");
    assert_eq!(doc["backend"], "nftables");
    assert_eq!(doc["up"], true);
    let history = doc["history"].as_array().expect("history");
    let sent: f64 = history.iter().map(|p| p[1].as_f64().unwrap_or(0.0)).sum();
    println!("{} history points, {sent} TX bytes in them", history.len());
    assert!(sent >= 614_000.0 + 122_800.0, "the reports' bytes are in the history: {sent}");
    assert!(doc["interval_seconds"].as_f64() == Some(1.0));
    drop(monitor);
}

/// Chromium's DOM of the page after `budget` of virtual time: the page's
/// script has fetched, rendered and polled by then.
fn rendered(lab: &Lab, port: u16, view: &str, net_log: Option<&str>) -> String {
    let url = format!("http://127.0.0.1:{port}/{view}");
    let mut args = vec![
        "ip", "netns", "exec", &lab.host, "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-extensions", "--virtual-time-budget=6000", "--dump-dom",
        // The browser's own traffic (updates, sync, translation, spelling), so
        // that what the net log holds is the page's.
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps",
        "--no-default-browser-check", "--disable-client-side-phishing-detection", "--disable-domain-reliability",
        "--disable-features=Translate,AutofillServerCommunication,OptimizationHints,MediaRouter,SpellCheck,CertificateTransparencyComponentUpdater,NetworkTimeServiceQuerying",
    ];
    let log_arg = net_log.map(|path| format!("--log-net-log={path}"));
    if let Some(arg) = &log_arg {
        args.push(arg);
    }
    args.push(&url);
    let out = std::process::Command::new(args[0]).args(&args[1..]).output().expect("chromium");
    assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rows Chromium rendered: (IP, process cell's text, exact TX bytes).
fn rows(dom: &str) -> Vec<(String, String, u64)> {
    dom.split("<tr data-ip=\"")
        .skip(1)
        .map(|row| {
            let ip = row[..row.find('"').expect("ip")].to_string();
            let cells: Vec<&str> = row.split("<td").skip(1).collect();
            let text = |cell: &str| cell[cell.find('>').expect(">") + 1..cell.find("</td>").expect("</td>")].to_string();
            let exact = cells[6].split("title=\"").nth(1).and_then(|t| t.split(' ').next()).and_then(|n| n.parse().ok()).expect("exact TX");
            (ip, text(cells[3]), exact)
        })
        .collect()
}

/// The page in a real headless Chromium: it lists the lab's remote IPs
/// with the TX totals of /metrics, sorts and filters by the view in its
/// URL (what clicking a header or typing does), shows a hostile process
/// name as text, and fetches nothing from any other host.
#[test]
fn the_page_in_a_browser_lists_sorts_filters_and_shows_names_as_text() {
    if !lab::require("the_page_in_a_browser_lists_sorts_filters_and_shows_names_as_text", &["chromium"]) {
        return;
    }
    let mut lab = Lab::new();
    let port = lab::free_port();
    // bpftrace names the process at the socket, even one that lives a moment.
    let mut monitor = lab.spawn_in_host(&[BIN, "-b", "bpftrace", "-i", "vh", "-d", "0", "-s", "1", "-q", "-t", "0", "-p", &port.to_string()]);
    monitor.wait_for_stderr("counting with bpftrace", Duration::from_secs(120));
    lab.udp_flow(true, "198.51.100.7", 600_000);
    lab.udp_flow(true, "203.0.113.9", 120_000);
    let hostile = b"<img src=x>";
    lab.udp_as_nobody_named(hostile, &["198.51.100.8".to_string()]);
    let metrics = lab.scrape_when_series_hold(port, &[("tx", "198.51.100.7", 614_000.0), ("tx", "203.0.113.9", 122_800.0), ("tx", "198.51.100.8", 29.0)]);
    let dir = lab.temp_dir("chromium");
    let net_log = dir.join("net.json").to_string_lossy().into_owned();

    let dom = rendered(&lab, port, "#sort=tx_bytes", Some(&net_log));
    let listed = rows(&dom);
    println!("{listed:?}");
    // The chart drew the flows: a TX line that leaves the floor.
    let tx_line = dom.split("<polyline class=\"tx\" points=\"").nth(1).and_then(|p| p.split('"').next()).expect("the TX line");
    assert!(tx_line.split(' ').any(|point| point.split(',').nth(1).is_some_and(|y| y.parse::<f64>().is_ok_and(|y| y < 100.0))), "{tx_line}");
    for ip in ["198.51.100.7", "203.0.113.9", "198.51.100.8"] {
        let series = lab::metric_value(&metrics, &lab::byte_series("tx", ip)).expect("series") as u64;
        let (_, _, tx) = listed.iter().find(|(i, ..)| i == ip).unwrap_or_else(|| panic!("{ip} not rendered: {dom}"));
        assert_eq!(*tx, series, "{ip}: the page's TX equals /metrics");
    }
    let by_tx: Vec<u64> = listed.iter().map(|r| r.2).collect();
    assert!(by_tx.windows(2).all(|w| w[0] >= w[1]), "sorted by TX, largest first: {by_tx:?}");
    // The hostile name is text: escaped in the serialized DOM, no element made of it.
    let hostile_row = listed.iter().find(|(ip, ..)| ip == "198.51.100.8").expect("the hostile process's peer");
    assert_eq!(hostile_row.1, "&lt;img src=x&gt;", "shown as text");
    assert!(!dom.contains("<img"), "no element from a name: {dom}");
    assert!(dom.contains("<title>") && !dom.contains("<title>ip_traffic_monitor_cli</title>"), "the title names the host");

    // Sorting by address, ascending; filtering by text.
    let by_ip: Vec<String> = rows(&rendered(&lab, port, "#sort=remote_ip&asc=1", None)).into_iter().map(|r| r.0).collect();
    let mut sorted = by_ip.clone();
    sorted.sort();
    assert_eq!(by_ip, sorted, "sorted by IP text, ascending");
    let filtered: Vec<String> = rows(&rendered(&lab, port, "#q=203.0.113", None)).into_iter().map(|r| r.0).collect();
    assert_eq!(filtered, ["203.0.113.9"], "filtered by text");

    // A stalled backend (its child stopped): the page says so, in words.
    let child = monitor.backend_pid();
    lab::signal("-STOP", child);
    std::thread::sleep(Duration::from_secs(5)); // past the watchdog's 3 intervals of 1 s
    let stalled = rendered(&lab, port, "", None);
    lab::signal("-CONT", child);
    let status = stalled.split("id=\"status\"").nth(1).map(|s| &s[..s.find("</p>").unwrap_or(0)]).unwrap_or_default();
    assert!(!status.contains("hidden") && (status.contains("DOWN") || status.contains("late")), "{status}");

    // Every request the page made went to the monitor: in the net log, the
    // requests the page's origin initiated (its script, style, documents);
    // the browser's own (updates and the like) have no such initiator.
    let log: Value = serde_json::from_str(&std::fs::read_to_string(&net_log).expect("net log")).expect("net log JSON");
    let origin = format!("http://127.0.0.1:{port}");
    let mut by_page = Vec::new();
    for event in log["events"].as_array().expect("events") {
        let (Some(url), Some(initiator)) = (event["params"]["url"].as_str(), event["params"]["initiator"].as_str()) else { continue };
        if initiator == origin {
            by_page.push(url.to_string());
        }
    }
    println!("requests by the page: {by_page:?}");
    // A picture of it (docs/live-page.png was made so: ITM_SCREENSHOT=docs/live-page.png).
    let picture = dir.join("live-page.png");
    let shot = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.host, "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--window-size=1100,900", "--virtual-time-budget=6000"])
        .arg(format!("--screenshot={}", picture.display()))
        .arg(format!("{origin}/#sort=tx_bytes"))
        .output()
        .expect("chromium");
    assert!(shot.status.success() && std::fs::metadata(&picture).is_ok_and(|m| m.len() > 10_000), "a screenshot");
    if let Some(keep) = std::env::var_os("ITM_SCREENSHOT") {
        std::fs::copy(&picture, keep).expect("keep the screenshot");
    }
    assert!(by_page.iter().any(|u| u.ends_with("/app.js")) && by_page.iter().any(|u| u.contains("/api/live")), "{by_page:?}");
    let elsewhere: Vec<&String> = by_page.iter().filter(|u| !u.starts_with(&format!("{origin}/"))).collect();
    assert!(elsewhere.is_empty(), "the page asked elsewhere: {elsewhere:?}");
    drop(monitor);
}
