//! `coveralls-finish serve`, the built binary, against a recording Coveralls on loopback.

mod support;

use std::thread;
use std::time::Duration;

use support::{
    CLOSED, MAGNUM, REPO_TOKEN as TOKEN, Receiver, Reply, SECRET, Server, Vars, fixture, json,
    workflow_event,
};

const WORKFLOW: &str = "fda08377-fe7e-46b1-8992-3a7aaecac9c3";

fn receiver(coveralls: &Server, extra: &[(&str, &str)]) -> Receiver {
    Receiver::in_front_of(coveralls, extra)
}

/// The usual pair: a Coveralls that closes every build, and a receiver in front of it.
fn closing() -> (Server, Receiver) {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let receiver = receiver(&coveralls, &[]);
    (coveralls, receiver)
}

#[test]
fn a_signed_workflow_completed_closes_its_workflow() {
    let (coveralls, receiver) = closing();
    let body = fixture("circleci_workflow_completed_github_oauth.json");
    let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["closed"], true);
    assert_eq!(answer["build_num"], WORKFLOW);
    assert_eq!(answer["jobs"], 3);

    let request = coveralls.only_request();
    assert_eq!(request.target, "/webhook");
    let sent = request.json();
    assert_eq!(sent["repo_token"], TOKEN);
    assert_eq!(sent["service_name"], "circleci");
    assert_eq!(sent["service_number"], WORKFLOW);
    assert_eq!(
        sent["payload"],
        serde_json::json!({"build_num": WORKFLOW, "status": "done"})
    );
    assert_eq!(sent["carryforward"], "unit,e2e");

    let log = receiver.log();
    assert!(
        log.contains("POST /circleci: on; POST /magnum: on"),
        "{log}"
    );
    let line = receiver.log_line("POST /circleci event=");
    assert!(
        line.contains("event=workflow-completed id=3888f21b-eaa7-38e3-8f3d-75a63bba8895"),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "project=default build={WORKFLOW} status=200 outcome=\"closed: 3 jobs\""
        )),
        "{line}"
    );
}

#[test]
fn bad_signatures_are_refused_before_anything_is_closed() {
    let (coveralls, receiver) = closing();
    let body = fixture("circleci_workflow_completed_github_oauth.json");
    let good = support::sign(SECRET, &body);
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (vec![], "missing circleci-signature"),
        (
            vec![(
                "circleci-signature",
                format!("v1={}", support::sign("wrong", &body)),
            )],
            "does not match",
        ),
        (
            vec![("circleci-signature", format!("v2={good}"))],
            "no v1 signature",
        ),
        (
            vec![("circleci-signature", format!("v0={good}"))],
            "no v1 signature",
        ),
        (
            vec![("circleci-signature", "v1=".to_owned())],
            "does not match",
        ),
    ];
    for (headers, expected) in cases {
        let mut all = vec![("circleci-event-type", "workflow-completed".to_owned())];
        all.extend(headers);
        let headers: Vec<(&str, &str)> = all.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let (status, answer) = receiver.post("/circleci", &headers, &body);
        assert_eq!(status, 401, "{headers:?}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(expected),
            "{answer}"
        );
    }
    // A body changed after signing fails too.
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let signature = format!("v1={good}");
    let (status, _) = receiver.post(
        "/circleci",
        &[("circleci-signature", &signature)],
        &tampered,
    );
    assert_eq!(status, 401);
    assert!(coveralls.requests().is_empty());
}

#[test]
fn ping_answers_and_job_completed_is_ignored() {
    let (coveralls, receiver) = closing();
    let (status, answer) =
        receiver.circleci(SECRET, "ping", &fixture("circleci_ping_observed.json"));
    assert_eq!(
        (status, &answer["event"]),
        (200, &serde_json::json!("ping"))
    );
    for name in [
        "circleci_job_completed_github_oauth.json",
        "circleci_job_completed_gitlab_ghapp.json",
    ] {
        let (status, answer) = receiver.circleci(SECRET, "job-completed", &fixture(name));
        assert_eq!(status, 202, "{name}: {answer}");
    }
    assert!(coveralls.requests().is_empty());
}

