//! Any bytes, line by line, through the bpftrace parser and its filter.
#![no_main]
use ip_traffic_monitor_cli::backend::LineParser;
use ip_traffic_monitor_cli::backend::bpftrace::BpftraceParser;
use ip_traffic_monitor_cli::filter::AddressFilter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parser = BpftraceParser::new(AddressFilter::default());
    let mut report = Vec::new();
    for line in data.split_inclusive(|&b| b == b'\n') {
        let _ = parser.feed(line, &mut report);
    }
});
