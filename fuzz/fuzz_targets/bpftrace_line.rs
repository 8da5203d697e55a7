//! Any bytes, line by line, through the bpftrace parser and its filter.
//! Besides never crashing: only a line that starts `@tx`/`@rx` may yield
//! bytes, so nothing in a name line (`@comm`) or any other can add a count.
#![no_main]
use ip_traffic_monitor_cli::backend::LineParser;
use ip_traffic_monitor_cli::backend::bpftrace::BpftraceParser;
use ip_traffic_monitor_cli::filter::AddressFilter;
use ip_traffic_monitor_cli::store::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parser = BpftraceParser::new(AddressFilter::default());
    let mut report = Vec::new();
    let mut count_lines = 0;
    for line in data.split_inclusive(|&b| b == b'\n') {
        count_lines += usize::from(line.starts_with(b"@tx") || line.starts_with(b"@rx"));
        let _ = parser.feed(line, &mut report);
    }
    let counts = report.iter().filter(|r| matches!(r, Record::Tx(..) | Record::Rx(..))).count();
    assert!(counts <= count_lines, "{counts} counts from {count_lines} count lines");
});
