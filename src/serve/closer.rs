//! The background closer: every pending row of the store is closed with the client's one
//! [`attempt`](crate::client::attempt), retried on the [`Schedule`] while Coveralls fails,
//! and paced per endpoint: while an endpoint keeps failing, one probe at a time, about one
//! a second, however many closes wait; once it answers, every pending close is due again.
//!
//! One task decides what to attempt (so that no row is attempted twice at once); each
//! attempt runs on a blocking thread, records its outcome in the store, then reports back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use super::App;
use super::schedule::Schedule;
use super::store::{Row, Settle, Store, now_ms};
use crate::client::{self, Build, Failed, Webhook};

/// Attempts under way at once, each on a blocking thread.
pub const ATTEMPTS_AT_ONCE: usize = 16;
/// While an endpoint fails: the least time between two probes of it.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How often the store is read for due rows when nothing else wakes the closer.
const TICK: Duration = Duration::from_millis(500);
/// Rows read from the store at a time.
const BATCH: usize = 256;

/// What became of a delivery's close, as far as its answer can tell.
#[derive(Clone, Debug)]
pub enum Outcome {
    Closed { url: Option<String>, jobs: Option<u64> },
    Failed { error: String },
    /// Recorded, and to be tried (again) later.
    Queued { why: String },
}

/// How the rest of the receiver reaches the closer.
#[derive(Clone)]
pub struct Handle {
    submit: mpsc::UnboundedSender<(Row, oneshot::Sender<Outcome>)>,
}

impl Handle {
    /// Attempt `row` now if its endpoint may be tried; the outcome of that first attempt,
    /// or `Queued` at once where it may not.
    pub fn submit(&self, row: Row) -> oneshot::Receiver<Outcome> {
        let (answer, answered) = oneshot::channel();
        if let Err(mpsc::error::SendError((_, answer))) = self.submit.send((row, answer)) {
            let why = "the receiver is stopping".to_owned();
            let _ = answer.send(Outcome::Queued { why });
        }
        answered
    }
}

/// An attempt that has ended, its outcome committed to the store.
struct Finished {
    id: i64,
    endpoint: String,
    /// Coveralls answered (a close or a refusal): the endpoint works.
    answered: bool,
    outcome: Outcome,
}

/// The health of one endpoint, as its last attempts told.
#[derive(Default)]
struct Endpoint {
    failing: bool,
    probing: bool,
    next_probe: Option<Instant>,
}

pub struct Closer {
    app: Arc<App>,
    store: Arc<Store>,
    schedule: Schedule,
    places: Arc<Semaphore>,
    /// Rows being attempted, with whoever waits for their outcome.
    in_flight: HashMap<i64, Vec<oneshot::Sender<Outcome>>>,
    endpoints: HashMap<String, Endpoint>,
    finished: (mpsc::UnboundedSender<Finished>, mpsc::UnboundedReceiver<Finished>),
}

impl Closer {
    pub fn new(app: Arc<App>, store: Arc<Store>, schedule: Schedule) -> Closer {
        Closer {
            app,
            store,
            schedule,
            places: Arc::new(Semaphore::new(ATTEMPTS_AT_ONCE)),
            in_flight: HashMap::new(),
            endpoints: HashMap::new(),
            finished: mpsc::unbounded_channel(),
        }
    }

