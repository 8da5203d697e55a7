//! The command line. [`flags`] defines every flag once, with its help text;
//! [`lowargs`] turns `argv` into typed values and rejects malformed ones
//! without looking at the system; [`hiargs`] resolves those values against
//! the system (interfaces, network namespace, features not built yet) into
//! the one [`Config`] the rest of the program reads.

mod flags;
mod hiargs;
mod lowargs;

use std::ffi::OsString;

pub use hiargs::{BackendKind, Config};

use crate::error::Error;

pub enum Parsed {
    Run(Config),
    /// `--help` or `--version` was answered; nothing more to do.
    Done,
}

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, Error> {
    let low = lowargs::parse(args)?;
    match low.special {
        Some(lowargs::Special::Help) => {
            print!("{}", flags::help_text());
            Ok(Parsed::Done)
        }
        Some(lowargs::Special::Version) => {
            println!("ip_traffic_monitor_cli {}", env!("CARGO_PKG_VERSION"));
            Ok(Parsed::Done)
        }
        None => Ok(Parsed::Run(Config::resolve(low)?)),
    }
}
