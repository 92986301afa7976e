//! `POST /magnum?secret=…`: Magnum CI build hooks. Magnum CI signs nothing, so the hook URL
//! carries a shared secret; the JSON comes as the raw body or as the form field `payload`.

use hyper::http::request::Parts;
use serde::Deserialize;
use serde_json::Value;

use super::auth::SharedSecret;
use super::{About, IdKey, LogFields, Reply, Settings, Source, Var, Verdict};
use super::{close, field, payload, secret, wanted};

pub struct Magnum;

/// The hook's only protection, so it must be long enough.
const SECRET: Var = Var {
    name: "MAGNUM_HOOK_SECRET",
    required: true,
    min_length: Some((16, "the hook URL carries nothing else to trust")),
};

const HOOK_SECRET: SharedSecret = SharedSecret {
    missing: "missing ?secret= in the hook URL",
    wrong: "wrong secret in the hook URL",
};

pub const PROJECT_ID: IdKey = IdKey {
    name: "magnum_project_id",
    label: "Magnum CI project",
    normalize: str::to_owned,
};

const ABOUT: About = About {
    name: "magnum",
    title: "Magnum CI",
    service_name: "magnum",
    secrets: &[SECRET],
    keys: &[PROJECT_ID],
    query_help: "?secret=...",
};

impl Source for Magnum {
    fn about(&self) -> &'static About {
        &ABOUT
    }

    /// The secret in the URL is all there is to check, and needs no body.
    fn admit(&self, settings: &Settings, parts: &Parts) -> Result<(), Reply> {
        let secret = secret(self, settings, &SECRET)?;
        let query = parts.uri.query().unwrap_or("");
        let given = form_urlencoded::parse(query.as_bytes()).find(|(name, _)| name == "secret");
        let given = given.as_ref().map(|(_, value)| value.as_bytes());
        HOOK_SECRET.verify(secret.expose().as_bytes(), given)
    }

    fn verdict(
        &self,
        settings: &Settings,
        parts: &Parts,
        body: &[u8],
        log: &mut LogFields,
    ) -> Result<Verdict, Reply> {
        self.admit(settings, parts)?;
        log.event = Some("build".to_owned());
        let hook: Hook = payload(parts, body, "Magnum CI hook")?;
        log.id = hook.id.as_ref().and_then(text);
        let (Some(project_id), Some(number)) = (text(&hook.project_id), text(&hook.number)) else {
            return Err(Reply::error(
                400,
                "malformed Magnum CI hook: project_id and number must be numbers or text",
            ));
        };
        let Some(project) = settings.find(self, &[(&PROJECT_ID, Some(&project_id))]) else {
            return Err(Reply::ignored(format!(
                "no project is configured for Magnum CI project {}",
                field(&project_id, 64)
            )));
        };
        wanted(&project.statuses, hook.status.as_deref(), "status")?;
        // Reporters on Magnum CI use CI_BUILD_NUMBER: the hook's per-project `number`.
        let project_id = field(&project_id, 64);
        let from = format!("number of Magnum CI project {project_id}'s build");
        close(self, project, &number, from)
    }
}

#[derive(Deserialize)]
struct Hook {
    id: Option<Value>,
    project_id: Value,
    number: Value,
    status: Option<String>,
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    }
}
