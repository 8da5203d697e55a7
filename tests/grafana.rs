//! grafana/grafana.json: its structure (ids, grid positions, data sources,
//! variables), and every query in it — panels and variables — plus every
//! PromQL example of README, evaluated by a real Prometheus that scraped the
//! monitor in the lab, with the dashboard's variables substituted. The
//! increase and total panels must equal the lab's nftables counters.

mod lab;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ip_traffic_monitor_cli::location::testing::{QqwryLayout, qqwry_dat};
use lab::{BIN, Lab, TempFile};
use serde_json::Value;

fn dashboard() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/grafana.json")).expect("read");
    serde_json::from_str(&text).expect("grafana.json is JSON")
}

/// Every panel, rows' nested panels included.
fn all_panels(d: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p.clone());
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested.iter().cloned());
        }
    }
    out
}

/// (panel title, expr) of every query in the dashboard.
fn panel_queries(d: &Value) -> Vec<(String, String)> {
    all_panels(d)
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            p["targets"].as_array().cloned().unwrap_or_default().into_iter().map(move |t| {
                (title.clone(), t["expr"].as_str().expect("expr").to_string())
            })
        })
        .collect()
}

fn variables_used(expr: &str) -> Vec<String> {
    let mut used = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let rest = &expr[i + 1..];
            let name: String = if let Some(inner) = rest.strip_prefix('{') {
                inner.chars().take_while(|c| *c != '}' && *c != ':').collect()
            } else {
                rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
            };
            used.push(name);
        }
        i += 1;
    }
    used
}

#[test]
fn the_dashboard_is_well_formed() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().unwrap_or(0) >= 36, "current schema");
    let panels = all_panels(&d);
    let ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().expect("id")).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len(), "unique panel ids");
    let defined: HashSet<String> =
        d["templating"]["list"].as_array().expect("variables").iter().map(|v| v["name"].as_str().unwrap().to_string()).collect();
    for name in ["datasource", "instance", "country", "city", "top_k"] {
        assert!(defined.contains(name), "variable {name}");
    }
    let builtins = ["__range", "__rate_interval", "__from", "__interval"];
    for p in &panels {
        let title = p["title"].as_str().unwrap_or_default();
        for (key, field) in [("x", "gridPos"), ("y", "gridPos"), ("w", "gridPos"), ("h", "gridPos")] {
            assert!(p[field][key].is_u64(), "{title}: gridPos.{key}");
        }
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}: datasource from the variable");
            for t in p["targets"].as_array().expect("targets") {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}: target datasource");
                for used in variables_used(t["expr"].as_str().unwrap()) {
                    assert!(defined.contains(&used) || builtins.contains(&used.as_str()), "{title}: ${used} is not defined");
                }
            }
        }
    }
    let text = serde_json::to_string(&d).unwrap();
    assert!(!text.contains("\"uid\":\"P"), "no hard-coded datasource uid");
    let top_k: Vec<&str> = d["templating"]["list"].as_array().unwrap().iter().find(|v| v["name"] == "top_k").unwrap()["query"]
        .as_str()
        .unwrap()
        .split(',')
        .collect();
    assert_eq!(top_k, ["10", "20", "50", "100", "200", "500", "1000"]);
    for title in ["Upload Traffic Increase", "Download Traffic Increase (by country)", "Upload Traffic Increase (by city)",
                  "Download Traffic Increase (by ip)", "Upload Total Traffic", "Download Total Traffic (by ip)",
                  "Upload Rate (by ip)", "Download Traffic Increase (by ISP)", "Upload Traffic Increase (by process)",
                  "Traffic Increase (by instance)", "Backend up", "Scrape duration"] {
        assert!(panels.iter().any(|p| p["title"] == title), "panel {title}");
    }
}

/// The ```promql blocks of README, one query per non-comment line.
fn readme_queries() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let mut queries = Vec::new();
    let mut inside = false;
    for line in readme.lines() {
        match (inside, line.trim()) {
            (false, "```promql") => inside = true,
            (true, "```") => inside = false,
            (true, l) if !l.is_empty() && !l.starts_with('#') => queries.push(l.to_string()),
            _ => {}
        }
    }
    queries
}

fn v4(s: &str) -> u32 {
    u32::from(s.parse::<std::net::Ipv4Addr>().expect("IPv4"))
}

