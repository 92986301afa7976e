//! Crashes: the receiver killed (`kill -9`) at random moments under load, or aborted at the
//! two worst places, then started again on the same state file. Every delivery it
//! acknowledged is closed in the end, and a close is sent twice only where one was in flight
//! at the crash (sent, its outcome not recorded yet): at least once, never lost.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::receiver::{Receiver, SECRET, workflow_event};
use crate::signal;
use crate::support::{CLOSED, Recorded, Reply, Server, binary, json};

/// Receivers killed, one after the other, on the one state file.
const ROUNDS: usize = 10;
const SENDERS: usize = 6;
/// Deliveries a round sends at most, should its kill come late.
const MOST_A_ROUND: usize = 100;
/// One delivery in this many is of a workflow delivered before.
const DUPLICATE_EVERY: u64 = 5;
/// When a kill comes, after the receiver said it listens: at random, in this range.
const KILL_AFTER_MS: (u64, u64) = (20, 400);
/// How long Coveralls takes to answer while the kills come: closes are in flight at each.
const COVERALLS_DELAY: Duration = Duration::from_millis(100);
/// Environment variable that replays a run: the seed it printed.
const SEED_VAR: &str = "COVERALLS_FINISH_CRASH_SEED";
const SLUG: &str = "gh/crash/test";

#[test]
fn kill_9_at_random_moments_under_load_loses_no_acknowledged_delivery() {
    let started = Instant::now();
    let seed = seed();
    println!("seed {seed} (replay with {SEED_VAR}={seed})");
    let mut random = XorShift(seed);
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("state.sqlite3");
    let slow = Server::start(vec![Reply::Slow(
        COVERALLS_DELAY,
        Box::new(json(200, CLOSED)),
    )]);
    let mut rounds: Vec<Round> = Vec::new();
    for number in 0..ROUNDS {
        let plan = Plan::new(number, &mut random, &rounds);
        rounds.push(crash(&slow, &state_file, &plan));
    }
    let fast = Server::start(vec![json(200, CLOSED)]);
    let left = pending(&state_file).len();
    let last_start = Instant::now();
    let receiver = Receiver::in_front_of(&fast, &[state_var(&state_file)]);
    receiver.wait_until_nothing_pending(Duration::from_secs(40));
    println!(
        "last start: {left} pending closed in {:?}",
        last_start.elapsed()
    );
    let health = receiver.health();
    assert_eq!(
        (health["pending"].as_u64(), health["failed"].as_u64()),
        (Some(0), Some(0))
    );
    let listed = deliveries(&state_file, &[]);
    assert_eq!(listed.trim(), "no deliveries pending or failed");
    let mut sent: Vec<Vec<String>> = rounds.iter().map(|r| r.sent.clone()).collect();
    sent.push(builds(&fast.requests()));
    check(&rounds, &sent);
    println!("{ROUNDS} kills and a last start in {:?}", started.elapsed());
}

/// What a round does: how long its receiver's answers wait for a close's first attempt,
/// when it is killed, and the workflows it is sent, some of them again.
struct Plan {
    number: usize,
    answer_wait: &'static str,
    kill_after: Duration,
    workflows: Vec<String>,
}

impl Plan {
    fn new(number: usize, random: &mut XorShift, before: &[Round]) -> Plan {
        let acknowledged = before.iter().flat_map(|r| r.acknowledged.iter().cloned());
        let mut delivered: Vec<String> = acknowledged.collect();
        let mut workflows = Vec::with_capacity(MOST_A_ROUND);
        for i in 0..MOST_A_ROUND {
            let again = !delivered.is_empty() && random.below(DUPLICATE_EVERY) == 0;
            let workflow = match again {
                true => delivered[random.below(delivered.len() as u64) as usize].clone(),
                false => format!("wf-{number}-{i}"),
            };
            delivered.push(workflow.clone());
            workflows.push(workflow);
        }
        let (least, most) = KILL_AFTER_MS;
        Plan {
            number,
            // Every other round answers at once: more deliveries, more closes waiting.
            answer_wait: ["1s", "0s"][number % 2],
            kill_after: Duration::from_millis(least + random.below(most - least + 1)),
            workflows,
        }
    }
}

