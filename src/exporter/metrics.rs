//! Every metric the exporter writes, defined once with its type and help
//! text (the byte counters keep the names and texts of the first release,
//! which the shipped dashboard and users' queries depend on), and the renderer that turns a
//! copy of the store into the Prometheus text exposition format 0.0.4.
//! The store's lock is held only while copying, never while formatting or
//! writing to a socket. The format's primitives are in [`super::exposition`].

use std::fmt::Write;
use std::net::IpAddr;
use std::time::UNIX_EPOCH;

use super::exposition::{Metric, header, label, sample};
use crate::ip_text::push_u64;
use super::procfs;
use crate::location::{Labels, Ledger, Locator, PlaceTotals};
use crate::store::{Exported, HealthState, Series, Store};

pub const TX_BYTES: Metric = Metric {
    name: "ip_traffic_tx_bytes_total",
    kind: "counter",
    help: "Total transmitted bytes to remote IP address (egress/upload traffic)",
};
pub const RX_BYTES: Metric = Metric {
    name: "ip_traffic_rx_bytes_total",
    kind: "counter",
    help: "Total received bytes from remote IP address (ingress/download traffic)",
};
pub const UNEXPORTED_TX: Metric = Metric {
    name: "ip_traffic_unexported_tx_bytes_total",
    kind: "counter",
    help: "Transmitted bytes not on a current per-IP series: of remote IPs below the export threshold, dropped under --max-ips (their series too), or beyond bpftrace's map room",
};
pub const UNEXPORTED_RX: Metric = Metric {
    name: "ip_traffic_unexported_rx_bytes_total",
    kind: "counter",
    help: "Received bytes not on a current per-IP series: of remote IPs below the export threshold, dropped under --max-ips (their series too), or beyond bpftrace's map room",
};
pub const LOCATION_TX: Metric = Metric {
    name: "ip_traffic_location_tx_bytes_total",
    kind: "counter",
    help: "Transmitted bytes by the remote IPs' location and ISP: every counted byte in exactly one series, exported IP or not",
};
pub const LOCATION_RX: Metric = Metric {
    name: "ip_traffic_location_rx_bytes_total",
    kind: "counter",
    help: "Received bytes by the remote IPs' location and ISP: every counted byte in exactly one series, exported IP or not",
};
pub const PROCESS_INFO: Metric = Metric {
    name: "ip_traffic_remote_process_info",
    kind: "gauge",
    help: "Local process that last sent to the remote IP (join on remote_ip)",
};
pub const BUILD_INFO: Metric = Metric {
    name: "ip_traffic_monitor_build_info",
    kind: "gauge",
    help: "Version of ip_traffic_monitor_cli and the backend counting the bytes",
};
pub const BACKEND_UP: Metric = Metric {
    name: "ip_traffic_monitor_backend_up",
    kind: "gauge",
    help: "1 while the backend is running and reporting, else 0",
};
pub const BACKEND_RESTARTS: Metric = Metric {
    name: "ip_traffic_monitor_backend_restarts_total",
    kind: "counter",
    help: "Times the backend was restarted after exiting unexpectedly",
};
pub const PARSE_ERRORS: Metric = Metric {
    name: "ip_traffic_monitor_parse_errors_total",
    kind: "counter",
    help: "Backend output lines that could not be read and were skipped",
};
pub const MISSED_PROBE_RUNS: Metric = Metric {
    name: "ip_traffic_monitor_missed_probe_runs_total",
    kind: "counter",
    help: "Probe runs the kernel skipped because another BPF tracing program was running (packets possibly not counted)",
};
pub const UNATTRIBUTED: Metric = Metric {
    name: "ip_traffic_monitor_unattributed_bytes_total",
    kind: "counter",
    help: "Bytes the backend counted that reached no remote IP (bpftrace: its maps were full or it printed them too late; nftables: a full set refused the peer), included in the unexported counters",
};
pub const TRACKED_IPS: Metric = Metric {
    name: "ip_traffic_monitor_tracked_ips",
    kind: "gauge",
    help: "Remote IPs held in memory",
};
pub const FOLDED_IPS: Metric = Metric {
    name: "ip_traffic_monitor_folded_ips_total",
    kind: "counter",
    help: "Remote IPs dropped from memory under the --max-ips cap, the quietest first, their bytes kept in the unexported counters",
};
pub const EVICTED_SERIES: Metric = Metric {
    name: "ip_traffic_monitor_evicted_series_total",
    kind: "counter",
    help: "Of the dropped remote IPs, those that had their own series: it ended, its bytes moved to the unexported counters",
};
pub const PERIOD_TX: Metric = Metric {
    name: "ip_traffic_period_tx_bytes",
    kind: "gauge",
    help: "Transmitted bytes in the current billing period (--billing-day), every counted byte",
};
pub const PERIOD_RX: Metric = Metric {
    name: "ip_traffic_period_rx_bytes",
    kind: "gauge",
    help: "Received bytes in the current billing period (--billing-day), every counted byte",
};
pub const PERIOD_START: Metric = Metric {
    name: "ip_traffic_period_start_timestamp_seconds",
    kind: "gauge",
    help: "Start of the current billing period (local midnight of the billing day), Unix seconds",
};
pub const LAST_REPORT: Metric = Metric {
    name: "ip_traffic_monitor_last_report_timestamp_seconds",
    kind: "gauge",
    help: "Unix time of the last complete backend report",
};

