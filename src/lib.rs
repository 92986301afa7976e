//! Close a Coveralls parallel build: work out the build number the uploads used, POST the
//! Parallel Build Webhook, retry what may pass, and report the result.

pub mod ci;
pub mod cli;
pub mod client;
pub mod config;
pub mod env;
pub mod report;
pub mod serve;

use std::ffi::OsString;
use std::fmt;
use std::io::Write;

use cli::{Command, Flags};
use client::{Body, Closed};
use config::Config;
use env::Env;
use report::{Reporter, cell};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A failure, with the exit code it maps to.
#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
    hint: Option<String>,
    /// The server's answer, when there was one.
    pub answer: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Exit 2: the settings are wrong; nothing was sent.
    Config,
    /// Exit 1: Coveralls refused, in a way another try would not change.
    Refused,
    /// Exit 1: Coveralls failed or could not be reached, on every attempt.
    Unavailable,
    /// Exit 1: a deadline came before Coveralls answered.
    OutOfTime,
}

impl Error {
    pub fn config(message: impl Into<String>) -> Self {
        Error::new(Kind::Config, message.into())
    }

    pub fn close(message: impl Into<String>) -> Self {
        Error::new(Kind::Refused, message.into())
    }

    fn new(kind: Kind, message: String) -> Self {
        Error {
            kind,
            message,
            hint: None,
            answer: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn context(mut self, prefix: impl fmt::Display) -> Self {
        self.message = format!("{prefix}: {}", self.message);
        self
    }

    pub fn exit_code(&self) -> u8 {
        match self.kind {
            Kind::Config => 2,
            Kind::Refused | Kind::Unavailable | Kind::OutOfTime => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match &self.hint {
            Some(hint) => write!(f, "\nhint: {hint}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for Error {}

/// The whole program: arguments and environment in, lines out, the exit code back.
pub fn run(
    args: impl IntoIterator<Item = OsString>,
    env: &Env,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let mut ui = Reporter::new(out, err, env);
    let flags = match cli::parse(args) {
        Ok(Command::Help) => {
            ui.result(cli::help().trim_end());
            return 0;
        }
        Ok(Command::Version) => {
            ui.result(&format!("coveralls-finish {VERSION}"));
            return 0;
        }
        Ok(Command::ServeHelp) => {
            ui.result(cli::serve_help().trim_end());
            return 0;
        }
        Ok(Command::Serve(flags)) => {
            return match serve::run(&flags, env, &mut ui) {
                Ok(()) => 0,
                Err(error) => {
                    ui.error(&error.to_string());
                    error.exit_code()
                }
            };
        }
        Ok(Command::Close(flags)) => Ok(flags),
        Err(error) => Err(error),
    };
    // How to report is settled first, so that even a bad setting is reported as asked,
    // and the token is masked before anything else is printed.
    let no_flags = Flags::default();
    let (early, early_check) = config::early(env, flags.as_ref().unwrap_or(&no_flags));
    if let Some(token) = &early.token {
        ui.mask(token.expose());
    }
    ui.debug = early.debug;
    let result = flags.and_then(|flags| {
        early_check?;
        finish(&flags, env, &mut ui)
    });
    match result {
        Ok(()) => 0,
        Err(error) if !early.fail_on_error => {
            ui.warning(&format!(
                "{error}\nCOVERALLS_FAIL_ON_ERROR is false, so this step succeeds anyway"
            ));
            0
        }
        Err(error) => {
            ui.error(&error.to_string());
            error.exit_code()
        }
    }
}

fn finish(flags: &Flags, env: &Env, ui: &mut Reporter) -> Result<(), Error> {
    let config = config::load(env, flags)?;
    let build = &config.build;
    let doing = if config.dry_run {
        "dry run for"
    } else {
        "closing"
    };
    ui.log(&format!(
        "coveralls-finish {VERSION}: {doing} build {} (from {}) at {}",
        build.number, build.number_from, config.endpoint
    ));
    if config.endpoint.starts_with("http://") && !is_loopback(&config.endpoint) {
        ui.warning("COVERALLS_ENDPOINT uses plain http: the repo token travels unencrypted");
    }
    ui.debug_block("settings", &[&describe(&config)]);

    let token = match (&config.token, config.dry_run) {
        (Some(token), _) => token.expose(),
        (None, true) => "",
        (None, false) => {
            return Err(Error::config(
                "COVERALLS_REPO_TOKEN is not set; expected the repository's Coveralls repo \
                 token, or the GITHUB_TOKEN on GitHub Actions",
            ));
        }
    };
    let body = Body::new(&config, token);
    if config.dry_run {
        return dry_run(&config, body, ui);
    }
    let agent = client::agent(&config.endpoint, env)?;
    let json = serde_json::to_vec(&body).expect("the body serialises");
    let result = client::close(&agent, &config, &json, ui, None);
    report(&config, &result, ui);
    let closed = result?;
    let jobs = match closed.jobs {
        Some(1) => "1 job".to_owned(),
        Some(n) => format!("{n} jobs"),
        None => "an unknown number of jobs".to_owned(),
    };
    let url = closed.url.as_deref().unwrap_or("(no URL in the answer)");
    ui.result(&format!("closed build {}: {jobs}, {url}", build.number));
    Ok(())
}

fn dry_run(config: &Config, mut body: Body, ui: &mut Reporter) -> Result<(), Error> {
    let shown_token = if config.token.is_some() {
        "***"
    } else {
        "(COVERALLS_REPO_TOKEN is not set)"
    };
    body.repo_token = shown_token;
    let json = serde_json::to_string_pretty(&body).expect("the body serialises");
    ui.result(&format!(
        "dry run: nothing is sent; the request would be\n\
         POST {}\nContent-Type: application/json\nUser-Agent: {}\n\n{json}",
        client::webhook_url(&config.endpoint),
        client::USER_AGENT
    ));
    if config.token.is_none() {
        ui.warning("COVERALLS_REPO_TOKEN is not set: a real run would stop here (exit 2)");
    }
    if let Err(err) = ui.outputs(&[("build-number", &config.build.number)]) {
        ui.warning(&format!("{err:#}"));
    }
    Ok(())
}

/// Step outputs and summary on GitHub Actions, for success and failure alike.
fn report(config: &Config, result: &Result<Closed, Error>, ui: &mut Reporter) {
    let build = &config.build;
    let number = format!("`{}` ({})", cell(&build.number), cell(&build.number_from));
    let flags = if config.carryforward.is_empty() {
        "none".to_owned()
    } else {
        let quoted: Vec<String> = config
            .carryforward
            .iter()
            .map(|f| format!("`{}`", cell(f)))
            .collect();
        quoted.join(", ")
    };
    let (outputs, summary) = match result {
        Ok(closed) => {
            let jobs = closed.jobs.map(|j| j.to_string()).unwrap_or_default();
            let url = closed.url.clone().unwrap_or_default();
            let summary = format!(
                "### ✅ Coveralls build closed\n\n| | |\n| --- | --- |\n\
                 | Build number | {number} |\n| Jobs | {} |\n| Carryforward flags | {flags} |\n\
                 | Build | {} |\n\n",
                cell(&jobs),
                cell(&url)
            );
            let outputs = vec![
                ("url", url),
                ("jobs", jobs),
                ("build-number", build.number.clone()),
                ("coveralls-api-result", closed.raw.clone()),
            ];
            (outputs, summary)
        }
        Err(error) => {
            let summary = format!(
                "### ❌ Coveralls build not closed\n\n| | |\n| --- | --- |\n\
                 | Build number | {number} |\n| Carryforward flags | {flags} |\n| Error | {} |\n\n",
                cell(&error.to_string())
            );
            let mut outputs = vec![("build-number", build.number.clone())];
            if let Some(answer) = &error.answer {
                outputs.push(("coveralls-api-result", answer.clone()));
            }
            (outputs, summary)
        }
    };
    let outputs: Vec<(&str, &str)> = outputs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for written in [ui.outputs(&outputs), ui.summary(&summary)] {
        if let Err(err) = written {
            ui.warning(&format!("{err:#}"));
        }
    }
}

fn describe(config: &Config) -> String {
    let build = &config.build;
    let or_none = |value: &Option<String>| value.clone().unwrap_or_else(|| "(none)".to_owned());
    format!(
        "endpoint: {}\nrepo token: {}\nbuild number: {} (from {})\nCI: {}\nservice_name: {}\n\
         repo_name: {}\nservice_attempt: {}\ncarryforward: {}\nretries: {}\ntimeout: {:?}\n\
         longest run: {:?}",
        config.endpoint,
        if config.token.is_some() {
            "set (redacted)"
        } else {
            "not set"
        },
        build.number,
        build.number_from,
        build.ci.unwrap_or("none detected"),
        or_none(&build.service_name),
        or_none(&build.repo_name),
        or_none(&build.attempt),
        if config.carryforward.is_empty() {
            "(none)".to_owned()
        } else {
            config.carryforward.join(",")
        },
        config.retries,
        config.timeout,
        longest_run(config),
    )
}

/// The bound on a whole run: every attempt timing out, and the longest wait between each.
pub fn longest_run(config: &Config) -> std::time::Duration {
    config.timeout * (config.retries + 1) + client::MAX_WAIT * config.retries
}

fn is_loopback(url: &str) -> bool {
    let host = url
        .parse::<ureq::http::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(str::to_owned));
    match host.as_deref() {
        Some("localhost" | "[::1]") => true,
        Some(host) => host.starts_with("127."),
        None => false,
    }
}
