//! The receiver, `coveralls-finish serve`: the built binary against a recording Coveralls on
//! loopback, one module a source and one a concern, in one test binary.

#[path = "../support/receiver.rs"]
mod receiver;
#[path = "../support/mod.rs"]
mod support;

mod attack;
mod circleci;
mod closes;
#[cfg(unix)]
mod connections;
#[cfg(unix)]
mod crash;
mod github;
mod gitlab;
mod hostile;
mod load;
mod magnum;
mod projects;
mod routes;
mod store;

use std::io::Write;
use std::time::{Duration, Instant};

use receiver::{Answer, Raw, Receiver, SECRET, head, workflow_event};
use support::{CLOSED, Server, json};

/// The workflow of the workflow-completed fixture: the build it closes.
const WORKFLOW: &str = "fda08377-fe7e-46b1-8992-3a7aaecac9c3";

/// The usual pair: a Coveralls that closes every build, and a receiver in front of it.
fn closing() -> (Server, Receiver) {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let receiver = Receiver::in_front_of(&coveralls, &[]);
    (coveralls, receiver)
}

/// A CircleCI signature header well-formed enough to get the body read (it is checked only
/// against the body): for the tests of what happens while a body is read.
const SIGNATURE_TO_CHECK: (&str, &str) = (
    "circleci-signature",
    "v1=0000000000000000000000000000000000000000000000000000000000000000",
);

/// A signed delivery for a new workflow, answered 200 within `limit`.
fn assert_still_closes(receiver: &Receiver, workflow: &str, limit: Duration) {
    let started = Instant::now();
    let body = workflow_event(&format!("event-{workflow}"), workflow, "gh/a/b");
    let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body);
    assert_eq!(status, 200, "{answer}");
    assert!(started.elapsed() < limit, "{:?}", started.elapsed());
}

/// The error an answer gives; a test that expects one fails where there is none.
fn error(answer: &serde_json::Value) -> &str {
    let error = answer["error"].as_str();
    error.unwrap_or_else(|| panic!("no error in the answer {answer}"))
}

/// Send the receiver a signal: `-TERM`, `-STOP`, `-CONT`.
#[cfg(unix)]
fn signal(receiver: &Receiver, signal: &str) {
    let kill = std::process::Command::new("kill")
        .args([signal, &receiver.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success(), "kill {signal}");
}

/// The stop line, `stopped: …`, once the log has it.
#[cfg(unix)]
fn stop_line(receiver: &Receiver) -> String {
    let log = receiver.log_with("stopped: ");
    let line = log.lines().find(|line| line.contains("stopped: "));
    line.expect("a line that says it").to_owned()
}

/// A request to `path` whose head declares `length` bytes of body and carries `headers`,
/// sent raw (from a thread of its own, since the receiver may answer and hang up before the
/// head is all sent); the status of its answer, which must come within two seconds, and
/// whether the connection then closed.
fn answer_at_once(
    receiver: &Receiver,
    path: &str,
    length: usize,
    headers: &[(&str, &str)],
) -> (u16, bool) {
    let (answer, closed) = answered_at_once(receiver, path, length, headers);
    (answer.status, closed)
}

/// The same, with the whole answer: its head too.
fn answered_at_once(
    receiver: &Receiver,
    path: &str,
    length: usize,
    headers: &[(&str, &str)],
) -> (Answer, bool) {
    let mut raw = Raw::connect(receiver.addr());
    let length = length.to_string();
    let mut all = vec![("Content-Length", length.as_str())];
    all.extend_from_slice(headers);
    let request = head("POST", path, &all);
    let mut writer = raw.stream().try_clone().unwrap();
    let started = Instant::now();
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    let answer = raw.answer().expect("an answer");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "{path}: {took:?}");
    let closed = raw.closed_within(Duration::from_secs(2)).is_some();
    sending.join().unwrap();
    (answer, closed)
}

/// A header's value of `bytes` bytes: `pattern` over and over, as a long signature would be.
fn long_header(pattern: &str, bytes: usize) -> String {
    let mut header = pattern.repeat(bytes / pattern.len() + 1);
    header.truncate(bytes);
    header
}
