//! `POST /gitlab`: GitLab's Pipeline Hooks. A hook proves itself with its secret token
//! (`X-Gitlab-Token`, compared in constant time, as Magnum CI's secret), its signing token
//! (Standard Webhooks: `webhook-signature` over its id, its time and the body), or both, as
//! the receiver is set up. A pipeline's terminal status closes its build. GitLab disables a
//! hook after four failed deliveries in a row, so everything but an authentication failure
//! is answered 2xx.

use std::time::{SystemTime, UNIX_EPOCH};

use hyper::http::request::Parts;
use serde::Deserialize;

use super::auth::{SharedSecret, StandardWebhook, signing_key};
use super::{About, Fields, IdKey, LogFields, Project, Reply, Settings, Source, Var, Verdict};
use super::{any_case, close_with, field, header, on, payload, wanted_or};
use crate::serve::projects::PipelineNumber;

pub struct GitLab;

/// The hook's secret token, which GitLab sends as it is: without a signing token, all there
/// is to trust, so it must be long enough.
const SECRET_TOKEN: Var = Var {
    name: "GITLAB_WEBHOOK_SECRET",
    required: false,
    min_length: Some((
        16,
        "a hook without a signing token carries nothing else to trust",
    )),
};

/// The hook's signing token (GitLab 19): `whsec_` and a key in base64.
const SIGNING_TOKEN: Var = Var {
    name: "GITLAB_WEBHOOK_SIGNING_TOKEN",
    required: false,
    min_length: None,
};

const HOOK_TOKEN: SharedSecret = SharedSecret {
    missing: "missing X-Gitlab-Token header (the hook's secret token)",
    wrong: "wrong X-Gitlab-Token (the hook's secret token)",
};

pub const PROJECT: IdKey = IdKey {
    name: "gitlab_project",
    label: "GitLab",
    normalize: any_case,
};

pub const PROJECT_ID: IdKey = IdKey {
    name: "gitlab_project_id",
    label: "GitLab id",
    normalize: str::to_owned,
};

/// The statuses that close a build where a project names none: the ends of a pipeline whose
/// jobs ran (not `skipped`, nor `running`, `pending`, `created`, …, which are not ends).
const STATUSES: &[&str] = &["success", "failed", "canceled"];

const ABOUT: About = About {
    name: "gitlab",
    title: "GitLab",
    service_name: "gitlab-ci",
    secrets: &[SECRET_TOKEN, SIGNING_TOKEN],
    keys: &[PROJECT, PROJECT_ID],
    query_help: "",
};

impl Source for GitLab {
    fn about(&self) -> &'static About {
        &ABOUT
    }

    /// The signing token is a key, which must read as one.
    fn check(&self, settings: &Settings) -> Result<(), String> {
        let token = settings.secret(SIGNING_TOKEN.name);
        match token.is_none_or(|token| signing_key(token.expose()).is_some()) {
            true => Ok(()),
            false => Err(format!(
                "{} is not a signing token: expected whsec_ and a key in base64, as GitLab shows \
                 it when the hook is saved",
                SIGNING_TOKEN.name
            )),
        }
    }

    /// The secret token, and the signature's headers (all but the body's HMAC).
    fn admit(&self, settings: &Settings, parts: &Parts) -> Result<(), Reply> {
        self.authenticate_token(settings, parts)?;
        match settings.secret(SIGNING_TOKEN.name) {
            Some(_) => signed(parts).present(now()),
            None => Ok(()),
        }
    }

    fn verdict(
        &self,
        settings: &Settings,
        parts: &Parts,
        body: &[u8],
        log: &mut LogFields,
    ) -> Result<Verdict, Reply> {
        self.authenticate_token(settings, parts)?;
        self.authenticate_signature(settings, parts, body)?;
        let id = header(parts, "x-gitlab-event-uuid").or(header(parts, "webhook-id"));
        log.id = id.map(str::to_owned);
        log.event = header(parts, "x-gitlab-event").map(str::to_owned);
        // Authentic: from here on, nothing is worth GitLab disabling the hook for.
        self.decide(settings, parts, body)
            .map_err(|reply| match reply.status {
                400..=499 => Reply::ignored(reply.body["error"].as_str().unwrap_or("refused")),
                _ => reply,
            })
    }
}

/// A delivery's Standard Webhooks headers.
fn signed(parts: &Parts) -> StandardWebhook<'_> {
    StandardWebhook {
        id: header(parts, "webhook-id"),
        timestamp: header(parts, "webhook-timestamp"),
        signature: header(parts, "webhook-signature"),
    }
}

