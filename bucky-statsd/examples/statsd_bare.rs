//! The physical limit of scripts/bench-statsd: a bare receive loop on one UDP socket with the
//! same receive buffer and the same batched recvmmsg as bucky-statsd, that only counts the
//! lines it receives. Prints `lines=N datagrams=M kernel_drops=K` at SIGTERM/SIGINT.
//!
//!     cargo run --release -p bucky-statsd --example statsd_bare -- --port 8125

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use bucky_proto::shutdown::Shutdown;
use bucky_statsd::udp::{bind_sockets, BATCH, SLOT};
use clap::Parser;
use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use std::io::IoSliceMut;

#[derive(Debug, Parser)]
#[command(about = "Receive UDP datagrams and count their lines, nothing else.")]
struct Args {
    /// Address to receive on
    #[arg(long, default_value = "127.0.0.1:8125")]
    listen: SocketAddr,
    /// Receive buffer, bytes
    #[arg(long, default_value_t = 8 << 20)]
    recv_buffer: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shutdown = Shutdown::on_signals()?;
    let bound = bind_sockets(args.listen, 1, args.recv_buffer)?;
    eprintln!(
        "statsd_bare: listening on {}, receive buffer granted {}",
        bound.addr, bound.granted
    );
    let Some(sock) = bound.sockets.first() else {
        anyhow::bail!("no socket");
    };
    let fd = sock.as_raw_fd();
    let mut bufs = vec![0u8; BATCH * SLOT];
    let mut headers: MultiHeaders<SockaddrStorage> = MultiHeaders::preallocate(BATCH, None);
    let (mut lines, mut datagrams) = (0u64, 0u64);
    loop {
        let stopping = shutdown.is_set();
        let flags = if stopping {
            MsgFlags::MSG_DONTWAIT
        } else {
            MsgFlags::MSG_WAITFORONE
        };
        let mut chunks = bufs.chunks_exact_mut(SLOT);
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
        match recvmmsg(fd, &mut headers, iovs.iter_mut(), flags, None) {
            Ok(msgs) => {
                for msg in msgs {
                    datagrams += 1;
                    let data = msg.iovs().next().unwrap_or_default();
                    let data = &data[..msg.bytes.min(data.len())];
                    if !data.is_empty() {
                        lines += memchr::memchr_iter(b'\n', data).count() as u64
                            + u64::from(data.last() != Some(&b'\n'));
                    }
                }
            }
            Err(_) if stopping => break,
            Err(_) => {}
        }
    }
    let drops = bound.drops().total().unwrap_or(0);
    println!("lines={lines} datagrams={datagrams} kernel_drops={drops}");
    Ok(())
}