#[test]
fn the_event_type_is_the_signed_one() {
    let (coveralls, receiver) = closing();
    let ping = fixture("circleci_ping_observed.json");
    // The unsigned header says otherwise: refused.
    let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &ping);
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("circleci-event-type is workflow-completed but the signed event is ping"),
        "{answer}"
    );
    // Without the header, the body's type decides.
    let body = fixture("circleci_workflow_completed_github_oauth.json");
    let signature = format!("v1={}", support::sign(SECRET, &body));
    let (status, answer) = receiver.post("/circleci", &[("circleci-signature", &signature)], &body);
    assert_eq!(status, 200, "{answer}");
    // A signed body without a type is not guessed at.
    let typeless = br#"{"id":"e-1","workflow":{"id":"wf-typeless"}}"#;
    let (status, _) = receiver.circleci(SECRET, "workflow-completed", typeless);
    assert_eq!(status, 400);
    assert_eq!(coveralls.requests().len(), 1);
}

#[test]
fn blank_or_overlong_build_numbers_are_refused_and_never_sent() {
    let (coveralls, receiver) = closing();
    for workflow in ["", "   ", &"w".repeat(257)] {
        let body = workflow_event("e-n", workflow, "gh/a/b");
        let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body);
        assert_eq!(status, 400, "{workflow:?}: {answer}");
    }
    let path = format!("/magnum?secret={MAGNUM}");
    let long = "9".repeat(257);
    for number in [r#""  ""#, &format!("\"{long}\"")] {
        let hook = format!(r#"{{"project_id": 43, "number": {number}}}"#);
        let (status, answer) = receiver.post(&path, &[], hook.as_bytes());
        assert_eq!(status, 400, "{number}: {answer}");
    }
    let body = workflow_event("e-ok", &"w".repeat(256), "gh/a/b");
    let (status, _) = receiver.circleci(SECRET, "workflow-completed", &body);
    assert_eq!(status, 200, "256 bytes are fine");
    assert_eq!(coveralls.requests().len(), 1);
}

#[test]
fn a_huge_5xx_from_coveralls_is_still_a_5xx() {
    let page = format!("<html><body>{}</body></html>", "x".repeat(2 << 20));
    let coveralls = Server::start(vec![
        Reply::Answer {
            status: 502,
            headers: vec![("Content-Type".into(), "text/html".into())],
            body: page.into_bytes(),
        },
        json(200, CLOSED),
    ]);
    let receiver = receiver(&coveralls, &[("COVERALLS_RETRIES", "0")]);
    let body = fixture("circleci_workflow_completed_github_oauth.json");
    let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body);
    assert_eq!(status, 502, "asks for a redelivery: {answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("502 Bad Gateway: (an answer of over 1048576 bytes, not read)"),
        "{answer}"
    );
    let (status, _) = receiver.circleci(SECRET, "workflow-completed", &body);
    assert_eq!(status, 200);
}

const FINAL_JOB: &str = r#"
endpoint = "{endpoint}"
[[project]]
name = "hooks"
circleci_slug = "gh/circleci/webhook-service"
repo_token_env = "HOOKS_TOKEN"
final_job = "test"
"#;

#[test]
fn a_final_job_closes_on_its_job_completed() {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let env = [("CIRCLECI_WEBHOOK_SECRET", SECRET), ("HOOKS_TOKEN", TOKEN)];
    let receiver = Receiver::with_projects(&coveralls, FINAL_JOB, &env);
    let (status, answer) = receiver.circleci(
        SECRET,
        "job-completed",
        &fixture("circleci_job_completed_github_oauth.json"),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        coveralls.only_request().json()["payload"]["build_num"],
        WORKFLOW
    );
}

