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
    for name in ["datasource", "job", "instance", "country", "province", "isp", "top_k"] {
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
    for title in ["Upload this billing period", "Upload in range", "Download rate now", "Monitor", "Top talkers", "By country",
                  "By province", "By city", "By ISP", "By process", "Traffic per host", "Rate per host",
                  "Upload rate of the top talkers", "Backend up", "Report age", "Scrape duration"] {
        assert!(panels.iter().any(|p| p["title"] == title), "panel {title}");
    }
    // Every panel says what it counts, in its unit, with its own thresholds.
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(p["description"].as_str().is_some_and(|d| d.len() > 20), "{title}: a description");
        assert!(p["fieldConfig"]["defaults"]["unit"].is_string(), "{title}: a unit");
        assert!(p["fieldConfig"]["defaults"]["thresholds"]["steps"].is_array(), "{title}: thresholds of its own");
    }
    // Per-IP graphs sit in a collapsed row.
    let per_ip = d["panels"].as_array().unwrap().iter().find(|p| p["title"] == "Per IP (top talkers)").expect("per-IP row");
    assert_eq!(per_ip["collapsed"], true);
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
    let substitute = |expr: &str, country: &str, isp: &str| {
        expr.replace("${__from:date:seconds}", &from.to_string())
            .replace("$__range", &format!("{}s", now - from + 5))
            .replace("$__rate_interval", "4s")
            .replace("$__interval", "1s")
            .replace("$job", ".*")
            .replace("$instance", "127.0.0.1:9464")
            .replace("$country", country)
            .replace("$province", ".*")
            .replace("$isp", isp)
            .replace("$top_k", "10")
    };

    let d = dashboard();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (title, expr) in panel_queries(&d) {
        for (country, isp) in [(".*", ".*"), ("中国", "电信")] {
            let query = substitute(&expr, country, isp);
            let result = lab.promql(&query);
            checked += 1;
            if result.is_empty() {
                failures.push(format!("{title} [{country}/{isp}]: no result for {query}"));
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
    let value_of = |title: &str, ref_id: &str, country: &str, isp: &str| -> f64 {
        lab.promql(&substitute(&query(&d, title, ref_id), country, isp)).first().map_or(0.0, |(_, v)| *v)
    };
    let mut report = BTreeMap::new();
    for (title, dir) in [("Upload in range", "tx"), ("Download in range", "rx")] {
        for (country, isp, ips) in [(".*", ".*", every_ip.clone()), ("中国", "电信", vec!["198.51.100.7", "198.51.100.8"])] {
            let want = by_dir(dir, &ips) as f64;
            let got = value_of(title, "A", country, isp);
            report.insert(format!("{title} [{country}/{isp}]"), (want, got));
            assert!((got - want).abs() <= 0.001 * want, "{title} [{country}/{isp}]: Prometheus {got}, nftables {want}");
        }
    }
    // This billing period: every byte the monitor counted (it started within the period).
    for (title, dir) in [("Upload this billing period", "tx"), ("Download this billing period", "rx")] {
        let (want, got) = (by_dir(dir, &every_ip) as f64, value_of(title, "A", ".*", ".*"));
        report.insert(title.to_string(), (want, got));
        assert!((got - want).abs() <= 0.001 * want, "{title}: Prometheus {got}, nftables {want}");
    }
    // Place and process tables: every byte of the place, the unexported IP's
    // included; the process rows add up to all the bytes.
    let rows = |title: &str, ref_id: &str, label: &str| lab.promql_labelled(&substitute(&query(&d, title, ref_id), ".*", ".*"), label);
    let by_place = |title: &str, ref_id: &str, label: &str, value: &str| -> f64 {
        rows(title, ref_id, label).into_iter().find(|(v, _)| v == value).map_or(0.0, |(_, n)| n)
    };
    for (title, ref_id, dir, label, value, ips) in [
        ("By country", "A", "tx", "country", "美国", vec!["203.0.113.9"]),
        ("By country", "A", "tx", "country", "中国", vec!["198.51.100.7", "198.51.100.8"]),
        ("By ISP", "B", "rx", "isp", "电信", vec!["198.51.100.7", "198.51.100.8"]),
    ] {
        let want = by_dir(dir, &ips) as f64;
        let got = by_place(title, ref_id, label, value);
        report.insert(format!("{title} [{value}]"), (want, got));
        assert!((got - want).abs() <= 0.001 * want && want > 0.0, "{title} [{value}]: Prometheus {got}, nftables {want}");
    }
    for (ref_id, dir) in [("A", "tx"), ("B", "rx")] {
        let want = by_dir(dir, &every_ip) as f64;
        let got: f64 = rows("By process", ref_id, "process").iter().map(|(_, n)| n).sum();
        report.insert(format!("By process [{dir}, all rows]"), (want, got));
        assert!((got - want).abs() <= 0.001 * want, "By process {dir}: rows add up to {got}, nftables {want}");
    }
    let series = lab::metric_value(&exposition, &lab::byte_series("tx", "203.0.113.9"));
    assert_eq!(series, None, "203.0.113.9 stayed below -t: no series of its own");
    for (k, (want, got)) in report {
        println!("{k:<45} nftables {want:>12} dashboard {got:>12}");
    }
    drop(monitor);
}

/// The committed dashboard is what grafana/dashboard.py writes.
#[test]
fn the_dashboard_is_what_its_generator_writes() {
    if !lab::require_tools("the_dashboard_is_what_its_generator_writes", &["python3"]) {
        return;
    }
    let out = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/dashboard.py"))
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let generated: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(generated == dashboard(), "grafana/grafana.json differs from: python3 grafana/dashboard.py > grafana/grafana.json");
}

/// The query of panel `title`, target `ref_id`.
fn query(d: &Value, title: &str, ref_id: &str) -> String {
    let panel = all_panels(d).into_iter().find(|p| p["title"] == title).unwrap_or_else(|| panic!("panel {title}"));
    let targets = panel["targets"].as_array().expect("targets").clone();
    let target = targets.into_iter().find(|t| t["refId"] == ref_id).unwrap_or_else(|| panic!("{title}: target {ref_id}"));
    target["expr"].as_str().expect("expr").to_string()
}

/// Three hosts over one hour, scraped every minute (promtool's notation:
/// `a+bxn` is a, a+b, … n more samples; `_` is no sample):
/// - a: steady; 1.1.1.1 (curl) all the hour, 2.2.2.2 (no process seen)
///   from minute 30, bytes below -t on no series, a place Unknown;
/// - b: a monitor without --state restarted at minute 30 (every counter
///   back to zero, then on from 50); 3.3.3.3 only;
/// - c: only bytes of IPs without a series; its backend dead at the end.
const FLEET: &[(&str, &str)] = &[
    (r#"ip_traffic_location_tx_bytes_total{job="itm",instance="a",country="中国",province="广东",city="深圳",isp="电信"}"#, "0+1000x60"),
    (r#"ip_traffic_location_rx_bytes_total{job="itm",instance="a",country="中国",province="广东",city="深圳",isp="电信"}"#, "0+100x60"),
    (r#"ip_traffic_location_tx_bytes_total{job="itm",instance="a",country="Unknown",province="Unknown",city="Unknown",isp="Unknown"}"#, "0+10x60"),
    (r#"ip_traffic_location_rx_bytes_total{job="itm",instance="a",country="Unknown",province="Unknown",city="Unknown",isp="Unknown"}"#, "0+1x60"),
    (r#"ip_traffic_tx_bytes_total{job="itm",instance="a",remote_ip="1.1.1.1",country="中国",province="广东",city="深圳",isp="电信"}"#, "0+600x60"),
    (r#"ip_traffic_rx_bytes_total{job="itm",instance="a",remote_ip="1.1.1.1",country="中国",province="广东",city="深圳",isp="电信"}"#, "0+60x60"),
    (r#"ip_traffic_tx_bytes_total{job="itm",instance="a",remote_ip="2.2.2.2",country="中国",province="广东",city="深圳",isp="电信"}"#, "_x30 0+400x30"),
    (r#"ip_traffic_rx_bytes_total{job="itm",instance="a",remote_ip="2.2.2.2",country="中国",province="广东",city="深圳",isp="电信"}"#, "_x30 0+40x30"),
    (r#"ip_traffic_remote_process_info{job="itm",instance="a",remote_ip="1.1.1.1",pid="7",process="curl"}"#, "1x60"),
    (r#"ip_traffic_unexported_tx_bytes_total{job="itm",instance="a"}"#, "0+210x60"),
    (r#"ip_traffic_unexported_rx_bytes_total{job="itm",instance="a"}"#, "0+21x60"),
    (r#"ip_traffic_location_tx_bytes_total{job="itm",instance="b",country="美国",province="Unknown",city="Unknown",isp="Unknown"}"#, "0+100x29 50+100x30"),
    (r#"ip_traffic_location_rx_bytes_total{job="itm",instance="b",country="美国",province="Unknown",city="Unknown",isp="Unknown"}"#, "0x60"),
    (r#"ip_traffic_tx_bytes_total{job="itm",instance="b",remote_ip="3.3.3.3",country="美国",province="Unknown",city="Unknown",isp="Unknown"}"#, "0+100x29 50+100x30"),
    (r#"ip_traffic_rx_bytes_total{job="itm",instance="b",remote_ip="3.3.3.3",country="美国",province="Unknown",city="Unknown",isp="Unknown"}"#, "0x60"),
    (r#"ip_traffic_unexported_tx_bytes_total{job="itm",instance="b"}"#, "0x60"),
    (r#"ip_traffic_unexported_rx_bytes_total{job="itm",instance="b"}"#, "0x60"),
    (r#"ip_traffic_location_tx_bytes_total{job="itm",instance="c",country="Unknown",province="Unknown",city="Unknown",isp="Unknown"}"#, "0+5x60"),
    (r#"ip_traffic_location_rx_bytes_total{job="itm",instance="c",country="Unknown",province="Unknown",city="Unknown",isp="Unknown"}"#, "0+5x60"),
    (r#"ip_traffic_unexported_tx_bytes_total{job="itm",instance="c"}"#, "0+5x60"),
    (r#"ip_traffic_unexported_rx_bytes_total{job="itm",instance="c"}"#, "0+5x60"),
    (r#"ip_traffic_period_tx_bytes{job="itm",instance="a"}"#, "5000000x60"),
    (r#"ip_traffic_period_rx_bytes{job="itm",instance="a"}"#, "1000000x60"),
    (r#"ip_traffic_period_tx_bytes{job="itm",instance="b"}"#, "2000000x60"),
    (r#"ip_traffic_period_rx_bytes{job="itm",instance="b"}"#, "500000x60"),
    (r#"ip_traffic_period_tx_bytes{job="itm",instance="c"}"#, "1000000x60"),
    (r#"ip_traffic_period_rx_bytes{job="itm",instance="c"}"#, "250000x60"),
    (r#"ip_traffic_period_start_timestamp_seconds{job="itm",instance="a"}"#, "1700000000x60"),
    (r#"ip_traffic_period_start_timestamp_seconds{job="itm",instance="b"}"#, "1750000000x60"),
    (r#"ip_traffic_period_start_timestamp_seconds{job="itm",instance="c"}"#, "1720000000x60"),
    (r#"up{job="itm",instance="a"}"#, "1x60"),
    (r#"up{job="itm",instance="b"}"#, "1x60"),
    (r#"up{job="itm",instance="c"}"#, "1x60"),
    (r#"ip_traffic_monitor_backend_up{job="itm",instance="a"}"#, "1x60"),
    (r#"ip_traffic_monitor_backend_up{job="itm",instance="b"}"#, "1x60"),
    (r#"ip_traffic_monitor_backend_up{job="itm",instance="c"}"#, "1x50 0x10"),
    (r#"ip_traffic_monitor_backend_restarts_total{job="itm",instance="b"}"#, "0x29 1x30"),
    (r#"ip_traffic_monitor_last_report_timestamp_seconds{job="itm",instance="a"}"#, "-10+60x60"),
    (r#"ip_traffic_monitor_build_info{job="itm",instance="a",version="0.1.0",backend="nftables"}"#, "1x60"),
    (r#"process_start_time_seconds{job="itm",instance="b"}"#, "100x29 1900x30"),
    (r#"ip_traffic_monitor_folded_ips_total{job="itm",instance="a"}"#, "0x60"),
    (r#"ip_traffic_monitor_location_lookup_errors_total{job="itm",instance="a"}"#, "0x60"),
    (r#"ip_traffic_monitor_parse_errors_total{job="itm",instance="a"}"#, "0x60"),
    (r#"ip_traffic_monitor_missed_probe_runs_total{job="itm",instance="a"}"#, "0x60"),
    (r#"ip_traffic_monitor_unattributed_bytes_total{job="itm",instance="a"}"#, "0+3x60"),
    (r#"process_resident_memory_bytes{job="itm",instance="a"}"#, "1048576x60"),
    (r#"process_cpu_seconds_total{job="itm",instance="a"}"#, "0+6x60"),
    (r#"ip_traffic_monitor_tracked_ips{job="itm",instance="a"}"#, "2x60"),
    (r#"scrape_duration_seconds{job="itm",instance="a"}"#, "0.01x60"),
];

/// Panels' queries with what each must give: (panel title, query ref,
/// (series, value) pairs).
type Expected<'a> = Vec<(&'a str, &'a str, Vec<(&'a str, f64)>)>;

/// Every panel query of the dashboard, evaluated by promtool on [`FLEET`]
/// at minute 60 with the range the whole hour, against figures worked out
/// by hand below.
#[test]
fn every_panel_is_right_on_a_fleet_with_a_restart_a_new_ip_and_a_host_without_series() {
    if !lab::require_tools("every_panel_is_right_on_a_fleet_with_a_restart_a_new_ip_and_a_host_without_series", &["promtool"]) {
        return;
    }
    let d = dashboard();
    // Prometheus' increase() across b's reset: samples at minutes 0..60
    // (both ends in the range, Prometheus 2.x), 0..2900 then 50..3050:
    // 5,950 bytes, the reset counted on both sides. (Prometheus 3 opens
    // the range at its start: 5,850 seen, extrapolated by 60/59.)
    let b = 5950.0;
    let a_tx = 60_000.0 + 600.0; // 中国 + Unknown
    let a_rx = 6_000.0 + 60.0;
    let expectations: Expected = vec![
        ("Upload this billing period", "A", vec![("{}", 8_000_000.0)]),
        ("Download this billing period", "A", vec![("{}", 1_750_000.0)]),
        ("Billing period began", "A", vec![("{}", 1.7e12)]),
        ("Upload in range", "A", vec![("{}", a_tx + b + 300.0)]),
        ("Download in range", "A", vec![("{}", a_rx + 0.0 + 300.0)]),
        ("Upload rate now", "A", vec![("{}", (1000.0 + 10.0 + 100.0 + 5.0) / 60.0)]),
        ("Download rate now", "A", vec![("{}", (100.0 + 1.0 + 5.0) / 60.0)]),
        ("Monitor", "A", vec![(r#"{instance="a"}"#, 1.0), (r#"{instance="b"}"#, 1.0), (r#"{instance="c"}"#, 0.0)]),
    ];
    // The top talkers (top_k 2): 1.1.1.1 (39,600 bytes) and 2.2.2.2
    // (13,200, from minute 30), not 3.3.3.3 (5,950); shares of a's 66,660.
    let ip1 = r#"instance="a",remote_ip="1.1.1.1",country="中国",province="广东",city="深圳",isp="电信""#;
    let ip2 = r#"instance="a",remote_ip="2.2.2.2",country="中国",province="广东",city="深圳",isp="电信""#;
    let talker = |ip: &str, process: &str| format!("{{{ip},process=\"{process}\"}}");
    let (t1, t2) = (talker(ip1, "curl"), talker(ip2, "(unknown)"));
    let (g1, g2) = (format!("{{job=\"itm\",{ip1}}}"), format!("{{job=\"itm\",{ip2}}}"));
    let talkers: Expected = vec![
        ("Top talkers", "A", vec![(&t1, 36_000.0), (&t2, 12_000.0)]),
        ("Top talkers", "B", vec![(&t1, 3_600.0), (&t2, 1_200.0)]),
        ("Top talkers", "C", vec![(&t1, 39_600.0), (&t2, 13_200.0)]),
        ("Top talkers", "D", vec![(&t1, 39_600.0 / 66_660.0), (&t2, 13_200.0 / 66_660.0)]),
        ("Upload rate of the top talkers", "A", vec![(&g1, 10.0), (&g2, 400.0 / 60.0)]),
        ("Download rate of the top talkers", "A", vec![(&g1, 1.0), (&g2, 40.0 / 60.0)]),
    ];
    let places: Expected = vec![
        ("By country", "A", vec![(r#"{country="中国"}"#, 60_000.0), (r#"{country="Unknown"}"#, 900.0), (r#"{country="美国"}"#, b)]),
        ("By country", "B", vec![(r#"{country="中国"}"#, 6_000.0), (r#"{country="Unknown"}"#, 360.0), (r#"{country="美国"}"#, 0.0)]),
        ("By province", "A", vec![
            (r#"{country="中国",province="广东"}"#, 60_000.0),
            (r#"{country="Unknown",province="Unknown"}"#, 900.0),
            (r#"{country="美国",province="Unknown"}"#, b),
        ]),
        ("By province", "B", vec![
            (r#"{country="中国",province="广东"}"#, 6_000.0),
            (r#"{country="Unknown",province="Unknown"}"#, 360.0),
            (r#"{country="美国",province="Unknown"}"#, 0.0),
        ]),
        ("By city", "A", vec![
            (r#"{country="中国",province="广东",city="深圳"}"#, 60_000.0),
            (r#"{country="Unknown",province="Unknown",city="Unknown"}"#, 900.0),
            (r#"{country="美国",province="Unknown",city="Unknown"}"#, b),
        ]),
        ("By city", "B", vec![
            (r#"{country="中国",province="广东",city="深圳"}"#, 6_000.0),
            (r#"{country="Unknown",province="Unknown",city="Unknown"}"#, 360.0),
            (r#"{country="美国",province="Unknown",city="Unknown"}"#, 0.0),
        ]),
        ("By ISP", "A", vec![(r#"{isp="电信"}"#, 60_000.0), (r#"{isp="Unknown"}"#, 900.0 + b)]),
        ("By ISP", "B", vec![(r#"{isp="电信"}"#, 6_000.0), (r#"{isp="Unknown"}"#, 360.0)]),
        // Adds up to "in range": the IPs with a series by process, the rest as one row.
        ("By process", "A", vec![
            (r#"{process="curl"}"#, 36_000.0),
            (r#"{process="(unknown)"}"#, 12_000.0 + b),
            (r#"{process="(IPs without a series)"}"#, 12_600.0 + 300.0),
        ]),
        ("By process", "B", vec![
            (r#"{process="curl"}"#, 3_600.0),
            (r#"{process="(unknown)"}"#, 1_200.0),
            (r#"{process="(IPs without a series)"}"#, 1_260.0 + 300.0),
        ]),
    ];
    let hosts = |a: f64, b: f64, c: f64| vec![(r#"{instance="a"}"#, a), (r#"{instance="b"}"#, b), (r#"{instance="c"}"#, c)];
    let fleet: Expected = vec![
        ("Traffic per host", "A", hosts(a_tx, b, 300.0)),
        ("Traffic per host", "B", hosts(a_rx, 0.0, 300.0)),
        ("Traffic per host", "C", hosts(5e6, 2e6, 1e6)),
        ("Traffic per host", "D", hosts(1e6, 5e5, 2.5e5)),
        ("Rate per host", "A", hosts(1010.0 / 60.0, 100.0 / 60.0, 5.0 / 60.0)),
        ("Rate per host", "B", hosts(101.0 / 60.0, 0.0, 5.0 / 60.0)),
    ];
    let a = r#"{job="itm",instance="a"}"#;
    let health: Expected = vec![
        ("Backend up", "A", vec![(a, 1.0), (r#"{job="itm",instance="b"}"#, 1.0), (r#"{job="itm",instance="c"}"#, 0.0)]),
        ("Report age", "A", vec![(a, 10.0)]),
        ("Backend restarts", "A", vec![(r#"{job="itm",instance="b"}"#, 1.0)]),
        ("Folded IPs", "A", vec![(a, 0.0)]),
        ("Location lookup errors", "A", vec![(a, 0.0)]),
        ("Unreadable backend lines", "A", vec![(a, 0.0)]),
        ("Missed probe runs", "A", vec![(a, 0.0)]),
        ("Unattributed bytes", "A", vec![(a, 180.0)]),
        ("Version and backend", "A", vec![(r#"{instance="a",version="0.1.0",backend="nftables"}"#, 1.0)]),
        ("Memory", "A", vec![(a, 1_048_576.0)]),
        ("CPU", "A", vec![(a, 0.1)]),
        ("Tracked IPs", "A", vec![(a, 2.0)]),
        ("Scrape duration", "A", vec![(a, 0.01)]),
    ];
    let expectations: Vec<_> = expectations.into_iter().chain(talkers).chain(places).chain(fleet).chain(health).collect();
    // Every query of the dashboard is among them.
    let queries = panel_queries(&d).len();
    let checked: HashSet<(&str, &str)> = expectations.iter().map(|(t, r, _)| (*t, *r)).collect();
    assert_eq!(checked.len(), queries, "a query without expectations among {:?}", panel_titles_and_refs(&d));
    let mut tests = String::new();
    for (title, ref_id, samples) in &expectations {
        tests.push_str(&expr_test(&substitute_fleet(&query(&d, title, ref_id)), samples, "60m"));
    }
    // The optional recording rules for large fleets.
    for (rule, a, b, c) in [("instance:ip_traffic_location_tx_bytes:rate5m", 1010.0, 100.0, 5.0), ("instance:ip_traffic_location_rx_bytes:rate5m", 101.0, 0.0, 5.0)] {
        let per_host = [(r#"{job="itm",instance="a"}"#, a / 60.0), (r#"{job="itm",instance="b"}"#, b / 60.0), (r#"{job="itm",instance="c"}"#, c / 60.0)];
        tests.push_str(&expr_test(rule, &per_host, "60m"));
    }
    // The restart annotation marks b's restart at minute 30.
    let annotation = d["annotations"]["list"][1]["expr"].as_str().expect("annotation");
    tests.push_str(&expr_test(&substitute_fleet(annotation), &[(r#"{job="itm",instance="b"}"#, 1.0)], "30m"));
    run_promtool(&tests);
}

fn panel_titles_and_refs(d: &Value) -> Vec<String> {
    all_panels(d)
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            p["targets"].as_array().cloned().unwrap_or_default().into_iter().map(move |t| format!("{title}/{}", t["refId"].as_str().unwrap_or("")))
        })
        .collect()
}

fn substitute_fleet(expr: &str) -> String {
    expr.replace("${__from:date:seconds}", "0")
        .replace("$__range", "60m")
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$top_k", "2")
        .replace("$job", ".*")
        .replace("$instance", ".*")
        .replace("$country", ".*")
        .replace("$province", ".*")
        .replace("$isp", ".*")
}

/// A promtool test of `expr` at `at`. promtool compares values
/// exactly: both sides are rounded to thousandths (which also drops the
/// metric name: samples are given by their labels alone).
fn expr_test(expr: &str, samples: &[(&str, f64)], at: &str) -> String {
    let rounded = format!("round(({expr}) * 1000) / 1000");
    let mut out = format!("      - expr: '{}'\n        eval_time: {at}\n        exp_samples:\n", rounded.replace('\'', "''"));
    for (labels, value) in samples {
        let value = (value * 1000.0).round() / 1000.0;
        out.push_str(&format!("          - labels: '{}'\n            value: {value:?}\n", labels.replace('\'', "''")));
    }
    out
}

fn run_promtool(tests: &str) {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/recording_rules.yml");
    let mut yaml = format!("rule_files: ['{rules}']\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n");
    for (series, values) in FLEET {
        yaml.push_str(&format!("      - series: '{series}'\n        values: '{values}'\n"));
    }
    yaml.push_str("    promql_expr_test:\n");
    yaml.push_str(tests);
    let file = TempFile::new("fleet-test.yml", yaml.as_bytes());
    let out = std::process::Command::new("promtool").args(["test", "rules", file.path()]).output().expect("promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
}
