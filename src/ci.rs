//! Which CI we run on, and the build number its coverage uploads used.
//!
//! The close must carry the same `service_number` as the parallel uploads, so this table
//! mirrors what the official reporter (coverage-reporter) and the other reporters read.

use crate::Error;
use crate::env::Env;

/// How a CI is recognised.
enum Detect {
    /// Any of these variables is set.
    AnySet(&'static [&'static str]),
    /// The variable holds exactly this value.
    Equals(&'static str, &'static str),
}

/// One row of the table: a CI and where its build number lives.
pub struct Ci {
    pub name: &'static str,
    detect: Detect,
    /// `service_name` sent to Coveralls; when `service_name_var` is set, its value wins.
    service_name: &'static str,
    service_name_var: Option<&'static str>,
    /// Where the build number is; `None` for CIs whose uploads use no build number.
    number_var: Option<&'static str>,
    attempt_var: Option<&'static str>,
    repo_name_var: Option<&'static str>,
}

const fn ci(name: &'static str, detect: Detect, service_name: &'static str) -> Ci {
    Ci {
        name,
        detect,
        service_name,
        service_name_var: None,
        number_var: None,
        attempt_var: None,
        repo_name_var: None,
    }
}

const fn numbered(row: Ci, number_var: &'static str) -> Ci {
    Ci {
        number_var: Some(number_var),
        ..row
    }
}

/// First match wins. `CIRCLE_BUILD_NUM` is a job number, not a workflow's: using it would
/// split the build, so CircleCI reads the workflow id like every reporter does.
pub const TABLE: &[Ci] = &[
    numbered(
        ci("CircleCI", Detect::AnySet(&["CIRCLECI"]), "circleci"),
        "CIRCLE_WORKFLOW_ID",
    ),
    Ci {
        attempt_var: Some("GITHUB_RUN_ATTEMPT"),
        repo_name_var: Some("GITHUB_REPOSITORY"),
        ..numbered(
            ci(
                "GitHub Actions",
                Detect::AnySet(&["GITHUB_ACTIONS"]),
                "github",
            ),
            "GITHUB_RUN_ID",
        )
    },
    numbered(
        ci("GitLab CI", Detect::AnySet(&["GITLAB_CI"]), "gitlab-ci"),
        "CI_PIPELINE_IID",
    ),
    numbered(
        ci("Travis CI", Detect::AnySet(&["TRAVIS"]), "travis-ci"),
        "TRAVIS_BUILD_NUMBER",
    ),
    numbered(
        ci("Semaphore", Detect::AnySet(&["SEMAPHORE"]), "semaphore"),
        "SEMAPHORE_WORKFLOW_ID",
    ),
    numbered(
        ci(
            "Jenkins",
            Detect::AnySet(&["JENKINS_URL", "JENKINS_HOME"]),
            "jenkins",
        ),
        "BUILD_NUMBER",
    ),
    numbered(
        ci("AppVeyor", Detect::AnySet(&["APPVEYOR"]), "appveyor"),
        "APPVEYOR_BUILD_VERSION",
    ),
    Ci {
        service_name_var: Some("CI_NAME"),
        ..numbered(
            ci("Magnum CI", Detect::Equals("MAGNUM", "true"), "magnum"),
            "CI_BUILD_NUMBER",
        )
    },
    Ci {
        service_name_var: Some("CI_NAME"),
        ..numbered(
            ci(
                "a generic CI (CI_NAME)",
                Detect::AnySet(&["CI_NAME", "CI_BUILD_NUMBER"]),
                "",
            ),
            "CI_BUILD_NUMBER",
        )
    },
    // These set no build number that the reporters use: the user has to give one.
    ci("Buildkite", Detect::AnySet(&["BUILDKITE"]), "buildkite"),
    ci("Drone", Detect::AnySet(&["DRONE"]), "drone"),
    ci(
        "Azure Pipelines",
        Detect::AnySet(&["TF_BUILD"]),
        "azure-pipelines",
    ),
    ci("Codefresh", Detect::AnySet(&["CF_BUILD_ID"]), "codefresh"),
    ci("Bitrise", Detect::AnySet(&["BITRISE_IO"]), "bitrise"),
    ci(
        "TeamCity",
        Detect::AnySet(&["TEAMCITY_VERSION"]),
        "teamcity",
    ),
];

impl Ci {
    fn matches(&self, env: &Env) -> bool {
        match self.detect {
            Detect::AnySet(vars) => vars.iter().any(|var| env.is_set(var)),
            Detect::Equals(var, want) => env.get(var).ok().flatten() == Some(want),
        }
    }
}

/// The first CI in [`TABLE`] whose variables are present.
pub fn detect(env: &Env) -> Option<&'static Ci> {
    TABLE.iter().find(|ci| ci.matches(env))
}

