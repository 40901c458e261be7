//! bucky-statsd: a StatsD server writing samples to stdout. See the crate docs and `--help`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = bucky_statsd::Args::parse();
    match bucky_statsd::main_with(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("bucky-statsd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
