//! `coveralls-finish serve`: receive CI webhooks (the sources in [`sources::SOURCES`]) and
//! close the matching Coveralls build with the closer's own client, retry policy and errors.

// One bad request must not take the receiver down: it is built to unwind, and answers 500.
#[cfg(panic = "abort")]
compile_error!("the receiver (feature `serve`) needs panic = \"unwind\"; see Cargo.toml");

mod closer;
mod connections;
mod deliveries;
mod failpoint;
mod framing;
mod healthcheck;
mod http;
mod intake;
mod log;
mod metrics;
mod nesting;
mod projects;
mod reply;
mod schedule;
mod sources;
mod store;

pub use deliveries::run as deliveries;
pub use healthcheck::run as healthcheck;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::sync::watch;

use crate::env::Env;
use crate::error::Error;
use crate::report::{Redactor, Reporter};
use crate::settings::Flags;
use metrics::Metrics;
use projects::Settings;
use store::Store;

/// Blocking threads: the closer's attempts, and room for the runtime's own.
const BLOCKING_THREADS: usize = closer::ATTEMPTS_AT_ONCE + 16;
/// At the stop, how long the log's last lines may take to be written.
const LAST_LINES: Duration = Duration::from_secs(1);

struct App {
    settings: Settings,
    /// Standard error, through a writer thread that never blocks the runtime.
    log: Arc<log::Log>,
    /// Every token and secret, redacted from every line: built once, at start.
    secrets: Arc<Redactor>,
    store: Arc<Store>,
    closer: closer::Handle,
    metrics: Metrics,
    budget: http::Budget,
    /// Requests at work, answered or not: a stop waits for them.
    in_flight: AtomicUsize,
    /// Memory for bodies, in bytes: [`http::BODIES`] for all of them at once.
    bodies: Arc<tokio::sync::Semaphore>,
    stopping: watch::Sender<bool>,
}

pub fn run(flags: &Flags, env: &Env, ui: &mut Reporter) -> Result<(), Error> {
    let settings = Settings::load(flags, env)?;
    failpoint::arm(env)?;
    let secrets = Arc::new(Redactor::new(settings.secrets()));
    ui.mask_all(Arc::clone(&secrets));
    let store = Store::open(&settings.durable.path, settings.durable.named)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .map_err(|err| Error::config(format!("cannot start the receiver's runtime: {err}")))?;
    let budget = http::budget();
    let (handle, submissions) = closer::channel();
    let log = log::Log::to_stderr()
        .map_err(|err| Error::config(format!("cannot start the log's writer: {err}")))?;
    let app = Arc::new(App {
        settings,
        log,
        secrets,
        store,
        closer: handle,
        metrics: Metrics::new(),
        budget,
        in_flight: AtomicUsize::new(0),
        bodies: Arc::new(tokio::sync::Semaphore::new(http::BODIES)),
        stopping: watch::Sender::new(false),
    });
    let served = runtime.block_on(async {
        let cannot_listen =
            |err| Error::config(format!("cannot listen on {}: {err}", app.settings.listen));
        let listener = http::listen(&app.settings.listen)
            .await
            .map_err(cannot_listen)?;
        let address = listener.local_addr().map_err(cannot_listen)?;
        introduce(&app, address);
        let app_in_panics = Arc::clone(&app);
        std::panic::set_hook(Box::new(move |info| {
            app_in_panics.log_line(&format!("panic: {}", log::field(&info.to_string(), 500)));
        }));
        let closing =
            tokio::spawn(closer::Closer::new(Arc::clone(&app)).run(submissions, http::GRACE));
        let unanswered = http::serve(listener, Arc::clone(&app), stop_signal()).await;
        let _ = closing.await;
        Ok(unanswered)
    });
    // Attempts stuck past the grace are not waited for: their closes stay pending.
    runtime.shutdown_timeout(Duration::from_millis(100));
    let result = served.and_then(|unanswered| stopped(&app, unanswered));
    finish_log(&app.log, result)
}

