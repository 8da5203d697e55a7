//! Any bytes as an HTTP request head: scanned for its end (or a bare LF),
//! then parsed; a complete head must never be longer than the buffer.
#![no_main]
use ip_traffic_monitor_cli::exporter::http::{HeadScan, parse_head, scan_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let end = match scan_head(data) {
        HeadScan::Complete(end) => {
            assert!(end <= data.len());
            end
        }
        HeadScan::BareLf => return,
        HeadScan::Incomplete => data.len(),
    };
    let _ = parse_head(&data[..end]);
});