#[test]
fn a_final_job_closes_only_in_the_projects_workflows() {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let env = [("CIRCLECI_WEBHOOK_SECRET", SECRET), ("HOOKS_TOKEN", TOKEN)];
    let toml = format!("{FINAL_JOB}workflows = [\"coverage\"]\n");
    let receiver = Receiver::with_projects(&coveralls, &toml, &env);
    let mut event: serde_json::Value =
        serde_json::from_slice(&fixture("circleci_job_completed_github_oauth.json")).unwrap();
    let (status, answer) = receiver.circleci(SECRET, "job-completed", event.to_string().as_bytes());
    assert_eq!(
        status, 202,
        "the fixture's workflow is not \"coverage\": {answer}"
    );
    event["workflow"]["name"] = "coverage".into();
    let (status, answer) = receiver.circleci(SECRET, "job-completed", event.to_string().as_bytes());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(coveralls.requests().len(), 1);
}

#[test]
fn duplicate_deliveries_close_once() {
    let coveralls = Server::start(vec![Reply::Slow(
        Duration::from_millis(300),
        Box::new(json(200, CLOSED)),
    )]);
    let receiver = receiver(&coveralls, &[]);
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
fn magnum_hooks_as_json_body_and_as_form_field() {
    let (coveralls, receiver) = closing();
    let hook = fixture("magnum_hook.json");
    let path = format!("/magnum?secret={MAGNUM}");
    let (status, answer) = receiver.post(&path, &[("content-type", "application/json")], &hook);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["build_num"], "130");
    let sent = coveralls.only_request().json();
    assert_eq!(
        (
            sent["payload"]["build_num"].as_str(),
            sent["service_name"].as_str()
        ),
        (Some("130"), Some("magnum"))
    );

    let mut other: serde_json::Value = serde_json::from_slice(&hook).unwrap();
    other["number"] = 131.into();
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &other.to_string())
        .finish();
    let (status, answer) = receiver.post(
        &path,
        &[("content-type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        coveralls.requests()[1].json()["payload"]["build_num"],
        "131"
    );

    // The same build again: closed once.
    let (status, answer) = receiver.post(&path, &[], &hook);
    assert_eq!(
        (status, &answer["duplicate"]),
        (200, &serde_json::json!(true))
    );
    assert_eq!(coveralls.requests().len(), 2);
    assert!(
        !receiver.log().contains("secret="),
        "the query is not logged"
    );
}

#[test]
fn a_wrong_or_missing_magnum_secret_is_refused() {
    let (coveralls, receiver) = closing();
    let hook = fixture("magnum_hook.json");
    for path in [
        "/magnum",
        "/magnum?secret=nope",
        &format!("/magnum?secret={MAGNUM}x"),
    ] {
        let (status, _) = receiver.post(path, &[], &hook);
        assert_eq!(status, 401, "{path}");
    }
    assert!(coveralls.requests().is_empty());
}

#[test]
fn oversized_and_malformed_bodies() {
    let (coveralls, receiver) = closing();
    // A chunked body (no length given up front) is cut off at 1 MiB too.
    let mut raw = support::Raw::connect(receiver.addr());
    let mut request = support::head("POST", "/circleci", &[("Transfer-Encoding", "chunked")]);
    request.extend_from_slice(format!("{:x}\r\n", (1 << 20) + 1).as_bytes());
    request.extend(std::iter::repeat_n(b'x', (1 << 20) + 1));
    raw.send(&request).unwrap();
    assert_eq!(raw.answer().expect("an answer").status, 413);
    let (status, answer) = receiver.circleci(SECRET, "workflow-completed", b"{\"id\": 5");
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed CircleCI event:"),
        "{answer}"
    );
    let (status, answer) = receiver.circleci(
        SECRET,
        "workflow-completed",
        br#"{"id":"e1","type":"workflow-completed"}"#,
    );
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("without a workflow"),
        "{answer}"
    );
    let path = format!("/magnum?secret={MAGNUM}");
    let (status, answer) = receiver.post(&path, &[], br#"{"project_id": 43}"#);
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("missing field `number`"),
        "{answer}"
    );
    let (status, _) = receiver.post(
        &path,
        &[("content-type", "application/x-www-form-urlencoded")],
        b"other=1",
    );
    assert_eq!(status, 400);
    assert!(coveralls.requests().is_empty());
}

