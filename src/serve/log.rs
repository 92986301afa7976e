//! The receiver's log: one line a delivery, on standard error. Every field that a sender
//! controls is escaped and cut short, so that a line can neither be forged nor carry a
//! terminal escape; secrets are redacted like everywhere else, and every line is escaped
//! once more on its way out, whatever wrote it (Coveralls' text in a debug line too).
//!
//! Lines go to one writer thread through a queue of bounded size: a standard error that
//! nobody reads (a stalled journald, a stuck pipe) never blocks the runtime. Past the bound,
//! lines are dropped and counted, and the count is logged once the writer catches up.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::App;
use super::reply::Reply;

/// The longest a field may be in a log line.
const MAX_FIELD: usize = 200;
/// The longest line written (a debug line of a long answer, say); the rest is cut.
const MAX_LINE: usize = 4096;
/// The most the queue holds, in bytes: past it, new lines are dropped.
const MAX_QUEUED: usize = 1 << 20;

/// The queue to the writer thread.
pub struct Log {
    state: Mutex<Queue>,
    /// The writer waits on it for lines; [`Log::finish`] for the writer to be done.
    changed: Condvar,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Queue {
    lines: VecDeque<String>,
    bytes: usize,
    /// No more lines: the writer ends once it has written these.
    closing: bool,
    done: bool,
}

impl Log {
    /// A log to standard error, written by a thread of its own.
    pub fn to_stderr() -> std::io::Result<Arc<Log>> {
        Log::to(std::io::stderr())
    }

