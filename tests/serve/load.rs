//! A bounded load check of the receiver on loopback: thousands of signed deliveries, a
//! share of them duplicates, dozens at once. Every distinct workflow must be closed exactly
//! once and no delivery lost. Prints throughput and latency percentiles; run with
//! `cargo test --release --test serve load:: -- --nocapture` to see them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::receiver::{Receiver, workflow_event};
use crate::support::{CLOSED, Server, json};

const SECRET: &str = "load-secret";
const WORKFLOWS: usize = 2_000;
const DUPLICATES: usize = 1_000;
const SENDERS: usize = 32;

#[test]
fn thousands_of_signed_deliveries_close_each_workflow_exactly_once() {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let endpoint = coveralls.url();
    let receiver = Receiver::start(
        &[
            ("COVERALLS_REPO_TOKEN", "load-token"),
            ("COVERALLS_ENDPOINT", &endpoint),
            ("CIRCLECI_WEBHOOK_SECRET", SECRET),
            // Each answer waits for its close, however loaded the machine (the tests run
            // beside each other): every delivery is to be answered "closed".
            ("COVERALLS_FINISH_ANSWER_WAIT", "8s"),
        ],
        &[],
    );
    // Every workflow once, then a share of them again, interleaved.
    let mut deliveries: Vec<usize> = (0..WORKFLOWS).collect();
    deliveries.extend((0..DUPLICATES).map(|i| (i * 7) % WORKFLOWS));
    let total = deliveries.len();
    let bodies: Vec<Vec<u8>> = deliveries
        .iter()
        .map(|w| workflow_event(&format!("event-{w}"), &format!("wf-{w}"), "gh/load/test"))
        .collect();
    let started = Instant::now();
    let results = send_all(&receiver, &bodies);
    let elapsed = started.elapsed();

    assert_eq!(results.len(), total, "every delivery answered");
    let failed: Vec<u16> = results.iter().map(|r| r.0).filter(|s| *s != 200).collect();
    assert!(failed.is_empty(), "non-200 answers: {failed:?}");
    let mut closes: HashMap<String, usize> = HashMap::new();
    for request in coveralls.requests() {
        let build = request.json()["payload"]["build_num"]
            .as_str()
            .unwrap()
            .to_owned();
        *closes.entry(build).or_default() += 1;
    }
    assert_eq!(closes.len(), WORKFLOWS, "every distinct workflow closed");
    assert!(
        closes.values().all(|n| *n == 1),
        "some workflow closed twice"
    );
    report(results.iter().map(|r| r.1).collect(), elapsed);
}

/// Every body, from [`SENDERS`] threads at once: each answer's status and how long it took.
fn send_all(receiver: &Receiver, bodies: &[Vec<u8>]) -> Vec<(u16, Duration)> {
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let senders: Vec<_> = (0..SENDERS)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(body) = bodies.get(i) else { break };
                        let sent = Instant::now();
                        let (status, _) = receiver.circleci(SECRET, "workflow-completed", body);
                        mine.push((status, sent.elapsed()));
                    }
                    mine
                })
            })
            .collect();
        senders
            .into_iter()
            .flat_map(|s| s.join().unwrap())
            .collect()
    })
}

/// Throughput and latency percentiles, printed.
fn report(mut latencies: Vec<Duration>, elapsed: Duration) {
    let total = latencies.len();
    latencies.sort();
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    println!(
        "receiver load: {total} signed deliveries ({WORKFLOWS} workflows, {DUPLICATES} duplicates), \
         {SENDERS} concurrent: {:.0} deliveries/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        total as f64 / elapsed.as_secs_f64(),
        ms(pct(50)),
        ms(pct(90)),
        ms(pct(99)),
        ms(*latencies.last().unwrap()),
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
