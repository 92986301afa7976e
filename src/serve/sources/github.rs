//! `POST /github`: GitHub's `workflow_run` webhooks, signed with HMAC-SHA256
//! (`X-Hub-Signature-256`). A run's `completed` closes its build: the run's id is the build
//! number its uploads sent (`GITHUB_RUN_ID`), and its attempt tells a re-run, which keeps the
//! id, from the run before. A repository's webhook fires for every workflow, so a project
//! names the workflows that close its build.

use hyper::http::request::Parts;
use serde::Deserialize;

use super::auth::Signature;
use super::{About, Fields, IdKey, LogFields, Project, Reply, Settings, Source, Var, Verdict};
use super::{any_case, close_with, field, header, payload, pong, secret, wanted_or};

pub struct GitHub;

const SECRET: Var = Var {
    name: "GITHUB_WEBHOOK_SECRET",
    required: true,
    min_length: None,
};

/// `X-Hub-Signature-256: sha256=<hex>`; the SHA-1 `X-Hub-Signature` does not count.
const SIGNATURE: Signature = Signature {
    header: "x-hub-signature-256",
    scheme: "sha256",
};

pub const REPOSITORY: IdKey = IdKey {
    name: "github_repository",
    label: "GitHub",
    normalize: any_case,
};

/// The conclusions that close a build where a project names none: those of runs whose jobs
/// ran (in `skipped`, `startup_failure`, `action_required`, … none did).
const CONCLUSIONS: &[&str] = &["success", "failure", "cancelled", "timed_out"];

const ABOUT: About = About {
    name: "github",
    title: "GitHub",
    service_name: "github",
    secrets: &[SECRET],
    keys: &[REPOSITORY],
    query_help: "",
};

impl Source for GitHub {
    fn about(&self) -> &'static About {
        &ABOUT
    }

    /// A project must name its workflows, which the one project from the environment cannot.
    fn check(&self, settings: &Settings) -> Result<(), String> {
        match settings.projects.iter().any(Project::any) {
            true => Err(format!(
                "{} is set without --config: a GitHub project must name the workflows that \
                 close its build (a repository's webhook reports every workflow's runs), and \
                 only a projects file can (github_repository and workflows)",
                SECRET.name
            )),
            false => Ok(()),
        }
    }

    /// The signature over the raw body first; then the event, from its header, and its
    /// `action`: never from the run's `status`, which may say `completed` in a `requested`.
    fn admit(&self, settings: &Settings, parts: &Parts) -> Result<(), Reply> {
        secret(self, settings, &SECRET)?;
        SIGNATURE.present(header(parts, SIGNATURE.header))
    }

    fn verdict(
        &self,
        settings: &Settings,
        parts: &Parts,
        body: &[u8],
        log: &mut LogFields,
    ) -> Result<Verdict, Reply> {
        let secret = secret(self, settings, &SECRET)?;
        let signature = header(parts, SIGNATURE.header);
        SIGNATURE.verify(secret.expose().as_bytes(), body, signature)?;
        log.id = header(parts, "x-github-delivery").map(str::to_owned);
        let Some(kind) = header(parts, "x-github-event") else {
            return Err(Reply::error(400, "missing X-GitHub-Event header"));
        };
        log.event = Some(kind.to_owned());
        match kind {
            "ping" => return Ok(pong()),
            "workflow_run" => {}
            other => {
                return Err(Reply::ignored(format!(
                    "event {} is not one that closes a build (expected workflow_run)",
                    field(other, 64)
                )));
            }
        }
        let event: Event = payload(parts, body, "GitHub event")?;
        match event.action.as_deref() {
            Some("completed") => self.completed(settings, event),
            action => Err(Reply::ignored(format!(
                "workflow_run {}: builds close on completed",
                field(action.unwrap_or("without an action"), 64)
            ))),
        }
    }
}

/// The parts of a `workflow_run` event we use; the rest of the open map is ignored.
#[derive(Deserialize)]
struct Event {
    action: Option<String>,
    workflow_run: Option<Run>,
    /// Where older payloads keep the workflow's path.
    workflow: Option<Workflow>,
    repository: Option<Repository>,
}

#[derive(Deserialize)]
struct Run {
    id: u64,
    name: Option<String>,
    path: Option<String>,
    run_attempt: Option<u64>,
    conclusion: Option<String>,
    head_sha: Option<String>,
    head_branch: Option<String>,
    html_url: Option<String>,
    pull_requests: Option<Vec<PullRequest>>,
}

