//! The maths of the metric types against known values.

use super::*;

fn close(a: f64, b: f64, eps: f64) -> bool {
    (a - b).abs() <= eps
}

#[track_caller]
fn assert_close(got: f64, want: f64, eps: f64) {
    assert!(close(got, want, eps), "got {got}, want {want} (±{eps})");
}

#[test]
fn ewma_alphas_are_the_specs() {
    // bucky-2.2.1.md §5.3.
    assert_eq!(Ewma::over_minutes(1.0).alpha(), 0.07995558537067671);
    assert_eq!(Ewma::over_minutes(5.0).alpha(), 0.01652854617838251);
    assert_eq!(Ewma::over_minutes(15.0).alpha(), 0.005540151995103271);
}

/// 12 ticks of 5 s.
fn elapse_minute(e: &mut Ewma) {
    for _ in 0..12 {
        e.tick();
    }
}

#[test]
fn ewma_known_values() {
    // Coda Hale's EWMATest: update(3), tick, then whole minutes without events.
    let cases: &[(f64, &[f64])] = &[
        (
            1.0,
            &[
                0.6, 0.22072766, 0.08120117, 0.02987224, 0.01098938, 0.00404277,
            ],
        ),
        (
            5.0,
            &[
                0.6, 0.49123845, 0.40219203, 0.32928698, 0.26959738, 0.22072766,
            ],
        ),
        (
            15.0,
            &[
                0.6, 0.56130419, 0.52510399, 0.49123845, 0.45955700, 0.42991879,
            ],
        ),
    ];
    for (minutes, rates) in cases {
        let mut e = Ewma::over_minutes(*minutes);
        e.update(3.0);
        e.tick();
        for (i, want) in rates.iter().enumerate() {
            if i > 0 {
                elapse_minute(&mut e);
            }
            assert_close(e.rate(), *want, 1e-8);
        }
    }
}

#[test]
fn ewma_tick_n_equals_n_ticks() {
    let mut a = Ewma::over_minutes(1.0);
    let mut b = a.clone();
    a.update(7.0);
    b.update(7.0);
    for _ in 0..100 {
        a.tick();
    }
    b.tick_n(100);
    assert_close(a.rate(), b.rate(), 1e-15);
    // A huge gap is O(1) and decays to nothing.
    b.tick_n(u64::MAX);
    assert_eq!(b.rate(), 0.0);
}

#[test]
fn meter_rates() {
    let mut m = Meter::new(0.0);
    m.mark(10.0, 1.0);
    // One tick at t=5: the instant rate 10/5 s for every average.
    assert_eq!(m.rates(5.0), (2.0, 2.0, 2.0));
    assert_eq!(m.rate_avg(5.0), 2.0);
    assert_eq!(m.count(), 10.0);
    // 12 more ticks without events: (1 - alpha)^12 = e^(-12 * 5 / (60 * minutes)).
    let (r1, r5, r15) = m.rates(65.0);
    assert_close(r1, 2.0 * (-1.0f64).exp(), 1e-12);
    assert_close(r5, 2.0 * (-0.2f64).exp(), 1e-12);
    assert_close(r15, 2.0 * (-1.0f64 / 15.0).exp(), 1e-12);
    assert_close(m.rate_avg(65.0), 10.0 / 65.0, 1e-15);
}

#[test]
fn meter_ticks_every_5_seconds_whatever_the_flush_interval() {
    // A steady 4 events a second, marked every second, read every 10 s: every average
    // converges to 4/s, and the rates read after 1 minute match the EWMA of 12 ticks.
    let mut m = Meter::new(0.0);
    let mut e1 = Ewma::over_minutes(1.0);
    for t in 0..60 {
        m.mark(4.0, t as f64 + 0.5);
        e1.update(4.0);
        if (t + 1) % 5 == 0 {
            e1.tick();
        }
    }
    let (r1, _, _) = m.rates(60.0);
    assert_close(r1, e1.rate(), 1e-12);
    assert_close(r1, 4.0, 1e-12);
    let mut m2 = m.clone();
    let (r1, r5, r15) = m2.rates(6000.0);
    assert!(r1 < 1e-10 && r5 < 0.1 && r15 < 4.0, "{r1} {r5} {r15}");
}

#[test]
fn meter_emits_its_names() {
    let mut m = Meter::new(100.0);
    m.mark(1.0, 100.0);
    let mut got = Vec::new();
    m.flush(110.0, &mut |s, v| got.push((s.to_string(), v)));
    let names: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        names,
        [".count", ".rate_avg", ".rate_1m", ".rate_5m", ".rate_15m"]
    );
    assert_eq!(got[0].1, 1.0);
    assert_eq!(got[1].1, 0.1);
}

