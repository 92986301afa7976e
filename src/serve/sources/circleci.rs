//! `POST /circleci`: CircleCI webhooks, signed with HMAC-SHA256. Only signed data counts:
//! the event type is the signed body's, not the unsigned header's.

use hyper::http::request::Parts;
use serde::Deserialize;

use super::auth::Signature;
use super::{About, IdKey, LogFields, Project, Reply, Settings, Source, Var, Verdict};
use super::{close, field, header, pong, secret, wanted};

pub struct CircleCi;

const SECRET: Var = Var {
    name: "CIRCLECI_WEBHOOK_SECRET",
    required: true,
    min_length: None,
};

/// `circleci-signature: v1=<hex>[,v2=…]`.
const SIGNATURE: Signature = Signature {
    header: "circleci-signature",
    scheme: "v1",
};

pub const SLUG: IdKey = IdKey {
    name: "circleci_slug",
    label: "CircleCI",
    normalize: normalize_slug,
};

pub const PROJECT_ID: IdKey = IdKey {
    name: "circleci_project_id",
    label: "CircleCI id",
    normalize: str::to_owned,
};

const ABOUT: About = About {
    name: "circleci",
    title: "CircleCI",
    service_name: "circleci",
    secrets: &[SECRET],
    keys: &[SLUG, PROJECT_ID],
    query_help: "",
};

impl Source for CircleCi {
    fn about(&self) -> &'static About {
        &ABOUT
    }

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
        // Authenticate the raw bytes before anything reads them.
        let signature = header(parts, SIGNATURE.header);
        SIGNATURE.verify(secret.expose().as_bytes(), body, signature)?;
        let event: Event = serde_json::from_slice(body)
            .map_err(|err| Reply::error(400, format!("malformed CircleCI event: {err}")))?;
        log.id = Some(event.id.clone());
        log.event = event.kind.clone();
        let Some(kind) = event.kind.as_deref() else {
            return Err(Reply::error(400, "malformed CircleCI event: no type"));
        };
        if let Some(said) = header(parts, "circleci-event-type").filter(|said| *said != kind) {
            return Err(Reply::error(
                400,
                format!(
                    "circleci-event-type is {} but the signed event is {}",
                    field(said, 64),
                    field(kind, 64)
                ),
            ));
        }
        match kind {
            "ping" => Ok(pong()),
            "workflow-completed" => self.workflow_completed(settings, &event),
            "job-completed" => self.job_completed(settings, &event),
            other => Ok(Verdict::Answer(Reply::ignored(format!(
                "event type {} is not one that closes a build",
                field(other, 64)
            )))),
        }
    }
}

/// CircleCI writes the same project as `gh/org/repo` and `github/org/repo`.
fn normalize_slug(slug: &str) -> String {
    let slug = slug.trim().to_ascii_lowercase();
    match slug.split_once('/') {
        Some(("gh", rest)) => format!("github/{rest}"),
        Some(("bb", rest)) => format!("bitbucket/{rest}"),
        _ => slug,
    }
}

/// The parts of an event we use. Payloads are open maps: unknown fields are ignored, and
/// everything not always present is optional.
#[derive(Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    project: Option<EventProject>,
    workflow: Option<Workflow>,
    job: Option<Job>,
}

#[derive(Deserialize)]
struct EventProject {
    id: Option<String>,
    slug: Option<String>,
}

#[derive(Deserialize)]
struct Workflow {
    id: String,
    name: Option<String>,
    status: Option<String>,
}

#[derive(Deserialize)]
struct Job {
    name: Option<String>,
    status: Option<String>,
}

impl CircleCi {
    fn workflow_completed(&self, settings: &Settings, event: &Event) -> Result<Verdict, Reply> {
        let Some(workflow) = &event.workflow else {
            return Err(Reply::error(
                400,
                "malformed CircleCI event: workflow-completed without a workflow",
            ));
        };
        let project = project_of(settings, event)?;
        wanted(&project.workflows, workflow.name.as_deref(), "workflow")?;
        wanted(&project.statuses, workflow.status.as_deref(), "status")?;
        self.close_workflow(project, workflow, event)
    }

    /// A job's end closes the build only where it is the project's `final_job`, in one of
    /// the project's workflows.
    fn job_completed(&self, settings: &Settings, event: &Event) -> Result<Verdict, Reply> {
        let project = project_of(settings, event)?;
        let job = event.job.as_ref();
        let is_final = project.final_job.is_some()
            && project.final_job.as_deref() == job.and_then(|j| j.name.as_deref());
        if !is_final {
            return Err(Reply::ignored(
                "job-completed: builds close on workflow-completed",
            ));
        }
        let Some(workflow) = &event.workflow else {
            return Err(Reply::ignored("job-completed without a workflow"));
        };
        wanted(&project.workflows, workflow.name.as_deref(), "workflow")?;
        let status = job.and_then(|j| j.status.as_deref());
        wanted(&project.statuses, status, "status")?;
        self.close_workflow(project, workflow, event)
    }

