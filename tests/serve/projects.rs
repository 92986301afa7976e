//! The receiver's settings: projects from a file or the environment, and what stops it at
//! start.

use crate::receiver::{MAGNUM, REPO_TOKEN as TOKEN, Receiver, SECRET, fixture, workflow_event};
use crate::support::{CLOSED, Server, Vars, binary, json};

const TWO_PROJECTS: &str = r#"
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

/// A receiver of [`TWO_PROJECTS`] in front of `coveralls`.
fn two_projects(coveralls: &Server) -> Receiver {
    let env = [
        ("CIRCLECI_WEBHOOK_SECRET", SECRET),
        ("MAGNUM_HOOK_SECRET", MAGNUM),
        ("API_TOKEN", "api-token-123"),
    ];
    Receiver::with_projects(coveralls, TWO_PROJECTS, &env).secret("web-token-in-file")
}

#[test]
fn deliveries_find_their_project_by_slug_project_id_or_magnum_id() {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let receiver = two_projects(&coveralls);
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
    let (status, answer) = receiver.magnum(MAGNUM, &[], &fixture("magnum_hook.json"));
    assert_eq!(
        (status, answer["project"].as_str()),
        (200, Some("web")),
        "{answer}"
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
fn a_project_s_other_workflows_and_nobody_s_project_are_ignored() {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let receiver = two_projects(&coveralls);
    // A workflow the project does not close on.
    let mut api: serde_json::Value =
        serde_json::from_slice(&workflow_event("e-1", "wf-api-deploy", "gh/acme/api")).unwrap();
    api["workflow"]["name"] = "deploy".into();
    let (status, answer) =
        receiver.circleci(SECRET, "workflow-completed", api.to_string().as_bytes());
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        answer["ignored"],
        "workflow \"deploy\" does not close a build (expected one of test)"
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
            "none of CIRCLECI_WEBHOOK_SECRET, MAGNUM_HOOK_SECRET, GITHUB_WEBHOOK_SECRET, \
             GITLAB_WEBHOOK_SECRET or GITLAB_WEBHOOK_SIGNING_TOKEN is set",
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
        assert_stops_at_start(&args, env, expected);
    }
}

/// `serve` with these arguments and variables exits 2, saying `expected`, and no secret.
fn assert_stops_at_start(args: &[&str], env: Vars, expected: &str) {
    // A state file of the test's own: one that starts far enough opens it.
    let state = tempfile::tempdir().unwrap();
    let output = binary()
        .envs(env.iter().copied())
        .env("COVERALLS_FINISH_STATE", state.path().join("state.sqlite3"))
        .arg("serve")
        .args(args)
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

#[test]
fn the_receiver_says_when_a_project_closed_with_too_few_jobs() {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let projects = r#"
endpoint = "{endpoint}"
[[project]]
name = "api"
circleci_slug = "gh/circleci/webhook-service"
repo_token_env = "API_TOKEN"
expected_jobs = 6
"#;
    let env = [("CIRCLECI_WEBHOOK_SECRET", SECRET), ("API_TOKEN", TOKEN)];
    let receiver = Receiver::with_projects(&coveralls, projects, &env);
    let body = fixture("circleci_workflow_completed_github_oauth.json");
    let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body);
    assert_eq!(status, 200, "a redelivery cannot help: {answer}");
    assert_eq!(
        (answer["jobs"].as_u64(), answer["expected_jobs"].as_u64()),
        (Some(3), Some(6))
    );
    let line = receiver.log_line("POST /circleci event=workflow-completed");
    assert!(
        line.contains(r#"outcome="closed with too few jobs: 3 of 6 expected""#),
        "{line}"
    );
}
