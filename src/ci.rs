//! Which CI we run on, and everything it tells about the build, read in one pass.
//!
//! The close must carry the same `service_number` as the parallel uploads, so each row says
//! what the official reporter (coverage-reporter) reads, as its `ci/<name>.cr` does; under
//! every row, field by field, lies its generic CI ([`GENERIC`]), as its `config.cr` merges it.

use crate::env::Env;
use crate::error::Error;
use crate::fields::Fields;

use Read::{First, Format, Nothing, TrailingNumber, Unless, Value, Var, VarOr, With};

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
    /// The first of these variables that is set (Crystal's `ENV["A"]? || ENV["B"]?`).
    First(&'static [&'static str]),
    /// This variable, else this value.
    VarOr(&'static str, &'static str),
    /// The number at the very end of this variable's value (`[/(\d+)$/, 1]`: a pull
    /// request's URL).
    TrailingNumber(&'static str),
    /// This variable, unless it holds this value (Travis CI says `false` for no pull request).
    Unless(&'static str, &'static str),
    /// Text with `{VARIABLE}`s in it (a URL the reporter builds, `"#{ENV["X"]?}/jobs"`);
    /// nothing unless every variable in it is set.
    Format(&'static str),
    /// Worked out by a function beside its row.
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

/// coverage-reporter's generic CI (`ci/generic.cr`): read under every row where the row
/// itself finds nothing, and where no CI is detected at all; named as the CI where no row of
/// [`TABLE`] is detected but its variables are there.
const GENERIC: Ci = Ci {
    name: "a generic CI (CI_NAME)",
    detect: Detect::AnySet(&["CI_NAME", "CI_BUILD_NUMBER"]),
    read: Fields {
        service_name: Var("CI_NAME"),
        number: Var("CI_BUILD_NUMBER"),
        job_id: Var("CI_JOB_ID"),
        build_url: Var("CI_BUILD_URL"),
        job_url: Var("CI_JOB_URL"),
        branch: Var("CI_BRANCH"),
        pull_request: TrailingNumber("CI_PULL_REQUEST"),
        ..NONE
    },
    ..ROW
};

/// coverage-reporter's `CI_OPTIONS`, in its order (first match wins), each row as its
/// `ci/<name>.cr` reads; then the CIs it does not know, which this tool recognises only to
/// name them in errors. [`GENERIC`] lies under all of them.
const TABLE: &[Ci] = &[
    // circle_ci.cr. CIRCLE_BUILD_NUM is a job's number, not the workflow's: the build number
    // is the workflow id, and the job number goes as service_job_number.
    Ci {
        name: "CircleCI",
        detect: Detect::AnySet(&["CIRCLECI"]),
        read: Fields {
            service_name: Value("circleci"),
            number: Var("CIRCLE_WORKFLOW_ID"),
            build_url: Var("CIRCLE_BUILD_URL"),
            pull_request: TrailingNumber("CI_PULL_REQUEST"),
            job_number: Var("CIRCLE_BUILD_NUM"),
            job_url: Var("CIRCLE_BUILD_URL"),
            branch: Var("CIRCLE_BRANCH"),
            commit: Var("CIRCLE_SHA1"),
            ..NONE
        },
        ..ROW
    },
    // github.cr
    Ci {
        name: "GitHub Actions",
        detect: Detect::AnySet(&["GITHUB_ACTIONS"]),
        read: Fields {
            service_name: Value("github"),
            repo_name: Var("GITHUB_REPOSITORY"),
            number: Var("GITHUB_RUN_ID"),
            job_id: Var("GITHUB_JOB"),
            branch: First(&["GITHUB_HEAD_REF", "GITHUB_REF_NAME"]),
            build_url: Format(GITHUB_RUN_URL),
            job_url: Format(GITHUB_RUN_URL),
            pull_request: With(github_pull_request),
            attempt: Var("GITHUB_RUN_ATTEMPT"),
            commit: Var("GITHUB_SHA"),
            ..NONE
        },
        head: HeadFrom::GitHubEvent,
    },
    // gitlab.cr
    Ci {
        name: "GitLab CI",
        detect: Detect::AnySet(&["GITLAB_CI"]),
        read: Fields {
            service_name: Value("gitlab-ci"),
            number: Var("CI_PIPELINE_IID"),
            build_url: First(&["CI_PIPELINE_URL", "CI_JOB_URL"]),
            job_id: Var("CI_JOB_NAME"),
            job_url: Var("CI_JOB_URL"),
            pull_request: Var("CI_MERGE_REQUEST_IID"),
            branch: Var("CI_COMMIT_REF_NAME"),
            commit: Var("CI_COMMIT_SHA"),
            ..NONE
        },
        head: HeadFrom::GitLab,
    },
    // travis.cr
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
            ..NONE
        },
        ..ROW
    },
    // semaphore.cr
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
            build_url: Format("{SEMAPHORE_ORGANIZATION_URL}/workflows/{SEMAPHORE_WORKFLOW_ID}"),
            job_url: Format("{SEMAPHORE_ORGANIZATION_URL}/jobs/{SEMAPHORE_JOB_ID}"),
            ..NONE
        },
        ..ROW
    },
    // jenkins.cr
    Ci {
        name: "Jenkins",
        detect: Detect::AnySet(&["JENKINS_URL", "JENKINS_HOME"]),
        read: Fields {
            service_name: Value("jenkins"),
            number: Var("BUILD_NUMBER"),
            job_id: Var("BUILD_ID"),
            branch: First(&["BRANCH_NAME", "CHANGE_BRANCH"]),
            build_url: Var("BUILD_URL"),
            job_url: Var("BUILD_URL"),
            pull_request: First(&["CHANGE_ID", "ghprbPullId"]),
            ..NONE
        },
        ..ROW
    },
    // appveyor.cr
    Ci {
        name: "AppVeyor",
        detect: Detect::AnySet(&["APPVEYOR"]),
        read: Fields {
            service_name: Value("appveyor"),
            number: Var("APPVEYOR_BUILD_VERSION"),
            job_number: Var("APPVEYOR_BUILD_NUMBER"),
            job_id: Var("APPVEYOR_BUILD_ID"),
            branch: Var("APPVEYOR_REPO_BRANCH"),
            commit: Var("APPVEYOR_REPO_COMMIT"),
            build_url: Format(
                "https://ci.appveyor.com/project/{APPVEYOR_REPO_NAME}/build/{APPVEYOR_BUILD_VERSION}",
            ),
            ..NONE
        },
        ..ROW
    },
    // tddium.cr: Tddium, later Solano CI.
    Ci {
        name: "Tddium",
        detect: Detect::AnySet(&["TDDIUM"]),
        read: Fields {
            service_name: Value("tddium"),
            number: Var("TDDIUM_SESSION_ID"),
            job_id: Var("TDDIUM_TID"),
            pull_request: Var("TDDIUM_PR_ID"),
            branch: Var("TDDIUM_CURRENT_BRANCH"),
            build_url: Format("https://ci.solanolabs.com/reports/{TDDIUM_SESSION_ID}"),
            ..NONE
        },
        ..ROW
    },
    // azure.cr: no build number of its own.
    Ci {
        name: "Azure Pipelines",
        detect: Detect::AnySet(&["TF_BUILD"]),
        read: Fields {
            service_name: Value("Azure Pipelines"),
            job_id: Var("BUILD_BUILDID"),
            pull_request: Var("SYSTEM_PULLREQUEST_PULLREQUESTNUMBER"),
            branch: Var("BUILD_SOURCEBRANCHNAME"),
            commit: Var("BUILD_SOURCEVERSION"),
            ..NONE
        },
        ..ROW
    },
    // buildkite.cr: no build number of its own. Buildkite says `false` for no pull request,
    // which is no pull request's number (README: where this tool differs).
    Ci {
        name: "Buildkite",
        detect: Detect::AnySet(&["BUILDKITE"]),
        read: Fields {
            service_name: Value("buildkite"),
            job_number: Var("BUILDKITE_BUILD_NUMBER"),
            job_id: Var("BUILDKITE_BUILD_ID"),
            pull_request: Unless("BUILDKITE_PULL_REQUEST", "false"),
            branch: Var("BUILDKITE_BRANCH"),
            commit: Var("BUILDKITE_COMMIT"),
            ..NONE
        },
        ..ROW
    },
    // codefresh.cr: no build number of its own.
    Ci {
        name: "Codefresh",
        detect: Detect::AnySet(&["CF_BRANCH"]),
        read: Fields {
            service_name: Value("Codefresh"),
            job_id: Var("CF_BUILD_ID"),
            pull_request: Var("CF_PULL_REQUEST_NUMBER"),
            branch: Var("CF_BRANCH"),
            commit: Var("CF_REVISION"),
            ..NONE
        },
        ..ROW
    },
    // codeship.cr: its build number is the generic CI_BUILD_NUMBER, its job id too.
    Ci {
        name: "Codeship",
        detect: Detect::Equals("CI_NAME", "codeship"),
        read: Fields {
            service_name: Value("codeship"),
            job_id: Var("CI_BUILD_NUMBER"),
            branch: Var("CI_BRANCH"),
            commit: Var("CI_COMMIT_ID"),
            ..NONE
        },
        ..ROW
    },
    // surf.cr
    Ci {
        name: "Surf",
        detect: Detect::AnySet(&["SURF_SHA1"]),
        read: Fields {
            service_name: Value("surf"),
            branch: Var("SURF_REF"),
            commit: Var("SURF_SHA1"),
            ..NONE
        },
        ..ROW
    },
    // wercker.cr
    Ci {
        name: "Wercker",
        detect: Detect::AnySet(&["WERCKER"]),
        read: Fields {
            service_name: Value("wercker"),
            job_id: Var("WERCKER_BUILD_ID"),
            branch: Var("WERCKER_GIT_BRANCH"),
            commit: Var("WERCKER_GIT_COMMIT"),
            ..NONE
        },
        ..ROW
    },
    // drone.cr: no build number of its own (DRONE_BUILD_NUMBER is sent as the job's id).
    Ci {
        name: "Drone",
        detect: Detect::AnySet(&["DRONE"]),
        read: Fields {
            service_name: Value("drone"),
            job_id: Var("DRONE_BUILD_NUMBER"),
            pull_request: Var("DRONE_PULL_REQUEST"),
            branch: Var("DRONE_BRANCH"),
            commit: Var("DRONE_COMMIT"),
            ..NONE
        },
        ..ROW
    },
    // xcode_cloud.cr
    Ci {
        name: "Xcode Cloud",
        detect: Detect::AnySet(&["CI_XCODE_PROJECT"]),
        read: Fields {
            service_name: Value("xcode-cloud"),
            number: Var("CI_BUILD_NUMBER"),
            commit: Var("CI_COMMIT"),
            branch: First(&["CI_PULL_REQUEST_SOURCE_BRANCH", "CI_BRANCH"]),
            pull_request: Var("CI_PULL_REQUEST_NUMBER"),
            ..NONE
        },
        ..ROW
    },
    // rwx.cr
    Ci {
        name: "RWX",
        detect: Detect::AnySet(&["RWX"]),
        read: Fields {
            service_name: Value("rwx"),
            repo_name: Var("RWX_GIT_REPOSITORY_NAME"),
            number: Var("RWX_RUN_ID"),
            job_id: Var("RWX_TASK_ID"),
            branch: Var("RWX_GIT_REF_NAME"),
            build_url: Var("RWX_RUN_URL"),
            job_url: Var("RWX_TASK_URL"),
            attempt: Var("RWX_TASK_ATTEMPT_NUMBER"),
            commit: Var("RWX_GIT_COMMIT_SHA"),
            ..NONE
        },
        ..ROW
    },
    // local.cr: a run on a developer's machine.
    Ci {
        name: "a local run (COVERALLS_RUN_LOCALLY)",
        detect: Detect::AnySet(&["COVERALLS_RUN_LOCALLY"]),
        read: Fields {
            service_name: Value("coveralls-universal"),
            event_type: Value("manual"),
            ..NONE
        },
        ..ROW
    },
    // Not coverage-reporter's: Magnum CI sets the generic variables, and this tool's receiver
    // takes its hooks. Its name is CI_NAME's, as the uploads send it, else `magnum` (which
    // the receiver sends for its hooks too).
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
    // Not coverage-reporter's either: its uploads send nothing of these but the generic
    // variables, so neither does the close; they are named so that errors can say which CI
    // this is, and that it sets no build number.
    Ci {
        name: "Bitrise",
        detect: Detect::AnySet(&["BITRISE_IO"]),
        ..ROW
    },
    Ci {
        name: "TeamCity",
        detect: Detect::AnySet(&["TEAMCITY_VERSION"]),
        ..ROW
    },
];

