//! The receiver's durable store: one SQLite file whose rows are both the record of every
//! delivery it accepted and the queue of closes still to make (one store, not a queue beside
//! a database that could disagree with it).
//!
//! A delivery is acknowledged only once its row is committed: WAL with `synchronous=FULL`
//! makes a commit durable before it returns. One writer thread commits whatever is waiting
//! in one transaction (group commit), so that many deliveries share one fsync. Readers (the
//! background closer, `/healthz`, `/metrics`, the `deliveries` command in another process)
//! read beside it, as WAL allows. The schema is ARCHITECTURE.md's.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fd_lock::{RwLock, RwLockWriteGuard};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};

use crate::env::Env;
use crate::error::Error;
use crate::settings::{Key, Values};

/// `PRAGMA application_id`: marks the file as this receiver's ("CFin").
const APPLICATION_ID: i32 = 0x4346_696e;
/// Each entry upgrades the schema from its index to the next version (`PRAGMA user_version`).
const MIGRATIONS: &[&str] = &[
    // 0 → 1: deliveries, each the queue entry of its close.
    "CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        project TEXT NOT NULL,
        build TEXT NOT NULL,
        attempt TEXT NOT NULL DEFAULT '',
        request TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'closed', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        received_at INTEGER NOT NULL,
        next_attempt_at INTEGER,
        last_error TEXT,
        closed_at INTEGER,
        url TEXT,
        jobs INTEGER,
        UNIQUE (source, project, build, attempt)
    ) STRICT;
    CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);",
];
/// The schema this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();
/// Rows the store holds at most (pending, failed and closed ones kept for deduplication):
/// past it, new deliveries are refused (503) rather than let a flood of validly signed
/// build numbers fill the disk. About 1 KiB each.
pub const MAX_ROWS: i64 = 100_000;
/// Inserts and updates committed in one transaction at most.
const MAX_BATCH: usize = 512;
/// Operations waiting for the writer at most; past that, a delivery is refused (503).
const QUEUE: usize = 8192;
/// How long a connection waits for another (the `deliveries` command) to finish writing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `last_error` and `url` kept.
const MAX_TEXT: usize = 500;

/// A delivery to record: the close it asks for, and the key that makes it unique.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    pub source: &'static str,
    pub project: String,
    pub build: String,
    /// `service_attempt` where a re-run is a new close (GitHub); empty elsewhere.
    pub attempt: String,
    /// The close to make, as JSON, without the token.
    pub request: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Pending,
    Closed,
    Failed,
}

/// A row of the store.
#[derive(Clone, Debug)]
pub struct Row {
    pub id: i64,
    pub source: String,
    pub project: String,
    pub build: String,
    pub attempt: String,
    pub request: String,
    pub state: State,
    pub attempts: i64,
    /// Milliseconds since the Unix epoch, like every time in the store.
    pub received_at: i64,
    pub next_attempt_at: Option<i64>,
    pub last_error: Option<String>,
    pub url: Option<String>,
    pub jobs: Option<i64>,
}

/// What became of a delivery given to [`Store::record`].
#[derive(Debug)]
pub enum Recorded {
    /// A new row, committed: the delivery may be acknowledged.
    New(Row),
    /// The same build of the same project was recorded before: nothing new to close.
    Duplicate(Row),
}

/// What an attempt at a close came to, for [`Store::settle`].
#[derive(Clone, Debug)]
pub enum Settle {
    Closed {
        url: Option<String>,
        jobs: Option<u64>,
    },
    /// Worth another attempt at `next` (milliseconds since the epoch).
    Retry {
        error: String,
        next: i64,
    },
    Failed {
        error: String,
    },
}

/// What the store holds that is not closed, for `/healthz` and `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: i64,
    pub failed: i64,
    /// When the oldest pending delivery was received.
    pub oldest_pending: Option<i64>,
}

enum Op {
    Record(
        NewDelivery,
        tokio::sync::oneshot::Sender<Result<Recorded, Error>>,
    ),
    Settle(i64, Settle, tokio::sync::oneshot::Sender<Result<(), Error>>),
    Prune(i64, tokio::sync::oneshot::Sender<Result<usize, Error>>),
    Release(
        Vec<String>,
        tokio::sync::oneshot::Sender<Result<usize, Error>>,
    ),
}

