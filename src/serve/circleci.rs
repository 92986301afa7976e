//! `POST /circleci`: CircleCI webhooks, signed with HMAC-SHA256. Only signed data counts:
//! the event type is the signed body's, not the unsigned header's.

use hyper::HeaderMap;
use ring::hmac;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::log::field;
use super::{App, Delivery, Reply, Verdict, request, wanted};

/// A `circleci-signature` header longer than this is refused before any HMAC is computed.
const MAX_SIGNATURE_HEADER: usize = 1024;
/// At most this many `v1=` entries are compared with the body's HMAC.
const MAX_SIGNATURES: usize = 4;

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

pub(super) fn verdict(
    app: &App,
    headers: &HeaderMap,
    body: &[u8],
    delivery: &mut Delivery,
) -> Verdict {
    read(app, headers, body, delivery).unwrap_or_else(Verdict::Answer)
}

fn read(
    app: &App,
    headers: &HeaderMap,
    body: &[u8],
    delivery: &mut Delivery,
) -> Result<Verdict, Reply> {
    let Some(secret) = &app.settings.circleci_secret else {
        return Err(Reply::error(
            404,
            "the CircleCI receiver is off: CIRCLECI_WEBHOOK_SECRET is not set",
        ));
    };
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    // Authenticate the raw bytes before anything reads them.
    verify(
        secret.expose().as_bytes(),
        body,
        header("circleci-signature"),
    )
    .map_err(|(status, why)| Reply::error(status, why))?;
    let event: Event = serde_json::from_slice(body)
        .map_err(|err| Reply::error(400, format!("malformed CircleCI event: {err}")))?;
    delivery.id = Some(event.id.clone());
    delivery.event = event.kind.clone();
    let Some(kind) = event.kind.as_deref() else {
        return Err(Reply::error(400, "malformed CircleCI event: no type"));
    };
    if let Some(said) = header("circleci-event-type").filter(|said| *said != kind) {
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
        "ping" => Ok(Verdict::Answer(Reply::new(
            200,
            json!({"ok": true, "event": "ping"}),
        ))),
        "workflow-completed" => workflow_completed(app, &event),
        "job-completed" => job_completed(app, &event),
        other => Ok(Verdict::Answer(Reply::ignored(format!(
            "event type {} is not one that closes a build",
            field(other, 64)
        )))),
    }
}

fn workflow_completed(app: &App, event: &Event) -> Result<Verdict, Reply> {
    let Some(workflow) = &event.workflow else {
        return Err(Reply::error(
            400,
            "malformed CircleCI event: workflow-completed without a workflow",
        ));
    };
    let project = project_of(app, event)?;
    let settings = &app.settings.projects[project];
    wanted(&settings.workflows, workflow.name.as_deref(), "workflow")?;
    wanted(&settings.statuses, workflow.status.as_deref(), "status")?;
    close_workflow(app, project, workflow, event)
}

/// A job's end closes the build only where it is the project's `final_job`, in one of the
/// project's workflows.
fn job_completed(app: &App, event: &Event) -> Result<Verdict, Reply> {
    let project = project_of(app, event)?;
    let settings = &app.settings.projects[project];
    let job = event.job.as_ref();
    let is_final = settings.final_job.is_some()
        && settings.final_job.as_deref() == job.and_then(|j| j.name.as_deref());
    if !is_final {
        return Err(Reply::ignored(
            "job-completed: builds close on workflow-completed",
        ));
    }
    let Some(workflow) = &event.workflow else {
        return Err(Reply::ignored("job-completed without a workflow"));
    };
    wanted(&settings.workflows, workflow.name.as_deref(), "workflow")?;
    wanted(
        &settings.statuses,
        job.and_then(|j| j.status.as_deref()),
        "status",
    )?;
    close_workflow(app, project, workflow, event)
}

fn close_workflow(
    app: &App,
    project: usize,
    workflow: &Workflow,
    event: &Event,
) -> Result<Verdict, Reply> {
    // Every reporter used CIRCLE_WORKFLOW_ID: the workflow's id is the build number.
    let from = format!("workflow.id of CircleCI event {}", field(&event.id, 64));
    request(app, project, &workflow.id, from, "circleci")
        .map(|request| Verdict::Close(Box::new(request)))
}

/// The configured project an event belongs to; a project nobody configured is ignored, since
/// a redelivery cannot help (so this is not an error status).
fn project_of(app: &App, event: &Event) -> Result<usize, Reply> {
    let (slug, id) = match &event.project {
        Some(p) => (p.slug.as_deref(), p.id.as_deref()),
        None => (None, None),
    };
    app.settings.circleci_project(slug, id).ok_or_else(|| {
        Reply::ignored(format!(
            "no project is configured for CircleCI project {} (id {})",
            field(slug.unwrap_or("?"), 200),
            field(id.unwrap_or("?"), 64)
        ))
    })
}

/// Check `circleci-signature: v1=<hex>[,v2=…]`: only `v1` counts (a request cannot
/// downgrade to something weaker), compared in constant time with the HMAC of the raw body,
/// computed once. A header too long to be honest is refused before any HMAC.
pub fn verify(secret: &[u8], body: &[u8], signature: Option<&str>) -> Result<(), (u16, String)> {
    let Some(signature) = signature else {
        return Err((401, "missing circleci-signature header".to_owned()));
    };
    if signature.len() > MAX_SIGNATURE_HEADER {
        return Err((
            400,
            format!("circleci-signature is over {MAX_SIGNATURE_HEADER} bytes"),
        ));
    }
    let candidates: Vec<&str> = signature
        .split(',')
        .filter_map(|part| part.trim().strip_prefix("v1="))
        .take(MAX_SIGNATURES)
        .collect();
    if candidates.is_empty() {
        return Err((401, "circleci-signature has no v1 signature".to_owned()));
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, body);
    let matches = candidates
        .iter()
        .filter_map(|hex| decode_hex(hex))
        .any(|candidate| bool::from(candidate.as_slice().ct_eq(tag.as_ref())));
    match matches {
        true => Ok(()),
        false => Err((401, "circleci-signature does not match the body".to_owned())),
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 || !hex.is_ascii() {
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
                (401, "circleci-signature does not match the body".to_owned())
            );
        }
    }

    #[test]
    fn missing_malformed_and_downgraded_signatures_fail() {
        let (body, secret, v1) = VECTORS[0];
        let check = |header: Option<&str>| verify(secret.as_bytes(), body.as_bytes(), header);
        assert!(check(None).unwrap_err().1.contains("missing"));
        assert!(check(Some("v2=abc")).unwrap_err().1.contains("no v1"));
        assert!(check(Some(&format!("v0={v1}"))).is_err());
        assert!(check(Some("v1=zz")).is_err());
        assert!(check(Some(&format!("v1={}", &v1[..62]))).is_err());
        assert!(
            check(Some(&format!("v1={}", v1.to_uppercase()))).is_ok(),
            "hex case does not matter"
        );
        // A long header is refused before any HMAC; only a handful of entries count.
        let long = vec!["v1="; 5000].join(",");
        assert_eq!(check(Some(&long)).unwrap_err().0, 400);
        let many = format!("v1=00,v1=01,v1=02,v1=03,v1={v1}");
        assert_eq!(check(Some(&many)).unwrap_err().0, 401);
        let fourth = format!("v1=00,v1=01,v1=02,v1={v1}");
        assert!(check(Some(&fourth)).is_ok());
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