/// GitHub Actions' run page, its `service_build_url` and `service_job_url`.
const GITHUB_RUN_URL: &str = "{GITHUB_SERVER_URL}/{GITHUB_REPOSITORY}/actions/runs/{GITHUB_RUN_ID}";

/// GitHub Actions' pull request: `N` of `refs/pull/N` in `GITHUB_REF`
/// (`/refs\/pull\/(\d+)/.match(ENV["GITHUB_REF"]?)`).
fn github_pull_request(env: &Env) -> Result<Option<String>, Error> {
    let Some(reference) = var(env, "GITHUB_REF")? else {
        return Ok(None);
    };
    let Some((_, after)) = reference.split_once("refs/pull/") else {
        return Ok(None);
    };
    let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    Ok((digits > 0).then(|| after[..digits].to_owned()))
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
/// and what it tells, with the generic CI's variables where it tells nothing: those are read
/// even where no CI is detected, as coverage-reporter merges them under whatever it finds.
pub fn detect(env: &Env) -> Result<Detected, Error> {
    let detected = TABLE.iter().find(|ci| ci.matches(env));
    let ci = detected.or_else(|| GENERIC.matches(env).then_some(&GENERIC));
    // Under the generic CI itself, the base reads the same variables again, to no effect.
    let own = ci.map_or(NONE, |ci| ci.read);
    let found = own
        .zip(GENERIC.read)
        .try_map(|(own, generic)| match own.read(env)? {
            Some(found) => Ok(Some(found)),
            None => generic.read(env),
        })?;
    Ok(Detected { ci, found })
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
            Format(text) => format(env, text)?.map(|value| Found { value, from: None }),
            With(read) => read(env)?.map(|value| Found { value, from: None }),
        })
    }

    /// The variables it reads one of, for messages.
    fn variables(self) -> Vec<&'static str> {
        match self {
            Nothing | Value(_) | With(_) => Vec::new(),
            First(names) => names.to_vec(),
            Var(name) | VarOr(name, _) | TrailingNumber(name) | Unless(name, _) => vec![name],
            Format(text) => placeholders(text).map(|(_, name)| name).collect(),
        }
    }
}

