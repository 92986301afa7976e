//! What the close sends, as the official reporter sends it, worked out from each CI's
//! environment without a checkout; and errors that say what to do.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

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

/// One CI's cases, `tests/ci/<ci>.json`: the row of the table (by its name) and, for each
/// case, the environment and what it comes to.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CiCases {
    ci: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    env: BTreeMap<String, String>,
    /// The body sent, but for `repo_token` and `payload`, which are the same in every case.
    body: Option<Value>,
    /// Where the log says the build number came from.
    number_from: Option<String>,
    /// Instead of a body: the configuration error (exit 2) that says this; nothing is sent.
    error: Option<String>,
}

/// Every file of tests/ci, by name.
fn ci_cases() -> Vec<(String, CiCases)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ci");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let cases = serde_json::from_str(&text).unwrap_or_else(|err| panic!("{name}: {err}"));
            (name, cases)
        })
        .collect()
}

/// The table's invariants that need the cases: every CI has a file of them, no file is of a
/// CI the table does not know, and no two files are of the same one.
#[test]
fn every_ci_has_its_cases() {
    let files = ci_cases();
    let mut of: BTreeMap<&str, &str> = BTreeMap::new();
    for (file, cases) in &files {
        assert!(!cases.cases.is_empty(), "{file} has no case");
        if let Some(other) = of.insert(&cases.ci, file) {
            panic!("{file} and {other} are both of {}", cases.ci);
        }
    }
    let known: Vec<&str> = coveralls_finish::ci_names().collect();
    for ci in &known {
        assert!(
            of.contains_key(ci),
            "no file in tests/ci has the cases of {ci}"
        );
    }
    for (ci, file) in of {
        assert!(
            known.contains(&ci),
            "{file} is of {ci:?}, which is no CI of the table"
        );
    }
}

/// Each case of tests/ci as the official reporter would send it, from a run of the binary.
/// Each case detects its own CI, so no row is shadowed by an earlier row's detection.
#[test]
fn each_ci_sends_what_the_official_reporter_sends() {
    let dir = tempfile::tempdir().unwrap();
    for (file, CiCases { ci, cases }) in ci_cases() {
        for case in cases {
            check(&ci, &format!("{file}, {:?}", case.name), case, dir.path());
        }
    }
}

/// One case of `ci`'s, run outside any git work tree.
fn check(ci: &str, what: &str, case: Case, dir: &Path) {
    let env: Vec<(&str, &str)> = case.env.iter().map(|(k, v)| (&**k, &**v)).collect();
    let server = Server::start(vec![json(200, CLOSED)]);
    let out = outside_git(dir)
        .env("COVERALLS_REPO_TOKEN", TOKEN)
        .env("COVERALLS_ENDPOINT", &server.url())
        .env("COVERALLS_DEBUG", "true")
        .envs(&env)
        .run();
    let output = out.all_output();
    if let Some(from) = &case.number_from {
        let logged = format!("(from {from})");
        assert!(output.contains(&logged), "{what}: {logged} in {output}");
    }
    match (case.body, case.error) {
        (Some(mut expected), None) => {
            assert_eq!(out.code, 0, "{what}: {out:#?}");
            // Debug output names the CI detected (on GitHub without the prefix).
            let detected = format!("CI: {ci}");
            let said = |line: &str| line.trim_start_matches("debug:").trim() == detected;
            assert!(output.lines().any(said), "{what}: {detected} in {output}");
            expected["repo_token"] = TOKEN.into();
            let number = expected["service_number"].clone();
            expected["payload"] = json!({"build_num": number, "status": "done"});
            assert_eq!(server.only_request().json(), expected, "{what}");
        }
        (None, Some(error)) => {
            assert_eq!(out.code, 2, "{what}: {out:#?}");
            let detected = format!("{ci} detected");
            assert!(output.contains(&detected), "{what}: {detected} in {output}");
            assert!(output.contains(&error), "{what}: {error} in {output}");
            assert!(server.requests().is_empty(), "{what}: sent");
        }
        _ => panic!("{what}: a case has a body or an error, not both"),
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

/// Where nothing else tells the head commit or the branch, git in a work tree does: sent in
/// `git` alone, as the official reporter sends them (not as `commit_sha`).
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
    // Skipped only where the run says why: CI has git, so a missing git fails there.
    if support::under_wine() {
        println!("skipped: no git for Windows under Wine (COVERALLS_FINISH_TESTS_UNDER_WINE)");
        return;
    }
    let repo = tempfile::tempdir().unwrap();
    if let Err(err) = git(repo.path(), &["--version"]) {
        panic!("git is needed on PATH for this test, and could not be run: {err}");
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
    let said = |args: &[&str]| {
        let output = git(repo.path(), args).unwrap().stdout;
        String::from_utf8(output).unwrap().trim().to_owned()
    };
    let (head, branch) = (
        said(&["rev-parse", "HEAD"]),
        said(&["branch", "--show-current"]),
    );
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
    assert_eq!(sent.get("commit_sha"), None);
    assert!(!branch.is_empty());
    assert_eq!(sent["git"]["branch"], branch.as_str());
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

/// A run of a pull request from a fork, on GitHub, with no token.
fn from_a_fork(dir: &Path, server: &Server) -> Finish {
    outside_git(dir)
        .github()
        .env("COVERALLS_ENDPOINT", &server.url())
        .env("GITHUB_RUN_ID", "11")
        .env("GITHUB_REPOSITORY", "octo/cat")
        .env("GITHUB_EVENT_NAME", "pull_request")
        .env(
            "GITHUB_EVENT_PATH",
            &fixture_path("github_pull_request_from_fork_event.json"),
        )
}

#[test]
fn a_pull_request_from_a_fork_without_a_token_is_skipped_with_a_notice() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(vec![json(200, CLOSED)]);
    let out = from_a_fork(dir.path(), &server).run();
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
        .env("COVERALLS_ENDPOINT", &server.url())
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
    assert!(server.requests().is_empty());
}

#[test]
fn a_pull_request_without_a_token_fails_if_asked_to_or_if_it_is_not_from_a_fork() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(vec![json(200, CLOSED)]);
    // Asked to, it fails as any missing token does.
    let out = from_a_fork(dir.path(), &server)
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
        .env("COVERALLS_ENDPOINT", &server.url())
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
        r#""service_job_number": "3""#,
        &format!(r#""commit_sha": "{SHA}""#),
        r#""branch": "main""#,
    ] {
        assert!(out.stdout.contains(field), "{field}: {}", out.stdout);
    }
    // Debug output shows the body too, then the settings that are not in it.
    for line in [
        r#"debug:     "service_branch": "main","#,
        r#"debug:     "service_job_number": "3""#,
        "debug:   CI: CircleCI",
    ] {
        assert!(out.stderr.contains(line), "{line}: {}", out.stderr);
    }
}
