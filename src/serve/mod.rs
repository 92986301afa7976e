//! `coveralls-finish serve`: receive CircleCI webhooks and Magnum CI hooks, and close the
//! matching Coveralls build with the closer's own client, retry policy and errors.

// One bad request must not take the receiver down: it is built to unwind, and answers 500.
#[cfg(panic = "abort")]
compile_error!("the receiver (feature `serve`) needs panic = \"unwind\"; see Cargo.toml");

mod circleci;
mod dedup;
mod failpoint;
mod http;
mod log;
mod magnum;
mod projects;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::http::request::Parts;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use crate::client::{self, Build, Closed};
use crate::env::Env;
use crate::error::{Error, Kind};
use crate::report::Reporter;
use crate::settings::Flags;
use dedup::{Claim, Dedup, Ticket};
use failpoint::failpoint;
use projects::{Project, Settings};

/// CircleCI waits 10 seconds for an answer; a close must fit well inside that, counted from
/// the delivery's arrival.
const BUDGET: Duration = Duration::from_secs(8);
/// Closes under way at once, each on a thread of its own (the client blocks); more wait for
/// a place until their budget runs out.
const CLOSES_AT_ONCE: usize = 128;
/// Past the budget, the answer is given even if a close has not even started (a backstop).
const SLACK: Duration = Duration::from_millis(800);
/// Closed builds remembered, to answer duplicates without closing twice.
const REMEMBERED: usize = 50_000;

/// An answer to a delivery: a status and a JSON body; `close` ends the connection after it.
#[derive(Clone, Debug)]
struct Reply {
    status: u16,
    body: Value,
    close: bool,
}

impl Reply {
    fn new(status: u16, body: Value) -> Self {
        Reply {
            status,
            body,
            close: false,
        }
    }

    fn error(status: u16, message: impl Into<String>) -> Self {
        Reply::new(status, json!({ "error": message.into() }))
    }

    fn ignored(why: impl Into<String>) -> Self {
        Reply::new(202, json!({ "ignored": why.into() }))
    }

    fn closing(mut self) -> Self {
        self.close = true;
        self
    }
}

/// One delivery as it is handled: what its log line will say.
#[derive(Default)]
struct Delivery {
    event: Option<String>,
    id: Option<String>,
    project: Option<String>,
    build: Option<String>,
    outcome: Option<String>,
}

/// Where a delivery came from.
#[derive(Clone, Copy)]
enum Source {
    CircleCi,
    Magnum,
}

/// What a delivery asks for, once read: an answer at once, or a close first.
enum Verdict {
    Answer(Reply),
    Close(Box<Request>),
}

/// A close to make: the project (its index in the settings), the build, and the key under
/// which duplicates of the delivery are recognised.
struct Request {
    project: usize,
    build: Build,
    key: String,
}

struct App {
    settings: Settings,
    dedup: Arc<Dedup>,
    /// Every token and secret, redacted from every line: built once, at start.
    secrets: Arc<[String]>,
    closes: Arc<Semaphore>,
    next_agent: AtomicUsize,
    max_connections: usize,
    /// Requests being answered: a stop waits for them.
    in_flight: AtomicUsize,
    stopping: watch::Sender<bool>,
}

pub fn run(flags: &Flags, env: &Env, ui: &mut Reporter) -> Result<(), Error> {
    let settings = Settings::load(flags, env)?;
    failpoint::arm(env)?;
    let secrets: Arc<[String]> = settings.secrets().into();
    for secret in secrets.iter() {
        ui.mask(secret);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(CLOSES_AT_ONCE + 16)
        .build()
        .map_err(|err| Error::config(format!("cannot start the receiver's runtime: {err}")))?;
    let (max_connections, limit_note) = http::connection_cap();
    let app = Arc::new(App {
        settings,
        dedup: Dedup::new(REMEMBERED),
        secrets,
        closes: Arc::new(Semaphore::new(CLOSES_AT_ONCE)),
        next_agent: AtomicUsize::new(0),
        max_connections,
        in_flight: AtomicUsize::new(0),
        stopping: watch::Sender::new(false),
    });
    let served = runtime.block_on(async {
        let listener = http::listen(&app.settings.listen).await.map_err(|err| {
            Error::config(format!("cannot listen on {}: {err}", app.settings.listen))
        })?;
        let address = listener.local_addr().map_err(|err| {
            Error::config(format!("cannot listen on {}: {err}", app.settings.listen))
        })?;
        introduce(&app, address, limit_note.as_deref(), ui);
        let app_in_panics = Arc::clone(&app);
        std::panic::set_hook(Box::new(move |info| {
            app_in_panics.log_line(&format!("panic: {}", log::field(&info.to_string(), 500)));
        }));
        Ok(http::serve(listener, Arc::clone(&app), stop_signal()).await)
    });
    // Closes stuck past the grace are not waited for: the process is going.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match served? {
        0 => {
            ui.log("stopped: every delivery in flight was answered");
            Ok(())
        }
        unanswered => Err(Error::unavailable(format!(
            "stopped: {unanswered} deliveries in flight could not be answered in time"
        ))),
    }
}

