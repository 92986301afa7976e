//! The receiver's settings: which projects it closes builds for, and with which token.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use ureq::Agent;

use crate::Error;
use crate::cli::{Flags, ServeFlags};
use crate::client;
use crate::config::{self, Secret};
use crate::env::Env;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

pub struct Settings {
    pub listen: String,
    pub circleci_secret: Option<Secret>,
    pub magnum_secret: Option<Secret>,
    pub projects: Vec<Project>,
    pub retries: u32,
    pub timeout: Duration,
}

pub struct Project {
    pub name: String,
    /// Matches every project of every source: the single project from the environment.
    pub any: bool,
    pub circleci_slug: Option<String>,
    pub circleci_project_id: Option<String>,
    pub magnum_project_id: Option<String>,
    pub token: Secret,
    pub endpoint: String,
    pub carryforward: Vec<String>,
    /// Workflow names that close a build; empty: all.
    pub workflows: Vec<String>,
    /// Statuses that close a build; empty: all.
    pub statuses: Vec<String>,
    /// A job whose `job-completed` closes the build, before the workflow completes.
    pub final_job: Option<String>,
    pub service_name: Option<String>,
    /// One agent a worker, indexed by the worker's number.
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
    pub fn load(flags: &ServeFlags, env: &Env) -> Result<Settings, Error> {
        let common = config::common(env, &Flags::default())?;
        let secret = |name: &str| -> Result<Option<Secret>, Error> {
            Ok(env.get(name)?.map(|s| Secret(s.to_owned())))
        };
        let listen = match &flags.listen {
            Some(listen) => listen.clone(),
            None => env
                .get("COVERALLS_FINISH_LISTEN")?
                .unwrap_or(DEFAULT_LISTEN)
                .to_owned(),
        };
        let projects = match &flags.config {
            Some(path) => from_file(path, env, &common.endpoint)?,
            None => {
                let token = common.token.clone().ok_or_else(|| {
                    Error::config(
                        "COVERALLS_REPO_TOKEN is not set; the receiver needs it, or --config \
                         with a file of projects",
                    )
                })?;
                vec![Project {
                    name: "default".to_owned(),
                    any: true,
                    circleci_slug: None,
                    circleci_project_id: None,
                    magnum_project_id: None,
                    token,
                    agents: client::agents(&common.endpoint, env, super::WORKERS)?,
                    endpoint: common.endpoint.clone(),
                    carryforward: common.carryforward.clone(),
                    workflows: Vec::new(),
                    statuses: Vec::new(),
                    final_job: None,
                    service_name: None,
                }]
            }
        };
        let settings = Settings {
            listen,
            circleci_secret: secret("CIRCLECI_WEBHOOK_SECRET")?,
            magnum_secret: secret("MAGNUM_HOOK_SECRET")?,
            projects,
            retries: common.retries,
            timeout: common.timeout,
        };
        if settings.circleci_secret.is_none() && settings.magnum_secret.is_none() {
            return Err(Error::config(
                "neither CIRCLECI_WEBHOOK_SECRET nor MAGNUM_HOOK_SECRET is set: with no secret \
                 a source stays off, so there would be nothing to receive",
            ));
        }
        Ok(settings)
    }

    pub fn circleci_project(&self, slug: Option<&str>, id: Option<&str>) -> Option<&Project> {
        let slug = slug.map(normalize_slug);
        self.projects.iter().find(|p| {
            p.any
                || (p.circleci_slug.is_some()
                    && p.circleci_slug.as_deref().map(normalize_slug) == slug)
                || (p.circleci_project_id.is_some() && p.circleci_project_id.as_deref() == id)
        })
    }

