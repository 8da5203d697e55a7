//! Every record of the real 纯真 databases (qqwry.dat and the ipdb edition,
//! fetched by `make realdb`, never committed): read by independent readers
//! (the PyPI packages qqwry-py3 and ipip-ipdb) and labelled by the mapping
//! of docs/LOCATION.md written a second time in Python
//! (tests/realdb/oracle.py), against what the monitor's `--lookup` says
//! for one address of each record. At least 99.9 % must agree, and every
//! difference must be one listed below with its reason.

mod lab;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use lab::BIN;

const REALDB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.cache/realdb");

/// Records whose labels differ for a known reason: (edition, address, reason).
/// None today.
const KNOWN_DIFFERENCES: &[(&str, &str, &str)] = &[];

fn sweep(edition: &str, file: &str) {
    let db = format!("{REALDB}/{file}");
    let oracle = Command::new("python3")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PYTHONPATH", format!("{REALDB}/py"))
        .args(["tests/realdb/oracle.py", edition, &db])
        .output()
        .expect("python3");
    assert!(oracle.status.success(), "oracle: {}", String::from_utf8_lossy(&oracle.stderr));
    let expected: Vec<Vec<String>> =
        String::from_utf8_lossy(&oracle.stdout).lines().map(|l| l.split('\t').map(str::to_string).collect()).collect();
    assert!(expected.len() > 100_000, "{edition}: only {} records", expected.len());
    let mut ours = BTreeMap::new();
    for chunk in expected.chunks(20_000) {
        let ips: Vec<&str> = chunk.iter().map(|r| r[0].as_str()).collect();
        let out = Command::new(BIN).args(["--qqwry", &db, "--lookup"]).args(&ips).output().expect("--lookup");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
            let fields: Vec<String> = line.split('\t').map(str::to_string).collect();
            ours.insert(fields[0].clone(), fields[1..].to_vec());
        }
    }
    let mut differences = Vec::new();
    for record in &expected {
        let want = &record[1..5];
        let got = ours.get(&record[0]);
        if got.map(Vec::as_slice) != Some(want) {
            differences.push(format!("{} [{}]: oracle {want:?}, monitor {got:?}", record[0], record[5]));
        }
    }
    let agree = 1.0 - differences.len() as f64 / expected.len() as f64;
    println!("{edition}: {} records, {} differ, {:.4} % agree", expected.len(), differences.len(), 100.0 * agree);
    for d in differences.iter().take(20) {
        println!("  {d}");
    }
    let unexplained: Vec<&String> = differences
        .iter()
        .filter(|d| !KNOWN_DIFFERENCES.iter().any(|(e, ip, _)| *e == edition && d.starts_with(&format!("{ip} "))))
        .collect();
    assert!(agree >= 0.999, "{edition}: {:.4} % agree", 100.0 * agree);
    assert!(unexplained.is_empty(), "{edition}: differences without a listed reason: {:#?}", &unexplained[..unexplained.len().min(20)]);
}

fn realdb_present(test: &str) -> bool {
    let files = ["qqwry.dat", "qqwry.ipdb", "py/ipdb", "py/qqwry"];
    if files.iter().all(|f| Path::new(REALDB).join(f).exists()) {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "{test}: the real databases are missing under CI: run make realdb");
    println!("skipped {test}: the real databases are not fetched (make realdb)");
    false
}

#[test]
fn every_record_of_qqwry_dat_gets_the_documented_labels() {
    if realdb_present("every_record_of_qqwry_dat_gets_the_documented_labels") {
        sweep("dat", "qqwry.dat");
    }
}

#[test]
fn every_record_of_the_ipdb_edition_gets_the_documented_labels() {
    if realdb_present("every_record_of_the_ipdb_edition_gets_the_documented_labels") {
        sweep("ipdb", "qqwry.ipdb");
    }
}