/// The store, open for the receiver: the only writer of its file.
pub struct Store {
    path: PathBuf,
    /// `None` only while the store is dropped: the writer ends when its queue does.
    writer: Option<SyncSender<Op>>,
    thread: Option<std::thread::JoinHandle<()>>,
    reader: Mutex<Connection>,
    /// Transactions the writer has committed: with the rows, what group commit saves.
    commits: Arc<AtomicU64>,
    /// Held for as long as the store is open: one receiver per file.
    _lock: RwLockWriteGuard<'static, File>,
}

impl Store {
    /// Open (or create) the store at `path` for the receiver: lock it against a second
    /// receiver, check that it is this receiver's database, bring its schema up to date,
    /// and start the writer. `named` says where the path came from, for errors.
    pub fn open(path: &Path, named: &str) -> Result<Arc<Store>, Error> {
        Store::open_with_cap(path, named, MAX_ROWS)
    }

    /// As [`Store::open`], holding at most `cap` rows.
    pub fn open_with_cap(path: &Path, named: &str, cap: i64) -> Result<Arc<Store>, Error> {
        let lock = lock(path, named)?;
        let connection = connect(path, named, true)?;
        migrate(&connection, path, named)?;
        let reader = connect(path, named, false)?;
        let rows = connection
            .query_row("SELECT count(*) FROM deliveries", [], |row| row.get(0))
            .map_err(|err| unusable(path, named, &err))?;
        let (writer, queue) = mpsc::sync_channel(QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        let writer_state = Writer {
            connection,
            rows,
            cap,
            commits: Arc::clone(&commits),
        };
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_state.run(queue))
            .map_err(|err| Error::config(format!("cannot start the store's writer: {err}")))?;
        Ok(Arc::new(Store {
            path: path.to_owned(),
            writer: Some(writer),
            thread: Some(thread),
            reader: Mutex::new(reader),
            commits,
            _lock: lock,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Transactions committed since the store was opened.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Record a delivery; the answer comes once it is committed (or could not be).
    pub async fn record(&self, delivery: NewDelivery) -> Result<Recorded, Error> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.send(Op::Record(delivery, answer))?;
        answered.await.unwrap_or_else(|_| Err(writer_gone()))
    }

    /// Record what an attempt came to.
    pub async fn settle(&self, id: i64, outcome: Settle) -> Result<(), Error> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.send(Op::Settle(id, outcome, answer))?;
        answered.await.unwrap_or_else(|_| Err(writer_gone()))
    }

    /// Drop closed rows closed before `before`: they no longer need to answer duplicates.
    pub async fn prune(&self, before: i64) -> Result<usize, Error> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.send(Op::Prune(before, answer))?;
        answered.await.unwrap_or_else(|_| Err(writer_gone()))
    }

    /// Make every pending close of these projects due now (their endpoint answers again).
    pub async fn release(&self, projects: Vec<String>) -> Result<usize, Error> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.send(Op::Release(projects, answer))?;
        answered.await.unwrap_or_else(|_| Err(writer_gone()))
    }

    fn send(&self, op: Op) -> Result<(), Error> {
        let writer = self.writer.as_ref().ok_or_else(writer_gone)?;
        writer.try_send(op).map_err(|err| match err {
            TrySendError::Full(_) => Error::unavailable("the store's queue is full"),
            TrySendError::Disconnected(_) => writer_gone(),
        })
    }

