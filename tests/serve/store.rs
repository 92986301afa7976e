//! The durable store, from the outside: what an outage, a stop, a refusal, a full disk and a
//! file that is not the receiver's do to the deliveries it accepted; `deliveries`; metrics.

#[cfg(unix)]
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::receiver::{Receiver, SECRET, workflow_event};
#[cfg(unix)]
use crate::support::refused_url;
use crate::support::{CLOSED, Recorded, Reply, Server, binary, json};

/// Retries a hundred milliseconds apart: were closes not paced while Coveralls fails, a
/// test would see ten a second for each.
const QUICK_RETRIES: (&str, &str) = ("COVERALLS_FINISH_RETRY_SCHEDULE", "100ms");

/// The build each recorded request closes.
#[cfg_attr(not(unix), allow(dead_code))]
fn builds(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .map(|r| {
            r.json()["payload"]["build_num"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn deliver(receiver: &Receiver, workflow: &str) -> (u16, serde_json::Value) {
    let body = workflow_event(&format!("e-{workflow}"), workflow, "gh/a/b");
    receiver.circleci(SECRET, "workflow-completed", &body)
}

static OUTAGE_OVER: AtomicBool = AtomicBool::new(false);
static CLOSED_AFTER_OUTAGE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Coveralls down (503) until [`OUTAGE_OVER`], then closing every build, noting which.
fn outage(request: &Recorded) -> Reply {
    if !OUTAGE_OVER.load(Ordering::SeqCst) {
        return json(503, r#"{"error":"down for maintenance"}"#);
    }
    let build = request.json()["payload"]["build_num"]
        .as_str()
        .unwrap()
        .to_owned();
    CLOSED_AFTER_OUTAGE.lock().unwrap().push(build);
    json(200, CLOSED)
}

#[test]
fn an_outage_is_waited_out_with_one_probe_a_second_then_every_close_is_made_once() {
    const DELIVERIES: usize = 40;
    let coveralls = Server::start(vec![Reply::Decide(outage)]);
    let receiver = Receiver::in_front_of(&coveralls, &[QUICK_RETRIES]);
    for i in 0..DELIVERIES {
        let (status, answer) = deliver(&receiver, &format!("wf-{i}"));
        assert_eq!(status, 202, "{answer}");
    }
    let before = coveralls.requests().len();
    std::thread::sleep(Duration::from_secs(3));
    let during = coveralls.requests().len() - before;
    assert!(
        during <= 5,
        "{during} requests in 3 s of outage, with {DELIVERIES} closes waiting"
    );
    assert_eq!(receiver.health()["pending"], DELIVERIES);

    OUTAGE_OVER.store(true, Ordering::SeqCst);
    let recovered = Instant::now();
    receiver.wait_until_nothing_pending(Duration::from_secs(60));
    println!(
        "{DELIVERIES} closes made {:?} after the outage ended",
        recovered.elapsed()
    );
    let mut closed = CLOSED_AFTER_OUTAGE.lock().unwrap().clone();
    closed.sort();
    let mut expected: Vec<String> = (0..DELIVERIES).map(|i| format!("wf-{i}")).collect();
    expected.sort();
    assert_eq!(closed, expected, "every close made, each once");
    receiver.log_with("answers again: ");
}

#[cfg(unix)]
#[test]
fn closes_left_pending_by_a_stop_are_made_by_the_next_start() {
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("state.sqlite3");
    let state_var = ("COVERALLS_FINISH_STATE", file.to_str().unwrap());
    let nowhere = refused_url();
    let mut receiver = Receiver::start(
        &[
            ("COVERALLS_REPO_TOKEN", crate::receiver::REPO_TOKEN),
            ("COVERALLS_ENDPOINT", &nowhere),
            ("CIRCLECI_WEBHOOK_SECRET", SECRET),
            state_var,
        ],
        &[],
    );
    for i in 0..10 {
        let (status, answer) = deliver(&receiver, &format!("wf-{i}"));
        assert_eq!(status, 202, "Coveralls refuses connections: {answer}");
    }
    let started = Instant::now();
    crate::signal(&receiver, "-TERM");
    assert_eq!(receiver.wait(Duration::from_secs(10)), Some(0));
    assert!(started.elapsed() < Duration::from_secs(10));
    receiver.log_with("stopped: every delivery in flight was answered; 10 closes pending in");

    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let restarted = Receiver::in_front_of(&coveralls, &[state_var]);
    restarted.log_with("(10 pending, 0 failed)");
    restarted.wait_until_nothing_pending(Duration::from_secs(20));
    let mut closed = builds(&coveralls.requests());
    closed.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("wf-{i}")).collect();
    expected.sort();
    assert_eq!(closed, expected);
}

/// `coveralls-finish deliveries` on `state`, with these arguments: the exit code and output.
fn deliveries(state: &Path, args: &[&str]) -> (i32, String, String) {
    let output = binary()
        .arg("deliveries")
        .args(args)
        .env("COVERALLS_FINISH_STATE", state)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// `deliveries` lists one delivery, failed, for `build`, with `error`; the table says as
/// much, without the token. Its id.
fn listed_as_failed(file: &Path, build: &str, error: &str) -> String {
    let (code, listed, _) = deliveries(file, &["--json"]);
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let [row] = listed.as_array().unwrap().as_slice() else {
        panic!("one delivery: {listed}");
    };
    assert_eq!(row["state"], "failed");
    assert_eq!(row["build"], build);
    assert_eq!(row["attempts"], 1);
    let last_error = row["last_error"].as_str().unwrap();
    assert!(last_error.contains(error), "{last_error}");
    let (code, table, _) = deliveries(file, &[]);
    assert_eq!(code, 0);
    assert!(
        table.starts_with("id\tsource\tproject\tbuild\tstate"),
        "{table}"
    );
    assert!(table.contains("\tfailed\t1\t"), "{table}");
    assert!(!table.contains(crate::receiver::REPO_TOKEN), "{table}");
    row["id"].to_string()
}

#[test]
fn a_refusal_is_failed_at_once_listed_and_closed_when_retried() {
    let coveralls = Server::start(vec![
        json(
            422,
            r#"{"error":"No build matching CI build number found"}"#,
        ),
        json(200, CLOSED),
    ]);
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("state.sqlite3");
    let state_var = ("COVERALLS_FINISH_STATE", file.to_str().unwrap());
    let wait = ("COVERALLS_FINISH_ANSWER_WAIT", "8s");
    let receiver = Receiver::in_front_of(&coveralls, &[state_var, QUICK_RETRIES, wait]);
    let (status, answer) = deliver(&receiver, "wf-422");
    assert_eq!(
        (status, &answer["closed"]),
        (200, &serde_json::json!(false)),
        "{answer}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        coveralls.requests().len(),
        1,
        "a refusal is not retried by itself"
    );
    let health = receiver.health();
    assert_eq!(
        (health["pending"].as_u64(), health["failed"].as_u64()),
        (Some(0), Some(1))
    );

    let id = listed_as_failed(&file, "wf-422", "No build matching CI build number found");
    let (code, said, _) = deliveries(&file, &["retry", &id]);
    assert_eq!((code, said.trim()), (0, "1 delivery queued again"));
    assert!(coveralls.wait_for(2, Duration::from_secs(5)), "retried");
    receiver.wait_until_nothing_pending(Duration::from_secs(5));
    assert_eq!(receiver.health()["failed"], 0);
    let (code, said, _) = deliveries(&file, &[]);
    assert_eq!((code, said.trim()), (0, "no deliveries pending or failed"));
    let (code, _, error) = deliveries(&file, &["drop", &id]);
    assert_eq!(code, 2, "a closed delivery is not dropped: {error}");
    assert!(error.contains(&format!(
        "no delivery {id} is pending or failed; nothing changed"
    )));
}

#[test]
fn metrics_say_what_was_delivered_attempted_and_is_pending() {
    let coveralls = Server::start(vec![json(200, CLOSED), Reply::Stall]);
    // Long enough for the first close on a busy machine; the stalled one is queued after it.
    let receiver = Receiver::in_front_of(&coveralls, &[("COVERALLS_FINISH_ANSWER_WAIT", "3s")]);
    assert_eq!(deliver(&receiver, "wf-1").0, 200);
    assert_eq!(deliver(&receiver, "wf-1").0, 200);
    assert_eq!(deliver(&receiver, "wf-2").0, 202);
    let (status, text) = receiver.fetch("/metrics");
    assert_eq!(status, 200);
    let sample = |name: &str| -> f64 {
        let line = text.lines().find(|line| line.starts_with(name));
        let value = line.and_then(|line| line.rsplit(' ').next());
        value
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    let delivered = |outcome: &str| {
        sample(&format!(
            "coveralls_finish_deliveries_total{{source=\"circleci\",outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(delivered("closed"), 1.0);
    assert_eq!(delivered("duplicate"), 1.0);
    assert_eq!(delivered("queued"), 1.0);
    assert_eq!(
        sample("coveralls_finish_close_attempts_total{result=\"closed\"}"),
        1.0
    );
    assert_eq!(sample("coveralls_finish_close_seconds_count"), 1.0);
    assert_eq!(sample("coveralls_finish_pending_closes"), 1.0);
    assert_eq!(sample("coveralls_finish_failed_closes"), 0.0);
    assert!(sample("coveralls_finish_oldest_pending_seconds") >= 0.0);
    assert!(!text.contains("wf-"), "no build number in a label:\n{text}");
}

/// A receiver that does not start: its exit code and what it said.
fn refused_start(state: &Path) -> (i32, String) {
    let output = binary()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("COVERALLS_FINISH_STATE", state)
        .env("COVERALLS_REPO_TOKEN", "a-repo-token-of-some-length")
        .env("CIRCLECI_WEBHOOK_SECRET", "a-webhook-secret-of-some-length")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn a_state_file_in_use_or_not_the_receivers_stops_the_start_and_is_left_untouched() {
    let (coveralls, receiver) = crate::closing();
    drop(coveralls);
    let log = receiver.log_with("state: ");
    let in_use = log
        .lines()
        .find_map(|line| line.split_once("state: ").map(|(_, rest)| rest))
        .and_then(|rest| rest.split(" (").next())
        .expect("the start-up line names the state file")
        .to_owned();
    let (code, said) = refused_start(Path::new(&in_use));
    assert_eq!(code, 2, "{said}");
    let holder = format!(
        "in use by another receiver (process {} holds",
        receiver.pid()
    );
    assert!(said.contains(&holder), "{said}");

    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("photos.db");
    std::fs::write(
        &foreign,
        b"SQLite format 3\0 but not really; and then some junk",
    )
    .unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello ".repeat(1000)).unwrap();
    for file in [&foreign, &text] {
        let before = std::fs::read(file).unwrap();
        let (code, said) = refused_start(file);
        assert_eq!(code, 2, "{said}");
        assert!(said.contains(&file.display().to_string()), "{said}");
        assert!(said.contains("the file is left as it is"), "{said}");
        assert_eq!(std::fs::read(file).unwrap(), before);
    }
    let (code, said) = refused_start(&dir.path().join("no-dir").join("s.sqlite3"));
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("no-dir"), "{said}");
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_is_503_never_2xx_and_the_receiver_recovers_when_space_returns() {
    let Some(disk) = SmallDisk::mount() else {
        return;
    };
    let state = disk.path.join("state.sqlite3");
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let state_var = ("COVERALLS_FINISH_STATE", state.to_str().unwrap());
    let wait = ("COVERALLS_FINISH_ANSWER_WAIT", "8s");
    let receiver = Receiver::in_front_of(&coveralls, &[state_var, wait]);
    assert_eq!(deliver(&receiver, "wf-before").0, 200);
    let filler = disk.fill();
    let mut answers: HashMap<String, u16> = HashMap::new();
    for i in 0..200 {
        let workflow = format!("wf-full-{i}");
        let (status, answer) = deliver(&receiver, &workflow);
        assert!(matches!(status, 200 | 202 | 503), "{status}: {answer}");
        if status == 503 {
            let error = answer["error"].as_str().unwrap_or_default();
            assert!(error.contains("could not be recorded"), "{answer}");
        }
        answers.insert(workflow, status);
        if status == 503 {
            break;
        }
    }
    assert!(
        answers.values().any(|s| *s == 503),
        "the disk never filled: {answers:?}"
    );
    receiver.log_with("not recorded: ");
    std::fs::remove_file(filler).unwrap();
    let (status, answer) = deliver(&receiver, "wf-after");
    assert_eq!(status, 200, "space is back: {answer}");
    receiver.wait_until_nothing_pending(Duration::from_secs(10));
    let closed = builds(&coveralls.requests());
    for (workflow, status) in &answers {
        let was_closed = closed.contains(workflow);
        assert_eq!(was_closed, *status != 503, "{workflow}: answered {status}");
    }
}

/// A 4 MiB tmpfs of the test's own (Linux, as root: CI runs as root), unmounted at the end.
#[cfg(target_os = "linux")]
struct SmallDisk {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

#[cfg(target_os = "linux")]
impl SmallDisk {
    fn mount() -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(output) if output.status.success() => Some(SmallDisk {
                path: dir.path().to_owned(),
                _dir: dir,
            }),
            Ok(output) => {
                let why = String::from_utf8_lossy(&output.stderr);
                eprintln!("SKIPPED: the full-disk test needs root to mount a tmpfs: {why}");
                None
            }
            Err(err) => {
                eprintln!("SKIPPED: the full-disk test cannot run mount: {err}");
                None
            }
        }
    }

    /// Fill what is left of it; the filler's path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.path.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 << 10];
        while file.write_all(&block).is_ok() {}
        while file.write_all(&block[..512]).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

#[cfg(target_os = "linux")]
impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[test]
fn a_close_that_keeps_failing_is_given_up_after_retry_for_and_listed() {
    let coveralls = Server::start(vec![json(503, r#"{"error":"down"}"#)]);
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("state.sqlite3");
    let receiver = Receiver::in_front_of(
        &coveralls,
        &[
            ("COVERALLS_FINISH_STATE", file.to_str().unwrap()),
            ("COVERALLS_FINISH_RETRY_FOR", "2s"),
            QUICK_RETRIES,
        ],
    );
    assert_eq!(deliver(&receiver, "wf-down").0, 202);
    let started = Instant::now();
    while receiver.health()["failed"] != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            receiver.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(receiver.health()["pending"], 0);
    let (code, listed, _) = deliveries(&file, &["--json"]);
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let error = listed[0]["last_error"].as_str().unwrap();
    assert!(error.starts_with("gave up after "), "{error}");
    assert!(error.contains(" attempts over 2s: "), "{error}");
    assert!(error.contains("503 Service Unavailable: down"), "{error}");
    let attempts = listed[0]["attempts"].as_u64().unwrap();
    assert_eq!(attempts, coveralls.requests().len() as u64);
}

#[cfg(unix)]
#[test]
fn a_pending_close_whose_project_is_gone_after_a_restart_is_failed_not_sent_elsewhere() {
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("state.sqlite3");
    let state_var = ("COVERALLS_FINISH_STATE", file.to_str().unwrap());
    let two = r#"
        [[project]]
        name = "api"
        circleci_slug = "gh/acme/api"
        repo_token = "api-token-of-some-length"
        [[project]]
        name = "web"
        circleci_slug = "gh/acme/web"
        repo_token = "web-token-of-some-length"
    "#;
    let down = Server::start(vec![json(503, r#"{"error":"down"}"#)]);
    let mut receiver = Receiver::with_projects(
        &down,
        two,
        &[state_var, ("CIRCLECI_WEBHOOK_SECRET", SECRET)],
    );
    let body = workflow_event("e-api", "wf-api", "gh/acme/api");
    assert_eq!(
        receiver.circleci(SECRET, "workflow-completed", &body).0,
        202
    );
    crate::signal(&receiver, "-TERM");
    assert_eq!(receiver.wait(Duration::from_secs(10)), Some(0));

    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let only_web = r#"
        [[project]]
        name = "web"
        circleci_slug = "gh/acme/web"
        repo_token = "web-token-of-some-length"
    "#;
    let restarted = Receiver::with_projects(
        &coveralls,
        only_web,
        &[state_var, ("CIRCLECI_WEBHOOK_SECRET", SECRET)],
    );
    let started = Instant::now();
    while restarted.health()["failed"] != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            restarted.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        coveralls.requests().is_empty(),
        "never closed against another project"
    );
    let (_, listed, _) = deliveries(&file, &["--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["project"], "api");
    let error = listed[0]["last_error"].as_str().unwrap();
    assert_eq!(error, "project api is no longer configured; not closed");
}
