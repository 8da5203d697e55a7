//! The harvests written down before the kernel forgets them (with
//! `--state`): a SIGKILLed or OOM-killed monitor loses no byte. The kernel
//! keeps counting while no monitor runs, and a harvest's bytes leave the
//! kernel only in the transaction that makes their generation anew
//! ([`super::table::swap`]); so each harvest is appended here first, and the
//! swap also sets the table's harvest number. At the next start, a harvest
//! whose bytes the kernel no longer holds (its number is at most the
//! table's, or, the table gone, its swap was noted `done`) and that the
//! saved state lacks (its number is above the state's) is counted again;
//! any other is not. Entries are appended with plain writes, no fsync:
//! they need to outlive the process, not the machine, whose kernel counters
//! die with it. The journal is emptied once a saved state holds all of it.
//!
//! ```text
//! harvest → N                 a harvest's records, then its end: an entry
//! tx → ADDRESS → BYTES        without its end line was cut by the kill and
//! rx → ADDRESS → BYTES        is left out (its bytes are still in the kernel)
//! refused → TX → RX
//! end → N
//! done → N                    its swap went through
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::ip_text::{parse_ip, push_ip, push_u64};
use crate::store::Record;

/// One harvest as written down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub number: u64,
    pub records: Vec<Record>,
    /// Its swap was noted as gone through.
    pub done: bool,
}

impl Entry {
    /// Whether the kernel no longer holds this harvest's bytes: the table's
    /// number (`None`: no table any more) says so, or else the `done` note.
    pub fn gone_from_kernel(&self, table: Option<u64>) -> bool {
        table.map_or(self.done, |number| self.number <= number)
    }
}

/// The journal, open for appending.
pub struct Journal {
    path: PathBuf,
    file: File,
    len: u64,
}

impl Journal {
    /// The complete entries of the journal at `path` (none if there is
    /// none), oldest first.
    pub fn read(path: &Path) -> io::Result<Vec<Entry>> {
        match fs::read(path) {
            Ok(bytes) => Ok(parse(&String::from_utf8_lossy(&bytes))),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(err) => Err(err),
        }
    }

    /// Replaces the journal at `path` by `entries` (atomically: a file
    /// beside it renamed over it), and opens it for appending.
    pub fn rewrite(path: &Path, entries: &[Entry]) -> io::Result<Journal> {
        let mut text = String::new();
        for entry in entries {
            write_entry(&mut text, entry.number, &entry.records);
            if entry.done {
                text.push_str(&format!("done\t{}\n", entry.number));
            }
        }
        let temporary = path.with_file_name(format!(".{}.tmp", path.file_name().unwrap_or_default().to_string_lossy()));
        let _ = fs::remove_file(&temporary);
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
        file.write_all(text.as_bytes())?;
        drop(file);
        fs::rename(&temporary, path)?;
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Journal { path: path.to_path_buf(), file, len: text.len() as u64 })
    }

    /// Writes harvest `number` down, some thousand records a write: a
    /// flood's harvest is megabytes, which need not be in memory at once (a
    /// write cut by a kill leaves an entry without its end, left out).
    pub fn append(&mut self, number: u64, records: &[Record]) -> io::Result<()> {
        const RECORDS_A_WRITE: usize = 2048;
        let mut text = String::with_capacity(48 * RECORDS_A_WRITE);
        write_header(&mut text, "harvest", number);
        for chunk in records.chunks(RECORDS_A_WRITE) {
            write_records(&mut text, chunk);
            self.write(&text)?;
            text.clear();
        }
        write_header(&mut text, "end", number);
        self.write(&text)
    }

    /// Notes that harvest `number`'s swap went through.
    pub fn done(&mut self, number: u64) -> io::Result<()> {
        self.write(&format!("done\t{number}\n"))
    }

    /// Empties the journal: a saved state holds everything in it.
    pub fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.len = 0;
        Ok(())
    }

    /// Bytes written since it was last emptied.
    pub fn written(&self) -> u64 {
        self.len
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, text: &str) -> io::Result<()> {
        self.file.write_all(text.as_bytes())?;
        self.len += text.len() as u64;
        Ok(())
    }
}

/// An entry's text (addresses and numbers without the formatting
/// machinery: a flood's harvest writes 100,000 records).
fn write_entry(out: &mut String, number: u64, records: &[Record]) {
    write_header(out, "harvest", number);
    write_records(out, records);
    write_header(out, "end", number);
}

/// An entry's first or last line: `harvest\tN` or `end\tN`.
fn write_header(out: &mut String, tag: &str, number: u64) {
    out.push_str(tag);
    out.push('\t');
    push_u64(out, number);
    out.push('\n');
}

