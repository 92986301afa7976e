//! The receiver's settings: which projects it closes builds for, and with which token.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use ureq::Agent;

use super::nesting::{MAX_DEPTH, too_deep};
use super::schedule::{Schedule, parse_duration, parse_waits};
use super::sources::{IdKey, SOURCES, Source, listed, not_set, off, switches};
use super::store;
use crate::client::{self, Coveralls};
use crate::config::{self, Secret};
use crate::env::Env;
use crate::error::Error;
use crate::settings::{Flags, Given, Key, Values};

/// The fewest bytes a secret or token may have (a repo token has 32 or more): every
/// occurrence of a secret is redacted from the log, so a short one would garble it.
const MIN_SECRET: usize = 8;

/// Agents (each with a connection pool of its own) the closes to one endpoint take turns
/// on: threads sharing one pool wait on each other. As many as attempts run at once.
const AGENTS: usize = super::closer::ATTEMPTS_AT_ONCE;
/// Idle connections to Coveralls kept alive, every endpoint's agents together: the receiver
/// keeps this many file descriptors for them, whatever the number of projects.
pub const POOLED_CONNECTIONS: usize = 256;
/// The most each agent keeps: more than one attempt may take turns on it.
const MAX_IDLE_PER_AGENT: usize = 8;

pub struct Settings {
    pub listen: String,
    /// Where deliveries are kept, and how their closes are retried.
    pub durable: Durable,
    /// The sources' secrets that are set, by variable.
    secrets: Vec<(&'static str, Secret)>,
    pub projects: Vec<Project>,
    /// The projects by name, and by id (a key's name and its normalized value), so that
    /// finding one costs the same with ten thousand projects as with one.
    by_name: HashMap<String, usize>,
    by_id: HashMap<(&'static str, String), usize>,
    pub debug: bool,
}

pub struct Project {
    /// What the project is known by: in the log, in answers, in a close to make.
    pub name: String,
    /// What leads a source's deliveries to it; none for the single project from the
    /// environment, which takes every delivery of every source.
    pub ids: Vec<ProjectId>,
    pub token: Secret,
    pub coveralls: Coveralls,
    pub carryforward: Vec<String>,
    /// Workflow names that close a build; empty: all.
    pub workflows: Vec<String>,
    /// Statuses that close a build; empty: all.
    pub statuses: Vec<String>,
    /// A job whose `job-completed` closes the build, before the workflow completes.
    pub final_job: Option<String>,
    pub service_name: Option<String>,
    /// Fewer jobs than this in a closed build are logged as such.
    pub expected_jobs: Option<u64>,
    /// Which of a GitLab pipeline's numbers its uploads sent.
    pub gitlab_build_number: PipelineNumber,
    /// Agents the project's closes take turns on: shared by every project of its endpoint,
    /// so that the connections kept open grow with the endpoints, not with the projects.
    pub agents: Arc<[Agent]>,
}

/// The store and the retries: where deliveries are kept, how long an answer waits for the
/// first attempt, when a failed close is tried again, how long a closed one is kept.
pub struct Durable {
    pub path: PathBuf,
    /// What named the path, for errors: `--state`, `COVERALLS_FINISH_STATE`, the default.
    pub named: &'static str,
    pub answer_wait: Duration,
    pub schedule: Schedule,
    pub keep_closed: Duration,
}

/// Which of a GitLab pipeline's numbers is its build's: `iid` (`CI_PIPELINE_IID`, which
/// coverage-reporter sends) or `id` (`CI_PIPELINE_ID`, which a few reporters send).
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum PipelineNumber {
    #[default]
    Iid,
    Id,
}

/// One id of a project: a source's projects-file key (each key is one source's) and its
/// value, as written.
pub struct ProjectId {
    pub key: &'static IdKey,
    pub value: String,
}

/// The projects file, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    endpoint: Option<String>,
    #[serde(default)]
    project: Vec<Entry>,
}

/// A `[[project]]` table. The ids (`circleci_slug`, …) are the keys [`Source::keys`] names,
/// read by [`Entry::id`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    circleci_slug: Option<String>,
    circleci_project_id: Option<String>,
    magnum_project_id: Option<Id>,
    github_repository: Option<String>,
    gitlab_project: Option<String>,
    gitlab_project_id: Option<Id>,
    #[serde(default)]
    gitlab_build_number: PipelineNumber,
    repo_token: Option<String>,
    repo_token_env: Option<String>,
    #[serde(default)]
    carryforward: Vec<String>,
    #[serde(default)]
    workflows: Vec<String>,
    #[serde(default)]
    statuses: Vec<String>,
    final_job: Option<String>,
    service_name: Option<String>,
    endpoint: Option<String>,
    expected_jobs: Option<u64>,
}

