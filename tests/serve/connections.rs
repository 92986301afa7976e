//! The receiver under an open-file limit, against clients that crowd its connections: that
//! never read their answers, keep the cap full with silent or kept-alive connections, hold
//! closes to several endpoints at once, or leave a head half sent at a stop. The cap is read
//! from the log (`at most N connections at once`), never derived here from the limit. Each
//! test is bounded in count and time, on loopback; Unix only (`ulimit -n`, signals).

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::hostile::{NeverReading, Pipeline, cpu_ticks};
use crate::receiver::{Answer, Raw, Receiver, SECRET, circleci_request, head, workflow_event};
use crate::support::{CLOSED, Reply, Server, json};
use crate::{signal, stop_line};

/// The answer to a request sent on a connection of its own, if it came in time; how long
/// it took from connecting; and the connection, kept open for as long as the test keeps it.
struct Delivered {
    answer: Option<Answer>,
    took: Duration,
    _connection: Option<Raw>,
}

/// `request` on a connection of its own, and its answer if one came within `limit` of the
/// first attempt to connect (a connection that waits to be accepted counts).
fn answered_within(addr: SocketAddr, request: &[u8], limit: Duration) -> Delivered {
    let started = Instant::now();
    let Some(mut raw) = Raw::connect_within(addr, limit) else {
        return Delivered {
            answer: None,
            took: started.elapsed(),
            _connection: None,
        };
    };
    let left = limit.saturating_sub(started.elapsed());
    raw.stream()
        .set_read_timeout(Some(left.max(Duration::from_millis(10))))
        .unwrap();
    let answer = raw.send(request).ok().and_then(|()| raw.answer());
    Delivered {
        answer,
        took: started.elapsed(),
        _connection: Some(raw),
    }
}

/// The cap on connections open at once, as the receiver says it at start: `at most N
/// connections at once (…)`.
fn connection_cap(receiver: &Receiver) -> usize {
    let line = receiver.log_line("at most ");
    let cap = line.strip_prefix("at most ").and_then(|rest| {
        let (n, _) = rest.split_once(" connections at once")?;
        n.parse().ok()
    });
    cap.unwrap_or_else(|| panic!("no cap in {line:?}"))
}

/// A receiver under an open-file limit of `files` (`ulimit -n`), with one project from the
/// environment in front of `coveralls`; `extra` variables added.
fn limited(files: u32, coveralls: &Server, extra: &[(&str, &str)]) -> Receiver {
    let endpoint = coveralls.url();
    let mut env = vec![
        ("COVERALLS_REPO_TOKEN", "limited-repo-token"),
        ("COVERALLS_ENDPOINT", endpoint.as_str()),
        ("CIRCLECI_WEBHOOK_SECRET", SECRET),
    ];
    env.extend_from_slice(extra);
    Receiver::start_with_file_limit(files, &env, &[])
}

/// `count` connections that pipeline requests for `/metrics` (as far as the receiver takes
/// them; its answers are long, so that its writes stall after a few dozen), made from 8
/// threads at once.
fn stalled_connections(addr: SocketAddr, count: usize) -> Vec<NeverReading> {
    let pipeline = Pipeline::of("/metrics");
    thread::scope(|scope| {
        let threads: Vec<_> = (0..8)
            .map(|first| {
                let pipeline = pipeline.clone();
                scope.spawn(move || {
                    let mine = (first..count).step_by(8);
                    let stalled = mine.map(|_| {
                        let mut never = NeverReading::connect(addr, pipeline.clone());
                        never.send_all();
                        never
                    });
                    stalled.collect::<Vec<_>>()
                })
            })
            .collect();
        let stalled = threads.into_iter().map(|t| t.join().unwrap());
        stalled.flatten().collect()
    })
}

