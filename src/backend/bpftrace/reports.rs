//! From lines to reports: the records of one bpftrace report (from one
//! `@end` to the next), keeping only the addresses the filter counts, the
//! bytes of the buffers' running totals that no per-IP line carries, and
//! each owner's PID joined to the name its `@comm` line gave.

use std::collections::HashMap;
use std::mem;
use std::net::IpAddr;

use super::parse::{Dir, Line, parse_line};
use crate::backend::{LineParser, Step};
use crate::filter::AddressFilter;
use crate::store::{Comm, Owner, Record};

/// The bpftrace script's reports (lines as [`parse`] reads them), with the
/// address filter. It also holds each buffer's per-IP lines against the
/// buffer's running total (`@cum0[0]: N`, never cleared, printed after the
/// buffer's per-IP lines): what the total holds beyond every byte the lines
/// of this child carried so far was counted in the kernel but will never
/// reach an IP (the map had no room, or a late clear wiped it before it was
/// printed); it goes to the unexported totals as unkeyed bytes. So nothing
/// the kernel counted is lost, however late bpftrace prints.
pub struct BpftraceParser {
    filter: AddressFilter,
    /// Bytes the lines of this child carried, per direction and buffer:
    /// per-IP lines (filtered or not) and unkeyed bytes already reported.
    carried: [[u64; BUFFERS]; 2],
    /// This report's unkeyed bytes: `(tx, rx)`.
    unkeyed: (u64, u64),
    /// PIDs' names from this report's `@comm` lines and the last report's
    /// (a name printed on one CPU may be read just after a report printed
    /// on another).
    names: HashMap<u32, Comm>,
    names_before: HashMap<u32, Comm>,
    /// This report's owners, named at its end.
    owners: Vec<(IpAddr, u32)>,
    /// Owners whose name had not come by their report's end: named at the next.
    unnamed: Vec<(IpAddr, u32)>,
}

impl BpftraceParser {
    pub fn new(filter: AddressFilter) -> BpftraceParser {
        BpftraceParser {
            filter,
            carried: [[0; BUFFERS]; 2],
            unkeyed: (0, 0),
            names: HashMap::new(),
            names_before: HashMap::new(),
            owners: Vec::new(),
            unnamed: Vec::new(),
        }
    }

    fn name_of(&self, pid: u32) -> Option<Comm> {
        self.names.get(&pid).or_else(|| self.names_before.get(&pid)).copied()
    }

    /// The report's owners with their names; those still unnamed wait one
    /// report, then go without a name (the older first, so a newer owner of
    /// the same IP wins).
    fn name_owners(&mut self, report: &mut Vec<Record>) {
        for (ip, pid) in mem::take(&mut self.unnamed) {
            let comm = self.name_of(pid).unwrap_or_default();
            report.push(Record::Owner(ip, Box::new(Owner { pid, comm })));
        }
        for (ip, pid) in mem::take(&mut self.owners) {
            match self.name_of(pid) {
                Some(comm) => report.push(Record::Owner(ip, Box::new(Owner { pid, comm }))),
                None => self.unnamed.push((ip, pid)),
            }
        }
        self.names_before = mem::take(&mut self.names);
    }

    /// A buffer's running total: what it holds beyond what the lines
    /// carried is unkeyed.
    fn reconcile(&mut self, dir: Dir, buffer: u8, total: u64) {
        let carried = &mut self.carried[dir as usize][usize::from(buffer)];
        let beyond = total.saturating_sub(*carried);
        *carried += beyond;
        match dir {
            Dir::Tx => self.unkeyed.0 += beyond,
            Dir::Rx => self.unkeyed.1 += beyond,
        }
    }

    fn carry(&mut self, dir: Dir, buffer: u8, bytes: u64) {
        let carried = &mut self.carried[dir as usize][usize::from(buffer)];
        *carried = carried.saturating_add(bytes);
    }

    fn end_report(&mut self) -> Option<Record> {
        let (tx, rx) = std::mem::take(&mut self.unkeyed);
        (tx + rx > 0).then_some(Record::Unkeyed(tx, rx))
    }
}

/// Buffers a script may number its maps with (`tx0` ... `tx9`).
const BUFFERS: usize = 10;