#[test]
fn quantiles_of_known_inputs() {
    // Coda Hale's UniformSnapshotTest: [5, 1, 2, 3, 4].
    let v = [1.0, 2.0, 3.0, 4.0, 5.0];
    assert_eq!(quantile(&v, 0.5), 3.0);
    assert_eq!(quantile(&v, 0.75), 4.5);
    assert_eq!(quantile(&v, 0.95), 5.0);
    assert_eq!(quantile(&v, 0.999), 5.0);
    assert_eq!(quantile(&v, 0.0), 1.0);
    assert_eq!(quantile(&[], 0.5), 0.0);
    assert_eq!(quantile(&[7.0], 0.99), 7.0);
    // 1..=100: position q * 101.
    let v: Vec<f64> = (1..=100).map(f64::from).collect();
    let want = [75.75, 85.85, 90.9, 95.95, 99.99, 100.0];
    for ((q, _), w) in PERCENTILES.iter().zip(want) {
        assert_close(quantile(&v, *q), w, 1e-9);
    }
}

fn histogram_values(h: &mut Histogram) -> Vec<(String, f64)> {
    let mut got = Vec::new();
    let mut scratch = Vec::new();
    h.flush(&mut scratch, &mut |s, v| got.push((s.to_string(), v)));
    got
}

#[test]
fn histogram_statistics() {
    let mut h = Histogram::new(0.0, fastrand::Rng::with_seed(1));
    // The textbook set: mean 5, population sd 2, sample sd sqrt(32/7).
    for v in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
        h.update(v, 1.0);
    }
    let got = histogram_values(&mut h);
    let names: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        names,
        [
            ".count",
            ".sum",
            ".min",
            ".max",
            ".mean",
            ".stddev",
            ".perc_75",
            ".perc_85",
            ".perc_90",
            ".perc_95",
            ".perc_99",
            ".perc_99_9"
        ]
    );
    let v: Vec<f64> = got.iter().map(|(_, v)| *v).collect();
    assert_eq!(&v[..5], &[8.0, 40.0, 2.0, 9.0, 5.0]);
    assert_close(v[5], (32.0f64 / 7.0).sqrt(), 1e-12);
    // Sorted 2 4 4 4 5 5 7 9; p75 at 6.75 -> 5 + .75 * (7 - 5) = 6.5; p85 at 7.65 -> 7 + .65*2.
    assert_close(v[6], 6.5, 1e-12);
    assert_close(v[7], 8.3, 1e-12);
    assert_eq!(v[9], 9.0);
}

#[test]
fn histogram_of_1_to_100() {
    let mut h = Histogram::new(0.0, fastrand::Rng::with_seed(2));
    for i in (1..=100).rev() {
        h.update(f64::from(i), 10.0);
    }
    let got = histogram_values(&mut h);
    let get = |n: &str| got.iter().find(|(s, _)| s == n).map(|(_, v)| *v).unwrap();
    assert_eq!(get(".count"), 100.0);
    assert_eq!(get(".sum"), 5050.0);
    assert_eq!(get(".mean"), 50.5);
    assert_close(get(".stddev"), (101.0 * 100.0 / 12.0f64).sqrt(), 1e-9);
    assert_close(get(".perc_90"), 90.9, 1e-9);
    assert_close(get(".perc_99_9"), 100.0, 1e-9);
}

#[test]
fn histogram_edge_cases() {
    let mut h = Histogram::new(0.0, fastrand::Rng::with_seed(3));
    // Nothing yet: count and sum only (no invented min/max).
    let got = histogram_values(&mut h);
    assert_eq!(got, vec![(".count".into(), 0.0), (".sum".into(), 0.0)]);
    h.update(-3.5, 0.0);
    assert_eq!(h.stddev(), 0.0);
    let got = histogram_values(&mut h);
    assert!(
        got.iter()
            .skip(2)
            .all(|(n, v)| *v == if n == ".stddev" { 0.0 } else { -3.5 }),
        "{got:?}"
    );
    h.clear(1.0);
    assert_eq!(h.count(), 0);
    assert!(h.sample().is_empty());
    assert_eq!(histogram_values(&mut h).len(), 2);
}

#[test]
fn reservoir_is_bounded_and_keeps_everything_below_its_size() {
    let mut s = DecayingSample::new(
        RESERVOIR_SIZE,
        RESERVOIR_ALPHA,
        0.0,
        fastrand::Rng::with_seed(4),
    );
    for i in 0..1000 {
        s.update(f64::from(i), 0.0);
    }
    assert_eq!(s.len(), 1000);
    let mut v = Vec::new();
    s.sorted_values(&mut v);
    assert_eq!(v, (0..1000).map(f64::from).collect::<Vec<_>>());
    for i in 0..100_000 {
        s.update(f64::from(i), i as f64 / 1000.0);
    }
    assert_eq!(s.len(), RESERVOIR_SIZE);
    assert_eq!(
        s.heap.capacity(),
        RESERVOIR_SIZE,
        "no room beyond the reservoir"
    );
}

