//! Settings checked and typed, before anything is sent: what the CI tells, with the user's
//! overrides applied in one place.

use std::time::Duration;

use crate::checks::{self, Checks};
use crate::ci::{self, Detected, HeadFrom};
use crate::client::{Build, Coveralls};
use crate::commit::{self, Git, Head};
use crate::coveralls_yml::{self, CoverallsYml};
use crate::env::Env;
use crate::error::Error;
use crate::event::{self, Event};
use crate::fields::Fields;
use crate::settings::{Flags, Given, Key, Values};

/// The setting that overrides each field of the build, where one does.
const OVERRIDES: Fields<Option<Key>> = Fields {
    service_name: Some(Key::ServiceName),
    number: Some(Key::BuildNumber),
    job_id: Some(Key::JobId),
    job_number: Some(Key::JobNumber),
    branch: Some(Key::Branch),
    pull_request: Some(Key::PullRequest),
    commit: Some(Key::Commit),
    repo_name: Some(Key::RepoName),
    event_type: Some(Key::EventType),
    ..Fields::splat(None)
};

pub const MAX_RETRIES: u32 = 20;
pub const MAX_TIMEOUT_SECS: f64 = 600.0;
const MAX_WAIT_SECS: f64 = 600.0;

/// A secret (a token): never printed, not even by `{:?}`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What the closer needs.
#[derive(Debug)]
pub struct Config {
    pub token: Option<Secret>,
    /// The token came from the config file, so it was not masked with the environment's.
    pub token_in_file: bool,
    pub coveralls: Coveralls,
    pub build: Build,
    /// The CI detected, if any.
    pub ci: Option<&'static str>,
    pub dry_run: bool,
    /// Fail rather than skip a pull request that gets no token.
    pub require_token: bool,
    /// On GitHub, a pull request from a fork or from Dependabot: no secret reaches its jobs.
    pub untrusted_pull_request: bool,
    /// Where the head commit's details came from, or why there are none: for debug output.
    pub notes: Vec<String>,
    /// What to learn, and check, after the close.
    pub checks: Checks,
}

/// What the closer and the receiver share: where Coveralls is, how to talk to it, and the
/// settings of the one project the environment describes.
pub struct Shared {
    pub token: Option<Secret>,
    pub coveralls: Coveralls,
    pub carryforward: Vec<String>,
}

/// The settings that decide how a failure is reported, readable even when the rest is wrong.
pub struct Early {
    pub fail_on_error: bool,
    pub debug: bool,
    pub token: Option<Secret>,
}

/// What is needed to report anything at all. Falls back to safe values where the settings
/// cannot be read: failing loudly, and the token masked if it can be found.
pub fn early(env: &Env, flags: &Flags) -> (Early, Result<(), Error>) {
    let token = env
        .get("COVERALLS_REPO_TOKEN")
        .ok()
        .flatten()
        .map(Secret::new);
    let mut early = Early {
        fail_on_error: true,
        debug: false,
        token,
    };
    let checked = Values::read(env, flags).and_then(|sources| {
        early.fail_on_error = boolean(&sources, Key::FailOnError)?;
        early.debug = debug(&sources, env)?;
        Ok(())
    });
    (early, checked)
}

/// The receiver's share of the settings, and whether it logs in debug detail.
#[cfg(feature = "serve")]
pub fn shared(sources: &Values, env: &Env) -> Result<(Shared, bool), Error> {
    Ok((shared_from(sources)?, debug(sources, env)?))
}

fn shared_from(sources: &Values) -> Result<Shared, Error> {
    let value = |key| sources.get(key).expect("the setting has a default");
    Ok(Shared {
        token: sources.given(Key::RepoToken).map(|t| Secret::new(t.value)),
        coveralls: Coveralls {
            endpoint: parse_endpoint(&value(Key::Endpoint))?,
            retries: parse_retries(&value(Key::Retries))?,
            timeout: parse_timeout(&value(Key::Timeout))?,
        },
        carryforward: sources
            .given(Key::Carryforward)
            .map(|given| split_flags(given.value))
            .unwrap_or_default(),
    })
}

