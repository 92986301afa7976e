//! The receiver's settings: which projects it closes builds for, and with which token.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;
use ureq::Agent;

use crate::client::{self, Service};
use crate::config::{self, Secret};
use crate::env::Env;
use crate::error::Error;
use crate::settings::{Flags, Given, Key, Sources};

/// Agents (each with a connection pool of its own) a project's closes take turns on: threads
/// sharing one pool wait on each other.
const AGENTS: usize = 16;
/// The least a Magnum CI hook secret may be: it is the hook's only protection.
const MIN_MAGNUM_SECRET: usize = 16;

pub struct Settings {
    pub listen: String,
    pub circleci_secret: Option<Secret>,
    pub magnum_secret: Option<Secret>,
    pub projects: Vec<Project>,
    pub debug: bool,
}

pub struct Project {
    pub name: String,
    /// Matches every project of every source: the single project from the environment.
    pub any: bool,
    pub circleci_slug: Option<String>,
    pub circleci_project_id: Option<String>,
    pub magnum_project_id: Option<String>,
    pub token: Secret,
    pub service: Service,
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
    /// Agents the project's closes take turns on.
    pub agents: Vec<Agent>,
}

/// The projects file, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    endpoint: Option<String>,
    #[serde(default)]
    project: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    circleci_slug: Option<String>,
    circleci_project_id: Option<String>,
    magnum_project_id: Option<Id>,
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

impl Settings {
    pub fn load(flags: &Flags, env: &Env) -> Result<Settings, Error> {
        let sources = Sources::read(env, flags)?;
        let (shared, debug) = config::shared(&sources, env)?;
        let listen = sources
            .get(Key::Listen)
            .expect("a default")
            .value
            .to_owned();
        let projects = match sources.given(Key::Config) {
            Some(Given { value: path, .. }) => from_file(Path::new(path), env, &shared.service)?,
            None => vec![from_env(&shared, env)?],
        };
        let secret =
            |name: &str| -> Result<Option<Secret>, Error> { Ok(env.get(name)?.map(Secret::new)) };
        let settings = Settings {
            listen,
            circleci_secret: secret("CIRCLECI_WEBHOOK_SECRET")?,
            magnum_secret: secret("MAGNUM_HOOK_SECRET")?,
            projects,
            debug,
        };
        if let Some(secret) = &settings.magnum_secret {
            let length = secret.expose().len();
            if length < MIN_MAGNUM_SECRET {
                return Err(Error::config(format!(
                    "MAGNUM_HOOK_SECRET has {length} bytes; expected at least \
                     {MIN_MAGNUM_SECRET}, since the hook URL carries nothing else to trust \
                     (openssl rand -hex 32 makes a good one)"
                )));
            }
        }
        if settings.circleci_secret.is_none() && settings.magnum_secret.is_none() {
            return Err(Error::config(
                "neither CIRCLECI_WEBHOOK_SECRET nor MAGNUM_HOOK_SECRET is set: with no secret \
                 a source stays off, so there would be nothing to receive",
            ));
        }
        Ok(settings)
    }

    /// The index of the project a CircleCI event belongs to.
    pub fn circleci_project(&self, slug: Option<&str>, id: Option<&str>) -> Option<usize> {
        let slug = slug.map(normalize_slug);
        self.projects.iter().position(|p| {
            p.any
                || (p.circleci_slug.is_some()
                    && p.circleci_slug.as_deref().map(normalize_slug) == slug)
                || (p.circleci_project_id.is_some() && p.circleci_project_id.as_deref() == id)
        })
    }

    /// The index of the project a Magnum CI hook belongs to.
    pub fn magnum_project(&self, project_id: &str) -> Option<usize> {
        self.projects
            .iter()
            .position(|p| p.any || p.magnum_project_id.as_deref() == Some(project_id))
    }

    /// Every secret and token, for redacting them from the log.
    pub fn secrets(&self) -> Vec<String> {
        let tokens = self.projects.iter().map(|p| &p.token);
        let secrets = [&self.circleci_secret, &self.magnum_secret]
            .into_iter()
            .flatten();
        tokens
            .chain(secrets)
            .map(|s| s.expose().to_owned())
            .collect()
    }
}