pub const LOOKUP_ERRORS: Metric = Metric {
    name: "ip_traffic_monitor_location_lookup_errors_total",
    kind: "counter",
    help: "Location lookups that hit a damaged database record (those IPs are labelled Unknown)",
};

/// The whole /metrics body.
pub fn render(store: &Store, backend: &str, locator: &Locator, ledger: &Ledger) -> String {
    let mut snap = store.exported();
    let health = store.health().get();
    // Stable order: easier to read and to diff between scrapes. IpAddr's
    // order (IPv4 first, then by value) from integers: comparing the enum
    // itself was the largest single cost of a 100,000-IP render.
    snap.series.sort_unstable_by_key(|s| match s.ip {
        IpAddr::V4(v4) => (false, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (true, u128::from(v6)),
    });
    let mut out = String::with_capacity(4096 + snap.series.len() * 400); // ~344 bytes per series: never grown
    byte_counters(&mut out, &snap, locator);
    location_counters(&mut out, &ledger.places(store, locator));
    process_info(&mut out, &snap.series);
    self_description(&mut out, &snap, &health, backend);
    sample(&mut out, &LOOKUP_ERRORS, locator.failures());
    procfs::write_process_metrics(&mut out);
    out
}

fn byte_counters(out: &mut String, snap: &Exported, locator: &Locator) {
    // The location labels of each series, escaped once for both families;
    // without databases they are all Unknown: escape that once per scrape.
    let unknown = location_labels(&Labels::default());
    let locations: Vec<String> = if locator.is_empty() {
        Vec::new()
    } else {
        snap.series.iter().map(|s| location_labels(&locator.lookup(s.ip))).collect()
    };
    // Each address is formatted once for its three lines.
    let ips = AddressTexts::new(&snap.series);
    let values: [Column<Series>; 2] = [(&TX_BYTES, |s| s.tx), (&RX_BYTES, |s| s.rx)];
    for (metric, value) in values {
        header(out, metric);
        for (i, s) in snap.series.iter().enumerate() {
            out.push_str(metric.name);
            out.push_str("{remote_ip=\"");
            out.push_str(ips.get(i));
            out.push('"');
            out.push_str(locations.get(i).unwrap_or(&unknown));
            out.push_str("} ");
            push_u64(out, value(s));
            out.push('\n');
        }
    }
    sample(out, &UNEXPORTED_TX, snap.unexported_tx);
    sample(out, &UNEXPORTED_RX, snap.unexported_rx);
}

/// One counter of a family of series: its metric and its value in a series.
type Column<T> = (&'static Metric, fn(&T) -> u64);

fn location_counters(out: &mut String, places: &[PlaceTotals]) {
    let labels: Vec<String> = places.iter().map(|(labels, _, _)| location_labels(labels)).collect();
    let values: [Column<PlaceTotals>; 2] = [(&LOCATION_TX, |p| p.1), (&LOCATION_RX, |p| p.2)];
    for (metric, value) in values {
        header(out, metric);
        for (place, labels) in places.iter().zip(&labels) {
            out.push_str(metric.name);
            out.push('{');
            out.push_str(&labels[1..]); // without the leading comma
            out.push_str("} ");
            push_u64(out, value(place));
            out.push('\n');
        }
    }
}

/// `,country="…",province="…",city="…",isp="…"`
fn location_labels(labels: &Labels) -> String {
    let mut out = String::new();
    for (name, value) in
        [("country", labels.country()), ("province", labels.province()), ("city", labels.city()), ("isp", labels.isp())]
    {
        out.push(',');
        label(&mut out, name, value);
    }
    out
}

fn process_info(out: &mut String, series: &[Series]) {
    header(out, &PROCESS_INFO);
    let ips = AddressTexts::new(series);
    for (i, s) in series.iter().enumerate() {
        if let Some(owner) = &s.owner {
            out.push_str(PROCESS_INFO.name);
            out.push_str("{remote_ip=\"");
            out.push_str(ips.get(i));
            out.push_str("\",pid=\"");
            push_u64(out, u64::from(owner.pid));
            out.push_str("\",");
            label(out, "process", &owner.comm.display());
            out.push_str("} 1\n");
        }
    }
}

/// The text of every series' address, in one buffer.
struct AddressTexts {
    text: String,
    ends: Vec<usize>,
}

impl AddressTexts {
    fn new(series: &[Series]) -> AddressTexts {
        let mut text = String::with_capacity(series.len() * 16);
        let mut ends = Vec::with_capacity(series.len());
        for s in series {
            crate::ip_text::push_ip(&mut text, s.ip);
            ends.push(text.len());
        }
        AddressTexts { text, ends }
    }

    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }
}

fn self_description(out: &mut String, snap: &Exported, health: &HealthState, backend: &str) {
    header(out, &BUILD_INFO);
    let _ = write!(out, "{}{{", BUILD_INFO.name);
    label(out, "version", env!("CARGO_PKG_VERSION"));
    out.push(',');
    label(out, "backend", backend);
    out.push_str("} 1\n");
    sample(out, &BACKEND_UP, u64::from(health.up));
    sample(out, &BACKEND_RESTARTS, health.restarts);
    sample(out, &PARSE_ERRORS, snap.progress.parse_errors);
    sample(out, &MISSED_PROBE_RUNS, health.missed_events);
    sample(out, &UNATTRIBUTED, snap.progress.unkeyed_bytes);
    sample(out, &TRACKED_IPS, snap.tracked as u64);
    sample(out, &FOLDED_IPS, snap.folded_ips);
    sample(out, &EVICTED_SERIES, snap.evicted_series);
    if let Some(period) = snap.period {
        sample(out, &PERIOD_TX, period.tx);
        sample(out, &PERIOD_RX, period.rx);
        sample(out, &PERIOD_START, u64::try_from(period.start).unwrap_or(0));
    }
    header(out, &LAST_REPORT);
    // No report yet: the metric is absent rather than a misleading 0.
    if let Some(t) = snap.progress.last_report.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
        let _ = writeln!(out, "{} {:.3}", LAST_REPORT.name, t.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Comm, Owner, Record};

    #[test]
    fn series_come_in_address_order_ipv4_first() {
        let store = Store::new(0, 1_000_000);
        let order = ["9.0.0.1", "10.0.0.2", "198.51.100.7", "::2", "2001:db8::2", "2001:db8::10"];
        let records: Vec<Record> = order.iter().rev().map(|ip| Record::Tx(ip.parse().unwrap(), 1)).collect();
        store.apply_report(&records, 0);
        let text = render(&store, "bpftrace", &Locator::from_sources(crate::location::Sources::none(), Default::default()), &Ledger::default());
        let seen: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("ip_traffic_tx_bytes_total{"))
            .filter_map(|l| l.split('"').nth(1))
            .collect();
        assert_eq!(seen, order);
    }

    #[test]
    fn exported_ips_have_series_and_the_rest_is_summed() {
        let store = Store::new(100, 1_000_000);
        let big: IpAddr = "198.51.100.7".parse().unwrap();
        let small: IpAddr = "2001:db8::2".parse().unwrap();
        let owner = Owner { pid: 42, comm: Comm::new(b"we\"ird\\\n") };
        store.apply_report(
            &[Record::Tx(big, 150), Record::Rx(big, 10), Record::Tx(small, 5), Record::Owner(big, Box::new(owner))],
            0,
        );
        store.health().set_up(true);
        let text = render(&store, "bpftrace", &Locator::from_sources(crate::location::Sources::none(), Default::default()), &Ledger::default());
        assert!(text.contains(
            "ip_traffic_tx_bytes_total{remote_ip=\"198.51.100.7\",country=\"Unknown\",province=\"Unknown\",city=\"Unknown\",isp=\"Unknown\"} 150\n"
        ), "{text}");
        assert!(text.contains("ip_traffic_rx_bytes_total{remote_ip=\"198.51.100.7\",country=\"Unknown\",province=\"Unknown\",city=\"Unknown\",isp=\"Unknown\"} 10\n"));
        assert!(!text.contains("remote_ip=\"2001:db8::2\""), "below the threshold");
        assert!(text.contains("ip_traffic_unexported_tx_bytes_total 5\n"));
        assert!(text.contains("ip_traffic_unexported_rx_bytes_total 0\n"));
        // Shown escaped (`we"ird\\\x0a`), then escaped again for the exposition format.
        assert!(
            text.contains(r#"ip_traffic_remote_process_info{remote_ip="198.51.100.7",pid="42",process="we\"ird\\\\\\x0a"} 1"#),
            "{text}"
        );
        assert!(text.contains(&format!("ip_traffic_monitor_build_info{{version=\"{}\",backend=\"bpftrace\"}} 1\n", env!("CARGO_PKG_VERSION"))));
        assert!(text.contains("ip_traffic_monitor_backend_up 1\n"));
        assert!(text.contains("ip_traffic_monitor_tracked_ips 2\n"));
        assert!(text.contains("# HELP ip_traffic_tx_bytes_total Total transmitted bytes to remote IP address (egress/upload traffic)\n# TYPE ip_traffic_tx_bytes_total counter\n"));
        assert!(text.contains("ip_traffic_monitor_last_report_timestamp_seconds 1"));
        assert!(text.contains("process_resident_memory_bytes "));
    }
}