/// Write the log's last lines before the result is told, and never wait on a standard error
/// that takes nothing (nobody reads it): then end the process here, with the result's code.
fn finish_log(log: &log::Log, result: Result<(), Error>) -> Result<(), Error> {
    if log.finish(LAST_LINES) {
        return result;
    }
    let code = result.err().map_or(0, |error| error.exit_code());
    std::process::exit(i32::from(code))
}

/// The last line: whether every delivery in flight was answered, and what stays pending.
fn stopped(app: &App, unanswered: usize) -> Result<(), Error> {
    let pending = app.store.counts().map(|counts| counts.pending).unwrap_or(0);
    let kept = match pending {
        0 => String::new(),
        n => format!(
            "; {n} closes pending in {}, for the next start",
            app.store.path().display()
        ),
    };
    match unanswered {
        0 => {
            app.log_always(&format!(
                "stopped: every delivery in flight was answered{kept}"
            ));
            Ok(())
        }
        unanswered => Err(Error::unavailable(format!(
            "stopped: {unanswered} deliveries in flight could not be answered in time{kept}"
        ))),
    }
}

/// What `serve --help` says after the options: the variables that switch each source on,
/// the routes, and how it stops.
pub fn help() -> String {
    let mut text = wrap(&sources::environment_help(), 80);
    text += &wrap(&http::routes_help(), 80);
    text += "Stops on SIGTERM, SIGINT or SIGHUP after answering what is in flight.\n";
    text
}

/// `text` in lines of at most `width` characters, broken at spaces, each ending in `\n`.
fn wrap(text: &str, width: usize) -> String {
    let mut lines = String::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines += &line;
            lines.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line += word;
    }
    lines + &line + "\n"
}

/// The first lines of the log: where it listens and what it will do.
fn introduce(app: &App, address: SocketAddr) {
    let settings = &app.settings;
    app.log_always(&format!(
        "coveralls-finish {} serve: listening on http://{address}",
        crate::VERSION
    ));
    app.log_always(&sources::states(settings));
    for project in &settings.projects {
        app.log_always(&format!("project {}: {}", project.name, project.describe()));
    }
    let counts = app.store.counts().unwrap_or_default();
    app.log_always(&format!(
        "state: {} ({} pending, {} failed)",
        app.store.path().display(),
        counts.pending,
        counts.failed
    ));
    app.log_always(&format!(
        "at most {} connections at once ({}); {} closes at once",
        app.budget.connections,
        app.budget.note,
        closer::ATTEMPTS_AT_ONCE
    ));
}

/// SIGTERM, SIGINT (Ctrl-C) or SIGHUP (a closed terminal, or a supervisor's reload): each
/// a stop that answers what is in flight, since the receiver has nothing to reload.
async fn stop_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let others = async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut terminate), Ok(mut hangup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = terminate.recv() => {}
            _ = hangup.recv() => {}
        }
    };
    #[cfg(not(unix))]
    let others = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = others => {}
    }
}

impl App {
    /// A reporter to standard error that redacts every secret the receiver knows.
    fn reporter<'a>(&self, out: &'a mut dyn Write, err: &'a mut dyn Write) -> Reporter<'a> {
        let mut ui = Reporter::new(out, err, &Env::default()).with_secrets(self.secrets.clone());
        ui.debug = self.settings.debug;
        ui
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_names_every_source_s_variables_and_route_in_lines_of_80() {
        let help = help();
        for source in sources::SOURCES {
            for var in source.secrets() {
                assert!(help.contains(var.name), "{}:\n{help}", var.name);
            }
            let route = format!("POST /{}{}", source.name(), source.query_help());
            assert!(help.contains(&route), "{route}:\n{help}");
        }
        assert!(help.lines().all(|line| line.len() <= 80), "{help}");
        assert!(help.contains("COVERALLS_REPO_TOKEN (the one project without --config)"));
    }

    #[test]
    fn wrap_breaks_at_spaces_before_the_width() {
        assert_eq!(wrap("aa bb cc", 5), "aa bb\ncc\n");
        assert_eq!(wrap("aaaaaaa b", 5), "aaaaaaa\nb\n");
    }
}
