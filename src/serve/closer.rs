//! The background closer: every pending row of the store is closed with the client's one
//! [`attempt`](crate::client::attempt), retried on the [`Schedule`] while Coveralls fails,
//! and paced per endpoint: while an endpoint keeps failing, one probe at a time, about one
//! a second, however many closes wait; once it answers, every pending close is due again.
//!
//! One task decides what to attempt (so that no row is attempted twice at once); each
//! attempt runs on a blocking thread, records its outcome in the store, then reports back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::App;
use super::schedule::Schedule;
use super::store::{Row, Settle, Store, now_ms};
use crate::client::{self, Build, Failed, Webhook};

/// Attempts under way at once, each on a blocking thread.
pub const ATTEMPTS_AT_ONCE: usize = 16;
/// While an endpoint fails: the least time between two probes of it.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How often the store is read for due rows, however busy the closer is otherwise.
const TICK: Duration = Duration::from_millis(500);
/// A row this receiver recorded this recently (milliseconds), and not attempted yet, is its
/// delivery's to submit: a scan leaves it, so that the two never start one close twice.
const FRESH_MS: i64 = 2_000;
/// Rows read from the store at a time.
const BATCH: usize = 256;
/// Submitted rows that wait for a place, at most; past that, they wait in the store.
const MAX_BACKLOG: usize = 1024;
/// How often closed rows past their keeping are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// The longest build URL from Coveralls that is kept and answered (theirs are about 40
/// bytes); a longer one, or one that is not printable ASCII, is dropped.
const MAX_URL: usize = 400;

/// What became of a delivery's close, as far as its answer can tell.
#[derive(Clone, Debug)]
pub enum Outcome {
    Closed {
        url: Option<String>,
        jobs: Option<u64>,
    },
    Failed {
        error: String,
    },
    /// Recorded, and to be tried (again) later.
    Queued {
        why: String,
    },
}

/// A row for the closer, and who waits for its outcome; `start`: attempt it now if it is
/// not under way (else only wait for the attempt under way, as a duplicate does).
struct Submission {
    row: Row,
    answer: oneshot::Sender<Outcome>,
    start: bool,
}

/// How the rest of the receiver reaches the closer.
#[derive(Clone)]
pub struct Handle {
    submit: mpsc::UnboundedSender<Submission>,
}

/// What the closer receives from its [`Handle`]s.
pub struct Submissions(mpsc::UnboundedReceiver<Submission>);

/// A handle, and what its submissions reach: made before the closer, which needs the
/// receiver that holds the handle.
pub fn channel() -> (Handle, Submissions) {
    let (submit, submitted) = mpsc::unbounded_channel();
    (Handle { submit }, Submissions(submitted))
}

impl Handle {
    /// Attempt `row` now if its endpoint may be tried; the outcome of that first attempt,
    /// or `Queued` where it may not.
    pub fn submit(&self, row: Row) -> oneshot::Receiver<Outcome> {
        self.send(row, true)
    }

    /// The outcome of the attempt at `row` that is under way, or that its own delivery's
    /// submission is about to start; none if no attempt starts (the caller's wait ends it).
    pub fn watch(&self, row: Row) -> oneshot::Receiver<Outcome> {
        self.send(row, false)
    }

    fn send(&self, row: Row, start: bool) -> oneshot::Receiver<Outcome> {
        let (answer, answered) = oneshot::channel();
        let submission = Submission { row, answer, start };
        if let Err(mpsc::error::SendError(submission)) = self.submit.send(submission) {
            let why = "the receiver is stopping".to_owned();
            let _ = submission.answer.send(Outcome::Queued { why });
        }
        answered
    }
}

