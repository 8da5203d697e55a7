//! The live page at `/` and its data at `/api/live`: everything the page
//! draws comes from one JSON document, rendered from the store once per
//! change (like /metrics) for each of a few sizes of the top list, so what
//! clients do cannot multiply the work or the memory. The page itself (HTML,
//! one script, one style sheet) is in the binary; it loads nothing from
//! anywhere else, and a Content-Security-Policy on every response forbids
//! inline and foreign scripts. Every text from outside (process, place and
//! ISP names) reaches the page as a JSON string and is shown with
//! `textContent`, never as markup. Fields in docs/LIVE.md.

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::location::Locator;
use crate::report::json::{string, total_rows};
use crate::store::Store;

pub const INDEX_HTML: &str = include_str!("page/index.html");
pub const APP_JS: &str = include_str!("page/app.js");
pub const APP_CSS: &str = include_str!("page/app.css");

/// The sizes of the top list a client may ask for (`?top=N` is rounded up
/// to one of them): one cached body each.
pub const TOP_SIZES: [usize; 3] = [20, 100, 1000];

/// Headers of every response: no script but the page's own, no framing,
/// no guessing of content types.
pub const SECURITY_HEADERS: &str = "Content-Security-Policy: default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n";

/// Which of [`TOP_SIZES`] `query` asks for (`top=N`; the default 100).
pub fn top_size(query: &[u8]) -> usize {
    let asked = query
        .split(|&b| b == b'&')
        .find_map(|pair| pair.strip_prefix(b"top="))
        .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok())
        .unwrap_or(100);
    TOP_SIZES.iter().copied().find(|&size| size >= asked).unwrap_or(TOP_SIZES[TOP_SIZES.len() - 1])
}

/// The host's name, as the page title shows it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// What the monitor is, for the document.
pub struct About<'a> {
    pub host: &'a str,
    pub backend: &'a str,
    pub interval: Duration,
    pub up: bool,
}

/// The document `/api/live?top=N` serves.
pub fn render(store: &Store, locator: &Locator, about: &About, top: usize) -> String {
    let live = store.live(top);
    let now = SystemTime::now();
    let seconds = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let report_age = live.last_report.and_then(|t| now.duration_since(t).ok()).map(|d| d.as_secs_f64());
    let mut json = String::with_capacity(512 + 200 * live.rows.len() + 40 * live.history.len());
    let _ = write!(
        json,
        "{{\"host\":{},\"version\":{},\"backend\":{},\"up\":{},\"interval_seconds\":{},\"now\":{:.3},\"report_age_seconds\":{},\
         \"tracked_ips\":{},\"tx_bytes\":{},\"rx_bytes\":{},\"period\":{{\"start\":{},\"end\":{},\"tx_bytes\":{},\"rx_bytes\":{}}},",
        string(about.host),
        string(env!("CARGO_PKG_VERSION")),
        string(about.backend),
        about.up,
        about.interval.as_secs_f64(),
        seconds(now),
        report_age.map_or("null".to_string(), |age| format!("{age:.3}")),
        live.tracked,
        live.tx,
        live.rx,
        live.period.start,
        live.period.end,
        live.period.tx,
        live.period.rx,
    );
    json.push_str("\"history\":[");
    for (i, point) in live.history.iter().enumerate() {
        let _ = write!(json, "{}[{},{},{}]", if i == 0 { "" } else { "," }, point.at_ms, point.tx, point.rx);
    }
    json.push_str("],\"top\":[");
    let locator = if locator.is_empty() { None } else { Some(locator) };
    total_rows(&mut json, &live.rows, locator, top);
    json.push_str("]}\n");
    json
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Comm, Owner, Record};

    #[test]
    fn the_top_size_is_one_of_a_few_and_bounded() {
        assert_eq!(top_size(b""), 100);
        assert_eq!(top_size(b"top=5"), 20);
        assert_eq!(top_size(b"x=1&top=101"), 1000);
        assert_eq!(top_size(b"top=99999999999999999999"), 100, "not a number: the default");
        assert_eq!(top_size(b"top=5000"), 1000, "never more than the largest");
        assert_eq!(top_size(b"top=-1"), 100);
    }

    #[test]
    fn the_document_holds_every_byte_the_rows_and_hostile_names_as_strings() {
        let store = Store::new(0, 100);
        let ip = |s: &str| s.parse().expect("ip");
        let hostile = b"<img src=x>\"\n"; // a process name holds 15 bytes
        store.apply_report(
            &[
                Record::Tx(ip("198.51.100.7"), 5_000),
                Record::Rx(ip("198.51.100.8"), 300),
                Record::Owner(ip("198.51.100.7"), Box::new(Owner { pid: 7, comm: Comm::new(hostile) })),
            ],
            0,
        );
        let locator = Locator::from_sources(crate::location::Sources::none(), crate::location::Lang::ZhCn);
        let about = About { host: "router\"1", backend: "nftables", interval: Duration::from_secs(2), up: true };
        let json = render(&store, &locator, &about, 20);
        assert!(json.starts_with("{\"host\":\"router\\\"1\",") && json.ends_with("]}\n"), "{json}");
        assert!(json.contains("\"tx_bytes\":5000,\"rx_bytes\":300,"), "{json}");
        assert!(json.contains("{\"remote_ip\":\"198.51.100.7\",\"tx_bytes\":5000,\"rx_bytes\":0,\"pid\":7,\"process\":\"<img src=x>\\\"\\\\x0a\""), "{json}");
        assert!(!json.contains('\n') || json.find('\n') == Some(json.len() - 1), "one line: the name's newline escaped");
        assert!(json.contains("\"history\":[["), "{json}");
    }
}
