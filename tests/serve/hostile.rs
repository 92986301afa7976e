//! The receiver against the second round of attacks: clients that never read, half-close or
//! vanish; a log nobody reads; a SIGHUP; bodies that cannot be authenticated or are huge;
//! Coveralls' own text; ten thousand projects; a projects file built to crash a parser.
//! Each test is bounded in count and time, on loopback.

use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::receiver::{
    Answer, MAGNUM, REPO_TOKEN, Raw, Receiver, SECRET, circleci_request, head, resident_kib,
    workflow_event,
};
use crate::support::{CLOSED, Reply, Server, Vars, binary, json, under_wine};
use crate::{answered_at_once, assert_still_closes};
#[cfg(unix)]
use crate::{signal, stop_line};

/// The usual receiver's variables, for one started another way.
#[cfg_attr(not(unix), allow(dead_code))]
fn usual_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("COVERALLS_REPO_TOKEN", REPO_TOKEN.to_owned()),
        ("COVERALLS_ENDPOINT", endpoint.to_owned()),
        ("CIRCLECI_WEBHOOK_SECRET", SECRET.to_owned()),
        ("MAGNUM_HOOK_SECRET", MAGNUM.to_owned()),
    ]
}

#[cfg_attr(not(unix), allow(dead_code))]
fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect()
}

/// `count` requests from 8 threads at once, each answered within 5 seconds, each with a log
/// line of about 300 bytes (a path that is not a route).
#[cfg_attr(not(unix), allow(dead_code))]
fn many_logged_requests(receiver: &Receiver, count: usize) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .new_agent();
    let path = format!("{}/{}", receiver.url, "not-a-route-".repeat(8));
    thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..count / 8 {
                    let response = agent.get(&path).call();
                    let status = response.map(|r| r.status().as_u16());
                    assert_eq!(status.ok(), Some(404), "unanswered");
                }
            });
        }
    });
}

/// The usual receiver, in front of a Coveralls that closes every build, with a log that
/// nobody reads once it has said where it listens.
#[cfg_attr(not(unix), allow(dead_code))]
fn with_unread_log() -> (Server, Receiver) {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let env = usual_env(&coveralls.url());
    let receiver = Receiver::with_unread_log(&borrowed(&env));
    (coveralls, receiver)
}

#[cfg(unix)]
#[test]
fn a_log_nobody_reads_stops_neither_the_answers_nor_a_stop() {
    let (_coveralls, mut receiver) = with_unread_log();
    many_logged_requests(&receiver, 4000);
    assert_still_closes(&receiver, "wf-unread-log", Duration::from_secs(3));
    let started = Instant::now();
    signal(&receiver, "-TERM");
    assert_eq!(receiver.wait(Duration::from_secs(10)), Some(0));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[cfg(unix)]
#[test]
fn lines_dropped_while_nobody_read_the_log_are_counted() {
    let (_coveralls, mut receiver) = with_unread_log();
    many_logged_requests(&receiver, 8000);
    receiver.resume_log();
    let line = receiver.log_line("log: ");
    assert!(
        line.contains(" lines dropped while standard error was not read"),
        "{line}"
    );
    signal(&receiver, "-TERM");
    assert_eq!(receiver.wait(Duration::from_secs(10)), Some(0));
    let last = receiver.log_line("log: in all, ");
    assert!(last.contains("lines dropped"), "{last}");
}

/// Retries a hundred milliseconds apart, so that a test sees them.
const QUICK_RETRIES: (&str, &str) = ("COVERALLS_FINISH_RETRY_SCHEDULE", "100ms");

#[test]
fn control_bytes_in_coveralls_answers_never_reach_the_log_raw() {
    // In its JSON's error, and raw in a page that is not JSON (which debug lines show).
    let escaped = r#"{"error":"down \u001b[2J\u001b]0;owned\u0007 \u009b31m red\r\nfake: line"}"#;
    let raw = "down \u{1b}[2J\u{1b}]0;owned\u{7} \u{9b}31m red\r\nfake: line\tend";
    let page = Reply::Answer {
        status: 500,
        headers: vec![("Content-Type".into(), "text/plain".into())],
        body: raw.into(),
    };
    let coveralls = Server::start(vec![json(500, escaped), page, json(200, CLOSED)]);
    let debug = ("COVERALLS_DEBUG", "true");
    let receiver = Receiver::in_front_of(&coveralls, &[QUICK_RETRIES, debug]);
    let body = workflow_event("e-hostile", "wf-hostile", "gh/a/b");
    let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body);
    assert_eq!(status, 202, "{answer}");
    receiver.wait_until_nothing_pending(Duration::from_secs(10));
    let log = receiver.log_with("closed (attempt 3)");
    assert!(log.contains("attempt 2 failed"), "{log}");
    let raw: Vec<char> = log
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(raw.is_empty(), "{raw:?} in the log:\n{log}");
    assert!(!log.lines().any(|line| line.starts_with("fake: ")), "{log}");
}

