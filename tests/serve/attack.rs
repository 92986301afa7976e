//! The receiver as an attacker and a bad network would try it: each case a bounded test on
//! loopback. It answers what it should, cuts off what it must, and never stops serving.

use std::thread;
use std::time::{Duration, Instant};

use crate::receiver::{
    MAGNUM, Raw, Receiver, SECRET, circleci_request, head, resident_kib, workflow_event,
};
#[cfg(unix)]
use crate::signal;
use crate::support::{CLOSED, Reply, Server, binary, json, under_wine};
use crate::{SIGNATURE_TO_CHECK, assert_still_closes, closing, error};

#[test]
fn an_absurd_content_length_is_refused_at_once_never_a_crash() {
    let (coveralls, receiver) = closing();
    let magnum = format!("/magnum?secret={MAGNUM}");
    for path in ["/circleci", magnum.as_str(), "/nope"] {
        for length in ["18446744073709551615", "99999999999999", "1048577"] {
            let mut raw = Raw::connect(receiver.addr());
            let headers = [("Content-Length", length), SIGNATURE_TO_CHECK];
            raw.send(&head("POST", path, &headers)).unwrap();
            let started = Instant::now();
            let answer = raw.answer().expect("an answer");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{path} {length}"
            );
            let expected: &[u16] = match (path, length) {
                ("/nope", _) => &[404, 431],
                (_, "18446744073709551615") => &[400, 431],
                _ => &[413],
            };
            assert!(
                expected.contains(&answer.status),
                "{path} {length}: {answer:?}"
            );
            if answer.status == 413 {
                // Answered without reading a byte of the body, and the connection ends.
                assert!(answer.head.contains("connection: close"), "{answer:?}");
                assert!(raw.closed_within(Duration::from_secs(2)).is_some());
            }
        }
    }
    assert_eq!(receiver.get("/healthz"), 200);
    assert_still_closes(&receiver, "wf-after-lengths", Duration::from_secs(2));
    assert_eq!(coveralls.requests().len(), 1);
}

/// Connect, maybe send `request`, and reset the connection (SO_LINGER 0) rather than close it.
fn reset_connection(addr: std::net::SocketAddr, request: Option<&[u8]>) {
    let mut raw = Raw::connect(addr);
    if let Some(request) = request {
        let _ = raw.send(request);
    }
    raw.reset();
}

#[test]
fn connections_reset_at_once_leave_it_serving() {
    let (_coveralls, receiver) = closing();
    let addr = receiver.addr();
    let request = circleci_request(&workflow_event("e-reset", "wf-reset", "gh/a/b"));
    // Connections reset while they wait to be accepted: the receiver is paused meanwhile, so
    // that it accepts each one only after its reset (Wine has no signals to pause it with).
    #[cfg(unix)]
    signal(&receiver, "-STOP");
    let rounds = if under_wine() { 4 } else { 12 };
    thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for round in 0..rounds {
                    let sent = (round % 2 == 0).then_some(request.as_slice());
                    reset_connection(addr, sent);
                }
            });
        }
    });
    #[cfg(unix)]
    signal(&receiver, "-CONT");
    // And reset while it runs, at once.
    if !under_wine() {
        thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for round in 0..60 {
                        reset_connection(addr, (round % 2 == 0).then_some(request.as_slice()));
                    }
                });
            }
        });
    }
    assert_eq!(receiver.get("/healthz"), 200);
    assert_still_closes(&receiver, "wf-after-resets", Duration::from_secs(3));
    // Not a thread lost either (a release build aborts on a panic).
    let log = receiver.log();
    assert!(!log.contains("panic"), "{log}");
}