/// What a round came to, as seen from outside the receiver.
struct Round {
    /// Workflows whose delivery was answered 2xx.
    acknowledged: BTreeSet<String>,
    /// The builds Coveralls was asked to close while this round's receiver ran.
    sent: Vec<String>,
    /// Those still pending after the kill: sent, their outcome not recorded.
    in_flight: BTreeSet<String>,
}

/// One round: a receiver on the state file, deliveries from [`SENDERS`] threads, `kill -9`.
fn crash(coveralls: &Server, state_file: &Path, plan: &Plan) -> Round {
    let already = coveralls.requests().len();
    let env = [
        state_var(state_file),
        ("COVERALLS_FINISH_ANSWER_WAIT", plan.answer_wait),
    ];
    let mut receiver = Receiver::in_front_of(coveralls, &env);
    let at_once = attempts_at_once(&receiver);
    let answers = send_until_killed(&receiver, plan);
    let status = receiver.exit_status(Duration::from_secs(5));
    let status = status.expect("the receiver ended after kill -9");
    assert_eq!(
        status.signal(),
        Some(9),
        "killed, not ended of itself: {status}\n{}",
        receiver.log()
    );
    drop(receiver);
    let sent = builds(&requests_once_quiet(coveralls)[already..]);
    let pending = pending(state_file);
    let in_flight: BTreeSet<String> = sent
        .iter()
        .filter(|b| pending.contains(*b))
        .cloned()
        .collect();
    assert!(
        in_flight.len() <= at_once,
        "round {}: {} closes sent and not recorded, more than the {at_once} run at once",
        plan.number,
        in_flight.len()
    );
    let acknowledged = acknowledged(&answers);
    println!(
        "round {}: answer wait {}, killed after {:?}: {} deliveries answered, {} workflows \
         acknowledged; {} closes sent, {} of them in flight at the kill; {} pending",
        plan.number,
        plan.answer_wait,
        plan.kill_after,
        answers.len(),
        acknowledged.len(),
        sent.len(),
        in_flight.len(),
        pending.len()
    );
    Round {
        acknowledged,
        sent,
        in_flight,
    }
}

/// The workflows answered 2xx; every answer is one of the receiver's, with what it says.
fn acknowledged(answers: &[(String, u16, serde_json::Value)]) -> BTreeSet<String> {
    let mut acknowledged = BTreeSet::new();
    for (workflow, status, answer) in answers {
        match status {
            200 => assert_eq!(answer["closed"], true, "{workflow}: {answer}"),
            202 => assert_eq!(answer["queued"], true, "{workflow}: {answer}"),
            // Not recorded: never acknowledged, the sender is to deliver again.
            503 => continue,
            _ => panic!("{workflow}: {status} {answer}"),
        }
        acknowledged.insert(workflow.clone());
    }
    acknowledged
}

/// The plan's deliveries from [`SENDERS`] threads until the kill: each answer there was.
fn send_until_killed(receiver: &Receiver, plan: &Plan) -> Vec<(String, u16, serde_json::Value)> {
    let next = AtomicUsize::new(0);
    let killed = AtomicBool::new(false);
    thread::scope(|scope| {
        let senders: Vec<_> = (0..SENDERS)
            .map(|_| scope.spawn(|| send(receiver, &plan.workflows, &next, &killed)))
            .collect();
        thread::sleep(plan.kill_after);
        killed.store(true, Ordering::SeqCst);
        signal(receiver, "-KILL");
        senders
            .into_iter()
            .flat_map(|sender| sender.join().unwrap())
            .collect()
    })
}

