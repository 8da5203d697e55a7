//! The `ip_traffic_monitor_cli` binary: parse the command line, run the
//! monitor, and turn any error into one line on stderr and an exit code.

use ip_traffic_monitor_cli::{cli, monitor};

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

fn run() -> Result<i32, ip_traffic_monitor_cli::error::Error> {
    match cli::parse(std::env::args_os().skip(1))? {
        cli::Parsed::Run(config) => monitor::run(&config),
        cli::Parsed::Done => Ok(0),
    }
}
