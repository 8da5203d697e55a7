//! The resolved configuration the rest of the program reads: defaults
//! applied, `-b auto` decided, the interface turned into the kernel's index,
//! the network namespace identified, and each backend's own parameters
//! built from the flags (backends never see the flags themselves).

use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::flags::{DEFAULT_DURATION, DEFAULT_BILLING_DAY, DEFAULT_MAX_IPS, DEFAULT_SAMPLE_INTERVAL, DEFAULT_SAVE_INTERVAL, DEFAULT_THRESHOLD, DEFAULT_TOP};
use super::lowargs::{self, LowArgs};
use crate::backend::bpftrace::{self, Bpftrace};
use crate::backend::iftop::{self, Iftop};
use crate::backend::nftables::{self, Nftables, table::Device};
use crate::backend::{Backend, Kind};
use crate::error::Error;
use crate::filter::AddressFilter;
use crate::location::Lang;

/// The interface `-i` named, resolved in this network namespace.
#[derive(Clone, Debug)]
pub struct Iface {
    pub name: String,
    pub ifindex: u32,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub backend: Arc<dyn Backend>,
    /// Why this backend: printed at startup.
    pub backend_reason: String,
    /// Where the backend counts (`None`: every interface but loopback).
    pub iface: Option<Iface>,
    /// `None`: run until stopped.
    pub duration: Option<Duration>,
    pub sample_interval: Duration,
    pub top: usize,
    pub quiet: bool,
    pub color: bool,
    /// Where to serve /metrics, if anywhere.
    pub listen: Option<SocketAddr>,
    /// `-t`: bytes (TX + RX) after which an IP gets its own series.
    pub export_threshold: u64,
    pub geoip_db: Option<PathBuf>,
    pub isp_db: Option<PathBuf>,
    pub qqwry: Option<PathBuf>,
    pub lang: Lang,
    /// `--lookup`: print these IPs' labels and exit.
    pub lookup: Vec<IpAddr>,
    /// `--max-ips`: remote IPs held in memory at most.
    pub max_ips: usize,
    /// `--state`: where the totals are kept across runs, and how often saved.
    pub state: Option<PathBuf>,
    pub save_interval: Duration,
    /// `--report`: print what the state holds and exit. `--json`: JSON
    /// lines instead of the console's tables, or the report as JSON.
    pub report: bool,
    pub json: bool,
    /// `--billing-day`: the first day of each billing period.
    pub billing_day: u8,
}

/// What the backends are built from.
struct BackendFlags {
    iface: Option<Iface>,
    sample_interval: Duration,
    filter: AddressFilter,
    script: Option<bpftrace::Script>,
    max_ips: usize,
    /// `--state`: the nftables backend keeps its harvest journal beside it.
    state: Option<PathBuf>,
}

/// A backend ready to start, and the interface it counts on.
type Built = (Arc<dyn Backend>, Option<Iface>);

impl Config {
    pub fn resolve(low: LowArgs) -> Result<Config, Error> {
        let flags = BackendFlags {
            iface: low.iface.map(resolve_iface).transpose()?,
            sample_interval: Duration::from_secs(low.sample_interval.unwrap_or(DEFAULT_SAMPLE_INTERVAL)),
            filter: leave_out_this_host(AddressFilter { include_private: low.include_private, exclude: low.exclude, this_host: Vec::new() }),
            // Read and vetted once, before any backend is chosen: a bad script is an error, not a fallback.
            script: low.bpftrace_script.as_deref().map(bpftrace::Script::load).transpose()?,
            max_ips: low.max_ips.unwrap_or(DEFAULT_MAX_IPS),
            state: low.state.clone(),
        };
        let ((backend, iface), backend_reason) = match low.backend {
            Some(lowargs::Backend::Named(kind)) if kind != Kind::Bpftrace && flags.script.is_some() => {
                return Err(Error::usage(format!("--bpftrace-script is a script for -b bpftrace, not for -b {}", kind.name())));
            }
            Some(lowargs::Backend::Named(kind)) => (build_backend(kind, &flags)?, "chosen with -b".to_string()),
            // --lookup counts nothing: no backend needs to run here.
            _ if !low.lookup.is_empty() || low.report => (build_backend(Kind::Bpftrace, &flags)?, String::new()),
            // A script to run is a choice of bpftrace.
            _ if flags.script.is_some() => (build_backend(Kind::Bpftrace, &flags)?, "chosen by --bpftrace-script".to_string()),
            Some(lowargs::Backend::Auto) | None => {
                choose_backend(Kind::ALL.iter().map(|kind| (kind.name(), build_backend(*kind, &flags))))?
            }
        };
        if low.report && low.state.is_none() {
            return Err(Error::usage("--report reads a state file: give it with --state PATH"));
        }
        let duration = low.duration.unwrap_or(DEFAULT_DURATION);
        let listen = match (low.prometheus_port, low.listen) {
            (Some(_), Some(_)) => {
                return Err(Error::usage("-p/--prometheus-port and --listen are alternatives: give one"))
            }
            (Some(port), None) => Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))),
            (None, listen) => listen,
        };
        Ok(Config {
            backend,
            backend_reason,
            iface,
            duration: (duration > 0).then(|| Duration::from_secs(duration)),
            sample_interval: flags.sample_interval,
            top: low.top.unwrap_or(DEFAULT_TOP),
            quiet: low.quiet,
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            listen,
            export_threshold: low.threshold.unwrap_or(DEFAULT_THRESHOLD),
            geoip_db: low.geoip_db,
            isp_db: low.isp_db,
            qqwry: low.qqwry,
            lang: match low.lang {
                Some(lowargs::Lang::En) => Lang::En,
                Some(lowargs::Lang::ZhCn) | None => Lang::ZhCn,
            },
            lookup: low.lookup,
            max_ips: flags.max_ips,
            state: low.state,
            save_interval: Duration::from_secs(low.save_interval.unwrap_or(DEFAULT_SAVE_INTERVAL)),
            report: low.report,
            json: low.json,
            billing_day: low.billing_day.unwrap_or(DEFAULT_BILLING_DAY),
        })
    }
}