    /// Run until `stopping`; then let the attempts under way finish within `grace` (what is
    /// left is still pending in the store, for the next start).
    pub fn start(self, mut stopping: watch::Receiver<bool>, grace: Duration) -> (Handle, tokio::task::JoinHandle<()>) {
        let (submit, mut submitted) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut closer = self;
            loop {
                tokio::select! {
                    Some((row, answer)) = submitted.recv() => closer.submitted(row, answer).await,
                    Some(finished) = closer.finished.1.recv() => closer.ended(finished).await,
                    () = tokio::time::sleep(TICK) => closer.scan().await,
                    _ = stopping.wait_for(|stopping| *stopping) => break,
                }
            }
            closer.drain(grace).await;
        });
        (Handle { submit }, task)
    }

    async fn submitted(&mut self, row: Row, answer: oneshot::Sender<Outcome>) {
        if let Some(waiting) = self.in_flight.get_mut(&row.id) {
            waiting.push(answer);
            return;
        }
        match self.try_attempt(row).await {
            Some(id) => self.in_flight.entry(id).or_default().push(answer),
            None => {
                let why = "Coveralls is failing: it is tried again shortly".to_owned();
                let _ = answer.send(Outcome::Queued { why });
            }
        }
    }

    /// Due rows, attempted as far as places and pacing allow.
    async fn scan(&mut self) {
        let due = match self.store.due(now_ms(), BATCH) {
            Ok(due) => due,
            Err(error) => {
                self.app.log_line(&format!("reading the store failed: {error}"));
                return;
            }
        };
        for row in due {
            if self.places.available_permits() == 0 {
                break;
            }
            if !self.in_flight.contains_key(&row.id) {
                if let Some(id) = self.try_attempt(row).await {
                    self.in_flight.entry(id).or_default();
                }
            }
        }
    }

    /// Start an attempt at `row` if its endpoint may be tried now: its id, or `None`.
    async fn try_attempt(&mut self, row: Row) -> Option<i64> {
        let Some(project) = self.app.settings.projects.iter().find(|p| p.name == row.project) else {
            let error = format!("project {} is no longer configured; not closed", row.project);
            let _ = self.store.settle(row.id, Settle::Failed { error }).await;
            return None;
        };
        let endpoint = project.coveralls.endpoint.clone();
        let health = self.endpoints.entry(endpoint.clone()).or_default();
        let now = Instant::now();
        if health.failing {
            if health.probing || health.next_probe.is_some_and(|at| now < at) {
                return None;
            }
            health.probing = true;
            health.next_probe = Some(now + PROBE_EVERY);
        }
        let place = Arc::clone(&self.places).try_acquire_owned().ok()?;
        let id = row.id;
        let attempt = Attempt {
            app: Arc::clone(&self.app),
            store: Arc::clone(&self.store),
            schedule: self.schedule.clone(),
            endpoint,
            row,
        };
        let finished = self.finished.0.clone();
        tokio::spawn(async move {
            let _place = place;
            let _ = finished.send(attempt.run().await);
        });
        Some(id)
    }

    async fn ended(&mut self, finished: Finished) {
        for answer in self.in_flight.remove(&finished.id).unwrap_or_default() {
            let _ = answer.send(finished.outcome.clone());
        }
        let health = self.endpoints.entry(finished.endpoint.clone()).or_default();
        health.probing = false;
        let recovered = finished.answered && health.failing;
        health.failing = !finished.answered;
        if recovered {
            self.release(&finished.endpoint).await;
        }
    }

    /// Every pending close to an endpoint that answers again is due now.
    async fn release(&mut self, endpoint: &str) {
        let projects: Vec<String> = self
            .app
            .settings
            .projects
            .iter()
            .filter(|p| p.coveralls.endpoint == endpoint)
            .map(|p| p.name.clone())
            .collect();
        match self.store.release(projects).await {
            Ok(0) => {}
            Ok(due) => self.app.log_line(&format!(
                "{endpoint} answers again: {due} pending closes are due now"
            )),
            Err(error) => self.app.log_line(&format!("releasing closes failed: {error}")),
        }
    }

    /// After the stop: wait for the attempts under way, within `grace`.
    async fn drain(mut self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        while !self.in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, self.finished.1.recv()).await {
                Ok(Some(finished)) => self.ended(finished).await,
                _ => break,
            }
        }
        for answer in self.in_flight.into_values().flatten() {
            let why = "the receiver is stopping; the close stays pending".to_owned();
            let _ = answer.send(Outcome::Queued { why });
        }
    }
}

/// One attempt at one row's close.
struct Attempt {
    app: Arc<App>,
    store: Arc<Store>,
    schedule: Schedule,
    endpoint: String,
    row: Row,
}

impl Attempt {
    async fn run(self) -> Finished {
        let started = Instant::now();
        let app = Arc::clone(&self.app);
        let row = self.row.clone();
        let result = tokio::task::spawn_blocking(move || attempt(&app, &row)).await;
        let (settle, answered) = match result {
            Ok(result) => self.judge(result),
            Err(panicked) => {
                let error = format!("the close failed inside the receiver: {panicked}");
                (Settle::Failed { error }, true)
            }
        };
        super::metrics::attempted(&settle, started.elapsed());
        let outcome = match self.store.settle(self.row.id, settle.clone()).await {
            Ok(()) => self.log(settle),
            Err(error) => {
                let why = format!("the outcome could not be recorded ({error}); tried again");
                self.app.log_line(&format!("{}{why}", self.prefix()));
                Outcome::Queued { why }
            }
        };
        Finished {
            id: self.row.id,
            endpoint: self.endpoint,
            answered,
            outcome,
        }
    }

