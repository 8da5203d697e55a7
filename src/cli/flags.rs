//! Every flag, defined once: its names, its value, its default and its help
//! text. `--help` is generated from this table, and a test checks that the
//! parser in `lowargs` knows every flag listed here.

pub struct Flag {
    pub short: Option<char>,
    pub long: &'static str,
    /// The value's placeholder; `None` for a switch.
    pub value: Option<&'static str>,
    pub default: Option<&'static str>,
    pub group: Group,
    pub doc: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Counting,
    Console,
    Prometheus,
    State,
    Location,
    Filtering,
    Other,
}

impl Group {
    const ALL: [Group; 7] = [
        Group::Counting,
        Group::Console,
        Group::Prometheus,
        Group::State,
        Group::Location,
        Group::Filtering,
        Group::Other,
    ];

    fn title(self) -> &'static str {
        match self {
            Group::Counting => "COUNTING",
            Group::Console => "CONSOLE",
            Group::Prometheus => "PROMETHEUS",
            Group::State => "STATE",
            Group::Location => "LOCATION",
            Group::Filtering => "FILTERING",
            Group::Other => "OTHER",
        }
    }
}

pub const DEFAULT_DURATION: u64 = 30;
pub const DEFAULT_SAMPLE_INTERVAL: u64 = 2;
pub const DEFAULT_THRESHOLD: u64 = 1_048_576;
pub const DEFAULT_TOP: usize = 10;
/// About 100 bytes each in memory: 100,000 take some 10 MiB, which a 128 MB router affords.
pub const DEFAULT_MAX_IPS: usize = 100_000;
pub const DEFAULT_SAVE_INTERVAL: u64 = 300;
pub const DEFAULT_BILLING_DAY: u8 = 1;

pub const FLAGS: &[Flag] = &[
    Flag {
        short: Some('b'),
        long: "backend",
        value: Some("auto|nftables|bpftrace|iftop"),
        default: Some("auto"),
        group: Group::Counting,
        doc: "What counts the packets. auto: nftables if the kernel lets us, else bpftrace, \
              else iftop; the choice and why are printed at start.",
    },
    Flag {
        short: Some('i'),
        long: "iface",
        value: Some("IFACE"),
        default: None,
        group: Group::Counting,
        doc: "Count only on this interface (a router: its WAN side). \
              nftables, bpftrace default: every interface but loopback. \
              iftop default: the default route's interface.",
    },
    Flag {
        short: Some('d'),
        long: "duration",
        value: Some("SECONDS"),
        default: Some("30"),
        group: Group::Counting,
        doc: "Stop after this many seconds and print the summary; 0 = run until stopped.",
    },
    Flag {
        short: Some('s'),
        long: "sample-interval",
        value: Some("SECONDS"),
        default: Some("2"),
        group: Group::Counting,
        doc: "Seconds between reports (1-3600).",
    },
    Flag {
        short: None,
        long: "bpftrace-script",
        value: Some("PATH"),
        default: None,
        group: Group::Counting,
        doc: "Run this bpftrace script instead of the built-in one \
              (its output format is in README). Read once at startup; it must be \
              a regular file of root (or of the running user), writable by no one \
              else, at most 127 KiB.",
    },
    Flag {
        short: None,
        long: "top",
        value: Some("N"),
        default: Some("10"),
        group: Group::Console,
        doc: "Rows in each console table.",
    },
    Flag {
        short: Some('q'),
        long: "quiet",
        value: None,
        default: None,
        group: Group::Console,
        doc: "No periodic tables, only the final summary (for services).",
    },
    Flag {
        short: Some('p'),
        long: "prometheus-port",
        value: Some("PORT"),
        default: None,
        group: Group::Prometheus,
        doc: "Serve /metrics on 0.0.0.0:PORT.",
    },
    Flag {
        short: None,
        long: "listen",
        value: Some("ADDR:PORT"),
        default: None,
        group: Group::Prometheus,
        doc: "Serve /metrics on this address instead (127.0.0.1:9464, [::]:9464).",
    },
    Flag {
        short: Some('t'),
        long: "prometheus-export-threshold",
        value: Some("BYTES"),
        default: Some("1048576"),
        group: Group::Prometheus,
        doc: "Export an IP once its traffic exceeds this many bytes.",
    },
    Flag {
        short: None,
        long: "max-ips",
        value: Some("N"),
        default: Some("100000"),
        group: Group::Prometheus,
        doc: "Cap on remote IPs held in memory (about 100 bytes each). Past it the quietest \
              unexported IPs are folded into the unexported counters: no byte is lost. \
              nftables: also the room of the kernel's sets (peers per direction and family in \
              one interval).",
    },
    Flag {
        short: None,
        long: "state",
        value: Some("PATH"),
        default: None,
        group: Group::State,
        doc: "Keep the totals in this file: loaded at start (every counter goes on where it was), \
              saved periodically and at every normal exit, atomically, mode 0600. \
              A file that cannot be read is never overwritten: the monitor exits instead.",
    },
    Flag {
        short: None,
        long: "save-interval",
        value: Some("SECONDS"),
        default: Some("300"),
        group: Group::State,
        doc: "How often the state file is saved (1-86400). Longer saves wear flash less; a \
              crash loses at most this much of what bpftrace or iftop counted.",
    },
    Flag {
        short: None,
        long: "billing-day",
        value: Some("1-31"),
        default: Some("1"),
        group: Group::State,
        doc: "The day of the month a billing period starts, at local midnight; past the \
              month's end it means its last day. This period's totals are exported and saved.",
    },
    Flag {
        short: None,
        long: "report",
        value: None,
        default: None,
        group: Group::State,
        doc: "Print what the state file holds (totals, the busiest remote IPs with location, \
              ISP and last process) and exit; needs read access to the file only.",
    },
    Flag {
        short: None,
        long: "json",
        value: None,
        default: None,
        group: Group::Console,
        doc: "JSON for scripts instead of tables: one JSON object per line, per interval and for \
              the summary (docs/JSON.md); a state report as one document (docs/STATE.md).",
    },
    Flag {
        short: Some('g'),
        long: "geoip-db",
        value: Some("PATH"),
        default: None,
        group: Group::Location,
        doc: "GeoIP2/GeoLite2 City (or Country) .mmdb for country, province, city.",
    },
    Flag {
        short: None,
        long: "isp-db",
        value: Some("PATH"),
        default: None,
        group: Group::Location,
        doc: "GeoIP2-ISP or GeoLite2-ASN .mmdb for the ISP.",
    },
    Flag {
        short: None,
        long: "qqwry",
        value: Some("PATH"),
        default: None,
        group: Group::Location,
        doc: "纯真 database: qqwry.dat or its ipdb edition.",
    },
    Flag {
        short: None,
        long: "lang",
        value: Some("zh-CN|en"),
        default: Some("zh-CN"),
        group: Group::Location,
        doc: "Language of place names.",
    },
    Flag {
        short: None,
        long: "lookup",
        value: Some("IP..."),
        default: None,
        group: Group::Location,
        doc: "Print the labels these IPs would get, then exit.",
    },
    Flag {
        short: None,
        long: "include-private",
        value: None,
        default: None,
        group: Group::Filtering,
        doc: "Count private ranges too (RFC 1918, 100.64.0.0/10, IPv6 ULA).",
    },
    Flag {
        short: None,
        long: "exclude",
        value: Some("CIDR[,CIDR...]"),
        default: None,
        group: Group::Filtering,
        doc: "Never count these ranges (repeatable); ::ffff:a.b.c.d/n means the IPv4 range.",
    },
    Flag {
        short: Some('h'),
        long: "help",
        value: None,
        default: None,
        group: Group::Other,
        doc: "Print this help and exit.",
    },
    Flag {
        short: Some('V'),
        long: "version",
        value: None,
        default: None,
        group: Group::Other,
        doc: "Print the version and exit.",
    },
];