#[test]
fn a_huge_url_from_coveralls_is_neither_kept_nor_echoed() {
    let url = format!("https://coveralls.io/builds/{}", "7".repeat(900_000));
    let closed = format!(r#"{{"done":true,"url":"{url}","jobs":3}}"#);
    let coveralls = Server::start(vec![json(200, &closed)]);
    let receiver = Receiver::in_front_of(&coveralls, &[]);
    let body = workflow_event("e-url", "wf-url", "gh/a/b");
    for (round, duplicate) in [("first", false), ("again", true)] {
        let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body);
        assert_eq!(
            (status, &answer["closed"]),
            (200, &serde_json::json!(true)),
            "{round}"
        );
        assert_eq!(answer["duplicate"] == true, duplicate, "{round}");
        let size = answer.to_string().len();
        assert!(size < 1000, "{round}: an answer of {size} bytes");
    }
    assert_eq!(coveralls.requests().len(), 1);
}

/// A projects file of `count` projects, each with a slug and a token of its own.
fn many_projects(count: usize) -> String {
    let mut toml = String::from("endpoint = \"{endpoint}\"\n");
    for i in 0..count {
        toml += &format!(
            "[[project]]\nname = \"p{i}\"\ncircleci_slug = \"gh/many/p{i}\"\nrepo_token = \
             \"token-{i:05}-of-many-projects\"\n"
        );
    }
    toml
}

/// CPU time process `pid` has used, in clock ticks, where the system says (Linux).
#[cfg_attr(not(unix), allow(dead_code))]
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The CPU ticks 100 deliveries for a project nobody configured cost the receiver.
#[cfg(target_os = "linux")]
fn cpu_of_deliveries(receiver: &Receiver) -> u64 {
    let before = cpu_ticks(receiver.pid()).unwrap();
    for i in 0..100 {
        let body = workflow_event(
            &format!("e-{i}"),
            &format!("wf-{i}"),
            "gh/nobody/configured",
        );
        let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body);
        assert_eq!(status, 202, "{answer}");
    }
    cpu_ticks(receiver.pid()).unwrap() - before
}

#[test]
fn ten_thousand_projects_start_at_once_and_cost_nothing_per_delivery() {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let env = [("CIRCLECI_WEBHOOK_SECRET", SECRET)];
    let started = Instant::now();
    let many = Receiver::with_projects(&coveralls, &many_projects(10_000), &env)
        .secret("token-09999-of-many-projects");
    assert_eq!(many.get("/healthz"), 200);
    let took = started.elapsed();
    println!("10,000 projects: first answer after {took:?}");
    // Linear start-up takes 3 s in a debug build on its own, and up to 11 s beside the other
    // tests on two cores; the quadratic one this guards against took 18 s in a release build.
    let limit = Duration::from_secs(if cfg!(debug_assertions) { 30 } else { 5 });
    assert!(took < limit, "first answer after {took:?}");
    let body = workflow_event("e-last", "wf-last", "gh/many/p9999");
    let (status, answer) = many.circleci(SECRET, "workflow-completed", &body);
    assert_eq!(
        (status, answer["project"].as_str()),
        (200, Some("p9999")),
        "{answer}"
    );
    #[cfg(target_os = "linux")]
    {
        let one = Receiver::with_projects(&coveralls, &many_projects(1), &env);
        let (cost_one, cost_many) = (cpu_of_deliveries(&one), cpu_of_deliveries(&many));
        println!("100 deliveries: {cost_one} ticks with one project, {cost_many} with 10,000");
        assert!(
            cost_many <= 2 * cost_one + 20,
            "{cost_one} ticks, then {cost_many}"
        );
    }
}

