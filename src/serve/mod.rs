//! `coveralls-finish serve`: receive CircleCI webhooks and Magnum CI hooks, and close the
//! matching Coveralls build with the closer's own client, retry policy and errors.

mod circleci;
mod dedup;
mod magnum;
mod projects;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tiny_http::{Header, Method, Request, Response, Server};

use crate::client::{self, Build};
use crate::env::Env;
use crate::error::{Error, Kind};
use crate::report::Reporter;
use crate::settings::Flags;
use dedup::{Claim, Dedup};
use projects::{Project, Settings};

/// Bodies above this are refused (413) before they are read in full.
const MAX_BODY: usize = 1 << 20;
/// CircleCI waits 10 seconds for an answer; closing must fit well inside that.
const BUDGET: Duration = Duration::from_secs(8);
/// Deliveries handled at once; more wait in line.
const WORKERS: usize = 32;
/// Closed builds remembered, to answer duplicates without closing twice.
const REMEMBERED: usize = 50_000;

/// An answer to a delivery: a status and a JSON body.
#[derive(Clone, Debug)]
struct Reply {
    status: u16,
    body: Value,
}

impl Reply {
    fn new(status: u16, body: Value) -> Self {
        Reply { status, body }
    }

    fn error(status: u16, message: impl Into<String>) -> Self {
        Reply::new(status, json!({ "error": message.into() }))
    }

    fn ignored(why: impl Into<String>) -> Self {
        Reply::new(202, json!({ "ignored": why.into() }))
    }
}

/// One delivery as it is handled: what its log line will say, and which worker has it.
#[derive(Default)]
struct Delivery {
    worker: usize,
    event: Option<String>,
    id: Option<String>,
    project: Option<String>,
    build: Option<String>,
    outcome: Option<String>,
}

struct App {
    settings: Settings,
    dedup: Dedup,
    /// Every token and secret, redacted from every line: built once, at start.
    secrets: Arc<[String]>,
}

pub fn run(flags: &Flags, env: &Env, ui: &mut Reporter) -> Result<(), Error> {
    let settings = Settings::load(flags, env)?;
    let secrets: Arc<[String]> = settings.secrets().into();
    for project in &settings.projects {
        ui.mask(project.token.expose());
    }
    let server = Server::http(&settings.listen)
        .map_err(|err| Error::config(format!("cannot listen on {}: {err}", settings.listen)))?;
    let address = server
        .server_addr()
        .to_ip()
        .map_or_else(|| settings.listen.clone(), |a| a.to_string());
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
        ui.log(&format!("project {}: {}", project.name, describe(project)));
    }

    let stopping = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stopping);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|err| Error::config(format!("cannot handle SIGTERM/SIGINT: {err}")))?;
    let app = App {
        settings,
        dedup: Dedup::new(REMEMBERED),
        secrets,
    };
    std::thread::scope(|scope| {
        for worker in 0..WORKERS {
            let (app, server, stopping) = (&app, &server, &stopping);
            scope.spawn(move || {
                while !stopping.load(Ordering::SeqCst) {
                    // A short wait, so that a stop is noticed between deliveries.
                    if let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(100)) {
                        handle(app, request, worker);
                    }
                }
            });
        }
    });
    ui.log("stopped: every delivery in flight was answered");
    Ok(())
}

fn describe(project: &Project) -> String {
    let mut parts = Vec::new();
    if project.any {
        parts.push("every CircleCI and Magnum CI project".to_owned());
    }
    for (what, value) in [
        ("CircleCI", &project.circleci_slug),
        ("CircleCI id", &project.circleci_project_id),
        ("Magnum CI project", &project.magnum_project_id),
    ] {
        if let Some(value) = value {
            parts.push(format!("{what} {value}"));
        }
    }
    parts.push(format!("endpoint {}", project.service.endpoint));
    if !project.carryforward.is_empty() {
        parts.push(format!("carryforward {}", project.carryforward.join(",")));
    }
    parts.join(", ")
}

/// Answer one delivery; `worker` picks the worker's own Coveralls connections.
fn handle(app: &App, mut request: Request, worker: usize) {
    let started = Instant::now();
    let deadline = started + BUDGET;
    let method = request.method().clone();
    // The query may hold a secret (Magnum CI): it is never logged.
    let (path, query) = match request.url().split_once('?') {
        Some((path, query)) => (path.to_owned(), query.to_owned()),
        None => (request.url().to_owned(), String::new()),
    };
    let mut delivery = Delivery {
        worker,
        ..Delivery::default()
    };
    let reply = match (path.as_str(), &method) {
        ("/healthz", Method::Get | Method::Head) => Reply::new(200, json!({"ok": true})),
        ("/circleci", Method::Post) => match read_body(&mut request) {
            Ok(body) => circleci::handle(app, &request, &body, deadline, &mut delivery),
            Err(reply) => reply,
        },
        ("/magnum", Method::Post) => match read_body(&mut request) {
            Ok(body) => magnum::handle(app, &request, &query, &body, deadline, &mut delivery),
            Err(reply) => reply,
        },
        ("/healthz" | "/circleci" | "/magnum", _) => {
            Reply::error(405, format!("{method} is not allowed on {path}"))
        }
        _ => Reply::error(
            404,
            format!("no route {path}; expected /circleci, /magnum or /healthz"),
        ),
    };
    let allow = match path.as_str() {
        "/healthz" => "GET, HEAD",
        _ => "POST",
    };
    let mut response = Response::from_string(reply.body.to_string())
        .with_status_code(reply.status)
        .with_header(header("Content-Type", "application/json"));
    if reply.status == 405 {
        response.add_header(header("Allow", allow));
    }
    // Logged before answering, so that the line is there once the caller has its answer.
    log(app, &method, &path, &reply, &delivery, started);
    let _ = request.respond(response);
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}