/// An id written as a number or as text.
#[derive(Deserialize)]
#[serde(untagged)]
enum Id {
    Number(u64),
    Text(String),
}

impl Id {
    fn text(&self) -> String {
        match self {
            Id::Number(n) => n.to_string(),
            Id::Text(t) => t.trim().to_owned(),
        }
    }
}

impl Entry {
    /// The value written for a source's key; every key in [`SOURCES`] has its field here.
    fn id(&self, key: &str) -> Option<String> {
        match key {
            "circleci_slug" => self.circleci_slug.clone(),
            "circleci_project_id" => self.circleci_project_id.clone(),
            "magnum_project_id" => self.magnum_project_id.as_ref().map(Id::text),
            "github_repository" => self.github_repository.clone(),
            "gitlab_project" => self.gitlab_project.clone(),
            "gitlab_project_id" => self.gitlab_project_id.as_ref().map(Id::text),
            _ => None,
        }
    }
}

impl Settings {
    pub fn load(flags: &Flags, env: &Env) -> Result<Settings, Error> {
        let sources = Values::read(env, flags)?;
        let (shared, debug) = config::shared(&sources, env)?;
        let listen = sources
            .get(Key::Listen)
            .expect("a default")
            .value
            .to_owned();
        let mut projects = match sources.given(Key::Config) {
            Some(Given { value: path, .. }) => from_file(Path::new(path), env, &shared.coveralls)?,
            None => vec![from_env(&shared)?],
        };
        share_agents(&mut projects, env)?;
        let (by_name, by_id) = index(&projects);
        let settings = Settings {
            listen,
            durable: durable(&sources, env)?,
            secrets: secrets(env)?,
            projects,
            by_name,
            by_id,
            debug,
        };
        let off = |source: &&dyn Source| off(*source, &settings);
        if SOURCES.iter().all(|source| off(source).is_some()) {
            let vars: Vec<&str> = SOURCES
                .iter()
                .flat_map(|source| switches(*source))
                .collect();
            return Err(Error::config(format!(
                "{}: with no secret a source stays off, so there would be nothing to receive",
                not_set(&vars)
            )));
        }
        for source in SOURCES.iter().filter(|source| off(source).is_none()) {
            source.check(&settings).map_err(Error::config)?;
        }
        Ok(settings)
    }

    /// The secret in `var`, a source's variable, if it is set.
    pub fn secret(&self, var: &str) -> Option<&Secret> {
        let mut secrets = self.secrets.iter();
        secrets.find(|(name, _)| *name == var).map(|(_, s)| s)
    }

    /// The project named `name`.
    pub fn project(&self, name: &str) -> Option<&Project> {
        self.by_name.get(name).map(|&i| &self.projects[i])
    }

    /// The first project (in the file's order) that has one of these ids of `source`'s (a
    /// key and the value a delivery gives for it), or the single project from the
    /// environment.
    pub fn find(&self, source: &dyn Source, ids: &[(&IdKey, Option<&str>)]) -> Option<&Project> {
        if let [only] = self.projects.as_slice() {
            if only.any() {
                return Some(only);
            }
        }
        let owned = |key: &&IdKey| source.keys().iter().any(|own| own.name == key.name);
        let found = ids
            .iter()
            .filter(|(key, _)| owned(key))
            .filter_map(|(key, value)| {
                let id = (key.name, (key.normalize)((*value)?));
                self.by_id.get(&id).copied()
            });
        found.min().map(|i| &self.projects[i])
    }

    /// Every secret and token, for redacting them from the log.
    pub fn secrets(&self) -> Vec<String> {
        let tokens = self.projects.iter().map(|p| &p.token);
        let secrets = self.secrets.iter().map(|(_, secret)| secret);
        tokens
            .chain(secrets)
            .map(|s| s.expose().to_owned())
            .collect()
    }
}