/// `serve` with these variables (and this projects file), which should refuse to start: its
/// exit code (`None` if it was still running after 5 seconds) and what it said.
fn refused_start(toml: Option<&str>, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = binary();
    command.args(["serve", "--listen", "127.0.0.1:0"]);
    if let Some(toml) = toml {
        let path = dir.path().join("projects.toml");
        std::fs::write(&path, toml).unwrap();
        command.arg("--config").arg(&path);
    }
    command.env("COVERALLS_FINISH_STATE", dir.path().join("state.sqlite3"));
    let mut child = command
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut code = None;
    while started.elapsed() < Duration::from_secs(5) {
        if let Some(status) = child.try_wait().unwrap() {
            code = Some(status.code().unwrap_or(-1));
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    (code, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_projects_file_nested_to_crash_a_parser_is_refused_naming_it() {
    let env = [("CIRCLECI_WEBHOOK_SECRET", SECRET)];
    let arrays = format!("x = {}{}\n", "[".repeat(50_000), "]".repeat(50_000));
    let tables = format!("x = {}1{}\n", "{a = ".repeat(50_000), "}".repeat(50_000));
    for deep in [arrays, tables] {
        let (code, said) = refused_start(Some(&deep), &env);
        assert_eq!(code, Some(2), "{said}");
        assert!(said.contains("projects.toml: "), "{said}");
        assert!(said.contains("nested more than"), "{said}");
    }
}

#[test]
fn secrets_shorter_than_8_characters_or_blank_are_refused_at_start() {
    let project = "[[project]]\nname = \"api\"\ncircleci_slug = \"gh/a/b\"\n";
    let blank = format!("{project}repo_token = \" \"\n");
    let short = format!("{project}repo_token_env = \"API_TOKEN\"\n");
    let circleci = ("CIRCLECI_WEBHOOK_SECRET", SECRET);
    let cases: [(Option<&str>, Vars, &str); 4] = [
        (
            None,
            &[("COVERALLS_REPO_TOKEN", " "), circleci],
            "COVERALLS_REPO_TOKEN is blank",
        ),
        (
            None,
            &[
                ("COVERALLS_REPO_TOKEN", REPO_TOKEN),
                ("CIRCLECI_WEBHOOK_SECRET", "short"),
            ],
            "CIRCLECI_WEBHOOK_SECRET has 5 bytes; expected at least 8",
        ),
        (
            Some(&blank),
            &[circleci],
            "project \"api\": repo_token: is blank",
        ),
        (
            Some(&short),
            &[circleci, ("API_TOKEN", "1234567")],
            "project \"api\": repo_token_env: API_TOKEN has 7 bytes; expected at least 8",
        ),
    ];
    for (toml, env, expected) in cases {
        let (code, said) = refused_start(toml, env);
        assert_eq!(code, Some(2), "{expected}: {said}");
        assert!(said.contains(expected), "{expected}: {said}");
        assert!(
            !said.contains("short") && !said.contains("1234567"),
            "{said}"
        );
    }
}

/// About a megabyte of `GET` requests for one path, one after the other: what a client that
/// pipelines and never reads sends; and how long one of them is.
#[derive(Clone)]
pub struct Pipeline {
    requests: Arc<[u8]>,
    one: usize,
}

impl Pipeline {
    pub fn of(path: &str) -> Pipeline {
        let one = head("GET", path, &[]);
        let requests = one.repeat((1 << 20) / one.len()).into();
        Pipeline {
            requests,
            one: one.len(),
        }
    }
}

/// What one write on a [`NeverReading`] connection did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Push {
    Sent,
    /// Nothing went out within the write timeout: the receiver reads no more of it.
    Stalled,
    /// The write failed: the receiver cut the connection.
    Cut,
}

/// A connection that pipelines requests and never reads an answer; how many bytes it sent
/// so far. Its receive buffer of a few KiB and its segments of 536 bytes keep what the
/// receiver's kernel holds of the answers small, so that the receiver's writes stall after a
/// few hundred answers rather than many thousands.
pub struct NeverReading {
    stream: TcpStream,
    pipeline: Pipeline,
    sent: usize,
}

impl NeverReading {
    pub fn connect(addr: SocketAddr, pipeline: Pipeline) -> NeverReading {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        // Windows has no such option: its receiver's writes stall later.
        #[cfg(unix)]
        socket.set_tcp_mss(536).unwrap();
        socket
            .connect_timeout(&addr.into(), Duration::from_secs(5))
            .unwrap();
        let stream = TcpStream::from(socket);
        let stalled = Some(Duration::from_millis(300));
        stream.set_write_timeout(stalled).unwrap();
        NeverReading {
            stream,
            pipeline,
            sent: 0,
        }
    }

    /// One write: what is left of the megabyte of requests, or once it is all sent, one
    /// request more (which tells whether the connection is still there).
    fn push(&mut self) -> Push {
        let Pipeline { requests, one } = &self.pipeline;
        let next = requests.get(self.sent..).filter(|left| !left.is_empty());
        match self.stream.write(next.unwrap_or(&requests[..*one])) {
            Ok(0) => Push::Cut,
            Ok(sent) => {
                self.sent += sent;
                Push::Sent
            }
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Push::Stalled
            }
            Err(_) => Push::Cut,
        }
    }

    /// Send the megabyte of requests, as far as the receiver takes them: until they are all
    /// sent, or a write stalls or fails.
    pub fn send_all(&mut self) -> Push {
        loop {
            match self.push() {
                Push::Sent if self.sent < self.pipeline.requests.len() => continue,
                other => return other,
            }
        }
    }

    /// Send the requests, then one more every 200 ms, for at most `limit`: how long after
    /// `started` the receiver cut the connection, if it did; and when a write first stalled.
    fn push_until_cut(
        &mut self,
        started: Instant,
        limit: Duration,
    ) -> (Option<Duration>, Option<Duration>) {
        let mut stalled = None;
        while started.elapsed() < limit {
            match self.send_all() {
                Push::Cut => return (Some(started.elapsed()), stalled),
                Push::Stalled => {
                    stalled.get_or_insert(started.elapsed());
                }
                Push::Sent => thread::sleep(Duration::from_millis(200)),
            }
        }
        (None, stalled)
    }
}

#[test]
fn a_connection_that_pipelines_and_never_reads_is_cut_off() {
    // The stall needs a small receive window (TCP_MAXSEG, a 4 KiB buffer), which Wine's
    // sockets do not take: there a megabyte of answers fits in the buffers and nothing stalls.
    // The write timeout is the same code on every platform.
    if under_wine() {
        return;
    }
    let (_coveralls, receiver) = crate::closing();
    let limit = Duration::from_secs(25);
    let started = Instant::now();
    let mut never = NeverReading::connect(receiver.addr(), Pipeline::of("/healthz"));
    let (cut, stalled) = never.push_until_cut(started, limit);
    let cut = cut.unwrap_or_else(|| {
        panic!(
            "still open {limit:?} after it began to send ({} bytes sent; a write first stalled \
             at {stalled:?})",
            never.sent
        )
    });
    println!(
        "cut after {cut:?}, {} bytes sent; a write first stalled at {stalled:?}",
        never.sent
    );
    assert_eq!(receiver.get("/healthz"), 200);
}

/// Request `i` of twenty: every fifth a signed delivery (of workflow `wf-half-{i}`), the
/// rest a path that is not a route; what its log line holds, and its answer's status.
fn half_closed_request(i: usize) -> (Vec<u8>, String, u16) {
    if i % 5 == 0 {
        let body = workflow_event(&format!("e-half-{i}"), &format!("wf-half-{i}"), "gh/a/b");
        (circleci_request(&body), format!(" id=e-half-{i} "), 200)
    } else {
        let path = format!("/half-closed-{i}");
        (head("GET", &path, &[]), format!("GET {path} "), 404)
    }
}

/// `request` on a connection of its own, then its write side shut (a FIN: a client that has
/// nothing more to send); the answer, if one came within 10 seconds.
fn half_closed(addr: SocketAddr, request: &[u8]) -> Option<Answer> {
    let mut raw = Raw::connect(addr);
    raw.send(request).ok()?;
    raw.stream().shutdown(Shutdown::Write).ok()?;
    let limit = Some(Duration::from_secs(10));
    raw.stream().set_read_timeout(limit).unwrap();
    raw.answer()
}

#[test]
fn requests_followed_by_a_half_close_are_answered_and_logged() {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let wait = ("COVERALLS_FINISH_ANSWER_WAIT", "8s");
    let receiver = Receiver::in_front_of(&coveralls, &[wait]);
    let requests: Vec<_> = (0..20).map(half_closed_request).collect();
    let answers: Vec<Option<Answer>> = thread::scope(|scope| {
        let sent: Vec<_> = requests
            .iter()
            .map(|(request, _, _)| scope.spawn(|| half_closed(receiver.addr(), request)))
            .collect();
        sent.into_iter().map(|s| s.join().unwrap()).collect()
    });
    let unanswered: Vec<&str> = requests
        .iter()
        .zip(&answers)
        .filter(|(_, answer)| answer.is_none())
        .map(|((_, logged, _), _)| logged.trim())
        .collect();
    assert!(
        unanswered.is_empty(),
        "{} of 20 unanswered after a half-close: {unanswered:?}\n{}",
        unanswered.len(),
        receiver.log()
    );
    for ((_, logged, status), answer) in requests.iter().zip(&answers) {
        let answer = answer.as_ref().unwrap();
        assert_eq!(answer.status, *status, "{logged}: {answer:?}");
        let log = receiver.log_with(logged);
        let line = log.lines().find(|line| line.contains(logged.as_str()));
        assert!(
            line.unwrap().contains(&format!(" status={status} ")),
            "{log}"
        );
    }
    let closed: Vec<String> = coveralls
        .requests()
        .iter()
        .map(|r| r.json()["payload"]["build_num"].to_string())
        .collect();
    for i in (0..20).step_by(5) {
        let build = format!("\"wf-half-{i}\"");
        assert!(closed.contains(&build), "{build} not in {closed:?}");
    }
}

/// A signed delivery of workflow `wf-{id}`, sent raw, whose sender goes away once Coveralls
/// has its close (the `closes`-th request there), before any answer: with a reset where
/// `reset`, else with a FIN.
#[cfg_attr(not(unix), allow(dead_code))]
fn dropped_while_closing(
    receiver: &Receiver,
    coveralls: &Server,
    id: &str,
    reset: bool,
    closes: usize,
) {
    let mut raw = Raw::connect(receiver.addr());
    let body = workflow_event(id, &format!("wf-{id}"), "gh/a/b");
    raw.send(&circleci_request(&body)).unwrap();
    let reached = coveralls.wait_for(closes, Duration::from_secs(5));
    assert!(reached, "{id}: the close never reached Coveralls");
    if reset {
        raw.reset();
    } else {
        drop(raw);
    }
}

/// The log line of delivery `id`, once the log has it.
#[cfg_attr(not(unix), allow(dead_code))]
fn delivery_line(receiver: &Receiver, id: &str) -> String {
    let log = receiver.log_with(&format!(" id={id} "));
    let line = log
        .lines()
        .find(|line| line.contains(&format!(" id={id} ")));
    line.expect("a line that says it").to_owned()
}

/// Coveralls' answer to a close, two seconds after it came: time for its sender to go.
#[cfg_attr(not(unix), allow(dead_code))]
fn closing_in_two_seconds() -> Server {
    let closed = Box::new(json(200, CLOSED));
    Server::start(vec![Reply::Slow(Duration::from_secs(2), closed)])
}

#[cfg(unix)]
#[test]
fn a_delivery_whose_sender_goes_away_mid_close_is_closed_logged_and_waited_for_at_a_stop() {
    let coveralls = closing_in_two_seconds();
    let wait = ("COVERALLS_FINISH_ANSWER_WAIT", "8s");
    let mut receiver = Receiver::in_front_of(&coveralls, &[wait]);
    for (closes, (id, reset)) in [("gone-reset", true), ("gone-fin", false)]
        .into_iter()
        .enumerate()
    {
        dropped_while_closing(&receiver, &coveralls, id, reset, closes + 1);
        let line = delivery_line(&receiver, id);
        let build = format!(" build=wf-{id} ");
        let closed = line.contains(&build) && line.contains(" outcome=\"closed: 3 jobs\"");
        assert!(closed, "{line}");
    }
    dropped_while_closing(&receiver, &coveralls, "gone-at-stop", true, 3);
    signal(&receiver, "-TERM");
    let code = receiver.wait(Duration::from_secs(12));
    let log = receiver.log();
    let delivery = log.find(" id=gone-at-stop ");
    let delivery = delivery.unwrap_or_else(|| panic!("the delivery is never logged:\n{log}"));
    let stopped = stop_line(&receiver);
    assert!(
        delivery < log.find(&stopped).unwrap(),
        "the stop line before the delivery's:\n{log}"
    );
    // Honest: a close that ended is not pending, and a stop that answered all exits 0.
    let line = delivery_line(&receiver, "gone-at-stop");
    let pending = stopped.contains(" closes pending in ");
    assert_eq!(
        pending,
        !line.contains("outcome=\"closed"),
        "{line}\n{stopped}"
    );
    let all = stopped.contains("every delivery in flight was answered");
    assert_eq!(code, Some(if all { 0 } else { 1 }), "{stopped}");
}

#[cfg(unix)]
#[test]
fn sighup_answers_the_deliveries_in_flight_and_exits_0_as_sigterm_does() {
    let slow = Box::new(json(200, CLOSED));
    let coveralls = Server::start(vec![Reply::Slow(Duration::from_secs(1), slow)]);
    let wait = ("COVERALLS_FINISH_ANSWER_WAIT", "8s");
    let mut receiver = Receiver::in_front_of(&coveralls, &[wait]);
    let answers: Vec<Option<u16>> = thread::scope(|scope| {
        let deliveries: Vec<_> = (0..5)
            .map(|i| {
                let receiver = &receiver;
                scope.spawn(move || {
                    let body =
                        workflow_event(&format!("e-hup-{i}"), &format!("wf-hup-{i}"), "gh/a/b");
                    let answer = receiver.try_circleci(SECRET, "workflow-completed", &body);
                    answer.ok().map(|(status, _)| status)
                })
            })
            .collect();
        let reached = coveralls.wait_for(5, Duration::from_secs(5));
        assert!(reached, "the closes never reached Coveralls");
        signal(&receiver, "-HUP");
        deliveries.into_iter().map(|d| d.join().unwrap()).collect()
    });
    let ended = receiver.exit_status(Duration::from_secs(12));
    let answered = answers.iter().filter(|a| matches!(a, Some(200 | 202)));
    assert_eq!(
        answered.count(),
        5,
        "{answers:?}; the receiver ended: {ended:?}"
    );
    assert_eq!(ended.and_then(|status| status.code()), Some(0), "{ended:?}");
    for i in 0..5 {
        delivery_line(&receiver, &format!("e-hup-{i}"));
    }
    stop_line(&receiver);
}

/// Projects for CircleCI and Magnum CI (`gh/a/b`), and for GitHub.
const EVERY_SOURCE: &str = r#"
endpoint = "{endpoint}"
[[project]]
name = "ci"
circleci_slug = "gh/a/b"
magnum_project_id = 43
repo_token = "ci-repo-token-in-file"
[[project]]
name = "octo"
github_repository = "octo-org/octo-repo"
workflows = ["test"]
repo_token = "octo-repo-token-in-file"
"#;

/// A receiver with every source on (GitLab's aside), in front of `coveralls`.
fn every_source(coveralls: &Server) -> Receiver {
    let env = [
        ("CIRCLECI_WEBHOOK_SECRET", SECRET),
        ("MAGNUM_HOOK_SECRET", MAGNUM),
        ("GITHUB_WEBHOOK_SECRET", "github-webhook-secret-3d9e"),
    ];
    let receiver = Receiver::with_projects(coveralls, EVERY_SOURCE, &env);
    receiver
        .secret("ci-repo-token-in-file")
        .secret("octo-repo-token-in-file")
}

#[test]
fn deliveries_that_fail_authentication_without_their_body_are_refused_before_it() {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let receiver = every_source(&coveralls);
    // Declared whole, never sent: the head alone is enough to refuse each.
    let length = (1 << 20) - 1;
    let cases: [(&str, &[(&str, &str)]); 3] = [
        ("/magnum?secret=wrong", &[]),
        (
            "/circleci",
            &[("circleci-event-type", "workflow-completed")],
        ),
        ("/github", &[("x-github-event", "workflow_run")]),
    ];
    for (path, headers) in cases {
        let (answer, closed) = answered_at_once(&receiver, path, length, headers);
        assert!((400..500).contains(&answer.status), "{path}: {answer:?}");
        let head = answer.head.to_ascii_lowercase();
        assert!(head.contains("connection: close"), "{path}: {answer:?}");
        assert!(closed, "{path}: the connection stays open");
    }
    assert_still_closes(
        &receiver,
        "wf-after-unauthenticated",
        Duration::from_secs(3),
    );
}

/// A mebibyte less one byte of body, declared whole and signed wrongly (a signature the
/// receiver cannot check before it has the body): the request, head and body.
fn wrongly_signed_request() -> &'static [u8] {
    static REQUEST: OnceLock<Vec<u8>> = OnceLock::new();
    REQUEST.get_or_init(|| {
        let length = (1 << 20) - 1;
        let signature = format!("v1={}", "0".repeat(64));
        let headers = [
            ("Content-Length", length.to_string()),
            ("circleci-signature", signature),
            ("circleci-event-type", "workflow-completed".to_owned()),
        ];
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let mut request = head("POST", "/circleci", &headers);
        request.resize(request.len() + length, b'x');
        request
    })
}

/// Send each of `connections` its request up to the last byte, for as long as the receiver
/// takes them (until `deadline`, or two seconds without progress); how far each got.
fn all_but_the_last_byte(connections: &[Raw], deadline: Instant) -> Vec<usize> {
    let request = wrongly_signed_request();
    let mut sent = vec![0; connections.len()];
    let mut cut = vec![false; connections.len()];
    let mut progress = Instant::now();
    while Instant::now() < deadline && progress.elapsed() < Duration::from_secs(2) {
        let mut busy = false;
        for (i, raw) in connections.iter().enumerate() {
            if cut[i] || sent[i] == request.len() - 1 {
                continue;
            }
            busy = true;
            match (&mut raw.stream()).write(&request[sent[i]..request.len() - 1]) {
                Ok(n) if n > 0 => (sent[i], progress) = (sent[i] + n, Instant::now()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                _ => cut[i] = true,
            }
        }
        if !busy {
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    sent
}

/// `count` wrongly signed requests at once: each sent up to its last byte, then (once the
/// `threads` senders are all that far, or by `deadline`) the last byte; each one's answer, if
/// it came by `deadline`.
fn unauthenticated_bodies(
    addr: SocketAddr,
    count: usize,
    (threads, ready): (usize, &AtomicUsize),
    deadline: Instant,
) -> Vec<Option<u16>> {
    let request = wrongly_signed_request();
    let connections: Vec<Raw> = (0..count).map(|_| Raw::connect(addr)).collect();
    for raw in &connections {
        raw.stream().set_nonblocking(true).unwrap();
    }
    let sent = all_but_the_last_byte(&connections, deadline);
    ready.fetch_add(1, Ordering::SeqCst);
    while ready.load(Ordering::SeqCst) < threads && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    // Every body as far as it goes, held at once: the peak the memory is measured at.
    thread::sleep(Duration::from_millis(500));
    let mut answers = Vec::new();
    for (mut raw, sent) in connections.into_iter().zip(sent) {
        let left = deadline.saturating_duration_since(Instant::now());
        raw.stream().set_nonblocking(false).unwrap();
        raw.stream()
            .set_read_timeout(Some(left.max(Duration::from_millis(10))))
            .unwrap();
        if sent == request.len() - 1 {
            let _ = raw.send(&request[sent..]);
        }
        answers.push(raw.answer().map(|answer| answer.status));
    }
    answers
}

#[test]
fn bodies_that_cannot_be_authenticated_hold_a_bounded_amount_of_memory() {
    const THREADS: usize = 8;
    // Wine's processes have no resident memory to read: the answers alone, to fewer there.
    let connections = if under_wine() { 80 } else { 600 };
    let (_coveralls, receiver) = crate::closing();
    let (addr, pid) = (receiver.addr(), receiver.pid());
    let before = resident_kib(pid);
    let (done, peak) = (AtomicBool::new(false), AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(25);
    let ready = AtomicUsize::new(0);
    let answers: Vec<Option<u16>> = thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(resident_kib(pid).unwrap_or(0), Ordering::SeqCst);
                thread::sleep(Duration::from_millis(20));
            }
        });
        let senders: Vec<_> = (0..THREADS)
            .map(|_| {
                let ready = (THREADS, &ready);
                scope.spawn(move || {
                    unauthenticated_bodies(addr, connections / THREADS, ready, deadline)
                })
            })
            .collect();
        let answers = senders.into_iter().flat_map(|s| s.join().unwrap());
        let answers = answers.collect();
        done.store(true, Ordering::SeqCst);
        answers
    });
    let peak = peak.load(Ordering::SeqCst);
    println!("resident memory: {before:?} KiB before, at most {peak} KiB");
    if let Some(before) = before {
        assert!(
            peak < before + 150 * 1024,
            "memory grew from {before} KiB to {peak} KiB"
        );
    }
    let mut statuses = std::collections::BTreeMap::<Option<u16>, usize>::new();
    for answer in answers {
        *statuses.entry(answer).or_default() += 1;
    }
    let refused = |status: &u16| (400..500).contains(status) || *status == 503;
    let others = statuses.keys().filter(|s| !s.as_ref().is_some_and(refused));
    assert_eq!(others.count(), 0, "answers (none: no answer): {statuses:?}");
    assert_eq!(receiver.get("/healthz"), 200);
}

#[test]
fn a_chunk_announced_over_a_mebibyte_is_refused_at_once() {
    let (_coveralls, receiver) = crate::closing();
    let signature = format!("v1={}", "0".repeat(64));
    let magnum = format!("/magnum?secret={MAGNUM}");
    let cases = [
        ("/circleci", ("circleci-signature", signature.as_str())),
        (magnum.as_str(), ("content-type", "application/json")),
    ];
    for (path, header) in cases {
        let mut raw = Raw::connect(receiver.addr());
        let mut request = head("POST", path, &[("Transfer-Encoding", "chunked"), header]);
        // 0x200000 bytes: two mebibytes announced; a few sent.
        request.extend_from_slice(b"200000\r\n{\"id\":");
        raw.send(&request).unwrap();
        let started = Instant::now();
        let answer = raw.answer().expect("an answer");
        let took = started.elapsed();
        assert_eq!(answer.status, 413, "{path}: after {took:?}: {answer:?}");
        assert!(took < Duration::from_secs(1), "{path}: after {took:?}");
        assert!(
            raw.closed_within(Duration::from_secs(2)).is_some(),
            "{path}"
        );
    }
    assert_still_closes(&receiver, "wf-after-chunk", Duration::from_secs(3));
}