    fn read(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pending rows due at `now`, oldest first, at most `limit`; but not those received
    /// after `fresh_from` and not attempted yet.
    pub fn due(&self, now: i64, fresh_from: i64, limit: usize) -> Result<Vec<Row>, Error> {
        let reader = self.read();
        select(
            &reader,
            "WHERE state = 'pending' AND next_attempt_at <= ?1 \
             AND (attempts > 0 OR received_at <= ?3) ORDER BY next_attempt_at, id LIMIT ?2",
            params![now, limit as i64, fresh_from],
        )
        .map_err(|err| self.failed("reading due deliveries", &err))
    }

    pub fn counts(&self) -> Result<Counts, Error> {
        counts(&self.read()).map_err(|err| self.failed("counting deliveries", &err))
    }

    fn failed(&self, what: &str, err: &rusqlite::Error) -> Error {
        Error::unavailable(format!("{}: {what}: {err}", self.path.display()))
    }
}

/// Everything queued is committed, and the file closed, before the store is gone.
impl Drop for Store {
    fn drop(&mut self) {
        drop(self.writer.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn writer_gone() -> Error {
    Error::unavailable("the store's writer has stopped")
}

/// The store's file: `--state` or `COVERALLS_FINISH_STATE`; else `coveralls-finish.sqlite3`
/// in systemd's `StateDirectory=` (its first, where it names several), else in the working
/// directory. And what named it, for errors.
pub fn state_path(values: &Values, env: &Env) -> Result<(PathBuf, &'static str), Error> {
    if let Some(given) = values.given(Key::State) {
        return Ok((PathBuf::from(given.value.trim()), given.from));
    }
    let file = "coveralls-finish.sqlite3";
    Ok(match env.get("STATE_DIRECTORY")? {
        Some(dirs) => {
            let first = dirs.split(':').next().unwrap_or(dirs);
            (Path::new(first).join(file), "the state file")
        }
        None => (PathBuf::from(file), "the state file"),
    })
}

/// The lock file beside the store (`PATH.lock`), locked for as long as the process runs and
/// holding its process id, so that a second receiver can say what holds the store. The
/// system drops the lock with the process, however it ends.
fn lock(path: &Path, named: &str) -> Result<RwLockWriteGuard<'static, File>, Error> {
    let lock_path = with_suffix(path, ".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(|err| {
            unusable(
                path,
                named,
                &format!("cannot open {}: {err}", lock_path.display()),
            )
        })?;
    // One lock a store, for the life of the process.
    let lock: &'static mut RwLock<File> = Box::leak(Box::new(RwLock::new(file)));
    match lock.try_write() {
        Ok(mut guard) => {
            let _ = guard.set_len(0);
            let _ = write!(guard, "{}", std::process::id());
            Ok(guard)
        }
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
            let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
            let holder = match holder.trim() {
                pid if !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()) => {
                    format!("process {pid}")
                }
                _ => "another process".to_owned(),
            };
            Err(Error::config(format!(
                "{named} {}: in use by another receiver ({holder} holds {}); one receiver \
                 per state file",
                path.display(),
                lock_path.display()
            )))
        }
        Err(err) => Err(unusable(
            path,
            named,
            &format!("cannot lock {}: {err}", lock_path.display()),
        )),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn unusable(path: &Path, named: &str, why: &dyn std::fmt::Display) -> Error {
    Error::config(format!(
        "{named} {}: {why}; the file is left as it is",
        path.display()
    ))
}

/// A connection with the settings every user of the store needs. `create` makes the file
/// where there is none (the receiver); the `deliveries` command never creates one.
pub fn connect(path: &Path, named: &str, create: bool) -> Result<Connection, Error> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let connection =
        Connection::open_with_flags(path, flags).map_err(|err| unusable(path, named, &err))?;
    let setup = || -> rusqlite::Result<()> {
        connection.busy_timeout(BUSY_TIMEOUT)?;
        // Read before any change: a file that is not SQLite fails here, untouched.
        let _: i64 = connection.query_row("PRAGMA schema_version", [], |row| row.get(0))?;
        // Per connection: a commit is on the disk before it returns; and no temporary files
        // (a container's image has no writable /tmp).
        connection.execute_batch("PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY")
    };
    setup().map_err(|err| unusable(path, named, &not_sqlite(&err)))?;
    Ok(connection)
}

fn not_sqlite(err: &rusqlite::Error) -> String {
    match err.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => {
            "not a SQLite database, so not this receiver's state".to_owned()
        }
        Some(rusqlite::ErrorCode::DatabaseCorrupt) => format!("corrupt ({err})"),
        _ => err.to_string(),
    }
}

/// Check the file is this receiver's (or new and empty), intact, and of a schema this build
/// knows: its schema version.
pub fn check(connection: &Connection, path: &Path, named: &str) -> Result<usize, Error> {
    let fail = |why: String| unusable(path, named, &why);
    let read = |sql: &str| -> Result<i64, Error> {
        connection
            .query_row(sql, [], |row| row.get(0))
            .map_err(|err| fail(not_sqlite(&err)))
    };
    let application = read("PRAGMA application_id")?;
    let tables = read("SELECT count(*) FROM sqlite_schema")?;
    if application != i64::from(APPLICATION_ID) && (tables > 0 || application != 0) {
        return Err(fail(
            "a SQLite database of another application, not this receiver's state".to_owned(),
        ));
    }
    let version = usize::try_from(read("PRAGMA user_version")?).unwrap_or(usize::MAX);
    if version > SCHEMA_VERSION {
        return Err(fail(format!(
            "written by a newer coveralls-finish (schema {version}; this one knows up to \
             {SCHEMA_VERSION})"
        )));
    }
    let check: String = connection
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .map_err(|err| fail(not_sqlite(&err)))?;
    if check != "ok" {
        return Err(fail(format!("corrupt (quick_check: {check})")));
    }
    Ok(version)
}