/// One line a delivery, on standard error; secrets redacted like everywhere else.
fn log(
    app: &App,
    method: &Method,
    path: &str,
    reply: &Reply,
    delivery: &Delivery,
    started: Instant,
) {
    let field = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
    let outcome = delivery.outcome.clone().unwrap_or_else(|| {
        reply
            .body
            .get("error")
            .or(reply.body.get("ignored"))
            .and_then(Value::as_str)
            .unwrap_or("ok")
            .to_owned()
    });
    let text = format!(
        "{method} {path} event={} id={} project={} build={} status={} outcome={outcome:?} ms={:.1}",
        field(&delivery.event),
        field(&delivery.id),
        field(&delivery.project),
        field(&delivery.build),
        reply.status,
        started.elapsed().as_secs_f64() * 1000.0,
    );
    let (mut out, mut err) = (std::io::sink(), std::io::stderr());
    app.reporter(&mut out, &mut err).log(&text);
}

/// The raw body, at most [`MAX_BODY`] bytes.
fn read_body(request: &mut Request) -> Result<Vec<u8>, Reply> {
    let too_large = || Reply::error(413, format!("the body is over {MAX_BODY} bytes"));
    if request.body_length().is_some_and(|n| n > MAX_BODY) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|err| Reply::error(400, format!("cannot read the body: {err}")))?;
    if body.len() > MAX_BODY {
        return Err(too_large());
    }
    Ok(body)
}

/// Whether a project closes on this status (and, for CircleCI, this workflow).
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

impl App {
    /// A reporter to standard error that redacts every secret the receiver knows.
    fn reporter<'a>(&self, out: &'a mut dyn Write, err: &'a mut dyn Write) -> Reporter<'a> {
        let mut ui = Reporter::new(out, err, &Env::default()).with_secrets(self.secrets.clone());
        ui.debug = self.settings.debug;
        ui
    }
}

/// Close `build` for `project`, once per `key`, within `deadline`.
fn close(
    app: &App,
    project: &Project,
    build: Build,
    key: &str,
    deadline: Instant,
    delivery: &mut Delivery,
) -> Reply {
    delivery.project = Some(project.name.clone());
    delivery.build = Some(build.number.clone());
    match app.dedup.claim(key, deadline) {
        Claim::First => {}
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
    }
    let (mut out, mut err) = (std::io::sink(), std::io::stderr());
    let mut ui = app.reporter(&mut out, &mut err);
    ui.prefix = format!("project {} build {}: ", project.name, build.number);
    let agent = &project.agents[delivery.worker % project.agents.len()];
    let token = project.token.expose();
    let result = client::close(
        agent,
        &project.service,
        &build,
        token,
        Some(deadline),
        &mut ui,
    );
    let (reply, remember) = answer(project, &build, result, &ui, delivery);
    app.dedup.settle(key, &reply, remember);
    reply
}

/// The answer to a close, and whether a later delivery should get the same one.
fn answer(
    project: &Project,
    build: &Build,
    result: Result<client::Closed, Error>,
    ui: &Reporter,
    delivery: &mut Delivery,
) -> (Reply, bool) {
    let number = &build.number;
    match result {
        Ok(closed) => {
            let jobs = closed.jobs.map_or("?".into(), |j| j.to_string());
            delivery.outcome = Some(format!("closed: {jobs} jobs"));
            let body = json!({
                "closed": true, "project": project.name, "build_num": number,
                "url": closed.url, "jobs": closed.jobs,
            });
            (Reply::new(200, body), true)
        }
        Err(error) => {
            let message = ui.redact(&error.to_string());
            delivery.outcome = Some(format!("not closed: {}", message.replace('\n', " ")));
            let body = json!({
                "closed": false, "project": project.name, "build_num": number, "error": message,
            });
            match error.kind() {
                // A later delivery cannot change a refusal: answer 200 so CircleCI stops.
                Kind::Refused | Kind::Config => (Reply::new(200, body), true),
                // Ask for the delivery again, and let it try afresh.
                Kind::Unavailable => (Reply::new(502, body), false),
                Kind::OutOfTime => (Reply::new(503, body), false),
            }
        }
    }
}

/// The build a delivery names, for `project`: `source` is the `service_name` its uploads used.
fn build(number: String, number_from: String, source: &str, project: &Project) -> Build {
    let service_name = project.service_name.as_deref().unwrap_or(source);
    Build {
        number,
        number_from,
        service_name: Some(service_name.to_owned()),
        carryforward: project.carryforward.clone(),
        ..Build::default()
    }
}
