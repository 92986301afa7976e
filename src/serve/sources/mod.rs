//! The receiver's event sources, one file each, in one table: [`SOURCES`]. Routing, the
//! start-up lines, `serve --help`, the secrets read at start and the projects-file keys all
//! come from it, so a new source is a file here and a line in the table.

mod auth;
mod circleci;
mod github;
mod gitlab;
mod magnum;

use hyper::header::CONTENT_TYPE;
use hyper::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::log::{LogFields, field};
use super::projects::{Project, Settings};
use super::reply::Reply;
use crate::client::Build;
use crate::config::Secret;
use crate::fields::Fields;

/// Where webhooks come from: a CI whose deliveries the receiver authenticates, reads, and
/// turns into a close of the build they name.
pub trait Source: Sync {
    /// What it is called and what it reads: its entry in the table.
    fn about(&self) -> &'static About;
    /// [`About::name`].
    fn name(&self) -> &'static str {
        self.about().name
    }
    /// [`About::title`].
    fn title(&self) -> &'static str {
        self.about().title
    }
    /// [`About::service_name`].
    fn service_name(&self) -> &'static str {
        self.about().service_name
    }
    /// [`About::secrets`].
    fn secrets(&self) -> &'static [Var] {
        self.about().secrets
    }
    /// [`About::keys`].
    fn keys(&self) -> &'static [IdKey] {
        self.about().keys
    }
    /// [`About::query_help`].
    fn query_help(&self) -> &'static str {
        self.about().query_help
    }
    /// What is wrong with the settings for this source, if it is on: checked at start, the
    /// error naming the variable or key.
    fn check(&self, _settings: &Settings) -> Result<(), String> {
        Ok(())
    }
    /// Whether a delivery may be read at all, from its head alone: what authentication needs
    /// no body (a secret in the URL or a header, a signature header's presence) is checked
    /// before a byte of the body is read. [`Source::verdict`] checks all of it again.
    fn admit(&self, _settings: &Settings, _parts: &Parts) -> Result<(), Reply> {
        Ok(())
    }
    /// What one delivery asks for: authenticate it, read it, find its project, decide; an
    /// `Err` is an answer at once, as `Verdict::Answer` is.
    fn verdict(
        &self,
        settings: &Settings,
        parts: &Parts,
        body: &[u8],
        log: &mut LogFields,
    ) -> Result<Verdict, Reply>;
}

/// Every source, in the order the log and `--help` name them.
pub const SOURCES: &[&dyn Source] = &[
    &circleci::CircleCi,
    &magnum::Magnum,
    &github::GitHub,
    &gitlab::GitLab,
];

/// A source's names and what it reads, as data.
pub struct About {
    /// Its route (`POST /name`), and its name in the log and in a closed build's key.
    pub name: &'static str,
    /// Its name as people write it, in messages: `CircleCI`.
    pub title: &'static str,
    /// The `service_name` its CI's uploads send, and so the close (unless a project says
    /// otherwise).
    pub service_name: &'static str,
    /// The variables that hold its secrets.
    pub secrets: &'static [Var],
    /// The projects-file keys that lead its deliveries to a project.
    pub keys: &'static [IdKey],
    /// What `--help` adds to its route: `?secret=...`.
    pub query_help: &'static str,
}