/// [`check`] the file, then bring it to [`SCHEMA_VERSION`], one migration a transaction.
fn migrate(connection: &Connection, path: &Path, named: &str) -> Result<(), Error> {
    let version = check(connection, path, named)?;
    let fail = |why: String| unusable(path, named, &why);
    // Kept in the file: every connection to it writes ahead.
    connection
        .execute_batch("PRAGMA journal_mode = WAL")
        .map_err(|err| fail(err.to_string()))?;
    for (from, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        let to = from + 1;
        let script = format!(
            "BEGIN IMMEDIATE; {migration}; PRAGMA application_id = {APPLICATION_ID}; \
             PRAGMA user_version = {to}; COMMIT;"
        );
        connection
            .execute_batch(&script)
            .map_err(|err| fail(format!("migrating the schema from {from} to {to}: {err}")))?;
    }
    Ok(())
}

/// The writer: the one connection that changes the store.
struct Writer {
    connection: Connection,
    /// Rows in the store, kept as it changes (the `deliveries` command may drop some
    /// besides: a prune counts afresh).
    rows: i64,
    cap: i64,
    commits: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, queue: Receiver<Op>) {
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    /// Apply every operation of the batch in one transaction; answer each once it is
    /// committed, or answer all with the error if the commit fails.
    fn commit(&mut self, batch: Vec<Op>) {
        let rows_before = self.rows;
        let done = self.apply(&batch);
        let results = match done {
            Ok(results) => results,
            Err(err) => {
                self.rows = rows_before;
                let why = format!("the store could not commit: {err}");
                batch
                    .iter()
                    .map(|_| Err(Error::unavailable(&why)))
                    .collect()
            }
        };
        for (op, result) in batch.into_iter().zip(results) {
            match (op, result) {
                (Op::Record(_, answer), result) => {
                    let _ = answer.send(result.map(|done| done.recorded.expect("recorded")));
                }
                (Op::Settle(_, _, answer), result) => {
                    let _ = answer.send(result.map(|_| ()));
                }
                (Op::Prune(_, answer) | Op::Release(_, answer), result) => {
                    let _ = answer.send(result.map(|done| done.changed));
                }
            }
        }
    }

    fn apply(&mut self, batch: &[Op]) -> rusqlite::Result<Vec<Result<Done, Error>>> {
        let transaction = self.connection.transaction()?;
        let mut results = Vec::with_capacity(batch.len());
        for op in batch {
            results.push(match op {
                Op::Record(delivery, _) => {
                    let rows = (&mut self.rows, self.cap);
                    record(&transaction, delivery, rows).map(|recorded| Done {
                        recorded: Some(recorded),
                        changed: 0,
                    })
                }
                Op::Settle(id, outcome, _) => settle(&transaction, *id, outcome).map(|()| Done {
                    recorded: None,
                    changed: 0,
                }),
                Op::Prune(before, _) => {
                    prune(&transaction, *before, &mut self.rows).map(|changed| Done {
                        recorded: None,
                        changed,
                    })
                }
                Op::Release(projects, _) => release(&transaction, projects).map(|changed| Done {
                    recorded: None,
                    changed,
                }),
            });
        }
        transaction.commit()?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(results)
    }
}

/// What one operation of a batch came to, before the commit makes it true.
struct Done {
    recorded: Option<Recorded>,
    /// Rows pruned or released.
    changed: usize,
}

