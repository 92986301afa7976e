//! `POST /github`: GitHub's `workflow_run` webhooks, signed with `X-Hub-Signature-256`: what
//! closes a build (a completed run of a named workflow), what does not, re-runs, form bodies,
//! and the route under attack.

use std::time::{Duration, Instant};

use serde_json::{Value, json as value};

use crate::receiver::{Receiver, delivery_id, fixture, sign, workflow_run};
use crate::support::{CLOSED, Server, binary, json};
use crate::{answer_at_once, error, long_header};

/// The webhook's secret: the one over which webhook_signature_vectors.json computed the
/// fixture's signature.
const SECRET: &str = "test-secret";
const TOKEN: &str = "octo-repo-token-4e1f";
/// The fixtures' run: its id, and what else it tells.
const RUN: &str = "289782451";
const HEAD_SHA: &str = "3484a3fb816e0859fd6e1cea078d76385ff50625";

/// A project for the fixtures' repository, written in another case, closing on the test
/// workflow by name; `extra` lines added to its table.
fn projects(extra: &str) -> String {
    format!(
        r#"
endpoint = "{{endpoint}}"
[[project]]
name = "octo"
github_repository = "Octo-Org/Octo-Repo"
repo_token_env = "OCTO_TOKEN"
carryforward = ["unit", "e2e"]
{extra}
"#
    )
}

/// A receiver of `projects` for GitHub alone, in front of a Coveralls that closes every build.
fn github(projects: &str) -> (Server, Receiver) {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let env = [("GITHUB_WEBHOOK_SECRET", SECRET), ("OCTO_TOKEN", TOKEN)];
    let receiver = Receiver::with_projects(&coveralls, projects, &env);
    (coveralls, receiver)
}

