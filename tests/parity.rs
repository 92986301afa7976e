//! What the close sends, as the official reporter sends it, worked out from each CI's
//! environment without a checkout; and errors that say what to do.

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::{CLOSED, Finish, Recorded, Reply, Server, TOKEN, Vars, finish, json, with_header};

/// A close from `dir` (not a git work tree), with a `PATH` that holds no git.
fn outside_git(dir: &Path) -> Finish {
    finish().current_dir(dir).env("PATH", dir.to_str().unwrap())
}

fn fixture_path(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

const SHA: &str = "9fceb02d0ae598e95dc970b74767f19372d61af8";

#[test]
fn each_ci_sends_what_the_official_reporter_sends() {
    let cases: Vec<(Vars, Value)> = vec![
        (
            &[
                ("GITHUB_ACTIONS", "true"),
                ("GITHUB_RUN_ID", "11"),
                ("GITHUB_RUN_ATTEMPT", "2"),
                ("GITHUB_REPOSITORY", "octo/cat"),
                ("GITHUB_SHA", SHA),
                ("GITHUB_HEAD_REF", "fix-parser"),
                ("GITHUB_REF_NAME", "42/merge"),
                ("GITHUB_REF", "refs/pull/42/merge"),
                ("GITHUB_SERVER_URL", "https://github.com"),
                ("GITHUB_JOB", "finish"),
            ],
            json!({
                "repo_name": "octo/cat", "service_name": "github", "service_number": "11",
                "service_job_id": "finish", "service_attempt": "2",
                "service_branch": "fix-parser", "service_pull_request": "42",
                "service_build_url": "https://github.com/octo/cat/actions/runs/11",
                "commit_sha": SHA, "git": {"branch": "fix-parser", "head": {"id": SHA}},
            }),
        ),
        (
            &[
                ("CIRCLECI", "true"),
                ("CIRCLE_WORKFLOW_ID", "wf-7"),
                ("CIRCLE_BUILD_NUM", "3"),
                ("CIRCLE_SHA1", SHA),
                ("CIRCLE_BRANCH", "main"),
                ("CI_PULL_REQUEST", "https://github.com/octo/cat/pull/17"),
                ("CIRCLE_BUILD_URL", "https://circleci.com/gh/octo/cat/3"),
            ],
            json!({
                "service_name": "circleci", "service_number": "wf-7", "service_job_id": "3",
                "service_branch": "main", "service_pull_request": "17",
                "service_build_url": "https://circleci.com/gh/octo/cat/3",
                "commit_sha": SHA, "git": {"branch": "main", "head": {"id": SHA}},
            }),
        ),
        (
            &[
                ("GITLAB_CI", "true"),
                ("CI_PIPELINE_IID", "12"),
                ("CI_COMMIT_SHA", SHA),
                ("CI_COMMIT_REF_NAME", "main"),
                ("CI_MERGE_REQUEST_IID", "5"),
                (
                    "CI_PIPELINE_URL",
                    "https://gitlab.com/octo/cat/-/pipelines/99",
                ),
                ("CI_JOB_NAME", "coverage"),
                ("CI_COMMIT_AUTHOR", "Grace Hopper <grace@example.com>"),
                ("CI_COMMIT_MESSAGE", "Find the moth"),
            ],
            json!({
                "service_name": "gitlab-ci", "service_number": "12", "service_job_id": "coverage",
                "service_branch": "main", "service_pull_request": "5",
                "service_build_url": "https://gitlab.com/octo/cat/-/pipelines/99",
                "commit_sha": SHA,
                "git": {"branch": "main", "head": {
                    "id": SHA, "author_name": "Grace Hopper",
                    "author_email": "grace@example.com", "message": "Find the moth",
                }},
            }),
        ),
        (
            &[
                ("TRAVIS", "true"),
                ("TRAVIS_BUILD_NUMBER", "13"),
                ("TRAVIS_COMMIT", SHA),
                ("TRAVIS_BRANCH", "main"),
                ("TRAVIS_PULL_REQUEST", "false"),
                (
                    "TRAVIS_BUILD_WEB_URL",
                    "https://app.travis-ci.com/octo/cat/builds/1",
                ),
                ("TRAVIS_JOB_NUMBER", "13.1"),
            ],
            json!({
                "service_name": "travis-ci", "service_number": "13", "service_job_id": "13.1",
                "service_branch": "main",
                "service_build_url": "https://app.travis-ci.com/octo/cat/builds/1",
                "commit_sha": SHA, "git": {"branch": "main", "head": {"id": SHA}},
            }),
        ),
        (
            &[
                ("SEMAPHORE", "true"),
                ("SEMAPHORE_WORKFLOW_ID", "sem-14"),
                ("SEMAPHORE_GIT_SHA", SHA),
                ("SEMAPHORE_GIT_WORKING_BRANCH", "topic"),
                ("SEMAPHORE_GIT_PR_NUMBER", "8"),
                ("SEMAPHORE_JOB_ID", "job-1"),
            ],
            json!({
                "service_name": "semaphore", "service_number": "sem-14", "service_job_id": "job-1",
                "service_branch": "topic", "service_pull_request": "8",
                "commit_sha": SHA, "git": {"branch": "topic", "head": {"id": SHA}},
            }),
        ),
        (
            &[
                ("JENKINS_URL", "http://ci"),
                ("BUILD_NUMBER", "15"),
                ("GIT_COMMIT", SHA),
                ("CHANGE_BRANCH", "topic"),
                ("CHANGE_ID", "9"),
                ("BUILD_URL", "http://ci/job/cat/15/"),
                ("BUILD_ID", "15"),
            ],
            json!({
                "service_name": "jenkins", "service_number": "15", "service_job_id": "15",
                "service_branch": "topic", "service_pull_request": "9",
                "service_build_url": "http://ci/job/cat/15/",
                "commit_sha": SHA, "git": {"branch": "topic", "head": {"id": SHA}},
            }),
        ),
        (
            &[
                ("APPVEYOR", "True"),
                ("APPVEYOR_BUILD_VERSION", "1.0.16"),
                ("APPVEYOR_REPO_COMMIT", SHA),
                ("APPVEYOR_REPO_BRANCH", "main"),
                ("APPVEYOR_PULL_REQUEST_NUMBER", "3"),
                ("APPVEYOR_BUILD_ID", "777"),
            ],
            json!({
                "service_name": "appveyor", "service_number": "1.0.16", "service_job_id": "777",
                "service_branch": "main", "service_pull_request": "3",
                "commit_sha": SHA, "git": {"branch": "main", "head": {"id": SHA}},
            }),
        ),
        (
            &[
                ("MAGNUM", "true"),
                ("CI_BUILD_NUMBER", "130"),
                ("CI_COMMIT_ID", SHA),
                ("CI_BRANCH", "master"),
                ("CI_PULL_REQUEST", "https://example.com/octo/cat/pull/4/"),
                (
                    "CI_BUILD_URL",
                    "http://magnum-ci.com/projects/43/builds/1603",
                ),
                ("CI_JOB_ID", "1603"),
                ("CI_AUTHOR_NAME", "Dan"),
                ("GIT_AUTHOR_EMAIL", "dan@example.com"),
            ],
            json!({
                "service_name": "magnum", "service_number": "130", "service_job_id": "1603",
                "service_branch": "master", "service_pull_request": "4",
                "service_build_url": "http://magnum-ci.com/projects/43/builds/1603",
                "commit_sha": SHA,
                "git": {"branch": "master", "head": {
                    "id": SHA, "author_name": "Dan", "author_email": "dan@example.com",
                }},
            }),
        ),
        (
            &[
                ("CI_NAME", "woodpecker"),
                ("CI_BUILD_NUMBER", "18"),
                ("CI_COMMIT", SHA),
                ("CI_BRANCH", "main"),
            ],
            json!({
                "service_name": "woodpecker", "service_number": "18",
                "service_branch": "main",
                "commit_sha": SHA, "git": {"branch": "main", "head": {"id": SHA}},
            }),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (vars, expected) in cases {
        let server = Server::start(vec![json(200, CLOSED)]);
        let out = outside_git(dir.path())
            .env("COVERALLS_REPO_TOKEN", TOKEN)
            .env("COVERALLS_ENDPOINT", &server.url())
            .envs(vars)
            .run();
        assert_eq!(out.code, 0, "{vars:?}: {out:#?}");
        let mut expected = expected;
        expected["repo_token"] = TOKEN.into();
        let number = expected["service_number"].clone();
        expected["payload"] = json!({"build_num": number, "status": "done"});
        assert_eq!(server.only_request().json(), expected, "{vars:?}");
    }
}

#[test]
fn nothing_unknown_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(vec![json(200, CLOSED)]);
    let out = outside_git(dir.path()).against(&server).run();
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(
        server.only_request().json(),
        json!({
            "repo_token": TOKEN, "service_number": "42",
            "payload": {"build_num": "42", "status": "done"},
        })
    );
}

/// A GitHub push: the event payload gives the head commit's details; no git is asked.
#[test]
fn a_push_event_gives_the_head_commit_without_a_checkout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(vec![json(200, CLOSED)]);
    let out = outside_git(dir.path())
        .github()
        .env("COVERALLS_REPO_TOKEN", TOKEN)
        .env("COVERALLS_ENDPOINT", &server.url())
        .env("GITHUB_RUN_ID", "11")
        .env("GITHUB_SHA", SHA)
        .env("GITHUB_REF_NAME", "main")
        .env("GITHUB_EVENT_NAME", "push")
        .env("GITHUB_EVENT_PATH", &fixture_path("github_push_event.json"))
        .run();
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(
        server.only_request().json()["git"],
        json!({"branch": "main", "head": {
            "id": SHA,
            "author_name": "Mona Lisa", "author_email": "mona@example.com",
            "committer_name": "GitHub", "committer_email": "noreply@github.com",
            "message": "Fix the parser\n\nIt read one byte too many.",
        }})
    );
}

/// A pull request's event tells another commit's details (the merge commit is the one
/// tested): none are invented, and git is not on PATH to ask.
#[test]
fn a_pull_request_event_adds_no_details_of_another_commit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(vec![json(200, CLOSED)]);
    let out = outside_git(dir.path())
        .github()
        .env("COVERALLS_REPO_TOKEN", TOKEN)
        .env("COVERALLS_ENDPOINT", &server.url())
        .env("GITHUB_RUN_ID", "11")
        .env("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567")
        .env("GITHUB_HEAD_REF", "fix-parser")
        .env("GITHUB_REF", "refs/pull/42/merge")
        .env("GITHUB_EVENT_NAME", "pull_request")
        .env(
            "GITHUB_EVENT_PATH",
            &fixture_path("github_pull_request_from_fork_event.json"),
        )
        .env("COVERALLS_DEBUG", "true")
        .run();
    assert_eq!(out.code, 0, "{out:#?}");
    let sent = server.only_request().json();
    assert_eq!(
        sent["git"]["head"],
        json!({"id": "0123456789abcdef0123456789abcdef01234567"})
    );
    assert_eq!(sent["service_pull_request"], "42");
    assert!(
        out.stdout.contains("head commit: no details"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_corrupt_or_missing_event_file_is_skipped_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("event.json");
    std::fs::write(&corrupt, "{\"head_commit\": [oops").unwrap();
    for (path, why) in [
        (corrupt.to_str().unwrap(), "is not an event"),
        ("/nonexistent/event.json", "cannot open"),
    ] {
        let server = Server::start(vec![json(200, CLOSED)]);
        let out = outside_git(dir.path())
            .env("COVERALLS_REPO_TOKEN", TOKEN)
            .env("COVERALLS_ENDPOINT", &server.url())
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_RUN_ID", "11")
            .env("GITHUB_SHA", SHA)
            .env("GITHUB_EVENT_PATH", path)
            .env("COVERALLS_DEBUG", "true")
            .run();
        assert_eq!(out.code, 0, "{path}: {out:#?}");
        // On GitHub everything goes to standard output, debug lines in a group.
        assert!(
            out.stdout.contains("GitHub's event skipped"),
            "{}",
            out.stdout
        );
        assert!(out.stdout.contains(why), "{}", out.stdout);
        assert_eq!(server.only_request().json()["commit_sha"], SHA);
    }
}

#[test]
fn overrides_beat_detection() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(vec![json(200, CLOSED)]);
    let out = outside_git(dir.path())
        .env("COVERALLS_REPO_TOKEN", TOKEN)
        .env("COVERALLS_ENDPOINT", &server.url())
        .env("TRAVIS", "true")
        .env("TRAVIS_BUILD_NUMBER", "13")
        .env("TRAVIS_COMMIT", SHA)
        .env("TRAVIS_BRANCH", "main")
        .env("TRAVIS_PULL_REQUEST", "5")
        .env("TRAVIS_JOB_NUMBER", "13.1")
        .env(
            "COVERALLS_GIT_COMMIT",
            "1111111111111111111111111111111111111111",
        )
        .env("COVERALLS_GIT_BRANCH", "from-the-variable")
        .env("COVERALLS_SERVICE_JOB_ID", "job-from-the-variable")
        .args(&["--branch", "from-the-flag", "--pull-request", "77"])
        .run();
    assert_eq!(out.code, 0, "{out:#?}");
    let sent = server.only_request().json();
    assert_eq!(
        sent["commit_sha"],
        "1111111111111111111111111111111111111111"
    );
    assert_eq!(
        sent["git"]["head"]["id"],
        "1111111111111111111111111111111111111111"
    );
    assert_eq!(
        (
            sent["service_branch"].as_str(),
            sent["git"]["branch"].as_str()
        ),
        (Some("from-the-flag"), Some("from-the-flag"))
    );
    assert_eq!(sent["service_pull_request"], "77");
    assert_eq!(sent["service_job_id"], "job-from-the-variable");
}

/// As Coveralls does (coverage-reporter PR #94): a close for a build number that no upload
/// made creates the build from the carried-forward flags, given the branch and the commit.
fn creates_with_carryforward(request: &Recorded) -> Reply {
    let body = request.json();
    let complete = body["carryforward"].is_string()
        && body["git"]["branch"].is_string()
        && body["git"]["head"]["id"].is_string();
    match complete {
        true => json(
            200,
            r#"{"done":true,"url":"https://coveralls.io/builds/created","jobs":0}"#,
        ),
        false => json(
            422,
            r#"{"error":"No build matching CI build number found"}"#,
        ),
    }
}

#[test]
fn carryforward_with_the_commit_and_branch_creates_a_build_no_upload_made() {
    let dir = tempfile::tempdir().unwrap();
    let github = [
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_RUN_ID", "4242"),
        ("GITHUB_REPOSITORY", "octo/monorepo"),
        ("GITHUB_SHA", SHA),
        ("GITHUB_REF_NAME", "main"),
    ];
    let server = Server::start(vec![Reply::Decide(creates_with_carryforward)]);
    let out = outside_git(dir.path())
        .env("COVERALLS_REPO_TOKEN", TOKEN)
        .env("COVERALLS_ENDPOINT", &server.url())
        .envs(&github)
        .env("COVERALLS_CARRYFORWARD_FLAGS", "api,web")
        .run();
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout
            .contains("closed build 4242: 0 jobs, https://coveralls.io/builds/created"),
        "{}",
        out.stdout
    );

    // Without the flags, the same close is refused, and the hint says what would do.
    let server = Server::start(vec![Reply::Decide(creates_with_carryforward)]);
    let out = outside_git(dir.path())
        .env("COVERALLS_REPO_TOKEN", TOKEN)
        .env("COVERALLS_ENDPOINT", &server.url())
        .envs(&github)
        .run();
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stdout
            .contains("with carryforward flags (and the commit and branch"),
        "{}",
        out.stdout
    );
}