/// The first lines of the log: where it listens and what it will do.
fn introduce(app: &App, address: SocketAddr, limit_note: Option<&str>, ui: &mut Reporter) {
    let settings = &app.settings;
    ui.log(&format!(
        "coveralls-finish {} serve: listening on http://{address}",
        crate::VERSION
    ));
    let state = |secret: &Option<_>, var: &str| match secret {
        Some(_) => "on".to_owned(),
        None => format!("off ({var} is not set)"),
    };
    ui.log(&format!(
        "POST /circleci: {}; POST /magnum: {}",
        state(&settings.circleci_secret, "CIRCLECI_WEBHOOK_SECRET"),
        state(&settings.magnum_secret, "MAGNUM_HOOK_SECRET")
    ));
    for project in &settings.projects {
        ui.log(&format!("project {}: {}", project.name, project.describe()));
    }
    ui.log(&format!(
        "at most {} connections at once ({}); {} closes at once",
        app.max_connections,
        limit_note.unwrap_or("more wait to be accepted"),
        CLOSES_AT_ONCE
    ));
}

/// SIGTERM or SIGINT (Ctrl-C).
async fn stop_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
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

/// A delivery's body, read: its source decides, and a close is made if it asks for one.
async fn deliver(
    app: &Arc<App>,
    source: Source,
    parts: &Parts,
    body: &[u8],
    deadline: Instant,
    delivery: &mut Delivery,
) -> Reply {
    failpoint("before-verdict");
    let verdict = match source {
        Source::CircleCi => circleci::verdict(app, &parts.headers, body, delivery),
        Source::Magnum => {
            let query = parts.uri.query().unwrap_or("");
            magnum::verdict(app, &parts.headers, query, body, delivery)
        }
    };
    match verdict {
        Verdict::Answer(reply) => reply,
        Verdict::Close(request) => close(app, *request, deadline, delivery).await,
    }
}

/// Close the requested build, once per key, within `deadline`.
async fn close(
    app: &Arc<App>,
    request: Request,
    deadline: Instant,
    delivery: &mut Delivery,
) -> Reply {
    delivery.project = Some(app.settings.projects[request.project].name.clone());
    delivery.build = Some(request.build.number.clone());
    let ticket = match app.dedup.claim(&request.key, deadline).await {
        Claim::First(ticket) => ticket,
        Claim::Duplicate(mut reply) => {
            delivery.outcome = Some("duplicate: answered as the first delivery was".to_owned());
            reply.body["duplicate"] = json!(true);
            return reply;
        }
        Claim::StillRunning => {
            delivery.outcome = Some("duplicate: the first delivery is still closing".to_owned());
            return Reply::error(
                503,
                "another delivery of this event is still closing the build",
            );
        }
    };
    let place = tokio::time::timeout_at(deadline.into(), Arc::clone(&app.closes).acquire_owned());
    let Ok(Ok(place)) = place.await else {
        delivery.outcome = Some("not closed: no place to close it in time".to_owned());
        return Reply::error(503, "too many closes under way; deliver again");
    };
    let worker = {
        let app = Arc::clone(app);
        tokio::task::spawn_blocking(move || {
            let _place = place;
            close_now(&app, request, deadline, ticket)
        })
    };
    match tokio::time::timeout_at((deadline + SLACK).into(), worker).await {
        Ok(Ok((reply, outcome))) => {
            delivery.outcome = Some(outcome);
            reply
        }
        // The close panicked: let the delivery's task fail, to be answered 500.
        Ok(Err(failed)) => std::panic::resume_unwind(failed.into_panic()),
        Err(_) => {
            delivery.outcome = Some("not closed: out of time".to_owned());
            Reply::error(503, "out of time before the build could be closed")
        }
    }
}

