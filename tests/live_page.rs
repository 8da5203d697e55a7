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
    assert!(doc["history"].as_array().is_some_and(|h| !h.is_empty()), "one point per report");
    assert!(doc["interval_seconds"].as_f64() == Some(1.0));
    drop(monitor);
}