/// Wait, at most `limit`, until process `pid` is all but idle: at most two clock ticks of CPU
/// in a quarter of a second (at once where the system does not tell).
fn wait_until_quiet(pid: u32, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut before = cpu_ticks(pid);
    while started.elapsed() < limit {
        thread::sleep(Duration::from_millis(250));
        let now = cpu_ticks(pid);
        match (before, now) {
            (Some(before), Some(now)) if now > before + 2 => {}
            _ => break,
        }
        before = now;
    }
    started.elapsed()
}

#[test]
fn connections_that_never_read_past_the_cap_leave_a_delivery_answered() {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let receiver = limited(400, &coveralls, &[]);
    let cap = connection_cap(&receiver);
    let stalled = stalled_connections(receiver.addr(), cap + 5);
    // Until it has answered what fits in the buffers and is stuck writing the rest.
    let quiet = wait_until_quiet(receiver.pid(), Duration::from_secs(10));
    println!("quiet after {quiet:?}");
    let addr = receiver.addr();
    let limit = Duration::from_secs(10);
    let body = workflow_event("e-past-stalled", "wf-past-stalled", "gh/a/b");
    let delivery = circleci_request(&body);
    let health = head("GET", "/healthz", &[]);
    let (delivered, healthy) = thread::scope(|scope| {
        let delivered = scope.spawn(|| answered_within(addr, &delivery, limit));
        let healthy = scope.spawn(|| answered_within(addr, &health, limit));
        (delivered.join().unwrap(), healthy.join().unwrap())
    });
    for (what, sent) in [("the delivery", delivered), ("/healthz", healthy)] {
        let answer = sent.answer.unwrap_or_else(|| {
            panic!(
                "{what}: no answer within {limit:?} beside {} connections that never read (a cap \
                 of {cap})",
                stalled.len()
            )
        });
        println!("{what}: {} after {:?}", answer.status, sent.took);
    }
}

/// Projects `p0` to `p3`, each on an endpoint of its own: a Coveralls each, that closes
/// every build and keeps connections open as the real one does; the projects file.
fn projects_on_four_endpoints() -> (Vec<Server>, String) {
    let coveralls: Vec<Server> = (0..4)
        .map(|_| Server::start_keeping_alive(vec![json(200, CLOSED)]))
        .collect();
    let mut toml = String::new();
    for (i, endpoint) in coveralls.iter().enumerate() {
        toml += &format!(
            "[[project]]\nname = \"p{i}\"\ncircleci_slug = \"gh/budget/p{i}\"\nrepo_token = \
             \"budget-token-{i}-of-four\"\nendpoint = \"{}\"\n",
            endpoint.url()
        );
    }
    (coveralls, toml)
}

/// A receiver of `toml`'s projects under an open-file limit of `files`.
fn limited_with_projects(files: u32, toml: &str, env: &[(&str, &str)]) -> Receiver {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("projects.toml");
    std::fs::write(&path, toml).unwrap();
    let args = ["--config", path.to_str().unwrap()];
    let receiver = Receiver::start_with_file_limit(files, env, &args).keeping(dir);
    (0..4).fold(receiver, |receiver, i| {
        receiver.secret(&format!("budget-token-{i}-of-four"))
    })
}

/// `count` deliveries at once, of new workflows of projects `p0` to `p2` in turn: each
/// answered 200 or 202.
fn closes_at_once(receiver: &Receiver, count: usize) {
    let statuses: Vec<u16> = thread::scope(|scope| {
        let deliveries: Vec<_> = (0..count)
            .map(|i| {
                scope.spawn(move || {
                    let slug = format!("gh/budget/p{}", i % 3);
                    let body = workflow_event(&format!("e-{i}"), &format!("wf-{i}"), &slug);
                    receiver.circleci(SECRET, "workflow-completed", &body).0
                })
            })
            .collect();
        deliveries.into_iter().map(|d| d.join().unwrap()).collect()
    });
    let answered = statuses.iter().filter(|s| matches!(s, 200 | 202)).count();
    assert_eq!(answered, count, "{statuses:?}");
}

