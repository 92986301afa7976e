//! Load for the receiver's benchmark: signed CircleCI `workflow-completed` deliveries, each
//! for a new workflow, from many connections at once; prints throughput and latency. With
//! `--source github` they are signed GitHub `workflow_run` completions of the repository
//! `bench/receiver`'s workflow `test` instead, and with `--source gitlab` GitLab Pipeline
//! Hooks of the project `bench/receiver`, with SECRET as their secret token. With
//! `--idle N --slow M` it first opens N connections that send nothing and M that send a
//! request's head and then its body a byte a second, and holds them open throughout: the
//! receiver under attack. Connections are kept alive between deliveries; with `--fresh` each
//! delivery comes on a new one (`Connection: close`), as webhook senders often do.
//!
//! `cargo run --release --example receiver_load -- URL SECRET COUNT CONCURRENCY [--idle N] [--slow M] [--fresh] [--source S]`

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
    let at = args.iter().position(|a| a == "--source");
    let source = at.map_or("circleci", |at| args[at + 1].as_str());
    let [url, secret, count, concurrency, ..] = args.as_slice() else {
        eprintln!(
            "usage: receiver_load URL SECRET COUNT CONCURRENCY [--idle N] [--slow M] [--fresh] \
             [--source circleci|github|gitlab]"
        );
        std::process::exit(2);
    };
    let count: usize = count.parse().expect("COUNT");
    let concurrency: usize = concurrency.parse().expect("CONCURRENCY");
    let attackers = attack(url, idle, slow);
    let deliveries = signed(source, secret, count);
    let started = Instant::now();
    let target = format!("{url}/{source}");
    let sent = send_all(&target, &deliveries, concurrency, fresh);
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

/// One delivery, made up front: its body and its headers.
struct Delivery {
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

/// `count` deliveries of `source`, each of a new build, signed up front, so that the clock
/// measures the receiver rather than this tool.
fn signed(source: &str, secret: &str, count: usize) -> Vec<Delivery> {
    let delivery = match source {
        "circleci" => circleci,
        "github" => github,
        "gitlab" => gitlab,
        other => panic!("--source {other}: expected circleci, github or gitlab"),
    };
    // Unique to this run, so that a second run closes new builds rather than duplicates: a
    // number from its time in milliseconds, with room for the count after it (GitHub's and
    // GitLab's ids are numbers).
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() % 1_000_000_000);
    (0..count)
        .map(|i| delivery(secret, run as usize * 1_000_000 + i))
        .collect()
}

/// A CircleCI `workflow-completed` of workflow `n`, signed.
fn circleci(secret: &str, n: usize) -> Delivery {
    let body = format!(
        r#"{{"id":"event-{n}","type":"workflow-completed","happened_at":"2026-11-22T00:00:00Z","project":{{"id":"p","slug":"gh/bench/receiver","name":"receiver"}},"workflow":{{"id":"workflow-{n}","name":"test","status":"success"}},"pipeline":{{"id":"x","number":{n}}}}}"#
    );
    let signature = format!("v1={}", sign::sign(secret, body.as_bytes()));
    let headers = vec![
        ("content-type", "application/json".to_owned()),
        ("circleci-event-type", "workflow-completed".to_owned()),
        ("circleci-signature", signature),
    ];
    Delivery {
        body: body.into_bytes(),
        headers,
    }
}

/// A GitHub `workflow_run` completion of run `n` of `bench/receiver`'s workflow `test`,
/// signed.
fn github(secret: &str, n: usize) -> Delivery {
    let body = format!(
        r#"{{"action":"completed","workflow_run":{{"id":{n},"name":"test","path":".github/workflows/test.yml","run_attempt":1,"status":"completed","conclusion":"success","head_sha":"3484a3fb816e0859fd6e1cea078d76385ff50625","head_branch":"main","html_url":"https://github.com/bench/receiver/actions/runs/{n}","pull_requests":[]}},"workflow":{{"name":"test","path":".github/workflows/test.yml"}},"repository":{{"full_name":"bench/receiver"}}}}"#
    );
    let signature = format!("sha256={}", sign::sign(secret, body.as_bytes()));
    let headers = vec![
        ("content-type", "application/json".to_owned()),
        ("x-github-event", "workflow_run".to_owned()),
        ("x-github-delivery", format!("delivery-{n}")),
        ("x-hub-signature-256", signature),
    ];
    Delivery {
        body: body.into_bytes(),
        headers,
    }
}

/// A GitLab Pipeline Hook of `bench/receiver`'s pipeline `n`, which succeeded, with the
/// secret token.
fn gitlab(secret: &str, n: usize) -> Delivery {
    let body = format!(
        r#"{{"object_kind":"pipeline","object_attributes":{{"id":{n},"iid":{n},"ref":"main","tag":false,"sha":"bcbb5ec396a2c0f828686f14fac9b80b780504f2","status":"success","url":"http://gitlab.example/bench/receiver/-/pipelines/{n}"}},"merge_request":null,"project":{{"id":7,"path_with_namespace":"bench/receiver"}}}}"#
    );
    let headers = vec![
        ("content-type", "application/json".to_owned()),
        ("x-gitlab-event", "Pipeline Hook".to_owned()),
        ("x-gitlab-token", secret.to_owned()),
    ];
    Delivery {
        body: body.into_bytes(),
        headers,
    }
}

/// What the deliveries came to: each acknowledged one's latency, how many of those were
/// queued (202) rather than closed, and how many were not acknowledged.
struct Sent {
    latencies: Vec<Duration>,
    queued: usize,
    failed: usize,
}

/// Every delivery, from `concurrency` connections at once.
fn send_all(target: &str, deliveries: &[Delivery], concurrency: usize, fresh: bool) -> Sent {
    let next = AtomicUsize::new(0);
    let (failed, queued) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let latencies = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..concurrency)
            .map(|_| {
                scope.spawn(|| {
                    let agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .new_agent();
                    let mut mine = Vec::new();
                    while let Some(delivery) = deliveries.get(next.fetch_add(1, Ordering::Relaxed))
                    {
                        let sent = Instant::now();
                        let mut request = agent
                            .post(target)
                            .header("connection", if fresh { "close" } else { "keep-alive" });
                        for (name, value) in &delivery.headers {
                            request = request.header(*name, value);
                        }
                        let answer = request.send(delivery.body.as_slice());
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
            // A signature well-formed enough for the body to be read (it cannot match).
            let signature = format!("v1={}", "0".repeat(64));
            let head = format!(
                "POST /circleci HTTP/1.1\r\nHost: bench\r\nContent-Length: 100000\r\n\
                 circleci-signature: {signature}\r\n\r\n"
            );
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