#[test]
fn coveralls_failing_asks_for_a_redelivery_that_then_closes() {
    let coveralls = Server::start(vec![
        json(503, r#"{"error":"down"}"#),
        json(503, r#"{"error":"down"}"#),
        json(200, CLOSED),
    ]);
    let receiver = receiver(&coveralls, &[("COVERALLS_RETRIES", "1")]);
    let body = fixture("circleci_workflow_completed_github_oauth.json");
    let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body);
    assert_eq!(status, 502, "{answer}");
    assert_eq!(answer["closed"], false);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("503 Service Unavailable: down"),
        "{answer}"
    );
    let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body);
    assert_eq!(status, 200, "a redelivery tries again: {answer}");
    assert_eq!(coveralls.requests().len(), 3);
}

#[test]
fn the_answer_fits_circleci_s_ten_seconds_when_coveralls_hangs() {
    let coveralls = Server::start(vec![Reply::Stall]);
    let receiver = receiver(&coveralls, &[]);
    let body = fixture("circleci_workflow_completed_github_oauth.json");
    let started = std::time::Instant::now();
    let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body);
    let took = started.elapsed();
    assert_eq!(status, 503, "{answer}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(
        answer["error"].as_str().unwrap().contains("out of time"),
        "{answer}"
    );
}

#[test]
fn a_refusal_is_answered_200_since_a_redelivery_cannot_help() {
    let coveralls = Server::start(vec![json(
        422,
        r#"{"error":"No build matching CI build number found"}"#,
    )]);
    let receiver = receiver(&coveralls, &[]);
    let (status, answer) = receiver.circleci(
        SECRET,
        "workflow-completed",
        &fixture("circleci_workflow_completed_github_oauth.json"),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["closed"], false);
    assert!(
        answer["error"].as_str().unwrap().contains(&format!(
            "sent build number {WORKFLOW} (from workflow.id of CircleCI event"
        )),
        "{answer}"
    );
}