/// A variable that holds a source's secret.
pub struct Var {
    pub name: &'static str,
    /// Whether the source is off without it. A source none of whose variables is required
    /// is on with any one of them (GitLab's secret token, its signing token, or both).
    pub required: bool,
    /// The fewest bytes it may have, and why (the error at start says).
    pub min_length: Option<(usize, &'static str)>,
}

/// A projects-file key that leads a source's deliveries to a project: `circleci_slug`.
pub struct IdKey {
    pub name: &'static str,
    /// What the start-up line calls it, before its value: `CircleCI`.
    pub label: &'static str,
    /// How a value is written the same way in the file and in a delivery.
    pub normalize: fn(&str) -> String,
}

/// What a delivery asks for, once read: an answer at once, or a close first.
pub enum Verdict {
    Answer(Reply),
    Close(Box<Close>),
}

/// A close to make: the project (by name) and the build. The store knows a duplicate by its
/// source, project, build number and `attempt`.
pub struct Close {
    pub project: String,
    pub build: Build,
    /// What makes a re-run that keeps the build number a new close (GitHub's run attempt);
    /// empty where a re-run is a new build number.
    pub attempt: String,
}

/// The longest build number (a workflow id, a Magnum CI build number) sent on.
const MAX_NUMBER: usize = 256;

/// A close of build `number` for `project`, asked for by `source`; `from` says where the
/// number came from. A blank or overlong number is 400.
fn close(
    source: &dyn Source,
    project: &Project,
    number: &str,
    from: String,
) -> Result<Verdict, Reply> {
    close_with(source, project, number, from, Fields::default())
}

/// The same, with what else the delivery tells of the build (`known`: its commit, branch,
/// pull request, URL, attempt, …). The branch and the commit are sent in `git` too, and the
/// attempt makes a re-run that keeps the build number a close of its own.
fn close_with(
    source: &dyn Source,
    project: &Project,
    number: &str,
    from: String,
    known: Fields<Option<String>>,
) -> Result<Verdict, Reply> {
    let number = number.trim();
    if number.is_empty() || number.len() > MAX_NUMBER {
        return Err(Reply::error(
            400,
            format!("the build number ({from}) must be 1 to {MAX_NUMBER} bytes, not blank"),
        ));
    }
    let service_name = project
        .service_name
        .as_deref()
        .unwrap_or(source.service_name());
    let sent = Fields {
        service_name: Some(service_name.to_owned()),
        ..known
    };
    let mut build = Build::new(number.to_owned(), from, sent);
    build.carryforward = project.carryforward.clone();
    build.git.branch = build.fields().branch.clone();
    build.git.head.id = build.fields().commit.clone();
    let attempt = build.fields().attempt.clone().unwrap_or_default();
    Ok(Verdict::Close(Box::new(Close {
        project: project.name.clone(),
        build,
        attempt,
    })))
}

/// Whether a project closes on this value (a workflow's name, a status): an empty list
/// means every value.
fn wanted<S: AsRef<str>>(list: &[S], value: Option<&str>, what: &str) -> Result<(), Reply> {
    match value {
        _ if list.is_empty() => Ok(()),
        Some(value) if list.iter().any(|w| w.as_ref() == value) => Ok(()),
        value => {
            let list: Vec<&str> = list.iter().map(AsRef::as_ref).collect();
            Err(Reply::ignored(format!(
                "{what} {:?} does not close a build (expected one of {})",
                value.unwrap_or(""),
                list.join(", ")
            )))
        }
    }
}

/// The same, with the source's own list where the project names none: the statuses that
/// end a run in which jobs ran.
fn wanted_or(
    list: &[String],
    default: &[&str],
    value: Option<&str>,
    what: &str,
) -> Result<(), Reply> {
    match list.is_empty() {
        true => wanted(default, value, what),
        false => wanted(list, value, what),
    }
}

/// The delivery's JSON, read as `T`: the raw body, or, where its content type says it is a
/// form, the form's field `payload` (Magnum CI's documented hook, GitHub's form content
/// type); `what` names it in errors: `Magnum CI hook`.
fn payload<T: DeserializeOwned>(parts: &Parts, body: &[u8], what: &str) -> Result<T, Reply> {
    let is_form = header(parts, CONTENT_TYPE.as_str())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let form;
    let json = match is_form {
        false => body,
        true => match form_urlencoded::parse(body).find(|(name, _)| name == "payload") {
            Some((_, payload)) => {
                form = payload;
                form.as_bytes()
            }
            None => {
                let why = format!("malformed {what}: no form field \"payload\"");
                return Err(Reply::error(400, why));
            }
        },
    };
    serde_json::from_slice(json)
        .map_err(|err| Reply::error(400, format!("malformed {what}: {err}")))
}

/// The answer to a ping: the source is on and the delivery authentic.
fn pong() -> Verdict {
    Verdict::Answer(Reply::new(200, json!({"ok": true, "event": "ping"})))
}

/// The secret in `var`, one of `source`'s required ones; where the source is off, the
/// answer that says so.
fn secret<'a>(source: &dyn Source, settings: &'a Settings, var: &Var) -> Result<&'a Secret, Reply> {
    on(source, settings)?;
    settings
        .secret(var.name)
        .ok_or_else(|| is_off(source, &not_set(&[var.name])))
}

/// Nothing, where `source` is on; else the answer that it is off (404), and why.
fn on(source: &dyn Source, settings: &Settings) -> Result<(), Reply> {
    match off(source, settings) {
        None => Ok(()),
        Some(why) => Err(is_off(source, &why)),
    }
}

fn is_off(source: &dyn Source, why: &str) -> Reply {
    Reply::error(
        404,
        format!("the {} receiver is off: {why}", source.title()),
    )
}