fn closing() -> (Server, Receiver) {
    github(&projects(r#"workflows = ["test"]"#))
}

#[test]
fn a_completed_run_closes_its_build_with_what_github_tells() {
    let (coveralls, receiver) = closing();
    let body = fixture("github_workflow_run_completed_with_pull_requests.json");
    let (status, answer) = receiver.github(SECRET, "workflow_run", &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["closed"], &answer["build_num"], &answer["attempt"]),
        (&value!(true), &value!(RUN), &value!("1"))
    );
    // The official reporter's body, field for field, and nothing else.
    assert_eq!(
        coveralls.only_request().json(),
        value!({
            "repo_token": TOKEN,
            "service_name": "github",
            "service_number": RUN,
            "service_attempt": "1",
            "repo_name": "octo-org/octo-repo",
            "commit_sha": HEAD_SHA,
            "service_branch": "master",
            "service_pull_request": "2",
            "service_build_url": "https://github.com/octo-org/octo-repo/actions/runs/289782451",
            "carryforward": "unit,e2e",
            "git": {"branch": "master", "head": {"id": HEAD_SHA}},
            "payload": {"build_num": RUN, "status": "done"},
        })
    );

    // The start-up lines: the route on, and the project's ids.
    receiver.log_with("POST /github: on");
    receiver.log_with("project octo: GitHub Octo-Org/Octo-Repo");
    let line = receiver.log_line("POST /github event=workflow_run");
    let delivery = delivery_id(&body);
    assert!(
        line.contains(&format!(
            "id={delivery} project=octo build={RUN} status=200 outcome=\"closed: 3 jobs\""
        )),
        "{line}"
    );
}

#[test]
fn a_run_without_a_pull_request_or_a_branch_sends_neither() {
    let (coveralls, receiver) = closing();
    let body = workflow_run(|event| event["workflow_run"]["head_branch"] = Value::Null);
    let (status, answer) = receiver.github(SECRET, "workflow_run", &body);
    assert_eq!(status, 200, "{answer}");
    let sent = coveralls.only_request().json();
    assert_eq!(
        (sent.get("service_pull_request"), sent.get("service_branch")),
        (None, None),
        "{sent}"
    );
    assert_eq!(sent["git"], value!({"head": {"id": HEAD_SHA}}));
}

#[test]
fn the_published_signature_closes_and_no_other_does() {
    let (coveralls, receiver) = closing();
    let body = fixture("github_workflow_run_completed.json");
    let vectors: Value =
        serde_json::from_slice(&fixture("webhook_signature_vectors.json")).unwrap();
    let vector = &vectors["github_x_hub_signature_256"][1];
    assert_eq!(
        (vector["secret"].as_str(), vector["body_file"].as_str()),
        (Some(SECRET), Some("github_workflow_run_completed.json"))
    );
    let published = vector["value"].as_str().unwrap();
    let post = |headers: &[(&str, &str)], body: &[u8]| {
        let mut all = vec![("x-github-event", "workflow_run")];
        all.extend_from_slice(headers);
        receiver.post("/github", &all, body)
    };
    let wrong = format!("sha256={}", sign("not-the-secret", &body));
    let sha1 = published.replacen("sha256=", "sha1=", 1);
    let refused: [(&[(&str, &str)], &str); 5] = [
        (&[], "missing x-hub-signature-256 header"),
        // Only the legacy SHA-1 header: not enough.
        (
            &[("x-hub-signature", &sha1)],
            "missing x-hub-signature-256 header",
        ),
        (&[("x-hub-signature-256", &sha1)], "has no sha256 signature"),
        (
            &[("x-hub-signature-256", &wrong)],
            "does not match the body",
        ),
        (
            &[("x-hub-signature-256", "sha256=")],
            "does not match the body",
        ),
    ];
    for (headers, expected) in refused {
        let (status, answer) = post(headers, &body);
        assert_eq!(status, 401, "{headers:?}: {answer}");
        assert!(error(&answer).contains(expected), "{headers:?}: {answer}");
    }
    // The body changed after signing: refused too.
    let tampered = [&body[..], b"\n"].concat();
    let (status, _) = post(&[("x-hub-signature-256", published)], &tampered);
    assert_eq!(status, 401);
    assert!(coveralls.requests().is_empty());
    // The published value over the fixture's bytes: closed.
    let (status, answer) = post(&[("x-hub-signature-256", published)], &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(coveralls.requests().len(), 1);
}

#[test]
fn a_re_run_is_a_new_close_and_a_redelivery_a_duplicate() {
    let (coveralls, receiver) = closing();
    let first = fixture("github_workflow_run_completed.json");
    let (status, answer) = receiver.github(SECRET, "workflow_run", &first);
    assert_eq!(
        (status, &answer["attempt"]),
        (200, &value!("1")),
        "{answer}"
    );
    // The same delivery again (GitHub's "Redeliver"): closed once.
    let (status, answer) = receiver.github(SECRET, "workflow_run", &first);
    assert_eq!(
        (status, &answer["duplicate"]),
        (200, &value!(true)),
        "{answer}"
    );
    assert_eq!(coveralls.requests().len(), 1);
    // "Re-run jobs": the same run id, attempt 2, a close of its own.
    let rerun = workflow_run(|event| event["workflow_run"]["run_attempt"] = 2.into());
    let (status, answer) = receiver.github(SECRET, "workflow_run", &rerun);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (
            &answer["build_num"],
            &answer["attempt"],
            answer.get("duplicate")
        ),
        (&value!(RUN), &value!("2"), None)
    );
    let sent = coveralls.requests();
    assert_eq!(sent.len(), 2);
    let second = sent[1].json();
    assert_eq!(
        (&second["service_number"], &second["service_attempt"]),
        (&value!(RUN), &value!("2"))
    );
    // Attempt 2 delivered again, under another delivery id (an organisation's hook beside
    // the repository's): still a duplicate.
    let (status, answer) = receiver.post(
        "/github",
        &[
            ("x-github-event", "workflow_run"),
            ("x-github-delivery", "another-delivery"),
            (
                "x-hub-signature-256",
                &format!("sha256={}", sign(SECRET, &rerun)),
            ),
        ],
        &rerun,
    );
    assert_eq!(
        (status, &answer["duplicate"]),
        (200, &value!(true)),
        "{answer}"
    );
    assert_eq!(coveralls.requests().len(), 2);
}

#[test]
fn only_a_completed_run_closes_never_a_status_alone() {
    let (coveralls, receiver) = closing();
    // `requested`, with the run's status "completed" and a conclusion: not a completion.
    let requested = fixture("github_workflow_run_requested_with_conclusion.json");
    let (status, answer) = receiver.github(SECRET, "workflow_run", &requested);
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        answer["ignored"],
        "workflow_run requested: builds close on completed"
    );
    let in_progress = workflow_run(|event| event["action"] = "in_progress".into());
    let (status, answer) = receiver.github(SECRET, "workflow_run", &in_progress);
    assert_eq!(status, 202, "{answer}");
    // A completed run's body under another event's header: that event, ignored.
    let completed = fixture("github_workflow_run_completed.json");
    for event in ["workflow_job", "check_suite", "push"] {
        let (status, answer) = receiver.github(SECRET, event, &completed);
        assert_eq!(status, 202, "{event}: {answer}");
        assert_eq!(
            answer["ignored"],
            format!("event {event} is not one that closes a build (expected workflow_run)")
        );
    }
    let (status, answer) = receiver.post(
        "/github",
        &[(
            "x-hub-signature-256",
            &format!("sha256={}", sign(SECRET, &completed)),
        )],
        &completed,
    );
    assert_eq!(
        (status, error(&answer)),
        (400, "missing X-GitHub-Event header")
    );
    // A ping is answered, once signed.
    let ping = fixture("github_ping.json");
    let (status, answer) = receiver.github(SECRET, "ping", &ping);
    assert_eq!(
        (status, &answer["event"]),
        (200, &value!("ping")),
        "{answer}"
    );
    let (status, _) = receiver.github("wrong", "ping", &ping);
    assert_eq!(status, 401);
    assert!(coveralls.requests().is_empty());
}

