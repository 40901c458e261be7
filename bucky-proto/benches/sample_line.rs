//! Sample-line parse and format throughput (lines/s), and naming.

use bucky_proto::sample::{parse_line, push_line, split_line};
use bucky_proto::{CachedNamer, Namer, NamingOptions};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

fn lines(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let host = if i % 2 == 0 {
                " web-12.ams.example.com"
            } else {
                ""
            };
            format!(
                "servers.app{}.requests.latency_ms {}.{} {}{}",
                i % 97,
                i * 7 % 1000,
                i % 10,
                1795650000 + i,
                host
            )
            .into_bytes()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let input = lines(10_000);
    let mut g = c.benchmark_group("sample_line");
    g.throughput(Throughput::Elements(input.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| {
            let mut sum = 0.0;
            for l in &input {
                if let Ok(p) = parse_line(black_box(l)) {
                    sum += p.sample.value;
                }
            }
            sum
        })
    });
    g.bench_function("parse+format", |b| {
        let mut out = Vec::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            for l in &input {
                if let Ok(p) = parse_line(black_box(l)) {
                    push_line(&mut out, &p.sample);
                }
            }
            out.len()
        })
    });
    let namer = Namer::new(&NamingOptions {
        name_prefix: Some("prod".into()),
        name_host_trim: vec!["example.com".into()],
        ..NamingOptions::default()
    });
    g.bench_function("split", |b| {
        b.iter(|| {
            let mut n = 0;
            for l in &input {
                if let Ok(f) = split_line(black_box(l)) {
                    n += f.name.len();
                }
            }
            n
        })
    });
    g.bench_function("split+name", |b| {
        let mut out = Vec::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            for l in &input {
                if let Ok(f) = split_line(black_box(l)) {
                    namer.push_path_bytes(&mut out, f.host, f.name);
                }
            }
            out.len()
        })
    });
    g.bench_function("split+cached name", |b| {
        let mut out = Vec::with_capacity(1 << 20);
        let mut cached = CachedNamer::new(namer.clone(), 100_000);
        b.iter(|| {
            out.clear();
            for l in &input {
                if let Ok(f) = split_line(black_box(l)) {
                    cached.push_path_bytes(&mut out, f.host, f.name);
                }
            }
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
