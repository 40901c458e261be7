//! bucky-metricsd: MetricsD datagrams in, samples out. See the crate docs and `--help`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = bucky_metricsd::Args::parse();
    match bucky_metricsd::main_with(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("bucky-metricsd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
