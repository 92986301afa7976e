//! `POST /circleci`: CircleCI webhooks, signed with HMAC-SHA256.

use std::time::Instant;

use ring::hmac;
use serde::Deserialize;
use serde_json::json;
use tiny_http::Request;

use super::{App, Delivery, Reply, build, close, wanted};

/// The parts of an event we use. Payloads are open maps: unknown fields are ignored, and
/// everything not always present is optional.
#[derive(Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    project: Option<Project>,
    workflow: Option<Workflow>,
    job: Option<Job>,
}

#[derive(Deserialize)]
struct Project {
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

pub(super) fn handle(
    app: &App,
    request: &Request,
    body: &[u8],
    deadline: Instant,
    delivery: &mut Delivery,
) -> Reply {
    let Some(secret) = &app.settings.circleci_secret else {
        return Reply::error(
            404,
            "the CircleCI receiver is off: CIRCLECI_WEBHOOK_SECRET is not set",
        );
    };
    let header = |name: &str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str().to_owned())
    };
    // Authenticate the raw bytes before anything reads them.
    if let Err(why) = verify(
        secret.expose().as_bytes(),
        body,
        header("circleci-signature").as_deref(),
    ) {
        return Reply::error(401, why);
    }
    let event: Event = match serde_json::from_slice(body) {
        Ok(event) => event,
        Err(err) => return Reply::error(400, format!("malformed CircleCI event: {err}")),
    };
    let kind = header("circleci-event-type")
        .or(event.kind.clone())
        .unwrap_or_default();
    delivery.event = Some(kind.clone());
    delivery.id = Some(event.id.clone());
    match kind.as_str() {
        "ping" => Reply::new(200, json!({"ok": true, "event": "ping"})),
        "workflow-completed" => workflow_completed(app, &event, deadline, delivery),
        "job-completed" => job_completed(app, &event, deadline, delivery),
        other => Reply::ignored(format!(
            "event type {other:?} is not one that closes a build"
        )),
    }
}

fn workflow_completed(
    app: &App,
    event: &Event,
    deadline: Instant,
    delivery: &mut Delivery,
) -> Reply {
    let Some(workflow) = &event.workflow else {
        return Reply::error(
            400,
            "malformed CircleCI event: workflow-completed without a workflow",
        );
    };
    let project = match project_of(app, event) {
        Ok(project) => project,
        Err(reply) => return reply,
    };
    if let Err(reply) = wanted(&project.workflows, workflow.name.as_deref(), "workflow")
        .and_then(|()| wanted(&project.statuses, workflow.status.as_deref(), "status"))
    {
        return reply;
    }
    close_workflow(app, project, workflow, event, deadline, delivery)
}

/// A job's end closes the build only where it is the project's `final_job`.
fn job_completed(app: &App, event: &Event, deadline: Instant, delivery: &mut Delivery) -> Reply {
    let project = match project_of(app, event) {
        Ok(project) => project,
        Err(reply) => return reply,
    };
    let job = event.job.as_ref();
    let job_name = job.and_then(|j| j.name.as_deref());
    match (&project.final_job, &event.workflow) {
        (Some(final_job), Some(workflow)) if Some(final_job.as_str()) == job_name => {
            let status = job.and_then(|j| j.status.as_deref());
            if let Err(reply) = wanted(&project.statuses, status, "status") {
                return reply;
            }
            close_workflow(app, project, workflow, event, deadline, delivery)
        }
        (Some(_), None) => Reply::ignored("job-completed without a workflow"),
        _ => Reply::ignored("job-completed: builds close on workflow-completed"),
    }
}

/// The configured project an event belongs to; a project nobody configured is ignored, since
/// a redelivery cannot help (so this is not an error status).
fn project_of<'a>(app: &'a App, event: &Event) -> Result<&'a super::Project, Reply> {
    let (slug, id) = match &event.project {
        Some(p) => (p.slug.as_deref(), p.id.as_deref()),
        None => (None, None),
    };
    app.settings.circleci_project(slug, id).ok_or_else(|| {
        Reply::ignored(format!(
            "no project is configured for CircleCI project {} (id {})",
            slug.unwrap_or("?"),
            id.unwrap_or("?")
        ))
    })
}

fn close_workflow(
    app: &App,
    project: &super::Project,
    workflow: &Workflow,
    event: &Event,
    deadline: Instant,
    delivery: &mut Delivery,
) -> Reply {
    // Every reporter used CIRCLE_WORKFLOW_ID: the workflow's id is the build number.
    let from = format!("workflow.id of CircleCI event {}", event.id);
    let build = build(workflow.id.clone(), from, "circleci", project);
    let key = format!("circleci {} {}", project.name, workflow.id);
    close(app, project, build, &key, deadline, delivery)
}

/// Check `circleci-signature: v1=<hex>[,v2=…]`: only `v1` counts (a request cannot
/// downgrade to something weaker), compared in constant time over the raw body.
pub fn verify(secret: &[u8], body: &[u8], signature: Option<&str>) -> Result<(), String> {
    let Some(signature) = signature else {
        return Err("missing circleci-signature header".to_owned());
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut saw_v1 = false;
    for part in signature.split(',') {
        let Some(hex) = part.trim().strip_prefix("v1=") else {
            continue;
        };
        saw_v1 = true;
        if let Some(tag) = decode_hex(hex) {
            if hmac::verify(&key, body, &tag).is_ok() {
                return Ok(());
            }
        }
    }
    Err(if saw_v1 {
        "circleci-signature does not match the body".to_owned()
    } else {
        "circleci-signature has no v1 signature".to_owned()
    })
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
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
                "circleci-signature does not match the body"
            );
        }
    }

    #[test]
    fn missing_malformed_and_downgraded_signatures_fail() {
        let (body, secret, v1) = VECTORS[0];
        let check = |header: Option<&str>| verify(secret.as_bytes(), body.as_bytes(), header);
        assert!(check(None).unwrap_err().contains("missing"));
        assert!(check(Some("v2=abc")).unwrap_err().contains("no v1"));
        assert!(check(Some(&format!("v0={v1}"))).is_err());
        assert!(check(Some("v1=zz")).is_err());
        assert!(check(Some(&format!("v1={}", &v1[..62]))).is_err());
        assert!(
            check(Some(&format!("v1={}", v1.to_uppercase()))).is_ok(),
            "hex case does not matter"
        );
    }

    #[test]
    fn every_fixture_parses() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if !name.starts_with("circleci_") {
                continue;
            }
            let event: Event = serde_json::from_slice(&std::fs::read(&path).unwrap())
                .unwrap_or_else(|err| panic!("{name}: {err}"));
            assert!(!event.id.is_empty(), "{name}");
            if name.contains("workflow_completed") {
                assert_eq!(
                    event.workflow.unwrap().id,
                    "fda08377-fe7e-46b1-8992-3a7aaecac9c3"
                );
            }
            seen += 1;
        }
        assert_eq!(seen, 4);
    }
}