/// Where nothing else tells the head commit's details, `git log` in a work tree does.
#[test]
fn git_log_tells_the_head_where_nothing_else_does() {
    let git = |dir: &Path, args: &[&str]| {
        std::process::Command::new("git")
            .current_dir(dir)
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir)
            .output()
    };
    let repo = tempfile::tempdir().unwrap();
    let Ok(version) = git(repo.path(), &["--version"]) else {
        println!("skipped: git is not installed here");
        return;
    };
    if support::under_wine() {
        println!(
            "skipped: no git for Windows under Wine ({:?})",
            version.status
        );
        return;
    }
    for args in [
        &["init", "-q"][..],
        &["config", "user.name", "Ada Lovelace"],
        &["config", "user.email", "ada@example.com"],
        &["commit", "-q", "--allow-empty", "-m", "The first program"],
    ] {
        let output = git(repo.path(), args).unwrap();
        assert!(output.status.success(), "git {args:?}: {output:?}");
    }
    let head = git(repo.path(), &["rev-parse", "HEAD"]).unwrap();
    let head = String::from_utf8(head.stdout).unwrap().trim().to_owned();
    let git_dir = std::env::var_os("PATH").unwrap();
    let server = Server::start(vec![json(200, CLOSED)]);
    let out = finish()
        .current_dir(repo.path())
        .env("PATH", git_dir.to_str().unwrap())
        .env("HOME", repo.path().to_str().unwrap())
        .against(&server)
        .run();
    assert_eq!(out.code, 0, "{out:#?}");
    let sent = server.only_request().json();
    assert_eq!(sent["commit_sha"], head.as_str());
    assert_eq!(
        sent["git"]["head"],
        json!({
            "id": head, "author_name": "Ada Lovelace", "author_email": "ada@example.com",
            "committer_name": "Ada Lovelace", "committer_email": "ada@example.com",
            "message": "The first program",
        })
    );
}