    pub fn to(mut out: impl Write + Send + 'static) -> std::io::Result<Arc<Log>> {
        let log = Arc::new(Log {
            state: Mutex::default(),
            changed: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        let writer = Arc::clone(&log);
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writer.write_all(&mut out))?;
        Ok(log)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `line` (without its newline), escaped and cut short; dropped and counted where
    /// the queue is full, unless it is one to `keep` (the lines at start and at the stop,
    /// bounded by the settings).
    pub fn push(&self, line: &str, keep: bool) {
        let line = text(line, MAX_LINE);
        let mut queue = self.lock();
        if !keep && queue.bytes + line.len() > MAX_QUEUED {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.bytes += line.len();
        queue.lines.push_back(line);
        drop(queue);
        self.changed.notify_all();
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Write what is queued, within `limit`: whether all of it was written (standard error
    /// may take nothing: then the writer is left as it is).
    pub fn finish(&self, limit: Duration) -> bool {
        let mut queue = self.lock();
        queue.closing = true;
        self.changed.notify_all();
        let waited = self.changed.wait_timeout_while(queue, limit, |q| !q.done);
        let (queue, _) = waited.unwrap_or_else(|p| p.into_inner());
        queue.done
    }

    /// The writer thread: every line queued, in batches, with a line for those dropped
    /// each time it catches up after drops, and one for all of them at the end.
    fn write_all(&self, out: &mut dyn Write) {
        let mut reported = 0;
        loop {
            let (batch, closing) = {
                let queue = self.lock();
                let mut queue = self
                    .changed
                    .wait_while(queue, |q| q.lines.is_empty() && !q.closing)
                    .unwrap_or_else(|p| p.into_inner());
                queue.bytes = 0;
                (std::mem::take(&mut queue.lines), queue.closing)
            };
            let mut text = String::new();
            for line in batch {
                text += &line;
                text.push('\n');
            }
            let dropped = self.dropped();
            if dropped > reported {
                let new = dropped - reported;
                text += &format!("log: {new} lines dropped while standard error was not read\n");
                reported = dropped;
            }
            if closing && self.lock().lines.is_empty() {
                if dropped > 0 {
                    text += &format!("log: in all, {dropped} lines dropped\n");
                }
                let _ = out.write_all(text.as_bytes());
                self.lock().done = true;
                self.changed.notify_all();
                return;
            }
            let _ = out.write_all(text.as_bytes());
        }
    }

    /// A writer for a [`crate::report::Reporter`]: each line it writes goes to the queue.
    pub fn writer(self: &Arc<Self>, keep: bool) -> LogWriter {
        LogWriter {
            log: Arc::clone(self),
            keep,
        }
    }
}

/// Lines written to it are queued to the log; a reporter writes one line a call (a newline
/// inside it is escaped with the rest: only the writer starts a line).
pub struct LogWriter {
    log: Arc<Log>,
    keep: bool,
}

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(bytes);
        self.log
            .push(text.strip_suffix('\n').unwrap_or(&text), self.keep);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a delivery's log line says beside its method, path and status, filled in as the
/// delivery is handled.
#[derive(Default)]
pub struct LogFields {
    pub event: Option<String>,
    pub id: Option<String>,
    pub project: Option<String>,
    pub build: Option<String>,
    pub outcome: Option<String>,
}

/// `text` as one log field: as it is when it is a plain token (an id, a slug, a number),
/// else quoted with every control character escaped; at most `max` characters.
pub fn field(text: &str, max: usize) -> String {
    let mut cut: String = text.chars().take(max).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    let plain = !cut.is_empty()
        && cut
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/@+#…".contains(c));
    if plain { cut } else { format!("{cut:?}") }
}

/// Text from elsewhere (Coveralls' answers, errors) as part of a log line: every control
/// character escaped, so that it can neither start a line nor drive a terminal; at most
/// `max` characters.
pub fn text(text: &str, max: usize) -> String {
    let mut line = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == max {
            line.push('…');
            break;
        }
        match c {
            c if c.is_control() => line.extend(c.escape_debug()),
            c => line.push(c),
        }
    }
    line
}

impl App {
    /// One line of the log, redacted; dropped if the log's queue is full.
    pub fn log_line(&self, text: &str) {
        let (mut out, mut err) = (std::io::sink(), self.log.writer(false));
        self.reporter(&mut out, &mut err).log(text);
    }

    /// A line that is never dropped: the few at start and at the stop.
    pub fn log_always(&self, text: &str) {
        let (mut out, mut err) = (std::io::sink(), self.log.writer(true));
        self.reporter(&mut out, &mut err).log(text);
    }

    pub fn log_delivery(
        &self,
        method: &hyper::Method,
        path: &str,
        reply: &Reply,
        fields: &LogFields,
        arrival: Instant,
    ) {
        let value = |value: &Option<String>| match value {
            Some(value) => field(value, MAX_FIELD),
            None => "-".to_owned(),
        };
        let outcome = fields.outcome.clone().unwrap_or_else(|| {
            let said = reply.body.get("error").or(reply.body.get("ignored"));
            said.and_then(Value::as_str).unwrap_or("ok").to_owned()
        });
        let outcome: String = outcome.chars().take(MAX_FIELD).collect();
        self.log_line(&format!(
            "{} {path} event={} id={} project={} build={} status={} outcome={outcome:?} ms={:.1}",
            field(method.as_str(), 32),
            value(&fields.event),
            value(&fields.id),
            value(&fields.project),
            value(&fields.build),
            reply.status,
            arrival.elapsed().as_secs_f64() * 1000.0,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_plain_or_quoted_and_escaped_and_short() {
        assert_eq!(field("fda08377-fe7e-46b1", 50), "fda08377-fe7e-46b1");
        assert_eq!(field("gh/acme/api", 50), "gh/acme/api");
        assert_eq!(
            field("x\nPOST /circleci status=200\u{1b}[2J", 100),
            r#""x\nPOST /circleci status=200\u{1b}[2J""#
        );
        assert_eq!(field("a b", 50), r#""a b""#);
        assert_eq!(field("", 50), r#""""#);
        assert_eq!(field(&"y".repeat(300), 5), "yyyyy…");
    }

    /// A standard error that takes nothing until it is let go.
    struct Stalled(Arc<(Mutex<bool>, Condvar)>, Arc<Mutex<Vec<u8>>>);

    impl Write for Stalled {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let (open, opened) = &*self.0;
            drop(
                opened
                    .wait_while(open.lock().unwrap(), |open| !*open)
                    .unwrap(),
            );
            self.1.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_log_drops_and_counts_lines_and_never_blocks() {
        let (gate, written) = (
            Arc::new((Mutex::new(false), Condvar::new())),
            Arc::default(),
        );
        let log = Log::to(Stalled(Arc::clone(&gate), Arc::clone(&written))).unwrap();
        let started = Instant::now();
        let line = "x".repeat(1000);
        for _ in 0..3000 {
            log.push(&line, false);
        }
        log.push("kept \u{1b}[2J", true);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "pushing blocked"
        );
        let dropped = log.dropped();
        assert!(dropped > 900 && dropped < 2100, "{dropped} dropped");
        assert!(
            !log.finish(Duration::from_millis(50)),
            "nothing can be written yet"
        );
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        assert!(log.finish(Duration::from_secs(5)));
        let written = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        assert_eq!(
            written.lines().filter(|l| *l == line).count() as u64,
            3000 - dropped
        );
        assert!(written.contains(&format!("log: {dropped} lines dropped while")));
        assert!(
            written.contains("kept \\u{1b}[2J\n"),
            "escaped on its way out"
        );
        assert!(written.ends_with(&format!("log: in all, {dropped} lines dropped\n")));
    }
}