pub fn help_text() -> String {
    let mut out = format!(
        "ip_traffic_monitor_cli {}\n\
         Precise per-remote-IP traffic accounting: bytes sent (TX) and received (RX)\n\
         per remote IP, as nftables counts them, with the local process.\n\n\
         USAGE:\n    sudo ip_traffic_monitor_cli [OPTIONS]\n",
        env!("CARGO_PKG_VERSION")
    );
    for group in Group::ALL {
        out.push_str(&format!("\n{}:\n", group.title()));
        for flag in FLAGS.iter().filter(|f| f.group == group) {
            out.push_str(&flag_line(flag));
        }
    }
    out.push_str(
        "\nExcluded always: loopback, link-local, multicast, broadcast, unspecified.\n\
         Errors print one line and exit 2 (bad flags) or 1 (cannot run).\n",
    );
    out
}

fn flag_line(flag: &Flag) -> String {
    let short = flag.short.map(|c| format!("-{c}, ")).unwrap_or_else(|| "    ".into());
    let value = flag.value.map(|v| format!(" <{v}>")).unwrap_or_default();
    let default = flag.default.map(|d| format!(" [default: {d}]")).unwrap_or_default();
    format!("    {short}--{}{value}\n            {}{default}\n", flag.long, flag.doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_of(long: &str) -> Option<&'static str> {
        FLAGS.iter().find(|f| f.long == long).and_then(|f| f.default)
    }

    #[test]
    fn help_defaults_are_the_defaults_in_force() {
        assert_eq!(default_of("duration"), Some(DEFAULT_DURATION.to_string().leak() as &str));
        assert_eq!(default_of("sample-interval"), Some(DEFAULT_SAMPLE_INTERVAL.to_string().leak() as &str));
        assert_eq!(default_of("top"), Some(DEFAULT_TOP.to_string().leak() as &str));
        assert_eq!(default_of("prometheus-export-threshold"), Some(DEFAULT_THRESHOLD.to_string().leak() as &str));
        assert_eq!(default_of("max-ips"), Some(DEFAULT_MAX_IPS.to_string().leak() as &str));
        assert_eq!(default_of("save-interval"), Some(DEFAULT_SAVE_INTERVAL.to_string().leak() as &str));
    }

    #[test]
    fn help_lists_every_flag_once_under_its_group() {
        let help = help_text();
        for flag in FLAGS {
            let long = format!("--{} ", flag.long);
            let long_eol = format!("--{}\n", flag.long);
            let count = help.matches(&long).count() + help.matches(&long_eol).count();
            assert_eq!(count, 1, "--{} appears {count} times", flag.long);
        }
        for title in ["COUNTING:", "CONSOLE:", "PROMETHEUS:", "STATE:", "LOCATION:", "FILTERING:", "OTHER:"] {
            assert!(help.contains(title), "{title}");
        }
    }
}
