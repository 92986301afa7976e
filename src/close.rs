//! The closer's flow: settings, the close (or a dry run), and the result as the user sees it:
//! one line, and on GitHub Actions the step outputs and summary.

use std::time::Duration;

use crate::checks::{self, Figures};
use crate::client::{self, Build, Closed};
use crate::config::{self, Config};
use crate::env::Env;
use crate::error::{Error, Kind};
use crate::report::{Reporter, cell};
use crate::settings::{Cmd, Flags};

/// Run the closer; the exit code. `flags` is an error where the command line was wrong,
/// which is then reported as the settings ask (`COVERALLS_FAIL_ON_ERROR` included).
pub fn run(flags: Result<Flags, Error>, env: &Env, ui: &mut Reporter) -> u8 {
    // How to report is settled first, so that even a bad setting is reported as asked,
    // and the token is masked before anything else is printed.
    let no_flags = Flags::new(Cmd::Close);
    let (early, early_check) = config::early(env, flags.as_ref().unwrap_or(&no_flags));
    if let Some(token) = &early.token {
        ui.mask(token.expose());
    }
    ui.debug = early.debug;
    let result = flags.and_then(|flags| {
        early_check?;
        finish(&flags, env, ui)
    });
    match result {
        Ok(()) => 0,
        // A check the user asked for is not softened: its point is the red run.
        Err(error) if !early.fail_on_error && error.kind() != Kind::Check => {
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
    // A token from the config file is a secret like the environment's, masked before
    // anything more is printed.
    if let (Some(token), true) = (&config.token, config.token_in_file) {
        ui.mask(token.expose());
    }
    let (build, endpoint) = (&config.build, &config.coveralls.endpoint);
    let doing = if config.dry_run {
        "dry run for"
    } else {
        "closing"
    };
    ui.log(&format!(
        "coveralls-finish {}: {doing} build {} (from {}) at {endpoint}",
        crate::VERSION,
        build.number(),
        build.number_from
    ));
    if endpoint.starts_with("http://") && !is_loopback(endpoint) {
        ui.warning("COVERALLS_ENDPOINT uses plain http: the repo token travels unencrypted");
    }
    ui.debug_block("settings", &[&describe(&config)]);
    if config.dry_run {
        return dry_run(&config, ui);
    }
    let Some(token) = &config.token else {
        return no_token(&config, ui);
    };
    let agent = client::agent(endpoint, env)?;
    let closed = match client::close(&agent, &config.coveralls, build, token.expose(), None, ui) {
        Ok(closed) => closed,
        Err(error) => {
            publish(&config, Err(&error), ui);
            return Err(error);
        }
    };
    let waited = checks::wait(&agent, &closed, &config.checks, &config.coveralls, ui);
    let figures = waited.as_ref().ok().copied().flatten();
    let verdict = checks::verdict(&closed, figures, &config.checks);
    publish(&config, Ok((&closed, figures, verdict.is_ok())), ui);
    say_closed(build, &closed, figures, ui);
    if let (Err(_), Err(missing)) = (&verdict, &waited) {
        ui.warning(&missing.to_string());
    }
    verdict?;
    waited.map(drop)
}

/// The result line, and a warning for a build closed empty.
fn say_closed(build: &Build, closed: &Closed, figures: Option<Figures>, ui: &mut Reporter<'_>) {
    let jobs = match closed.jobs {
        Some(1) => "1 job".to_owned(),
        Some(n) => format!("{n} jobs"),
        None => "an unknown number of jobs".to_owned(),
    };
    let coverage = figures
        .map(|f| format!(", {}", f.describe()))
        .unwrap_or_default();
    let url = closed.url.as_deref().unwrap_or("(no URL in the answer)");
    ui.result(&format!(
        "closed build {}: {jobs}{coverage}, {url}",
        build.number()
    ));
    if closed.jobs == Some(0) {
        let why = match build.carryforward.is_empty() {
            true => "the uploads must send the same one (service_number) with parallel: true",
            false => {
                "its coverage is the carried-forward flags' alone (as intended where every \
                      coverage job was skipped)"
            }
        };
        ui.warning(&format!(
            "Coveralls closed build {} with 0 jobs: no upload reached this build number; {why}",
            build.number()
        ));
    }
}

/// No token: on GitHub, a pull request from a fork or Dependabot gets none, which nobody in the
/// pull request can fix, so it is skipped with a notice (unless COVERALLS_REQUIRE_TOKEN).
fn no_token(config: &Config, ui: &mut Reporter<'_>) -> Result<(), Error> {
    if config.untrusted_pull_request && !config.require_token {
        ui.notice(
            "skipped: no Coveralls token in a pull request from a fork (or from Dependabot), \
             whose jobs get no secrets; COVERALLS_REQUIRE_TOKEN=true makes this a failure",
        );
        if let Err(err) = ui.outputs(&[("build-number", config.build.number())]) {
            ui.warning(&format!("{err:#}"));
        }
        return Ok(());
    }
    let mut error = Error::config(
        "COVERALLS_REPO_TOKEN is not set; expected the repository's Coveralls repo token, or the \
         GITHUB_TOKEN on GitHub Actions",
    );
    if config.untrusted_pull_request {
        error = error.with_hint(
            "this pull request comes from a fork or from Dependabot, whose jobs get no secrets; \
             COVERALLS_REQUIRE_TOKEN is true, so that is a failure",
        );
    }
    Err(error)
}

fn dry_run(config: &Config, ui: &mut Reporter) -> Result<(), Error> {
    ui.result(&format!(
        "dry run: nothing is sent; the request would be\n\
         POST {}\nContent-Type: application/json\nUser-Agent: {}\n\n{}",
        client::webhook_url(&config.coveralls.endpoint),
        client::USER_AGENT,
        shown_body(config)
    ));
    if let Some(checks) = config.checks.describe() {
        ui.result(&format!("after the close it would {checks}"));
    }
    if config.token.is_none() {
        ui.warning("COVERALLS_REPO_TOKEN is not set: a real run would stop here (exit 2)");
    }
    if let Err(err) = ui.outputs(&[("build-number", config.build.number())]) {
        ui.warning(&format!("{err:#}"));
    }
    Ok(())
}

/// What the close came to, for the step outputs and summary: closed (with the coverage, if
/// it was waited for, and whether the checks passed), or not.
type Outcome<'a> = Result<(&'a Closed, Option<Figures>, bool), &'a Error>;

/// Step outputs and summary on GitHub Actions, for success and failure alike.
fn publish(config: &Config, outcome: Outcome<'_>, ui: &mut Reporter<'_>) {
    let build = &config.build;
    let mut rows = vec![(
        "Build number",
        format!("`{}` ({})", cell(build.number()), cell(&build.number_from)),
    )];
    let mut outputs = Vec::new();
    let number = ("build-number", build.number().to_owned());
    let title = match outcome {
        Ok((closed, figures, passed)) => {
            closed_rows(config, closed, figures, &mut rows);
            let jobs = closed.jobs.map(|j| j.to_string()).unwrap_or_default();
            outputs.push(("url", closed.url.clone().unwrap_or_default()));
            outputs.push(("jobs", jobs));
            if let Some(figures) = figures {
                outputs.push(("coverage", format!("{:.2}", figures.percent)));
                let change = figures.change.map(|c| format!("{c:.2}"));
                outputs.push(("coverage-change", change.unwrap_or_default()));
            }
            outputs.push(number);
            outputs.push(("coveralls-api-result", closed.raw.clone()));
            match passed {
                true => "✅ Coveralls build closed",
                false => "❌ Coveralls build closed, but a check failed",
            }
        }
        Err(error) => {
            rows.push(("Carryforward flags", flags(build)));
            rows.push(("Error", cell(&error.to_string())));
            outputs.push(number);
            if let Some(answer) = error.answer() {
                outputs.push(("coveralls-api-result", answer.to_owned()));
            }
            "❌ Coveralls build not closed"
        }
    };
    let mut summary = format!("### {title}\n\n| | |\n| --- | --- |\n");
    for (name, value) in rows {
        summary += &format!("| {name} | {value} |\n");
    }
    summary += "\n";
    let outputs: Vec<(&str, &str)> = outputs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for written in [ui.outputs(&outputs), ui.summary(&summary)] {
        if let Err(err) = written {
            ui.warning(&format!("{err:#}"));
        }
    }
}

/// The summary's rows for a closed build.
fn closed_rows(
    config: &Config,
    closed: &Closed,
    figures: Option<Figures>,
    rows: &mut Vec<(&'static str, String)>,
) {
    let checks = &config.checks;
    let jobs = closed.jobs.map(|j| j.to_string()).unwrap_or_default();
    let jobs = match checks.expected_jobs {
        Some(expected) => format!("{jobs} ({expected} expected)"),
        None => jobs,
    };
    rows.push(("Jobs", cell(&jobs)));
    if let Some(figures) = figures {
        rows.push(("Coverage", figures.describe()));
    }
    if let Some(threshold) = checks.fail_under {
        let met = match figures {
            Some(figures) if figures.percent >= threshold => "met",
            Some(_) => "missed",
            None => "not known in time",
        };
        rows.push(("Fail under", format!("{threshold}% ({met})")));
    }
    rows.push(("Carryforward flags", flags(&config.build)));
    rows.push(("Build", cell(closed.url.as_deref().unwrap_or_default())));
}

/// The carryforward flags for the summary.
fn flags(build: &Build) -> String {
    if build.carryforward.is_empty() {
        return "none".to_owned();
    }
    let quoted: Vec<String> = build
        .carryforward
        .iter()
        .map(|f| format!("`{}`", cell(f)))
        .collect();
    quoted.join(", ")
}

/// The settings, for debug output: the body as it would be sent (the token redacted), then
/// what is not in it.
fn describe(config: &Config) -> String {
    let coveralls = &config.coveralls;
    let checks = config.checks.describe();
    let mut text = vec![
        shown_body(config),
        format!("endpoint: {}", coveralls.endpoint),
        format!("CI: {}", config.ci.unwrap_or("none detected")),
        format!("retries: {}", coveralls.retries),
        format!("timeout: {:?}", coveralls.timeout),
        format!("longest run: {:?}", longest_run(coveralls)),
        format!(
            "after the close: {}",
            checks.as_deref().unwrap_or("no checks")
        ),
    ];
    text.extend(config.notes.iter().cloned());
    text.join("\n")
}

/// The request's body as JSON, with the token shown as `***`, or said to be missing.
fn shown_body(config: &Config) -> String {
    let shown_token = match config.token {
        Some(_) => "***",
        None => "(COVERALLS_REPO_TOKEN is not set)",
    };
    let body = client::body(&config.build, shown_token);
    serde_json::to_string_pretty(&body).expect("JSON serialises")
}

/// The bound on a whole run: every attempt timing out, and the longest wait between each.
fn longest_run(coveralls: &client::Coveralls) -> Duration {
    coveralls.timeout * (coveralls.retries + 1) + client::MAX_BACKOFF * coveralls.retries
}

/// Whether the URL's host is this machine: `localhost` or a loopback address, parsed.
fn is_loopback(url: &str) -> bool {
    let Ok(uri) = url.parse::<ureq::http::Uri>() else {
        return false;
    };
    let host = uri.host().unwrap_or_default();
    let address = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || address
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_is_a_parsed_address_or_localhost() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3/x",
            "http://localhost:9",
            "http://LOCALHOST",
            "http://[::1]:8080",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "http://127.evil.example",
            "http://127.0.0.1.nip.io",
            "http://[::2]",
            "http://10.0.0.1",
            "not a url",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }
}
