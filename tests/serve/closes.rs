//! What becomes of a close: Coveralls' answers, its failures and stalls, duplicates, a
//! stop while one is under way.

use std::thread;
use std::time::Duration;

use crate::receiver::{MAGNUM, Receiver, SECRET, fixture, workflow_event};
#[cfg(unix)]
use crate::signal;
use crate::support::{CLOSED, Reply, Server, json};
use crate::{WORKFLOW, closing, error};

#[test]
fn blank_or_overlong_build_numbers_are_refused_and_never_sent() {
    let (coveralls, receiver) = closing();
    for workflow in ["", "   ", &"w".repeat(257)] {
        let body = workflow_event("e-n", workflow, "gh/a/b");
        let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body);
        assert_eq!(status, 400, "{workflow:?}: {answer}");
        assert!(
            error(&answer).contains("must be 1 to 256 bytes, not blank"),
            "{answer}"
        );
    }
    let long = "9".repeat(257);
    let cases = [
        (
            r#""  ""#.to_owned(),
            "project_id and number must be numbers or text",
        ),
        (format!("\"{long}\""), "must be 1 to 256 bytes, not blank"),
    ];
    for (number, expected) in cases {
        let hook = format!(r#"{{"project_id": 43, "number": {number}}}"#);
        let (status, answer) = receiver.magnum(MAGNUM, &[], hook.as_bytes());
        assert_eq!(status, 400, "{number}: {answer}");
        assert!(error(&answer).contains(expected), "{answer}");
    }
    let body = workflow_event("e-ok", &"w".repeat(256), "gh/a/b");
    let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body);
    assert_eq!(status, 200, "256 bytes are fine: {answer}");
    assert_eq!(coveralls.requests().len(), 1);
}

/// Retries a hundred milliseconds apart, so that a test sees them.
const QUICK_RETRIES: (&str, &str) = ("COVERALLS_FINISH_RETRY_SCHEDULE", "100ms");

#[test]
fn a_huge_5xx_from_coveralls_is_queued_and_retried() {
    let page = format!("<html><body>{}</body></html>", "x".repeat(2 << 20));
    let coveralls = Server::start(vec![
        Reply::Answer {
            status: 502,
            headers: vec![("Content-Type".into(), "text/html".into())],
            body: page.into_bytes(),
        },
        json(200, CLOSED),
    ]);
    let receiver = Receiver::in_front_of(&coveralls, &[QUICK_RETRIES]);
    let body = fixture("circleci_workflow_completed_github_oauth.json");
    let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body);
    assert_eq!(status, 202, "recorded, to be tried again: {answer}");
    assert_eq!(answer["queued"], true, "{answer}");
    let why = answer["why"].as_str().unwrap_or_default();
    assert!(
        why.contains("502 Bad Gateway: (an answer of over 1048576 bytes, not read)"),
        "{answer}"
    );
    receiver.wait_until_nothing_pending(Duration::from_secs(10));
    assert_eq!(
        coveralls.requests().len(),
        2,
        "tried again, without a redelivery"
    );
    let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body);
    assert_eq!(
        (status, &answer["closed"]),
        (200, &serde_json::json!(true)),
        "{answer}"
    );
    assert_eq!(answer["duplicate"], true, "{answer}");
}

#[test]
fn duplicate_deliveries_close_once() {
    let coveralls = Server::start(vec![Reply::Slow(
        Duration::from_millis(300),
        Box::new(json(200, CLOSED)),
    )]);
    // Every answer waits for the one close, however busy the machine is with other tests.
    let wait = ("COVERALLS_FINISH_ANSWER_WAIT", "8s");
    let receiver = Receiver::in_front_of(&coveralls, &[wait]);
    let body = fixture("circleci_workflow_completed_github_oauth.json");
    let answers: Vec<(u16, serde_json::Value)> = thread::scope(|scope| {
        let threads: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| receiver.circleci(SECRET, "workflow-completed", &body)))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let (status, later) = receiver.circleci(SECRET, "workflow-completed", &body);
    assert_eq!(coveralls.requests().len(), 1, "closed once");
    assert!(
        answers
            .iter()
            .all(|(status, a)| *status == 200 && a["closed"] == true),
        "{answers:?}"
    );
    assert_eq!(
        answers
            .iter()
            .filter(|(_, a)| a["duplicate"] == true)
            .count(),
        7
    );
    assert_eq!(
        (status, &later["duplicate"]),
        (200, &serde_json::json!(true))
    );
}