pub fn load(env: &Env, flags: &Flags) -> Result<Config, Error> {
    let sources = Values::read(env, flags)?;
    let path = sources.get(Key::ConfigPath).expect("a default");
    let file = coveralls_yml::read(path.value.trim(), sources.given(Key::ConfigPath).is_some())?;
    let mut notes = Vec::new();
    // Debug is read, and checked, by `early`, which decides how everything is reported.
    let mut shared = shared_from(&sources)?;
    let token_in_file = under_the_environment(&file, &sources, &mut shared, &mut notes)?;
    let Shared {
        token,
        coveralls,
        carryforward,
    } = shared;
    let detected = ci::detect(env)?;
    let event = match (detected.head_from(), env.get("GITHUB_EVENT_PATH")?) {
        (Some(HeadFrom::GitHubEvent), Some(path)) => event::read(path)
            .map_err(|why| notes.push(format!("GitHub's event skipped: {why}")))
            .ok(),
        _ => None,
    };
    let (number, number_from) = build_number(&sources, &detected)?;
    let sent = overridden(&sources, &file, &detected, &mut notes);
    let git = git(env, &detected, &sent, event.as_ref(), &mut notes)?;
    let mut build = Build::new(number, number_from, sent);
    build.carryforward = carryforward;
    build.git = git;
    Ok(Config {
        token,
        token_in_file,
        coveralls,
        build,
        ci: detected.name(),
        dry_run: boolean(&sources, Key::DryRun)?,
        require_token: boolean(&sources, Key::RequireToken)?,
        untrusted_pull_request: untrusted_pull_request(env, event.as_ref())?,
        notes,
        checks: checks(&sources)?,
    })
}

/// What to check after the close. A threshold without a wait waits as long as it takes to
/// know the figure, within reason.
fn checks(sources: &Values) -> Result<Checks, Error> {
    let expected_jobs = match sources.given(Key::ExpectedJobs) {
        Some(given) => Some(whole_number(&given, 1, u64::from(u32::MAX))?),
        None => None,
    };
    let fail_under = match sources.given(Key::FailUnder) {
        Some(given) => Some(number(&given, 0.0, 100.0, "a percentage from 0 to 100")?),
        None => None,
    };
    let wait = sources.get(Key::Wait).expect("a default");
    let secs = number(
        &wait,
        0.0,
        MAX_WAIT_SECS,
        "a number of seconds from 0 to 600",
    )?;
    let wait = match (secs, fail_under) {
        (0.0, Some(_)) => checks::WAIT_FOR_FAIL_UNDER,
        _ => Duration::from_secs_f64(secs),
    };
    Ok(Checks {
        expected_jobs,
        wait,
        fail_under,
    })
}

fn whole_number(given: &Given, min: u64, max: u64) -> Result<u64, Error> {
    match given.value.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(Error::config(format!(
            "{} is {:?}; expected a whole number from {min} to {max}",
            given.from, given.value
        ))),
    }
}

fn number(given: &Given, min: f64, max: f64, expected: &str) -> Result<f64, Error> {
    match given.value.trim().parse::<f64>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(Error::config(format!(
            "{} is {:?}; expected {expected}",
            given.from, given.value
        ))),
    }
}

/// The build number and where it came from: given, else the CI's; a configuration error
/// where there is none, or it is blank.
fn build_number(sources: &Values, detected: &Detected) -> Result<(String, String), Error> {
    let given = OVERRIDES.number.and_then(|key| sources.given(key));
    let (number, from) = match (given, &detected.found.number) {
        (Some(given), _) => (given.value.trim().to_owned(), given.from.to_owned()),
        (None, Some(found)) => {
            let ci = detected.name().unwrap_or("CI");
            let from = match found.from {
                Some(var) => format!("{var}, {ci}"),
                None => ci.to_owned(),
            };
            (found.value.clone(), from)
        }
        (None, None) => return Err(detected.missing_number()),
    };
    match number.is_empty() {
        true => Err(detected.missing_number()),
        false => Ok((number, from)),
    }
}

/// The config file's token, endpoint and carryforward flags where none is given, as
/// coverage-reporter reads them; whether the token is the file's.
fn under_the_environment(
    file: &CoverallsYml,
    sources: &Values,
    shared: &mut Shared,
    notes: &mut Vec<String>,
) -> Result<bool, Error> {
    let mut from_file = |key| {
        let (name, value) = file.get(key).filter(|_| sources.given(key).is_none())?;
        notes.push(format!("{name}: from {}", file.path));
        Some((name, value))
    };
    let token_in_file = shared.token.is_none() && from_file(Key::RepoToken).is_some();
    if token_in_file {
        let (_, token) = file.get(Key::RepoToken).expect("just found");
        shared.token = Some(Secret::new(token));
    }
    if let Some((from, value)) = from_file(Key::Endpoint) {
        let given = Given { value, from };
        shared.coveralls.endpoint = parse_endpoint(&given).map_err(|e| e.context(&file.path))?;
    }
    if let Some((_, flags)) = from_file(Key::Carryforward) {
        shared.carryforward = split_flags(flags);
    }
    Ok(token_in_file)
}

