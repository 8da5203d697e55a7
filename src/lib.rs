//! ip_traffic_monitor_cli: precise per-remote-IP traffic accounting for Linux.
//! (The binary is `src/main.rs`; this library lets benchmarks and tests reach
//! the parser, store and renderer directly.)
//!
//! The command line is parsed and resolved by [`cli`] into one configuration;
//! [`monitor`] starts a [`backend`] (an nftables harvest thread, or a
//! bpftrace or iftop child whose output one reader thread parses) that feeds
//! the [`store`], keeps only the addresses [`filter`] admits, and prints
//! interval tables and the final summary through [`report`]; the
//! [`exporter`] serves the store to Prometheus from its own threads; with
//! `--state` the totals are loaded from and saved to a file by [`state`].
//! The main thread owns signals and the run's duration. Addresses go from
//! text and back through [`ip_text`].

pub mod backend;
pub mod cli;
pub mod error;
pub mod exporter;
pub mod filter;
pub mod ip_text;
pub mod location;
pub mod monitor;
pub mod period;
pub mod report;
pub mod state;
pub mod store;
mod sys;

/// What several modules' unit tests share.
#[cfg(test)]
mod testing {
    /// A small deterministic generator: the same cases on every run.
    pub fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }
}