/// How many file descriptors process `pid` has open (Linux).
fn open_files(pid: u32) -> usize {
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"));
    open.map_or(0, |entries| entries.count())
}

#[test]
fn closes_to_four_endpoints_and_a_full_cap_stay_within_the_file_limit() {
    const FILES: usize = 1024;
    let (coveralls, toml) = projects_on_four_endpoints();
    let env = [
        ("CIRCLECI_WEBHOOK_SECRET", SECRET),
        ("COVERALLS_FINISH_ANSWER_WAIT", "3s"),
    ];
    let receiver = limited_with_projects(FILES as u32, &toml, &env);
    let cap = connection_cap(&receiver);
    closes_at_once(&receiver, 128);
    receiver.wait_until_nothing_pending(Duration::from_secs(20));
    let addr = receiver.addr();
    let idle: Vec<Raw> = (0..cap)
        .filter_map(|_| Raw::connect_within(addr, Duration::from_secs(2)))
        .collect();
    thread::sleep(Duration::from_millis(500));
    let mut most = open_files(receiver.pid());
    let body = workflow_event("e-fourth", "wf-fourth", "gh/budget/p3");
    let sent = answered_within(addr, &circleci_request(&body), Duration::from_secs(3));
    most = most.max(open_files(receiver.pid()));
    println!(
        "at most {most} files open; the delivery took {:?}",
        sent.took
    );
    let log = receiver.log();
    for never in ["Too many open files", "accepting a connection failed"] {
        assert!(!log.contains(never), "{never}:\n{log}");
    }
    assert!(most <= FILES, "{most} files open");
    let answer = sent.answer.unwrap_or_else(|| {
        let idle = idle.len();
        panic!("no answer within 3 s beside {idle} idle connections (a cap of {cap})")
    });
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body.contains(r#""closed":true"#), "{answer:?}");
    assert_eq!(coveralls[3].requests().len(), 1);
}

/// Make sure this test process may open `files` descriptors: its soft limit raised towards
/// the hard one where it is lower.
fn own_file_limit_at_least(files: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|current| current < files) {
        let raised = Rlimit {
            current: Some(limit.maximum.map_or(files, |hard| hard.min(files))),
            maximum: limit.maximum,
        };
        let _ = setrlimit(Resource::Nofile, raised);
    }
    let now = getrlimit(Resource::Nofile).current;
    assert!(
        now.is_none_or(|now| now >= files),
        "the test needs {files} open files; its limit is {now:?}"
    );
}

/// A connection that will send nothing, made within half a second (or none, to be tried
/// again), that never blocks a read.
fn silent(addr: SocketAddr) -> Option<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_nonblocking(true).ok()?;
    Some(stream)
}

