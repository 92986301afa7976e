//! The request's wire format: the official reporter's JSON body, from a [`Build`].

use serde::Serialize;
use serde_json::Value;

use crate::commit::Head;

/// The build to close: everything the request says but the token.
#[derive(Debug, Clone, Default)]
pub struct Build {
    pub number: String,
    /// Where the number came from, for logs and hints: a flag, a variable, `VAR, CI name`.
    pub number_from: String,
    pub service_name: Option<String>,
    pub repo_name: Option<String>,
    pub attempt: Option<String>,
    pub carryforward: Vec<String>,
    pub commit: Option<String>,
    pub branch: Option<String>,
    pub pull_request: Option<String>,
    pub build_url: Option<String>,
    pub job_id: Option<String>,
    /// The head commit's author, committer and message.
    pub head: Head,
}

/// The JSON body: what the official reporter sends (each field only when known), with the
/// token in it, never in the URL, where proxies and servers would log it.
#[derive(Serialize)]
struct Body<'a> {
    repo_token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    repo_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_name: Option<&'a str>,
    service_number: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_job_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_attempt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_branch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_pull_request: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_build_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    commit_sha: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    carryforward: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    git: Option<Git<'a>>,
    payload: Payload<'a>,
}

#[derive(Serialize)]
struct Payload<'a> {
    build_num: &'a str,
    status: &'static str,
}

/// What Coveralls needs, with `carryforward`, to create a build that no upload made.
#[derive(Serialize)]
struct Git<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    branch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    head: Option<GitHead<'a>>,
}

#[derive(Serialize)]
struct GitHead<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    author_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    author_email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    committer_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    committer_email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

/// The request's body for `build`, as JSON: the one form in which it is both sent and, in a
/// dry run, shown (one serializer of it in the binary, not one a form).
pub fn body(build: &Build, repo_token: &str) -> Value {
    serde_json::to_value(Body::new(build, repo_token)).expect("the body serialises")
}

impl<'a> Body<'a> {
    fn new(build: &'a Build, repo_token: &'a str) -> Self {
        let head = build.commit.as_deref().map(|id| {
            let head = &build.head;
            GitHead {
                id,
                author_name: head.author_name.as_deref(),
                author_email: head.author_email.as_deref(),
                committer_name: head.committer_name.as_deref(),
                committer_email: head.committer_email.as_deref(),
                message: head.message.as_deref(),
            }
        });
        let branch = build.branch.as_deref();
        let git = (branch.is_some() || head.is_some()).then_some(Git { branch, head });
        Body {
            repo_token,
            repo_name: build.repo_name.as_deref(),
            service_name: build.service_name.as_deref(),
            service_number: &build.number,
            service_job_id: build.job_id.as_deref(),
            service_attempt: build.attempt.as_deref(),
            service_branch: branch,
            service_pull_request: build.pull_request.as_deref(),
            service_build_url: build.build_url.as_deref(),
            commit_sha: build.commit.as_deref(),
            carryforward: Some(build.carryforward.join(",")).filter(|flags| !flags.is_empty()),
            git,
            payload: Payload {
                build_num: &build.number,
                status: "done",
            },
        }
    }
}