/// The close itself, on a thread of its own; the answer, and what the log line says of it.
fn close_now(app: &App, request: Request, deadline: Instant, ticket: Ticket) -> (Reply, String) {
    let project = &app.settings.projects[request.project];
    let build = &request.build;
    let (mut out, mut err) = (std::io::sink(), std::io::stderr());
    let mut ui = app.reporter(&mut out, &mut err);
    ui.prefix = format!(
        "project {} build {}: ",
        project.name,
        log::field(&build.number, 100)
    );
    failpoint("before-close");
    let agent =
        &project.agents[app.next_agent.fetch_add(1, Ordering::Relaxed) % project.agents.len()];
    let token = project.token.expose();
    let result = client::close(
        agent,
        &project.service,
        build,
        token,
        Some(deadline),
        &mut ui,
    );
    let (reply, remember, outcome) = answer(project, build, result, &ui);
    ticket.settle(&reply, remember);
    (reply, outcome)
}

/// The answer to a close, whether a later delivery should get the same one, and the outcome
/// for the log.
fn answer(
    project: &Project,
    build: &Build,
    result: Result<Closed, Error>,
    ui: &Reporter<'_>,
) -> (Reply, bool, String) {
    let number = &build.number;
    match result {
        Ok(closed) => {
            let jobs = closed.jobs.map_or("?".into(), |j| j.to_string());
            let mut body = json!({
                "closed": true, "project": project.name, "build_num": number,
                "url": closed.url, "jobs": closed.jobs,
            });
            let mut outcome = format!("closed: {jobs} jobs");
            // Fewer jobs than the project expects: said, but answered 200, since a redelivery
            // cannot reopen the build.
            if let Some(expected) = project.expected_jobs {
                body["expected_jobs"] = json!(expected);
                if closed.jobs.is_none_or(|jobs| jobs < expected) {
                    outcome = format!("closed with too few jobs: {jobs} of {expected} expected");
                }
            }
            (Reply::new(200, body), true, outcome)
        }
        Err(error) => {
            let message = ui.redact(&error.to_string());
            let outcome = format!("not closed: {}", message.replace('\n', " "));
            let body = json!({
                "closed": false, "project": project.name, "build_num": number, "error": message,
            });
            let (status, remember) = match error.kind() {
                // A later delivery cannot change a refusal: answer 200 so CircleCI stops.
                Kind::Refused | Kind::Config | Kind::Check => (200, true),
                // Ask for the delivery again, and let it try afresh.
                Kind::Unavailable => (502, false),
                Kind::OutOfTime => (503, false),
            };
            (Reply::new(status, body), remember, outcome)
        }
    }
}

/// Whether a project closes on this value (a workflow's name, a status): an empty list
/// means every value.
fn wanted(list: &[String], value: Option<&str>, what: &str) -> Result<(), Reply> {
    match value {
        _ if list.is_empty() => Ok(()),
        Some(value) if list.iter().any(|w| w == value) => Ok(()),
        value => Err(Reply::ignored(format!(
            "{what} {:?} does not close a build (expected one of {})",
            value.unwrap_or(""),
            list.join(", ")
        ))),
    }
}

/// The longest build number (a workflow id, a Magnum CI build number) sent on.
const MAX_NUMBER: usize = 256;

/// A close of build `number` for `project` (its index): `source` is the `service_name` its
/// uploads used, `from` says where the number came from. A blank or overlong number is 400.
fn request(
    app: &App,
    project: usize,
    number: &str,
    from: String,
    source: &str,
) -> Result<Request, Reply> {
    let number = number.trim();
    if number.is_empty() || number.len() > MAX_NUMBER {
        return Err(Reply::error(
            400,
            format!("the build number ({from}) must be 1 to {MAX_NUMBER} bytes, not blank"),
        ));
    }
    let project_settings = &app.settings.projects[project];
    let service_name = project_settings.service_name.as_deref().unwrap_or(source);
    let build = Build {
        number: number.to_owned(),
        number_from: from,
        service_name: Some(service_name.to_owned()),
        carryforward: project_settings.carryforward.clone(),
        ..Build::default()
    };
    Ok(Request {
        project,
        key: format!("{source} {} {number}", project_settings.name),
        build,
    })
}
