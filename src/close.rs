//! The closer's flow: settings, the close (or a dry run), and the result as the user sees it:
//! one line, and on GitHub Actions the step outputs and summary.

use std::time::Duration;

use crate::client::{self, Body, Closed};
use crate::config::{self, Config};
use crate::env::Env;
use crate::error::Error;
use crate::report::{Reporter, cell};
use crate::settings::Flags;

/// Run the closer; the exit code. `flags` is an error where the command line was wrong,
/// which is then reported as the settings ask (`COVERALLS_FAIL_ON_ERROR` included).
pub fn run(flags: Result<Flags, Error>, env: &Env, ui: &mut Reporter) -> u8 {
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
        finish(&flags, env, ui)
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
    let (build, endpoint) = (&config.build, &config.service.endpoint);
    let doing = if config.dry_run {
        "dry run for"
    } else {
        "closing"
    };
    ui.log(&format!(
        "coveralls-finish {}: {doing} build {} (from {}) at {endpoint}",
        crate::VERSION,
        build.number,
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
        return Err(Error::config(
            "COVERALLS_REPO_TOKEN is not set; expected the repository's Coveralls repo token, or \
             the GITHUB_TOKEN on GitHub Actions",
        ));
    };
    let agent = client::agent(endpoint, env)?;
    let result = client::close(&agent, &config.service, build, token.expose(), None, ui);
    publish(&config, &result, ui);
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

fn dry_run(config: &Config, ui: &mut Reporter) -> Result<(), Error> {
    let shown_token = match config.token {
        Some(_) => "***",
        None => "(COVERALLS_REPO_TOKEN is not set)",
    };
    let body = Body::new(&config.build, shown_token);
    let json = serde_json::to_string_pretty(&body).expect("the body serialises");
    ui.result(&format!(
        "dry run: nothing is sent; the request would be\n\
         POST {}\nContent-Type: application/json\nUser-Agent: {}\n\n{json}",
        client::webhook_url(&config.service.endpoint),
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
fn publish(config: &Config, result: &Result<Closed, Error>, ui: &mut Reporter) {
    let build = &config.build;
    let number = format!("`{}` ({})", cell(&build.number), cell(&build.number_from));
    let flags = if build.carryforward.is_empty() {
        "none".to_owned()
    } else {
        let quoted: Vec<String> = build
            .carryforward
            .iter()
            .map(|f| format!("`{}`", cell(f)))
            .collect();
        quoted.join(", ")
    };
    let number_output = ("build-number", build.number.clone());
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
            let raw = ("coveralls-api-result", closed.raw.clone());
            (
                vec![("url", url), ("jobs", jobs), number_output, raw],
                summary,
            )
        }
        Err(error) => {
            let summary = format!(
                "### ❌ Coveralls build not closed\n\n| | |\n| --- | --- |\n\
                 | Build number | {number} |\n| Carryforward flags | {flags} |\n| Error | {} |\n\n",
                cell(&error.to_string())
            );
            let raw = error
                .answer()
                .map(|a| ("coveralls-api-result", a.to_owned()));
            (std::iter::once(number_output).chain(raw).collect(), summary)
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
    let (build, service) = (&config.build, &config.service);
    let or_none = |value: &Option<String>| value.clone().unwrap_or_else(|| "(none)".to_owned());
    let token = match config.token {
        Some(_) => "set (redacted)",
        None => "not set",
    };
    let carryforward = match build.carryforward.is_empty() {
        true => "(none)".to_owned(),
        false => build.carryforward.join(","),
    };
    format!(
        "endpoint: {}\nrepo token: {token}\nbuild number: {} (from {})\nCI: {}\n\
         service_name: {}\nrepo_name: {}\nservice_attempt: {}\ncarryforward: {carryforward}\n\
         retries: {}\ntimeout: {:?}\nlongest run: {:?}",
        service.endpoint,
        build.number,
        build.number_from,
        config.ci.unwrap_or("none detected"),
        or_none(&build.service_name),
        or_none(&build.repo_name),
        or_none(&build.attempt),
        service.retries,
        service.timeout,
        longest_run(&config.service),
    )
}

/// The bound on a whole run: every attempt timing out, and the longest wait between each.
fn longest_run(service: &client::Service) -> Duration {
    service.timeout * (service.retries + 1) + client::MAX_WAIT * service.retries
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
