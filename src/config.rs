//! Settings from `COVERALLS_*` variables and flags, checked before anything is sent.

use std::time::Duration;

use serde::Deserialize;

use crate::Error;
use crate::ci;
use crate::cli::Flags;
use crate::env::Env;

pub const DEFAULT_ENDPOINT: &str = "https://coveralls.io";
pub const DEFAULT_RETRIES: u32 = 5;
pub const MAX_RETRIES: u32 = 20;
pub const DEFAULT_TIMEOUT_SECS: u64 = 20;
pub const MAX_TIMEOUT_SECS: f64 = 600.0;

/// The `COVERALLS_*` variables, read by `envy` (names lowercased, prefix dropped).
/// All text: values are checked below so that errors can name the variable.
#[derive(Deserialize, Default)]
struct Vars {
    repo_token: Option<String>,
    endpoint: Option<String>,
    carryforward_flags: Option<String>,
    carryforward: Option<String>,
    service_number: Option<String>,
    build_number: Option<String>,
    service_name: Option<String>,
    repo_name: Option<String>,
    fail_on_error: Option<String>,
    dry_run: Option<String>,
    debug: Option<String>,
    retries: Option<String>,
    timeout: Option<String>,
}

/// A value and where it came from: a flag or a variable, named in errors and logs.
struct Given<'a> {
    value: &'a str,
    from: &'static str,
}

/// The token: never printed, not even by `{:?}`.
#[derive(Clone)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug)]
pub struct Config {
    pub token: Option<Secret>,
    /// Without a trailing `/`.
    pub endpoint: String,
    pub carryforward: Vec<String>,
    pub build: Build,
    pub dry_run: bool,
    pub retries: u32,
    pub timeout: Duration,
}

/// The build to close, with what identifies it to Coveralls.
#[derive(Debug, Clone)]
pub struct Build {
    pub number: String,
    /// Where the number came from, for logs and hints: a flag, a variable, `VAR (CI name)`.
    pub number_from: String,
    pub ci: Option<&'static str>,
    pub service_name: Option<String>,
    pub repo_name: Option<String>,
    pub attempt: Option<String>,
}

/// The settings that decide how a failure is reported, readable even when the rest is wrong.
pub struct Early {
    pub fail_on_error: bool,
    pub debug: bool,
    pub token: Option<Secret>,
}

struct Sources<'a> {
    vars: Vars,
    flags: &'a Flags,
}

impl<'a> Sources<'a> {
    fn new(env: &Env, flags: &'a Flags) -> Result<Self, Error> {
        env.check_unicode("COVERALLS_")?;
        let vars = envy::prefixed("COVERALLS_")
            .from_iter::<_, Vars>(env.pairs())
            .map_err(|err| Error::config(format!("reading COVERALLS_* variables: {err}")))?;
        Ok(Sources { vars, flags })
    }

    /// The flag if given, else the first variable that is set.
    fn pick(
        &'a self,
        flag: &'static str,
        vars: &[(&'static str, &'a Option<String>)],
    ) -> Option<Given<'a>> {
        if let Some(value) = self.flags.get(flag) {
            return Some(Given { value, from: flag });
        }
        vars.iter()
            .find_map(|(from, value)| value.as_deref().map(|value| Given { value, from }))
    }

    fn bool(
        &'a self,
        flag: &'static str,
        var: (&'static str, &'a Option<String>),
        default: bool,
    ) -> Result<bool, Error> {
        match self.pick(flag, &[var]) {
            None => Ok(default),
            Some(given) => parse_bool(&given),
        }
    }

    fn fail_on_error(&'a self) -> Result<bool, Error> {
        let var = ("COVERALLS_FAIL_ON_ERROR", &self.vars.fail_on_error);
        self.bool("--fail-on-error", var, true)
    }

    fn debug(&'a self, env: &Env) -> Result<bool, Error> {
        let runner_debug = env.get("RUNNER_DEBUG").ok().flatten() == Some("1");
        self.bool("--debug", ("COVERALLS_DEBUG", &self.vars.debug), false)
            .map(|debug| debug || runner_debug)
    }
}

fn parse_bool(given: &Given) -> Result<bool, Error> {
    match given.value.trim() {
        "true" | "True" | "TRUE" => Ok(true),
        "false" | "False" | "FALSE" => Ok(false),
        other => Err(Error::config(format!(
            "{} is {other:?}; expected true or false",
            given.from
        ))),
    }
}

/// What is needed to report anything at all. Falls back to safe values where the
/// settings cannot be read: failing loudly, and the token masked if it can be found.
pub fn early(env: &Env, flags: &Flags) -> (Early, Result<(), Error>) {
    let token = env
        .get("COVERALLS_REPO_TOKEN")
        .ok()
        .flatten()
        .map(|t| Secret(t.to_owned()));
    let mut early = Early {
        fail_on_error: true,
        debug: false,
        token,
    };
    let checked = Sources::new(env, flags).and_then(|sources| {
        early.fail_on_error = sources.fail_on_error()?;
        early.debug = sources.debug(env)?;
        Ok(())
    });
    (early, checked)
}

/// The settings the closer and the receiver share: where Coveralls is and how to talk to it.
pub struct Common {
    pub token: Option<Secret>,
    pub endpoint: String,
    pub carryforward: Vec<String>,
    pub retries: u32,
    pub timeout: Duration,
    pub debug: bool,
}

pub fn common(env: &Env, flags: &Flags) -> Result<Common, Error> {
    let sources = Sources::new(env, flags)?;
    sources.common(env)
}