/// What the detected CI says about the build.
#[derive(Debug, Default, PartialEq)]
pub struct Detected {
    pub ci: Option<&'static str>,
    pub service_name: Option<String>,
    /// The build number and the variable it came from.
    pub number: Option<(String, &'static str)>,
    pub attempt: Option<String>,
    pub repo_name: Option<String>,
}

pub fn read(env: &Env) -> Result<Detected, Error> {
    let Some(ci) = detect(env) else {
        return Ok(Detected::default());
    };
    let var = |name: Option<&'static str>| -> Result<Option<String>, Error> {
        match name {
            Some(name) => Ok(env.get(name)?.map(|v| v.trim().to_owned())),
            None => Ok(None),
        }
    };
    let fixed_name = Some(ci.service_name.to_owned()).filter(|name| !name.is_empty());
    let number = match ci.number_var {
        Some(name) => var(Some(name))?.map(|value| (value, name)),
        None => None,
    };
    Ok(Detected {
        ci: Some(ci.name),
        service_name: var(ci.service_name_var)?.or(fixed_name),
        number,
        attempt: var(ci.attempt_var)?,
        repo_name: var(ci.repo_name_var)?,
    })
}

/// The configuration error for a build number that could not be worked out.
pub fn missing_number(env: &Env) -> Error {
    const SET: &str = "set COVERALLS_SERVICE_NUMBER (or --build-number) to the build number \
                       (service_number) that the parallel uploads sent";
    let message = match detect(env) {
        Some(Ci {
            name,
            number_var: Some(var),
            ..
        }) => format!("no build number: {name} detected, but {var} is not set; {SET}"),
        Some(Ci { name, .. }) => {
            format!("no build number: {name} detected, which sets none that the uploads use; {SET}")
        }
        None => {
            let known: Vec<&str> = TABLE
                .iter()
                .filter(|ci| ci.number_var.is_some())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn read_from(pairs: &[(&str, &str)]) -> Detected {
        read(&Env::from_pairs(pairs.iter().copied())).unwrap()
    }

    #[test]
    fn every_ci_with_a_number_is_read_from_its_own_variables() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (
                &[
                    ("CIRCLECI", "true"),
                    ("CIRCLE_WORKFLOW_ID", "wf-1"),
                    ("CIRCLE_BUILD_NUM", "9"),
                ],
                "circleci",
                "wf-1",
            ),
            (
                &[("GITHUB_ACTIONS", "true"), ("GITHUB_RUN_ID", "77")],
                "github",
                "77",
            ),
            (
                &[("GITLAB_CI", "true"), ("CI_PIPELINE_IID", "12")],
                "gitlab-ci",
                "12",
            ),
            (
                &[("TRAVIS", "true"), ("TRAVIS_BUILD_NUMBER", "5")],
                "travis-ci",
                "5",
            ),
            (
                &[("SEMAPHORE", "true"), ("SEMAPHORE_WORKFLOW_ID", "s-3")],
                "semaphore",
                "s-3",
            ),
            (
                &[("JENKINS_HOME", "/var/j"), ("BUILD_NUMBER", "41")],
                "jenkins",
                "41",
            ),
            (
                &[("JENKINS_URL", "http://j"), ("BUILD_NUMBER", "42")],
                "jenkins",
                "42",
            ),
            (
                &[("APPVEYOR", "True"), ("APPVEYOR_BUILD_VERSION", "1.0.7")],
                "appveyor",
                "1.0.7",
            ),
            (
                &[("MAGNUM", "true"), ("CI_BUILD_NUMBER", "130")],
                "magnum",
                "130",
            ),
            (
                &[
                    ("MAGNUM", "true"),
                    ("CI_NAME", "magnum-ci"),
                    ("CI_BUILD_NUMBER", "131"),
                ],
                "magnum-ci",
                "131",
            ),
            (
                &[("CI_NAME", "woodpecker"), ("CI_BUILD_NUMBER", "8")],
                "woodpecker",
                "8",
            ),
        ];
        for (env, service, number) in cases {
            let got = read_from(env);
            assert_eq!(got.service_name.as_deref(), Some(*service), "{env:?}");
            assert_eq!(got.number.map(|n| n.0).as_deref(), Some(*number), "{env:?}");
        }
    }

    #[test]
    fn github_also_gives_attempt_and_repository() {
        let got = read_from(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_RUN_ID", "77"),
            ("GITHUB_RUN_ATTEMPT", "2"),
            ("GITHUB_REPOSITORY", "octo/cat"),
        ]);
        assert_eq!(got.ci, Some("GitHub Actions"));
        assert_eq!(got.number, Some(("77".to_owned(), "GITHUB_RUN_ID")));
        assert_eq!(got.attempt.as_deref(), Some("2"));
        assert_eq!(got.repo_name.as_deref(), Some("octo/cat"));
    }

    #[test]
    fn magnum_needs_the_value_true() {
        let got = read_from(&[("MAGNUM", "false"), ("BUILDKITE", "true")]);
        assert_eq!(got.ci, Some("Buildkite"));
        assert_eq!(got.number, None);
    }

    #[test]
    fn missing_numbers_name_the_ci_and_the_variables() {
        let err = |pairs: &[(&str, &str)]| {
            missing_number(&Env::from_pairs(pairs.iter().copied())).to_string()
        };
        let github = err(&[("GITHUB_ACTIONS", "true")]);
        assert!(
            github.contains("GitHub Actions detected, but GITHUB_RUN_ID is not set"),
            "{github}"
        );
        assert!(github.contains("COVERALLS_SERVICE_NUMBER"), "{github}");
        let buildkite = err(&[("BUILDKITE", "true")]);
        assert!(
            buildkite.contains("Buildkite detected, which sets none"),
            "{buildkite}"
        );
        let none = err(&[]);
        assert!(none.contains("no CI detected"), "{none}");
        assert!(none.contains("Jenkins"), "{none}");
    }
}
