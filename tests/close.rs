//! The built binary against a recording Coveralls server on loopback.

mod support;

use std::time::Duration;

use support::{CLOSED, Reply, Server, TOKEN, Vars, finish, json, refused_url, with_header};

#[test]
fn closes_on_github_with_carryforward_outputs_and_summary() {
    let server = Server::start(vec![json(200, CLOSED)]);
    let out = finish()
        .github()
        .env("COVERALLS_REPO_TOKEN", TOKEN)
        .env("COVERALLS_ENDPOINT", &format!("{}/", server.url()))
        .env(
            "COVERALLS_CARRYFORWARD_FLAGS",
            " unit, lint\n\nunit\nbrowser ",
        )
        .env("GITHUB_RUN_ID", "4193273239")
        .env("GITHUB_RUN_ATTEMPT", "2")
        .env("GITHUB_REPOSITORY", "octo/cat")
        .run();
    assert_eq!(out.code, 0, "{out:#?}");

    let request = server.only_request();
    assert_eq!(
        (request.method.as_str(), request.target.as_str()),
        ("POST", "/webhook")
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.header("user-agent"),
        Some(concat!("coveralls-finish/", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(
        request.json(),
        serde_json::json!({
            "repo_token": TOKEN,
            "repo_name": "octo/cat",
            "service_name": "github",
            "service_number": "4193273239",
            "service_attempt": "2",
            "carryforward": "unit,lint,browser",
            "payload": {"build_num": "4193273239", "status": "done"},
        })
    );

    assert_github_outputs_and_summary(&out);
}

/// What the GitHub close above leaves for the workflow: the masked token, the result line,
/// the step outputs and the summary.
fn assert_github_outputs_and_summary(out: &support::Outcome) {
    assert!(
        out.stdout.starts_with(&format!("::add-mask::{TOKEN}\n")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("closed build 4193273239: 3 jobs, https://coveralls.io/builds/77")
    );
    assert!(
        out.stdout.contains("from GITHUB_RUN_ID, GitHub Actions"),
        "{}",
        out.stdout
    );
    let outputs = out.step_outputs();
    assert_eq!(outputs["url"], "https://coveralls.io/builds/77");
    assert_eq!(outputs["jobs"], "3");
    assert_eq!(outputs["build-number"], "4193273239");
    assert_eq!(outputs["coveralls-api-result"], CLOSED);
    let summary = out.summary.as_deref().unwrap();
    assert!(
        summary.contains("| Build number | `4193273239` (GITHUB_RUN_ID, GitHub Actions) |"),
        "{summary}"
    );
    assert!(summary.contains("| Jobs | 3 |"), "{summary}");
    assert!(summary.contains("`unit`, `lint`, `browser`"), "{summary}");
    assert!(
        summary.contains("https://coveralls.io/builds/77"),
        "{summary}"
    );
}

#[test]
fn outside_github_prints_one_result_line() {
    let server = Server::start(vec![json(
        200,
        r#"{"done":true,"url":"https://c/b/1","jobs":1}"#,
    )]);
    let out = finish().against(&server).run();
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout, "closed build 42: 1 job, https://c/b/1\n");
    assert!(
        out.stderr
            .contains("closing build 42 (from COVERALLS_SERVICE_NUMBER)"),
        "{}",
        out.stderr
    );
    assert!(
        !out.all_output().contains("::"),
        "no workflow commands outside GitHub"
    );
    let body = server.only_request().json();
    assert_eq!(body["repo_token"], TOKEN);
    assert!(
        body.get("carryforward").is_none() && body.get("service_attempt").is_none(),
        "{body}"
    );
}

#[test]
fn flag_beats_variable_beats_detected_ci() {
    let base = |server: &Server| {
        finish()
            .env("COVERALLS_REPO_TOKEN", TOKEN)
            .env("COVERALLS_ENDPOINT", &server.url())
            .env("TRAVIS", "true")
            .env("TRAVIS_BUILD_NUMBER", "1")
    };
    let server = Server::start(vec![json(200, CLOSED)]);
    base(&server)
        .env("COVERALLS_SERVICE_NUMBER", "2")
        .env("COVERALLS_SERVICE_NAME", "custom")
        .run();
    let body = server.only_request().json();
    assert_eq!(
        (
            body["payload"]["build_num"].as_str(),
            body["service_name"].as_str()
        ),
        (Some("2"), Some("custom"))
    );

    let server = Server::start(vec![json(200, CLOSED)]);
    let out = base(&server)
        .env("COVERALLS_SERVICE_NUMBER", "2")
        .arg("--build-number")
        .arg("3")
        .arg("--carryforward=x,y")
        .env("COVERALLS_CARRYFORWARD_FLAGS", "z")
        .run();
    assert!(
        out.stderr.contains("closing build 3 (from --build-number)"),
        "{}",
        out.stderr
    );
    let body = server.only_request().json();
    assert_eq!(
        (
            body["payload"]["build_num"].as_str(),
            body["carryforward"].as_str()
        ),
        (Some("3"), Some("x,y"))
    );
}

#[test]
fn recovers_from_503_then_an_html_502() {
    let gateway = Reply::Answer {
        status: 502,
        headers: vec![("Content-Type".into(), "text/html".into())],
        body: "<html><head><title>502 Bad Gateway</title></head><body><h1>502</h1></body></html>"
            .into(),
    };
    let server = Server::start(vec![
        json(503, r#"{"error":"maintenance"}"#),
        gateway,
        json(200, CLOSED),
    ]);
    let out = finish().against(&server).run();
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(server.requests().len(), 3);
    assert!(out.stderr.contains("attempt 1/6 failed: Coveralls answered 503 Service Unavailable: maintenance; retrying in"), "{}", out.stderr);
    assert!(out.stderr.contains(r#"attempt 2/6 failed: Coveralls answered 502 Bad Gateway: an HTML page titled "502 Bad Gateway""#), "{}", out.stderr);
    assert!(
        !out.all_output().contains("<h1>"),
        "HTML is summarised, not dumped"
    );
    assert!(out.stdout.contains("closed build 42: 3 jobs"));
}

#[test]
fn a_huge_5xx_is_still_retried() {
    let page = format!("<html><body>{}</body></html>", "x".repeat(2 << 20));
    let huge = Reply::Answer {
        status: 503,
        headers: vec![("Content-Type".into(), "text/html".into())],
        body: page.into_bytes(),
    };
    let server = Server::start(vec![huge, json(200, CLOSED)]);
    let out = finish().against(&server).run();
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(server.requests().len(), 2);
    assert!(
        out.stderr.contains(
            "attempt 1/6 failed: Coveralls answered 503 Service Unavailable: (an answer of over \
             1048576 bytes, not read)"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn honours_retry_after_on_429() {
    let busy = with_header(json(429, r#"{"error":"slow down"}"#), "Retry-After", "1");
    let server = Server::start(vec![busy, json(200, CLOSED)]);
    let out = finish().against(&server).run();
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(server.requests().len(), 2);
    assert!(
        out.stderr
            .contains("429 Too Many Requests: slow down; retrying in 1.0s (as Retry-After asks)"),
        "{}",
        out.stderr
    );
    assert!(out.elapsed >= Duration::from_secs(1), "{:?}", out.elapsed);
}

#[test]
fn gives_up_on_a_persistent_500_quoting_the_server() {
    let server = Server::start(vec![json(500, r#"{"error":"database is on fire"}"#)]);
    let out = finish()
        .against(&server)
        .env("COVERALLS_RETRIES", "2")
        .run();
    assert_eq!(out.code, 1, "{out:#?}");
    assert_eq!(server.requests().len(), 3);
    assert!(
        out.stderr.contains("error: gave up after 3 attempts; the last: Coveralls answered 500 Internal Server Error: database is on fire"),
        "{}",
        out.stderr
    );
}

#[test]
fn no_build_matching_is_not_retried_and_says_what_was_sent() {
    let server = Server::start(vec![json(
        422,
        r#"{"error":"No build matching CI build number found"}"#,
    )]);
    let out = finish()
        .github()
        .env("COVERALLS_REPO_TOKEN", TOKEN)
        .env("COVERALLS_ENDPOINT", &server.url())
        .env("GITHUB_RUN_ID", "555")
        .run();
    assert_eq!(out.code, 1, "{out:#?}");
    assert_eq!(server.requests().len(), 1);
    let error = out
        .stdout
        .lines()
        .find(|l| l.starts_with("::error "))
        .expect("an error annotation");
    assert!(error.starts_with("::error title=coveralls-finish::Coveralls answered 422 Unprocessable Entity: No build matching CI build number found%0Ahint: sent build number 555 (from GITHUB_RUN_ID, GitHub Actions)"), "{error}");
    let outputs = out.step_outputs();
    assert_eq!(outputs["build-number"], "555");
    assert!(outputs["coveralls-api-result"].contains("No build matching"));
    assert!(out.summary.unwrap().contains("Coveralls build not closed"));
}

#[test]
fn unauthorised_is_not_retried_and_hints_at_the_token() {
    let server = Server::start(vec![json(
        401,
        r#"{"message":"Couldn't find a repository matching this job."}"#,
    )]);
    let out = finish().against(&server).run();
    assert_eq!(out.code, 1, "{out:#?}");
    assert_eq!(server.requests().len(), 1);
    assert!(
        out.stderr
            .contains("401 Unauthorized: Couldn't find a repository matching this job."),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("hint: sent a Coveralls repo token without repo_name."),
        "{}",
        out.stderr
    );
}

#[test]
fn a_2xx_with_an_error_or_without_done_is_a_failure() {
    for (body, expected) in [
        (
            r#"{"done":true,"error":"Build already closed"}"#,
            "error: Coveralls answered 200 OK: Build already closed",
        ),
        (
            r#"{"done":false}"#,
            "error: Coveralls answered 200 OK: \"done\" is false",
        ),
        (
            "<html><title>Login</title></html>",
            "no \"done\": true in the answer: an HTML page titled \"Login\"",
        ),
    ] {
        let server = Server::start(vec![json(200, body)]);
        let out = finish().against(&server).run();
        assert_eq!(out.code, 1, "{body}: {out:#?}");
        assert_eq!(server.requests().len(), 1, "{body}");
        assert!(out.stderr.contains(expected), "{body}: {}", out.stderr);
        assert!(!out.stdout.contains("closed build"), "{body}");
    }
}

#[test]
fn a_stalled_server_meets_the_timeout() {
    let server = Server::start(vec![Reply::Stall]);
    let out = finish()
        .against(&server)
        .env("COVERALLS_TIMEOUT", "1")
        .env("COVERALLS_RETRIES", "1")
        .run();
    assert_eq!(out.code, 1, "{out:#?}");
    assert_eq!(server.requests().len(), 2);
    assert!(
        out.stderr
            .contains("no complete answer within the timeout (COVERALLS_TIMEOUT)"),
        "{}",
        out.stderr
    );
    // Two attempts of 1s and one wait of at most 1s; far below the server's 20s stall.
    assert!(out.elapsed < Duration::from_secs(6), "{:?}", out.elapsed);
}

#[test]
fn connection_refused_is_retried_then_reported() {
    let url = refused_url();
    let out = finish()
        .env("COVERALLS_REPO_TOKEN", TOKEN)
        .env("COVERALLS_SERVICE_NUMBER", "42")
        .env("COVERALLS_ENDPOINT", &url)
        .env("COVERALLS_RETRIES", "1")
        .run();
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("attempt 1/2 failed: could not reach"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "error: gave up after 2 attempts; the last: could not reach {url}/webhook"
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn a_redirect_is_not_followed() {
    let moved = with_header(
        json(307, ""),
        "Location",
        "https://elsewhere.example/webhook",
    );
    let server = Server::start(vec![moved, json(200, CLOSED)]);
    let out = finish().against(&server).run();
    assert_eq!(out.code, 1, "{out:#?}");
    assert_eq!(server.requests().len(), 1, "the token is not sent on");
    assert!(out.stderr.contains("307 Temporary Redirect: a redirect to https://elsewhere.example/webhook, which is not followed"), "{}", out.stderr);
}

#[test]
fn configuration_errors_exit_2_and_send_nothing() {
    let server = Server::start(vec![json(200, CLOSED)]);
    let cases: &[(Vars, &str)] = &[
        (
            &[("COVERALLS_SERVICE_NUMBER", "1")],
            "COVERALLS_REPO_TOKEN is not set",
        ),
        (
            &[
                ("COVERALLS_REPO_TOKEN", TOKEN),
                ("COVERALLS_SERVICE_NUMBER", "1"),
                ("COVERALLS_DRY_RUN", "yes"),
            ],
            "COVERALLS_DRY_RUN is \"yes\"; expected true or false",
        ),
        (
            &[
                ("COVERALLS_REPO_TOKEN", TOKEN),
                ("COVERALLS_SERVICE_NUMBER", "1"),
                ("COVERALLS_FAIL_ON_ERROR", "no"),
            ],
            "COVERALLS_FAIL_ON_ERROR is \"no\"",
        ),
        (
            &[
                ("COVERALLS_REPO_TOKEN", TOKEN),
                ("COVERALLS_SERVICE_NUMBER", "1"),
                ("COVERALLS_TIMEOUT", "soon"),
            ],
            "COVERALLS_TIMEOUT is \"soon\"",
        ),
        (
            &[
                ("COVERALLS_REPO_TOKEN", TOKEN),
                ("COVERALLS_SERVICE_NUMBER", "1"),
                ("HTTPS_PROXY", "http://user:pw@[bad"),
            ],
            "HTTPS_PROXY is not a valid proxy URL",
        ),
    ];
    for (vars, expected) in cases {
        let out = finish()
            .env(
                "COVERALLS_ENDPOINT",
                &server.url().replace("http:", "https:"),
            )
            .envs(vars)
            .run();
        assert_eq!(out.code, 2, "{vars:?}: {out:#?}");
        assert!(out.all_output().contains(expected), "{vars:?}: {out:#?}");
        assert!(
            !out.all_output().contains("pw@"),
            "the proxy password is not printed"
        );
    }
    assert!(server.requests().is_empty());
}

#[test]
fn an_unknown_flag_exits_2() {
    let out = finish().arg("--no-such-flag").run();
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("unknown flag --no-such-flag"),
        "{}",
        out.stderr
    );
}

#[cfg(unix)]
#[test]
fn a_non_utf8_variable_is_named_not_a_crash() {
    use std::os::unix::ffi::OsStrExt;
    let output = support::binary()
        .env(
            "COVERALLS_SERVICE_NUMBER",
            std::ffi::OsStr::from_bytes(&[0x34, 0xff]),
        )
        .env("UNRELATED", std::ffi::OsStr::from_bytes(&[0xfe]))
        .arg("--dry-run")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("COVERALLS_SERVICE_NUMBER is not valid UTF-8"),
        "{stderr}"
    );
}

#[test]
fn dry_run_prints_the_request_with_the_token_redacted_and_sends_nothing() {
    let server = Server::start(vec![json(200, CLOSED)]);
    let out = finish()
        .against(&server)
        .env("COVERALLS_DRY_RUN", "true")
        .env("COVERALLS_CARRYFORWARD", "a,b")
        .run();
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(server.requests().is_empty());
    assert!(
        out.stdout
            .contains(&format!("POST {}/webhook", server.url())),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(r#""repo_token": "***""#),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(r#""carryforward": "a,b""#),
        "{}",
        out.stdout
    );

    // Without any token or server at all, as README's first command does.
    let out = finish()
        .env("COVERALLS_SERVICE_NUMBER", "7")
        .arg("--dry-run")
        .run();
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.contains("POST https://coveralls.io/webhook"));
    assert!(
        out.stderr
            .contains("warning: COVERALLS_REPO_TOKEN is not set"),
        "{}",
        out.stderr
    );
}

/// On GitHub, with `COVERALLS_FAIL_ON_ERROR=false` and `vars`: exit 0, and the failure, which
/// says `expected`, is a warning, never an error.
fn assert_softened(vars: &[(&str, &str)], expected: &str) {
    let out = finish()
        .github()
        .env("COVERALLS_FAIL_ON_ERROR", "false")
        .envs(vars)
        .run();
    assert_eq!(out.code, 0, "{vars:?}: {out:#?}");
    let warning = out
        .stdout
        .lines()
        .find(|l| l.starts_with("::warning title=coveralls-finish::"))
        .unwrap_or_default();
    assert!(
        warning.contains(expected) && warning.contains("COVERALLS_FAIL_ON_ERROR is false"),
        "{vars:?}: {}",
        out.stdout
    );
    assert!(!out.stdout.contains("::error"), "{vars:?}");
}

#[test]
fn fail_on_error_false_softens_every_failure_class() {
    let refused = refused_url();
    let rejected = Server::start(vec![json(
        422,
        r#"{"error":"No build matching CI build number found"}"#,
    )]);
    let rejected = rejected.url();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("COVERALLS_SERVICE_NUMBER", "1")],
            "COVERALLS_REPO_TOKEN is not set",
        ),
        (
            vec![
                ("COVERALLS_REPO_TOKEN", TOKEN),
                ("COVERALLS_RETRIES", "oops"),
            ],
            "COVERALLS_RETRIES is \"oops\"",
        ),
        (
            vec![
                ("COVERALLS_REPO_TOKEN", TOKEN),
                ("COVERALLS_SERVICE_NUMBER", "1"),
                ("COVERALLS_ENDPOINT", &rejected),
            ],
            "No build matching",
        ),
        (
            vec![
                ("COVERALLS_REPO_TOKEN", TOKEN),
                ("COVERALLS_SERVICE_NUMBER", "1"),
                ("COVERALLS_ENDPOINT", &refused),
                ("COVERALLS_RETRIES", "0"),
            ],
            "could not reach",
        ),
    ];
    for (vars, expected) in cases {
        assert_softened(&vars, expected);
    }
    // A flag error is softened too, as the variable asks.
    let out = finish()
        .env("COVERALLS_FAIL_ON_ERROR", "False")
        .arg("--bogus")
        .run();
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stderr.contains("warning: unknown flag --bogus"),
        "{}",
        out.stderr
    );
}

#[test]
fn server_text_can_neither_leak_the_token_nor_inject_workflow_commands() {
    let evil = format!(
        r#"{{"error":"bad token {TOKEN}\n::set-output name=url::https://evil\r\n::add-mask::x"}}"#
    );
    let server = Server::start(vec![json(401, &evil)]);
    let out = finish()
        .github()
        .against(&server)
        .env("RUNNER_DEBUG", "1")
        .run();
    assert_eq!(out.code, 1, "{out:#?}");
    for line in out.stdout.lines() {
        let ours = [
            "::add-mask::",
            "::group::",
            "::endgroup::",
            "::error title=coveralls-finish::",
        ];
        assert!(
            !line.trim_start().starts_with("::") || ours.iter().any(|p| line.starts_with(p)),
            "injected: {line:?}"
        );
    }
    assert!(out.stdout.contains("bad token ***"), "{}", out.stdout);
    assert!(!out.step_outputs().contains_key("url"));
}

#[test]
fn debug_shows_settings_and_answers_but_not_the_token() {
    let server = Server::start(vec![json(200, CLOSED)]);
    let out = finish()
        .against(&server)
        .env("COVERALLS_DEBUG", "true")
        .run();
    assert_eq!(out.code, 0, "{out:#?}");
    // The settings start with the body, the token in it redacted.
    assert!(
        out.stderr.contains("debug:     \"repo_token\": \"***\","),
        "{}",
        out.stderr
    );
    assert!(!out.all_output().contains(TOKEN), "{out:#?}");
    assert!(
        out.stderr.contains("debug: answer: 200 OK"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("debug:   {CLOSED}")),
        "{}",
        out.stderr
    );
}

#[test]
fn goes_through_a_proxy_unless_no_proxy_says_otherwise() {
    let proxy = Server::start(vec![json(200, CLOSED)]);
    let out = finish()
        .env("COVERALLS_REPO_TOKEN", TOKEN)
        .env("COVERALLS_SERVICE_NUMBER", "42")
        .env("COVERALLS_ENDPOINT", "http://coveralls.invalid")
        .env("HTTP_PROXY", &proxy.url())
        .run();
    assert_eq!(out.code, 0, "{out:#?}");
    let requests = proxy.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert_eq!(
        (requests[0].method.as_str(), requests[0].target.as_str()),
        ("CONNECT", "coveralls.invalid:80")
    );
    assert_eq!(requests[1].json()["repo_token"], TOKEN);

    let server = Server::start(vec![json(200, CLOSED)]);
    let out = finish()
        .against(&server)
        .env("HTTP_PROXY", &refused_url())
        .env("NO_PROXY", "example.com, 127.0.0.1")
        .env("COVERALLS_RETRIES", "0")
        .run();
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn help_and_version() {
    let out = finish().arg("--help").run();
    assert_eq!(out.code, 0);
    for flag in [
        "--build-number",
        "--carryforward",
        "--endpoint",
        "--dry-run",
        "COVERALLS_TIMEOUT",
        "Exit codes",
    ] {
        assert!(out.stdout.contains(flag), "{flag}");
    }
    let out = finish().arg("-V").run();
    assert_eq!(
        out.stdout,
        format!("coveralls-finish {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_private_ca_is_trusted_through_ssl_cert_file_and_never_otherwise() {
    let (server, ca_pem) = Server::start_tls(vec![json(200, CLOSED)]);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let endpoint = format!("https://localhost:{}", server.addr().port());
    let run = || {
        finish()
            .env("COVERALLS_REPO_TOKEN", TOKEN)
            .env("COVERALLS_SERVICE_NUMBER", "42")
            .env("COVERALLS_ENDPOINT", &endpoint)
            .env("COVERALLS_RETRIES", "3")
    };

    let out = run().run();
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        server.requests().is_empty(),
        "nothing is sent to an untrusted server"
    );
    assert!(
        !out.stderr.contains("retrying"),
        "a certificate does not change on retry: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "hint: the TLS certificate was not trusted; for a private CA set SSL_CERT_FILE"
        ),
        "{}",
        out.stderr
    );

    let out = run().env("SSL_CERT_FILE", ca_file.to_str().unwrap()).run();
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(server.only_request().json()["repo_token"], TOKEN);
}

#[test]
fn a_cert_file_that_cannot_be_loaded_is_named_and_nothing_is_sent() {
    let (server, _ca_pem) = Server::start_tls(vec![json(200, CLOSED)]);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.pem");
    let out = finish()
        .env("COVERALLS_REPO_TOKEN", TOKEN)
        .env("COVERALLS_SERVICE_NUMBER", "42")
        .env(
            "COVERALLS_ENDPOINT",
            &format!("https://localhost:{}", server.addr().port()),
        )
        .env("SSL_CERT_FILE", missing.to_str().unwrap())
        .run();
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(
        out.stderr
            .contains("SSL_CERT_FILE is set, but its certificates cannot be loaded"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("no-such-ca.pem"), "{}", out.stderr);
    assert!(server.requests().is_empty());
}

/// A token unlike the environment's, so that a test can tell which was sent.
const FILE_TOKEN: &str = "yml-tok-Q2x9LmP4vRk7NwZ3";

/// A directory holding `.coveralls.yml` with `text`, and nothing else (no git work tree).
fn with_coveralls_yml(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".coveralls.yml"), text).unwrap();
    dir
}

#[test]
fn coveralls_yml_gives_what_the_environment_does_not_and_its_token_is_never_shown() {
    let server = Server::start(vec![json(200, CLOSED)]);
    let dir = with_coveralls_yml(&format!(
        "repo_token: {FILE_TOKEN}\nservice_name: travis-pro\nrepo_name: octo/cat\n\
         endpoint: {}\ncarryforward: unit, lint\nparallel: true\n",
        server.url()
    ));
    let out = finish()
        .current_dir(dir.path())
        .env("TRAVIS", "true")
        .env("TRAVIS_BUILD_NUMBER", "13")
        .env("COVERALLS_DEBUG", "true")
        .run();
    assert_eq!(out.code, 0, "{out:#?}");
    let body = server.only_request().json();
    assert_eq!(
        (
            &body["repo_token"],
            &body["service_name"],
            &body["repo_name"]
        ),
        (&FILE_TOKEN.into(), &"travis-pro".into(), &"octo/cat".into())
    );
    assert_eq!(body["carryforward"], "unit,lint");
    for note in [
        "repo_token: from .coveralls.yml",
        "endpoint: from .coveralls.yml",
    ] {
        assert!(out.stderr.contains(note), "{note}: {}", out.stderr);
    }
    out.assert_no_secret(FILE_TOKEN);

    // A dry run on GitHub: masked for the runner first, and shown nowhere else.
    let out = finish()
        .github()
        .current_dir(dir.path())
        .env("GITHUB_RUN_ID", "5")
        .env("COVERALLS_DEBUG", "true")
        .arg("--dry-run")
        .run();
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout
            .starts_with(&format!("::add-mask::{FILE_TOKEN}\n")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(r#""repo_token": "***""#),
        "{}",
        out.stdout
    );
    out.assert_no_secret(FILE_TOKEN);
}

#[test]
fn the_environment_wins_over_coveralls_yml() {
    let server = Server::start(vec![json(200, CLOSED)]);
    let dir = with_coveralls_yml(&format!(
        "repo_token: {FILE_TOKEN}\nservice_name: from-the-file\nendpoint: https://127.0.0.1:9\n\
         carryforward: from-the-file\n"
    ));
    let out = finish()
        .current_dir(dir.path())
        .against(&server)
        .env("COVERALLS_SERVICE_NAME", "from-the-variable")
        .env("COVERALLS_CARRYFORWARD_FLAGS", "unit")
        .run();
    assert_eq!(out.code, 0, "{out:#?}");
    let body = server.only_request().json();
    assert_eq!(body["repo_token"], TOKEN);
    assert_eq!(body["service_name"], "from-the-variable");
    assert_eq!(body["carryforward"], "unit");
    out.assert_no_secret(FILE_TOKEN);
}

#[test]
fn a_malformed_or_missing_named_config_file_is_a_configuration_error_that_names_it() {
    let server = Server::start(vec![json(200, CLOSED)]);
    let dir = with_coveralls_yml(&format!("repo_token: {FILE_TOKEN}\nrepo_name: [unclosed\n"));
    let out = finish().current_dir(dir.path()).against(&server).run();
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(
        out.stderr
            .contains("error: .coveralls.yml is not the YAML that coverage-reporter reads"),
        "{}",
        out.stderr
    );
    out.assert_no_secret(FILE_TOKEN);
    let out = finish()
        .current_dir(dir.path())
        .against(&server)
        .args(&["--config-path", "ci/coveralls.yml"])
        .run();
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(
        out.stderr.contains("ci/coveralls.yml cannot be read"),
        "{}",
        out.stderr
    );
    // Checked like COVERALLS_ENDPOINT, where that does not win over it.
    let dir = with_coveralls_yml("endpoint: ftp://cov.example\n");
    let out = finish()
        .current_dir(dir.path())
        .env("COVERALLS_REPO_TOKEN", TOKEN)
        .env("COVERALLS_SERVICE_NUMBER", "42")
        .run();
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(
        out.stderr
            .contains(".coveralls.yml: endpoint is \"ftp://cov.example\": the scheme must be"),
        "{}",
        out.stderr
    );
    assert!(server.requests().is_empty());
}
