//! Parse + aggregate throughput on one core: metrics/s through `Ingest::datagram`, on the
//! benchmark's traffic (counters over 1000 keys, 10 per datagram) and on a mix of kinds.
//! Aggregates are handed to a flusher every 100k datagrams, as a flush would.

use std::sync::Arc;

use bucky_statsd::aggregate::{Aggregate, Ingest, Limits};
use bucky_statsd::flush::{FlushOptions, Flusher};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const KEYS: usize = 1000;
const PER_DATAGRAM: usize = 10;

/// Datagrams cycling over the keys, `PER_DATAGRAM` lines each, made by `line(i)`.
fn datagrams(line: impl Fn(usize) -> String) -> Vec<Vec<u8>> {
    (0..KEYS / PER_DATAGRAM)
        .map(|d| {
            (0..PER_DATAGRAM)
                .map(|j| line(d * PER_DATAGRAM + j))
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let cases = [
        (
            "counters",
            datagrams(|i| format!("bench.load.key{i:04}:1|c")),
        ),
        (
            "mixed",
            datagrams(|i| match i % 4 {
                0 => format!("app.requests.key{i:04}:1|c|@0.5"),
                1 => format!("app.latency.key{i:04}:{}|ms", i % 250),
                2 => format!("app.queue.key{i:04}:{}|g", i % 90),
                _ => format!("app.users.key{i:04}:u{}|s", i % 33),
            }),
        ),
        (
            "tagged",
            datagrams(|i| format!("bench.req:1|c|#env:prod,host:h{}", i % 50)),
        ),
    ];
    let mut group = c.benchmark_group("parse_aggregate");
    for (name, grams) in cases {
        let batch = 10_000usize;
        group.throughput(Throughput::Elements((batch * PER_DATAGRAM) as u64));
        let limits = Arc::new(Limits::new(1_000_000, u64::MAX));
        let mut ingest = Ingest::new(limits.clone(), true);
        let mut flusher = Flusher::new(FlushOptions::default(), limits.clone());
        let mut agg = Aggregate::new();
        let mut n = 0usize;
        let mut out = Vec::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                for _ in 0..batch {
                    ingest.datagram(&mut agg, 0.0, None, &grams[n % grams.len()]);
                    n += 1;
                }
                if n % 100_000 < batch {
                    flusher.merge(&mut agg);
                    out.clear();
                    flusher.flush(0.0, &mut out);
                    ingest.new_interval();
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
