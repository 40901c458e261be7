//! The StatsD load generator of scripts/bench-statsd: counters over a fixed set of keys,
//! several per datagram, sent with sendmmsg at full speed or at a fixed rate.
//!
//!     cargo run --release -p bucky-statsd --example statsd_load -- \
//!         --target 127.0.0.1:8125 --metrics 10000000 --keys 1000 --per-datagram 10 --rate 0
//!
//! Every metric is `<prefix>.k<NNNN>:1|c`, keys taken in turn, so a receiver that loses
//! nothing counts exactly `metrics` in total. Prints one summary line (key=value).

use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use clap::Parser;
use nix::sys::socket::{sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

#[derive(Debug, Parser)]
#[command(about = "Send StatsD counters over UDP, at full speed or at a fixed rate.")]
struct Args {
    /// Where to send [default: 127.0.0.1:8125]
    #[arg(long, default_value = "127.0.0.1:8125")]
    target: SocketAddr,
    /// Metrics to send in total
    #[arg(long, default_value_t = 10_000_000)]
    metrics: u64,
    /// Distinct keys
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Metrics per datagram
    #[arg(long, default_value_t = 10)]
    per_datagram: usize,
    /// Metrics per second; 0 is as fast as possible
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Sending sockets (distinct source ports, so SO_REUSEPORT spreads them)
    #[arg(long, default_value_t = 1)]
    sockets: usize,
    /// Datagrams per sendmmsg call at most
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// First name component of the keys
    #[arg(long, default_value = "bench")]
    prefix: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let per = args.per_datagram.max(1);
    let keys = args.keys.max(1);
    // Datagrams cycling over the keys: datagram d holds keys d*per .. d*per+per-1 (mod keys).
    let distinct = keys / gcd(keys, per);
    let datagrams: Vec<Vec<u8>> = (0..distinct)
        .map(|d| {
            (0..per)
                .map(|j| format!("{}.k{:04}:1|c", args.prefix, (d * per + j) % keys))
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes()
        })
        .collect();
    let total_datagrams = args.metrics.div_ceil(per as u64);
    let bind: SocketAddr = if args.target.is_ipv4() {
        "127.0.0.1:0".parse()?
    } else {
        "[::1]:0".parse()?
    };
    let sockets: Vec<UdpSocket> = (0..args.sockets.max(1))
        .map(|_| -> anyhow::Result<UdpSocket> {
            let s = UdpSocket::bind(bind)?;
            s.connect(args.target)?;
            Ok(s)
        })
        .collect::<anyhow::Result<_>>()?;
    let batch = args.batch.clamp(1, 1024);
    let mut headers: MultiHeaders<SockaddrStorage> = MultiHeaders::preallocate(batch, None);
    let addrs: Vec<Option<SockaddrStorage>> = vec![None; batch];

    let dg_rate = if args.rate > 0.0 {
        args.rate / per as f64
    } else {
        0.0
    };
    let start = Instant::now();
    let (mut sent, mut errors, mut calls) = (0u64, 0u64, 0u64);
    let mut next = 0usize; // next datagram index
    let mut sock_i = 0usize;
    while sent < total_datagrams {
        let due = if dg_rate > 0.0 {
            ((start.elapsed().as_secs_f64() * dg_rate) as u64 + 1).min(total_datagrams)
        } else {
            total_datagrams
        };
        if due <= sent {
            let wait = (sent as f64 + 1.0) / dg_rate - start.elapsed().as_secs_f64();
            std::thread::sleep(Duration::from_secs_f64(wait.clamp(0.0, 0.001)));
            continue;
        }
        let n = ((due - sent) as usize).min(batch);
        let slices: Vec<[IoSlice<'_>; 1]> = (0..n)
            .map(|i| [IoSlice::new(&datagrams[(next + i) % datagrams.len()])])
            .collect();
        let sock = &sockets[sock_i % sockets.len()];
        sock_i += 1;
        match sendmmsg(
            sock.as_raw_fd(),
            &mut headers,
            &slices,
            &addrs[..n],
            [],
            MsgFlags::empty(),
        ) {
            Ok(results) => {
                let k = results.count();
                sent += k as u64;
                next = (next + k) % datagrams.len();
            }
            Err(e) => {
                // ECONNREFUSED (an ICMP error of an earlier datagram) or ENOBUFS: the batch
                // was not sent; send it again.
                errors += 1;
                if errors > 1_000_000 {
                    anyhow::bail!("sending keeps failing: {e}");
                }
                if e == nix::errno::Errno::ENOBUFS {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        }
        calls += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let metrics = sent * per as u64;
    println!(
        "metrics={} datagrams={sent} seconds={secs:.3} rate={:.0} send_calls={calls} send_errors={errors}",
        metrics,
        metrics as f64 / secs
    );
    Ok(())
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