/// Where each project is, by name and by id.
type Index = (
    HashMap<String, usize>,
    HashMap<(&'static str, String), usize>,
);

fn index(projects: &[Project]) -> Index {
    let mut by_name = HashMap::new();
    let mut by_id = HashMap::new();
    for (i, project) in projects.iter().enumerate() {
        by_name.insert(project.name.clone(), i);
        for id in &project.ids {
            let normalized = (id.key.normalize)(&id.value);
            by_id.entry((id.key.name, normalized)).or_insert(i);
        }
    }
    (by_name, by_id)
}

/// The agents of each endpoint, made once and given to every project of it; their idle
/// connections within [`POOLED_CONNECTIONS`] (with more endpoints than that allows for, an
/// attempt connects afresh).
fn share_agents(projects: &mut [Project], env: &Env) -> Result<(), Error> {
    let endpoints: HashSet<&str> = projects
        .iter()
        .map(|project| project.coveralls.endpoint.as_str())
        .collect();
    let idle = idle_per_agent(endpoints.len());
    let mut made: HashMap<String, Arc<[Agent]>> = HashMap::new();
    for project in projects {
        let endpoint = &project.coveralls.endpoint;
        let agents = match made.get(endpoint) {
            Some(agents) => Arc::clone(agents),
            None => {
                let agents: Arc<[Agent]> = client::agents(endpoint, env, AGENTS, idle)?.into();
                made.insert(endpoint.clone(), Arc::clone(&agents));
                agents
            }
        };
        project.agents = agents;
    }
    Ok(())
}

/// Idle connections each agent keeps, with `endpoints` endpoints' agents in all.
fn idle_per_agent(endpoints: usize) -> usize {
    (POOLED_CONNECTIONS / (endpoints.max(1) * AGENTS)).min(MAX_IDLE_PER_AGENT)
}

/// The store's settings, each checked; errors name the flag or variable.
fn durable(values: &Values, env: &Env) -> Result<Durable, Error> {
    let (path, named) = store::state_path(values, env)?;
    let get = |key| values.get(key).expect("a default");
    let duration = |key, least: Duration, most: Duration, expected: &str| {
        let given = get(key);
        match parse_duration(given.value) {
            Some(duration) if duration >= least && duration <= most => Ok(duration),
            _ => Err(Error::config(format!(
                "{} is {:?}; expected {expected}",
                given.from, given.value
            ))),
        }
    };
    let day = Duration::from_secs(86_400);
    let answer_wait = duration(
        Key::AnswerWait,
        Duration::ZERO,
        Duration::from_secs(8),
        "a duration from 0s to 8s, such as 1s or 250ms",
    )?;
    let give_up_after = duration(
        Key::RetryFor,
        Duration::from_secs(1),
        365 * day,
        "a duration such as 72h or 3d",
    )?;
    let keep_closed = duration(
        Key::KeepClosed,
        Duration::from_secs(1),
        365 * day,
        "a duration such as 7d or 12h",
    )?;
    let waits = get(Key::RetrySchedule);
    let waits = parse_waits(waits.value).ok_or_else(|| {
        Error::config(format!(
            "{} is {:?}; expected durations separated by commas, none of them 0, such as \
             5s,30s,2m,1h",
            waits.from, waits.value
        ))
    })?;
    Ok(Durable {
        path,
        named,
        answer_wait,
        schedule: Schedule {
            waits,
            give_up_after,
        },
        keep_closed,
    })
}

/// The sources' secrets that are set, each checked for its least length.
fn secrets(env: &Env) -> Result<Vec<(&'static str, Secret)>, Error> {
    let mut secrets = Vec::new();
    for var in SOURCES.iter().flat_map(|source| source.secrets()) {
        let Some(secret) = env.get(var.name)? else {
            continue;
        };
        let (least, since) = match var.min_length {
            Some((least, why)) => (least.max(MIN_SECRET), format!(", since {why}")),
            None => (MIN_SECRET, String::new()),
        };
        if let Some(short) = too_short(secret, least) {
            return Err(Error::config(format!(
                "{} {short}{since} (openssl rand -hex 32 makes a good one)",
                var.name
            )));
        }
        secrets.push((var.name, Secret::new(secret)));
    }
    Ok(secrets)
}

/// What is wrong with `secret` for a secret of at least `least` bytes, blanks aside: it is
/// blank, or has too few. Never the secret itself.
fn too_short(secret: &str, least: usize) -> Option<String> {
    match secret.trim().len() {
        0 => Some(format!("is blank; expected at least {least} bytes")),
        n if n < least => Some(format!("has {n} bytes; expected at least {least}")),
        _ => None,
    }
}

/// A repo token, checked for its length; `named` says where it was, for the error.
fn repo_token(token: &str, named: &str) -> Result<Secret, String> {
    match too_short(token, MIN_SECRET) {
        Some(short) => Err(format!("{named}{short} (a repo token has 32 or more)")),
        None => Ok(Secret::new(token.to_owned())),
    }
}

impl Project {
    /// Whether it takes every delivery: the single project from the environment.
    pub fn any(&self) -> bool {
        self.ids.is_empty()
    }

    /// What the project closes builds for, for the log at start.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.any() {
            let titles: Vec<String> = SOURCES.iter().map(|s| s.title().to_owned()).collect();
            parts.push(format!("every {} project", listed(&titles, "and")));
        }
        for id in &self.ids {
            parts.push(format!("{} {}", id.key.label, id.value));
        }
        parts.push(format!("endpoint {}", self.coveralls.endpoint));
        if !self.carryforward.is_empty() {
            parts.push(format!("carryforward {}", self.carryforward.join(",")));
        }
        if let Some(jobs) = self.expected_jobs {
            parts.push(format!("{jobs} jobs expected"));
        }
        parts.join(", ")
    }
}