#[test]
fn trace_ids_are_quoted_in_errors() {
    let busy = with_header(
        json(500, r#"{"error":"boom"}"#),
        "cf-ray",
        "8a1b2c3d4e5f-FRA",
    );
    let server = Server::start(vec![busy]);
    let out = finish()
        .against(&server)
        .env("COVERALLS_RETRIES", "0")
        .run();
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr
            .contains("500 Internal Server Error: boom (cf-ray 8a1b2c3d4e5f-FRA)"),
        "{}",
        out.stderr
    );
    let refused = with_header(json(422, r#"{"error":"nope"}"#), "X-Request-Id", "req-77");
    let server = Server::start(vec![refused]);
    let out = finish().against(&server).run();
    assert!(
        out.stderr.contains("nope (x-request-id req-77)"),
        "{}",
        out.stderr
    );
}

#[test]
fn hints_say_what_to_do() {
    type Case<'a> = (Reply, Vars<'a>, &'a str);
    let cases: Vec<Case> = vec![
        (
            json(
                401,
                r#"{"message":"Couldn't find a repository matching this job."}"#,
            ),
            &[(
                "COVERALLS_REPO_TOKEN",
                "ghs_16C7e42F292c6912E7710c838347Ae178B4a",
            )],
            "hint: sent a GitHub token (GITHUB_TOKEN) without repo_name. A GITHUB_TOKEN works \
             only with the repository's name",
        ),
        (
            json(422, r#"{"error":"Invalid github token"}"#),
            &[("COVERALLS_REPO_NAME", "octo/cat")],
            "hint: sent a Coveralls repo token with repo_name octo/cat.",
        ),
        (
            json(403, r#"{"error":"Forbidden"}"#),
            &[],
            "Pull requests from forks and from Dependabot get no secrets",
        ),
        (
            json(
                422,
                r#"{"error":"Can't add a job to a build that is already closed"}"#,
            ),
            &[],
            "hint: the build was closed before: a re-run of a workflow keeps its build number",
        ),
        (
            json(200, r#"{"done":true,"error":"Build already closed"}"#),
            &[],
            "a job closed it before every upload was in (a `needs:` that misses an upload job)",
        ),
    ];
    for (reply, vars, expected) in cases {
        let server = Server::start(vec![reply]);
        let out = finish().against(&server).envs(vars).run();
        assert_eq!(out.code, 1, "{vars:?}: {out:#?}");
        assert!(out.stderr.contains(expected), "{expected}: {}", out.stderr);
        assert_eq!(server.requests().len(), 1, "not retried");
    }
    // Closed, but with no job in it: a warning says why that is odd.
    let server = Server::start(vec![json(200, r#"{"done":true,"url":"u","jobs":0}"#)]);
    let out = finish().against(&server).run();
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stderr
            .contains("warning: Coveralls closed build 42 with 0 jobs: no upload reached"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_pull_request_from_a_fork_without_a_token_is_skipped_with_a_notice() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(vec![json(200, CLOSED)]);
    let fork = [
        ("GITHUB_RUN_ID", "11"),
        ("GITHUB_REPOSITORY", "octo/cat"),
        ("GITHUB_EVENT_NAME", "pull_request"),
        (
            "GITHUB_EVENT_PATH",
            &fixture_path("github_pull_request_from_fork_event.json"),
        ),
    ];
    let endpoint = server.url();
    let out = outside_git(dir.path())
        .github()
        .env("COVERALLS_ENDPOINT", &endpoint)
        .envs(&fork)
        .run();
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout.contains(
            "::notice title=coveralls-finish::skipped: no Coveralls token in a pull request from \
             a fork"
        ),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("::error"), "{}", out.stdout);

    // Dependabot's pull requests, from the repository itself, get no secrets either.
    let out = outside_git(dir.path())
        .github()
        .env("COVERALLS_ENDPOINT", &endpoint)
        .env("GITHUB_RUN_ID", "12")
        .env("GITHUB_EVENT_NAME", "pull_request")
        .env("GITHUB_ACTOR", "dependabot[bot]")
        .run();
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout
            .contains("::notice title=coveralls-finish::skipped"),
        "{}",
        out.stdout
    );

    // Asked to, it fails as any missing token does.
    let out = outside_git(dir.path())
        .github()
        .env("COVERALLS_ENDPOINT", &endpoint)
        .envs(&fork)
        .env("COVERALLS_REQUIRE_TOKEN", "true")
        .run();
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(
        out.stdout
            .contains("::error title=coveralls-finish::COVERALLS_REPO_TOKEN is not set")
    );
    assert!(
        out.stdout.contains("COVERALLS_REQUIRE_TOKEN is true"),
        "{}",
        out.stdout
    );

    // A pull request from the repository itself, with no token: the usual failure.
    let out = outside_git(dir.path())
        .github()
        .env("COVERALLS_ENDPOINT", &endpoint)
        .env("GITHUB_RUN_ID", "13")
        .env("GITHUB_EVENT_NAME", "pull_request")
        .run();
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(server.requests().is_empty());
}

#[test]
fn the_dry_run_and_debug_show_every_field_sent() {
    let dir = tempfile::tempdir().unwrap();
    let out = outside_git(dir.path())
        .env("CIRCLECI", "true")
        .env("CIRCLE_WORKFLOW_ID", "wf-7")
        .env("CIRCLE_SHA1", SHA)
        .env("CIRCLE_BRANCH", "main")
        .env("CIRCLE_BUILD_NUM", "3")
        .env("COVERALLS_DEBUG", "true")
        .arg("--dry-run")
        .run();
    assert_eq!(out.code, 0, "{out:#?}");
    for field in [
        r#""service_branch": "main""#,
        r#""service_job_id": "3""#,
        &format!(r#""commit_sha": "{SHA}""#),
        r#""branch": "main""#,
    ] {
        assert!(out.stdout.contains(field), "{field}: {}", out.stdout);
    }
    for line in [
        "debug:   service_branch: main",
        "debug:   service_job_id: 3",
    ] {
        assert!(out.stderr.contains(line), "{line}: {}", out.stderr);
    }
}
