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
    let deliveries = signed(secret, count);
    let started = Instant::now();
    let sent = send_all(url, &deliveries, concurrency, fresh);
    let elapsed = started.elapsed();
    if sent.failed > 0 || sent.latencies.is_empty() {
        eprintln!(
            "{} of {count} deliveries were not acknowledged",
            sent.failed
        );
        std::process::exit(1);
    }
    let under = match (idle, slow) {
        (0, 0) => String::new(),
        _ => format!(" beside {idle} idle and {slow} slow-body connections,"),
    };
    let kept = if fresh {
        "a new connection each"
    } else {
        "kept alive"
    };
    let how = format!("{concurrency} connections ({kept}),{under}");
    report(sent, count, &how, elapsed);
    drop(attackers);
}

/// `count` deliveries, each of a new workflow, signed up front, so that the clock measures
/// the receiver rather than this tool: each body and its signature header.
fn signed(secret: &str, count: usize) -> Vec<(Vec<u8>, String)> {
    // Unique to this run, so that a second run closes new workflows rather than duplicates.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (0..count)
        .map(|i| {
            let body = format!(
                r#"{{"id":"event-{run}-{i}","type":"workflow-completed","happened_at":"2026-11-22T00:00:00Z","project":{{"id":"p","slug":"gh/bench/receiver","name":"receiver"}},"workflow":{{"id":"workflow-{run}-{i}","name":"test","status":"success"}},"pipeline":{{"id":"x","number":{i}}}}}"#
            )
            .into_bytes();
            let signature = format!("v1={}", sign::sign(secret, &body));
            (body, signature)
        })
        .collect()
}

/// What the deliveries came to: each acknowledged one's latency, how many of those were
/// queued (202) rather than closed, and how many were not acknowledged.
struct Sent {
    latencies: Vec<Duration>,
    queued: usize,
    failed: usize,
}

/// Every delivery, from `concurrency` connections at once.
fn send_all(url: &str, deliveries: &[(Vec<u8>, String)], concurrency: usize, fresh: bool) -> Sent {
    let next = AtomicUsize::new(0);
    let (failed, queued) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let target = format!("{url}/circleci");
    let latencies = std::thread::scope(|scope| {
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
                        match acknowledged(answer) {
                            Some(status) => {
                                if status == 202 {
                                    queued.fetch_add(1, Ordering::Relaxed);
                                }
                                mine.push(sent.elapsed());
                            }
                            None => drop(failed.fetch_add(1, Ordering::Relaxed)),
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
    Sent {
        latencies,
        queued: queued.into_inner(),
        failed: failed.into_inner(),
    }
}

/// An answer's status where it acknowledged the delivery (200 closed, 202 queued), its body
/// read to the end so that the connection is kept alive; else `None`, said on stderr.
fn acknowledged(answer: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Option<u16> {
    match answer {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let text = response.body_mut().read_to_string().unwrap_or_default();
            if matches!(status, 200 | 202) {
                return Some(status);
            }
            eprintln!("not acknowledged: {status} {text}");
            None
        }
        Err(err) => {
            eprintln!("no answer: {err}");
            None
        }
    }
}

/// Throughput and latency percentiles, printed.
fn report(sent: Sent, count: usize, how: &str, elapsed: Duration) {
    let mut latencies = sent.latencies;
    latencies.sort();
    let pct = |p: usize| {
        latencies[(latencies.len() * p / 100).min(latencies.len() - 1)].as_secs_f64() * 1000.0
    };
    let queued = match sent.queued {
        0 => String::new(),
        n => format!(" ({n} queued, not closed yet)"),
    };
    println!(
        "receiver: {count} signed deliveries{queued}, {how} {:.0} deliveries/s; \
         latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        count as f64 / elapsed.as_secs_f64(),
        pct(50),
        pct(90),
        pct(99),
        latencies[latencies.len() - 1].as_secs_f64() * 1000.0
    );
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