#[test]
fn several_projects_from_a_config_file() {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let projects = r#"
endpoint = "{endpoint}"

[[project]]
name = "api"
circleci_slug = "gh/acme/api"
repo_token_env = "API_TOKEN"
carryforward = ["unit"]
workflows = ["test"]

[[project]]
name = "web"
circleci_project_id = "84996744-a854-4f5e-aea3-04e2851dc1d2"
magnum_project_id = 43
repo_token = "web-token-in-file"
statuses = ["success", "pass"]
"#;
    let env = [
        ("CIRCLECI_WEBHOOK_SECRET", SECRET),
        ("MAGNUM_HOOK_SECRET", MAGNUM),
        ("API_TOKEN", "api-token-123"),
    ];
    let receiver = Receiver::with_projects(&coveralls, projects, &env).secret("web-token-in-file");
    // By slug: api, in either spelling of the VCS.
    let mut api: serde_json::Value =
        serde_json::from_slice(&workflow_event("e-1", "wf-api", "github/acme/api")).unwrap();
    api["workflow"]["name"] = "test".into();
    let (status, answer) =
        receiver.circleci(SECRET, "workflow-completed", api.to_string().as_bytes());
    assert_eq!(
        (status, answer["project"].as_str()),
        (200, Some("api")),
        "{answer}"
    );
    // A workflow the project does not close on.
    api["workflow"]["name"] = "deploy".into();
    api["workflow"]["id"] = "wf-api-deploy".into();
    let (status, _) = receiver.circleci(SECRET, "workflow-completed", api.to_string().as_bytes());
    assert_eq!(status, 202);
    // By project id: web (the fixture's project), and by Magnum project id.
    let (status, answer) = receiver.circleci(
        SECRET,
        "workflow-completed",
        &fixture("circleci_workflow_completed_github_oauth.json"),
    );
    assert_eq!(
        (status, answer["project"].as_str()),
        (200, Some("web")),
        "{answer}"
    );
    let (status, answer) = receiver.post(
        &format!("/magnum?secret={MAGNUM}"),
        &[],
        &fixture("magnum_hook.json"),
    );
    assert_eq!(
        (status, answer["project"].as_str()),
        (200, Some("web")),
        "{answer}"
    );
    // Nobody's project.
    let (status, answer) = receiver.circleci(
        SECRET,
        "workflow-completed",
        &workflow_event("e-9", "wf-9", "gh/else/where"),
    );
    assert_eq!(status, 202, "{answer}");
    assert!(
        answer["ignored"]
            .as_str()
            .unwrap()
            .contains("no project is configured for CircleCI project gh/else/where")
    );

    let sent: Vec<serde_json::Value> = coveralls.requests().iter().map(|r| r.json()).collect();
    assert_eq!(sent.len(), 3);
    assert_eq!(
        (
            sent[0]["repo_token"].as_str(),
            sent[0]["carryforward"].as_str()
        ),
        (Some("api-token-123"), Some("unit"))
    );
    assert_eq!(sent[1]["repo_token"], "web-token-in-file");
    assert_eq!(sent[2]["payload"]["build_num"], "130");
    let log = receiver.log();
    assert!(
        !log.contains("api-token-123") && !log.contains("web-token-in-file"),
        "{log}"
    );
}

#[test]
fn routes_methods_and_a_source_switched_off() {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let endpoint = coveralls.url();
    let receiver = Receiver::start(
        &[
            ("COVERALLS_REPO_TOKEN", TOKEN),
            ("COVERALLS_ENDPOINT", &endpoint),
            ("CIRCLECI_WEBHOOK_SECRET", SECRET),
        ],
        &[],
    );
    assert_eq!(receiver.get("/healthz"), 200);
    assert_eq!(receiver.get("/circleci"), 405);
    assert_eq!(receiver.get("/nope"), 404);
    let (status, answer) = receiver.post(
        &format!("/magnum?secret={MAGNUM}"),
        &[],
        &fixture("magnum_hook.json"),
    );
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("MAGNUM_HOOK_SECRET is not set")
    );
    assert!(
        receiver
            .log()
            .contains("POST /magnum: off (MAGNUM_HOOK_SECRET is not set)")
    );
    assert!(coveralls.requests().is_empty());
}

#[test]
fn bad_receiver_settings_stop_it_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("projects.toml");
    std::fs::write(
        &config,
        "[[project]]\nname = \"api\"\ncircleci_slug = \"gh/a/b\"\n",
    )
    .unwrap();
    let cases: Vec<(Vec<&str>, Vars, &str)> = vec![
        (
            vec![],
            &[("COVERALLS_REPO_TOKEN", TOKEN)],
            "neither CIRCLECI_WEBHOOK_SECRET nor MAGNUM_HOOK_SECRET is set",
        ),
        (
            vec![],
            &[("CIRCLECI_WEBHOOK_SECRET", SECRET)],
            "COVERALLS_REPO_TOKEN is not set",
        ),
        (
            vec!["--config", config.to_str().unwrap()],
            &[("CIRCLECI_WEBHOOK_SECRET", SECRET)],
            "projects.toml: project \"api\": repo_token_env: missing",
        ),
        (
            vec![],
            &[
                ("MAGNUM_HOOK_SECRET", "short"),
                ("COVERALLS_REPO_TOKEN", TOKEN),
            ],
            "MAGNUM_HOOK_SECRET has 5 bytes; expected at least 16",
        ),
        (
            vec!["--listen", "not-an-address"],
            &[
                ("CIRCLECI_WEBHOOK_SECRET", SECRET),
                ("COVERALLS_REPO_TOKEN", TOKEN),
            ],
            "cannot listen on not-an-address",
        ),
    ];
    for (args, env, expected) in cases {
        let output = support::binary()
            .envs(env.iter().copied())
            .arg("serve")
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            !stderr.contains(SECRET) && !stderr.contains(TOKEN),
            "{stderr}"
        );
    }
}