fn write_records(out: &mut String, records: &[Record]) {
    for record in records {
        let (tag, ip, bytes) = match *record {
            Record::Tx(ip, bytes) => ("tx\t", ip, bytes),
            Record::Rx(ip, bytes) => ("rx\t", ip, bytes),
            Record::Unkeyed(tx, rx) => {
                out.push_str("refused\t");
                push_u64(out, tx);
                out.push('\t');
                push_u64(out, rx);
                out.push('\n');
                continue;
            }
            // Not a harvest's: owners come from /proc, the number is the entry's.
            Record::Owner(..) | Record::Harvest(_) => continue,
        };
        out.push_str(tag);
        push_ip(out, ip);
        out.push('\t');
        push_u64(out, bytes);
        out.push('\n');
    }
}

/// The complete entries of a journal's text. A line that is not whole (the
/// last, cut by a kill) or not understood ends the entry it is in, which is
/// then left out.
fn parse(text: &str) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut open: Option<Entry> = None;
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    for line in whole.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let number = |s: &str| s.parse::<u64>().ok();
        match (&fields[..], open.as_mut()) {
            (["harvest", n], _) => open = number(n).map(|number| Entry { number, records: Vec::new(), done: false }),
            (["tx" | "rx", ip, bytes], Some(entry)) => match (parse_ip(ip.as_bytes()), number(bytes)) {
                (Some(ip), Some(bytes)) => entry.records.push(if fields[0] == "tx" { Record::Tx(ip, bytes) } else { Record::Rx(ip, bytes) }),
                _ => open = None,
            },
            (["refused", tx, rx], Some(entry)) => match (number(tx), number(rx)) {
                (Some(tx), Some(rx)) => entry.records.push(Record::Unkeyed(tx, rx)),
                _ => open = None,
            },
            (["end", n], Some(entry)) if number(n) == Some(entry.number) => entries.extend(open.take()),
            (["done", n], _) => {
                if let Some(entry) = entries.iter_mut().rev().find(|e| Some(e.number) == number(n)) {
                    entry.done = true;
                }
            }
            _ => open = None,
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn entries_read_back_as_written_and_a_cut_one_is_left_out() {
        let records = vec![Record::Tx(ip("198.51.100.7"), 1228), Record::Rx(ip("2001:db8::1"), 7), Record::Unkeyed(3, 4)];
        let mut text = String::new();
        write_entry(&mut text, 7, &records);
        text.push_str("done\t7\n");
        write_entry(&mut text, 8, &records[..1]);
        let whole = parse(&text);
        assert_eq!(whole, vec![
            Entry { number: 7, records: records.clone(), done: true },
            Entry { number: 8, records: records[..1].to_vec(), done: false },
        ]);
        // Cut at every byte: only entries whose end line is whole survive,
        // each whole, in order.
        for cut in 0..=text.len() {
            let read = parse(&text[..cut]);
            let ends = ["end\t7\n", "end\t8\n"].iter().filter(|end| text[..cut].contains(*end)).count();
            assert_eq!(read.len(), ends, "cut at {cut}: {read:?}");
            assert!(read.iter().zip(&whole).all(|(r, w)| r.number == w.number && r.records == w.records), "cut at {cut}");
        }
        // A garbled line ends its entry; the next entry stands.
        let garbled = text.replacen("tx\t198.51.100.7\t1228", "tx\t198.51.100.7\t12x8", 1);
        assert_eq!(parse(&garbled), vec![Entry { number: 8, records: records[..1].to_vec(), done: false }]);
    }

    #[test]
    fn the_table_number_decides_whether_the_kernel_still_holds_a_harvest() {
        let entry = |number, done| Entry { number, records: Vec::new(), done };
        // Table present: swapped up to its number, whatever was noted.
        assert!(entry(5, false).gone_from_kernel(Some(5)));
        assert!(!entry(6, true).gone_from_kernel(Some(5)));
        // No table: only what was noted done.
        assert!(entry(6, true).gone_from_kernel(None));
        assert!(!entry(6, false).gone_from_kernel(None));
    }

    #[test]
    fn rewrite_keeps_the_entries_given_and_appends_after_them() {
        let dir = std::env::temp_dir().join(format!("itm-journal-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.journal");
        fs::write(&path, "harvest\t1\ntx\t198.51.100.7\t5\nend\t1\nharvest\t2\ntx\t198.51").expect("a cut journal");
        let kept = Journal::read(&path).expect("read");
        assert_eq!(kept.len(), 1);
        let mut journal = Journal::rewrite(&path, &kept).expect("rewrite");
        journal.append(3, &[Record::Rx(ip("198.51.100.8"), 9)]).expect("append");
        journal.done(3).expect("done");
        let read = Journal::read(&path).expect("read");
        assert_eq!(read.iter().map(|e| (e.number, e.done)).collect::<Vec<_>>(), [(1, false), (3, true)]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        journal.clear().expect("clear");
        assert!(Journal::read(&path).expect("read").is_empty());
        fs::remove_dir_all(&dir).expect("tidy");
    }
}
