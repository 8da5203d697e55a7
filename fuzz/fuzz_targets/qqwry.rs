//! Any bytes as a qqwry file, opened and looked up at a few addresses.
#![no_main]
use ip_traffic_monitor_cli::location::testing::read_qqwry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| read_qqwry(data));