/// Deliver the next workflow while there is one and the receiver answers.
fn send(
    receiver: &Receiver,
    workflows: &[String],
    next: &AtomicUsize,
    killed: &AtomicBool,
) -> Vec<(String, u16, serde_json::Value)> {
    let mut answers = Vec::new();
    while let Some(workflow) = workflows.get(next.fetch_add(1, Ordering::SeqCst)) {
        match receiver.try_circleci(SECRET, "workflow-completed", &body(workflow)) {
            Ok((status, answer)) => answers.push((workflow.clone(), status, answer)),
            Err(error) => {
                let log = receiver.log();
                assert!(
                    killed.load(Ordering::SeqCst),
                    "no answer before the kill: {error}\n{log}"
                );
                break;
            }
        }
    }
    answers
}

/// The invariant, over every round and the last start (`sent`'s last entry): every
/// acknowledged workflow closed; each close but a workflow's last sent by a receiver killed
/// while it was in flight; so no more workflows closed twice than closes in flight at kills.
fn check(rounds: &[Round], sent: &[Vec<String>]) {
    let mut closes: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (round, builds) in sent.iter().enumerate() {
        for build in builds {
            closes.entry(build.as_str()).or_default().push(round);
        }
    }
    for round in rounds {
        for workflow in &round.acknowledged {
            assert!(
                closes.contains_key(workflow.as_str()),
                "{workflow}: acknowledged, never closed"
            );
        }
    }
    for (workflow, in_rounds) in &closes {
        assert!(
            in_rounds.windows(2).all(|pair| pair[0] < pair[1]),
            "{workflow} closed twice by one receiver, in rounds {in_rounds:?}"
        );
        let (_, before) = in_rounds.split_last().unwrap();
        for &round in before {
            assert!(
                rounds[round].in_flight.contains(*workflow),
                "{workflow} closed in rounds {in_rounds:?}: round {round}'s close was not in \
                 flight at its kill"
            );
        }
    }
    let twice = closes.values().filter(|rounds| rounds.len() > 1).count();
    let in_flight: usize = rounds.iter().map(|r| r.in_flight.len()).sum();
    let acknowledged: BTreeSet<&String> = rounds.iter().flat_map(|r| &r.acknowledged).collect();
    println!(
        "{} workflows acknowledged, {} closed, {twice} of them more than once; {in_flight} \
         closes in flight at the kills",
        acknowledged.len(),
        closes.len()
    );
    assert!(
        twice <= in_flight,
        "{twice} closed twice, {in_flight} in flight"
    );
}

/// Coveralls' requests once no more arrive: the killed receiver's last ones may still be
/// on their way through loopback.
fn requests_once_quiet(coveralls: &Server) -> Vec<Recorded> {
    let started = Instant::now();
    let mut requests = coveralls.requests();
    loop {
        thread::sleep(Duration::from_millis(50));
        let now = coveralls.requests();
        if now.len() == requests.len() || started.elapsed() > Duration::from_secs(2) {
            return now;
        }
        requests = now;
    }
}

