//! Location labels through the real binary's `--lookup`: MaxMind's test
//! databases in zh-CN and English, ISP and ASN, damaged files, and 纯真
//! files (qqwry.dat and ipdb) written by the test writers; then end to end
//! in the lab, where /metrics carries the labels of a database covering the
//! lab's addresses.

mod lab;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ip_traffic_monitor_cli::location::testing::{QqwryLayout, ipdb, qqwry_dat};
use lab::{BIN, Lab, TempFile};

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/maxmind").join(name).to_string_lossy().into_owned()
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run the binary")
}

/// `--lookup` rows: IP → [country, province, city, isp].
fn lookup(args: &[&str], ips: &[&str]) -> Vec<[String; 4]> {
    let mut all = vec!["--lookup"];
    all.extend_from_slice(ips);
    all.extend_from_slice(args);
    let out = run(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{all:?}: {}", String::from_utf8_lossy(&out.stderr));
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("remote_ip\tcountry\tprovince\tcity\tisp"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            [f[1], f[2], f[3], f[4]].map(str::to_string)
        })
        .collect()
}

fn row(values: [&str; 4]) -> [String; 4] {
    values.map(str::to_string)
}

#[test]
fn maxmind_city_and_country_in_chinese_and_english() {
    let city = data("GeoIP2-City-Test.mmdb");
    let ips = ["214.0.1.1", "89.160.20.128", "81.2.69.142", "2001:218::1", "2001:250::1", "198.51.100.7"];
    assert_eq!(
        lookup(&["-g", &city], &ips),
        vec![
            row(["澳大利亚", "Victoria", "墨尔本", "Unknown"]),
            row(["瑞典", "Östergötland County", "林雪平", "Unknown"]),
            row(["英国", "England", "London", "Unknown"]),
            row(["日本", "Unknown", "Unknown", "Unknown"]),
            row(["中国", "Unknown", "Unknown", "Unknown"]),
            row(["Unknown"; 4]),
        ]
    );
    assert_eq!(
        lookup(&["-g", &city, "--lang", "en"], &ips[..3]),
        vec![
            row(["Australia", "Victoria", "Melbourne", "Unknown"]),
            row(["Sweden", "Östergötland County", "Linköping", "Unknown"]),
            row(["United Kingdom", "England", "London", "Unknown"]),
        ]
    );
    assert_eq!(lookup(&["-g", &data("GeoLite2-City-Test.mmdb")], &["89.160.20.128"]), vec![row(["瑞典", "Östergötland County", "林雪平", "Unknown"])]);
    assert_eq!(
        lookup(&["-g", &data("GeoIP2-Country-Test.mmdb"), "--lang", "en"], &["89.160.20.128", "2001:218::1"]),
        vec![row(["Sweden", "Unknown", "Unknown", "Unknown"]), row(["Japan", "Unknown", "Unknown", "Unknown"])]
    );
}

#[test]
fn isp_and_asn_databases_name_the_carrier() {
    assert_eq!(
        lookup(&["--isp-db", &data("GeoIP2-ISP-Test.mmdb")], &["1.128.0.1", "::1.128.0.1"]),
        vec![row(["Unknown", "Unknown", "Unknown", "Telstra Internet"]); 2],
    );
    assert_eq!(
        lookup(&["--isp-db", &data("GeoLite2-ASN-Test.mmdb")], &["1.0.0.1", "12.81.92.1"]),
        vec![row(["Unknown", "Unknown", "Unknown", "AS15169 Google Inc."]), row(["Unknown", "Unknown", "Unknown", "AS7018 AT&T Services"])]
    );
}

