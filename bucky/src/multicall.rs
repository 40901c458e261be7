//! One binary, every stage: when bucky is started under a stage's name (argv[0] or the
//! BUCKY_STAGE variable) it runs that stage's own main.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

/// The stages, in pipeline order.
pub const STAGES: &[&str] = &[
    "bucky-statsd",
    "bucky-collectd",
    "bucky-metricsd",
    "bucky-process",
    "bucky-carbon",
];

/// The environment variable that names the stage to run (set by the wrapper when it starts
/// itself as a stage).
pub const STAGE_VAR: &str = "BUCKY_STAGE";

fn stage_name() -> Option<String> {
    if let Some(s) = std::env::var_os(STAGE_VAR) {
        return s
            .into_string()
            .ok()
            .filter(|s| STAGES.contains(&s.as_str()));
    }
    let arg0: OsString = std::env::args_os().next()?;
    let base = Path::new(&arg0).file_name()?.to_str()?.to_string();
    STAGES.contains(&base.as_str()).then_some(base)
}

/// Runs a stage when this process was started as one; `None` means "run the wrapper".
pub fn run_stage_if_named() -> Option<ExitCode> {
    let stage = stage_name()?;
    // The kernel names the process after the executable; ps and pgrep should see the stage.
    if let Ok(name) = std::ffi::CString::new(stage.as_bytes()) {
        let _ = nix::sys::prctl::set_name(&name);
    }
    let result = match stage.as_str() {
        "bucky-statsd" => bucky_statsd::main_with(bucky_statsd::Args::parse()),
        "bucky-collectd" => bucky_collectd::main_with(bucky_collectd::Args::parse()),
        "bucky-metricsd" => bucky_metricsd::main_with(bucky_metricsd::Args::parse()),
        "bucky-process" => bucky_process::main_with(bucky_process::Args::parse()),
        _ => bucky_carbon::main_with(bucky_carbon::Args::parse()),
    };
    Some(match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{stage}: {e:#}");
            ExitCode::FAILURE
        }
    })
}