/// The nftables harvest journal of state file `state`: beside it,
/// `STATE.journal`.
fn journal_path(state: &std::path::Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

/// Each backend's own parameters, from the flags.
fn build_backend(kind: Kind, flags: &BackendFlags) -> Result<Built, Error> {
    Ok(match kind {
        Kind::Nftables => {
            let params = nftables::Params {
                sample_interval: flags.sample_interval,
                filter: flags.filter.clone(),
                iface: flags.iface.as_ref().map(|iface| Device { name: iface.name.clone(), index: iface.ifindex }),
                set_size: u32::try_from(flags.max_ips).unwrap_or(u32::MAX),
                journal: flags.state.as_deref().map(journal_path),
            };
            (Arc::new(Nftables::new(params)), flags.iface.clone())
        }
        Kind::Bpftrace => {
            let params = bpftrace::Params {
                script: flags.script.clone(),
                sample_interval: flags.sample_interval,
                netns_inode: own_netns_inode()?,
                ifindex: flags.iface.as_ref().map_or(0, |iface| iface.ifindex),
                filter: flags.filter.clone(),
            };
            (Arc::new(Bpftrace::new(params)), flags.iface.clone())
        }
        Kind::Iftop => {
            // iftop captures on one interface: the default route's.
            let iface = match &flags.iface {
                Some(iface) => iface.clone(),
                None => resolve_iface(iftop::direction::default_route_iface().ok_or_else(|| {
                    Error::usage("iftop needs an interface and there is no default route: name one with -i")
                })?)?,
            };
            let params = iftop::Params {
                iface: iface.name.clone(),
                sample_interval: flags.sample_interval,
                filter: flags.filter.clone(),
            };
            (Arc::new(Iftop::new(params)), Some(iface))
        }
    })
}

/// `-b auto`: the first backend that can run here, with the reason.
fn choose_backend<'a>(
    candidates: impl Iterator<Item = (&'a str, Result<Built, Error>)>,
) -> Result<(Built, String), Error> {
    let mut passed_over: Vec<String> = Vec::new();
    for (name, candidate) in candidates {
        match candidate.and_then(|built| built.0.probe().map(|()| built)) {
            Ok(built) if passed_over.is_empty() => return Ok((built, format!("auto: {name} can run here"))),
            Ok(built) => return Ok((built, format!("auto: {}", passed_over.join("; ")))),
            Err(err) => passed_over.push(format!("not {name}, because {err}")),
        }
    }
    Err(Error::fatal(format!("no backend can run here: {}", passed_over.join("; "))))
}

/// `filter`, leaving out this host's own addresses and the broadcast
/// addresses of its IPv4 subnets, as they are at start (docs/ACCOUNTING.md,
/// "Which remote addresses count"). Neither is a peer: a packet from one is
/// this host's own multicast or broadcast looped back to it, and nftables
/// sees a broadcast it sends twice in postrouting (the looped copy too).
/// Both are dropped in user space ([`AddressFilter::this_host`]), whole:
/// what the kernel counted for them twice never reaches a report.
fn leave_out_this_host(filter: AddressFilter) -> AddressFilter {
    let addresses = crate::sys::interface_addresses();
    let mut broadcasts = Vec::new();
    for address in &addresses {
        broadcasts.extend(address.broadcast);
        if let (IpAddr::V4(addr), Some(IpAddr::V4(netmask))) = (address.addr, address.netmask) {
            broadcasts.extend(crate::filter::subnet_broadcast(addr, netmask).map(IpAddr::V4));
        }
    }
    filter.with_this_host(addresses.iter().map(|a| a.addr).chain(broadcasts))
}

fn resolve_iface(name: String) -> Result<Iface, Error> {
    let ifindex = crate::sys::interface_index(&name)
        .ok_or_else(|| Error::usage(format!("--iface: no interface '{name}' here (see `ip link`)")))?;
    Ok(Iface { name, ifindex })
}

fn own_netns_inode() -> Result<u64, Error> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .map_err(|e| Error::fatal(format!("cannot read /proc/self/ns/net: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::lowargs;
    use std::ffi::OsString;

    /// Every test names its backend: `-b auto` would depend on what this
    /// machine has installed.
    fn resolve(args: &[&str]) -> Result<Config, Error> {
        let args = ["-b", "bpftrace"].iter().chain(args);
        Config::resolve(lowargs::parse(args.map(OsString::from))?)
    }

    #[test]
    fn defaults_follow_the_documented_ones() {
        let config = resolve(&[]).unwrap();
        assert_eq!(config.backend.name(), "bpftrace");
        assert_eq!(config.backend_reason, "chosen with -b");
        assert_eq!(config.duration, Some(Duration::from_secs(30)));
        assert_eq!(config.sample_interval, Duration::from_secs(2));
        assert_eq!(config.top, 10);
        assert!(config.iface.is_none() && !config.quiet);
        assert!(resolve(&["-d", "0"]).unwrap().duration.is_none());
        assert_eq!((config.listen, config.export_threshold), (None, 1_048_576));
    }

    #[test]
    fn a_bpftrace_script_chooses_bpftrace_and_no_other_backend_takes_one() {
        let script = std::env::temp_dir().join(format!("itm-hiargs-{}.bt", std::process::id()));
        std::fs::write(&script, "BEGIN { printf(\"@attached\\n\"); }\n").unwrap();
        let path = script.to_str().unwrap();
        let parse = |args: &[&str]| Config::resolve(lowargs::parse(args.iter().map(OsString::from))?);
        // Only a root-owned script is accepted (it runs as root).
        if crate::sys::is_root() {
            let config = parse(&["--bpftrace-script", path]).unwrap();
            assert_eq!((config.backend.name(), config.backend_reason.as_str()), ("bpftrace", "chosen by --bpftrace-script"));
        }
        for other in ["nftables", "iftop"] {
            let err = parse(&["-b", other, "-i", "lo", "--bpftrace-script", path]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{err}");
            assert!(err.to_string().contains("--bpftrace-script is a script for -b bpftrace"), "{err}");
        }
        let _ = std::fs::remove_file(&script);
    }

    #[test]
    fn listen_address_comes_from_either_flag_but_not_both() {
        assert_eq!(resolve(&["-p", "9090"]).unwrap().listen, Some("0.0.0.0:9090".parse().unwrap()));
        assert_eq!(resolve(&["--listen", "[::1]:9464"]).unwrap().listen, Some("[::1]:9464".parse().unwrap()));
        assert_eq!(resolve(&["-p", "1", "--listen", "127.0.0.1:2"]).unwrap_err().exit_code(), 2);
        assert_eq!(resolve(&["-t", "0"]).unwrap().export_threshold, 0);
    }

    #[test]
    fn loopback_resolves_and_a_missing_interface_is_a_usage_error() {
        assert_eq!(resolve(&["-i", "lo"]).unwrap().iface.unwrap().ifindex, 1);
        let err = resolve(&["-i", "nosuchif0"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("nosuchif0"));
    }

    /// A backend that can or cannot run, for `-b auto`.
    #[derive(Debug)]
    struct Fake(&'static str, bool);

    impl Backend for Fake {
        fn name(&self) -> &'static str {
            self.0
        }
        fn probe(&self) -> Result<(), Error> {
            if self.1 { Ok(()) } else { Err(Error::fatal(format!("{} is missing", self.0))) }
        }
        fn method(&self) -> String {
            String::new()
        }
        fn runner(&self) -> Result<crate::backend::Runner, Error> {
            Err(Error::fatal("a fake runs nothing"))
        }
        fn report_interval(&self) -> std::time::Duration {
            std::time::Duration::from_secs(2)
        }
        fn explain_start_failure(&self, _: &[String]) -> String {
            String::new()
        }
    }

    fn fake(name: &'static str, runs: bool) -> (&'static str, Result<Built, Error>) {
        (name, Ok((Arc::new(Fake(name, runs)), None)))
    }

    #[test]
    fn auto_takes_the_first_backend_that_can_run_and_says_why() {
        let ((chosen, _), why) = choose_backend([fake("a", false), fake("b", true), fake("c", true)].into_iter()).unwrap();
        assert_eq!((chosen.name(), why.as_str()), ("b", "auto: not a, because a is missing"));
        let ((chosen, _), why) = choose_backend([fake("a", true), fake("b", true)].into_iter()).unwrap();
        assert_eq!((chosen.name(), why.as_str()), ("a", "auto: a can run here"));
        let unbuildable = ("b", Err(Error::usage("no interface")));
        let err = choose_backend([fake("a", false), unbuildable].into_iter()).unwrap_err();
        assert_eq!(err.to_string(), "no backend can run here: not a, because a is missing; not b, because no interface");
    }
}
