//! Any bytes as a datagram of nf_tables netlink replies: messages, their
//! attributes, and what the backend reads from them (set elements, counter
//! objects and their names, flowtables). Besides never crashing: every element read is a
//! whole address with a counter.
#![no_main]
use ip_traffic_monitor_cli::backend::nftables::{counter_values, describe_flowtable, elements::read_elements, named_counter, netlink::messages, table::lane_of};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    for message in messages(data) {
        let _ = message.error_code();
        let _ = read_elements(&message, &mut out);
        let _ = counter_values(&message);
        if let Some((name, _, _)) = named_counter(&message) {
            let _ = lane_of(&name);
        }
        let _ = describe_flowtable(&message);
    }
    assert!(out.len() * 24 <= data.len(), "{} elements from {} bytes", out.len(), data.len());
});
