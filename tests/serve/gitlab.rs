//! `POST /gitlab`: GitLab's Pipeline Hooks, with the hook's secret token, its signing token
//! (Standard Webhooks) or both: what closes a build (a pipeline's end), what does not, and the
//! route under attack.

use std::time::{Duration, Instant};

use serde_json::{Value, json as value};

use crate::receiver::{
    GitLabHook, Receiver, delivery_id, fixture, now, pipeline_hook, sign_standard,
};
use crate::support::{CLOSED, Server, binary, json};
use crate::{answer_at_once, closing as circleci_closing, error, long_header};

const TOKEN: &str = "gitlab-hook-token-0b7d";
/// The key of webhook_signature_vectors.json's vector over the fixture.
const SIGNING: &str = "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
const REPO_TOKEN: &str = "gitlab-test-repo-token-77c1";
/// The fixture's pipeline: its iid (the build), its id, its commit.
const IID: &str = "3";
const SHA: &str = "bcbb5ec396a2c0f828686f14fac9b80b780504f2";

/// The fixture's project, by its path in another case; `extra` lines added to its table.
fn projects(extra: &str) -> String {
    format!(
        r#"
endpoint = "{{endpoint}}"
[[project]]
name = "gitlab-test"
gitlab_project = "GitLab-Org/GitLab-Test"
repo_token_env = "GITLAB_TEST_TOKEN"
carryforward = ["unit"]
{extra}
"#
    )
}

/// A receiver of `projects` for GitLab alone with these of its variables, in front of a
/// Coveralls that closes every build.
fn gitlab(projects: &str, vars: &[(&str, &str)]) -> (Server, Receiver) {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let mut env = vec![("GITLAB_TEST_TOKEN", REPO_TOKEN)];
    env.extend_from_slice(vars);
    let receiver = Receiver::with_projects(&coveralls, projects, &env);
    (coveralls, receiver)
}

/// With the hook's secret token alone.
fn with_token() -> (Server, Receiver) {
    gitlab(&projects(""), &[("GITLAB_WEBHOOK_SECRET", TOKEN)])
}

const TOKEN_ONLY: GitLabHook = GitLabHook {
    token: Some(TOKEN),
    signing: None,
};

/// A hook signed now with the signing token, and no secret token.
fn signed_now() -> GitLabHook<'static> {
    GitLabHook {
        token: None,
        signing: Some((SIGNING, now())),
    }
}

/// The fixture with another pipeline (`iid`, and an `id` beside it) and `status`.
fn pipeline(iid: u64, status: &str) -> Vec<u8> {
    pipeline_hook(|hook| {
        hook["object_attributes"]["iid"] = iid.into();
        hook["object_attributes"]["id"] = (iid + 1000).into();
        hook["object_attributes"]["status"] = status.into();
    })
}

#[test]
fn a_pipeline_that_ended_closes_its_build_with_what_gitlab_tells() {
    let (coveralls, receiver) = with_token();
    let (status, answer) = receiver.gitlab(TOKEN_ONLY, &fixture("gitlab_pipeline_hook.json"));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["closed"], &answer["build_num"]),
        (&value!(true), &value!(IID))
    );
    assert_eq!(
        answer.get("attempt"),
        None,
        "a retry is a duplicate, not an attempt"
    );
    // The official reporter's body, field for field, and nothing else: no attempt, no
    // repo_name (a GitLab token is a repo token).
    assert_eq!(
        coveralls.only_request().json(),
        value!({
            "repo_token": REPO_TOKEN,
            "service_name": "gitlab-ci",
            "service_number": IID,
            "commit_sha": SHA,
            "service_branch": "master",
            "service_pull_request": "1",
            "service_build_url": "http://example.com/gitlab-org/gitlab-test/-/pipelines/31",
            "carryforward": "unit",
            "git": {"branch": "master", "head": {"id": SHA}},
            "payload": {"build_num": IID, "status": "done"},
        })
    );
    // The start-up lines: the route on, and the project's ids.
    receiver.log_with("POST /gitlab: on");
    receiver.log_with("project gitlab-test: GitLab GitLab-Org/GitLab-Test");
    let line = receiver.log_line("POST /gitlab event=\"Pipeline Hook\"");
    assert!(
        line.contains(&format!(
            "project=gitlab-test build={IID} status=200 outcome=\"closed: 3 jobs\""
        )),
        "{line}"
    );
}

