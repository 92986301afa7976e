//! One delivery, once its body is in: its source's verdict, then an answer at once, or the
//! close it asks for recorded in the store (the acknowledgement is the commit), its first
//! attempt made at once, and the answer: `closed` if that attempt says so in time, else
//! `queued`, for the background closer to finish.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::http::request::Parts;
use serde_json::json;

use super::App;
use super::closer::Outcome;
use super::failpoint::failpoint;
use super::log::LogFields;
use super::reply::Reply;
use super::sources::{Close, Source, Verdict};
use super::store::{NewDelivery, Recorded, Row, State};

/// CircleCI waits 10 seconds for an answer; everything a delivery waits for fits well inside
/// that, counted from its arrival.
pub const BUDGET: Duration = Duration::from_secs(8);

/// A delivery's body, read: its source decides, and a close is recorded if it asks for one.
pub async fn deliver(
    app: &Arc<App>,
    source: &dyn Source,
    parts: &Parts,
    body: &[u8],
    deadline: Instant,
    log: &mut LogFields,
) -> Reply {
    failpoint("panic-in-verdict");
    let verdict = source.verdict(&app.settings, parts, body, log);
    let reply = match verdict.unwrap_or_else(Verdict::Answer) {
        Verdict::Answer(reply) => reply,
        Verdict::Close(close) => accept(app, source, *close, deadline, log).await,
    };
    app.metrics.delivered(source.name(), outcome_label(&reply));
    reply
}

/// What the metrics call an answer.
fn outcome_label(reply: &Reply) -> &'static str {
    let said = |key: &str| reply.body.get(key).is_some_and(|v| *v == json!(true));
    match reply.status {
        _ if said("duplicate") => "duplicate",
        200 if said("closed") => "closed",
        200 if reply.body.get("closed").is_some() => "refused",
        200 => "ok",
        202 if said("queued") => "queued",
        202 => "ignored",
        401 | 403 => "unauthenticated",
        400..=499 => "rejected",
        _ => "unavailable",
    }
}

/// Record the close, make its first attempt, and answer as far as it got in time.
async fn accept(
    app: &Arc<App>,
    source: &dyn Source,
    close: Close,
    deadline: Instant,
    log: &mut LogFields,
) -> Reply {
    log.project = Some(close.project.clone());
    log.build = Some(close.build.number().to_owned());
    let delivery = NewDelivery {
        source: source.name(),
        project: close.project.clone(),
        build: close.build.number().to_owned(),
        attempt: close.attempt.clone(),
        request: serde_json::to_string(&close.build).expect("a build serialises"),
    };
    let (row, outcome) = match app.store.record(delivery).await {
        Ok(Recorded::New(row)) => {
            failpoint("after-commit");
            let outcome = app.closer.submit(row.clone());
            (row, outcome)
        }
        // Pending: the answer of the attempt under way, if one is, as the first delivery's.
        Ok(Recorded::Duplicate(row)) if row.state == State::Pending => {
            let outcome = app.closer.watch(row.clone());
            let pending = "a close of this build is pending";
            let reply = wait(app, &row, outcome, deadline, pending, log).await;
            return duplicate(reply, &row, log);
        }
        Ok(Recorded::Duplicate(row)) => {
            let reply = answer(app, &row, settled(&row), log);
            return duplicate(reply, &row, log);
        }
        Err(error) => {
            let message = app.redact(&error.to_string());
            log.outcome = Some(format!("not recorded: {message}"));
            let why = format!("the delivery could not be recorded ({message}); deliver again");
            return Reply::error(503, why);
        }
    };
    let pending = "the first attempt is still under way";
    wait(app, &row, outcome, deadline, pending, log).await
}

/// The answer once `outcome` is known, or `queued` (`pending` says why) when the answer may
/// wait no longer.
async fn wait(
    app: &App,
    row: &Row,
    outcome: tokio::sync::oneshot::Receiver<Outcome>,
    deadline: Instant,
    pending: &str,
    log: &mut LogFields,
) -> Reply {
    let wait = app
        .settings
        .durable
        .answer_wait
        .min(deadline.saturating_duration_since(Instant::now()));
    let outcome = match tokio::time::timeout(wait, outcome).await {
        Ok(Ok(outcome)) => outcome,
        _ => Outcome::Queued {
            why: pending.to_owned(),
        },
    };
    answer(app, row, outcome, log)
}

/// What a row recorded before says of its close.
fn settled(row: &Row) -> Outcome {
    match row.state {
        State::Closed => Outcome::Closed {
            url: row.url.clone(),
            jobs: row.jobs.and_then(|jobs| u64::try_from(jobs).ok()),
        },
        State::Failed => Outcome::Failed {
            error: row.last_error.clone().unwrap_or_default(),
        },
        State::Pending => Outcome::Queued {
            why: "a close of this build is pending".to_owned(),
        },
    }
}

/// The answer to a recorded delivery, from the outcome of its first attempt.
fn answer(app: &App, row: &Row, outcome: Outcome, log: &mut LogFields) -> Reply {
    let mut body = json!({ "id": row.id, "project": row.project, "build_num": row.build });
    if !row.attempt.is_empty() {
        body["attempt"] = json!(row.attempt);
    }
    let status = match outcome {
        Outcome::Closed { url, jobs } => {
            let shown = jobs.map_or("?".into(), |jobs| jobs.to_string());
            body["closed"] = json!(true);
            body["url"] = json!(url);
            body["jobs"] = json!(jobs);
            let mut said = format!("closed: {shown} jobs");
            // Fewer jobs than the project expects: said, but answered 200, since a
            // redelivery cannot reopen the build.
            let expected = app
                .settings
                .project(&row.project)
                .and_then(|p| p.expected_jobs);
            if let Some(expected) = expected {
                body["expected_jobs"] = json!(expected);
                if jobs.is_none_or(|jobs| jobs < expected) {
                    said = format!("closed with too few jobs: {shown} of {expected} expected");
                }
            }
            log.outcome = Some(said);
            200
        }
        // A refusal that no redelivery would change: 200, so that the sender stops.
        Outcome::Failed { error } => {
            log.outcome = Some(format!("not closed: {error}"));
            body["closed"] = json!(false);
            body["error"] = json!(error);
            200
        }
        Outcome::Queued { why } => {
            log.outcome = Some(format!("queued: {why}"));
            body["queued"] = json!(true);
            body["why"] = json!(why);
            202
        }
    };
    Reply::new(status, body)
}

/// The answer to a delivery of a close recorded before: what became of that one, marked.
fn duplicate(mut reply: Reply, row: &Row, log: &mut LogFields) -> Reply {
    reply.body["duplicate"] = json!(true);
    let first = log.outcome.take().unwrap_or_default();
    log.outcome = Some(format!("duplicate of delivery {}: {first}", row.id));
    reply
}

impl App {
    pub fn redact(&self, text: &str) -> String {
        let (mut out, mut err) = (std::io::sink(), std::io::sink());
        self.reporter(&mut out, &mut err).redact(text)
    }
}