/// `count` connections that send nothing and connect again whenever the receiver cuts one
/// (or answers it), until `done`; `connected` counts the first connections as they are made.
fn silent_crowd(addr: SocketAddr, count: usize, done: &AtomicBool, connected: &AtomicUsize) {
    let mut crowd = Vec::with_capacity(count);
    while crowd.len() < count && !done.load(Ordering::SeqCst) {
        crowd.push(silent(addr));
        connected.fetch_add(1, Ordering::SeqCst);
    }
    let mut byte = [0; 1];
    while !done.load(Ordering::SeqCst) {
        for connection in &mut crowd {
            let open = connection.as_mut().is_some_and(|stream| {
                matches!(stream.read(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock)
            });
            if done.load(Ordering::SeqCst) {
                return;
            }
            if !open {
                *connection = silent(addr);
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_crowd_of_silent_connections_that_come_back_leaves_a_delivery_answered_in_time() {
    const CROWD: usize = 1700;
    own_file_limit_at_least(CROWD as u64 + 300);
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let receiver = limited(1024, &coveralls, &[]);
    let cap = connection_cap(&receiver);
    assert!(cap < CROWD, "a cap of {cap}: the crowd must be larger");
    let addr = receiver.addr();
    let (done, connected) = (AtomicBool::new(false), AtomicUsize::new(0));
    let body = workflow_event("e-crowd", "wf-crowd", "gh/a/b");
    let limit = Duration::from_secs(5);
    let sent = thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| silent_crowd(addr, CROWD / 4, &done, &connected));
        }
        let started = Instant::now();
        while connected.load(Ordering::SeqCst) < CROWD && started.elapsed() < limit * 3 {
            thread::sleep(Duration::from_millis(20));
        }
        let sent = answered_within(addr, &circleci_request(&body), limit);
        done.store(true, Ordering::SeqCst);
        sent
    });
    let answer = sent.answer.unwrap_or_else(|| {
        panic!("no answer within {limit:?} beside {CROWD} silent connections (a cap of {cap})")
    });
    println!("{} after {:?}", answer.status, sent.took);
    // Every other connection is idle: one of them is cut to make room, none is refused.
    assert!(matches!(answer.status, 200 | 202), "{answer:?}");
}

#[test]
fn kept_alive_deliveries_past_the_cap_while_coveralls_stalls_are_each_answered() {
    const DELIVERIES: usize = 300;
    let coveralls = Server::start(vec![Reply::Stall]);
    let mut receiver = limited(400, &coveralls, &[]);
    let cap = connection_cap(&receiver);
    assert!(
        cap < DELIVERIES,
        "a cap of {cap}: the deliveries must be more"
    );
    let limit = Duration::from_secs(12);
    // Each connection stays open after its answer, until the end: a sender's pool keeps it.
    let sent: Vec<Delivered> = thread::scope(|scope| {
        let senders: Vec<_> = (0..DELIVERIES)
            .map(|i| {
                let addr = receiver.addr();
                scope.spawn(move || {
                    let body = workflow_event(&format!("e-{i}"), &format!("wf-{i}"), "gh/a/b");
                    answered_within(addr, &circleci_request(&body), limit)
                })
            })
            .collect();
        senders.into_iter().map(|s| s.join().unwrap()).collect()
    });
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for answer in sent.iter().filter_map(|s| s.answer.as_ref()) {
        *statuses.entry(answer.status).or_default() += 1;
    }
    let unanswered = sent.iter().filter(|s| s.answer.is_none()).count();
    let slowest = sent.iter().map(|s| s.took).max().unwrap();
    assert_eq!(
        unanswered, 0,
        "unanswered within {limit:?} (a cap of {cap}); the answers: {statuses:?}"
    );
    println!("{statuses:?}, the slowest after {slowest:?}");
    // The closes stuck in Coveralls may take the whole grace (9.5 s) before the stop.
    signal(&receiver, "-TERM");
    let code = receiver.wait(Duration::from_secs(15));
    assert!(code.is_some(), "still running 15 s after SIGTERM");
    let stopped = stop_line(&receiver);
    let expected = match code {
        Some(0) => "every delivery in flight was answered",
        Some(1) => "could not be answered in time",
        other => panic!("exit {other:?}: {stopped}"),
    };
    assert!(stopped.contains(expected), "exit {code:?}: {stopped}");
    drop(sent);
}

#[test]
fn sigterm_with_a_head_half_sent_exits_at_once() {
    let (_coveralls, mut receiver) = crate::closing();
    let mut half = Raw::connect(receiver.addr());
    half.send(b"POST /circleci HTTP/1.1\r\nHost: receiver\r\n")
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    signal(&receiver, "-TERM");
    let code = receiver.wait(Duration::from_secs(2));
    assert_eq!(
        code,
        Some(0),
        "still running {:?} after SIGTERM",
        started.elapsed()
    );
    let stopped = stop_line(&receiver);
    assert!(
        stopped.contains("every delivery in flight was answered"),
        "{stopped}"
    );
}