/// The one project the environment describes: every event is its.
fn from_env(shared: &config::Shared) -> Result<Project, Error> {
    let token = shared.token.as_ref().ok_or_else(|| {
        Error::config(
            "COVERALLS_REPO_TOKEN is not set; the receiver needs it, or --config with a file of \
             projects",
        )
    })?;
    let token = repo_token(token.expose(), "COVERALLS_REPO_TOKEN ").map_err(Error::config)?;
    Ok(Project {
        name: "default".to_owned(),
        ids: Vec::new(),
        token,
        agents: Arc::new([]),
        coveralls: shared.coveralls.clone(),
        carryforward: shared.carryforward.clone(),
        workflows: Vec::new(),
        statuses: Vec::new(),
        final_job: None,
        service_name: None,
        expected_jobs: None,
        gitlab_build_number: PipelineNumber::default(),
    })
}

fn from_file(path: &Path, env: &Env, shared: &Coveralls) -> Result<Vec<Project>, Error> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|err| Error::config(format!("{shown}: cannot read it: {err}")))?;
    if let Some(line) = too_deep(&text) {
        return Err(Error::config(format!(
            "{shown}: line {line}: nested more than {MAX_DEPTH} deep (arrays, inline tables \
             and dotted keys); expected a file of [[project]] tables"
        )));
    }
    let file: File =
        basic_toml::from_str(&text).map_err(|err| Error::config(format!("{shown}: {err}")))?;
    let service = match &file.endpoint {
        Some(endpoint) => with_endpoint(shared, endpoint).map_err(|err| err.context(&shown))?,
        None => shared.clone(),
    };
    if file.project.is_empty() {
        return Err(Error::config(format!(
            "{shown}: no [[project]] tables; expected at least one"
        )));
    }
    let mut seen = HashSet::new();
    file.project
        .into_iter()
        .map(|entry| {
            let name = entry.name.trim().to_owned();
            if name.is_empty() {
                return Err(Error::config(format!(
                    "{shown}: a project has an empty name"
                )));
            }
            let at = |key: &str, what: &str| {
                Error::config(format!("{shown}: project {name:?}: {key}: {what}"))
            };
            project(entry, &name, &mut seen, env, &service, &at)
        })
        .collect()
}

/// One `[[project]]` table, checked; `at` names the file, the project and the key in errors.
fn project(
    entry: Entry,
    name: &str,
    seen: &mut HashSet<String>,
    env: &Env,
    service: &Coveralls,
    at: &dyn Fn(&str, &str) -> Error,
) -> Result<Project, Error> {
    if !seen.insert(format!("name {name}")) {
        return Err(at("name", "another project has this name"));
    }
    let ids = ids(&entry, seen, at)?;
    if entry.github_repository.is_some() && entry.workflows.is_empty() {
        return Err(at(
            "workflows",
            "missing; a GitHub project must name the workflows whose runs close its build (by \
             name, or by path such as .github/workflows/test.yml), since a repository's webhook \
             reports the runs of every workflow",
        ));
    }
    let service = match &entry.endpoint {
        Some(endpoint) => {
            with_endpoint(service, endpoint).map_err(|e| at("endpoint", e.message()))?
        }
        None => service.clone(),
    };
    Ok(Project {
        agents: Arc::new([]),
        token: token(&entry, env, at)?,
        name: name.to_owned(),
        ids,
        coveralls: service,
        carryforward: config::split_flags(&entry.carryforward.join(",")),
        workflows: entry.workflows,
        statuses: entry.statuses,
        final_job: entry.final_job,
        service_name: entry.service_name,
        expected_jobs: entry.expected_jobs,
        gitlab_build_number: entry.gitlab_build_number,
    })
}