/// A name that a CI writes in any case for the same thing: GitHub's repositories, GitLab's
/// project paths.
fn any_case(name: &str) -> String {
    name.trim().to_ascii_lowercase()
}

/// A header's value; one that is not text reads as a character that matches nothing.
fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    let value = parts.headers.get(name)?;
    Some(value.to_str().unwrap_or("\u{fffd}"))
}

/// The variables that switch `source` on: each of its required ones, all needed; or, where
/// none is required, all of its variables, any one enough.
pub fn switches(source: &dyn Source) -> Vec<&'static str> {
    let vars = source.secrets().iter();
    let required: Vec<&str> = vars
        .clone()
        .filter(|v| v.required)
        .map(|v| v.name)
        .collect();
    match required.is_empty() {
        true => vars.map(|var| var.name).collect(),
        false => required,
    }
}

/// Why `source` is off, if it is: the first required variable that is not set, or, for a
/// source with none required, that none of its variables is.
pub fn off(source: &dyn Source, settings: &Settings) -> Option<String> {
    let set = |name: &&str| settings.secret(name).is_some();
    let switches = switches(source);
    match source.secrets().iter().any(|var| var.required) {
        true => switches
            .into_iter()
            .find(|name| !set(name))
            .map(|name| not_set(&[name])),
        false => (!switches.iter().any(set)).then(|| not_set(&switches)),
    }
}

/// `A is not set`, `neither A nor B is set`, `none of A, B or C is set`.
pub fn not_set(names: &[&str]) -> String {
    match names {
        [one] => format!("{one} is not set"),
        [one, other] => format!("neither {one} nor {other} is set"),
        _ => {
            let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
            format!("none of {} is set", listed(&names, "or"))
        }
    }
}

/// Each source's state, for the log at start: `POST /circleci: on; POST /magnum: off (…)`.
pub fn states(settings: &Settings) -> String {
    let state = |source: &&dyn Source| {
        let state = match off(*source, settings) {
            None => "on".to_owned(),
            Some(why) => format!("off ({why})"),
        };
        format!("POST /{}: {state}", source.name())
    };
    let states: Vec<String> = SOURCES.iter().map(state).collect();
    states.join("; ")
}

/// `serve --help`'s environment: what each source's variables do, then the token's.
pub fn environment_help() -> String {
    let mut vars = Vec::new();
    for source in SOURCES {
        for var in source.secrets() {
            let does = match switches(*source).contains(&var.name) {
                true => format!("switches /{} on", source.name()),
                false => format!("for /{}", source.name()),
            };
            vars.push(format!("{} ({does})", var.name));
        }
    }
    vars.push("COVERALLS_REPO_TOKEN (the one project without --config)".to_owned());
    format!("Environment: {}.", vars.join(", "))
}

/// `a`, `a or b`, `a, b or c`: the items, the last two joined with `word`.
pub fn listed(items: &[String], word: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} {word} {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_routes_variables_and_keys_are_each_one_source_s() {
        let mut seen = HashSet::new();
        for source in SOURCES {
            let name = source.name();
            assert!(
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase()),
                "{name}: a route is lowercase letters"
            );
            assert!(name != "healthz", "/healthz is the receiver's own");
            assert!(seen.insert(name), "two sources are named {name}");
            assert!(
                !switches(*source).is_empty(),
                "{name}: no variable switches it on"
            );
            for var in source.secrets() {
                assert!(seen.insert(var.name), "{} is two sources'", var.name);
            }
            assert!(!source.keys().is_empty(), "{name}: no projects-file key");
            for key in source.keys() {
                assert!(seen.insert(key.name), "{} is two sources'", key.name);
                assert!(key.name.starts_with(name), "{} names its source", key.name);
            }
        }
    }

    #[test]
    fn names_in_any_case_are_one_name() {
        assert_eq!(any_case(" Octo-Org/Octo-Repo "), "octo-org/octo-repo");
        assert_eq!(any_case("GitLab-Org/GitLab-Test"), "gitlab-org/gitlab-test");
    }

    #[test]
    fn lists_read_as_english() {
        let items = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(listed(&items(&[]), "or"), "");
        assert_eq!(listed(&items(&["a"]), "or"), "a");
        assert_eq!(listed(&items(&["a", "b"]), "and"), "a and b");
        assert_eq!(listed(&items(&["a", "b", "c"]), "or"), "a, b or c");
    }
}