/// Seconds since the Unix epoch.
fn now() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.map_or(0, |since| since.as_secs())
}

/// The parts of a Pipeline Hook we use; the rest of the open map is ignored.
#[derive(Deserialize)]
struct Hook {
    object_kind: Option<String>,
    object_attributes: Option<Pipeline>,
    merge_request: Option<MergeRequest>,
    project: Option<HookProject>,
}

#[derive(Deserialize)]
struct Pipeline {
    id: Option<u64>,
    iid: Option<u64>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    tag: Option<bool>,
    sha: Option<String>,
    url: Option<String>,
    status: Option<String>,
}

#[derive(Deserialize)]
struct MergeRequest {
    iid: Option<u64>,
}

#[derive(Deserialize)]
struct HookProject {
    id: Option<u64>,
    path_with_namespace: Option<String>,
}

impl GitLab {
    /// The secret token, where the receiver has one: it needs no body.
    fn authenticate_token(&self, settings: &Settings, parts: &Parts) -> Result<(), Reply> {
        on(self, settings)?;
        match settings.secret(SECRET_TOKEN.name) {
            Some(token) => {
                let given = header(parts, "x-gitlab-token").map(str::as_bytes);
                HOOK_TOKEN.verify(token.expose().as_bytes(), given)
            }
            None => Ok(()),
        }
    }

    /// The signature, where the receiver has a signing token: over the raw body, which
    /// nothing has read before.
    fn authenticate_signature(
        &self,
        settings: &Settings,
        parts: &Parts,
        body: &[u8],
    ) -> Result<(), Reply> {
        let Some(token) = settings.secret(SIGNING_TOKEN.name) else {
            return Ok(());
        };
        // Checked at start (GitLab::check): a token that is no key never gets here.
        let Some(key) = signing_key(token.expose()) else {
            return Err(Reply::error(500, "the signing token is not a key"));
        };
        signed(parts).verify(&key, body, now())
    }

    /// An authentic hook: the close of its pipeline's build, if it is a pipeline's end that
    /// its project closes on.
    fn decide(&self, settings: &Settings, parts: &Parts, body: &[u8]) -> Result<Verdict, Reply> {
        let hook: Hook = payload(parts, body, "GitLab hook")?;
        match hook.object_kind.as_deref() {
            Some("pipeline") => {}
            kind => {
                return Err(Reply::ignored(format!(
                    "object_kind {} is not one that closes a build (expected pipeline)",
                    field(kind.unwrap_or("?"), 64)
                )));
            }
        }
        let Some(pipeline) = hook.object_attributes else {
            let why = "malformed GitLab hook: a pipeline without object_attributes";
            return Err(Reply::error(400, why));
        };
        let project = project_of(settings, hook.project.as_ref())?;
        wanted_or(
            &project.statuses,
            STATUSES,
            pipeline.status.as_deref(),
            "status",
        )?;
        let (number, key, variable) = match project.gitlab_build_number {
            PipelineNumber::Iid => (pipeline.iid, "iid", "CI_PIPELINE_IID"),
            PipelineNumber::Id => (pipeline.id, "id", "CI_PIPELINE_ID"),
        };
        let Some(number) = number else {
            let why = format!("malformed GitLab hook: no object_attributes.{key}");
            return Err(Reply::error(400, why));
        };
        let path = hook.project.and_then(|p| p.path_with_namespace);
        let from = format!(
            "object_attributes.{key} of a pipeline of {}, the uploads' {variable}",
            field(path.as_deref().unwrap_or("?"), 200)
        );
        let known = Fields {
            commit: pipeline.sha,
            branch: pipeline.git_ref.filter(|_| pipeline.tag != Some(true)),
            pull_request: hook
                .merge_request
                .and_then(|mr| mr.iid)
                .map(|n| n.to_string()),
            build_url: pipeline.url,
            ..Fields::default()
        };
        close_with(self, project, &number.to_string(), from, known)
    }
}

/// The configured project of a hook, by its path or its id; one nobody configured is
/// ignored.
fn project_of<'a>(
    settings: &'a Settings,
    project: Option<&HookProject>,
) -> Result<&'a Project, Reply> {
    let path = project.and_then(|p| p.path_with_namespace.as_deref());
    let id = project.and_then(|p| p.id).map(|id| id.to_string());
    settings
        .find(&GitLab, &[(&PROJECT, path), (&PROJECT_ID, id.as_deref())])
        .ok_or_else(|| {
            Reply::ignored(format!(
                "no project is configured for GitLab project {} (id {})",
                field(path.unwrap_or("?"), 200),
                id.as_deref().unwrap_or("?")
            ))
        })
}
