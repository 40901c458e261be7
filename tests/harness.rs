//! Self-tests of the harness: a real carbon-cache, fed by the harness's own senders.

// Test code: panicking on a broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bucky_tests::{free_port, port_accepts, wait_until, CarbonCache, ChildGuard, Feeder, Samples};

const POINTS_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn carbon_stores_plaintext_and_pickle_exactly() {
    let carbon = CarbonCache::start();
    let plain = Samples::generate("hplain", 5, 200);
    carbon.send_plaintext(&plain.lines.concat());
    let pickled = Samples::generate("hpickle", 5, 200);
    let points: Vec<(&str, i64, f64)> = pickled
        .points
        .iter()
        .map(|(n, t, v)| (n.as_str(), *t, *v))
        .collect();
    carbon.send_pickle(&points);

    carbon.wait_for_points(&plain.expected(), POINTS_TIMEOUT);
    carbon.wait_for_points(&pickled.expected(), POINTS_TIMEOUT);
    let got = carbon.fetch(&plain.name_refs());
    assert_eq!(got.len(), 5);
    assert_eq!(got["test.hplain.s000.value"].len(), 200);
    assert_eq!(carbon.metric_names().len(), 10);
    assert!(carbon.wsp_path("test.hplain.s000.value").is_file());
}

#[test]
fn carbon_stop_writes_its_cache_and_restarts_on_the_same_ports() {
    let mut carbon = CarbonCache::start();
    let (line, pickle) = (carbon.line_port(), carbon.pickle_port());
    let first = Samples::generate("hrestart", 3, 50);
    carbon.send_plaintext(&first.lines.concat());
    // The points must be on disk after a graceful stop, however soon it comes.
    wait_until(
        Duration::from_secs(10),
        "carbon to create a whisper file",
        || !carbon.metric_names().is_empty(),
    );
    carbon.stop();
    assert!(!carbon.is_running());
    assert!(
        !port_accepts(line),
        "the line port still accepts after stop"
    );
    carbon.wait_for_points(&first.expected(), Duration::from_secs(1));

    carbon.start_again();
    assert_eq!((carbon.line_port(), carbon.pickle_port()), (line, pickle));
    let second = Samples::generate("hrestart2", 3, 50);
    carbon.send_plaintext(&second.lines.concat());
    carbon.wait_for_points(&second.expected(), POINTS_TIMEOUT);

    carbon.kill();
    assert!(!carbon.is_running());
    carbon.start_again();
    carbon.wait_for_points(&first.expected(), Duration::from_secs(5));
}

#[test]
fn wait_for_points_reports_what_is_missing_and_wrong() {
    let carbon = CarbonCache::start();
    let s = Samples::generate("hdiff", 2, 10);
    carbon.send_plaintext(&s.lines.concat());
    carbon.wait_for_points(&s.expected(), POINTS_TIMEOUT);

    let mut wrong = s.expected();
    wrong.get_mut("test.hdiff.s000.value").unwrap()[3].1 += 1.0;
    wrong.insert("test.hdiff.absent".into(), vec![(s.points[0].1, 1.0)]);
    let message =
        std::panic::catch_unwind(|| carbon.wait_for_points(&wrong, Duration::from_millis(300)))
            .expect_err("a wrong expectation must fail")
            .downcast::<String>()
            .map(|s| *s)
            .unwrap_or_default();
    assert!(
        message.contains("1 missing, 1 with a wrong value"),
        "{message}"
    );
    assert!(message.contains("test.hdiff.absent"), "{message}");
    assert!(message.contains("test.hdiff.s000.value@"), "{message}");
}

#[test]
fn free_ports_are_distinct_and_bindable() {
    let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
    let mut sorted = ports.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), ports.len());
    for p in ports.iter().take(5) {
        std::net::TcpListener::bind(("127.0.0.1", *p)).unwrap();
    }
}

#[test]
fn child_guard_kills_on_drop_and_terminate_works() {
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("600");
    let guard = ChildGuard::spawn("sleep", &mut cmd);
    let pid = guard.id();
    drop(guard);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the child was not reaped"
    );

    let mut guard = ChildGuard::spawn("sleep", &mut cmd);
    guard.terminate();
    let status = guard
        .wait_timeout(Duration::from_secs(10))
        .expect("sleep exits on SIGTERM");
    assert!(!status.success());
}

#[test]
fn feeder_writes_in_order_and_closes() {
    let mut cmd = std::process::Command::new("wc");
    cmd.arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut guard = ChildGuard::spawn("wc", &mut cmd);
    let stdin = guard.child_mut().stdin.take().unwrap();
    let mut stdout = guard.child_mut().stdout.take().unwrap();
    let mut feeder = Feeder::new(stdin);
    for _ in 0..100 {
        feeder.send(vec![b'x'; 10_000]);
    }
    feeder.wait_written(Duration::from_secs(10));
    feeder.close(Duration::from_secs(10));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
    assert_eq!(out.trim(), "1000000");
    assert!(guard
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .success());
}