/// Whether an attempt could start.
enum Start {
    Started,
    /// Its endpoint is failing, and probed by another attempt or too lately.
    Paced,
    /// Every place is taken.
    Busy,
    /// Its project is gone: failed, with this error.
    Gone(String),
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
    /// Rows being attempted, or waiting in the backlog to be, with whoever waits for their
    /// outcome.
    in_flight: HashMap<i64, Vec<oneshot::Sender<Outcome>>>,
    /// Submitted rows waiting for a place, first come first served.
    backlog: VecDeque<Row>,
    /// When this receiver started (milliseconds since the epoch): no delivery of its own is
    /// on its way for a row recorded before.
    started: i64,
    /// Who waits for an attempt at a row that has not started yet (a duplicate's delivery
    /// that came before the first's submission): moved to `in_flight` when it starts.
    watchers: HashMap<i64, Vec<oneshot::Sender<Outcome>>>,
    endpoints: HashMap<String, Endpoint>,
    /// The last scan left due rows for want of a place.
    more_due: bool,
    finished: (
        mpsc::UnboundedSender<Finished>,
        mpsc::UnboundedReceiver<Finished>,
    ),
}

impl Closer {
    pub fn new(app: Arc<App>) -> Closer {
        Closer {
            store: Arc::clone(&app.store),
            schedule: app.settings.durable.schedule.clone(),
            app,
            places: Arc::new(Semaphore::new(ATTEMPTS_AT_ONCE)),
            in_flight: HashMap::new(),
            backlog: VecDeque::new(),
            watchers: HashMap::new(),
            started: now_ms(),
            endpoints: HashMap::new(),
            more_due: false,
            finished: mpsc::unbounded_channel(),
        }
    }