#[test]
fn conclusions_close_by_default_where_jobs_ran_and_as_a_project_says() {
    let (coveralls, receiver) = closing();
    let concluded = |conclusion: &str, id: u64| {
        workflow_run(|event| {
            event["workflow_run"]["conclusion"] = conclusion.into();
            event["workflow_run"]["id"] = id.into();
        })
    };
    for (id, conclusion) in (1..).zip(["skipped", "startup_failure", "action_required", "neutral"])
    {
        let (status, answer) = receiver.github(SECRET, "workflow_run", &concluded(conclusion, id));
        assert_eq!(status, 202, "{conclusion}: {answer}");
        assert_eq!(
            answer["ignored"],
            format!(
                "conclusion \"{conclusion}\" does not close a build (expected one of success, \
                 failure, cancelled, timed_out)"
            )
        );
    }
    assert!(coveralls.requests().is_empty());
    for (id, conclusion) in (10..).zip(["success", "failure", "cancelled", "timed_out"]) {
        let (status, answer) = receiver.github(SECRET, "workflow_run", &concluded(conclusion, id));
        assert_eq!(status, 200, "{conclusion}: {answer}");
    }
    assert_eq!(coveralls.requests().len(), 4);

    // A project that names its statuses closes on those alone.
    let (coveralls, receiver) = github(&projects(
        "workflows = [\"test\"]\nstatuses = [\"success\", \"skipped\"]",
    ));
    let (status, answer) = receiver.github(SECRET, "workflow_run", &concluded("failure", 1));
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = receiver.github(SECRET, "workflow_run", &concluded("skipped", 2));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(coveralls.requests().len(), 1);
}

#[test]
fn other_workflows_and_other_repositories_close_nothing() {
    let (coveralls, receiver) = closing();
    let lint = workflow_run(|event| {
        event["workflow"]["name"] = "lint".into();
        event["workflow_run"]["path"] = ".github/workflows/lint.yml".into();
    });
    let (status, answer) = receiver.github(SECRET, "workflow_run", &lint);
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        answer["ignored"],
        "workflow lint (.github/workflows/lint.yml) does not close a build (expected one of test)"
    );
    let elsewhere =
        workflow_run(|event| event["repository"]["full_name"] = "octo-org/other".into());
    let (status, answer) = receiver.github(SECRET, "workflow_run", &elsewhere);
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        answer["ignored"],
        "no project is configured for GitHub repository octo-org/other"
    );
    assert!(coveralls.requests().is_empty());
}

#[test]
fn a_workflow_is_named_by_its_path_and_in_older_payloads_by_the_workflow_s() {
    let (coveralls, receiver) = github(&projects(
        r#"workflows = [".github/workflows/syntax.yml", ".github/workflows/test.yml"]"#,
    ));
    let (status, answer) = receiver.github(
        SECRET,
        "workflow_run",
        &fixture("github_workflow_run_completed.json"),
    );
    assert_eq!(status, 200, "by workflow_run.path: {answer}");
    // GitHub's documented example of 2023: no workflow_run.path, only workflow.path; its run
    // "completed" with the status "queued" and no conclusion, which closes nothing.
    let older = fixture("github_workflow_run_docs_example_2023.json");
    let mut older: Value = serde_json::from_slice(&older).unwrap();
    assert!(older["workflow_run"].get("path").is_none());
    older["repository"]["full_name"] = "octo-org/octo-repo".into();
    let (status, answer) = receiver.github(SECRET, "workflow_run", older.to_string().as_bytes());
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        answer["ignored"],
        "conclusion \"\" does not close a build (expected one of success, failure, cancelled, \
         timed_out)"
    );
    older["workflow_run"]["conclusion"] = "success".into();
    let (status, answer) = receiver.github(SECRET, "workflow_run", older.to_string().as_bytes());
    assert_eq!(status, 200, "by workflow.path: {answer}");
    assert_eq!(answer["build_num"], "1589141559");
    assert_eq!(coveralls.requests().len(), 2);
}