impl LineParser for BpftraceParser {
    fn feed(&mut self, line: &[u8], report: &mut Vec<Record>) -> Step {
        let (ip, record) = match parse_line(line) {
            Line::Tx(ip, bytes, buffer) => {
                self.carry(Dir::Tx, buffer, bytes);
                (ip, Record::Tx(ip, bytes))
            }
            Line::Rx(ip, bytes, buffer) => {
                self.carry(Dir::Rx, buffer, bytes);
                (ip, Record::Rx(ip, bytes))
            }
            Line::Total(dir, buffer, total) => {
                self.reconcile(dir, buffer, total);
                return Step::Continue;
            }
            Line::Owner(ip, pid) => {
                if self.filter.counts(ip) {
                    self.owners.push((ip, pid));
                }
                return Step::Continue;
            }
            Line::Name(pid, comm) => {
                self.names.insert(pid, comm);
                return Step::Continue;
            }
            Line::Blank => return Step::Continue,
            Line::End => {
                self.name_owners(report);
                report.extend(self.end_report());
                return Step::ReportEnd;
            }
            Line::Attached => return Step::Attached,
            Line::Malformed => return Step::Malformed,
        };
        if self.filter.counts(ip) && !matches!(record, Record::Tx(_, 0) | Record::Rx(_, 0)) {
            report.push(record);
        }
        Step::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(parser: &mut BpftraceParser, text: &str) -> Vec<Record> {
        let mut report = Vec::new();
        for line in text.lines() {
            parser.feed(line.as_bytes(), &mut report);
        }
        report
    }

    #[test]
    fn bytes_a_full_map_had_no_room_for_are_unkeyed() {
        let mut parser = BpftraceParser::new(AddressFilter::default());
        let ip = "198.51.100.7".parse().unwrap();
        // The map had room for one IP of two: 40 of the 100 bytes sent have no IP.
        let report = feed_all(&mut parser, "@tx0[198.51.100.7]: 60\n@cum0[0]: 100\n@rx0[198.51.100.7]: 7\n@cum0[1]: 7\n@end\n");
        assert_eq!(report, vec![Record::Tx(ip, 60), Record::Rx(ip, 7), Record::Unkeyed(40, 0)]);
        // Each buffer's total runs on: only what is new beyond its lines counts.
        assert_eq!(feed_all(&mut parser, "@tx1[198.51.100.7]: 5\n@cum1[0]: 5\n@end\n"), vec![Record::Tx(ip, 5)]);
        assert_eq!(feed_all(&mut parser, "@tx0[198.51.100.7]: 10\n@cum0[0]: 110\n@end\n"), vec![Record::Tx(ip, 10)]);
    }

    #[test]
    fn bytes_a_late_clear_wiped_reach_the_totals_by_the_next_report() {
        let mut parser = BpftraceParser::new(AddressFilter::default());
        let ip = "198.51.100.7".parse().unwrap();
        // bpftrace printed buffer 0 late, while it was in use again: 30 bytes
        // came in between its per-IP lines and its total, and the clear wiped them.
        let report = feed_all(&mut parser, "@tx0[198.51.100.7]: 50\n@cum0[0]: 80\n@end\n");
        assert_eq!(report, vec![Record::Tx(ip, 50), Record::Unkeyed(30, 0)]);
        // 15 more came in between the total and the clear: the next total holds them.
        let report = feed_all(&mut parser, "@tx0[198.51.100.7]: 20\n@cum0[0]: 115\n@end\n");
        assert_eq!(report, vec![Record::Tx(ip, 20), Record::Unkeyed(15, 0)]);
    }

    #[test]
    fn owners_get_the_name_of_their_pid_even_when_it_comes_a_report_late() {
        let mut parser = BpftraceParser::new(AddressFilter::default());
        let (a, b) = ("198.51.100.7".parse().unwrap(), "198.51.100.8".parse().unwrap());
        let curl = "\\x63\\x75\\x72\\x6c\\x00";
        let report = feed_all(&mut parser, &format!("@comm[7]: {curl}\n@proc[198.51.100.7]: 7\n@proc[198.51.100.8]: 8\n@end\n"));
        assert_eq!(report, vec![Record::Owner(a, Box::new(Owner { pid: 7, comm: Comm::new(b"curl") }))]);
        // PID 8's name comes after the report's end: its owner waits for it.
        let report = feed_all(&mut parser, "@comm[8]: \\x73\\x73\\x68\n@end\n");
        assert_eq!(report, vec![Record::Owner(b, Box::new(Owner { pid: 8, comm: Comm::new(b"ssh") }))]);
        // A name never sent: the owner goes without one, a report late.
        assert!(feed_all(&mut parser, "@proc[198.51.100.8]: 9\n@end\n").is_empty());
        assert_eq!(feed_all(&mut parser, "@end\n"), vec![Record::Owner(b, Box::new(Owner { pid: 9, comm: Comm::default() }))]);
    }

    #[test]
    fn totals_printed_again_at_the_end_add_nothing() {
        let mut parser = BpftraceParser::new(AddressFilter::default());
        let ip = "192.0.2.2".parse().unwrap();
        let first = feed_all(&mut parser, "@tx0[192.0.2.2]: 31\n@cum0[0]: 31\n@rx0[192.0.2.2]: 59\n@cum0[1]: 59\n@end\n");
        assert_eq!(first, vec![Record::Tx(ip, 31), Record::Rx(ip, 59)]);
        assert!(feed_all(&mut parser, "\n@cum0[0]: 31\n\n@cum0[1]: 59\n@end\n").is_empty());
    }

    #[test]
    fn filtered_ips_and_scripts_without_totals_leave_nothing_unkeyed() {
        let mut parser = BpftraceParser::new(AddressFilter::default());
        // ff02::1:ff00:2 is not counted (multicast), but it is in the total.
        let report = feed_all(&mut parser, "@tx1[192.0.2.2]: 34\n@tx1[ff02::1:ff00:2]: 72\n@cum1[0]: 106\n@end\n");
        assert_eq!(report, vec![Record::Tx("192.0.2.2".parse().unwrap(), 34)]);
        assert_eq!(feed_all(&mut parser, "@tx[198.51.100.7]: 5\n@end\n").len(), 1);
    }
}
