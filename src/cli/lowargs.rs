//! The raw parse: `argv` to typed values, with every value validated on its
//! own (ranges, syntax) but nothing looked up on the system. A flag given
//! twice keeps its last value, except `--exclude` and `--lookup`, which add up.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use lexopt::prelude::*;

use crate::backend::Kind;
use crate::error::Error;
use crate::filter::Cidr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Auto,
    Named(Kind),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    ZhCn,
    En,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    Help,
    Version,
}

/// What the user typed, typed. `None` means "not given".
#[derive(Debug, Default)]
pub struct LowArgs {
    pub special: Option<Special>,
    pub backend: Option<Backend>,
    pub iface: Option<String>,
    pub duration: Option<u64>,
    pub sample_interval: Option<u64>,
    pub bpftrace_script: Option<PathBuf>,
    pub top: Option<usize>,
    pub quiet: bool,
    pub prometheus_port: Option<u16>,
    pub listen: Option<SocketAddr>,
    pub threshold: Option<u64>,
    pub max_ips: Option<usize>,
    pub state: Option<PathBuf>,
    pub save_interval: Option<u64>,
    pub report: bool,
    pub json: bool,
    pub billing_day: Option<u8>,
    pub geoip_db: Option<PathBuf>,
    pub isp_db: Option<PathBuf>,
    pub qqwry: Option<PathBuf>,
    pub lang: Option<Lang>,
    pub lookup: Vec<IpAddr>,
    pub include_private: bool,
    pub exclude: Vec<Cidr>,
}

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<LowArgs, Error> {
    let mut low = LowArgs::default();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Short('h') | Long("help") => low.special = Some(Special::Help),
            Short('V') | Long("version") => low.special = low.special.or(Some(Special::Version)),
            Short('b') | Long("backend") => low.backend = Some(backend(&text(&mut parser, "--backend")?)?),
            Short('i') | Long("iface") => low.iface = Some(iface(text(&mut parser, "--iface")?)?),
            Short('d') | Long("duration") => {
                low.duration = Some(number(&mut parser, "--duration", 0, u64::from(u32::MAX))?)
            }
            Short('s') | Long("sample-interval") => {
                low.sample_interval = Some(number(&mut parser, "--sample-interval", 1, 3600)?)
            }
            Long("bpftrace-script") => low.bpftrace_script = Some(path(&mut parser, "--bpftrace-script")?),
            Long("top") => low.top = Some(number(&mut parser, "--top", 1, 1_000_000)? as usize),
            Short('q') | Long("quiet") => low.quiet = true,
            Short('p') | Long("prometheus-port") => {
                low.prometheus_port = Some(number(&mut parser, "--prometheus-port", 1, 65535)? as u16)
            }
            Long("listen") => low.listen = Some(parsed(&mut parser, "--listen", "an ADDR:PORT such as 127.0.0.1:9464 or [::]:9464")?),
            Short('t') | Long("prometheus-export-threshold") => {
                low.threshold = Some(number(&mut parser, "--prometheus-export-threshold", 0, u64::MAX)?)
            }
            Long("max-ips") => low.max_ips = Some(number(&mut parser, "--max-ips", 1, u64::from(u32::MAX))? as usize),
            Long("state") => low.state = Some(path(&mut parser, "--state")?),
            Long("report") => low.report = true,
            Long("billing-day") => low.billing_day = Some(number(&mut parser, "--billing-day", 1, 31)? as u8),
            Long("json") => low.json = true,
            Long("save-interval") => low.save_interval = Some(number(&mut parser, "--save-interval", 1, 86_400)?),
            Short('g') | Long("geoip-db") => low.geoip_db = Some(path(&mut parser, "--geoip-db")?),
            Long("isp-db") => low.isp_db = Some(path(&mut parser, "--isp-db")?),
            Long("qqwry") => low.qqwry = Some(path(&mut parser, "--qqwry")?),
            Long("lang") => low.lang = Some(lang(&text(&mut parser, "--lang")?)?),
            Long("lookup") => low.lookup.extend(lookup_ips(&mut parser)?),
            Long("include-private") => low.include_private = true,
            Long("exclude") => low.exclude.extend(cidrs(&text(&mut parser, "--exclude")?)?),
            Value(v) => {
                return Err(Error::usage(format!(
                    "unexpected argument '{}' (see --help)",
                    v.to_string_lossy()
                )))
            }
            other => return Err(usage(other.unexpected())),
        }
    }
    Ok(low)
}

fn usage(err: lexopt::Error) -> Error {
    Error::usage(format!("{err} (see --help)"))
}

fn text(parser: &mut lexopt::Parser, flag: &str) -> Result<String, Error> {
    let value = parser.value().map_err(usage)?;
    value
        .into_string()
        .map_err(|v| Error::usage(format!("{flag}: '{}' is not valid UTF-8", v.to_string_lossy())))
}

fn path(parser: &mut lexopt::Parser, flag: &str) -> Result<PathBuf, Error> {
    let value = parser.value().map_err(usage)?;
    if value.is_empty() {
        return Err(Error::usage(format!("{flag}: the path is empty")));
    }
    Ok(PathBuf::from(value))
}

fn number(parser: &mut lexopt::Parser, flag: &str, min: u64, max: u64) -> Result<u64, Error> {
    let value = text(parser, flag)?;
    match value.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(Error::usage(format!("{flag}: '{value}' is not a whole number from {min} to {max}"))),
    }
}

