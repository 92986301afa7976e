//! `POST /circleci`: signed CircleCI webhooks, what closes a build and what does not.

use crate::receiver::{REPO_TOKEN as TOKEN, Receiver, SECRET, fixture, sign};
use crate::support::{CLOSED, Server, json};
use crate::{WORKFLOW, closing, error};

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
    let good = sign(SECRET, &body);
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (vec![], "missing circleci-signature"),
        (
            vec![("circleci-signature", format!("v1={}", sign("wrong", &body)))],
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
        assert!(error(&answer).contains(expected), "{answer}");
    }
    // A body changed after signing fails too.
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let signature = format!("v1={good}");
    let (status, answer) = receiver.post(
        "/circleci",
        &[("circleci-signature", &signature)],
        &tampered,
    );
    assert_eq!(status, 401, "{answer}");
    assert_eq!(error(&answer), "circleci-signature does not match the body");
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
        assert_eq!(
            answer["ignored"], "job-completed: builds close on workflow-completed",
            "{name}"
        );
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
    assert_eq!(
        error(&answer),
        "circleci-event-type is workflow-completed but the signed event is ping"
    );
    // Without the header, the body's type decides.
    let body = fixture("circleci_workflow_completed_github_oauth.json");
    let signature = format!("v1={}", sign(SECRET, &body));
    let (status, answer) = receiver.post("/circleci", &[("circleci-signature", &signature)], &body);
    assert_eq!(status, 200, "{answer}");
    // A signed body without a type is not guessed at.
    let typeless = br#"{"id":"e-1","workflow":{"id":"wf-typeless"}}"#;
    let (status, answer) = receiver.circleci(SECRET, "workflow-completed", typeless);
    assert_eq!(status, 400, "{answer}");
    assert_eq!(error(&answer), "malformed CircleCI event: no type");
    assert_eq!(coveralls.requests().len(), 1);
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
    assert_eq!(
        answer["ignored"],
        "workflow \"welcome\" does not close a build (expected one of coverage)"
    );
    event["workflow"]["name"] = "coverage".into();
    let (status, answer) = receiver.circleci(SECRET, "job-completed", event.to_string().as_bytes());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(coveralls.requests().len(), 1);
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
fn malformed_events_are_refused() {
    let (coveralls, receiver) = closing();
    let (status, answer) = receiver.circleci(SECRET, "workflow-completed", b"{\"id\": 5");
    assert_eq!(status, 400);
    assert!(
        error(&answer).starts_with("malformed CircleCI event:"),
        "{answer}"
    );
    let (status, answer) = receiver.circleci(
        SECRET,
        "workflow-completed",
        br#"{"id":"e1","type":"workflow-completed"}"#,
    );
    assert_eq!(status, 400);
    assert!(error(&answer).contains("without a workflow"), "{answer}");
    assert!(coveralls.requests().is_empty());
}