#[cfg(unix)]
#[test]
fn idle_connections_past_the_file_limit_are_shed_and_it_keeps_serving() {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let endpoint = coveralls.url();
    let mut receiver = Receiver::start_with_file_limit(
        64,
        &[
            ("COVERALLS_REPO_TOKEN", "limited-token"),
            ("COVERALLS_ENDPOINT", &endpoint),
            ("CIRCLECI_WEBHOOK_SECRET", SECRET),
        ],
        &[],
    );
    let log = receiver.log_with("connections at once");
    assert!(log.contains("the open-file limit is 64"), "{log}");
    let idle: Vec<Raw> = (0..200).map(|_| Raw::connect(receiver.addr())).collect();
    thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.wait(Duration::ZERO), None, "still running");
    assert!(
        !receiver.log().contains("accepting a connection failed"),
        "it never ran out of file descriptors:\n{}",
        receiver.log()
    );
    drop(idle);
    // Until the receiver has seen them go, a newcomer may find the cap full of connections
    // just accepted (none idle long enough to cut): a 503 that says to come back in a second.
    let started = Instant::now();
    let (mut status, mut body) = receiver.fetch("/healthz");
    while status == 503 && started.elapsed() < Duration::from_secs(4) {
        assert!(body.contains("connection cap"), "{body}");
        thread::sleep(Duration::from_secs(1));
        (status, body) = receiver.fetch("/healthz");
    }
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_still_closes(&receiver, "wf-after-idle", Duration::from_secs(3));
}