#[test]
fn a_database_of_the_wrong_kind_or_missing_is_one_clear_line() {
    for (args, needle) in [
        (vec!["-g", &data("GeoLite2-ASN-Test.mmdb")[..]], "takes a City or Country database"),
        (vec!["--isp-db", &data("GeoIP2-City-Test.mmdb")[..]], "takes a GeoIP2-ISP or GeoLite2-ASN database"),
        (vec!["-g", "/nonexistent/GeoLite2-City.mmdb"], "No such file"),
        (vec!["--qqwry", "/nonexistent/qqwry.dat"], "No such file"),
        (vec!["--qqwry", &data("GeoIP2-City-Test.mmdb")[..]], "not a qqwry.dat"),
        // A directory or a device given as a database (the mapping would say "No such device").
        (vec!["--qqwry", "/tmp"], "/tmp: a directory; give the database file"),
        (vec!["-g", "/tmp"], "/tmp: a directory; give the database file"),
        (vec!["--isp-db", "/dev/null"], "not a regular file; give the database file"),
    ] {
        let mut all = vec!["--lookup", "8.8.8.8"];
        all.extend(args.iter().copied());
        let out = run(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{all:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{all:?}: {stderr}");
    }
}

/// An ipdb file cut short, one with a byte more, and one whose metadata
/// is not whole JSON: one line and exit 1, as the official readers refuse
/// them ("database size error"); --lookup without any database says so.
#[test]
fn a_cut_or_malformed_ipdb_and_a_lookup_without_database_are_refused() {
    let whole = ipdb(&["country_name", "region_name", "city_name", "owner_domain", "isp_domain"], &[
        ("14.0.0.0".parse().expect("ip"), 96 + 24, vec!["中国", "广东", "深圳", "", "电信"]),
    ]);
    let meta_len = u32::from_be_bytes(whole[..4].try_into().expect("len")) as usize;
    let mut longer = whole.clone();
    longer.extend([0; 9]);
    let mut broken_json = whole.clone();
    let colon = 4 + whole[4..4 + meta_len].iter().position(|&b| b == b':').expect("a colon");
    broken_json[colon] = b' ';
    for (name, bytes, needle) in [
        ("cut.ipdb", &whole[..whole.len() * 3 / 4], "database size error"),
        ("longer.ipdb", &longer[..], "database size error"),
        ("json.ipdb", &broken_json[..], "metadata is not the JSON object"),
    ] {
        let file = TempFile::new(name, bytes);
        let out = run(&["--lookup", "14.0.0.9", "--qqwry", file.path()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{name}: {stderr}");
    }
    let file = TempFile::new("whole.ipdb", &whole);
    let out = run(&["--lookup", "14.0.0.9", "--qqwry", file.path()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("14.0.0.9\t中国\t广东省\t深圳市\t电信"), "{out:?}");
    let out = run(&["--lookup", "14.0.0.9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--lookup needs a location database"), "{out:?}");
}

#[test]
fn damaged_maxmind_files_give_an_error_or_unknown_never_a_panic() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data("bad-data")).expect("bad-data").map(|e| e.expect("entry").path()).collect();
    files.push(data("GeoIP2-City-Test-Broken-Double-Format.mmdb").into());
    files.push(data("GeoIP2-City-Test-Invalid-Node-Count.mmdb").into());
    assert!(files.len() >= 20);
    for file in &files {
        let file = file.to_string_lossy();
        for flag in ["-g", "--isp-db"] {
            let out = run(&["--lookup", "1.1.1.1", "2001:db8::1", "81.2.69.160", "2.125.160.216", flag, &file]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            println!("{file} {flag}: exit {:?} {}", out.status.code(), stderr.trim());
            assert!(matches!(out.status.code(), Some(0) | Some(1)), "{file} {flag}: {:?} {stderr}", out.status);
            assert!(!stderr.contains("panicked"), "{file}: {stderr}");
            if out.status.code() == Some(1) {
                assert_eq!(stderr.lines().count(), 1, "{file}: {stderr}");
            }
        }
    }
}

fn v4(s: &str) -> u32 {
    u32::from(s.parse::<std::net::Ipv4Addr>().expect("IPv4"))
}

fn write_temp(name: &str, bytes: &[u8]) -> lab::TempFile {
    lab::TempFile::new(name, bytes)
}

#[test]
fn chunzhen_qqwry_dat_and_ipdb_through_lookup() {
    let dat = write_temp(
        "qqwry.dat",
        &qqwry_dat(&[
            (v4("1.12.0.0"), v4("1.15.255.255"), "北京市", "腾讯云", QqwryLayout::RedirectBoth),
            (v4("14.0.0.0"), v4("14.0.0.255"), "广东省深圳市", "电信", QqwryLayout::RedirectPlace),
            (v4("36.0.0.0"), v4("36.0.0.255"), "新疆乌鲁木齐市", "移动", QqwryLayout::RedirectBothThenPlace),
            (v4("38.0.0.0"), v4("38.0.0.255"), "美国", " CZ88.NET", QqwryLayout::Inline),
        ]),
    );
    assert_eq!(
        lookup(&["--qqwry", dat.path()], &["1.13.0.1", "14.0.0.9", "36.0.0.1", "38.0.0.1", "2001:db8::1"]),
        vec![
            row(["中国", "北京市", "北京市", "腾讯云"]),
            row(["中国", "广东省", "深圳市", "电信"]),
            row(["中国", "新疆维吾尔自治区", "乌鲁木齐市", "移动"]),
            row(["美国", "Unknown", "Unknown", "Unknown"]),
            row(["Unknown"; 4]),
        ]
    );
    let fields = ["country_name", "region_name", "city_name", "owner_domain", "isp_domain"];
    let db = write_temp(
        "qqwry.ipdb",
        &ipdb(&fields, &[("2001:db8:2::".parse().unwrap(), 48, vec!["中国", "浙江", "杭州", "", "阿里云"])]),
    );
    // The ipdb's city field "杭州" gets the 市 qqwry.dat writes (docs/LOCATION.md).
    assert_eq!(lookup(&["--qqwry", db.path()], &["2001:db8:2::7"]), vec![row(["中国", "浙江省", "杭州市", "阿里云"])]);

    // Truncated files: one clear line at startup.
    let full = std::fs::read(dat.path()).expect("read");
    let cut = write_temp("cut.dat", &full[..full.len() - 3]);
    let out = run(&["--lookup", "1.1.1.1", "--qqwry", cut.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"));
}

#[test]
fn metrics_carry_the_labels_of_a_database_covering_the_lab() {
    if !lab::require("metrics_carry_the_labels_of_a_database_covering_the_lab", &["promtool"]) {
        return;
    }
    let dat = write_temp(
        "lab-qqwry.dat",
        &qqwry_dat(&[
            (v4("198.51.100.0"), v4("198.51.100.127"), "广东省深圳市", "电信", QqwryLayout::RedirectPlace),
            (v4("203.0.113.0"), v4("203.0.113.255"), "美国", "\"Quoted\" \\ ISP", QqwryLayout::Inline),
        ]),
    );
    let mut lab = Lab::new();
    lab.start_iperf_server();
    let mut monitor = lab.spawn_in_host(&[BIN, "-i", "vh", "-d", "0", "-s", "1", "-t", "0", "-p", "9464", "--qqwry", dat.path()]);
    monitor.wait_for_stderr("counting with", Duration::from_secs(120));
    lab.iperf(&["-c", "198.51.100.7", "-n", "2M"]);
    lab.udp_flow(true, "203.0.113.9", 100_000);
    let metrics = lab.scrape_when_counted(9464, &["198.51.100.7", "203.0.113.9"]);
    drop(monitor);
    for line in [
        "ip_traffic_tx_bytes_total{remote_ip=\"198.51.100.7\",country=\"中国\",province=\"广东省\",city=\"深圳市\",isp=\"电信\"}",
        "ip_traffic_tx_bytes_total{remote_ip=\"203.0.113.9\",country=\"美国\",province=\"Unknown\",city=\"Unknown\",isp=\"\\\"Quoted\\\" \\\\ ISP\"}",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    let (ok, said) = lab::promtool_check(&metrics);
    assert!(ok, "promtool: {said}");
}
