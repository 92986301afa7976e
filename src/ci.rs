//! Which CI we run on, and everything it tells about the build, read in one pass.
//!
//! The close must carry the same `service_number` as the parallel uploads, so each row says
//! what the official reporter (coverage-reporter) reads, as its `ci/<name>.cr` does; under
//! every row, field by field, lies its generic CI ([`GENERIC`]), as its `config.cr` merges it.

use crate::env::Env;
use crate::error::Error;
use crate::fields::Fields;

use Read::{First, Nothing, PullRef, TrailingNumber, Unless, Value, Var, VarOr, With};

/// How a CI is recognised.
enum Detect {
    /// Any of these variables is set.
    AnySet(&'static [&'static str]),
    /// The variable holds exactly this value.
    Equals(&'static str, &'static str),
}

/// How a CI keeps one field of the build.
#[derive(Clone, Copy)]
enum Read {
    /// It does not.
    Nothing,
    /// This value, whatever the environment says (most CIs' `service_name`).
    Value(&'static str),
    /// This variable.
    Var(&'static str),
    /// The first of these variables that is set.
    First(&'static [&'static str]),
    /// This variable, else this value.
    VarOr(&'static str, &'static str),
    /// The number at the end of this variable's value (the URL of a pull request).
    TrailingNumber(&'static str),
    /// This variable, unless it holds this value (Travis CI says `false` for no pull request).
    Unless(&'static str, &'static str),
    /// `N` of `refs/pull/N/merge` in this variable (GitHub's `GITHUB_REF`).
    PullRef(&'static str),
    /// Worked out by a function beside its row, from several variables.
    With(fn(&Env) -> Result<Option<String>, Error>),
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

/// One row of the table: a CI, and how it keeps each field of the build.
pub struct Ci {
    pub name: &'static str,
    detect: Detect,
    read: Fields<Read>,
    head: HeadFrom,
}

/// A row's fields before it names its own: none read.
const NONE: Fields<Read> = Fields::splat(Nothing);

/// The rest of a row, as most rows have it.
const ROW: Ci = Ci {
    name: "",
    detect: Detect::AnySet(&[]),
    read: NONE,
    head: HeadFrom::Variables,
};

/// coverage-reporter's generic CI (`ci/generic.cr`), and the commit as this tool read it
/// before: read under every row where the row itself finds nothing, and the row used where
/// no CI of [`TABLE`] is detected.
const GENERIC: Ci = Ci {
    name: "a generic CI (CI_NAME)",
    detect: Detect::AnySet(&["CI_NAME", "CI_BUILD_NUMBER"]),
    read: Fields {
        service_name: Var("CI_NAME"),
        number: Var("CI_BUILD_NUMBER"),
        job_id: Var("CI_JOB_ID"),
        build_url: Var("CI_BUILD_URL"),
        branch: Var("CI_BRANCH"),
        pull_request: TrailingNumber("CI_PULL_REQUEST"),
        commit: First(&["CI_COMMIT", "CI_COMMIT_ID", "GIT_ID"]),
        ..NONE
    },
    ..ROW
};

/// First match wins; [`GENERIC`] only where none does. `CIRCLE_BUILD_NUM` is a job number, not a workflow's: using it would
/// split the build, so CircleCI reads the workflow id like every reporter does.
const TABLE: &[Ci] = &[
    Ci {
        name: "CircleCI",
        detect: Detect::AnySet(&["CIRCLECI"]),
        read: Fields {
            service_name: Value("circleci"),
            number: Var("CIRCLE_WORKFLOW_ID"),
            build_url: Var("CIRCLE_BUILD_URL"),
            pull_request: TrailingNumber("CI_PULL_REQUEST"),
            job_id: Var("CIRCLE_BUILD_NUM"),
            branch: Var("CIRCLE_BRANCH"),
            commit: Var("CIRCLE_SHA1"),
            ..NONE
        },
        ..ROW
    },
    Ci {
        name: "GitHub Actions",
        detect: Detect::AnySet(&["GITHUB_ACTIONS"]),
        read: Fields {
            service_name: Value("github"),
            repo_name: Var("GITHUB_REPOSITORY"),
            number: Var("GITHUB_RUN_ID"),
            job_id: Var("GITHUB_JOB"),
            branch: First(&["GITHUB_HEAD_REF", "GITHUB_REF_NAME"]),
            build_url: With(github_run_url),
            pull_request: PullRef("GITHUB_REF"),
            attempt: Var("GITHUB_RUN_ATTEMPT"),
            commit: Var("GITHUB_SHA"),
            ..NONE
        },
        head: HeadFrom::GitHubEvent,
    },
    Ci {
        name: "GitLab CI",
        detect: Detect::AnySet(&["GITLAB_CI"]),
        read: Fields {
            service_name: Value("gitlab-ci"),
            number: Var("CI_PIPELINE_IID"),
            build_url: Var("CI_PIPELINE_URL"),
            job_id: Var("CI_JOB_NAME"),
            pull_request: Var("CI_MERGE_REQUEST_IID"),
            branch: Var("CI_COMMIT_REF_NAME"),
            commit: Var("CI_COMMIT_SHA"),
            ..NONE
        },
        head: HeadFrom::GitLab,
    },
    Ci {
        name: "Travis CI",
        detect: Detect::AnySet(&["TRAVIS"]),
        read: Fields {
            service_name: Value("travis-ci"),
            number: Var("TRAVIS_BUILD_NUMBER"),
            branch: Var("TRAVIS_BRANCH"),
            job_id: Var("TRAVIS_JOB_NUMBER"),
            build_url: Var("TRAVIS_BUILD_WEB_URL"),
            pull_request: Unless("TRAVIS_PULL_REQUEST", "false"),
            commit: Var("TRAVIS_COMMIT"),
            ..NONE
        },
        ..ROW
    },
    Ci {
        name: "Semaphore",
        detect: Detect::AnySet(&["SEMAPHORE"]),
        read: Fields {
            service_name: Value("semaphore"),
            number: Var("SEMAPHORE_WORKFLOW_ID"),
            job_id: Var("SEMAPHORE_JOB_ID"),
            branch: Var("SEMAPHORE_GIT_WORKING_BRANCH"),
            pull_request: Var("SEMAPHORE_GIT_PR_NUMBER"),
            commit: Var("SEMAPHORE_GIT_SHA"),
            ..NONE
        },
        ..ROW
    },
    Ci {
        name: "Jenkins",
        detect: Detect::AnySet(&["JENKINS_URL", "JENKINS_HOME"]),
        read: Fields {
            service_name: Value("jenkins"),
            number: Var("BUILD_NUMBER"),
            job_id: Var("BUILD_ID"),
            branch: First(&["BRANCH_NAME", "CHANGE_BRANCH"]),
            build_url: Var("BUILD_URL"),
            pull_request: Var("CHANGE_ID"),
            commit: Var("GIT_COMMIT"),
            ..NONE
        },
        ..ROW
    },
    Ci {
        name: "AppVeyor",
        detect: Detect::AnySet(&["APPVEYOR"]),
        read: Fields {
            service_name: Value("appveyor"),
            number: Var("APPVEYOR_BUILD_VERSION"),
            job_id: Var("APPVEYOR_BUILD_ID"),
            branch: Var("APPVEYOR_REPO_BRANCH"),
            pull_request: Var("APPVEYOR_PULL_REQUEST_NUMBER"),
            commit: Var("APPVEYOR_REPO_COMMIT"),
            ..NONE
        },
        ..ROW
    },
    // The generic variables are Magnum CI's own: all but its name come from the base.
    Ci {
        name: "Magnum CI",
        detect: Detect::Equals("MAGNUM", "true"),
        read: Fields {
            service_name: VarOr("CI_NAME", "magnum"),
            number: Var("CI_BUILD_NUMBER"),
            ..NONE
        },
        ..ROW
    },
    // These set no build number that the reporters use: the user has to give one.
    Ci {
        name: "Buildkite",
        detect: Detect::AnySet(&["BUILDKITE"]),
        read: Fields {
            service_name: Value("buildkite"),
            ..NONE
        },
        ..ROW
    },
    Ci {
        name: "Drone",
        detect: Detect::AnySet(&["DRONE"]),
        read: Fields {
            service_name: Value("drone"),
            ..NONE
        },
        ..ROW
    },
    Ci {
        name: "Azure Pipelines",
        detect: Detect::AnySet(&["TF_BUILD"]),
        read: Fields {
            service_name: Value("azure-pipelines"),
            ..NONE
        },
        ..ROW
    },
    Ci {
        name: "Codefresh",
        detect: Detect::AnySet(&["CF_BUILD_ID"]),
        read: Fields {
            service_name: Value("codefresh"),
            ..NONE
        },
        ..ROW
    },
    Ci {
        name: "Bitrise",
        detect: Detect::AnySet(&["BITRISE_IO"]),
        read: Fields {
            service_name: Value("bitrise"),
            ..NONE
        },
        ..ROW
    },
    Ci {
        name: "TeamCity",
        detect: Detect::AnySet(&["TEAMCITY_VERSION"]),
        read: Fields {
            service_name: Value("teamcity"),
            ..NONE
        },
        ..ROW
    },
];

/// GitHub Actions' `service_build_url`, the run's page:
/// `$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID`.
fn github_run_url(env: &Env) -> Result<Option<String>, Error> {
    let server = var(env, "GITHUB_SERVER_URL")?;
    let repository = var(env, "GITHUB_REPOSITORY")?;
    let run = var(env, "GITHUB_RUN_ID")?;
    Ok(match (server, repository, run) {
        (Some(server), Some(repository), Some(run)) => Some(format!(
            "{}/{repository}/actions/runs/{run}",
            server.trim_end_matches('/')
        )),
        _ => None,
    })
}

impl Ci {
    fn matches(&self, env: &Env) -> bool {
        match self.detect {
            Detect::AnySet(vars) => vars.iter().any(|var| env.is_set(var)),
            Detect::Equals(var, want) => env.get(var).ok().flatten() == Some(want),
        }
    }
}

/// A value the environment gave, and the variable it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub value: String,
    /// The variable, for logs and hints (`GITHUB_RUN_ID`); `None` for a value that the row
    /// fixes, or works out from several variables.
    pub from: Option<&'static str>,
}

impl Found {
    fn fixed(value: &str) -> Found {
        Found {
            value: value.to_owned(),
            from: None,
        }
    }

    /// The part of the value that `part` picks, as from the same variable.
    fn part(self, part: impl FnOnce(&str) -> Option<String>) -> Option<Found> {
        let value = part(&self.value)?;
        Some(Found { value, ..self })
    }
}

/// What the detected CI says about the build; all empty where no CI was detected.
#[derive(Default)]
pub struct Detected {
    ci: Option<&'static Ci>,
    /// Each field, with the variable it came from.
    pub found: Fields<Option<Found>>,
}

/// The first CI in the table whose variables are present (else the generic CI, if its are),
/// and what it tells, with the generic CI's variables where it tells nothing.
pub fn detect(env: &Env) -> Result<Detected, Error> {
    let detected = TABLE.iter().find(|ci| ci.matches(env));
    let Some(ci) = detected.or_else(|| GENERIC.matches(env).then_some(&GENERIC)) else {
        return Ok(Detected::default());
    };
    // Under the generic CI itself, the base reads the same variables again, to no effect.
    let found = ci
        .read
        .zip(GENERIC.read)
        .try_map(|(own, generic)| match own.read(env)? {
            Some(found) => Ok(Some(found)),
            None => generic.read(env),
        })?;
    Ok(Detected {
        ci: Some(ci),
        found,
    })
}

/// Every CI's name, the generic one last.
pub fn names() -> impl Iterator<Item = &'static str> {
    TABLE.iter().chain([&GENERIC]).map(|ci| ci.name)
}

/// A variable's value, trimmed; `None` where it is unset or blank.
fn var(env: &Env, name: &str) -> Result<Option<String>, Error> {
    env.first_text(&[name])
}

/// A variable's value as found.
fn found(env: &Env, name: &'static str) -> Result<Option<Found>, Error> {
    Ok(var(env, name)?.map(|value| Found {
        value,
        from: Some(name),
    }))
}

impl Read {
    fn read(self, env: &Env) -> Result<Option<Found>, Error> {
        Ok(match self {
            Nothing => None,
            Value(value) => Some(Found::fixed(value)),
            Var(name) => found(env, name)?,
            First(names) => {
                for name in names {
                    if let Some(found) = found(env, name)? {
                        return Ok(Some(found));
                    }
                }
                None
            }
            VarOr(name, value) => found(env, name)?.or_else(|| Some(Found::fixed(value))),
            TrailingNumber(name) => found(env, name)?.and_then(|url| url.part(trailing_number)),
            Unless(name, none) => found(env, name)?.filter(|found| found.value != none),
            PullRef(name) => found(env, name)?.and_then(|r| r.part(pull_number)),
            With(read) => read(env)?.map(|value| Found { value, from: None }),
        })
    }

    /// The variables it reads one of, for messages.
    fn variables(self) -> Vec<&'static str> {
        match self {
            Nothing | Value(_) | With(_) => Vec::new(),
            First(names) => names.to_vec(),
            Var(name) | VarOr(name, _) | TrailingNumber(name) | Unless(name, _) | PullRef(name) => {
                vec![name]
            }
        }
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

    /// Where else the head commit's details are to be found.
    pub fn head_from(&self) -> Option<HeadFrom> {
        self.ci.map(|ci| ci.head)
    }

    /// The configuration error for a build number that could not be worked out.
    pub fn missing_number(&self) -> Error {
        const SET: &str = "set COVERALLS_SERVICE_NUMBER (or --build-number) to the build number \
                           (service_number) that the parallel uploads sent";
        let message = match self.ci {
            Some(ci) if ci.read.number.variables().is_empty() => format!(
                "no build number: {} detected, which sets none that the uploads use; {SET}",
                ci.name
            ),
            Some(ci) => format!(
                "no build number: {} detected, but {} is not set; {SET}",
                ci.name,
                ci.read.number.variables().join(" or ")
            ),
            None => {
                let known: Vec<&str> = TABLE
                    .iter()
                    .chain([&GENERIC])
                    .filter(|ci| !ci.read.number.variables().is_empty())
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

/// The table's invariants, as ripgrep checks its flags'. Each row's cases, the environment
/// and the body sent, are data: tests/ci/*.json, read by tests/parity.rs, which also checks
/// that every row has a case and that each case detects its own row.
#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> impl Iterator<Item = &'static Ci> {
        TABLE.iter().chain([&GENERIC])
    }

    fn detect_in(pairs: &[(&str, &str)]) -> Detected {
        detect(&Env::from_pairs(pairs.iter().copied())).unwrap()
    }

    #[test]
    fn names_are_unique() {
        let names: Vec<&str> = names().collect();
        for (i, name) in names.iter().enumerate() {
            assert!(!names[..i].contains(name), "{name} twice");
        }
        assert_eq!(names.len(), rows().count());
    }

    /// No row is shadowed: what detects it, alone, detects no earlier row.
    #[test]
    fn each_row_is_detected_by_its_own_variables() {
        for ci in rows() {
            let envs: Vec<[(&str, &str); 1]> = match ci.detect {
                Detect::AnySet(vars) => vars.iter().map(|var| [(*var, "true")]).collect(),
                Detect::Equals(var, value) => vec![[(var, value)]],
            };
            assert!(!envs.is_empty(), "{} is detected by nothing", ci.name);
            for env in envs {
                assert_eq!(detect_in(&env).name(), Some(ci.name), "{env:?}");
            }
        }
    }

    #[test]
    fn the_generic_variables_fill_what_a_row_leaves_unset_and_no_more() {
        let got = detect_in(&[
            ("CIRCLECI", "true"),
            ("CIRCLE_WORKFLOW_ID", "wf-1"),
            ("CI_BUILD_NUMBER", "8"),
            ("CI_BRANCH", "generic"),
            ("CI_NAME", "other"),
        ]);
        let value = |found: &Option<Found>| found.as_ref().map(|f| (f.value.clone(), f.from));
        let found = &got.found;
        assert_eq!(
            value(&found.number),
            Some(("wf-1".into(), Some("CIRCLE_WORKFLOW_ID")))
        );
        assert_eq!(value(&found.service_name), Some(("circleci".into(), None)));
        assert_eq!(
            value(&found.branch),
            Some(("generic".into(), Some("CI_BRANCH")))
        );
        assert_eq!(found.job_id, None);
        assert_eq!(
            value(
                &detect_in(&[("CI_COMMIT_ID", "abc"), ("CI_NAME", "x")])
                    .found
                    .commit
            ),
            Some(("abc".into(), Some("CI_COMMIT_ID"))),
            "the first of several set, named"
        );
    }

    #[test]
    fn nothing_is_read_where_no_ci_is_detected() {
        let got = detect_in(&[("CI_BRANCH", "main"), ("GITHUB_SHA", "abc")]);
        assert_eq!((got.name(), got.head_from()), (None, None));
        assert_eq!(got.found, Fields::default());
    }

    #[test]
    fn no_ci_names_the_ones_that_tell_a_number() {
        let none = detect_in(&[]).missing_number().to_string();
        assert!(none.contains("no CI detected"), "{none}");
        assert!(
            none.contains("Jenkins, AppVeyor, Magnum CI, a generic CI (CI_NAME));"),
            "{none}"
        );
        assert!(!none.contains("Buildkite"), "{none}");
        assert!(none.contains("COVERALLS_SERVICE_NUMBER"), "{none}");
    }
}
