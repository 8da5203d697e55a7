//! Any bytes as a ipdb file, opened and looked up at a few addresses.
#![no_main]
use ip_traffic_monitor_cli::location::testing::read_ipdb;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| read_ipdb(data));