/// The builds the store says are pending, read by `deliveries` as an operator would; it
/// reads a file a kill left behind, and nothing there has failed.
fn pending(state_file: &Path) -> BTreeSet<String> {
    let listed = deliveries(state_file, &["--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&listed).expect(&listed);
    rows.iter()
        .map(|row| {
            assert_eq!(row["state"], "pending", "{row}");
            row["build"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// What `coveralls-finish deliveries --state FILE ARGS` prints; it must succeed: the file is
/// still the receiver's, and intact.
fn deliveries(state_file: &Path, args: &[&str]) -> String {
    let output = binary()
        .args(["deliveries", "--state", state_file.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "deliveries: {}: {stderr}",
        output.status
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A signed CircleCI delivery's body for `workflow` (the same event id each time).
fn body(workflow: &str) -> Vec<u8> {
    workflow_event(&format!("event-{workflow}"), workflow, SLUG)
}

fn state_var(state_file: &Path) -> (&'static str, &str) {
    ("COVERALLS_FINISH_STATE", state_file.to_str().unwrap())
}

/// The closes a receiver runs at once, as its start-up line says.
fn attempts_at_once(receiver: &Receiver) -> usize {
    let line = receiver.log_line("at most ");
    let count = line
        .strip_suffix(" closes at once")
        .and_then(|l| l.rsplit(' ').next());
    count
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

/// The build each recorded request closes.
fn builds(requests: &[Recorded]) -> Vec<String> {
    let build = |r: &Recorded| {
        r.json()["payload"]["build_num"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    requests.iter().map(build).collect()
}

/// The seed to replay, or one from the clock.
fn seed() -> u64 {
    match std::env::var(SEED_VAR) {
        Ok(seed) => seed
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_VAR}: not a number: {seed}")),
        Err(_) => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            now.as_nanos() as u64
        }
    }
    .max(1)
}

/// Marsaglia's xorshift64: random enough to pick moments and duplicates, and replayable.
struct XorShift(u64);

impl XorShift {
    /// A number below `n`.
    fn below(&mut self, n: u64) -> u64 {
        let XorShift(x) = self;
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x % n
    }
}

/// Abort at `failpoint` on the receiver's first pass there, on this state file.
fn aborting_at(
    coveralls: &Server,
    state_file: &Path,
    failpoint: &str,
    extra: &[(&str, &str)],
) -> Receiver {
    let armed = format!("{failpoint}=abort");
    let mut env = vec![
        state_var(state_file),
        ("COVERALLS_FINISH_FAILPOINTS", armed.as_str()),
    ];
    env.extend_from_slice(extra);
    Receiver::in_front_of(coveralls, &env)
}

/// A receiver started again on the state file once every close pending there is made.
fn restarted(coveralls: &Server, state_file: &Path) -> Receiver {
    let receiver = Receiver::in_front_of(coveralls, &[state_var(state_file)]);
    receiver.wait_until_nothing_pending(Duration::from_secs(10));
    receiver
}

/// The receiver died of its own abort at `failpoint`.
fn assert_aborted(receiver: &mut Receiver, failpoint: &str) {
    let status = receiver.exit_status(Duration::from_secs(5));
    let status = status.expect("the receiver ended");
    receiver.log_with(&format!("failpoint {failpoint}: aborting on purpose"));
    assert_eq!(status.signal(), Some(6), "SIGABRT: {status}");
}

/// A redelivery, once the close is done: a duplicate, closed, and nothing sent.
fn assert_closed(receiver: &Receiver, coveralls: &Server, body: &[u8]) {
    let before = coveralls.requests().len();
    let (status, answer) = receiver.circleci(SECRET, "workflow-completed", body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["duplicate"], &answer["closed"]),
        (&true.into(), &true.into()),
        "{answer}"
    );
    assert_eq!(
        coveralls.requests().len(),
        before,
        "a duplicate closes nothing"
    );
}

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "failpoints are compiled into debug builds only"
)]
fn a_delivery_committed_then_unanswered_at_a_crash_is_closed_after_the_restart() {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("state.sqlite3");
    let mut receiver = aborting_at(&coveralls, &state_file, "after-commit", &[]);
    let body = body("wf-unanswered");
    let answer = receiver.try_circleci(SECRET, "workflow-completed", &body);
    assert!(answer.is_err(), "a crash answers nothing: {answer:?}");
    assert_aborted(&mut receiver, "after-commit");
    assert!(
        coveralls.requests().is_empty(),
        "nothing sent before the crash"
    );
    assert_eq!(Vec::from_iter(pending(&state_file)), ["wf-unanswered"]);
    drop(receiver);

    let receiver = restarted(&coveralls, &state_file);
    assert_eq!(builds(&coveralls.requests()), ["wf-unanswered"]);
    // Its sender saw no answer and delivers again: told it is closed, and not closed twice.
    assert_closed(&receiver, &coveralls, &body);
}

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "failpoints are compiled into debug builds only"
)]
fn a_close_sent_but_not_recorded_at_a_crash_is_sent_again_after_the_restart() {
    // Slow, so that the delivery is answered well before Coveralls answers its close.
    let coveralls = Server::start(vec![Reply::Slow(
        Duration::from_millis(300),
        Box::new(json(200, CLOSED)),
    )]);
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("state.sqlite3");
    let at_once = [("COVERALLS_FINISH_ANSWER_WAIT", "0s")];
    let mut receiver = aborting_at(&coveralls, &state_file, "after-attempt", &at_once);
    let body = body("wf-sent-twice");
    let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body);
    assert_eq!((status, &answer["queued"]), (202, &true.into()), "{answer}");
    assert_aborted(&mut receiver, "after-attempt");
    assert_eq!(builds(&coveralls.requests()), ["wf-sent-twice"]);
    assert_eq!(Vec::from_iter(pending(&state_file)), ["wf-sent-twice"]);
    drop(receiver);

    let receiver = restarted(&coveralls, &state_file);
    assert_eq!(
        builds(&coveralls.requests()),
        ["wf-sent-twice", "wf-sent-twice"],
        "sent again after the restart: at least once"
    );
    let listed = deliveries(&state_file, &[]);
    assert_eq!(listed.trim(), "no deliveries pending or failed");
    assert_closed(&receiver, &coveralls, &body);
}

#[test]
fn closes_pending_at_a_kill_are_resumed_while_new_deliveries_keep_coming() {
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("state.sqlite3");
    let old = pending_at_a_kill(&state_file, 20);
    // Started again: a delivery every tenth of a second, as a busy CI sends them.
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let receiver = Receiver::in_front_of(&coveralls, &[state_var(&state_file)]);
    let started = Instant::now();
    let missing = |closed: &[String]| old.iter().filter(|w| !closed.contains(w)).count();
    let mut new = 0;
    while missing(&builds(&coveralls.requests())) > 0 && started.elapsed() < Duration::from_secs(5)
    {
        let workflow = format!("wf-new-{new}");
        let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body(&workflow));
        assert_eq!(status, 200, "{answer}");
        new += 1;
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        missing(&builds(&coveralls.requests())),
        0,
        "closes pending from before the kill, still not resumed after {:?} of steady \
         deliveries ({new} new ones closed)",
        started.elapsed()
    );
}

#[test]
fn closes_pending_at_a_restart_are_sent_as_fast_as_places_free_up() {
    const PENDING: usize = 160;
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("state.sqlite3");
    pending_at_a_kill(&state_file, PENDING);
    let delay = Duration::from_millis(100);
    let coveralls = Server::start(vec![Reply::Slow(delay, Box::new(json(200, CLOSED)))]);
    let started = Instant::now();
    let receiver = Receiver::in_front_of(&coveralls, &[state_var(&state_file)]);
    let at_once = attempts_at_once(&receiver);
    receiver.wait_until_nothing_pending(Duration::from_secs(20));
    let took = started.elapsed();
    assert_eq!(coveralls.requests().len(), PENDING);
    // Waves of `at_once` closes, each as long as Coveralls takes to answer: a second in all
    // here. Allowed four times that, for a machine busy with the other tests; a wave each
    // tick (500 ms), the fault this catches, takes five.
    let waves = PENDING.div_ceil(at_once) as u32;
    assert!(
        took < delay * waves * 4,
        "{PENDING} pending closes took {took:?} to send, {at_once} at a time, with \
         Coveralls answering in {delay:?}"
    );
}

/// `count` closes left pending in the state file by a receiver killed while Coveralls never
/// answered: their workflows.
fn pending_at_a_kill(state_file: &Path, count: usize) -> Vec<String> {
    let stalled = Server::start(vec![Reply::Stall]);
    let at_once = ("COVERALLS_FINISH_ANSWER_WAIT", "0s");
    let mut receiver = Receiver::in_front_of(&stalled, &[state_var(state_file), at_once]);
    let old: Vec<String> = (0..count).map(|i| format!("wf-old-{i}")).collect();
    for workflow in &old {
        let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body(workflow));
        assert_eq!(status, 202, "{answer}");
    }
    signal(&receiver, "-KILL");
    let status = receiver.exit_status(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.signal()), Some(9));
    assert_eq!(pending(state_file).len(), count);
    old
}