/// What the CI tells, with the user's overrides applied: a value given (not blank) wins, then
/// the config file's, where coverage-reporter reads it there (`service_name`, `repo_name`).
fn overridden(
    sources: &Values,
    file: &CoverallsYml,
    detected: &Detected,
    notes: &mut Vec<String>,
) -> Fields<Option<String>> {
    let mut given = |key: Option<Key>| {
        let key = key?;
        let given = sources.given(key).map(|given| given.value.trim());
        if let Some(given) = given.filter(|given| !given.is_empty()) {
            return Some(given.to_owned());
        }
        let (name, value) = file.get(key)?;
        notes.push(format!("{name}: from {}", file.path));
        Some(value.to_owned())
    };
    let found = detected.found.clone().zip(OVERRIDES);
    found.map(|(found, key)| given(key).or(found.map(|found| found.value)))
}

/// `git`, as coverage-reporter's `Git.info`: the branch sent, else `GIT_BRANCH`, else git's;
/// the commit sent, else `CI_COMMIT_ID` or `GIT_ID`, else git's.
fn git(
    env: &Env,
    detected: &Detected,
    sent: &Fields<Option<String>>,
    event: Option<&Event>,
    notes: &mut Vec<String>,
) -> Result<Git, Error> {
    let mut head = commit::from_variables(env, detected.head_from())?;
    if let Some(commit) = &sent.commit {
        head.id = Some(commit.clone());
    }
    let branch = match (&sent.branch, env.first_text(&["GIT_BRANCH"])?) {
        (Some(branch), _) => Some(branch.clone()),
        (None, Some(branch)) => {
            notes.push("git.branch: from GIT_BRANCH".to_owned());
            Some(branch)
        }
        (None, None) => match commit::branch_from_git(env) {
            Ok(branch) => {
                notes.push("git.branch: from git".to_owned());
                Some(branch)
            }
            Err(why) => {
                notes.push(format!("git.branch: none ({why})"));
                None
            }
        },
    };
    Ok(Git {
        branch,
        head: head_details(env, head, event, notes),
    })
}

/// The head commit's details: the CI's variables, else GitHub's event, else `git log` (which
/// may tell the commit's id too, where nothing else did).
fn head_details(env: &Env, head: Head, event: Option<&Event>, notes: &mut Vec<String>) -> Head {
    let mut head = head;
    if !head.has_no_details() {
        notes.push("head commit: from the CI's variables".to_owned());
    } else if let (Some(event), Some(id)) = (event, head.id.as_deref()) {
        match commit::from_github_event(event, id) {
            Some(from_event) => {
                notes.push("head commit: from GitHub's event payload".to_owned());
                head = from_event;
            }
            None => notes.push(format!("GitHub's event is not a push of {id}")),
        }
    }
    if head.id.is_some() && !head.has_no_details() {
        return head;
    }
    match commit::from_git_log(head.id.as_deref(), env) {
        Ok(logged) if head.has_no_details() => {
            notes.push("head commit: from git log".to_owned());
            Head {
                id: head.id.or(logged.id),
                ..logged
            }
        }
        Ok(logged) => Head {
            id: logged.id,
            ..head
        },
        Err(why) => {
            let missing = match head.has_no_details() {
                true => "no details",
                false => "no id",
            };
            notes.push(format!("head commit: {missing} ({why})"));
            head
        }
    }
}

/// On GitHub: a pull request from a fork, or one Dependabot opened, whose jobs get no secrets.
fn untrusted_pull_request(env: &Env, event: Option<&Event>) -> Result<bool, Error> {
    let pull_request = matches!(
        env.get("GITHUB_EVENT_NAME")?,
        Some("pull_request" | "pull_request_review" | "pull_request_review_comment")
    );
    let repository = env.get("GITHUB_REPOSITORY")?;
    let from_a_fork = event.is_some_and(|event| event.comes_from_a_fork(repository));
    Ok(pull_request && (from_a_fork || env.get("GITHUB_ACTOR")? == Some("dependabot[bot]")))
}

fn debug(sources: &Values, env: &Env) -> Result<bool, Error> {
    let runner_debug = env.get("RUNNER_DEBUG").ok().flatten() == Some("1");
    Ok(boolean(sources, Key::Debug)? || runner_debug)
}