#[cfg(unix)]
#[test]
fn sigterm_finishes_what_is_in_flight_then_exits_0() {
    let coveralls = Server::start(vec![Reply::Slow(
        Duration::from_millis(700),
        Box::new(json(200, CLOSED)),
    )]);
    let mut receiver = receiver(&coveralls, &[]);
    let body = fixture("circleci_workflow_completed_github_oauth.json");
    let answer = thread::scope(|scope| {
        let in_flight = scope.spawn(|| receiver.circleci(SECRET, "workflow-completed", &body));
        // Let the delivery reach Coveralls, then ask the receiver to stop.
        while coveralls.requests().is_empty() {
            thread::sleep(Duration::from_millis(10));
        }
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &receiver.pid().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        in_flight.join().unwrap()
    });
    assert_eq!(answer.0, 200, "{:?}", answer.1);
    assert_eq!(receiver.wait(Duration::from_secs(5)), Some(0));
    receiver.log_with("stopped: every delivery in flight was answered");
}

#[test]
fn a_stalled_connection_is_retried_within_the_budget() {
    let coveralls = Server::start(vec![Reply::Stall, json(200, CLOSED)]);
    let receiver = receiver(&coveralls, &[]);
    let started = std::time::Instant::now();
    let (status, answer) = receiver.circleci(
        SECRET,
        "workflow-completed",
        &fixture("circleci_workflow_completed_github_oauth.json"),
    );
    assert_eq!(status, 200, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        coveralls.requests().len(),
        2,
        "the stalled attempt, then a fresh one"
    );
    receiver.log_with("attempt 1/6 failed");
}

#[test]
fn every_circleci_fixture_is_read() {
    let (_coveralls, receiver) = closing();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.starts_with("circleci_") {
            continue;
        }
        let body = fixture(&name);
        let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let (id, kind) = (
            event["id"].as_str().unwrap(),
            event["type"].as_str().unwrap(),
        );
        assert!(!id.is_empty(), "{name}");
        let (status, answer) = receiver.circleci(SECRET, kind, &body);
        assert!(status == 200 || status == 202, "{name}: {status} {answer}");
        receiver.log_with(&format!("POST /circleci event={kind} id={id} "));
        if name.contains("workflow_completed") {
            assert_eq!(answer["build_num"], WORKFLOW, "{name}");
        }
        seen += 1;
    }
    assert_eq!(seen, 4);
}

#[test]
fn the_magnum_fixture_is_read() {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let projects = r#"
endpoint = "{endpoint}"
[[project]]
name = "magnum-43"
magnum_project_id = 43
repo_token = "magnum-token-in-file"
statuses = ["pass"]
"#;
    let env = [("MAGNUM_HOOK_SECRET", MAGNUM)];
    let receiver =
        Receiver::with_projects(&coveralls, projects, &env).secret("magnum-token-in-file");
    let path = format!("/magnum?secret={MAGNUM}");
    let (status, answer) = receiver.post(&path, &[], &fixture("magnum_hook.json"));
    // Project 43, build 130, status "pass": the only one this project closes on.
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["project"].as_str(), answer["build_num"].as_str()),
        (Some("magnum-43"), Some("130"))
    );
}