#[test]
fn the_secret_token_must_be_given_and_equal() {
    let (coveralls, receiver) = with_token();
    let body = fixture("gitlab_pipeline_hook.json");
    let wrong = format!("{TOKEN}x");
    for (token, expected) in [
        (
            None,
            "missing X-Gitlab-Token header (the hook's secret token)",
        ),
        (
            Some("nope"),
            "wrong X-Gitlab-Token (the hook's secret token)",
        ),
        (
            Some(wrong.as_str()),
            "wrong X-Gitlab-Token (the hook's secret token)",
        ),
        (
            Some(&TOKEN[1..]),
            "wrong X-Gitlab-Token (the hook's secret token)",
        ),
    ] {
        let hook = GitLabHook {
            token,
            signing: None,
        };
        let (status, answer) = receiver.gitlab(hook, &body);
        assert_eq!((status, error(&answer)), (401, expected), "{token:?}");
    }
    // A signature is no token: with the token set, a signed hook without it is refused.
    let (status, _) = receiver.gitlab(signed_now(), &body);
    assert_eq!(status, 401);
    assert!(coveralls.requests().is_empty());
}

/// A receiver that checks signatures alone.
fn with_signing_token() -> (Server, Receiver) {
    gitlab(&projects(""), &[("GITLAB_WEBHOOK_SIGNING_TOKEN", SIGNING)])
}

#[test]
fn the_published_signature_is_a_replay_now_and_the_same_hook_signed_now_closes() {
    let (coveralls, receiver) = with_signing_token();
    let body = fixture("gitlab_pipeline_hook.json");
    // The published vector over the fixture's bytes: authentic, but signed long ago.
    let vectors: Value =
        serde_json::from_slice(&fixture("webhook_signature_vectors.json")).unwrap();
    let vector = &vectors["gitlab_signing_token_standard_webhooks"][2];
    assert_eq!(
        (vector["secret"].as_str(), vector["body_file"].as_str()),
        (Some(SIGNING), Some("gitlab_pipeline_hook.json"))
    );
    let at = vector["webhook_timestamp"].as_u64().unwrap();
    let id = vector["webhook_id"].as_str().unwrap();
    let at_text = at.to_string();
    let published = [
        ("webhook-id", id),
        ("webhook-timestamp", at_text.as_str()),
        ("webhook-signature", vector["value"].as_str().unwrap()),
    ];
    assert_eq!(sign_standard(SIGNING, id, at, &body), published[2].1);
    let (status, answer) = receiver.post("/gitlab", &published, &body);
    assert_eq!(status, 401, "{answer}");
    assert!(
        error(&answer).contains("seconds from now, over 300: a replay"),
        "{answer}"
    );
    assert!(coveralls.requests().is_empty());
    let (status, answer) = receiver.gitlab(signed_now(), &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(coveralls.requests().len(), 1);
}

#[test]
fn a_signed_hook_closes_and_wrongly_keyed_old_or_changed_ones_do_not() {
    let (coveralls, receiver) = with_signing_token();
    let body = fixture("gitlab_pipeline_hook.json");
    let refused = |hook: GitLabHook, body: &[u8], expected: &str| {
        let (status, answer) = receiver.gitlab(hook, body);
        assert_eq!(status, 401, "{answer}");
        assert!(error(&answer).contains(expected), "{answer}");
    };
    let hook = |signing: &'static str, at: u64| GitLabHook {
        token: None,
        signing: Some((signing, at)),
    };
    // Another hook's signing token; six minutes old, or ahead; a token and no signature.
    let other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let no_match = "webhook-signature does not match the body";
    refused(hook(other, now()), &body, no_match);
    refused(
        hook(SIGNING, now() - 360),
        &body,
        "seconds from now, over 300",
    );
    refused(
        hook(SIGNING, now() + 360),
        &body,
        "seconds from now, over 300",
    );
    refused(TOKEN_ONLY, &body, "missing webhook-signature header");
    // Changed after signing.
    let at = now();
    let id = delivery_id(&body);
    let headers = [
        ("webhook-id", id.clone()),
        ("webhook-timestamp", at.to_string()),
        ("webhook-signature", sign_standard(SIGNING, &id, at, &body)),
    ];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (status, answer) = receiver.post("/gitlab", &headers, &[&body[..], b" "].concat());
    assert_eq!((status, error(&answer)), (401, no_match));
    assert!(coveralls.requests().is_empty());
    // Signed four minutes ago, or now: closed.
    let (status, answer) = receiver.gitlab(hook(SIGNING, now() - 240), &body);
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = receiver.gitlab(signed_now(), &pipeline(4, "success"));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(coveralls.requests().len(), 2);
}