pub fn boolean(sources: &Values, key: Key) -> Result<bool, Error> {
    let given = sources.get(key).expect("a boolean has a default");
    match given.value.trim() {
        "true" | "True" | "TRUE" => Ok(true),
        "false" | "False" | "FALSE" => Ok(false),
        other => Err(Error::config(format!(
            "{} is {other:?}; expected true or false",
            given.from
        ))),
    }
}

/// A Coveralls base URL, without its trailing `/`.
pub fn parse_endpoint(given: &Given) -> Result<String, Error> {
    let value = given.value.trim().trim_end_matches('/');
    let bad = |why: &str| {
        Error::config(format!(
            "{} is {:?}: {why}; expected a base URL such as https://coveralls.io",
            given.from, given.value
        ))
    };
    // A credential in a URL ends up in logs (the token goes in the body): refused, and
    // the value is not echoed, unlike in every other complaint about it.
    let authority = value.split_once("://").map_or(value, |(_, rest)| rest);
    if authority
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("")
        .contains('@')
    {
        return Err(Error::config(format!(
            "{} holds a user name or password (user:password@), which a URL carries into \
             logs; expected a base URL such as https://coveralls.io",
            given.from
        )));
    }
    let uri: ureq::http::Uri = value.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("https" | "http") => {}
        _ => return Err(bad("the scheme must be https or http")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("there is no host"));
    }

    if uri.query().is_some() || value.contains('#') {
        return Err(bad("a query or fragment has no place in it"));
    }
    Ok(value.to_owned())
}

/// Flag names separated by commas and/or newlines; blanks trimmed, empties and repeats dropped.
pub fn split_flags(value: &str) -> Vec<String> {
    let mut flags: Vec<String> = Vec::new();
    for flag in value.split([',', '\n']).map(str::trim) {
        if !flag.is_empty() && !flags.iter().any(|f| f == flag) {
            flags.push(flag.to_owned());
        }
    }
    flags
}

fn parse_retries(given: &Given) -> Result<u32, Error> {
    let retries = whole_number(given, 0, u64::from(MAX_RETRIES))?;
    Ok(u32::try_from(retries).expect("at most MAX_RETRIES"))
}