#[test]
fn every_query_returns_the_lab_numbers_on_a_real_prometheus() {
    if !lab::require("every_query_returns_the_lab_numbers_on_a_real_prometheus", &["prometheus", "promtool"]) {
        return;
    }
    let db = TempFile::new(
        "grafana-qqwry.dat",
        &qqwry_dat(&[
            (v4("198.51.100.0"), v4("198.51.100.127"), "广东省深圳市", "电信", QqwryLayout::Inline),
            (v4("203.0.113.0"), v4("203.0.113.255"), "美国", "CZ88.NET", QqwryLayout::Inline),
        ]),
    );
    let mut lab = Lab::new();
    lab.start_iperf_server();
    let from = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    // -t 1 MB: the 500 kB UDP flow to 203.0.113.9 never gets a series of its
    // own, yet every place and total panel must hold its bytes.
    let mut monitor = lab.spawn_in_host(&[BIN, "-b", "bpftrace", "-i", "vh", "-d", "0", "-s", "1", "-q", "-t", "1048576", "-p", "9464", "--qqwry", db.path()]);
    monitor.wait_for_stderr("counting with", Duration::from_secs(120));
    lab.start_prometheus("127.0.0.1:9464");
    lab.iperf(&["-c", "198.51.100.7", "-n", "6M"]);
    lab.iperf(&["-c", "198.51.100.8", "-n", "4M", "-R"]);
    lab.iperf(&["-6", "-c", "2001:db8::2", "-n", "3M"]);
    lab.udp_flow(true, "203.0.113.9", 500_000);
    let exposition = lab.scrape_when_counted(9464, &["198.51.100.7", "198.51.100.8", "2001:db8::2", "203.0.113.9"]);
    lab.wait_until_prometheus_has(&exposition);
    // The dashboard's rates and increases look back $__rate_interval (4 s
    // here): wait until Prometheus holds two samples of every byte series
    // in that window, as a dashboard some seconds after the traffic would.
    let window_filled = "min(count_over_time(ip_traffic_tx_bytes_total[4s])) >= 2 \
                         and min(count_over_time(ip_traffic_rx_bytes_total[4s])) >= 2";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while lab.promql(window_filled).is_empty() {
        assert!(std::time::Instant::now() < deadline, "Prometheus never held two samples in the 4 s window");
        std::thread::sleep(Duration::from_millis(200));
    }
    let truth = lab.truth();

    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let substitute = |expr: &str, country: &str, city: &str| {
        expr.replace("${__from:date:seconds}", &from.to_string())
            .replace("$__range", &format!("{}s", now - from + 5))
            .replace("$__rate_interval", "4s")
            .replace("$__interval", "1s")
            .replace("$instance", "127.0.0.1:9464")
            .replace("$country", country)
            .replace("$city", city)
            .replace("$top_k", "10")
    };

    let d = dashboard();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (title, expr) in panel_queries(&d) {
        for (country, city) in [(".*", ".*"), ("中国", "深圳市")] {
            let query = substitute(&expr, country, city);
            let result = lab.promql(&query);
            checked += 1;
            if result.is_empty() {
                failures.push(format!("{title} [{country}/{city}]: no result for {query}"));
            }
        }
    }
    // Variable queries: the selector inside label_values must find series.
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            let selector = q.trim_start_matches("label_values(").rsplit_once(',').map(|(s, _)| s.to_string()).expect("label_values");
            if lab.promql(&substitute(&selector, ".*", ".*")).is_empty() {
                failures.push(format!("variable {}: {selector} finds nothing", v["name"]));
            }
        }
    }
    for query in readme_queries() {
        checked += 1;
        if lab.promql(&substitute(&query, ".*", ".*")).is_empty() {
            failures.push(format!("README: no result for {query}"));
        }
    }
    println!("{checked} queries evaluated");
    assert!(failures.is_empty(), "{failures:#?}");

    // The numbers: increase and total panels against nftables.
    let by_dir = |dir: &str, ips: &[&str]| -> u64 { ips.iter().map(|ip| truth[&(ip.to_string(), dir)]).sum() };
    let every_ip: Vec<&str> = lab::REMOTE_V4.iter().chain(lab::REMOTE_V6.iter()).copied().collect();
    let value_of = |title: &str, country: &str, city: &str| -> f64 {
        let (_, expr) = panel_queries(&d).into_iter().find(|(t, _)| t == title).expect("panel");
        lab.promql(&substitute(&expr, country, city)).first().map_or(0.0, |(_, v)| *v)
    };
    let mut report = BTreeMap::new();
    for (title, dir) in [("Upload Traffic Increase", "tx"), ("Download Traffic Increase", "rx"), ("Upload Total Traffic", "tx"), ("Download Total Traffic", "rx")] {
        for (country, city, ips) in [(".*", ".*", every_ip.clone()), ("中国", "深圳市", vec!["198.51.100.7", "198.51.100.8"])] {
            let want = by_dir(dir, &ips) as f64;
            let got = value_of(title, country, city);
            report.insert(format!("{title} [{country}/{city}]"), (want, got));
            assert!((got - want).abs() <= 0.001 * want, "{title} [{country}/{city}]: Prometheus {got}, nftables {want}");
        }
    }
    // This billing period: every byte the monitor counted (it started within the period).
    for (title, dir) in [("Upload this billing period", "tx"), ("Download this billing period", "rx")] {
        let (want, got) = (by_dir(dir, &every_ip) as f64, value_of(title, ".*", ".*"));
        report.insert(title.to_string(), (want, got));
        assert!((got - want).abs() <= 0.001 * want, "{title}: Prometheus {got}, nftables {want}");
    }
    // Place panels: every byte of the place, the unexported IP's included.
    let by_place = |title: &str, label: &str, value: &str| -> f64 {
        let (_, expr) = panel_queries(&d).into_iter().find(|(t, _)| t == title).expect("panel");
        let rows = lab.promql_labelled(&substitute(&expr, ".*", ".*"), label);
        rows.into_iter().find(|(v, _)| v == value).map_or(0.0, |(_, n)| n)
    };
    for (title, dir, label, value, ips) in [
        ("Upload Traffic Increase (by country)", "tx", "country", "美国", vec!["203.0.113.9"]),
        ("Upload Traffic Increase (by country)", "tx", "country", "中国", vec!["198.51.100.7", "198.51.100.8"]),
        ("Download Traffic Increase (by ISP)", "rx", "isp", "电信", vec!["198.51.100.7", "198.51.100.8"]),
    ] {
        let want = by_dir(dir, &ips) as f64;
        let got = by_place(title, label, value);
        report.insert(format!("{title} [{value}]"), (want, got));
        assert!((got - want).abs() <= 0.001 * want && want > 0.0, "{title} [{value}]: Prometheus {got}, nftables {want}");
    }
    let series = lab::metric_value(&exposition, &lab::byte_series("tx", "203.0.113.9"));
    assert_eq!(series, None, "203.0.113.9 stayed below -t: no series of its own");
    for (k, (want, got)) in report {
        println!("{k:<45} nftables {want:>12} dashboard {got:>12}");
    }
    drop(monitor);
}
