//! What each source's CI sends, as the tests send it to a [`Receiver`]: a signed CircleCI
//! delivery, a Magnum CI hook with its secret in the URL, and the events they carry.

use super::raw::head;
use super::sign::sign;
use super::{Receiver, SECRET};

impl Receiver {
    /// A CircleCI delivery of `body`, of type `event`, signed with `secret`.
    pub fn circleci(&self, secret: &str, event: &str, body: &[u8]) -> (u16, serde_json::Value) {
        let signature = format!("v1={}", sign(secret, body));
        self.post(
            "/circleci",
            &[
                ("content-type", "application/json"),
                ("circleci-event-type", event),
                ("circleci-signature", &signature),
            ],
            body,
        )
    }

    /// A Magnum CI hook of `body` with `secret` in the hook URL, and these headers.
    pub fn magnum(
        &self,
        secret: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, serde_json::Value) {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("secret", secret)
            .finish();
        self.post(&format!("/magnum?{query}"), headers, body)
    }
}

/// A fixture from `tests/fixtures/`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// The workflow-completed fixture with its ids replaced, as another delivery would carry.
pub fn workflow_event(event_id: &str, workflow_id: &str, slug: &str) -> Vec<u8> {
    let mut event: serde_json::Value =
        serde_json::from_slice(&fixture("circleci_workflow_completed_github_oauth.json")).unwrap();
    event["id"] = event_id.into();
    event["workflow"]["id"] = workflow_id.into();
    event["project"]["slug"] = slug.into();
    event["project"]["id"] = format!("id-of-{slug}").into();
    serde_json::to_vec(&event).unwrap()
}

/// A CircleCI delivery of `body` signed with [`SECRET`], as raw bytes: head and body.
pub fn circleci_request(body: &[u8]) -> Vec<u8> {
    let signature = format!("v1={}", sign(SECRET, body));
    let length = body.len().to_string();
    let headers = [
        ("Content-Length", length.as_str()),
        ("circleci-signature", &signature),
    ];
    let mut request = head("POST", "/circleci", &headers);
    request.extend_from_slice(body);
    request
}
