//! What each source's CI sends, as the tests send it to a [`Receiver`]: a signed CircleCI
//! delivery, a Magnum CI hook with its secret in the URL, a signed GitHub delivery, a GitLab
//! Pipeline Hook with its token or its signature or both, and the events they carry.

use super::raw::head;
use super::sign::{sign, sign_standard};
use super::{Receiver, SECRET};

impl Receiver {
    /// A CircleCI delivery of `body`, of type `event`, signed with `secret`.
    pub fn circleci(&self, secret: &str, event: &str, body: &[u8]) -> (u16, serde_json::Value) {
        self.try_circleci(secret, event, body).unwrap()
    }

    /// The same, or the error where no answer came.
    pub fn try_circleci(
        &self,
        secret: &str,
        event: &str,
        body: &[u8],
    ) -> Result<(u16, serde_json::Value), ureq::Error> {
        let signature = format!("v1={}", sign(secret, body));
        self.try_post(
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

impl Receiver {
    /// A GitHub delivery of `body` as JSON, event `event`, signed with `secret`; its
    /// `X-GitHub-Delivery` is the body's own, as a redelivery's would be.
    pub fn github(&self, secret: &str, event: &str, body: &[u8]) -> (u16, serde_json::Value) {
        let signature = format!("sha256={}", sign(secret, body));
        let delivery = delivery_id(body);
        let headers = [
            ("content-type", "application/json"),
            ("x-github-event", event),
            ("x-github-delivery", delivery.as_str()),
            ("x-hub-signature-256", signature.as_str()),
            ("user-agent", "GitHub-Hookshot/5f6a3b2"),
        ];
        self.post("/github", &headers, body)
    }
}

/// How a GitLab hook proves itself: the hook's secret `token`, where it has one, and a
/// signature with the signing token `signing` made at `at` (seconds since the Unix epoch),
/// where it has one.
pub struct GitLabHook<'a> {
    pub token: Option<&'a str>,
    pub signing: Option<(&'a str, u64)>,
}

impl Receiver {
    /// A GitLab Pipeline Hook of `body`, with what `hook` says; its `webhook-id` (and
    /// `Idempotency-Key`) is the body's own, as a resend's would be.
    pub fn gitlab(&self, hook: GitLabHook, body: &[u8]) -> (u16, serde_json::Value) {
        let id = delivery_id(body);
        let mut headers = vec![
            ("content-type", "application/json".to_owned()),
            ("x-gitlab-event", "Pipeline Hook".to_owned()),
            (
                "x-gitlab-event-uuid",
                delivery_id(&[body, b"uuid"].concat()),
            ),
            ("idempotency-key", id.clone()),
            ("user-agent", "GitLab/19.0.0".to_owned()),
        ];
        if let Some(token) = hook.token {
            headers.push(("x-gitlab-token", token.to_owned()));
        }
        if let Some((signing, at)) = hook.signing {
            headers.push(("webhook-id", id.clone()));
            headers.push(("webhook-timestamp", at.to_string()));
            let signature = sign_standard(signing, &id, at, body);
            headers.push(("webhook-signature", signature));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        self.post("/gitlab", &headers, body)
    }
}

/// Seconds since the Unix epoch, now.
pub fn now() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.unwrap().as_secs()
}

/// The Pipeline Hook fixture, changed by `edit`: another pipeline, status, project…
pub fn pipeline_hook(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut hook: serde_json::Value =
        serde_json::from_slice(&fixture("gitlab_pipeline_hook.json")).unwrap();
    edit(&mut hook);
    serde_json::to_vec(&hook).unwrap()
}

/// A GUID for a delivery of `body` (GitHub's `X-GitHub-Delivery`, GitLab's `webhook-id`), the
/// same for the same body.
pub fn delivery_id(body: &[u8]) -> String {
    let hex = sign("delivery", body);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The completed `workflow_run` fixture, changed by `edit`: another run, attempt, workflow…
pub fn workflow_run(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut event: serde_json::Value =
        serde_json::from_slice(&fixture("github_workflow_run_completed.json")).unwrap();
    edit(&mut event);
    serde_json::to_vec(&event).unwrap()
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
