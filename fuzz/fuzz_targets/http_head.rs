//! Any bytes as an HTTP request head.
#![no_main]
use ip_traffic_monitor_cli::exporter::http::{head_end, parse_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let end = head_end(data).unwrap_or(data.len());
    let _ = parse_head(&data[..end]);
});