#[test]
fn reservoir_favours_recent_values() {
    let mut s = DecayingSample::new(100, RESERVOIR_ALPHA, 0.0, fastrand::Rng::with_seed(5));
    for _ in 0..1000 {
        s.update(1.0, 0.0);
    }
    // 1000 s later a new value weighs e^15 (3.3 million) times an old one.
    for _ in 0..1000 {
        s.update(2.0, 1000.0);
    }
    let mut v = Vec::new();
    s.sorted_values(&mut v);
    assert_eq!(v.len(), 100);
    assert!(v.iter().all(|x| *x == 2.0), "old values survived: {v:?}");
}

#[test]
fn reservoir_rescales_and_stays_finite() {
    // Without rescaling e^(0.015 * 36000) = e^540 overflows to infinity, and every priority
    // would tie. Updates every 10 s for 10 hours, with a long gap in the middle.
    let mut s = DecayingSample::new(50, RESERVOIR_ALPHA, 0.0, fastrand::Rng::with_seed(6));
    let mut t = 0.0;
    while t < 36_000.0 {
        s.update(t, t);
        t += if (10_000.0..10_010.0).contains(&t) {
            15_000.0
        } else {
            10.0
        };
    }
    assert!(s
        .heap
        .iter()
        .all(|e| e.priority.is_finite() && e.priority > 0.0));
    assert!(s.start > 30_000.0, "the landmark moved: {}", s.start);
    // The kept values are recent: nothing from before the gap survived.
    let mut v = Vec::new();
    s.sorted_values(&mut v);
    assert!(v[0] > 25_000.0, "{v:?}");
}

#[test]
fn counter_gauge_timer() {
    let mut rng = fastrand::Rng::with_seed(7);
    let emitted = |m: &mut Metric, now: f64| {
        let mut got = Vec::new();
        let mut scratch = Vec::new();
        m.flush(now, &mut scratch, &mut |g, s, v| {
            got.push((format!("{g}{s}"), v))
        });
        got
    };
    let mut c = Metric::new(MetricType::Counter, 0.0, &mut rng);
    c.update(5.0, 0.0);
    c.update(-2.0, 0.0);
    assert_eq!(emitted(&mut c, 1.0), vec![(String::new(), 3.0)]);
    c.clear(1.0);
    assert_eq!(emitted(&mut c, 1.0), vec![(String::new(), 0.0)]);

    let mut g = Metric::new(MetricType::Gauge, 0.0, &mut rng);
    assert_eq!(emitted(&mut g, 0.0), vec![(String::new(), 0.0)]);
    g.update(4.0, 0.0);
    g.update(7.5, 0.0);
    g.clear(0.0);
    assert_eq!(emitted(&mut g, 0.0), vec![(String::new(), 7.5)]);

    let mut t = Metric::new(MetricType::Timer, 0.0, &mut rng);
    for v in [10.0, 20.0, 30.0] {
        t.update(v, 1.0);
    }
    let got = emitted(&mut t, 5.0);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        &names[..5],
        &[
            ".calls.count",
            ".calls.rate_avg",
            ".calls.rate_1m",
            ".calls.rate_5m",
            ".calls.rate_15m"
        ]
    );
    assert_eq!(names[5], ".histo.count");
    assert_eq!(names.last(), Some(&".histo.perc_99_9"));
    let get = |n: &str| got.iter().find(|(s, _)| s == n).map(|(_, v)| *v).unwrap();
    assert_eq!(get(".calls.count"), 3.0);
    assert_eq!(get(".calls.rate_1m"), 0.6, "3 calls in the first 5 s");
    assert_eq!(get(".histo.sum"), 60.0);
    assert_eq!(get(".histo.mean"), 20.0);
    // Clear empties the histogram; the calls keep counting.
    t.clear(6.0);
    let got = emitted(&mut t, 6.0);
    let get = |n: &str| got.iter().find(|(s, _)| s == n).map(|(_, v)| *v);
    assert_eq!(get(".histo.count"), Some(0.0));
    assert_eq!(get(".histo.mean"), None);
    assert_eq!(get(".calls.count"), Some(3.0));

    let mut m = Metric::new(MetricType::Meter, 0.0, &mut rng);
    m.update(2.0, 0.0);
    m.clear(0.0);
    assert_eq!(m.kind(), MetricType::Meter);
    assert_eq!(emitted(&mut m, 10.0)[0], (".count".into(), 2.0));
}
