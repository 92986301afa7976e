//! Routes and methods, a source switched off, and bodies too large to read.

use crate::receiver::{MAGNUM, REPO_TOKEN as TOKEN, Raw, Receiver, SECRET, fixture, head};
use crate::support::{CLOSED, Server, json};
use crate::{SIGNATURE_TO_CHECK, closing, error};

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
    let (status, answer) = receiver.magnum(MAGNUM, &[], &fixture("magnum_hook.json"));
    assert_eq!(status, 404, "{answer}");
    assert_eq!(
        error(&answer),
        "the Magnum CI receiver is off: MAGNUM_HOOK_SECRET is not set"
    );
    assert!(
        receiver
            .log()
            .contains("POST /circleci: on; POST /magnum: off (MAGNUM_HOOK_SECRET is not set)")
    );
    assert!(coveralls.requests().is_empty());
}

#[test]
fn a_wrong_method_is_told_the_right_ones_and_a_wrong_path_every_route() {
    let (_coveralls, receiver) = closing();
    let cases = [
        (
            "GET",
            "/circleci",
            405,
            Some("POST"),
            "GET is not allowed on /circleci",
        ),
        (
            "PUT",
            "/magnum",
            405,
            Some("POST"),
            "PUT is not allowed on /magnum",
        ),
        (
            "POST",
            "/healthz",
            405,
            Some("GET, HEAD"),
            "POST is not allowed on /healthz",
        ),
        (
            "DELETE",
            "/metrics",
            405,
            Some("GET, HEAD"),
            "DELETE is not allowed on /metrics",
        ),
        (
            "POST",
            "/circleci/",
            404,
            None,
            "no route /circleci/; expected /circleci, /magnum, /github, /gitlab, /healthz or \
             /metrics",
        ),
    ];
    for (method, path, status, allow, expected) in cases {
        let mut raw = Raw::connect(receiver.addr());
        raw.send(&head(method, path, &[("Content-Length", "0")]))
            .unwrap();
        let answer = raw.answer().expect("an answer");
        assert_eq!(answer.status, status, "{method} {path}: {answer:?}");
        let allowed = answer.head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("allow").then(|| value.trim())
        });
        assert_eq!(allowed, allow, "{method} {path}: {answer:?}");
        let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(error(&body), expected, "{method} {path}");
    }
}

#[test]
fn a_chunked_body_over_1_mib_is_refused() {
    let (coveralls, receiver) = closing();
    // No length given up front: cut off at 1 MiB all the same.
    let mut raw = Raw::connect(receiver.addr());
    let headers = [("Transfer-Encoding", "chunked"), SIGNATURE_TO_CHECK];
    let mut request = head("POST", "/circleci", &headers);
    request.extend_from_slice(format!("{:x}\r\n", (1 << 20) + 1).as_bytes());
    request.extend(std::iter::repeat_n(b'x', (1 << 20) + 1));
    raw.send(&request).unwrap();
    let answer = raw.answer().expect("an answer");
    assert_eq!(answer.status, 413, "{answer:?}");
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(error(&body), "the body is over 1048576 bytes");
    assert!(answer.head.contains("connection: close"), "{answer:?}");
    assert!(coveralls.requests().is_empty());
}

#[test]
fn healthcheck_asks_a_running_receiver_and_fails_where_none_answers() {
    let (_coveralls, receiver) = closing();
    let healthcheck = |args: &[&str], env: &[(&str, &str)]| {
        let output = crate::support::binary()
            .arg("healthcheck")
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.code(), said)
    };
    let url = format!("{}/healthz", receiver.url);
    let (code, said) = healthcheck(&[&url], &[]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains(r#""ok":true"#), "{said}");
    let listen = receiver.url.trim_start_matches("http://").to_owned();
    let port = listen.rsplit_once(':').unwrap().1;
    let every_address = format!("0.0.0.0:{port}");
    let (code, said) = healthcheck(&[], &[("COVERALLS_FINISH_LISTEN", &every_address)]);
    assert_eq!(
        code,
        Some(0),
        "from the listen address, on loopback: {said}"
    );
    let nowhere = format!("{}/healthz", crate::support::refused_url());
    let (code, said) = healthcheck(&[&nowhere], &[]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains(&nowhere), "{said}");
}
