//! `coveralls-finish deliveries`: what the receiver's store holds that is not closed, and
//! the operator's two levers on it (queue again, drop). It talks to the file, not to the
//! receiver's port, so it works while the receiver runs; the store holds no token.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use rusqlite::{Connection, params};
use serde_json::{Value, json};

use super::log::field;
use super::store::{self, Row, SCHEMA_VERSION, State};
use crate::env::Env;
use crate::error::Error;
use crate::report::Reporter;
use crate::settings::{Flags, Key, Values};

/// What the operator asked for.
enum Action {
    List { json: bool },
    Retry(Vec<i64>),
    RetryFailed,
    Drop(Vec<i64>),
}

pub fn run(flags: &Flags, env: &Env, ui: &mut Reporter) -> Result<(), Error> {
    let values = Values::read(env, flags)?;
    let action = action(flags, &values)?;
    let (path, named) = store::state_path(&values, env)?;
    let connection = open(&path, named)?;
    match action {
        Action::List { json } => list(&connection, json, ui),
        Action::Retry(ids) => retry(&connection, &ids, ui),
        Action::RetryFailed => retry_failed(&connection, ui),
        Action::Drop(ids) => remove(&connection, &ids, ui),
    }
}

fn action(flags: &Flags, values: &Values) -> Result<Action, Error> {
    let yes = |key| crate::config::boolean(values, key);
    let operands: Vec<&str> = flags.operands.iter().map(String::as_str).collect();
    Ok(match operands.as_slice() {
        [] | ["list"] => Action::List {
            json: yes(Key::Json)?,
        },
        ["retry"] if yes(Key::Failed)? => Action::RetryFailed,
        ["retry", ids @ ..] if !ids.is_empty() => Action::Retry(parse_ids(ids)?),
        ["drop", ids @ ..] if !ids.is_empty() => Action::Drop(parse_ids(ids)?),
        _ => {
            return Err(Error::config(format!(
                "deliveries {}: expected list, retry ID..., retry --failed or drop ID...; see \
                 deliveries --help",
                operands.join(" ")
            )));
        }
    })
}

/// The store, which must exist already and be of this build's schema: this command creates
/// and migrates nothing.
fn open(path: &Path, named: &str) -> Result<Connection, Error> {
    if !path.exists() {
        return Err(Error::config(format!(
            "{named} {}: no such file; the receiver creates it when it starts",
            path.display()
        )));
    }
    let connection = store::connect(path, named, false)?;
    let version = store::check(&connection, path, named)?;
    if version < SCHEMA_VERSION {
        return Err(Error::config(format!(
            "{named} {}: schema {version}, older than this coveralls-finish's \
             ({SCHEMA_VERSION}); start its receiver once to bring the file up to date",
            path.display()
        )));
    }
    Ok(connection)
}

fn parse_ids(ids: &[&str]) -> Result<Vec<i64>, Error> {
    ids.iter()
        .map(|id| {
            id.parse::<i64>().map_err(|_| {
                Error::config(format!(
                    "{:?} is not a delivery id (a whole number)",
                    field(id, 40)
                ))
            })
        })
        .collect()
}

fn sql(err: rusqlite::Error) -> Error {
    Error::unavailable(format!("reading the store: {err}"))
}

fn list(connection: &Connection, json: bool, ui: &mut Reporter) -> Result<(), Error> {
    let rows =
        store::select(connection, "WHERE state != 'closed' ORDER BY id", params![]).map_err(sql)?;
    if json {
        let rows: Vec<Value> = rows.iter().map(to_json).collect();
        ui.result(&serde_json::to_string_pretty(&rows).expect("JSON serialises"));
        return Ok(());
    }
    if rows.is_empty() {
        ui.result("no deliveries pending or failed");
        return Ok(());
    }
    ui.result(
        "id\tsource\tproject\tbuild\tstate\tattempts\treceived_at\tnext_attempt_at\tlast_error",
    );
    for row in &rows {
        ui.result(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            row.id,
            field(&row.source, 40),
            field(&row.project, 100),
            field(&row.build, 100),
            state(row.state),
            row.attempts,
            time(Some(row.received_at)),
            time(row.next_attempt_at),
            row.last_error
                .as_deref()
                .map_or("-".to_owned(), |e| field(e, 300)),
        ));
    }
    Ok(())
}

fn to_json(row: &Row) -> Value {
    json!({
        "id": row.id,
        "source": row.source,
        "project": row.project,
        "build": row.build,
        "attempt": (!row.attempt.is_empty()).then_some(&row.attempt),
        "state": state(row.state),
        "attempts": row.attempts,
        "received_at": time(Some(row.received_at)),
        "next_attempt_at": row.next_attempt_at.map(|at| time(Some(at))),
        "last_error": row.last_error,
    })
}

fn state(state: State) -> &'static str {
    match state {
        State::Pending => "pending",
        State::Closed => "closed",
        State::Failed => "failed",
    }
}

/// A time of the store (milliseconds since the epoch) in RFC 3339, UTC; `-` for none.
fn time(ms: Option<i64>) -> String {
    match ms.and_then(|ms| u64::try_from(ms).ok()) {
        Some(ms) => {
            let at = UNIX_EPOCH + Duration::from_millis(ms);
            humantime::format_rfc3339_seconds(at).to_string()
        }
        None => "-".to_owned(),
    }
}

/// Queue these deliveries again: one attempt, now.
fn retry(connection: &Connection, ids: &[i64], ui: &mut Reporter) -> Result<(), Error> {
    let now = store::now_ms();
    change(connection, ids, "queued again", ui, |id| {
        connection.execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = ?2 \
             WHERE id = ?1 AND state != 'closed'",
            params![id, now],
        )
    })
}

fn remove(connection: &Connection, ids: &[i64], ui: &mut Reporter) -> Result<(), Error> {
    change(connection, ids, "dropped", ui, |id| {
        connection.execute(
            "DELETE FROM deliveries WHERE id = ?1 AND state != 'closed'",
            params![id],
        )
    })
}

/// Change each id in one transaction; an id that is not pending or failed is an error, and
/// then nothing changes.
fn change(
    connection: &Connection,
    ids: &[i64],
    done: &str,
    ui: &mut Reporter,
    each: impl Fn(i64) -> rusqlite::Result<usize>,
) -> Result<(), Error> {
    let transaction = connection.unchecked_transaction().map_err(sql)?;
    let mut missing = Vec::new();
    for &id in ids {
        if each(id).map_err(sql)? == 0 {
            missing.push(id.to_string());
        }
    }
    if !missing.is_empty() {
        return Err(Error::config(format!(
            "no delivery {} is pending or failed; nothing changed",
            missing.join(", ")
        )));
    }
    transaction.commit().map_err(sql)?;
    ui.result(&format!("{} {done}", plural(ids.len())));
    Ok(())
}

fn retry_failed(connection: &Connection, ui: &mut Reporter) -> Result<(), Error> {
    let queued = connection
        .execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = ?1 \
             WHERE state = 'failed'",
            params![store::now_ms()],
        )
        .map_err(sql)?;
    ui.result(&format!("{} queued again", plural(queued)));
    Ok(())
}

fn plural(count: usize) -> String {
    match count {
        1 => "1 delivery".to_owned(),
        n => format!("{n} deliveries"),
    }
}