/// `text` with each `{VARIABLE}` in it replaced by its value; `None` if one is not set.
fn format(env: &Env, text: &str) -> Result<Option<String>, Error> {
    let mut formatted = String::new();
    let mut rest = text;
    for (before, name) in placeholders(text) {
        let Some(value) = var(env, name)? else {
            return Ok(None);
        };
        formatted = formatted + before + &value;
        rest = &rest[before.len() + name.len() + 2..];
    }
    Ok(Some(formatted + rest))
}

/// Each `{VARIABLE}` of `text`, with the text before it (since the one before).
fn placeholders(text: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let (before, after) = rest.split_once('{')?;
        let (name, after) = after.split_once('}').expect("each { closed by a }");
        rest = after;
        Some((before, name))
    })
}

/// `42` of `https://github.com/octo/cat/pull/42`; nothing of `…/pull/42/`.
fn trailing_number(url: &str) -> Option<String> {
    let digits = url.len() - url.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    (digits > 0).then(|| url[url.len() - digits..].to_owned())
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
                &detect_in(&[("CI_JOB_ID", "j"), ("CI_NAME", "x")])
                    .found
                    .job_id
            ),
            Some(("j".into(), Some("CI_JOB_ID"))),
            "the generic CI's own"
        );
    }

    #[test]
    fn the_generic_variables_are_read_where_no_ci_is_detected_and_nothing_else_is() {
        let got = detect_in(&[("CI_BRANCH", "main"), ("GITHUB_SHA", "abc")]);
        assert_eq!((got.name(), got.head_from()), (None, None));
        let expected = Fields {
            branch: Some(Found {
                value: "main".into(),
                from: Some("CI_BRANCH"),
            }),
            ..Fields::default()
        };
        assert_eq!(got.found, expected);
        assert_eq!(detect_in(&[]).found, Fields::default());
    }

    #[test]
    fn text_with_variables_in_it_needs_every_one() {
        let env = Env::from_pairs([("HOST", "https://ci.example"), ("RUN", "7")]);
        let text = "{HOST}/runs/{RUN}/log";
        assert_eq!(
            format(&env, text).unwrap().as_deref(),
            Some("https://ci.example/runs/7/log")
        );
        assert_eq!(format(&env, "{HOST}/jobs/{JOB}").unwrap(), None);
        assert_eq!(Format(text).variables(), ["HOST", "RUN"]);
        for ci in rows() {
            for (field, read) in ci.read.entries() {
                if let Format(text) = read {
                    let names = Format(text).variables().len();
                    let braces = (text.matches('{').count(), text.matches('}').count());
                    assert!(
                        names > 0 && braces == (names, names),
                        "{}: {field}",
                        ci.name
                    );
                }
            }
        }
    }

    #[test]
    fn pull_requests_are_the_digits_the_official_reporter_takes() {
        assert_eq!(trailing_number("https://x/pull/42").as_deref(), Some("42"));
        assert_eq!(trailing_number("PR 987").as_deref(), Some("987"));
        assert_eq!(trailing_number("https://x/pull/42/"), None);
        let github = |r: &str| github_pull_request(&Env::from_pairs([("GITHUB_REF", r)]));
        assert_eq!(github("refs/pull/42/merge").unwrap().as_deref(), Some("42"));
        assert_eq!(github("refs/pull/123").unwrap().as_deref(), Some("123"));
        assert_eq!(github("refs/heads/main").unwrap(), None);
        assert_eq!(github("refs/pull/x").unwrap(), None);
    }

    #[test]
    fn no_ci_names_the_ones_that_tell_a_number() {
        let none = detect_in(&[]).missing_number().to_string();
        assert!(none.contains("no CI detected"), "{none}");
        assert!(
            none.contains(
                "Jenkins, AppVeyor, Tddium, Xcode Cloud, RWX, Magnum CI, a generic CI (CI_NAME));"
            ),
            "{none}"
        );
        assert!(!none.contains("Buildkite"), "{none}");
        assert!(none.contains("COVERALLS_SERVICE_NUMBER"), "{none}");
    }
}