fn parse_timeout(given: &Given) -> Result<Duration, Error> {
    match given.value.trim().parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= MAX_TIMEOUT_SECS => Ok(Duration::from_secs_f64(secs)),
        _ => Err(Error::config(format!(
            "{} is {:?}; expected a number of seconds above 0 and at most {MAX_TIMEOUT_SECS}",
            given.from, given.value
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Cmd, Command, parse};

    fn flags(args: &[&str]) -> Flags {
        match parse(args.iter().map(Into::into)).unwrap() {
            Command::Close(flags) => flags,
            other => panic!("not a close: {other:?}"),
        }
    }

    fn load_with(env: &[(&str, &str)], args: &[&str]) -> Result<Config, Error> {
        load(&Env::from_pairs(env.iter().copied()), &flags(args))
    }

    #[test]
    fn flag_beats_variable_beats_detection() {
        // COVERALLS_BUILD_NUMBER is read by no reporter, so it is not read here either.
        let env = [
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_RUN_ID", "100"),
            ("COVERALLS_BUILD_NUMBER", "300"),
        ];
        let cfg = load_with(&env, &[]).unwrap();
        assert_eq!(
            (cfg.build.number(), cfg.build.number_from.as_str()),
            ("100", "GITHUB_RUN_ID, GitHub Actions")
        );
        let mut env = env.to_vec();
        env.push(("COVERALLS_SERVICE_NUMBER", "200"));
        let cfg = load_with(&env, &[]).unwrap();
        assert_eq!(
            (cfg.build.number(), cfg.build.number_from.as_str()),
            ("200", "COVERALLS_SERVICE_NUMBER")
        );
        let cfg = load_with(&env, &["--build-number", "400"]).unwrap();
        assert_eq!(
            (cfg.build.number(), cfg.build.number_from.as_str()),
            ("400", "--build-number")
        );
    }

    #[test]
    fn carryforward_splits_on_commas_and_newlines() {
        assert_eq!(split_flags(" a, b\n\nc ,,a\r\n"), ["a", "b", "c"]);
        let cfg = load_with(
            &[
                ("COVERALLS_SERVICE_NUMBER", "1"),
                ("COVERALLS_CARRYFORWARD", "x"),
                ("COVERALLS_CARRYFORWARD_FLAGS", "y"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            cfg.build.carryforward,
            ["y"],
            "the main name wins over its alias"
        );
    }

    #[test]
    fn bad_values_name_their_source() {
        let n = ("COVERALLS_SERVICE_NUMBER", "1");
        let err =
            |env: &[(&str, &str)], args: &[&str]| load_with(env, args).unwrap_err().to_string();
        assert!(
            err(&[n, ("COVERALLS_DRY_RUN", "yes")], &[])
                .contains("COVERALLS_DRY_RUN is \"yes\"; expected true or false")
        );
        let early_err = early(&Env::from_pairs([n]), &flags(&["--fail-on-error=nope"]))
            .1
            .unwrap_err()
            .to_string();
        assert!(
            early_err.contains("--fail-on-error is \"nope\""),
            "{early_err}"
        );
        assert!(err(&[n, ("COVERALLS_RETRIES", "-1")], &[]).contains("COVERALLS_RETRIES"));
        assert!(err(&[n, ("COVERALLS_RETRIES", "21")], &[]).contains("0 to 20"));
        assert!(err(&[n, ("COVERALLS_TIMEOUT", "0")], &[]).contains("COVERALLS_TIMEOUT"));
        assert!(
            err(&[n, ("COVERALLS_ENDPOINT", "ftp://x")], &[])
                .contains("scheme must be https or http")
        );
        assert!(err(&[n, ("COVERALLS_ENDPOINT", "https://x/?a=1")], &[]).contains("query"));
        assert!(err(&[n], &["--endpoint", "coveralls.io"]).contains("--endpoint"));
    }

    #[test]
    fn every_default_value_passes_its_own_check() {
        let cfg = load_with(&[("COVERALLS_SERVICE_NUMBER", "1")], &[]).unwrap();
        assert_eq!(cfg.coveralls.endpoint, "https://coveralls.io");
        assert_eq!(cfg.coveralls.retries, 5);
        assert_eq!(cfg.coveralls.timeout, Duration::from_secs(20));
        assert!(!cfg.dry_run);
        let (early, checked) = early(&Env::default(), &Flags::new(Cmd::Close));
        assert!(checked.is_ok() && early.fail_on_error && !early.debug);
    }

    #[test]
    fn an_endpoint_with_a_credential_is_refused_without_echoing_it() {
        for endpoint in [
            "https://user:hunter2@cov.example",
            "https://hunter2@cov.example/base",
            "http://u:hunter2@127.0.0.1:8080/",
        ] {
            let env = [
                ("COVERALLS_SERVICE_NUMBER", "1"),
                ("COVERALLS_ENDPOINT", endpoint),
            ];
            let message = load_with(&env, &[]).unwrap_err().to_string();
            assert!(
                message.starts_with("COVERALLS_ENDPOINT holds a user name or password"),
                "{message}"
            );
            assert!(!message.contains("hunter2"), "{message}");
        }
        let at_in_path = [
            ("COVERALLS_SERVICE_NUMBER", "1"),
            ("COVERALLS_ENDPOINT", "https://cov.example/@team"),
        ];
        assert!(load_with(&at_in_path, &[]).is_ok());
    }

    #[test]
    fn endpoint_loses_its_trailing_slash_and_booleans_take_three_spellings() {
        let cfg = load_with(
            &[
                ("COVERALLS_SERVICE_NUMBER", "1"),
                ("COVERALLS_ENDPOINT", "https://cov.example/base/"),
                ("COVERALLS_DEBUG", "TRUE"),
                ("COVERALLS_DRY_RUN", "True"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(cfg.coveralls.endpoint, "https://cov.example/base");
        assert!(cfg.dry_run);
        let env = Env::from_pairs([
            ("COVERALLS_DEBUG", "TRUE"),
            ("COVERALLS_FAIL_ON_ERROR", "True"),
        ]);
        let (early, checked) = early(&env, &Flags::new(Cmd::Close));
        assert!(checked.is_ok() && early.debug && early.fail_on_error);
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let cfg = load_with(
            &[
                ("COVERALLS_SERVICE_NUMBER", "1"),
                ("COVERALLS_REPO_TOKEN", "sekret-123"),
            ],
            &[],
        )
        .unwrap();
        assert!(!format!("{cfg:?}").contains("sekret-123"));
        assert_eq!(cfg.token.unwrap().expose(), "sekret-123");
    }
}