#[test]
fn slow_bodies_pin_nothing_and_are_cut_off() {
    let (_coveralls, receiver) = closing();
    let signature = format!("v1={}", "0".repeat(64));
    let mut slow: Vec<(Raw, Instant)> = (0..64)
        .map(|_| {
            let mut raw = Raw::connect(receiver.addr());
            let mut request = head(
                "POST",
                "/circleci",
                &[
                    ("Content-Length", "1000"),
                    ("circleci-signature", &signature),
                ],
            );
            request.extend_from_slice(b"{\"id\":");
            raw.send(&request).unwrap();
            (raw, Instant::now())
        })
        .collect();
    let started = Instant::now();
    assert_eq!(receiver.get("/healthz"), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_still_closes(&receiver, "wf-beside-slow", Duration::from_secs(2));
    for (raw, sent) in &mut slow {
        let answer = raw.answer().expect("an answer to a slow body");
        assert_eq!(answer.status, 408, "{answer:?}");
        let waited = sent.elapsed();
        assert!(
            waited > Duration::from_secs(8) && waited < Duration::from_secs(13),
            "{waited:?}"
        );
        assert!(raw.closed_within(Duration::from_secs(2)).is_some());
    }
}

#[test]
fn a_long_signature_header_is_refused_before_any_hmac() {
    let (coveralls, receiver) = closing();
    let body = vec![b'x'; 1 << 20];
    let long = vec!["v1="; 3000].join(",");
    let answers: Vec<(u16, serde_json::Value, Duration)> = thread::scope(|scope| {
        let attackers: Vec<_> = (0..32)
            .map(|_| {
                scope.spawn(|| {
                    let started = Instant::now();
                    let headers = [("circleci-signature", long.as_str())];
                    let (status, answer) = receiver.post("/circleci", &headers, &body);
                    (status, answer, started.elapsed())
                })
            })
            .collect();
        assert_still_closes(&receiver, "wf-beside-signatures", Duration::from_secs(3));
        attackers.into_iter().map(|a| a.join().unwrap()).collect()
    });
    for (status, answer, took) in answers {
        assert_eq!(status, 400, "{answer}");
        assert_eq!(error(&answer), "circleci-signature is over 1024 bytes");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
    // Longer than a request head may be at all: refused by the HTTP layer.
    let longer = vec!["v1="; 5000].join(",");
    let (status, _) = receiver.post("/circleci", &[("circleci-signature", &longer)], b"{}");
    assert_eq!(status, 431);
    assert_eq!(coveralls.requests().len(), 1);
}

#[test]
fn an_endless_header_line_is_cut_off_and_memory_stays_flat() {
    let (_coveralls, receiver) = closing();
    let before = resident_kib(receiver.pid());
    let mut raw = Raw::connect(receiver.addr());
    raw.send(b"POST /circleci HTTP/1.1\r\nX-Endless: ").unwrap();
    let chunk = vec![b'a'; 64 << 10];
    let mut sent = 0usize;
    while sent < 300 << 20 && raw.send(&chunk).is_ok() {
        sent += chunk.len();
    }
    assert!(
        sent < 64 << 20,
        "the receiver took {sent} bytes of one header line"
    );
    if let (Some(before), Some(after)) = (before, resident_kib(receiver.pid())) {
        assert!(
            after < before + 20_000,
            "memory grew from {before} KiB to {after} KiB"
        );
    }
    assert_eq!(receiver.get("/healthz"), 200);
}

#[test]
fn idle_and_half_sent_connections_are_cut_off() {
    let (_coveralls, receiver) = closing();
    let silent = Raw::connect(receiver.addr());
    let mut half = Raw::connect(receiver.addr());
    half.send(b"POST /circleci HTTP/1.1\r\nHost: receiver\r\n")
        .unwrap();
    let mut kept_alive = Raw::connect(receiver.addr());
    kept_alive.send(&head("GET", "/healthz", &[])).unwrap();
    assert_eq!(kept_alive.answer().expect("an answer").status, 200);
    let cases = [
        ("silent", silent),
        ("half a head", half),
        ("idle keep-alive", kept_alive),
    ];
    thread::scope(|scope| {
        for (what, mut raw) in cases {
            scope.spawn(move || {
                let closed = raw.closed_within(Duration::from_secs(15));
                let closed = closed.unwrap_or_else(|| panic!("{what}: never closed"));
                assert!(
                    closed > Duration::from_secs(8) && closed < Duration::from_secs(12),
                    "{what}: closed after {closed:?}"
                );
            });
        }
    });
}

#[cfg(unix)]
#[test]
fn sigterm_cuts_slow_and_idle_connections_and_exits_in_time() {
    let (_coveralls, mut receiver) = closing();
    let mut slow = Raw::connect(receiver.addr());
    // More than a server reads ahead with the head, so that only a body timeout ends it.
    slow.send(&head(
        "POST",
        "/circleci",
        &[("Content-Length", "5000"), SIGNATURE_TO_CHECK],
    ))
    .unwrap();
    let _idle = Raw::connect(receiver.addr());
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    signal(&receiver, "-TERM");
    assert_eq!(receiver.wait(Duration::from_secs(10)), Some(0));
    assert!(started.elapsed() < Duration::from_secs(10));
    let answer = slow.answer().expect("the slow body is answered");
    assert_eq!(answer.status, 503, "{answer:?}");
    receiver.log_with("stopped: every delivery in flight was answered");
}

#[cfg(unix)]
#[test]
fn sigterm_answers_every_delivery_and_a_restart_closes_what_was_left_pending() {
    // More deliveries than attempts run at once, so that some wait for a place when it stops.
    const DELIVERIES: u64 = 150;
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("state.sqlite3");
    let state_var = ("COVERALLS_FINISH_STATE", state_file.to_str().unwrap());
    let slow = Server::start(vec![Reply::Slow(
        Duration::from_millis(1500),
        Box::new(json(200, CLOSED)),
    )]);
    let wait = ("COVERALLS_FINISH_ANSWER_WAIT", "8s");
    let mut receiver = Receiver::in_front_of(&slow, &[state_var, wait]);
    let answers = terminated_with_every_delivery_in_flight(&receiver, DELIVERIES);
    let closed = answers.iter().filter(|s| **s == 200).count();
    let queued = answers.iter().filter(|s| **s == 202).count();
    assert_eq!(
        closed + queued,
        answers.len(),
        "every one answered 2xx: {answers:?}"
    );
    assert!(
        queued > 0,
        "some were still waiting for a place: {answers:?}"
    );
    assert_eq!(receiver.wait(Duration::from_secs(10)), Some(0));
    let pending = pending_at_stop(&receiver);
    assert!(
        pending > 0 && pending <= queued,
        "{pending} pending, {queued} queued"
    );

    let fast = Server::start(vec![json(200, CLOSED)]);
    let restarted = Receiver::in_front_of(&fast, &[state_var]);
    restarted.wait_until_nothing_pending(Duration::from_secs(20));
    let mut builds: Vec<String> = slow
        .requests()
        .iter()
        .chain(fast.requests().iter())
        .map(|r| {
            r.json()["payload"]["build_num"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    builds.sort();
    builds.dedup();
    assert_eq!(builds.len(), DELIVERIES as usize, "every delivery closed");
    assert_eq!(
        fast.requests().len(),
        pending,
        "the pending ones, after the restart"
    );
}

/// `count` deliveries of new workflows at once, and SIGTERM once every one is in flight
/// (being closed, or waiting for a place to be): their answers' statuses.
#[cfg(unix)]
fn terminated_with_every_delivery_in_flight(receiver: &Receiver, count: u64) -> Vec<u16> {
    thread::scope(|scope| {
        let deliveries: Vec<_> = (0..count)
            .map(|i| {
                scope.spawn(move || {
                    let body = workflow_event(&format!("e-{i}"), &format!("wf-{i}"), "gh/a/b");
                    receiver.circleci(SECRET, "workflow-completed", &body).0
                })
            })
            .collect();
        let started = Instant::now();
        while receiver.in_flight() < count + 1 {
            assert!(started.elapsed() < Duration::from_secs(10));
            thread::sleep(Duration::from_millis(20));
        }
        signal(receiver, "-TERM");
        deliveries.into_iter().map(|d| d.join().unwrap()).collect()
    })
}

/// How many closes the stop line says stay pending.
#[cfg(unix)]
fn pending_at_stop(receiver: &Receiver) -> usize {
    let stopped = receiver.log_line("stopped: every delivery in flight was answered; ");
    stopped
        .split("; ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of pending closes: {stopped}"))
}

#[test]
fn hundreds_of_deliveries_while_coveralls_stalls_are_answered_in_time() {
    let coveralls = Server::start(vec![Reply::Stall]);
    let receiver = Receiver::in_front_of(&coveralls, &[]);
    // Under Wine, starting 300 connections at once takes the test itself over a second, which
    // the clock below would count against the receiver: fewer there.
    let deliveries = if under_wine() { 100 } else { 300 };
    let answers: Vec<(u16, Duration)> = thread::scope(|scope| {
        let deliveries: Vec<_> = (0..deliveries)
            .map(|i| {
                let receiver = &receiver;
                scope.spawn(move || {
                    let body = workflow_event(&format!("e-{i}"), &format!("wf-{i}"), "gh/a/b");
                    let sent = Instant::now();
                    let (status, _) = receiver.circleci(SECRET, "workflow-completed", &body);
                    (status, sent.elapsed())
                })
            })
            .collect();
        deliveries.into_iter().map(|d| d.join().unwrap()).collect()
    });
    let slowest = answers.iter().map(|(_, took)| *took).max().unwrap();
    println!(
        "{deliveries} deliveries while Coveralls stalls: the slowest answered after {slowest:?}"
    );
    for (status, took) in &answers {
        assert_eq!(
            *status, 202,
            "recorded, to be closed once Coveralls answers"
        );
        assert!(*took < Duration::from_secs(10), "answered after {took:?}");
    }
    assert_eq!(receiver.health()["pending"], deliveries);
}

#[test]
fn control_bytes_never_reach_the_log_raw() {
    let (_coveralls, receiver) = closing();
    let mut raw = Raw::connect(receiver.addr());
    raw.send(b"POST /circ\x1bleci HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(raw.answer().expect("an answer").status, 400);
    let forged = "wf\nPOST /circleci event=ping status=200\u{1b}[2J";
    let body = workflow_event("e-forged", forged, "gh/a/b");
    let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body);
    assert_eq!(status, 200, "{answer}");
    let line = receiver.log_line("POST /circleci event=workflow-completed id=e-forged");
    assert!(
        line.contains(r#"build="wf\nPOST /circleci event=ping status=200\u{1b}[2J""#),
        "{line}"
    );
    let log = receiver.log();
    assert!(!log.contains('\u{1b}'), "{log}");
    assert!(
        !log.lines()
            .any(|l| l.starts_with("POST /circleci event=ping")),
        "{log}"
    );
}

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "failpoints are compiled into debug builds only"
)]
fn a_panic_in_a_delivery_is_500_one_in_a_close_is_retried_and_the_receiver_goes_on() {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    // The first delivery panics before its verdict, the next close's first two attempts on
    // the closing thread.
    let failpoints = "panic-in-verdict=1*panic,panic-in-close=2*panic";
    let receiver = Receiver::in_front_of(
        &coveralls,
        &[
            ("COVERALLS_FINISH_FAILPOINTS", failpoints),
            ("COVERALLS_FINISH_RETRY_SCHEDULE", "100ms"),
        ],
    );
    let body = workflow_event("e-1", "wf-1", "gh/a/b");
    let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body);
    assert_eq!(status, 500, "{answer}");
    let line = receiver.log_line("panic: ");
    assert!(
        line.contains("failpoint panic-in-verdict: a panic on purpose"),
        "{line}"
    );
    receiver.log_with("status=500");
    // The close is recorded before its attempt panics: it stays pending and is tried again.
    let body = workflow_event("e-2", "wf-2", "gh/a/b");
    let started = Instant::now();
    let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body);
    assert_eq!(status, 202, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2));
    receiver.wait_until_nothing_pending(Duration::from_secs(10));
    receiver.log_with("failpoint panic-in-close: a panic on purpose");
    receiver.log_with("the close failed inside the receiver");
    assert_still_closes(&receiver, "wf-after-panics", Duration::from_secs(2));
    let closed: Vec<String> = coveralls
        .requests()
        .iter()
        .map(|r| {
            r.json()["payload"]["build_num"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(closed, ["wf-2", "wf-after-panics"], "each closed once");
}

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "failpoints are compiled into debug builds only"
)]
fn an_abort_at_a_failpoint_ends_the_receiver_at_once() {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let failpoints = [("COVERALLS_FINISH_FAILPOINTS", "panic-in-close=abort")];
    let mut receiver = Receiver::in_front_of(&coveralls, &failpoints);
    assert_eq!(
        receiver.get("/healthz"),
        200,
        "serving until a close begins"
    );
    let mut raw = Raw::connect(receiver.addr());
    let body = workflow_event("e-abort", "wf-abort", "gh/a/b");
    raw.send(&circleci_request(&body)).unwrap();
    let answer = raw.answer();
    assert!(answer.is_none(), "a crash answers nothing: {answer:?}");
    let status = receiver.exit_status(Duration::from_secs(5));
    let status = status.expect("the receiver ended");
    assert!(!status.success(), "{status}");
    receiver.log_with("failpoint panic-in-close: aborting on purpose");
    assert!(coveralls.requests().is_empty());
}

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "failpoints are compiled into debug builds only"
)]
fn a_failpoint_that_does_not_exist_stops_it_at_start() {
    let state = tempfile::tempdir().unwrap();
    let output = binary()
        .env("CIRCLECI_WEBHOOK_SECRET", SECRET)
        .env("COVERALLS_REPO_TOKEN", "a-token-for-this-test")
        .env("COVERALLS_FINISH_STATE", state.path().join("state.sqlite3"))
        .env("COVERALLS_FINISH_FAILPOINTS", "panic-in-close,after-lunch")
        .arg("serve")
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "COVERALLS_FINISH_FAILPOINTS: no failpoint is named \"after-lunch\"; expected one of \
             panic-in-verdict, panic-in-close"
        ),
        "{stderr}"
    );
}
