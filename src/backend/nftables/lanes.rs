//! Which peers get a lane, a rule and counter of their own before the
//! common path ([`table::Lane`]): what each harvest read of its generation
//! (every set element's and lane's packets) decides the lanes of the next
//! interval. A lane saves each of its packets about 145 ns and costs every
//! other packet of its direction about 9 (`benches/rule-cost.sh`), so it
//! pays when its peer sends more than one packet in 17: a peer gets one
//! when it sent at least an eighth of its direction's packets (so at most
//! eight could, and [`table::LANES`] do), and at least [`LEAST_PACKETS`]
//! (a lane changes the table at each swap: not for a trickle). Where
//! traffic is spread over many peers, no lane is made and none costs
//! anything; a download, a backup or a flood to one peer gets one from
//! the second interval on. Counting stays exact either way: a lane's
//! packets are counted in its counter instead of a set, once.

use std::net::IpAddr;

use super::table::{self, Lane};

/// Packets in one interval below which a peer gets no lane.
pub const LEAST_PACKETS: u64 = 100;
/// A lane's peer sent at least this part of its direction's packets: 1/8.
const SHARE: u64 = 8;

/// The packets of one generation, per direction (0 tx, 1 rx), and the
/// peers that sent at least [`LEAST_PACKETS`] of them.
#[derive(Debug, Default)]
pub struct Traffic {
    packets: [u64; 2],
    busy: Vec<(Lane, u64)>,
}

impl Traffic {
    /// `packets` of peer `ip` in direction `dir`, from a set or a lane.
    pub fn add(&mut self, dir: usize, ip: IpAddr, packets: u64) {
        self.add_unkeyed(dir, packets);
        if packets >= LEAST_PACKETS {
            self.busy.push((Lane { dir, ip }, packets));
        }
    }

    /// `packets` of direction `dir` that no peer is known for.
    pub fn add_unkeyed(&mut self, dir: usize, packets: u64) {
        if let Some(total) = self.packets.get_mut(dir) {
            *total = total.saturating_add(packets);
        }
    }

    pub fn merge(&mut self, other: Traffic) {
        for dir in 0..2 {
            self.add_unkeyed(dir, other.packets[dir]);
        }
        self.busy.extend(other.busy);
    }

    /// The lanes for the next interval, busiest first (a lane's rule is
    /// passed by the packets of every lane after it).
    pub fn lanes(&self) -> Vec<Lane> {
        let busy_enough = |lane: &Lane, packets: u64| self.packets.get(lane.dir).is_some_and(|&total| packets.saturating_mul(SHARE) >= total);
        // One peer may count in a lane and a set (a packet with IP options):
        // its parts are added up, and one of them is at least half its
        // share. (No sort: at most eight peers qualify.)
        let mut chosen: Vec<(Lane, u64)> = Vec::new();
        for (lane, _) in self.busy.iter().filter(|(lane, part)| busy_enough(lane, part.saturating_mul(2))) {
            let packets = self.busy.iter().filter(|(other, _)| other == lane).map(|(_, p)| p).sum();
            if busy_enough(lane, packets) && !chosen.iter().any(|(other, _)| other == lane) {
                let at = chosen.iter().position(|&(_, more)| more < packets).unwrap_or(chosen.len());
                chosen.insert(at, (*lane, packets));
            }
        }
        let mut per_direction = [0; 2];
        chosen
            .into_iter()
            .filter(|(lane, _)| {
                per_direction[lane.dir] += 1;
                per_direction[lane.dir] <= table::LANES
            })
            .map(|(lane, _)| lane)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_peer_with_an_eighth_of_its_directions_packets_gets_a_lane() {
        let mut traffic = Traffic::default();
        traffic.add(0, ip("198.51.100.7"), 8_000);
        traffic.add(0, ip("198.51.100.8"), 1_000); // half an eighth here, and the other half:
        traffic.add(0, ip("198.51.100.8"), 1_000);
        traffic.add(0, ip("203.0.113.9"), 1_999); // under an eighth of 16,000 packets (2,000)
        traffic.add(0, ip("203.0.113.10"), 2_000); // an eighth exactly
        traffic.add_unkeyed(0, 2_001);
        traffic.add(1, ip("2001:db8::2"), LEAST_PACKETS - 1); // all of rx, but a trickle
        assert_eq!(
            traffic.lanes(),
            [Lane { dir: 0, ip: ip("198.51.100.7") }, Lane { dir: 0, ip: ip("198.51.100.8") }, Lane { dir: 0, ip: ip("203.0.113.10") }],
            "busiest first (equals as read), a peer counted in two places once"
        );
    }

    #[test]
    fn no_lane_where_traffic_is_spread_and_at_most_lanes_per_direction() {
        let mut spread = Traffic::default();
        for i in 0..9u8 {
            spread.add(1, IpAddr::from([198, 51, 100, i]), 10_000);
        }
        assert_eq!(spread.lanes(), [], "nine equal peers: each a ninth");
        let mut even = Traffic::default();
        for i in 0..8u8 {
            even.add(0, IpAddr::from([198, 51, 100, i]), 10_000);
        }
        let lanes = even.lanes();
        assert_eq!(lanes.len(), table::LANES, "{lanes:?}");
    }

    #[test]
    fn a_peer_counted_in_a_lane_and_a_set_is_added_up_across_generations_readers() {
        let mut sets = Traffic::default();
        sets.add(0, ip("198.51.100.7"), 150);
        sets.add(0, ip("203.0.113.9"), 350);
        let mut lanes = Traffic::default();
        lanes.add(0, ip("198.51.100.7"), 200);
        sets.merge(lanes);
        assert_eq!(sets.packets, [700, 0]);
        assert_eq!(sets.lanes(), [Lane { dir: 0, ip: ip("198.51.100.7") }, Lane { dir: 0, ip: ip("203.0.113.9") }]);
    }
}
