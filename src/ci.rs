//! Which CI we run on, and everything it tells about the build, read in one pass.
//!
//! The close must carry the same `service_number` as the parallel uploads, so this table
//! mirrors what the official reporter (coverage-reporter) and the other reporters read.

use crate::env::Env;
use crate::error::Error;

/// How a CI is recognised.
enum Detect {
    /// Any of these variables is set.
    AnySet(&'static [&'static str]),
    /// The variable holds exactly this value.
    Equals(&'static str, &'static str),
}

/// The `service_name` a CI's uploads send.
enum ServiceName {
    Fixed(&'static str),
    /// The variable's value, else the fixed name (if any).
    VarOr(&'static str, Option<&'static str>),
}

/// Where a CI keeps one value.
enum Source {
    None,
    /// The first of these variables that is set.
    Var(&'static [&'static str]),
    /// The number at the end of this variable's value (the URL of a pull request).
    TrailingNumber(&'static str),
    /// This variable, unless it holds this value (Travis CI says `false` for no pull request).
    Unless(&'static str, &'static str),
    /// `N` of `refs/pull/N/merge` in this variable (GitHub's `GITHUB_REF`).
    PullRef(&'static str),
    /// The run's page on GitHub: `$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID`.
    GitHubRun,
}

/// Where the head commit's author, committer and message come from, beyond the variables
/// that every CI may set (`CI_AUTHOR_NAME`, `GIT_AUTHOR_NAME`, …).
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum HeadFrom {
    Variables,
    /// GitHub's event payload, at `GITHUB_EVENT_PATH`.
    GitHubEvent,
    /// GitLab's `CI_COMMIT_AUTHOR` (`Name <email>`).
    GitLab,
}

/// One row of the table: a CI and where it keeps what the close sends.
pub struct Ci {
    pub name: &'static str,
    detect: Detect,
    service_name: ServiceName,
    /// Where the build number is; `None` for CIs whose uploads use no build number.
    number: Option<&'static str>,
    attempt: Source,
    repo_name: Source,
    commit: Source,
    branch: Source,
    pull_request: Source,
    build_url: Source,
    job_id: Source,
    head: HeadFrom,
}

/// The fields most rows leave empty.
const ROW: Ci = Ci {
    name: "",
    detect: Detect::AnySet(&[]),
    service_name: ServiceName::Fixed(""),
    number: None,
    attempt: Source::None,
    repo_name: Source::None,
    commit: Source::None,
    branch: Source::None,
    pull_request: Source::None,
    build_url: Source::None,
    job_id: Source::None,
    head: HeadFrom::Variables,
};

/// What Magnum CI and any other CI that follows its `CI_*` convention set.
const GENERIC: Ci = Ci {
    number: Some("CI_BUILD_NUMBER"),
    commit: Source::Var(&["CI_COMMIT", "CI_COMMIT_ID", "GIT_ID"]),
    branch: Source::Var(&["CI_BRANCH"]),
    pull_request: Source::TrailingNumber("CI_PULL_REQUEST"),
    build_url: Source::Var(&["CI_BUILD_URL"]),
    job_id: Source::Var(&["CI_JOB_ID"]),
    ..ROW
};

/// First match wins. `CIRCLE_BUILD_NUM` is a job number, not a workflow's: using it would
/// split the build, so CircleCI reads the workflow id like every reporter does.
const TABLE: &[Ci] = &[
    Ci {
        name: "CircleCI",
        detect: Detect::AnySet(&["CIRCLECI"]),
        service_name: ServiceName::Fixed("circleci"),
        number: Some("CIRCLE_WORKFLOW_ID"),
        commit: Source::Var(&["CIRCLE_SHA1"]),
        branch: Source::Var(&["CIRCLE_BRANCH"]),
        pull_request: Source::TrailingNumber("CI_PULL_REQUEST"),
        build_url: Source::Var(&["CIRCLE_BUILD_URL"]),
        job_id: Source::Var(&["CIRCLE_BUILD_NUM"]),
        ..ROW
    },
    Ci {
        name: "GitHub Actions",
        detect: Detect::AnySet(&["GITHUB_ACTIONS"]),
        service_name: ServiceName::Fixed("github"),
        number: Some("GITHUB_RUN_ID"),
        attempt: Source::Var(&["GITHUB_RUN_ATTEMPT"]),
        repo_name: Source::Var(&["GITHUB_REPOSITORY"]),
        commit: Source::Var(&["GITHUB_SHA"]),
        branch: Source::Var(&["GITHUB_HEAD_REF", "GITHUB_REF_NAME"]),
        pull_request: Source::PullRef("GITHUB_REF"),
        build_url: Source::GitHubRun,
        job_id: Source::Var(&["GITHUB_JOB"]),
        head: HeadFrom::GitHubEvent,
    },
    Ci {
        name: "GitLab CI",
        detect: Detect::AnySet(&["GITLAB_CI"]),
        service_name: ServiceName::Fixed("gitlab-ci"),
        number: Some("CI_PIPELINE_IID"),
        commit: Source::Var(&["CI_COMMIT_SHA"]),
        branch: Source::Var(&["CI_COMMIT_REF_NAME"]),
        pull_request: Source::Var(&["CI_MERGE_REQUEST_IID"]),
        build_url: Source::Var(&["CI_PIPELINE_URL"]),
        job_id: Source::Var(&["CI_JOB_NAME"]),
        head: HeadFrom::GitLab,
        ..ROW
    },
    Ci {
        name: "Travis CI",
        detect: Detect::AnySet(&["TRAVIS"]),
        service_name: ServiceName::Fixed("travis-ci"),
        number: Some("TRAVIS_BUILD_NUMBER"),
        commit: Source::Var(&["TRAVIS_COMMIT"]),
        branch: Source::Var(&["TRAVIS_BRANCH"]),
        pull_request: Source::Unless("TRAVIS_PULL_REQUEST", "false"),
        build_url: Source::Var(&["TRAVIS_BUILD_WEB_URL"]),
        job_id: Source::Var(&["TRAVIS_JOB_NUMBER"]),
        ..ROW
    },
    Ci {
        name: "Semaphore",
        detect: Detect::AnySet(&["SEMAPHORE"]),
        service_name: ServiceName::Fixed("semaphore"),
        number: Some("SEMAPHORE_WORKFLOW_ID"),
        commit: Source::Var(&["SEMAPHORE_GIT_SHA"]),
        branch: Source::Var(&["SEMAPHORE_GIT_WORKING_BRANCH"]),
        pull_request: Source::Var(&["SEMAPHORE_GIT_PR_NUMBER"]),
        job_id: Source::Var(&["SEMAPHORE_JOB_ID"]),
        ..ROW
    },
    Ci {
        name: "Jenkins",
        detect: Detect::AnySet(&["JENKINS_URL", "JENKINS_HOME"]),
        service_name: ServiceName::Fixed("jenkins"),
        number: Some("BUILD_NUMBER"),
        commit: Source::Var(&["GIT_COMMIT"]),
        branch: Source::Var(&["BRANCH_NAME", "CHANGE_BRANCH"]),
        pull_request: Source::Var(&["CHANGE_ID"]),
        build_url: Source::Var(&["BUILD_URL"]),
        job_id: Source::Var(&["BUILD_ID"]),
        ..ROW
    },
    Ci {
        name: "AppVeyor",
        detect: Detect::AnySet(&["APPVEYOR"]),
        service_name: ServiceName::Fixed("appveyor"),
        number: Some("APPVEYOR_BUILD_VERSION"),
        commit: Source::Var(&["APPVEYOR_REPO_COMMIT"]),
        branch: Source::Var(&["APPVEYOR_REPO_BRANCH"]),
        pull_request: Source::Var(&["APPVEYOR_PULL_REQUEST_NUMBER"]),
        job_id: Source::Var(&["APPVEYOR_BUILD_ID"]),
        ..ROW
    },
    Ci {
        name: "Magnum CI",
        detect: Detect::Equals("MAGNUM", "true"),
        service_name: ServiceName::VarOr("CI_NAME", Some("magnum")),
        ..GENERIC
    },
    Ci {
        name: "a generic CI (CI_NAME)",
        detect: Detect::AnySet(&["CI_NAME", "CI_BUILD_NUMBER"]),
        service_name: ServiceName::VarOr("CI_NAME", None),
        ..GENERIC
    },
    // These set no build number that the reporters use: the user has to give one.
    Ci {
        name: "Buildkite",
        detect: Detect::AnySet(&["BUILDKITE"]),
        service_name: ServiceName::Fixed("buildkite"),
        ..ROW
    },
    Ci {
        name: "Drone",
        detect: Detect::AnySet(&["DRONE"]),
        service_name: ServiceName::Fixed("drone"),
        ..ROW
    },
    Ci {
        name: "Azure Pipelines",
        detect: Detect::AnySet(&["TF_BUILD"]),
        service_name: ServiceName::Fixed("azure-pipelines"),
        ..ROW
    },
    Ci {
        name: "Codefresh",
        detect: Detect::AnySet(&["CF_BUILD_ID"]),
        service_name: ServiceName::Fixed("codefresh"),
        ..ROW
    },
    Ci {
        name: "Bitrise",
        detect: Detect::AnySet(&["BITRISE_IO"]),
        service_name: ServiceName::Fixed("bitrise"),
        ..ROW
    },
    Ci {
        name: "TeamCity",
        detect: Detect::AnySet(&["TEAMCITY_VERSION"]),
        service_name: ServiceName::Fixed("teamcity"),
        ..ROW
    },
];

impl Ci {
    fn matches(&self, env: &Env) -> bool {
        match self.detect {
            Detect::AnySet(vars) => vars.iter().any(|var| env.is_set(var)),
            Detect::Equals(var, want) => env.get(var).ok().flatten() == Some(want),
        }
    }
}

/// What the detected CI says about the build; all empty where no CI was detected.
#[derive(Default)]
pub struct Detected {
    ci: Option<&'static Ci>,
    pub service_name: Option<String>,
    /// The build number and the variable it came from.
    pub number: Option<(String, &'static str)>,
    pub attempt: Option<String>,
    pub repo_name: Option<String>,
    pub commit: Option<String>,
    pub branch: Option<String>,
    pub pull_request: Option<String>,
    pub build_url: Option<String>,
    pub job_id: Option<String>,
    /// Where else the head commit's details are to be found.
    pub head_from: Option<HeadFrom>,
}

/// The first CI in the table whose variables are present, and what it tells.
pub fn detect(env: &Env) -> Result<Detected, Error> {
    let Some(ci) = TABLE.iter().find(|ci| ci.matches(env)) else {
        return Ok(Detected::default());
    };
    let read = |source: &Source| source.read(env);
    let service_name = match ci.service_name {
        ServiceName::Fixed(name) => Some(name.to_owned()),
        ServiceName::VarOr(name, fixed) => var(env, name)?.or(fixed.map(str::to_owned)),
    };
    let number = match ci.number {
        Some(name) => var(env, name)?.map(|number| (number, name)),
        None => None,
    };
    Ok(Detected {
        ci: Some(ci),
        service_name,
        number,
        attempt: read(&ci.attempt)?,
        repo_name: read(&ci.repo_name)?,
        commit: read(&ci.commit)?,
        branch: read(&ci.branch)?,
        pull_request: read(&ci.pull_request)?,
        build_url: read(&ci.build_url)?,
        job_id: read(&ci.job_id)?,
        head_from: Some(ci.head),
    })
}

/// Every CI's name, in the table's order.
pub fn names() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|ci| ci.name)
}

/// A variable's value, trimmed; `None` where it is unset or blank.
fn var(env: &Env, name: &str) -> Result<Option<String>, Error> {
    env.first_text(&[name])
}

impl Source {
    fn read(&self, env: &Env) -> Result<Option<String>, Error> {
        Ok(match *self {
            Source::None => None,
            Source::Var(names) => env.first_text(names)?,
            Source::TrailingNumber(name) => var(env, name)?.and_then(|url| trailing_number(&url)),
            Source::Unless(name, none) => var(env, name)?.filter(|value| value != none),
            Source::PullRef(name) => var(env, name)?.and_then(|r| pull_number(&r)),
            Source::GitHubRun => {
                let server = var(env, "GITHUB_SERVER_URL")?;
                let repository = var(env, "GITHUB_REPOSITORY")?;
                let run = var(env, "GITHUB_RUN_ID")?;
                match (server, repository, run) {
                    (Some(server), Some(repository), Some(run)) => Some(format!(
                        "{}/{repository}/actions/runs/{run}",
                        server.trim_end_matches('/')
                    )),
                    _ => None,
                }
            }
        })
    }
}

/// `42` of `https://github.com/octo/cat/pull/42`.
fn trailing_number(url: &str) -> Option<String> {
    let digits: String = url
        .trim_end_matches('/')
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then(|| digits.chars().rev().collect())
}

/// `42` of `refs/pull/42/merge`.
fn pull_number(reference: &str) -> Option<String> {
    let number = reference.strip_prefix("refs/pull/")?.split('/').next()?;
    (!number.is_empty() && number.chars().all(|c| c.is_ascii_digit())).then(|| number.to_owned())
}

impl Detected {
    pub fn name(&self) -> Option<&'static str> {
        self.ci.map(|ci| ci.name)
    }

