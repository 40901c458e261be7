//! bucky-collectd: collectd's network protocol to samples on stdout. See the crate docs and
//! `--help`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = bucky_collectd::Args::parse();
    match bucky_collectd::main_with(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("bucky-collectd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