#[test]
fn a_form_body_is_read_and_signed_over_the_raw_form() {
    let (coveralls, receiver) = closing();
    let json_body = fixture("github_workflow_run_completed.json");
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", std::str::from_utf8(&json_body).unwrap())
        .finish();
    let post = |signed: &[u8]| {
        let signature = format!("sha256={}", sign(SECRET, signed));
        let headers = [
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-github-event", "workflow_run"),
            ("x-hub-signature-256", signature.as_str()),
        ];
        receiver.post("/github", &headers, form.as_bytes())
    };
    // Signed over the JSON inside rather than the bytes sent: refused.
    let (status, answer) = post(&json_body);
    assert_eq!(status, 401, "{answer}");
    let (status, answer) = post(form.as_bytes());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(coveralls.only_request().json()["service_number"], RUN);
    // A form without the field: malformed.
    let (status, answer) = receiver.post(
        "/github",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-github-event", "workflow_run"),
            (
                "x-hub-signature-256",
                &format!("sha256={}", sign(SECRET, b"other=1")),
            ),
        ],
        b"other=1",
    );
    assert_eq!(status, 400);
    assert_eq!(
        error(&answer),
        "malformed GitHub event: no form field \"payload\""
    );
}

#[test]
fn malformed_events_are_refused() {
    let (coveralls, receiver) = closing();
    let (status, answer) = receiver.github(SECRET, "workflow_run", b"{\"action\": ");
    assert_eq!(status, 400, "{answer}");
    assert!(
        error(&answer).starts_with("malformed GitHub event: "),
        "{answer}"
    );
    let (status, answer) = receiver.github(SECRET, "workflow_run", br#"{"action":"completed"}"#);
    assert_eq!(
        (status, error(&answer)),
        (
            400,
            "malformed GitHub event: a completed workflow_run without its workflow_run"
        )
    );
    let id_as_text = workflow_run(|event| event["workflow_run"]["id"] = "289782451".into());
    let (status, answer) = receiver.github(SECRET, "workflow_run", &id_as_text);
    assert_eq!(status, 400, "{answer}");
    assert!(coveralls.requests().is_empty());
}

#[test]
fn a_github_project_must_name_its_workflows() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("projects.toml");
    let toml =
        "[[project]]\nname = \"octo\"\ngithub_repository = \"o/r\"\nrepo_token = \"t-in-file\"\n";
    std::fs::write(&config, toml).unwrap();
    let start = |args: &[&str], env: &[(&str, &str)]| {
        let output = binary()
            .envs(env.iter().copied())
            .env("COVERALLS_FINISH_STATE", dir.path().join("state.sqlite3"))
            .arg("serve")
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            !stderr.contains(SECRET) && !stderr.contains(TOKEN),
            "{stderr}"
        );
        (output.status.code(), stderr)
    };
    let (code, stderr) = start(
        &["--config", config.to_str().unwrap()],
        &[("GITHUB_WEBHOOK_SECRET", SECRET)],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "projects.toml: project \"octo\": workflows: missing; a GitHub project must name \
             the workflows"
        ),
        "{stderr}"
    );
    // Without a projects file, the one project from the environment names none.
    let env = [
        ("GITHUB_WEBHOOK_SECRET", SECRET),
        ("COVERALLS_REPO_TOKEN", TOKEN),
    ];
    let (code, stderr) = start(&[], &env);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "GITHUB_WEBHOOK_SECRET is set without --config: a GitHub project must name the \
             workflows"
        ),
        "{stderr}"
    );
}

#[test]
fn a_25_mb_body_and_a_megabyte_of_signature_are_refused_at_once() {
    let (coveralls, receiver) = closing();
    // GitHub's payloads go up to 25 MB; the receiver reads none over 1 MiB.
    let (status, closed) = answer_at_once(
        &receiver,
        "/github",
        25 << 20,
        &[("x-github-event", "workflow_run")],
    );
    assert_eq!((status, closed), (413, true));
    // A signature header longer than any honest one: 400 before any HMAC, and a megabyte of
    // it past what a request head may hold, 431 from the HTTP layer.
    let body = fixture("github_workflow_run_completed.json");
    let long = long_header("sha256=", 15 << 10);
    let started = Instant::now();
    let (status, answer) = receiver.post("/github", &[("x-hub-signature-256", &long)], &body);
    assert_eq!(
        (status, error(&answer)),
        (400, "x-hub-signature-256 is over 1024 bytes")
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let megabyte = long_header("sha256=", 1 << 20);
    let (status, _) = answer_at_once(
        &receiver,
        "/github",
        0,
        &[("x-hub-signature-256", &megabyte)],
    );
    assert_eq!(status, 431);
    // And it goes on closing.
    let (status, answer) = receiver.github(SECRET, "workflow_run", &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(coveralls.requests().len(), 1);
}
