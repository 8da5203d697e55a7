//! The resolved configuration the rest of the program reads: defaults
//! applied, `-b auto` decided, the interface turned into the kernel's index,
//! the network namespace identified, and flags whose feature is not built
//! yet refused rather than silently ignored.

use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::flags::{DEFAULT_DURATION, DEFAULT_MAX_IPS, DEFAULT_SAMPLE_INTERVAL, DEFAULT_THRESHOLD, DEFAULT_TOP};
use super::lowargs::{self, Backend, LowArgs};
use crate::error::Error;
use crate::filter::AddressFilter;
use crate::location::Lang;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Bpftrace,
    Iftop,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Bpftrace => "bpftrace",
            BackendKind::Iftop => "iftop",
        }
    }
}

/// The interface `-i` named, resolved in this network namespace.
#[derive(Clone, Debug)]
pub struct Iface {
    pub name: String,
    pub ifindex: u32,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub backend: BackendKind,
    /// Why this backend: printed at startup.
    pub backend_reason: String,
    pub iface: Option<Iface>,
    /// Inode of this process's network namespace: the host being measured.
    pub netns_inode: u64,
    /// `None`: run until stopped.
    pub duration: Option<Duration>,
    pub sample_interval: Duration,
    pub bpftrace_script: Option<PathBuf>,
    pub top: usize,
    pub quiet: bool,
    pub color: bool,
    pub filter: AddressFilter,
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
}

impl Config {
    pub fn resolve(low: LowArgs) -> Result<Config, Error> {
        let (backend, backend_reason) = match low.backend.unwrap_or(Backend::Auto) {
            Backend::Bpftrace => (BackendKind::Bpftrace, "chosen with -b".to_string()),
            Backend::Iftop => (BackendKind::Iftop, "chosen with -b".to_string()),
            // --lookup counts nothing: no backend needs to exist.
            Backend::Auto if !low.lookup.is_empty() => (BackendKind::Bpftrace, String::new()),
            Backend::Auto => choose_backend()?,
        };
        let iface = match (low.iface, backend) {
            (None, BackendKind::Iftop) if !low.lookup.is_empty() => None,
            (Some(name), _) => Some(resolve_iface(name)?),
            // iftop captures on one interface: the default route's.
            (None, BackendKind::Iftop) => {
                let name = crate::backend::direction::default_route_iface().ok_or_else(|| {
                    Error::usage("iftop needs an interface and there is no default route: name one with -i")
                })?;
                Some(resolve_iface(name)?)
            }
            (None, BackendKind::Bpftrace) => None,
        };
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
            netns_inode: own_netns_inode()?,
            duration: (duration > 0).then(|| Duration::from_secs(duration)),
            sample_interval: Duration::from_secs(low.sample_interval.unwrap_or(DEFAULT_SAMPLE_INTERVAL)),
            bpftrace_script: low.bpftrace_script,
            top: low.top.unwrap_or(DEFAULT_TOP),
            quiet: low.quiet,
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            filter: AddressFilter { include_private: low.include_private, exclude: low.exclude },
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
            max_ips: low.max_ips.unwrap_or(DEFAULT_MAX_IPS),
        })
    }
}

/// `-b auto`: bpftrace where it can run here, else iftop; with the reason.
fn choose_backend() -> Result<(BackendKind, String), Error> {
    let bpftrace = crate::backend::bpftrace::find().and_then(|_| crate::backend::bpftrace::check_kernel());
    match bpftrace {
        Ok(()) => Ok((BackendKind::Bpftrace, "auto: bpftrace is installed and the kernel has tracefs and BTF".into())),
        Err(_) if crate::backend::bpftrace::find_program("iftop").is_some() => {
            Ok((BackendKind::Iftop, format!("auto: not bpftrace, because {}", bpftrace.unwrap_err())))
        }
        Err(why) => Err(Error::fatal(format!(
            "no backend can run here: {why}; and iftop is not installed either (apt-get install iftop)"
        ))),
    }
}


fn resolve_iface(name: String) -> Result<Iface, Error> {
    let path = format!("/sys/class/net/{name}/ifindex");
    let ifindex = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .ok_or_else(|| {
            Error::usage(format!("--iface: no interface '{name}' here (see `ip link`)"))
        })?;
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

    fn resolve(args: &[&str]) -> Result<Config, Error> {
        Config::resolve(lowargs::parse(args.iter().map(OsString::from))?)
    }

    #[test]
    fn defaults_follow_the_spec() {
        let config = resolve(&["-b", "bpftrace"]).unwrap();
        assert_eq!(config.backend, BackendKind::Bpftrace);
        assert_eq!(config.duration, Some(Duration::from_secs(30)));
        assert_eq!(config.sample_interval, Duration::from_secs(2));
        assert_eq!(config.top, 10);
        assert!(config.iface.is_none() && !config.quiet && !config.filter.include_private);
        assert!(resolve(&["-d", "0"]).unwrap().duration.is_none());
        assert_eq!((config.listen, config.export_threshold), (None, 1_048_576));
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
}
