//! Load for the receiver's benchmark: signed CircleCI `workflow-completed` deliveries, each
//! for a new workflow, from many connections at once; prints throughput and latency. With
//! `--idle N --slow M` it first opens N connections that send nothing and M that send a
//! request's head and then its body a byte a second, and holds them open throughout: the
//! receiver under attack. Connections are kept alive between deliveries; with `--fresh` each
//! delivery comes on a new one (`Connection: close`), as webhook senders often do.
//!
//! `cargo run --release --example receiver_load -- URL SECRET COUNT CONCURRENCY [--idle N] [--slow M] [--fresh]`

// The tests' signer: one HMAC in hex for the tests and this tool.
#[path = "../tests/support/sign.rs"]
mod sign;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let option = |name: &str| {
        let at = args.iter().position(|a| a == name)?;
        Some(args[at + 1].parse::<usize>().expect(name))
    };
    let (idle, slow) = (option("--idle").unwrap_or(0), option("--slow").unwrap_or(0));
    let fresh = args.iter().any(|a| a == "--fresh");
    let [url, secret, count, concurrency, ..] = args.as_slice() else {
        eprintln!(
            "usage: receiver_load URL SECRET COUNT CONCURRENCY [--idle N] [--slow M] [--fresh]"
        );
        std::process::exit(2);
    };
    let count: usize = count.parse().expect("COUNT");
    let concurrency: usize = concurrency.parse().expect("CONCURRENCY");
    let attackers = attack(url, idle, slow);
    // Unique to this run, so that a second run closes new workflows rather than duplicates.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Signed up front, so that the clock measures the receiver rather than this tool.
    let deliveries: Vec<(Vec<u8>, String)> = (0..count)
        .map(|i| {
            let body = format!(
                r#"{{"id":"event-{run}-{i}","type":"workflow-completed","happened_at":"2026-11-22T00:00:00Z","project":{{"id":"p","slug":"gh/bench/receiver","name":"receiver"}},"workflow":{{"id":"workflow-{run}-{i}","name":"test","status":"success"}},"pipeline":{{"id":"x","number":{i}}}}}"#
            )
            .into_bytes();
            let signature = format!("v1={}", sign::sign(secret, &body));
            (body, signature)
        })
        .collect();
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let target = format!("{url}/circleci");
    let started = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..concurrency)
            .map(|_| {
                scope.spawn(|| {
                    let agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .new_agent();
                    let mut mine = Vec::new();
                    while let Some((body, signature)) =
                        deliveries.get(next.fetch_add(1, Ordering::Relaxed))
                    {
                        let sent = Instant::now();
                        let answer = agent
                            .post(&target)
                            .header("circleci-event-type", "workflow-completed")
                            .header("circleci-signature", signature)
                            .header("content-type", "application/json")
                            .header("connection", if fresh { "close" } else { "keep-alive" })
                            .send(body.as_slice());
                        match answer {
                            Ok(mut response) if response.status().as_u16() == 200 => {
                                // Read to the end, so that the connection is kept alive.
                                let _ = response.body_mut().read_to_vec();
                                mine.push(sent.elapsed())
                            }
                            Ok(mut response) => {
                                let text = response.body_mut().read_to_string().unwrap_or_default();
                                eprintln!("not closed: {} {text}", response.status());
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(err) => {
                                eprintln!("no answer: {err}");
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    mine
                })
            })
            .collect();
        senders
            .into_iter()
            .flat_map(|s| s.join().expect("sender"))
            .collect()
    });
    let elapsed = started.elapsed();
    let failed = failed.into_inner();
    if failed > 0 || latencies.is_empty() {
        eprintln!("{failed} of {count} deliveries were not closed");
        std::process::exit(1);
    }
    latencies.sort();
    let pct = |p: usize| {
        latencies[(latencies.len() * p / 100).min(latencies.len() - 1)].as_secs_f64() * 1000.0
    };
    let under = match (idle, slow) {
        (0, 0) => String::new(),
        _ => format!(" beside {idle} idle and {slow} slow-body connections,"),
    };
    let kept = if fresh {
        "a new connection each"
    } else {
        "kept alive"
    };
    println!(
        "receiver: {count} signed deliveries, {concurrency} connections ({kept}),{under} {:.0} deliveries/s; \
         latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        count as f64 / elapsed.as_secs_f64(),
        pct(50),
        pct(90),
        pct(99),
        latencies[latencies.len() - 1].as_secs_f64() * 1000.0
    );
    drop(attackers);
}

/// `idle` connections that send nothing and `slow` ones that trickle a body, kept open (and
/// trickling, from a thread of their own) until they are dropped.
fn attack(url: &str, idle: usize, slow: usize) -> Vec<std::net::TcpStream> {
    use std::io::Write;
    let addr = url.trim_start_matches("http://");
    let connect = || std::net::TcpStream::connect(addr).expect("an attacking connection");
    let mut streams: Vec<_> = (0..idle).map(|_| connect()).collect();
    let mut trickling: Vec<_> = (0..slow)
        .map(|_| {
            let mut stream = connect();
            let head = "POST /circleci HTTP/1.1\r\nHost: bench\r\nContent-Length: 100000\r\n\r\n";
            stream.write_all(head.as_bytes()).expect("a slow head");
            stream
        })
        .collect();
    if !trickling.is_empty() {
        let clones: Vec<_> = trickling
            .iter()
            .map(|s| s.try_clone().expect("a clone"))
            .collect();
        std::thread::spawn(move || {
            let mut clones = clones;
            loop {
                std::thread::sleep(Duration::from_secs(1));
                for stream in &mut clones {
                    let _ = stream.write_all(b"x");
                }
            }
        });
    }
    streams.append(&mut trickling);
    streams
}