/// Record `delivery` unless its key is there already; `rows` counts the store's rows, which
/// may not pass `cap`.
fn record(
    transaction: &Transaction,
    delivery: &NewDelivery,
    (rows, cap): (&mut i64, i64),
) -> Result<Recorded, Error> {
    let sql = |err: rusqlite::Error| Error::unavailable(format!("recording a delivery: {err}"));
    let key = params![
        delivery.source,
        delivery.project,
        delivery.build,
        delivery.attempt
    ];
    let existing = select(
        transaction,
        "WHERE source = ?1 AND project = ?2 AND build = ?3 AND attempt = ?4",
        key,
    )
    .map_err(sql)?;
    if let Some(row) = existing.into_iter().next() {
        return Ok(Recorded::Duplicate(row));
    }
    if *rows >= cap {
        return Err(Error::unavailable(format!(
            "the store holds {cap} deliveries, its most; refusing new ones until closed ones \
             are pruned or failed ones dropped"
        )));
    }
    let now = now_ms();
    transaction
        .execute(
            "INSERT INTO deliveries (source, project, build, attempt, request, state, \
             received_at, next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6)",
            params![
                delivery.source,
                delivery.project,
                delivery.build,
                delivery.attempt,
                delivery.request,
                now
            ],
        )
        .map_err(sql)?;
    *rows += 1;
    let id = transaction.last_insert_rowid();
    Ok(Recorded::New(Row {
        id,
        source: delivery.source.to_owned(),
        project: delivery.project.clone(),
        build: delivery.build.clone(),
        attempt: delivery.attempt.clone(),
        request: delivery.request.clone(),
        state: State::Pending,
        attempts: 0,
        received_at: now,
        next_attempt_at: Some(now),
        last_error: None,
        url: None,
        jobs: None,
    }))
}

fn settle(transaction: &Transaction, id: i64, outcome: &Settle) -> Result<(), Error> {
    let now = now_ms();
    let changed = match outcome {
        Settle::Closed { url, jobs } => transaction.execute(
            "UPDATE deliveries SET state = 'closed', attempts = attempts + 1, closed_at = ?2, \
             next_attempt_at = NULL, url = ?3, jobs = ?4, last_error = NULL WHERE id = ?1",
            params![
                id,
                now,
                url.as_deref().map(|url| cut(url, MAX_TEXT)),
                jobs.and_then(|jobs| i64::try_from(jobs).ok())
            ],
        ),
        Settle::Retry { error, next } => transaction.execute(
            "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = ?2, \
             last_error = ?3 WHERE id = ?1 AND state = 'pending'",
            params![id, next, cut(error, MAX_TEXT)],
        ),
        Settle::Failed { error } => transaction.execute(
            "UPDATE deliveries SET state = 'failed', attempts = attempts + 1, \
             next_attempt_at = NULL, last_error = ?2 WHERE id = ?1",
            params![id, cut(error, MAX_TEXT)],
        ),
    };
    changed
        .map(|_| ())
        .map_err(|err| Error::unavailable(format!("recording an attempt: {err}")))
}

fn release(transaction: &Transaction, projects: &[String]) -> Result<usize, Error> {
    let projects = serde_json::to_string(projects).expect("names serialise");
    transaction
        .execute(
            "UPDATE deliveries SET next_attempt_at = ?1 WHERE state = 'pending' \
             AND next_attempt_at > ?1 AND project IN (SELECT value FROM json_each(?2))",
            params![now_ms(), projects],
        )
        .map_err(|err| Error::unavailable(format!("releasing closes: {err}")))
}

fn prune(transaction: &Transaction, before: i64, rows: &mut i64) -> Result<usize, Error> {
    let sql = |err: rusqlite::Error| Error::unavailable(format!("pruning: {err}"));
    let pruned = transaction
        .execute(
            "DELETE FROM deliveries WHERE state = 'closed' AND closed_at < ?1",
            params![before],
        )
        .map_err(sql)?;
    *rows = transaction
        .query_row("SELECT count(*) FROM deliveries", [], |row| row.get(0))
        .map_err(sql)?;
    Ok(pruned)
}

const COLUMNS: &str = "id, source, project, build, attempt, request, state, attempts, \
                       received_at, next_attempt_at, last_error, url, jobs";