/// The ids that lead deliveries to a project: at least one, and none another project's.
fn ids(
    entry: &Entry,
    seen: &mut HashSet<String>,
    at: &dyn Fn(&str, &str) -> Error,
) -> Result<Vec<ProjectId>, Error> {
    let mut ids = Vec::new();
    for source in SOURCES {
        for key in source.keys() {
            let Some(value) = entry.id(key.name) else {
                continue;
            };
            let normalized = (key.normalize)(&value);
            if !seen.insert(format!("{} {normalized}", key.name)) {
                let what = format!("{normalized:?} belongs to another project already");
                return Err(at(key.name, &what));
            }
            ids.push(ProjectId { key, value });
        }
    }
    if ids.is_empty() {
        let keys: Vec<String> = SOURCES
            .iter()
            .flat_map(|source| source.keys())
            .map(|key| key.name.to_owned())
            .collect();
        let what = format!(
            "set {}, so events can find this project",
            listed(&keys, "or")
        );
        return Err(at(&keys[0], &what));
    }
    Ok(ids)
}

/// `service` at the endpoint a projects file names.
fn with_endpoint(service: &Coveralls, endpoint: &str) -> Result<Coveralls, Error> {
    let given = Given {
        value: endpoint,
        from: "endpoint",
    };
    Ok(Coveralls {
        endpoint: config::parse_endpoint(&given)?,
        ..service.clone()
    })
}