fn parsed<T: FromStr>(parser: &mut lexopt::Parser, flag: &str, what: &str) -> Result<T, Error> {
    let value = text(parser, flag)?;
    value.parse().map_err(|_| Error::usage(format!("{flag}: '{value}' is not {what}")))
}

fn backend(value: &str) -> Result<Backend, Error> {
    if value == "auto" {
        return Ok(Backend::Auto);
    }
    Kind::from_name(value).map(Backend::Named).ok_or_else(|| {
        let names: Vec<&str> = Kind::ALL.iter().map(|kind| kind.name()).collect();
        Error::usage(format!("--backend: '{value}' is not one of auto, {}", names.join(", ")))
    })
}

fn lang(value: &str) -> Result<Lang, Error> {
    match value {
        "zh-CN" => Ok(Lang::ZhCn),
        "en" => Ok(Lang::En),
        _ => Err(Error::usage(format!("--lang: '{value}' is not one of zh-CN, en"))),
    }
}

/// Interface names reach a child process later, so only what the kernel
/// accepts passes: 1-15 bytes, no '/', no whitespace, not "." or "..".
fn iface(name: String) -> Result<String, Error> {
    let valid = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if valid {
        Ok(name)
    } else {
        Err(Error::usage(format!("--iface: '{name}' is not a valid interface name")))
    }
}

fn cidrs(list: &str) -> Result<Vec<Cidr>, Error> {
    list.split(',')
        .map(|item| item.trim().parse::<Cidr>().map_err(|e| Error::usage(format!("--exclude: {e}"))))
        .collect()
}

fn lookup_ips(parser: &mut lexopt::Parser) -> Result<Vec<IpAddr>, Error> {
    let values = parser.values().map_err(usage)?;
    values
        .map(|v| {
            let v = v.to_string_lossy().into_owned();
            v.parse().map_err(|_| Error::usage(format!("--lookup: '{v}' is not an IP address")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::flags::FLAGS;

    fn parse_str(args: &[&str]) -> Result<LowArgs, Error> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn every_documented_flag_is_parsed() {
        for flag in FLAGS {
            let value = match flag.value {
                None => None,
                Some("auto|nftables|bpftrace|iftop") => Some("bpftrace"),
                Some("IFACE") => Some("eth0"),
                Some("zh-CN|en") => Some("en"),
                Some("IP...") => Some("192.0.2.1"),
                Some("CIDR[,CIDR...]") => Some("192.0.2.0/24"),
                Some("ADDR:PORT") => Some("127.0.0.1:9464"),
                Some("PATH") => Some("/tmp/x"),
                Some("1-31") => Some("15"),
                Some(_) => Some("5"),
            };
            let long = format!("--{}", flag.long);
            let args: Vec<&str> = std::iter::once(long.as_str()).chain(value).collect();
            assert!(parse_str(&args).is_ok(), "{args:?}");
            if let Some(short) = flag.short {
                let short = format!("-{short}");
                let args: Vec<&str> = std::iter::once(short.as_str()).chain(value).collect();
                assert!(parse_str(&args).is_ok(), "{args:?}");
            }
        }
    }

    #[test]
    fn values_are_typed_and_repeatable_lists_add_up() {
        let low = parse_str(&[
            "-b", "bpftrace", "-i", "veth0", "-d", "0", "-s", "5", "--top", "3", "-q",
            "--exclude", "203.0.113.0/24,2001:db8::/32", "--exclude", "198.51.100.7",
            "--include-private", "--lookup", "8.8.8.8", "2001:db8::1",
        ])
        .unwrap();
        assert_eq!(low.backend, Some(Backend::Named(Kind::Bpftrace)));
        assert_eq!(low.iface.as_deref(), Some("veth0"));
        assert_eq!((low.duration, low.sample_interval, low.top), (Some(0), Some(5), Some(3)));
        assert!(low.quiet && low.include_private);
        assert_eq!(low.exclude.len(), 3);
        assert_eq!(low.lookup.len(), 2);
    }

    #[test]
    fn bad_values_are_usage_errors_naming_the_flag() {
        for (args, needle) in [
            (&["-b", "pcap"][..], "--backend"),
            (&["-d", "-1"], "--duration"),
            (&["-d", "abc"], "--duration"),
            (&["-s", "0"], "--sample-interval"),
            (&["-p", "70000"], "--prometheus-port"),
            (&["-p", "0"], "--prometheus-port"),
            (&["--listen", "9464"], "--listen"),
            (&["--lang", "fr"], "--lang"),
            (&["--exclude", "10.0.0.1/8"], "--exclude"),
            (&["--lookup", "example.com"], "--lookup"),
            (&["-i", "a/b"], "--iface"),
            (&["-i", "averyveryverylongname"], "--iface"),
            (&["--top", "0"], "--top"),
            (&["--max-ips", "0"], "--max-ips"),
            (&["--bogus"], "bogus"),
            (&["stray"], "stray"),
            (&["-d"], "-d"),
        ] {
            let err = parse_str(args).expect_err(&format!("{args:?}"));
            assert_eq!(err.exit_code(), 2);
            let msg = err.to_string();
            assert!(msg.contains(needle), "{args:?}: {msg}");
            assert!(!msg.contains('\n'), "one line: {msg}");
        }
    }
}