impl Project {
    /// What the project closes builds for, for the log at start.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.any {
            parts.push("every CircleCI and Magnum CI project".to_owned());
        }
        for (what, value) in [
            ("CircleCI", &self.circleci_slug),
            ("CircleCI id", &self.circleci_project_id),
            ("Magnum CI project", &self.magnum_project_id),
        ] {
            if let Some(value) = value {
                parts.push(format!("{what} {value}"));
            }
        }
        parts.push(format!("endpoint {}", self.service.endpoint));
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
fn from_env(shared: &config::Shared, env: &Env) -> Result<Project, Error> {
    let token = shared.token.clone().ok_or_else(|| {
        Error::config(
            "COVERALLS_REPO_TOKEN is not set; the receiver needs it, or --config with a file of \
             projects",
        )
    })?;
    Ok(Project {
        name: "default".to_owned(),
        any: true,
        circleci_slug: None,
        circleci_project_id: None,
        magnum_project_id: None,
        token,
        agents: client::agents(&shared.service.endpoint, env, AGENTS)?,
        service: shared.service.clone(),
        carryforward: shared.carryforward.clone(),
        workflows: Vec::new(),
        statuses: Vec::new(),
        final_job: None,
        service_name: None,
        expected_jobs: None,
    })
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

fn from_file(path: &Path, env: &Env, shared: &Service) -> Result<Vec<Project>, Error> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|err| Error::config(format!("{shown}: cannot read it: {err}")))?;
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
    service: &Service,
    at: &dyn Fn(&str, &str) -> Error,
) -> Result<Project, Error> {
    if !seen.insert(format!("name {name}")) {
        return Err(at("name", "another project has this name"));
    }
    let magnum_project_id = entry.magnum_project_id.as_ref().map(Id::text);
    claim_ids(&entry, magnum_project_id.as_deref(), seen, at)?;
    let service = match &entry.endpoint {
        Some(endpoint) => {
            with_endpoint(service, endpoint).map_err(|e| at("endpoint", e.message()))?
        }
        None => service.clone(),
    };
    Ok(Project {
        agents: client::agents(&service.endpoint, env, AGENTS)?,
        token: token(&entry, env, at)?,
        name: name.to_owned(),
        any: false,
        circleci_slug: entry.circleci_slug,
        circleci_project_id: entry.circleci_project_id,
        magnum_project_id,
        service,
        carryforward: config::split_flags(&entry.carryforward.join(",")),
        workflows: entry.workflows,
        statuses: entry.statuses,
        final_job: entry.final_job,
        service_name: entry.service_name,
        expected_jobs: entry.expected_jobs,
    })
}

/// The ids that lead events to a project: at least one, and none another project's.
fn claim_ids(
    entry: &Entry,
    magnum_project_id: Option<&str>,
    seen: &mut HashSet<String>,
    at: &dyn Fn(&str, &str) -> Error,
) -> Result<(), Error> {
    let ids = [
        (
            "circleci_slug",
            entry.circleci_slug.as_deref().map(normalize_slug),
        ),
        ("circleci_project_id", entry.circleci_project_id.clone()),
        ("magnum_project_id", magnum_project_id.map(str::to_owned)),
    ];
    if ids.iter().all(|(_, v)| v.is_none()) {
        return Err(at(
            "circleci_slug",
            "set circleci_slug, circleci_project_id or magnum_project_id, so events can find \
             this project",
        ));
    }
    for (key, value) in &ids {
        if let Some(value) = value {
            if !seen.insert(format!("{key} {value}")) {
                let what = format!("{value:?} belongs to another project already");
                return Err(at(key, &what));
            }
        }
    }
    Ok(())
}

/// `service` at the endpoint a projects file names.
fn with_endpoint(service: &Service, endpoint: &str) -> Result<Service, Error> {
    let given = Given {
        value: endpoint,
        from: "endpoint",
    };
    Ok(Service {
        endpoint: config::parse_endpoint(&given)?,
        ..service.clone()
    })
}

/// The project's token: in the file, or in the variable the file names.
fn token(entry: &Entry, env: &Env, at: &dyn Fn(&str, &str) -> Error) -> Result<Secret, Error> {
    match (&entry.repo_token, &entry.repo_token_env) {
        (Some(token), None) if !token.is_empty() => Ok(Secret::new(token.clone())),
        (None, Some(var)) => match env.get(var)? {
            Some(token) => Ok(Secret::new(token)),
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
        env.push(("CIRCLECI_WEBHOOK_SECRET", "s"));
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

    #[test]
    fn projects_are_found_by_slug_id_and_magnum_id() {
        let settings = load(TWO, &[("API_TOKEN", "api-token")]).unwrap();
        let project = |index: Option<usize>| &settings.projects[index.unwrap()];
        let api = project(settings.circleci_project(Some("github/acme/api"), None));
        assert_eq!(api.name, "api");
        assert_eq!(api.token.expose(), "api-token");
        assert_eq!(api.service.endpoint, "https://coveralls.example");
        assert_eq!(api.carryforward, ["unit", "e2e"]);
        let web = project(settings.circleci_project(Some("circleci/x/y"), Some("84996744-a854")));
        assert_eq!(web.name, "web");
        assert_eq!(project(settings.magnum_project("43")).name, "api");
        assert!(settings.magnum_project("44").is_none());
        assert!(
            settings
                .circleci_project(Some("gh/acme/other"), None)
                .is_none()
        );
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
        let orphan = err("[[project]]\nname = \"a\"\nrepo_token = \"t\"\n", &[]);
        assert!(
            orphan.contains("project \"a\": circleci_slug: set circleci_slug"),
            "{orphan}"
        );
        let twice = err(
            "[[project]]\nname = \"a\"\nmagnum_project_id = 1\nrepo_token = \"t\"\n[[project]]\nname = \"b\"\nmagnum_project_id = \"1\"\nrepo_token = \"t\"\n",
            &[],
        );
        assert!(
            twice.contains("project \"b\": magnum_project_id: \"1\" belongs to another project"),
            "{twice}"
        );
        let endpoint = err(
            "[[project]]\nname = \"a\"\nmagnum_project_id = 1\nrepo_token = \"t\"\nendpoint = \"ftp://x\"\n",
            &[],
        );
        assert!(
            endpoint.contains("project \"a\": endpoint: endpoint is \"ftp://x\""),
            "{endpoint}"
        );
    }
}