/// The project's token: in the file, or in the variable the file names.
fn token(entry: &Entry, env: &Env, at: &dyn Fn(&str, &str) -> Error) -> Result<Secret, Error> {
    match (&entry.repo_token, &entry.repo_token_env) {
        (Some(token), None) => repo_token(token, "").map_err(|why| at("repo_token", &why)),
        (None, Some(var)) => match env.get(var)? {
            Some(token) => {
                let named = format!("{var} ");
                repo_token(token, &named).map_err(|why| at("repo_token_env", &why))
            }
            None => Err(at(
                "repo_token_env",
                &format!("names {var}, which is not set"),
            )),
        },
        (Some(_), Some(_)) => Err(at(
            "repo_token",
            "set repo_token or repo_token_env, not both",
        )),
        _ => Err(at(
            "repo_token_env",
            "missing; expected the name of the variable that holds the repo token (or \
             repo_token)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Settings, Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("projects.toml");
        std::fs::write(&path, toml).unwrap();
        let mut env = env.to_vec();
        env.push(("CIRCLECI_WEBHOOK_SECRET", "a-webhook-secret"));
        let args = ["serve".into(), "--config".into(), path.into_os_string()];
        let Ok(crate::settings::Command::Serve(flags)) = crate::settings::parse(args) else {
            panic!("not serve");
        };
        Settings::load(&flags, &Env::from_pairs(env))
    }

    const TWO: &str = r#"
        endpoint = "https://coveralls.example/"
        [[project]]
        name = "api"
        circleci_slug = "gh/acme/api"
        magnum_project_id = 43
        repo_token_env = "API_TOKEN"
        carryforward = ["unit", "e2e"]
        workflows = ["test"]
        [[project]]
        name = "web"
        circleci_project_id = "84996744-a854"
        repo_token = "web-token"
    "#;

    /// A source, and its projects-file key, by name.
    fn key(source: &str, name: &str) -> (&'static dyn Source, &'static IdKey) {
        let source = *SOURCES
            .iter()
            .find(|s| s.name() == source)
            .expect("a source");
        let key = source.keys().iter().find(|key| key.name == name);
        (source, key.expect("a key of the source"))
    }

    #[test]
    fn projects_are_found_by_slug_id_and_magnum_id() {
        let settings = load(TWO, &[("API_TOKEN", "api-token")]).unwrap();
        let (circleci, slug) = key("circleci", "circleci_slug");
        let (_, id) = key("circleci", "circleci_project_id");
        let (magnum, magnum_id) = key("magnum", "magnum_project_id");
        fn name(project: Option<&Project>) -> Option<&str> {
            project.map(|p| p.name.as_str())
        }
        let api = settings.find(circleci, &[(slug, Some("github/acme/api")), (id, None)]);
        assert_eq!(name(api), Some("api"));
        let api = api.unwrap();
        assert_eq!(api.token.expose(), "api-token");
        assert_eq!(api.coveralls.endpoint, "https://coveralls.example");
        assert_eq!(api.carryforward, ["unit", "e2e"]);
        let web = [(slug, Some("circleci/x/y")), (id, Some("84996744-a854"))];
        assert_eq!(name(settings.find(circleci, &web)), Some("web"));
        let by_magnum_id = |value| name(settings.find(magnum, &[(magnum_id, Some(value))]));
        assert_eq!(by_magnum_id("43"), Some("api"));
        assert_eq!(by_magnum_id("44"), None);
        let other = [(slug, Some("gh/acme/other"))];
        assert_eq!(name(settings.find(circleci, &other)), None);
        // An id is one source's: the key of one source, asked of another, finds nothing.
        assert_eq!(
            name(settings.find(magnum, &[(slug, Some("gh/acme/api"))])),
            None
        );
        assert_eq!(name(settings.project("web")), Some("web"));
        assert_eq!(name(settings.project("nobody")), None);
        assert!(!api.any(), "a project from a file has ids");
    }

    #[test]
    fn every_source_key_is_a_field_of_a_project_table() {
        for key in SOURCES.iter().flat_map(|source| source.keys()) {
            let toml = format!("name = \"a\"\n{} = \"v\"\n", key.name);
            let entry: Entry =
                basic_toml::from_str(&toml).unwrap_or_else(|err| panic!("{}: {err}", key.name));
            assert_eq!(entry.id(key.name).as_deref(), Some("v"), "{}", key.name);
        }
    }

    #[test]
    fn tokens_and_secrets_under_8_bytes_or_blank_are_refused_never_shown() {
        let file = |token: &str| {
            format!("[[project]]\nname = \"a\"\nmagnum_project_id = 1\nrepo_token = \"{token}\"\n")
        };
        assert!(load(&file("12345678"), &[]).is_ok(), "8 bytes are enough");
        for (token, expected) in [
            ("1234567", "repo_token: has 7 bytes; expected at least 8"),
            ("   ", "repo_token: is blank; expected at least 8 bytes"),
            (" 123456 ", "repo_token: has 6 bytes; expected at least 8"),
        ] {
            let err = load(&file(token), &[]).err().unwrap().to_string();
            assert!(err.contains(expected), "{err}");
            assert!(err.contains("project \"a\""), "{err}");
            assert!(
                token.trim().is_empty() || !err.contains(token.trim()),
                "{err}"
            );
        }
        let from_env = "[[project]]\nname = \"a\"\nmagnum_project_id = 1\nrepo_token_env = \"T\"\n";
        let err = load(from_env, &[("T", "short")]).err().unwrap().to_string();
        assert!(
            err.contains("repo_token_env: T has 5 bytes; expected at least 8"),
            "{err}"
        );
        assert!(!err.contains("short"), "{err}");
    }

    #[test]
    fn errors_name_the_file_the_project_and_the_key() {
        let err = |toml: &str, env: &[(&str, &str)]| load(toml, env).err().unwrap().to_string();
        let missing = err(TWO, &[]);
        assert!(
            missing.contains(
                "projects.toml: project \"api\": repo_token_env: names API_TOKEN, which is not set"
            ),
            "{missing}"
        );
        let unknown = err("[[project]]\nname = \"a\"\nslug = \"x\"\n", &[]);
        assert!(
            unknown.contains("projects.toml") && unknown.contains("unknown field `slug`"),
            "{unknown}"
        );
        let orphan = err(
            "[[project]]\nname = \"a\"\nrepo_token = \"token-of-a\"\n",
            &[],
        );
        assert!(
            orphan.contains("project \"a\": circleci_slug: set circleci_slug"),
            "{orphan}"
        );
        let twice = err(
            "[[project]]\nname = \"a\"\nmagnum_project_id = 1\nrepo_token = \"token-of-a\"\n[[project]]\nname = \"b\"\nmagnum_project_id = \"1\"\nrepo_token = \"token-of-a\"\n",
            &[],
        );
        assert!(
            twice.contains("project \"b\": magnum_project_id: \"1\" belongs to another project"),
            "{twice}"
        );
        let endpoint = err(
            "[[project]]\nname = \"a\"\nmagnum_project_id = 1\nrepo_token = \"token-of-a\"\nendpoint = \"ftp://x\"\n",
            &[],
        );
        assert!(
            endpoint.contains("project \"a\": endpoint: endpoint is \"ftp://x\""),
            "{endpoint}"
        );
    }
}
