//! Sends the datagrams of capture files over UDP, at a fixed rate of datagrams per second
//! or as fast as possible: the load generator of scripts/bench-collectd.
//!
//!   cargo run --release -p bucky-collectd --example send_capture -- \
//!       --target 127.0.0.1:25826 [--rate DATAGRAMS_PER_SEC] FILE...

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bucky_proto::capture::{Pace, Replay, ReplayOptions};

fn main() -> ExitCode {
    let mut target: Option<SocketAddr> = None;
    let mut rate = 0f64;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--target" => target = args.next().and_then(|v| v.parse().ok()),
            "--rate" => rate = args.next().and_then(|v| v.parse().ok()).unwrap_or(0.0),
            other => files.push(PathBuf::from(other)),
        }
    }
    let Some(target) = target else {
        eprintln!("send_capture: usage: send_capture --target IP:PORT [--rate N] FILE...");
        return ExitCode::from(2);
    };
    let socket = match UdpSocket::bind("127.0.0.1:0") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("send_capture: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = ReplayOptions {
        port: None,
        pace: Pace::Fast,
        progress: false,
    };
    let replay = match Replay::open(&files, options) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("send_capture: {e}");
            return ExitCode::FAILURE;
        }
    };
    let start = Instant::now();
    let mut sent = 0u64;
    let mut bytes = 0u64;
    for d in replay {
        let d = match d {
            Ok(d) => d,
            Err(e) => {
                eprintln!("send_capture: {e}");
                return ExitCode::FAILURE;
            }
        };
        if rate > 0.0 {
            let due = start + Duration::from_secs_f64(sent as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        loop {
            match socket.send_to(&d.bytes, target) {
                Ok(_) => break,
                // The receiver's buffer is full on loopback: the kernel says so; retry.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.raw_os_error() == Some(105) => std::thread::yield_now(),
                Err(e) => {
                    eprintln!("send_capture: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        sent += 1;
        bytes += d.bytes.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sent {sent} datagrams ({bytes} bytes) in {secs:.3} s ({:.0} datagrams/s)",
        sent as f64 / secs
    );
    ExitCode::SUCCESS
}