#[test]
fn with_both_tokens_both_must_hold() {
    let vars = [
        ("GITLAB_WEBHOOK_SECRET", TOKEN),
        ("GITLAB_WEBHOOK_SIGNING_TOKEN", SIGNING),
    ];
    let (coveralls, receiver) = gitlab(&projects(""), &vars);
    let body = fixture("gitlab_pipeline_hook.json");
    let other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    for hook in [
        GitLabHook {
            token: Some(TOKEN),
            signing: None,
        },
        GitLabHook {
            token: Some(TOKEN),
            signing: Some((other, now())),
        },
        GitLabHook {
            token: None,
            signing: Some((SIGNING, now())),
        },
        GitLabHook {
            token: Some("nope"),
            signing: Some((SIGNING, now())),
        },
    ] {
        let (status, answer) = receiver.gitlab(hook, &body);
        assert_eq!(status, 401, "{answer}");
    }
    assert!(coveralls.requests().is_empty());
    let both = GitLabHook {
        token: Some(TOKEN),
        signing: Some((SIGNING, now())),
    };
    let (status, answer) = receiver.gitlab(both, &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(coveralls.requests().len(), 1);
}

#[test]
fn only_a_pipeline_s_end_closes_and_a_retried_job_is_a_duplicate() {
    let (coveralls, receiver) = with_token();
    for (iid, status) in (10..).zip(["created", "pending", "running", "skipped", "manual"]) {
        let (code, answer) = receiver.gitlab(TOKEN_ONLY, &pipeline(iid, status));
        assert_eq!(code, 202, "{status}: {answer}");
        assert_eq!(
            answer["ignored"],
            format!(
                "status \"{status}\" does not close a build (expected one of success, failed, \
                 canceled)"
            )
        );
    }
    assert!(coveralls.requests().is_empty());
    for (iid, status) in (20..).zip(["success", "failed", "canceled"]) {
        let (code, answer) = receiver.gitlab(TOKEN_ONLY, &pipeline(iid, status));
        assert_eq!(code, 200, "{status}: {answer}");
        assert_eq!(answer["build_num"], iid.to_string());
    }
    assert_eq!(coveralls.requests().len(), 3);
    // A job retried in the ended pipeline: GitLab sends its end again, maybe with another
    // status. The same build: a duplicate, closed once.
    let (status, answer) = receiver.gitlab(TOKEN_ONLY, &pipeline(21, "success"));
    assert_eq!(
        (status, &answer["duplicate"]),
        (200, &value!(true)),
        "{answer}"
    );
    assert_eq!(coveralls.requests().len(), 3);

    // A project that names its statuses closes on those alone.
    let (coveralls, receiver) = gitlab(
        &projects("statuses = [\"success\", \"skipped\"]"),
        &[("GITLAB_WEBHOOK_SECRET", TOKEN)],
    );
    let (status, _) = receiver.gitlab(TOKEN_ONLY, &pipeline(1, "failed"));
    assert_eq!(status, 202);
    let (status, answer) = receiver.gitlab(TOKEN_ONLY, &pipeline(2, "skipped"));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(coveralls.requests().len(), 1);
}

#[test]
fn a_tag_sends_no_branch_and_a_project_may_close_by_the_pipeline_s_id() {
    let toml = r#"
endpoint = "{endpoint}"
[[project]]
name = "by-id"
gitlab_project_id = 1
gitlab_build_number = "id"
repo_token_env = "GITLAB_TEST_TOKEN"
"#;
    let (coveralls, receiver) = gitlab(toml, &[("GITLAB_WEBHOOK_SECRET", TOKEN)]);
    let tag = pipeline_hook(|hook| {
        hook["object_attributes"]["tag"] = true.into();
        hook["object_attributes"]["ref"] = "v1.2.0".into();
        hook["merge_request"] = Value::Null;
    });
    let (status, answer) = receiver.gitlab(TOKEN_ONLY, &tag);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["project"].as_str(), answer["build_num"].as_str()),
        (Some("by-id"), Some("31"))
    );
    let sent = coveralls.only_request().json();
    assert_eq!(sent["service_number"], "31");
    assert_eq!(
        (sent.get("service_branch"), sent.get("service_pull_request")),
        (None, None),
        "{sent}"
    );
    assert_eq!(sent["git"], value!({"head": {"id": SHA}}));
}