    /// Run until `stopping`; then let the attempts under way finish within `grace` (what is
    /// left is still pending in the store, for the next start).
    pub async fn run(mut self, submissions: Submissions, grace: Duration) {
        let Submissions(mut submitted) = submissions;
        let mut stopping = self.app.stopping.subscribe();
        let mut stop = std::pin::pin!(async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        });
        // Not `now - PRUNE_EVERY`: a machine up for less than that has no such instant.
        let mut pruned: Option<Instant> = None;
        // One clock for the whole loop: a sleep made afresh each time round would never end
        // while deliveries keep coming, and the rows only the scan finds would wait forever.
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(submission) = submitted.recv() => self.submitted(submission).await,
                Some(finished) = self.finished.1.recv() => self.ended(finished).await,
                _ = tick.tick() => self.scan().await,
                () = &mut stop => break,
            }
            if pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                pruned = Some(Instant::now());
                self.prune().await;
            }
        }
        self.drain(grace).await;
    }

    /// Forget the closes closed long enough ago that no duplicate is to be expected.
    async fn prune(&self) {
        let keep = self.app.settings.durable.keep_closed;
        let before = now_ms() - i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        match self.store.prune(before).await {
            Ok(0) => {}
            Ok(pruned) => self
                .app
                .log_line(&format!("pruned {pruned} closed deliveries")),
            Err(error) => self
                .app
                .log_line(&format!("pruning the store failed: {error}")),
        }
    }

    async fn submitted(&mut self, submission: Submission) {
        let Submission { row, answer, start } = submission;
        if let Some(waiting) = self.in_flight.get_mut(&row.id) {
            waiting.push(answer);
            return;
        }
        if !start {
            // Its delivery's own submission may still be on its way: wait for the attempt it
            // starts (the answer gives up at its wait), rather than say "queued" too soon.
            let watching = self.watchers.entry(row.id).or_default();
            watching.retain(|answer| !answer.is_closed());
            watching.push(answer);
            return;
        }
        let id = row.id;
        let queued = |why: &str| Outcome::Queued {
            why: why.to_owned(),
        };
        match self.try_attempt(row.clone()).await {
            Start::Started => self.waiting(id).push(answer),
            Start::Busy if self.backlog.len() < MAX_BACKLOG => {
                self.backlog.push_back(row);
                self.waiting(id).push(answer);
            }
            Start::Busy => drop(answer.send(queued("every place to close in is taken"))),
            Start::Paced => drop(answer.send(queued("Coveralls is failing; tried again soon"))),
            Start::Gone(error) => drop(answer.send(Outcome::Failed { error })),
        }
    }

    /// The backlog first, then the rows due in the store, as far as places and pacing allow.
    async fn scan(&mut self) {
        self.start_backlog().await;
        // Fresh: recorded by this receiver since it started, within FRESH of now.
        let now = now_ms();
        let fresh_from = (now - FRESH_MS).max(self.started);
        let due = match self.store.due(now, fresh_from, BATCH) {
            Ok(due) => due,
            Err(error) => {
                self.app
                    .log_line(&format!("reading the store failed: {error}"));
                return;
            }
        };
        self.more_due = false;
        for row in due {
            let id = row.id;
            if self.in_flight.contains_key(&id) {
                continue;
            }
            if self.places.available_permits() == 0 {
                self.more_due = true;
                break;
            }
            if let Start::Started = self.try_attempt(row).await {
                self.waiting(id);
            }
        }
        // Watchers of rows that no attempt started for in time have given up.
        self.watchers.retain(|_, watching| {
            watching.retain(|answer| !answer.is_closed());
            !watching.is_empty()
        });
    }

    /// Who waits for the attempt at `id`, now under way or in the backlog: its watchers too.
    fn waiting(&mut self, id: i64) -> &mut Vec<oneshot::Sender<Outcome>> {
        let watchers = self.watchers.remove(&id).unwrap_or_default();
        let waiting = self.in_flight.entry(id).or_default();
        waiting.extend(watchers);
        waiting
    }

    /// Start what waits in the backlog, while there are places.
    async fn start_backlog(&mut self) {
        while let Some(row) = self.backlog.pop_front() {
            let id = row.id;
            let outcome = match self.try_attempt(row.clone()).await {
                Start::Started => continue,
                Start::Busy => {
                    self.backlog.push_front(row);
                    return;
                }
                Start::Paced => Outcome::Queued {
                    why: "Coveralls is failing; tried again soon".to_owned(),
                },
                Start::Gone(error) => Outcome::Failed { error },
            };
            for answer in self.in_flight.remove(&id).unwrap_or_default() {
                let _ = answer.send(outcome.clone());
            }
        }
    }

    /// Start an attempt at `row` if a place is free and its endpoint may be tried now.
    async fn try_attempt(&mut self, row: Row) -> Start {
        let Some(project) = self.app.settings.project(&row.project) else {
            let error = format!(
                "project {} is no longer configured; not closed",
                row.project
            );
            let settle = Settle::Failed {
                error: error.clone(),
            };
            let _ = self.store.settle(row.id, settle).await;
            return Start::Gone(error);
        };
        let Ok(place) = Arc::clone(&self.places).try_acquire_owned() else {
            return Start::Busy;
        };
        let endpoint = project.coveralls.endpoint.clone();
        let health = self.endpoints.entry(endpoint.clone()).or_default();
        let now = Instant::now();
        if health.failing {
            if health.probing || health.next_probe.is_some_and(|at| now < at) {
                return Start::Paced;
            }
            health.probing = true;
            health.next_probe = Some(now + PROBE_EVERY);
        }
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
        Start::Started
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
        self.start_backlog().await;
        // A place still free: the next of the due rows a scan had to leave, not the next tick.
        if self.more_due && self.places.available_permits() > 0 {
            self.scan().await;
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
            Ok(moved) => self.app.log_line(&format!(
                "{endpoint} answers again: every pending close to it is due now ({moved} \
                 brought forward)"
            )),
            Err(error) => self
                .app
                .log_line(&format!("releasing closes failed: {error}")),
        }
    }

    /// After the stop: wait for the attempts under way, within `grace`.
    async fn drain(mut self, grace: Duration) {
        // What waits for a place is not started now: it stays pending, for the next start.
        for row in std::mem::take(&mut self.backlog) {
            for answer in self.in_flight.remove(&row.id).unwrap_or_default() {
                let why = "the receiver is stopping; the close stays pending".to_owned();
                let _ = answer.send(Outcome::Queued { why });
            }
        }
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
        let result = tokio::task::spawn_blocking(move || {
            let result = attempt(&app, &row);
            super::failpoint::failpoint("after-attempt");
            result
        })
        .await;
        let (settle, answered) = match result {
            Ok(result) => self.judge(result),
            // A fault of the receiver's own, which may not come back: tried again on the
            // schedule, and failed in the end like any close that keeps failing.
            Err(panicked) => {
                let error = format!("the close failed inside the receiver: {panicked}");
                (self.retry(error, None), true)
            }
        };
        let result = match &settle {
            Settle::Closed { .. } => "closed",
            Settle::Retry { .. } => "retry",
            Settle::Failed { .. } => "failed",
        };
        self.app.metrics.attempted(result, started.elapsed());
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
                let url = closed.url.filter(|url| {
                    url.len() <= MAX_URL && url.bytes().all(|b| b.is_ascii_graphic())
                });
                return (
                    Settle::Closed {
                        url,
                        jobs: closed.jobs,
                    },
                    true,
                );
            }
            Err(failed) => failed,
        };
        // Kept in the store, answered and shown by `deliveries`: redacted like every line of
        // the log, and its control characters escaped (it is Coveralls' text).
        let error = self.app.redact(&failed.error.to_string());
        let error = super::log::text(&error.replace('\n', " "), 1000);
        if !failed.error.retryable() {
            // A repeated close (a redelivery, or a restart after a close that was sent but
            // not recorded) of a build already closed: closed, as asked.
            if failed
                .error
                .message()
                .to_ascii_lowercase()
                .contains("already closed")
            {
                return (
                    Settle::Closed {
                        url: None,
                        jobs: None,
                    },
                    true,
                );
            }
            return (Settle::Failed { error }, true);
        }
        (self.retry(error, failed.retry_after), false)
    }

    /// Another attempt later, on the schedule; or, past the time a close is tried for,
    /// failed for good.
    fn retry(&self, error: String, retry_after: Option<Duration>) -> Settle {
        let attempts = u64::try_from(self.row.attempts).unwrap_or(0) + 1;
        let age = now_ms().saturating_sub(self.row.received_at);
        let age = Duration::from_millis(u64::try_from(age).unwrap_or(0));
        let wait = self.schedule.wait(attempts, retry_after);
        if age + wait > self.schedule.give_up_after {
            let over = self.schedule.give_up_after.as_secs();
            let over = match over % 3600 {
                0 => format!("{}h", over / 3600),
                _ => format!("{over}s"),
            };
            let error = format!("gave up after {attempts} attempts over {over}: {error}");
            return Settle::Failed { error };
        }
        let next = now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        Settle::Retry { error, next }
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
                    super::log::text(&error, 300),
                    wait.as_secs_f64()
                );
                (line, Outcome::Queued { why: error })
            }
            Settle::Failed { error } => {
                let line = format!(
                    "failed (attempt {attempt}): {}",
                    super::log::text(&error, 300)
                );
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
        .project(&row.project)
        .ok_or_else(|| unusable(format!("project {} is no longer configured", row.project)))?;
    let build: Build = serde_json::from_str(&row.request)
        .ok()
        .filter(|build: &Build| !build.number().is_empty())
        .ok_or_else(|| unusable("the stored close cannot be read".to_owned()))?;
    let (mut out, mut err) = (std::io::sink(), app.log.writer(false));
    let mut ui = app.reporter(&mut out, &mut err);
    super::failpoint::failpoint("panic-in-close");
    let webhook = Webhook::new(&project.coveralls.endpoint, &build, project.token.expose());
    let agent = &project.agents[row.id.unsigned_abs() as usize % project.agents.len()];
    client::attempt(agent, &webhook, project.coveralls.timeout, &mut ui)
}