    pub fn magnum_project(&self, project_id: &str) -> Option<&Project> {
        self.projects
            .iter()
            .find(|p| p.any || p.magnum_project_id.as_deref() == Some(project_id))
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

fn from_file(path: &Path, env: &Env, default_endpoint: &str) -> Result<Vec<Project>, Error> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|err| Error::config(format!("{shown}: cannot read it: {err}")))?;
    let file: File =
        basic_toml::from_str(&text).map_err(|err| Error::config(format!("{shown}: {err}")))?;
    let default_endpoint = match &file.endpoint {
        Some(endpoint) => config::parse_endpoint(endpoint, "endpoint")
            .map_err(|err| err.context(shown.to_string()))?,
        None => default_endpoint.to_owned(),
    };
    if file.project.is_empty() {
        return Err(Error::config(format!(
            "{shown}: no [[project]] tables; expected at least one"
        )));
    }
    let mut seen = HashSet::new();
    let mut projects = Vec::new();
    for entry in file.project {
        let name = entry.name.trim().to_owned();
        let at = |key: &str, what: String| {
            Error::config(format!("{shown}: project {name:?}: {key}: {what}"))
        };
        if name.is_empty() {
            return Err(Error::config(format!(
                "{shown}: a project has an empty name"
            )));
        }
        if !seen.insert(format!("name {name}")) {
            return Err(at("name", "another project has this name".into()));
        }
        let magnum_project_id = entry.magnum_project_id.as_ref().map(Id::text);
        let keys = [
            (
                "circleci_slug",
                entry.circleci_slug.as_deref().map(normalize_slug),
            ),
            ("circleci_project_id", entry.circleci_project_id.clone()),
            ("magnum_project_id", magnum_project_id.clone()),
        ];
        if keys.iter().all(|(_, v)| v.is_none()) {
            return Err(at(
                "circleci_slug",
                "set circleci_slug, circleci_project_id or magnum_project_id, so events can \
                 find this project"
                    .into(),
            ));
        }
        for (key, value) in &keys {
            if let Some(value) = value {
                if !seen.insert(format!("{key} {value}")) {
                    return Err(at(
                        key,
                        format!("{value:?} belongs to another project already"),
                    ));
                }
            }
        }
        let token = match (&entry.repo_token, &entry.repo_token_env) {
            (Some(token), None) if !token.is_empty() => Secret(token.clone()),
            (None, Some(var)) => match env.get(var)? {
                Some(token) => Secret(token.to_owned()),
                None => {
                    return Err(at(
                        "repo_token_env",
                        format!("names {var}, which is not set"),
                    ));
                }
            },
            (Some(_), Some(_)) => {
                return Err(at(
                    "repo_token",
                    "set repo_token or repo_token_env, not both".into(),
                ));
            }
            _ => {
                return Err(at(
                    "repo_token_env",
                    "missing; expected the name of the variable that holds the repo token \
                     (or repo_token)"
                        .into(),
                ));
            }
        };
        let endpoint = match &entry.endpoint {
            Some(endpoint) => config::parse_endpoint(endpoint, "endpoint")
                .map_err(|err| at("endpoint", err.message))?,
            None => default_endpoint.clone(),
        };
        let carryforward = config::split_flags(&entry.carryforward.join(","));
        projects.push(Project {
            agents: client::agents(&endpoint, env, super::WORKERS)?,
            name: name.clone(),
            any: false,
            circleci_slug: entry.circleci_slug,
            circleci_project_id: entry.circleci_project_id,
            magnum_project_id,
            token,
            endpoint,
            carryforward,
            workflows: entry.workflows,
            statuses: entry.statuses,
            final_job: entry.final_job,
            service_name: entry.service_name,
        });
    }
    Ok(projects)
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
        let flags = ServeFlags {
            listen: None,
            config: Some(path),
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
        let api = settings
            .circleci_project(Some("github/acme/api"), None)
            .unwrap();
        assert_eq!(api.name, "api");
        assert_eq!(api.token.expose(), "api-token");
        assert_eq!(api.endpoint, "https://coveralls.example");
        assert_eq!(api.carryforward, ["unit", "e2e"]);
        let web = settings
            .circleci_project(Some("circleci/x/y"), Some("84996744-a854"))
            .unwrap();
        assert_eq!(web.name, "web");
        assert_eq!(settings.magnum_project("43").unwrap().name, "api");
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