#[test]
fn what_is_not_an_authentication_failure_is_answered_2xx() {
    let (coveralls, receiver) = with_token();
    let cases: [(Vec<u8>, &str); 5] = [
        (b"{\"object_kind\": ".to_vec(), "malformed GitLab hook: "),
        (b"[1, 2]".to_vec(), "malformed GitLab hook: "),
        (
            pipeline_hook(|hook| hook["object_kind"] = "push".into()),
            "object_kind push is not one that closes a build (expected pipeline)",
        ),
        (
            pipeline_hook(|hook| hook["object_attributes"]["iid"] = Value::Null),
            "malformed GitLab hook: no object_attributes.iid",
        ),
        (
            pipeline_hook(|hook| {
                hook["project"]["path_with_namespace"] = "else/where".into();
                hook["project"]["id"] = 99.into();
            }),
            "no project is configured for GitLab project else/where (id 99)",
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = receiver.gitlab(TOKEN_ONLY, &body);
        assert_eq!(status, 202, "{answer}");
        let ignored = answer["ignored"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"));
        assert!(ignored.starts_with(expected), "{answer}");
    }
    assert!(coveralls.requests().is_empty());
}

#[test]
fn every_gitlab_fixture_closes_its_pipeline() {
    let (coveralls, receiver) = with_token();
    for (name, iid) in [
        ("gitlab_pipeline_hook.json", "3"),
        ("gitlab_pipeline_hook_docs_ja_jp_newer.json", "3"),
        ("gitlab_pipeline_hook_gitlab4j.json", "1"),
    ] {
        let (status, answer) = receiver.gitlab(TOKEN_ONLY, &fixture(name));
        assert!(status == 200, "{name}: {status} {answer}");
        assert_eq!(answer["build_num"], iid, "{name}");
    }
    // The two of iid 3 are the same pipeline: the second a duplicate.
    assert_eq!(coveralls.requests().len(), 2);
}

#[test]
fn without_a_projects_file_the_one_project_takes_gitlab_s_hooks() {
    let (coveralls, receiver) = circleci_closing();
    receiver.log_with(
        "POST /gitlab: off (neither GITLAB_WEBHOOK_SECRET nor GITLAB_WEBHOOK_SIGNING_TOKEN is set)",
    );
    let (status, answer) = receiver.gitlab(TOKEN_ONLY, &fixture("gitlab_pipeline_hook.json"));
    assert_eq!(status, 404, "{answer}");
    assert_eq!(
        error(&answer),
        "the GitLab receiver is off: neither GITLAB_WEBHOOK_SECRET nor \
         GITLAB_WEBHOOK_SIGNING_TOKEN is set"
    );
    drop(receiver);
    let receiver = Receiver::in_front_of(&coveralls, &[("GITLAB_WEBHOOK_SIGNING_TOKEN", SIGNING)]);
    let (status, answer) = receiver.gitlab(signed_now(), &fixture("gitlab_pipeline_hook.json"));
    assert_eq!(
        (status, answer["project"].as_str()),
        (200, Some("default")),
        "{answer}"
    );
    let sent = coveralls.only_request().json();
    assert_eq!(
        (sent["service_name"].as_str(), sent["carryforward"].as_str()),
        (Some("gitlab-ci"), Some("unit,e2e"))
    );
}

#[test]
fn a_short_token_a_signing_token_that_is_no_key_or_a_wrong_build_number_stop_it_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("projects.toml");
    let toml = "[[project]]\nname = \"g\"\ngitlab_project = \"a/b\"\nrepo_token = \"t-in-file\"\n\
                gitlab_build_number = \"number\"\n";
    std::fs::write(&config, toml).unwrap();
    let start = |args: &[&str], env: &[(&str, &str)]| {
        let output = binary()
            .envs(env.iter().copied())
            .env("COVERALLS_REPO_TOKEN", REPO_TOKEN)
            .env("COVERALLS_FINISH_STATE", dir.path().join("state.sqlite3"))
            .arg("serve")
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            !stderr.contains("glpat-not-a-key") && !stderr.contains(REPO_TOKEN),
            "{stderr}"
        );
        (output.status.code(), stderr)
    };
    let (code, stderr) = start(&[], &[("GITLAB_WEBHOOK_SECRET", "short-token")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("GITLAB_WEBHOOK_SECRET has 11 bytes; expected at least 16"),
        "{stderr}"
    );
    assert!(!stderr.contains("short-token"), "{stderr}");
    let (code, stderr) = start(&[], &[("GITLAB_WEBHOOK_SIGNING_TOKEN", "glpat-not-a-key")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "GITLAB_WEBHOOK_SIGNING_TOKEN is not a signing token: expected whsec_ and a key in \
             base64"
        ),
        "{stderr}"
    );
    let (code, stderr) = start(
        &["--config", config.to_str().unwrap()],
        &[("GITLAB_WEBHOOK_SECRET", TOKEN)],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("projects.toml")
            && stderr.contains("unknown variant `number`, expected `iid` or `id`"),
        "{stderr}"
    );
}

#[test]
fn a_25_mb_body_and_a_megabyte_of_signature_are_refused_at_once() {
    let vars = [
        ("GITLAB_WEBHOOK_SECRET", TOKEN),
        ("GITLAB_WEBHOOK_SIGNING_TOKEN", SIGNING),
    ];
    let (coveralls, receiver) = gitlab(&projects(""), &vars);
    let (status, closed) =
        answer_at_once(&receiver, "/gitlab", 25 << 20, &[("x-gitlab-token", TOKEN)]);
    assert_eq!((status, closed), (413, true));
    // A signature or a token longer than any honest one: 400 or 401 before any HMAC, and a
    // megabyte of either, past what a request head may hold, 431 from the HTTP layer.
    let body = fixture("gitlab_pipeline_hook.json");
    let long = long_header("v1,AAAA ", 15 << 10);
    let at = now().to_string();
    let started = Instant::now();
    let headers = [
        ("x-gitlab-token", TOKEN),
        ("webhook-id", "msg_1"),
        ("webhook-timestamp", at.as_str()),
        ("webhook-signature", long.as_str()),
    ];
    let (status, answer) = receiver.post("/gitlab", &headers, &body);
    assert_eq!(
        (status, error(&answer)),
        (400, "webhook-signature is over 1024 bytes")
    );
    let long_token = long_header("t", 15 << 10);
    let (status, answer) = receiver.post("/gitlab", &[("x-gitlab-token", &long_token)], &body);
    assert_eq!(
        (status, error(&answer)),
        (401, "wrong X-Gitlab-Token (the hook's secret token)")
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let megabyte = long_header("v1,AAAA ", 1 << 20);
    let (status, _) = answer_at_once(&receiver, "/gitlab", 0, &[("webhook-signature", &megabyte)]);
    assert_eq!(status, 431);
    let (status, answer) = receiver.gitlab(
        GitLabHook {
            token: Some(TOKEN),
            signing: Some((SIGNING, now())),
        },
        &body,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(coveralls.requests().len(), 1);
}
