//! bucky: runs the default pipeline (receivers | processor | carbon writer) as one service.
//! Invoked under a stage's name (`bucky-statsd`, ...) it runs that stage instead, so a single
//! installed binary carries the whole pipeline.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    if let Some(code) = bucky::multicall::run_stage_if_named() {
        return code;
    }
    let args = bucky::Args::parse();
    match bucky::main_with(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("bucky: {e:#}");
            ExitCode::FAILURE
        }
    }
}
