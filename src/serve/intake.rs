//! One delivery, once its body is in: its source's verdict, then an answer at once or a close
//! (each build once, within the delivery's budget, on a thread of its own) and its answer.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hyper::http::request::Parts;
use serde_json::json;

use super::App;
use super::dedup::{Claim, Ticket};
use super::failpoint::failpoint;
use super::log::{LogFields, field};
use super::projects::Project;
use super::reply::Reply;
use super::sources::{Close, Source, Verdict};
use crate::client::{self, Closed};
use crate::error::{Error, Kind};
use crate::report::Reporter;

/// CircleCI waits 10 seconds for an answer; a close must fit well inside that, counted from
/// the delivery's arrival.
pub const BUDGET: Duration = Duration::from_secs(8);
/// Past the budget, the answer is given even if a close has not even started (a backstop).
const SLACK: Duration = Duration::from_millis(800);

/// A delivery's body, read: its source decides, and a close is made if it asks for one.
pub async fn deliver(
    app: &Arc<App>,
    source: &dyn Source,
    parts: &Parts,
    body: &[u8],
    deadline: Instant,
    log: &mut LogFields,
) -> Reply {
    failpoint("panic-in-verdict");
    match source.verdict(&app.settings, parts, body, log) {
        Verdict::Answer(reply) => reply,
        Verdict::Close(close) => close_once(app, *close, deadline, log).await,
    }
}

/// Close the build, once per key, within `deadline`.
async fn close_once(app: &Arc<App>, close: Close, deadline: Instant, log: &mut LogFields) -> Reply {
    log.project = Some(close.project.clone());
    log.build = Some(close.build.number().to_owned());
    let ticket = match app.dedup.claim(&close.key, deadline).await {
        Claim::First(ticket) => ticket,
        Claim::Duplicate(mut reply) => {
            log.outcome = Some("duplicate: answered as the first delivery was".to_owned());
            reply.body["duplicate"] = json!(true);
            return reply;
        }
        Claim::StillRunning => {
            log.outcome = Some("duplicate: the first delivery is still closing".to_owned());
            return Reply::error(
                503,
                "another delivery of this event is still closing the build",
            );
        }
    };
    let place = tokio::time::timeout_at(deadline.into(), Arc::clone(&app.closes).acquire_owned());
    let Ok(Ok(place)) = place.await else {
        log.outcome = Some("not closed: no place to close it in time".to_owned());
        return Reply::error(503, "too many closes under way; deliver again");
    };
    let worker = {
        let app = Arc::clone(app);
        tokio::task::spawn_blocking(move || {
            let _place = place;
            close_now(&app, close, deadline, ticket)
        })
    };
    match tokio::time::timeout_at((deadline + SLACK).into(), worker).await {
        Ok(Ok((reply, outcome))) => {
            log.outcome = Some(outcome);
            reply
        }
        // The close panicked: let the delivery's task fail, to be answered 500.
        Ok(Err(failed)) => std::panic::resume_unwind(failed.into_panic()),
        Err(_) => {
            log.outcome = Some("not closed: out of time".to_owned());
            Reply::error(503, "out of time before the build could be closed")
        }
    }
}

/// The close itself, on a thread of its own; the answer, and what the log line says of it.
fn close_now(app: &App, close: Close, deadline: Instant, ticket: Ticket) -> (Reply, String) {
    let build = &close.build;
    let (mut out, mut err) = (std::io::sink(), std::io::stderr());
    let mut ui = app.reporter(&mut out, &mut err);
    ui.prefix = format!(
        "project {} build {}: ",
        close.project,
        field(build.number(), 100)
    );
    failpoint("panic-in-close");
    let (result, expected_jobs) = match app.settings.project(&close.project) {
        Some(project) => (
            send(app, project, &close, deadline, &mut ui),
            project.expected_jobs,
        ),
        // The settings are read once, at start: only a close kept from before a restart could
        // name a project that has gone since, and no redelivery would change that.
        None => {
            let why = format!("no project is named {} any more", close.project);
            (Err(Error::config(why)), None)
        }
    };
    let (reply, remember, outcome) = answer(&close, expected_jobs, result, &ui);
    ticket.settle(&reply, remember);
    (reply, outcome)
}

/// The close, sent to Coveralls on the next of the project's agents.
fn send(
    app: &App,
    project: &Project,
    close: &Close,
    deadline: Instant,
    ui: &mut Reporter<'_>,
) -> Result<Closed, Error> {
    let turn = app.next_agent.fetch_add(1, Ordering::Relaxed);
    let agent = &project.agents[turn % project.agents.len()];
    let token = project.token.expose();
    client::close(
        agent,
        &project.coveralls,
        &close.build,
        token,
        Some(deadline),
        ui,
    )
}

/// The answer to a close, whether a later delivery should get the same one, and the outcome
/// for the log.
fn answer(
    close: &Close,
    expected_jobs: Option<u64>,
    result: Result<Closed, Error>,
    ui: &Reporter<'_>,
) -> (Reply, bool, String) {
    let (project, number) = (&close.project, close.build.number());
    match result {
        Ok(closed) => {
            let jobs = closed.jobs.map_or("?".into(), |j| j.to_string());
            let mut body = json!({
                "closed": true, "project": project, "build_num": number,
                "url": closed.url, "jobs": closed.jobs,
            });
            let mut outcome = format!("closed: {jobs} jobs");
            // Fewer jobs than the project expects: said, but answered 200, since a redelivery
            // cannot reopen the build.
            if let Some(expected) = expected_jobs {
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
                "closed": false, "project": project, "build_num": number, "error": message,
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
