//! The command line. [`flags`] defines every flag once, with its help text;
//! [`lowargs`] turns `argv` into typed values and rejects malformed ones
//! without looking at the system; [`hiargs`] resolves those values against
//! the system (interfaces, network namespace, which backend can run) into
//! the one [`Config`] the rest of the program reads, with each backend's own
//! parameters built here: no other module reads the flags.

mod flags;
mod hiargs;
mod lowargs;

use std::ffi::OsString;

pub use hiargs::{Config, Iface};

use crate::error::Error;

// Made once and moved once: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    Run(Config),
    /// `--help` or `--version` was answered; nothing more to do.
    Done,
}

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, Error> {
    let low = lowargs::parse(args)?;
    match low.special {
        Some(lowargs::Special::Help) => {
            print_quietly(&flags::help_text());
            Ok(Parsed::Done)
        }
        Some(lowargs::Special::Version) => {
            print_quietly(&format!("ip_traffic_monitor_cli {}\n", env!("CARGO_PKG_VERSION")));
            Ok(Parsed::Done)
        }
        None => Ok(Parsed::Run(Config::resolve(low)?)),
    }
}

/// Writes to stdout, ignoring a closed pipe (`--help | head -3`), where
/// `print!` would panic.
fn print_quietly(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