    fn close_workflow(
        &self,
        project: &Project,
        workflow: &Workflow,
        event: &Event,
    ) -> Result<Verdict, Reply> {
        // Every reporter used CIRCLE_WORKFLOW_ID: the workflow's id is the build number.
        let from = format!("workflow.id of CircleCI event {}", field(&event.id, 64));
        close(self, project, &workflow.id, from)
    }
}

/// The configured project an event belongs to; a project nobody configured is ignored, since
/// a redelivery cannot help (so this is not an error status).
fn project_of<'a>(settings: &'a Settings, event: &Event) -> Result<&'a Project, Reply> {
    let (slug, id) = match &event.project {
        Some(p) => (p.slug.as_deref(), p.id.as_deref()),
        None => (None, None),
    };
    settings
        .find(&CircleCi, &[(&SLUG, slug), (&PROJECT_ID, id)])
        .ok_or_else(|| {
            Reply::ignored(format!(
                "no project is configured for CircleCI project {} (id {})",
                field(slug.unwrap_or("?"), 200),
                field(id.unwrap_or("?"), 64)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: [(&str, &str, &str); 3] = [
        (
            "hello world",
            "secret",
            "734cc62f32841568f45715aeb9f4d7891324e6d948e4c6c60c0621cdac48623a",
        ),
        (
            "lalala",
            "another-secret",
            "daa220016c8f29a8b214fbfc3671aeec2145cfb1e6790184ffb38b6d0425fa00",
        ),
        (
            "an-important-request-payload",
            "hunter123",
            "9be2242094a9a8c00c64306f382a7f9d691de910b4a266f67bd314ef18ac49fa",
        ),
    ];

    fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), (u16, String)> {
        SIGNATURE.verify(secret, body, header).map_err(|reply| {
            let error = reply.body["error"].as_str().expect("an error message");
            (reply.status, error.to_owned())
        })
    }

    #[test]
    fn the_published_test_vectors_verify() {
        for (body, secret, v1) in VECTORS {
            let header = format!("v1={v1},v2=whatever");
            assert_eq!(
                verify(secret.as_bytes(), body.as_bytes(), Some(&header)),
                Ok(()),
                "{body}"
            );
            let wrong = verify(b"not-the-secret", body.as_bytes(), Some(&header));
            assert_eq!(
                wrong.unwrap_err(),
                (401, "circleci-signature does not match the body".to_owned())
            );
        }
    }

    #[test]
    fn missing_malformed_and_downgraded_signatures_fail() {
        let (body, secret, v1) = VECTORS[0];
        let check = |header: Option<&str>| verify(secret.as_bytes(), body.as_bytes(), header);
        let no_match = (401, "circleci-signature does not match the body".to_owned());
        assert_eq!(
            check(None),
            Err((401, "missing circleci-signature header".to_owned()))
        );
        let no_v1 = (401, "circleci-signature has no v1 signature".to_owned());
        assert_eq!(check(Some("v2=abc")), Err(no_v1.clone()));
        assert_eq!(check(Some(&format!("v0={v1}"))), Err(no_v1));
        assert_eq!(check(Some("v1=zz")), Err(no_match.clone()));
        assert_eq!(
            check(Some(&format!("v1={}", &v1[..62]))),
            Err(no_match.clone())
        );
        assert!(
            check(Some(&format!("v1={}", v1.to_uppercase()))).is_ok(),
            "hex case does not matter"
        );
        // A long header is refused before any HMAC; only a handful of entries count.
        let long = vec!["v1="; 5000].join(",");
        assert_eq!(
            check(Some(&long)),
            Err((400, "circleci-signature is over 1024 bytes".to_owned()))
        );
        let many = format!("v1=00,v1=01,v1=02,v1=03,v1={v1}");
        assert_eq!(check(Some(&many)), Err(no_match));
        let fourth = format!("v1=00,v1=01,v1=02,v1={v1}");
        assert!(check(Some(&fourth)).is_ok());
    }

    #[test]
    fn slugs_are_one_spelling_of_the_vcs() {
        assert_eq!(normalize_slug(" GH/Acme/API "), "github/acme/api");
        assert_eq!(normalize_slug("bb/acme/api"), "bitbucket/acme/api");
        assert_eq!(normalize_slug("circleci/x/y"), "circleci/x/y");
    }
}
