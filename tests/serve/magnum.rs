//! `POST /magnum?secret=…`: Magnum CI hooks, as a JSON body or a form field.

use crate::receiver::{MAGNUM, Receiver, fixture};
use crate::support::{CLOSED, Server, json};
use crate::{closing, error};

#[test]
fn magnum_hooks_as_json_body_and_as_form_field() {
    let (coveralls, receiver) = closing();
    let hook = fixture("magnum_hook.json");
    let (status, answer) = receiver.magnum(MAGNUM, &[("content-type", "application/json")], &hook);
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
    let (status, answer) = receiver.magnum(
        MAGNUM,
        &[("content-type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        coveralls.requests()[1].json()["payload"]["build_num"],
        "131"
    );

    // The same build again: closed once.
    let (status, answer) = receiver.magnum(MAGNUM, &[], &hook);
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
    let wrong = "wrong secret in the hook URL";
    for (path, expected) in [
        ("/magnum", "missing ?secret= in the hook URL"),
        ("/magnum?secret=nope", wrong),
        (&format!("/magnum?secret={MAGNUM}x"), wrong),
        (&format!("/magnum?secret={}", &MAGNUM[1..]), wrong),
    ] {
        let (status, answer) = receiver.post(path, &[], &hook);
        assert_eq!(status, 401, "{path}");
        assert_eq!(error(&answer), expected, "{path}");
    }
    assert!(coveralls.requests().is_empty());
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
    let (status, answer) = receiver.magnum(MAGNUM, &[], &fixture("magnum_hook.json"));
    // Project 43, build 130, status "pass": the only one this project closes on.
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["project"].as_str(), answer["build_num"].as_str()),
        (Some("magnum-43"), Some("130"))
    );
}

#[test]
fn malformed_hooks_are_refused() {
    let (coveralls, receiver) = closing();
    let (status, answer) = receiver.magnum(MAGNUM, &[], br#"{"project_id": 43}"#);
    assert_eq!(status, 400);
    assert!(
        error(&answer).contains("missing field `number`"),
        "{answer}"
    );
    let (status, answer) = receiver.magnum(
        MAGNUM,
        &[("content-type", "application/x-www-form-urlencoded")],
        b"other=1",
    );
    assert_eq!(status, 400);
    assert_eq!(
        error(&answer),
        "malformed Magnum CI hook: no form field \"payload\""
    );
    assert!(coveralls.requests().is_empty());
}