#[test]
fn coveralls_failing_queues_the_close_until_it_answers() {
    let coveralls = Server::start(vec![
        json(503, r#"{"error":"down"}"#),
        json(503, r#"{"error":"down"}"#),
        json(200, CLOSED),
    ]);
    let receiver = Receiver::in_front_of(&coveralls, &[QUICK_RETRIES]);
    let body = fixture("circleci_workflow_completed_github_oauth.json");
    let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body);
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["queued"], true);
    let why = answer["why"].as_str().unwrap_or_default();
    assert!(why.contains("503 Service Unavailable: down"), "{answer}");
    receiver.wait_until_nothing_pending(Duration::from_secs(10));
    assert_eq!(
        coveralls.requests().len(),
        3,
        "retried until Coveralls took it"
    );
    receiver.log_with("attempt 2 failed");
    receiver.log_with("closed (attempt 3)");
}

#[test]
fn the_answer_waits_a_second_when_coveralls_hangs_then_says_queued() {
    let coveralls = Server::start(vec![Reply::Stall]);
    let receiver = Receiver::in_front_of(&coveralls, &[]);
    let body = fixture("circleci_workflow_completed_github_oauth.json");
    let started = std::time::Instant::now();
    let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body);
    let took = started.elapsed();
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        answer["why"], "the first attempt is still under way",
        "{answer}"
    );
    assert!(
        took >= Duration::from_millis(900),
        "waited for the attempt: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(receiver.health()["pending"], 1);
}

#[test]
fn a_refusal_is_answered_200_since_a_redelivery_cannot_help() {
    let coveralls = Server::start(vec![json(
        422,
        r#"{"error":"No build matching CI build number found"}"#,
    )]);
    let receiver = Receiver::in_front_of(&coveralls, &[]);
    let (status, answer) = receiver.circleci(
        SECRET,
        "workflow-completed",
        &fixture("circleci_workflow_completed_github_oauth.json"),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["closed"], false);
    assert!(
        error(&answer).contains(&format!(
            "sent build number {WORKFLOW} (from workflow.id of CircleCI event"
        )),
        "{answer}"
    );
}

#[test]
fn a_stalled_connection_is_cut_at_the_timeout_and_tried_afresh() {
    let coveralls = Server::start(vec![Reply::Stall, json(200, CLOSED)]);
    let receiver =
        Receiver::in_front_of(&coveralls, &[QUICK_RETRIES, ("COVERALLS_TIMEOUT", "1.5")]);
    let (status, answer) = receiver.circleci(
        SECRET,
        "workflow-completed",
        &fixture("circleci_workflow_completed_github_oauth.json"),
    );
    assert_eq!(status, 202, "{answer}");
    receiver.wait_until_nothing_pending(Duration::from_secs(10));
    assert_eq!(
        coveralls.requests().len(),
        2,
        "the stalled attempt, then a fresh one"
    );
    receiver.log_with("attempt 1 failed");
}

#[cfg(unix)]
#[test]
fn sigterm_finishes_what_is_in_flight_then_exits_0() {
    let coveralls = Server::start(vec![Reply::Slow(
        Duration::from_millis(700),
        Box::new(json(200, CLOSED)),
    )]);
    let mut receiver = Receiver::in_front_of(&coveralls, &[]);
    let body = fixture("circleci_workflow_completed_github_oauth.json");
    let answer = thread::scope(|scope| {
        let in_flight = scope.spawn(|| receiver.circleci(SECRET, "workflow-completed", &body));
        // Let the delivery reach Coveralls, then ask the receiver to stop.
        assert!(
            coveralls.wait_for(1, Duration::from_secs(5)),
            "the delivery never reached Coveralls"
        );
        signal(&receiver, "-TERM");
        in_flight.join().unwrap()
    });
    assert_eq!(answer.0, 200, "{:?}", answer.1);
    assert_eq!(receiver.wait(Duration::from_secs(5)), Some(0));
    receiver.log_with("stopped: every delivery in flight was answered");
}