/// Rows matching `filter` (a `WHERE …` clause and what follows it).
pub fn select(
    connection: &Connection,
    filter: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<Row>> {
    let mut statement =
        connection.prepare_cached(&format!("SELECT {COLUMNS} FROM deliveries {filter}"))?;
    let rows = statement.query_map(params, |row| {
        let state: String = row.get(6)?;
        Ok(Row {
            id: row.get(0)?,
            source: row.get(1)?,
            project: row.get(2)?,
            build: row.get(3)?,
            attempt: row.get(4)?,
            request: row.get(5)?,
            state: match state.as_str() {
                "closed" => State::Closed,
                "failed" => State::Failed,
                _ => State::Pending,
            },
            attempts: row.get(7)?,
            received_at: row.get(8)?,
            next_attempt_at: row.get(9)?,
            last_error: row.get(10)?,
            url: row.get(11)?,
            jobs: row.get(12)?,
        })
    })?;
    rows.collect()
}

pub fn counts(connection: &Connection) -> rusqlite::Result<Counts> {
    connection
        .query_row(
            "SELECT count(*) FILTER (WHERE state = 'pending'), \
             count(*) FILTER (WHERE state = 'failed'), \
             min(received_at) FILTER (WHERE state = 'pending') FROM deliveries",
            [],
            |row| {
                Ok(Counts {
                    pending: row.get(0)?,
                    failed: row.get(1)?,
                    oldest_pending: row.get(2)?,
                })
            },
        )
        .optional()
        .map(Option::unwrap_or_default)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<T>(future: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    fn delivery(build: &str, attempt: &str) -> NewDelivery {
        NewDelivery {
            source: "circleci",
            project: "api".to_owned(),
            build: build.to_owned(),
            attempt: attempt.to_owned(),
            request: format!(r#"{{"number":"{build}"}}"#),
        }
    }

    fn new_id(recorded: Result<Recorded, Error>) -> i64 {
        match recorded.unwrap() {
            Recorded::New(row) => row.id,
            Recorded::Duplicate(row) => panic!("a duplicate of {}", row.id),
        }
    }

    fn open_error(path: &Path) -> String {
        match Store::open(path, "--state") {
            Ok(_) => panic!("{} opened", path.display()),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn a_delivery_is_recorded_once_per_build_and_attempt_and_kept_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite3");
        let first = {
            let store = Store::open(&path, "--state").unwrap();
            let first = new_id(block_on(store.record(delivery("wf-1", ""))));
            let again = block_on(store.record(delivery("wf-1", ""))).unwrap();
            assert!(matches!(again, Recorded::Duplicate(ref row) if row.id == first));
            new_id(block_on(store.record(delivery("wf-1", "2"))));
            let counts = store.counts().unwrap();
            assert_eq!((counts.pending, counts.failed), (2, 0));
            assert!(counts.oldest_pending.is_some());
            first
        };
        let store = Store::open(&path, "--state").unwrap();
        let again = block_on(store.record(delivery("wf-1", ""))).unwrap();
        assert!(matches!(again, Recorded::Duplicate(ref row) if row.id == first));
        assert_eq!(store.counts().unwrap().pending, 2);
    }

    #[test]
    fn attempts_are_settled_and_only_due_rows_are_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.sqlite3"), "--state").unwrap();
        let [closed, retried, failed] =
            ["1", "2", "3"].map(|build| new_id(block_on(store.record(delivery(build, "")))));
        let now = now_ms();
        assert_eq!(store.due(now, now, 10).unwrap().len(), 3);
        let url = "https://coveralls.io/builds/1".to_owned() + &"x".repeat(2000);
        let settled = [
            (
                closed,
                Settle::Closed {
                    url: Some(url),
                    jobs: Some(4),
                },
            ),
            (
                retried,
                Settle::Retry {
                    error: "503".into(),
                    next: now + 60_000,
                },
            ),
            (
                failed,
                Settle::Failed {
                    error: "422 no build matching".into(),
                },
            ),
        ];
        for (id, outcome) in settled {
            block_on(store.settle(id, outcome)).unwrap();
        }
        assert!(store.due(now, now, 10).unwrap().is_empty());
        assert!(
            store
                .due(now + 59_999, now + 59_999, 10)
                .unwrap()
                .is_empty()
        );
        let later = store.due(now + 60_000, now + 60_000, 10).unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!((later[0].id, later[0].attempts), (retried, 1));
        assert_eq!(later[0].last_error.as_deref(), Some("503"));
        let counts = store.counts().unwrap();
        assert_eq!((counts.pending, counts.failed), (1, 1));
        let reader = store.read();
        let rows = select(&reader, "WHERE id = ?1", [closed]).unwrap();
        assert_eq!(rows[0].state, State::Closed);
        assert_eq!(rows[0].jobs, Some(4));
        let kept = rows[0].url.as_deref().unwrap();
        assert_eq!(
            kept.chars().count(),
            MAX_TEXT + 1,
            "a long url is cut short"
        );
    }

    #[test]
    fn a_fresh_row_not_attempted_yet_is_left_to_its_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.sqlite3"), "--state").unwrap();
        let id = new_id(block_on(store.record(delivery("1", ""))));
        let now = now_ms();
        let fresh = now - 2_000;
        assert!(store.due(now, fresh, 10).unwrap().is_empty());
        assert_eq!(store.due(now + 2_001, now + 1, 10).unwrap()[0].id, id);
        let retry = Settle::Retry {
            error: "503".into(),
            next: now,
        };
        block_on(store.settle(id, retry)).unwrap();
        assert_eq!(
            store.due(now, fresh, 10).unwrap()[0].id,
            id,
            "attempted: due"
        );
    }

    #[test]
    fn past_the_cap_deliveries_are_refused_until_closed_ones_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with_cap(&dir.path().join("s.sqlite3"), "--state", 2).unwrap();
        let first = new_id(block_on(store.record(delivery("1", ""))));
        new_id(block_on(store.record(delivery("2", ""))));
        let refused = block_on(store.record(delivery("3", ""))).unwrap_err();
        assert!(refused.retryable(), "{refused}");
        assert!(
            refused.to_string().contains("holds 2 deliveries, its most"),
            "{refused}"
        );
        let duplicate = block_on(store.record(delivery("1", ""))).unwrap();
        assert!(
            matches!(duplicate, Recorded::Duplicate(_)),
            "a duplicate is still known"
        );
        let closed = Settle::Closed {
            url: None,
            jobs: None,
        };
        block_on(store.settle(first, closed)).unwrap();
        assert_eq!(block_on(store.prune(now_ms() + 1)).unwrap(), 1);
        new_id(block_on(store.record(delivery("3", ""))));
    }

    #[test]
    fn a_second_receiver_is_refused_and_told_who_holds_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite3");
        let _first = Store::open(&path, "--state").unwrap();
        let err = open_error(&path);
        let pid = std::process::id();
        assert!(err.contains("in use by another receiver"), "{err}");
        assert!(err.contains(&format!("process {pid} holds")), "{err}");
        assert!(err.contains("s.sqlite3"), "{err}");
    }

    #[test]
    fn files_that_are_not_this_receivers_are_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a database, just words ".repeat(200)).unwrap();
        let foreign = dir.path().join("foreign.sqlite3");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch(
                "CREATE TABLE photos (id INTEGER PRIMARY KEY); INSERT INTO photos VALUES (1);",
            )
            .unwrap();
        let newer = dir.path().join("newer.sqlite3");
        Connection::open(&newer)
            .unwrap()
            .execute_batch(&format!(
                "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 99; \
                 CREATE TABLE later (x);"
            ))
            .unwrap();
        let corrupt = dir.path().join("corrupt.sqlite3");
        drop(Store::open(&corrupt, "--state").unwrap());
        let mut bytes = std::fs::read(&corrupt).unwrap();
        let page = bytes.len() / 2;
        bytes[page..page + 512].fill(0xa5);
        std::fs::write(&corrupt, &bytes).unwrap();
        let cases = [
            (&text, "not a SQLite database"),
            (&foreign, "a SQLite database of another application"),
            (&newer, "written by a newer coveralls-finish (schema 99"),
            (&corrupt, "corrupt"),
        ];
        for (path, expected) in cases {
            let before = std::fs::read(path).unwrap();
            let err = open_error(path);
            assert!(err.contains(expected), "{}: {err}", path.display());
            assert!(
                err.starts_with(&format!("--state {}: ", path.display())),
                "{err}"
            );
            assert!(err.ends_with("the file is left as it is"), "{err}");
            assert_eq!(std::fs::read(path).unwrap(), before, "{}", path.display());
        }
    }

    #[test]
    fn an_unusable_path_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("s.sqlite3");
        let err = open_error(&path);
        assert!(
            err.starts_with(&format!("--state {}: ", path.display())),
            "{err}"
        );
        assert!(!path.exists());
    }

    #[test]
    fn a_new_file_gets_the_current_schema_and_the_receivers_mark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite3");
        drop(Store::open(&path, "--state").unwrap());
        let connection = Connection::open(&path).unwrap();
        let pragma = |name: &str| -> i64 {
            connection
                .query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
                .unwrap()
        };
        assert_eq!(pragma("user_version"), SCHEMA_VERSION as i64);
        assert_eq!(pragma("application_id"), i64::from(APPLICATION_ID));
        let mode: String = connection
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