    /// What the store records of an attempt's result, and whether Coveralls answered.
    fn judge(&self, result: Result<client::Closed, Failed>) -> (Settle, bool) {
        let failed = match result {
            Ok(closed) => {
                let (url, jobs) = (closed.url, closed.jobs);
                return (Settle::Closed { url, jobs }, true);
            }
            Err(failed) => failed,
        };
        let error = failed.error.to_string().replace('\n', " ");
        if !failed.error.retryable() {
            // A repeated close (a redelivery, or a restart after a close that was sent but
            // not recorded) of a build already closed: closed, as asked.
            if error.to_ascii_lowercase().contains("already closed") {
                return (Settle::Closed { url: None, jobs: None }, true);
            }
            return (Settle::Failed { error }, true);
        }
        let attempts = u64::try_from(self.row.attempts).unwrap_or(0) + 1;
        let age = Duration::from_millis(u64::try_from(now_ms() - self.row.received_at).unwrap_or(0));
        let wait = self.schedule.wait(attempts, failed.retry_after);
        if age + wait > self.schedule.give_up_after {
            let error = format!(
                "gave up after {attempts} attempts over {}: {error}",
                hours(self.schedule.give_up_after)
            );
            return (Settle::Failed { error }, false);
        }
        let next = now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        (Settle::Retry { error, next }, false)
    }

    fn prefix(&self) -> String {
        format!(
            "project {} build {}: ",
            self.row.project,
            super::log::field(&self.row.build, 100)
        )
    }

    /// The log line of an attempt, and its outcome for whoever waits.
    fn log(&self, settle: Settle) -> Outcome {
        let attempt = self.row.attempts + 1;
        let (line, outcome) = match settle {
            Settle::Closed { url, jobs } => {
                let shown = jobs.map_or("?".to_owned(), |jobs| jobs.to_string());
                let line = format!("closed (attempt {attempt}): {shown} jobs");
                (line, Outcome::Closed { url, jobs })
            }
            Settle::Retry { error, next } => {
                let wait = Duration::from_millis(u64::try_from(next - now_ms()).unwrap_or(0));
                let line = format!(
                    "attempt {attempt} failed: {}; retrying in {:.1}s",
                    super::log::text(&error),
                    wait.as_secs_f64()
                );
                (line, Outcome::Queued { why: error })
            }
            Settle::Failed { error } => {
                let line = format!("failed (attempt {attempt}): {}", super::log::text(&error));
                (line, Outcome::Failed { error })
            }
        };
        self.app.log_line(&format!("{}{line}", self.prefix()));
        outcome
    }
}

/// The close of `row`: its build, its project's token and agent, one attempt.
fn attempt(app: &App, row: &Row) -> Result<client::Closed, Failed> {
    let unusable = |why: String| Failed {
        error: crate::error::Error::config(why),
        retry_after: None,
    };
    let project = app
        .settings
        .projects
        .iter()
        .find(|p| p.name == row.project)
        .ok_or_else(|| unusable(format!("project {} is no longer configured", row.project)))?;
    let build: Build = serde_json::from_str(&row.request)
        .map_err(|err| unusable(format!("the stored close cannot be read: {err}")))?;
    let (mut out, mut err) = (std::io::sink(), std::io::stderr());
    let mut ui = app.reporter(&mut out, &mut err);
    super::failpoint::failpoint("panic-in-close");
    let webhook = Webhook::new(&project.coveralls.endpoint, &build, project.token.expose());
    let agent = &project.agents[row.id.unsigned_abs() as usize % project.agents.len()];
    client::attempt(agent, &webhook, project.coveralls.timeout, &mut ui)
}

fn hours(duration: Duration) -> String {
    match duration.as_secs() {
        secs if secs % 3600 == 0 => format!("{} h", secs / 3600),
        secs => format!("{secs} s"),
    }
}
