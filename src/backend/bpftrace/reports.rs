//! From lines to reports: the records of one bpftrace report (from one
//! `@end` to the next), keeping only the addresses the filter counts, the
//! bytes of the report's totals that no per-IP line accounts for, and each
//! owner's PID joined to the name its `@comm` line gave.

use std::collections::HashMap;
use std::mem;
use std::net::IpAddr;

use super::parse::{Line, parse_line};
use crate::backend::{LineParser, Step};
use crate::filter::AddressFilter;
use crate::store::{Comm, Owner, Record};

/// The bpftrace script's reports (lines as [`parse`] reads them), with the address filter.
/// It also checks each report's per-IP bytes against the script's totals
/// (key 0.0.0.0, never a peer): what the totals hold beyond them came from
/// IPs the maps had no room for.
pub struct BpftraceParser {
    filter: AddressFilter,
    /// Per-IP bytes in the report so far, filtered or not: `(tx, rx)`.
    keyed: (u64, u64),
    /// The report's totals, if the script prints them.
    all: (Option<u64>, Option<u64>),
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
            keyed: (0, 0),
            all: (None, None),
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
            report.push(Record::Owner(ip, Owner { pid, comm }));
        }
        for (ip, pid) in mem::take(&mut self.owners) {
            match self.name_of(pid) {
                Some(comm) => report.push(Record::Owner(ip, Owner { pid, comm })),
                None => self.unnamed.push((ip, pid)),
            }
        }
        self.names_before = mem::take(&mut self.names);
    }

    /// Bytes of the totals that no per-IP line accounts for.
    fn end_report(&mut self) -> Option<Record> {
        let unkeyed = |all: Option<u64>, keyed: u64| all.map_or(0, |all| all.saturating_sub(keyed));
        let record = Record::Unkeyed(unkeyed(self.all.0, self.keyed.0), unkeyed(self.all.1, self.keyed.1));
        (self.keyed, self.all) = ((0, 0), (None, None));
        (record != Record::Unkeyed(0, 0)).then_some(record)
    }
}

impl LineParser for BpftraceParser {
    fn feed(&mut self, line: &[u8], report: &mut Vec<Record>) -> Step {
        let (ip, record) = match parse_line(line) {
            Line::Tx(ip, bytes) if ip.is_unspecified() => {
                self.all.0 = Some(self.all.0.unwrap_or(0).saturating_add(bytes));
                return Step::Continue;
            }
            Line::Rx(ip, bytes) if ip.is_unspecified() => {
                self.all.1 = Some(self.all.1.unwrap_or(0).saturating_add(bytes));
                return Step::Continue;
            }
            Line::Tx(ip, bytes) if bytes > 0 => {
                self.keyed.0 = self.keyed.0.saturating_add(bytes);
                (ip, Record::Tx(ip, bytes))
            }
            Line::Rx(ip, bytes) if bytes > 0 => {
                self.keyed.1 = self.keyed.1.saturating_add(bytes);
                (ip, Record::Rx(ip, bytes))
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
            Line::Tx(..) | Line::Rx(..) | Line::Blank => return Step::Continue,
            Line::End => {
                self.name_owners(report);
                report.extend(self.end_report());
                return Step::ReportEnd;
            }
            Line::Attached => return Step::Attached,
            Line::Malformed => return Step::Malformed,
        };
        if self.filter.counts(ip) {
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
    fn bytes_the_totals_hold_beyond_the_per_ip_lines_are_unkeyed() {
        let mut parser = BpftraceParser::new(AddressFilter::default());
        // The map had room for one IP of two: 40 of the 100 bytes sent have no IP.
        let report = feed_all(&mut parser, "@tx0[0.0.0.0]: 100\n@rx0[0.0.0.0]: 7\n@tx0[198.51.100.7]: 60\n@rx0[198.51.100.7]: 7\n@end\n");
        let ip = "198.51.100.7".parse().unwrap();
        assert_eq!(report, vec![Record::Tx(ip, 60), Record::Rx(ip, 7), Record::Unkeyed(40, 0)]);
        // The next report starts from zero.
        assert_eq!(feed_all(&mut parser, "@tx1[0.0.0.0]: 5\n@tx1[198.51.100.7]: 5\n@end\n"), vec![Record::Tx(ip, 5)]);
    }

    #[test]
    fn owners_get_the_name_of_their_pid_even_when_it_comes_a_report_late() {
        let mut parser = BpftraceParser::new(AddressFilter::default());
        let (a, b) = ("198.51.100.7".parse().unwrap(), "198.51.100.8".parse().unwrap());
        let curl = "\\x63\\x75\\x72\\x6c\\x00";
        let report = feed_all(&mut parser, &format!("@comm[7]: {curl}\n@proc[198.51.100.7]: 7\n@proc[198.51.100.8]: 8\n@end\n"));
        assert_eq!(report, vec![Record::Owner(a, Owner { pid: 7, comm: Comm::new(b"curl") })]);
        // PID 8's name comes after the report's end: its owner waits for it.
        let report = feed_all(&mut parser, "@comm[8]: \\x73\\x73\\x68\n@end\n");
        assert_eq!(report, vec![Record::Owner(b, Owner { pid: 8, comm: Comm::new(b"ssh") })]);
        // A name never sent: the owner goes without one, a report late.
        assert!(feed_all(&mut parser, "@proc[198.51.100.8]: 9\n@end\n").is_empty());
        assert_eq!(feed_all(&mut parser, "@end\n"), vec![Record::Owner(b, Owner { pid: 9, comm: Comm::default() })]);
    }

    #[test]
    fn filtered_ips_and_scripts_without_totals_leave_nothing_unkeyed() {
        let mut parser = BpftraceParser::new(AddressFilter::default());
        // ff02::1:ff00:2 is not counted (multicast), but it is in the total.
        let report = feed_all(&mut parser, "@tx1[0.0.0.0]: 106\n@tx1[192.0.2.2]: 34\n@tx1[ff02::1:ff00:2]: 72\n@end\n");
        assert_eq!(report, vec![Record::Tx("192.0.2.2".parse().unwrap(), 34)]);
        assert_eq!(feed_all(&mut parser, "@tx[198.51.100.7]: 5\n@end\n").len(), 1);
    }
}
