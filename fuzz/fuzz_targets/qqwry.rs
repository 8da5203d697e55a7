//! Any bytes as a qqwry file, opened and looked up at a few addresses.
#![no_main]
use std::net::IpAddr;

use ip_traffic_monitor_cli::location::testing::read_qqwry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ips: [IpAddr; 4] = [
        IpAddr::from([1, 13, 0, 1]),
        IpAddr::from([14, 0, 0, 9]),
        IpAddr::from([255, 255, 255, 255]),
        IpAddr::from([0x2001, 0xdb8, 2, 0, 0, 0, 0, 7]),
    ];
    read_qqwry(data, &ips);
});