#[derive(Deserialize)]
struct PullRequest {
    number: Option<u64>,
}

#[derive(Deserialize)]
struct Workflow {
    name: Option<String>,
    path: Option<String>,
}

#[derive(Deserialize)]
struct Repository {
    full_name: Option<String>,
}

impl GitHub {
    /// A run that completed: the close of its build, if its project closes on its workflow
    /// and its conclusion.
    fn completed(&self, settings: &Settings, event: Event) -> Result<Verdict, Reply> {
        let Some(run) = event.workflow_run else {
            let why = "malformed GitHub event: a completed workflow_run without its workflow_run";
            return Err(Reply::error(400, why));
        };
        let repository = event.repository.and_then(|r| r.full_name);
        let project = project_of(settings, repository.as_deref())?;
        let workflow = event.workflow.as_ref();
        workflow_wanted(project, &run, workflow)?;
        let conclusion = run.conclusion.as_deref();
        wanted_or(&project.statuses, CONCLUSIONS, conclusion, "conclusion")?;
        let pull_request = run.pull_requests.iter().flatten().find_map(|pr| pr.number);
        let known = Fields {
            attempt: run.run_attempt.map(|n| n.to_string()),
            commit: run.head_sha,
            branch: run.head_branch,
            pull_request: pull_request.map(|n| n.to_string()),
            build_url: run.html_url,
            repo_name: repository,
            ..Fields::default()
        };
        // The uploads sent GITHUB_RUN_ID: the run's id is the build number.
        let from = format!(
            "workflow_run.id of a run in {}, the uploads' GITHUB_RUN_ID",
            field(known.repo_name.as_deref().unwrap_or("?"), 200)
        );
        close_with(self, project, &run.id.to_string(), from, known)
    }
}

/// Whether the project closes on the run's workflow, named by its name or by its path
/// (`workflow_run.path`, or in older payloads `workflow.path`).
fn workflow_wanted(project: &Project, run: &Run, workflow: Option<&Workflow>) -> Result<(), Reply> {
    let name = run.name.as_deref().filter(|name| !name.is_empty());
    let name = name.or(workflow.and_then(|w| w.name.as_deref()));
    let path = run
        .path
        .as_deref()
        .or(workflow.and_then(|w| w.path.as_deref()));
    let named =
        |value: Option<&str>| value.is_some_and(|v| project.workflows.iter().any(|w| w == v));
    if named(name) || named(path) {
        return Ok(());
    }
    Err(Reply::ignored(format!(
        "workflow {} ({}) does not close a build (expected one of {})",
        field(name.unwrap_or(""), 100),
        field(path.unwrap_or("no path"), 200),
        project.workflows.join(", ")
    )))
}

/// The configured project of a repository; one nobody configured is ignored (202): a
/// redelivery cannot help.
fn project_of<'a>(settings: &'a Settings, repository: Option<&str>) -> Result<&'a Project, Reply> {
    settings
        .find(&GitHub, &[(&REPOSITORY, repository)])
        .ok_or_else(|| {
            Reply::ignored(format!(
                "no project is configured for GitHub repository {}",
                field(repository.unwrap_or("?"), 200)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's published vector (its docs, "Validating webhook deliveries"), and one over
    /// the completed fixture: webhook_signature_vectors.json.
    #[test]
    fn the_published_vectors_verify() {
        let fixture = include_bytes!("testdata/github_workflow_run_completed.json");
        let vectors: [(&str, &[u8], &str); 2] = [
            (
                "It's a Secret to Everybody",
                b"Hello, World!",
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            ),
            (
                "test-secret",
                fixture,
                "sha256=8a462e75b1d19a517cbaea3f7c8501210bd868fddf22d7a4127489cecf5e8cd8",
            ),
        ];
        for (secret, body, header) in vectors {
            assert_eq!(
                SIGNATURE.verify(secret.as_bytes(), body, Some(header)),
                Ok(())
            );
            let wrong = SIGNATURE.verify(b"not-the-secret", body, Some(header));
            let expected = "x-hub-signature-256 does not match the body";
            assert_eq!(wrong, Err(Reply::error(401, expected)));
            // The SHA-1 header's form (`sha1=`) is no signature of this scheme.
            let sha1 = header.replacen("sha256=", "sha1=", 1);
            let legacy = SIGNATURE.verify(secret.as_bytes(), body, Some(&sha1));
            let expected = "x-hub-signature-256 has no sha256 signature";
            assert_eq!(legacy, Err(Reply::error(401, expected)));
        }
    }
}