impl Sources<'_> {
    fn common(&self, env: &Env) -> Result<Common, Error> {
        let vars = &self.vars;
        let endpoint = match self.pick("--endpoint", &[("COVERALLS_ENDPOINT", &vars.endpoint)]) {
            Some(given) => parse_endpoint(given.value, given.from)?,
            None => DEFAULT_ENDPOINT.to_owned(),
        };
        let carryforward = self
            .pick(
                "--carryforward",
                &[
                    ("COVERALLS_CARRYFORWARD_FLAGS", &vars.carryforward_flags),
                    ("COVERALLS_CARRYFORWARD", &vars.carryforward),
                ],
            )
            .map(|given| split_flags(given.value))
            .unwrap_or_default();
        let retries = match self.pick("--retries", &[("COVERALLS_RETRIES", &vars.retries)]) {
            Some(given) => parse_retries(&given)?,
            None => DEFAULT_RETRIES,
        };
        let timeout = match self.pick("--timeout", &[("COVERALLS_TIMEOUT", &vars.timeout)]) {
            Some(given) => parse_timeout(&given)?,
            None => Duration::from_secs(DEFAULT_TIMEOUT_SECS),
        };
        Ok(Common {
            token: vars.repo_token.clone().map(Secret),
            endpoint,
            carryforward,
            retries,
            timeout,
            debug: self.debug(env)?,
        })
    }
}

pub fn load(env: &Env, flags: &Flags) -> Result<Config, Error> {
    let sources = Sources::new(env, flags)?;
    let vars = &sources.vars;
    let Common {
        token,
        endpoint,
        carryforward,
        retries,
        timeout,
        // Read, and checked, once by `early`, which decides how everything is reported.
        debug: _,
    } = sources.common(env)?;
    let dry_run = sources.bool("--dry-run", ("COVERALLS_DRY_RUN", &vars.dry_run), false)?;

    let detected = ci::read(env)?;
    let override_number = sources.pick(
        "--build-number",
        &[
            ("COVERALLS_SERVICE_NUMBER", &vars.service_number),
            ("COVERALLS_BUILD_NUMBER", &vars.build_number),
        ],
    );
    let (number, number_from) = match (override_number, detected.number) {
        (Some(given), _) => (given.value.trim().to_owned(), given.from.to_owned()),
        (None, Some((number, var))) => {
            let ci = detected.ci.unwrap_or("CI");
            (number, format!("{var}, {ci}"))
        }
        (None, None) => return Err(ci::missing_number(env)),
    };
    if number.is_empty() {
        return Err(ci::missing_number(env));
    }
    let service_name = sources
        .pick(
            "--service-name",
            &[("COVERALLS_SERVICE_NAME", &vars.service_name)],
        )
        .map(|given| given.value.trim().to_owned())
        .or(detected.service_name);
    let repo_name = sources
        .pick("--repo-name", &[("COVERALLS_REPO_NAME", &vars.repo_name)])
        .map(|given| given.value.trim().to_owned())
        .or(detected.repo_name);

    Ok(Config {
        token,
        endpoint,
        carryforward,
        build: Build {
            number,
            number_from,
            ci: detected.ci,
            service_name,
            repo_name,
            attempt: detected.attempt,
        },
        dry_run,
        retries,
        timeout,
    })
}

/// A Coveralls base URL, without its trailing `/`; `from` names it in errors.
pub fn parse_endpoint(given: &str, from: &str) -> Result<String, Error> {
    let value = given.trim().trim_end_matches('/');
    let bad = |why: &str| {
        Error::config(format!(
            "{from} is {given:?}: {why}; expected a base URL such as {DEFAULT_ENDPOINT}"
        ))
    };
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
    match given.value.trim().parse::<u32>() {
        Ok(n) if n <= MAX_RETRIES => Ok(n),
        _ => Err(Error::config(format!(
            "{} is {:?}; expected a whole number from 0 to {MAX_RETRIES}",
            given.from, given.value
        ))),
    }
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
    use crate::cli::{Command, parse};

    fn load_with(env: &[(&str, &str)], args: &[&str]) -> Result<Config, Error> {
        let Command::Close(flags) = parse(args.iter().map(Into::into)).unwrap() else {
            panic!("not a close")
        };
        load(&Env::from_pairs(env.iter().copied()), &flags)
    }

    #[test]
    fn flag_beats_variable_beats_detection() {
        let env = [
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_RUN_ID", "100"),
            ("COVERALLS_BUILD_NUMBER", "300"),
        ];
        let cfg = load_with(&env, &[]).unwrap();
        assert_eq!(
            (cfg.build.number.as_str(), cfg.build.number_from.as_str()),
            ("300", "COVERALLS_BUILD_NUMBER")
        );
        let mut env = env.to_vec();
        env.push(("COVERALLS_SERVICE_NUMBER", "200"));
        let cfg = load_with(&env, &[]).unwrap();
        assert_eq!(cfg.build.number, "200");
        let cfg = load_with(&env, &["--build-number", "400"]).unwrap();
        assert_eq!(
            (cfg.build.number.as_str(), cfg.build.number_from.as_str()),
            ("400", "--build-number")
        );
        let cfg = load_with(&env[..2], &[]).unwrap();
        assert_eq!(cfg.build.number_from, "GITHUB_RUN_ID, GitHub Actions");
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
        assert_eq!(cfg.carryforward, ["y"], "the main name wins over its alias");
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
        let Command::Close(flags) = parse(["--fail-on-error=nope".into()]).unwrap() else {
            panic!("not a close")
        };
        let early_err = early(&Env::from_pairs([n]), &flags)
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
        assert_eq!(cfg.endpoint, "https://cov.example/base");
        assert!(cfg.dry_run);
        let env = Env::from_pairs([
            ("COVERALLS_DEBUG", "TRUE"),
            ("COVERALLS_FAIL_ON_ERROR", "True"),
        ]);
        let (early, checked) = early(&env, &Flags::default());
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
