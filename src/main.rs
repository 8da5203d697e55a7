//! ip_traffic_monitor_cli: precise per-remote-IP traffic accounting for Linux.
//!
//! The command line is parsed and resolved by [`cli`] into one configuration;
//! [`monitor`] starts a [`backend`] child (bpftrace) whose output one reader
//! thread parses into the [`store`], keeps only the addresses [`filter`]
//! admits, and prints interval tables and the final summary through
//! [`report`]. The main thread owns signals and the run's duration.

mod backend;
mod cli;
mod error;
mod filter;
mod monitor;
mod report;
mod store;
mod sys;

use error::Error;

fn main() {
    let code = match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("ip_traffic_monitor_cli: {err}");
            err.exit_code()
        }
    };
    std::process::exit(code);
}

fn run() -> Result<i32, Error> {
    match cli::parse(std::env::args_os().skip(1))? {
        cli::Parsed::Run(config) => monitor::run(&config),
        cli::Parsed::Done => Ok(0),
    }
}
