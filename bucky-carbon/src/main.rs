//! bucky-carbon: samples on stdin to Graphite carbon. See the crate docs and `--help`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = bucky_carbon::Args::parse();
    match bucky_carbon::main_with(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("bucky-carbon: {e:#}");
            ExitCode::FAILURE
        }
    }
}
