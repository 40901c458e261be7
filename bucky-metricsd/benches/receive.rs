//! What one MetricsD record costs: decoding alone, and decoding plus applying it to the metric
//! table, on datagrams built with the crate's encoder (a realistic mix of types and names).

use std::time::Duration;

use bucky_metricsd::handlers::{HandlerSpec, Router};
use bucky_metricsd::store::Store;
use bucky_metricsd::wire::{decode, Encoder, MetricType, Number};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

const RECORDS_PER_DATAGRAM: usize = 40;

/// Datagrams of 40 records each over 400 metrics of every type, as a client would send them.
fn datagrams() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0usize;
    for _ in 0..50 {
        let mut e = Encoder::new("web1.example.com").unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..RECORDS_PER_DATAGRAM {
            let (kind, value) = match i % 5 {
                0 => (MetricType::Counter, Number::U8(1)),
                1 => (MetricType::Gauge, Number::F64(i as f64 * 0.5)),
                2 => (MetricType::Histogram, Number::U32(i as u32 % 1000)),
                3 => (MetricType::Meter, Number::U16(3)),
                _ => (MetricType::Timer, Number::F32((i % 250) as f32 * 0.1)),
            };
            let name = format!("app.service{}.endpoint{}.metric", i % 8, i % 400);
            e.update(kind, &name, value)
                .unwrap_or_else(|e| panic!("{e}"));
            i += 1;
        }
        out.push(e.into_bytes());
    }
    out
}

fn bench(c: &mut Criterion) {
    let grams = datagrams();
    let records = (grams.len() * RECORDS_PER_DATAGRAM) as u64;
    let mut g = c.benchmark_group("metricsd");
    g.throughput(Throughput::Elements(records));
    g.bench_function("decode", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for d in &grams {
                let p = decode(black_box(d)).unwrap_or_else(|e| panic!("{e}"));
                n += p.records().filter(Result::is_ok).count();
            }
            n
        })
    });
    let router = Router::new(
        vec![HandlerSpec {
            pattern: "app\\.service1\\.".into(),
            interval: Duration::from_secs(1),
            priority: 100,
        }],
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut store = Store::with_rng(router, 10_000, fastrand::Rng::with_seed(1));
    let mut now = 0.0;
    g.bench_function("decode_and_apply", |b| {
        b.iter(|| {
            for d in &grams {
                let p = decode(black_box(d)).unwrap_or_else(|e| panic!("{e}"));
                store.apply_packet(&p, now, &mut |_| {});
            }
            now += 0.001;
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
