//! What the run learns back after the close: the jobs against the jobs expected, the build's
//! coverage (waited for), and a threshold. Against a recording Coveralls on loopback that
//! answers `GET /builds/<id>.json` as scripted.

mod support;

use std::time::Duration;

use support::{Finish, Server, TOKEN, finish, json};

/// The close's answer, its build at the recording server.
const CLOSED_HERE: &str = r#"{"done":true,"url":"{server}/builds/77","jobs":6}"#;
const NOT_YET: &str = r#"{"covered_percent":null,"coverage_change":null}"#;
const FIGURE: &str = r#"{"covered_percent":87.5238,"coverage_change":-0.31}"#;

fn run(server: &Server, vars: &[(&str, &str)]) -> support::Outcome {
    closer(server).envs(vars).run()
}

fn closer(server: &Server) -> Finish {
    finish().github().against(server)
}

#[test]
fn no_wait_by_default_and_no_question_asked() {
    let server = Server::start(vec![json(200, CLOSED_HERE), json(200, FIGURE)]);
    let out = run(&server, &[]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(server.requests().len(), 1, "only the close");
    assert!(!out.step_outputs().contains_key("coverage"));
}

#[test]
fn waits_for_the_coverage_then_reports_it_everywhere() {
    let server = Server::start(vec![
        json(200, CLOSED_HERE),
        json(200, NOT_YET),
        json(200, FIGURE),
    ]);
    let out = run(&server, &[("COVERALLS_WAIT", "30")]);
    assert_eq!(out.code, 0, "{out:#?}");
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    for poll in &requests[1..] {
        assert_eq!(
            (poll.method.as_str(), poll.target.as_str()),
            ("GET", "/builds/77.json")
        );
        assert!(!poll.target.contains(TOKEN) && poll.header("authorization").is_none());
    }
    // Asked again after a second, not at once.
    assert!(out.elapsed >= Duration::from_secs(1), "{:?}", out.elapsed);
    assert!(
        out.stdout.contains(&format!(
            "closed build 42: 6 jobs, 87.52% (-0.31), {}/builds/77",
            server.url()
        )),
        "{}",
        out.stdout
    );
    let outputs = out.step_outputs();
    assert_eq!(outputs["coverage"], "87.52");
    assert_eq!(outputs["coverage-change"], "-0.31");
    let summary = out.summary.unwrap();
    assert!(
        summary.contains("| Coverage | 87.52% (-0.31) |"),
        "{summary}"
    );
}

#[test]
fn the_wait_ends_when_the_time_is_up_with_a_warning() {
    let server = Server::start(vec![json(200, CLOSED_HERE), json(200, NOT_YET)]);
    let out = run(&server, &[("COVERALLS_WAIT", "2")]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout
            .contains("::warning title=coveralls-finish::no coverage within 2s"),
        "{}",
        out.stdout
    );
    assert!(out.elapsed < Duration::from_secs(6), "{:?}", out.elapsed);
    assert!(server.requests().len() >= 2);
    assert!(!out.step_outputs().contains_key("coverage"));
}

#[test]
fn a_private_repository_ends_the_wait_at_once() {
    let server = Server::start(vec![json(200, CLOSED_HERE), json(404, "{}")]);
    let out = run(&server, &[("COVERALLS_WAIT", "60")]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(server.requests().len(), 2);
    assert!(out.elapsed < Duration::from_secs(5), "{:?}", out.elapsed);
    assert!(
        out.stdout
            .contains("404 Not Found: the build of a private repository cannot be read"),
        "{}",
        out.stdout
    );
}

#[test]
fn fail_under_met_missed_and_unknown() {
    // Met: it waits without being told to, and passes.
    let server = Server::start(vec![json(200, CLOSED_HERE), json(200, FIGURE)]);
    let out = run(&server, &[("COVERALLS_FAIL_UNDER", "80")]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(server.requests().len(), 2, "waited for the figure");
    assert!(out.summary.unwrap().contains("| Fail under | 80% (met) |"));

    // Missed: exit 3, with both figures, even where failures are to be softened.
    for soften in ["true", "false"] {
        let server = Server::start(vec![json(200, CLOSED_HERE), json(200, FIGURE)]);
        let out = run(
            &server,
            &[
                ("COVERALLS_FAIL_UNDER", "90"),
                ("COVERALLS_FAIL_ON_ERROR", soften),
            ],
        );
        assert_eq!(out.code, 3, "{soften}: {out:#?}");
        assert!(
            out.stdout
                .contains("::error title=coveralls-finish::the coverage, 87.52%25, is under 90%25"),
            "{}",
            out.stdout
        );
        let summary = out.summary.clone().unwrap();
        assert!(summary.contains("### ❌ Coveralls build closed, but a check failed"));
        assert!(
            summary.contains("| Fail under | 90% (missed) |"),
            "{summary}"
        );
        assert_eq!(out.step_outputs()["coverage"], "87.52");
    }

    // Unknown in time: an ordinary failure, which may be softened.
    let server = Server::start(vec![json(200, CLOSED_HERE), json(404, "{}")]);
    let out = run(&server, &[("COVERALLS_FAIL_UNDER", "90")]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stdout
            .contains("so the coverage could not be checked against 90%"),
        "{}",
        out.stdout
    );
    let out = run(
        &server,
        &[
            ("COVERALLS_FAIL_UNDER", "90"),
            ("COVERALLS_FAIL_ON_ERROR", "false"),
        ],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout.contains("::warning title=coveralls-finish::"),
        "{}",
        out.stdout
    );
}

#[test]
fn expected_jobs_met_and_missed() {
    let server = Server::start(vec![json(200, CLOSED_HERE)]);
    let out = run(&server, &[("COVERALLS_EXPECTED_JOBS", "6")]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.summary.unwrap().contains("| Jobs | 6 (6 expected) |"));

    let out = run(
        &server,
        &[
            ("COVERALLS_EXPECTED_JOBS", "8"),
            ("COVERALLS_FAIL_ON_ERROR", "false"),
        ],
    );
    assert_eq!(out.code, 3, "not softened: {out:#?}");
    assert!(
        out.stdout.contains(
            "::error title=coveralls-finish::6 of 8 expected jobs arrived before the build was \
             closed"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("needs every upload job"),
        "{}",
        out.stdout
    );
    assert_eq!(
        out.step_outputs()["jobs"],
        "6",
        "the outputs are there all the same"
    );
}

#[test]
fn settings_are_checked_and_the_dry_run_says_what_would_be_checked() {
    for (name, value, expected) in [
        (
            "COVERALLS_WAIT",
            "601",
            "COVERALLS_WAIT is \"601\"; expected a number of seconds",
        ),
        (
            "COVERALLS_FAIL_UNDER",
            "101",
            "expected a percentage from 0 to 100",
        ),
        (
            "COVERALLS_EXPECTED_JOBS",
            "0",
            "expected a whole number from 1",
        ),
    ] {
        let out = finish()
            .env("COVERALLS_SERVICE_NUMBER", "1")
            .env(name, value)
            .arg("--dry-run")
            .run();
        assert_eq!(out.code, 2, "{name}: {out:#?}");
        assert!(out.stderr.contains(expected), "{name}: {}", out.stderr);
    }
    let out = finish()
        .env("COVERALLS_SERVICE_NUMBER", "1")
        .args(&["--dry-run", "--expected-jobs", "6", "--fail-under", "80"])
        .run();
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout.contains(
            "after the close it would expect at least 6 jobs in the closed build, wait up to \
             120s for its coverage, fail under 80% coverage"
        ),
        "{}",
        out.stdout
    );
}
