//! bucky-process: samples in, filtered samples out. See the crate docs and `--help`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = bucky_process::Args::parse();
    match bucky_process::main_with(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("bucky-process: {e:#}");
            ExitCode::FAILURE
        }
    }
}
