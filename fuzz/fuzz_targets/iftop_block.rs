//! Any bytes, line by line, through the iftop block parser and delta tracker.
#![no_main]
use ip_traffic_monitor_cli::backend::iftop::direction::Direction;
use ip_traffic_monitor_cli::backend::iftop::parse::IftopParser;
use ip_traffic_monitor_cli::backend::LineParser;
use ip_traffic_monitor_cli::filter::AddressFilter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parser = IftopParser::new(AddressFilter::default(), Direction::with_locals(&["192.0.2.1", "2001:db8::1"]));
    let mut report = Vec::new();
    for line in data.split_inclusive(|&b| b == b'\n') {
        let _ = parser.feed(line, &mut report);
    }
});
