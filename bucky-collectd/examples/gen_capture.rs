//! Writes a capture file of realistic collectd traffic (see
//! `bucky_collectd::encode::synthetic_traffic`) for benchmarks and load tests, plain,
//! signed or encrypted (user `bench`, password `benchpw`), and prints how many values it
//! holds.
//!
//!   cargo run --release -p bucky-collectd --example gen_capture -- \
//!       [--mode plain|sign|encrypt] [--hosts N] [--steps N] OUT

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use bucky_collectd::encode::{
    encrypt, encrypted_payload_size, pack, sign, signed_payload_size, synthetic_traffic,
    COLLECTD_PACKET_SIZE,
};
use bucky_proto::capture::CaptureWriter;

fn main() -> ExitCode {
    let mut mode = "plain".to_string();
    let mut hosts = 100usize;
    let mut steps = 600usize;
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| match args.next() {
            Some(v) => Ok(v),
            None => Err(format!("{name} needs a value")),
        };
        let r: Result<(), String> = match a.as_str() {
            "--mode" => value("--mode").map(|v| mode = v),
            "--hosts" => value("--hosts").and_then(|v| {
                hosts = v.parse().map_err(|e| format!("--hosts: {e}"))?;
                Ok(())
            }),
            "--steps" => value("--steps").and_then(|v| {
                steps = v.parse().map_err(|e| format!("--steps: {e}"))?;
                Ok(())
            }),
            other if !other.starts_with('-') => {
                out = Some(PathBuf::from(other));
                Ok(())
            }
            other => Err(format!("unknown argument {other}")),
        };
        if let Err(e) = r {
            eprintln!("gen_capture: {e}");
            return ExitCode::from(2);
        }
    }
    let Some(out) = out else {
        eprintln!("gen_capture: usage: gen_capture [--mode plain|sign|encrypt] [--hosts N] [--steps N] OUT");
        return ExitCode::from(2);
    };
    let start_secs = 1_795_650_000u64;
    let lists = synthetic_traffic(hosts, steps, start_secs << 30, 10);
    let values: usize = lists.iter().map(|l| l.values.len()).sum();
    // As collectd does, leave room for the signature or encryption in each packet.
    let size = match mode.as_str() {
        "sign" => signed_payload_size(COLLECTD_PACKET_SIZE, "bench"),
        "encrypt" => encrypted_payload_size(COLLECTD_PACKET_SIZE, "bench"),
        _ => COLLECTD_PACKET_SIZE,
    };
    let packets = pack(&lists, size);
    let source = SocketAddr::from(([127, 0, 0, 1], 40000));
    let mut w = match CaptureWriter::create(&out) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("gen_capture: {e}");
            return ExitCode::FAILURE;
        }
    };
    let per_packet = (steps as f64 * 10.0) / packets.len().max(1) as f64;
    for (i, p) in packets.iter().enumerate() {
        let bytes = match mode.as_str() {
            "plain" => p.clone(),
            "sign" => sign(p, "bench", "benchpw"),
            "encrypt" => {
                let mut iv = [0u8; 16];
                iv[..8].copy_from_slice(&(i as u64).to_le_bytes());
                encrypt(p, "bench", "benchpw", iv)
            }
            other => {
                eprintln!("gen_capture: --mode {other}: use plain, sign or encrypt");
                return ExitCode::from(2);
            }
        };
        let time = start_secs as f64 + i as f64 * per_packet;
        if let Err(e) = w.write_parts(time, source, &bytes) {
            eprintln!("gen_capture: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = w.flush() {
        eprintln!("gen_capture: {e}");
        return ExitCode::FAILURE;
    }
    println!("{values} values in {} datagrams", packets.len());
    ExitCode::SUCCESS
}
