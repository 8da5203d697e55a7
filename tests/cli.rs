//! The real binary's command line: help and version, one-line errors with
//! exit code 2 for bad values, and clear failures when it cannot run.

mod lab;

use std::process::{Command, Output};

use lab::BIN;

fn monitor(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run the binary")
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr).lines().map(str::to_string).collect()
}

/// Every flag of README's command-line table.
const DOCUMENTED_FLAGS: [&str; 25] = [
    "-b, --backend", "-i, --iface", "-d, --duration", "-s, --sample-interval",
    "-p, --prometheus-port", "--listen", "-g, --geoip-db", "--isp-db", "--qqwry", "--lang",
    "--lookup", "-t, --prometheus-export-threshold", "--include-private", "--exclude",
    "--max-ips", "--top", "-q, --quiet", "--bpftrace-script", "--state", "--save-interval", "--billing-day", "--report", "--json", "-h, --help", "-V, --version",
];

#[test]
fn help_lists_every_flag_with_defaults() {
    let out = monitor(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in DOCUMENTED_FLAGS {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    for default in ["[default: auto]", "[default: 30]", "[default: 2]", "[default: 1048576]", "[default: zh-CN]", "[default: 10]", "[default: 300]"] {
        assert!(help.contains(default), "--help lacks {default}");
    }
    assert_eq!(monitor(&["-h"]).stdout, out.stdout);
}

#[test]
fn version_prints_the_package_version() {
    let out = monitor(&["-V"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("ip_traffic_monitor_cli {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn bad_values_give_one_line_and_exit_2() {
    for args in [
        &["-b", "pcap"][..],
        &["-d", "ten"],
        &["-d", "-5"],
        &["-s", "0"],
        &["-p", "65536"],
        &["--listen", "localhost"],
        &["--lang", "de"],
        &["--exclude", "300.0.0.0/8"],
        &["--exclude", "198.51.100.7/24"],
        &["--lookup", "nonsense"],
        &["-i", "nosuchif0"],
        &["-i", "../etc"],
        &["--top", "-1"],
        &["--unknown"],
        &["extra"],
        &["-s"],
        &["-p", "9090", "--listen", "127.0.0.1:9090"],
        &["--max-ips", "0"],
    ] {
        let out = monitor(args);
        let lines = stderr_lines(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {lines:?}");
        assert_eq!(lines.len(), 1, "{args:?}: one line, got {lines:?}");
        assert!(lines[0].starts_with("ip_traffic_monitor_cli: "), "{lines:?}");
        assert!(!lines[0].contains("panicked"), "{lines:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn not_root_is_a_clear_error() {
    let out = if lab::is_root() {
        if !lab::on_path("setpriv") {
            assert!(std::env::var_os("CI").is_none(), "CI needs setpriv (util-linux)");
            eprintln!("SKIPPED not_root_is_a_clear_error: needs setpriv to drop root");
            return;
        }
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN, "-d", "1"])
            .output()
            .expect("setpriv")
    } else {
        monitor(&["-d", "1"])
    };
    let lines = stderr_lines(&out);
    assert_eq!(out.status.code(), Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("must run as root"), "{lines:?}");
}

#[test]
fn missing_bpftrace_is_a_clear_error_with_the_install_hint() {
    if !lab::is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        eprintln!("SKIPPED missing_bpftrace_is_a_clear_error_with_the_install_hint: needs root");
        return;
    }
    // Neither installed: hidden in a mount namespace of the run's own; and
    // nftables not permitted (no CAP_NET_ADMIN, as in a container).
    let without = |args: &[&str]| {
        let mut cmd = vec!["-m", "--propagation", "private"];
        let no_net_admin = ["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin", BIN];
        let wrapped = lab::without_programs(&["bpftrace", "iftop"], &[&no_net_admin[..], args].concat());
        cmd.extend(wrapped.iter().map(String::as_str));
        Command::new("unshare").args(&cmd).output().expect("run")
    };
    for args in [&["-b", "bpftrace", "-d", "1"][..], &["-d", "1"]] {
        let out = without(args);
        let lines = stderr_lines(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {lines:?}");
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        assert!(lines[0].contains("bpftrace not found") && lines[0].contains("apt-get install bpftrace"), "{lines:?}");
    }
    let out = without(&["-d", "1"]);
    // `-b auto` says why it passed over each backend, in the order it tried them.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no backend can run here: not nftables, because not permitted"), "auto names all three: {said}");
    assert!(said.contains("; not bpftrace, because bpftrace not found"), "auto names all three: {said}");
    assert!(said.contains("; not iftop, because iftop not found in /usr/local/sbin, "), "auto names all three: {said}");
    assert!(said.contains("; install it: apt-get install iftop"), "{said}");
}