    /// The configuration error for a build number that could not be worked out.
    pub fn missing_number(&self) -> Error {
        const SET: &str = "set COVERALLS_SERVICE_NUMBER (or --build-number) to the build number \
                           (service_number) that the parallel uploads sent";
        let message = match self.ci {
            Some(Ci {
                name,
                number: Some(var),
                ..
            }) => format!("no build number: {name} detected, but {var} is not set; {SET}"),
            Some(Ci { name, .. }) => format!(
                "no build number: {name} detected, which sets none that the uploads use; {SET}"
            ),
            None => {
                let known: Vec<&str> = TABLE
                    .iter()
                    .filter(|ci| ci.number.is_some())
                    .map(|ci| ci.name)
                    .collect();
                format!(
                    "no build number: no CI detected (known: {}); {SET}",
                    known.join(", ")
                )
            }
        };
        Error::config(message)
    }
}

/// The cases of each CI, the environment and the body sent, are data: tests/ci/*.json, read
/// by tests/parity.rs, which also checks that every CI has a file of them.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_ci_names_the_ones_that_tell_a_number() {
        let none = detect(&Env::default())
            .unwrap()
            .missing_number()
            .to_string();
        assert!(none.contains("no CI detected"), "{none}");
        assert!(
            none.contains("Jenkins, AppVeyor, Magnum CI, a generic CI (CI_NAME));"),
            "{none}"
        );
        assert!(!none.contains("Buildkite"), "{none}");
        assert!(none.contains("COVERALLS_SERVICE_NUMBER"), "{none}");
    }
}
