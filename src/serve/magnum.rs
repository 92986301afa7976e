//! `POST /magnum?secret=…`: Magnum CI build hooks. Magnum CI signs nothing, so the hook URL
//! carries a shared secret; the JSON comes as the raw body or as the form field `payload`.

use hyper::HeaderMap;
use hyper::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::Value;
use subtle::ConstantTimeEq;

use super::log::field;
use super::{App, Delivery, Reply, Verdict, request, wanted};

#[derive(Deserialize)]
struct Hook {
    id: Option<Value>,
    project_id: Value,
    number: Value,
    status: Option<String>,
}

pub(super) fn verdict(
    app: &App,
    headers: &HeaderMap,
    query: &str,
    body: &[u8],
    delivery: &mut Delivery,
) -> Verdict {
    read(app, headers, query, body, delivery).unwrap_or_else(Verdict::Answer)
}

fn read(
    app: &App,
    headers: &HeaderMap,
    query: &str,
    body: &[u8],
    delivery: &mut Delivery,
) -> Result<Verdict, Reply> {
    authenticate(app, query)?;
    delivery.event = Some("build".to_owned());
    let is_form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let hook = parse(body, is_form)?;
    delivery.id = hook.id.as_ref().and_then(text);
    let (Some(project_id), Some(number)) = (text(&hook.project_id), text(&hook.number)) else {
        return Err(Reply::error(
            400,
            "malformed Magnum CI hook: project_id and number must be numbers or text",
        ));
    };
    let Some(project) = app.settings.magnum_project(&project_id) else {
        return Err(Reply::ignored(format!(
            "no project is configured for Magnum CI project {}",
            field(&project_id, 64)
        )));
    };
    let project_id = field(&project_id, 64);
    wanted(
        &app.settings.projects[project].statuses,
        hook.status.as_deref(),
        "status",
    )?;
    // Reporters on Magnum CI use CI_BUILD_NUMBER: the hook's per-project `number`.
    let from = format!("number of Magnum CI project {project_id}'s build");
    request(app, project, &number, from, "magnum").map(|request| Verdict::Close(Box::new(request)))
}

/// The secret in the hook's query, compared in constant time.
fn authenticate(app: &App, query: &str) -> Result<(), Reply> {
    let Some(secret) = &app.settings.magnum_secret else {
        return Err(Reply::error(
            404,
            "the Magnum CI receiver is off: MAGNUM_HOOK_SECRET is not set",
        ));
    };
    let given = form_urlencoded::parse(query.as_bytes()).find(|(name, _)| name == "secret");
    match given {
        None => Err(Reply::error(401, "missing ?secret= in the hook URL")),
        Some((_, given)) if !bool::from(given.as_bytes().ct_eq(secret.expose().as_bytes())) => {
            Err(Reply::error(401, "wrong secret in the hook URL"))
        }
        Some(_) => Ok(()),
    }
}

/// The hook's JSON: the raw body, or the form field `payload`.
fn parse(body: &[u8], is_form: bool) -> Result<Hook, Reply> {
    let json = if is_form {
        match form_urlencoded::parse(body).find(|(name, _)| name == "payload") {
            Some((_, payload)) => payload.into_owned().into_bytes(),
            None => {
                return Err(Reply::error(
                    400,
                    "malformed Magnum CI hook: no form field \"payload\"",
                ));
            }
        }
    } else {
        body.to_vec()
    };
    serde_json::from_slice(&json)
        .map_err(|err| Reply::error(400, format!("malformed Magnum CI hook: {err}")))
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_parses() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/magnum_hook.json"
        );
        let hook: Hook = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(text(&hook.project_id).as_deref(), Some("43"));
        assert_eq!(text(&hook.number).as_deref(), Some("130"));
        assert_eq!(hook.status.as_deref(), Some("pass"));
    }
}
