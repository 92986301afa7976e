//! `coveralls-finish serve` on a free loopback port, its log collected as it runs and checked
//! for secrets when the test is done with it; and how the tests talk to it: the senders of
//! each source, the one signer, and a raw TCP client. Only the serve test binary has it.

#[path = "raw.rs"]
mod raw;
#[path = "senders.rs"]
mod senders;
#[path = "sign.rs"]
mod sign;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStderr, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::support::{Server, binary};
pub use raw::{Answer, Raw, head, resident_kib};
pub use senders::{
    GitLabHook, circleci_request, delivery_id, fixture, now, pipeline_hook, workflow_event,
    workflow_run,
};
pub use sign::{sign, sign_standard};

/// The secrets the usual receiver is started with.
pub const SECRET: &str = "circle-webhook-secret-7f3a";
pub const MAGNUM: &str = "magnum-hook-secret-91c2";
pub const REPO_TOKEN: &str = "repo-token-55aa66bb";

/// The receiver's standard error, as the tests read it.
type Log = BufReader<ChildStderr>;

/// How long a receiver may take to say where it listens.
const START_LIMIT: Duration = Duration::from_secs(20);
/// How long one request to it may take, from connecting to the last byte of the answer.
const REQUEST_LIMIT: Duration = Duration::from_secs(30);

pub struct Receiver {
    child: Child,
    pub url: String,
    log: Arc<Mutex<String>>,
    reading: Option<JoinHandle<Option<Log>>>,
    /// Its standard error, where the test leaves it unread (a stalled log).
    unread: Option<Log>,
    agent: ureq::Agent,
    /// Never to appear in the log: every `*TOKEN` and `*SECRET` variable it was given.
    secrets: Vec<String>,
    /// Where its projects file is, if it has one.
    _projects: Option<tempfile::TempDir>,
    /// Its state file's directory, unless the test gave it a state file of its own.
    _state: Option<tempfile::TempDir>,
}

/// A state file of its own, in a directory that goes with the receiver, unless the test
/// names one.
fn own_state(
    command: &mut std::process::Command,
    env: &[(&str, &str)],
) -> Option<tempfile::TempDir> {
    if env
        .iter()
        .any(|(name, _)| *name == "COVERALLS_FINISH_STATE")
    {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    command.env("COVERALLS_FINISH_STATE", dir.path().join("state.sqlite3"));
    Some(dir)
}

impl Receiver {
    pub fn start(env: &[(&str, &str)], args: &[&str]) -> Receiver {
        let mut command = binary();
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args);
        Receiver::spawn(command, env, true)
    }

    /// A receiver with a projects file of this text (`{endpoint}` stands for `coveralls`).
    pub fn with_projects(coveralls: &Server, toml: &str, env: &[(&str, &str)]) -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("projects.toml");
        std::fs::write(&path, toml.replace("{endpoint}", &coveralls.url())).unwrap();
        Receiver::start(env, &["--config", path.to_str().unwrap()]).keeping(dir)
    }

    /// A receiver under an open-file limit of `files` (the shell's `ulimit -n`), with `args`.
    #[cfg(unix)]
    pub fn start_with_file_limit(files: u32, env: &[(&str, &str)], args: &[&str]) -> Receiver {
        let mut command = std::process::Command::new("/bin/sh");
        command.env_clear().arg("-c").arg(format!(
            "ulimit -n {files} && exec \"$0\" serve --listen 127.0.0.1:0 \"$@\""
        ));
        command
            .arg(env!("CARGO_BIN_EXE_coveralls-finish"))
            .args(args);
        Receiver::spawn(command, env, true)
    }

    /// A receiver whose standard error nobody reads once it has said where it listens, as
    /// a stalled journald or a stuck pipe would leave it; [`Receiver::resume_log`] reads on.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub fn with_unread_log(env: &[(&str, &str)]) -> Receiver {
        let mut command = binary();
        command.args(["serve", "--listen", "127.0.0.1:0"]);
        Receiver::spawn(command, env, false)
    }

    /// Read its log again, from where it was left unread.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub fn resume_log(&mut self) {
        let stderr = self.unread.take().expect("a log left unread");
        let log = Arc::clone(&self.log);
        let (listening, _) = mpsc::channel();
        self.reading = Some(thread::spawn(move || {
            collect(stderr, &log, listening, true)
        }));
    }

    /// Keep `dir` (a projects file's) for as long as the receiver runs.
    pub fn keeping(mut self, dir: tempfile::TempDir) -> Self {
        self._projects = Some(dir);
        self
    }

    fn spawn(mut command: std::process::Command, env: &[(&str, &str)], read_log: bool) -> Receiver {
        let state = own_state(&mut command, env);
        command
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let log = Arc::new(Mutex::new(String::new()));
        let (listening, address) = mpsc::channel();
        let reading = {
            let log = Arc::clone(&log);
            thread::spawn(move || collect(stderr, &log, listening, read_log))
        };
        let Ok(url) = address.recv_timeout(START_LIMIT) else {
            let _ = child.kill();
            let status = child.wait().unwrap();
            let _ = reading.join();
            panic!(
                "the receiver did not start within {START_LIMIT:?} ({status}):\n{}",
                log.lock().unwrap()
            );
        };
        // Left unread from here on: the reader stopped after the line that said where.
        let (reading, unread) = match read_log {
            true => (Some(reading), None),
            false => (None, reading.join().unwrap()),
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // The receiver is on loopback: whatever the test machine's proxy settings say.
            .proxy(None)
            .timeout_global(Some(REQUEST_LIMIT))
            .build()
            .new_agent();
        let secrets = env
            .iter()
            .filter(|(name, _)| name.ends_with("TOKEN") || name.ends_with("SECRET"))
            .map(|(_, value)| value.to_string())
            .collect();
        Receiver {
            child,
            url,
            log,
            reading,
            unread,
            agent,
            secrets,
            _projects: None,
            _state: state,
        }
    }

    /// The usual receiver: one project from the environment, both sources on, in front of
    /// `coveralls`; `extra` variables added or overriding.
    pub fn in_front_of(coveralls: &Server, extra: &[(&str, &str)]) -> Receiver {
        let endpoint = coveralls.url();
        let mut env = vec![
            ("COVERALLS_REPO_TOKEN", REPO_TOKEN),
            ("COVERALLS_ENDPOINT", endpoint.as_str()),
            ("COVERALLS_CARRYFORWARD_FLAGS", "unit,e2e"),
            ("CIRCLECI_WEBHOOK_SECRET", SECRET),
            ("MAGNUM_HOOK_SECRET", MAGNUM),
        ];
        env.extend_from_slice(extra);
        Receiver::start(&env, &[])
    }

    /// One more value that must never be logged (a token written in a projects file).
    pub fn secret(mut self, secret: &str) -> Self {
        self.secrets.push(secret.to_owned());
        self
    }

    /// The address it listens on, for raw connections.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.url.trim_start_matches("http://").parse().unwrap()
    }

    /// POST `body` to `path` with `headers`; the status and the JSON answer.
    pub fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, serde_json::Value) {
        self.try_post(path, headers, body).unwrap()
    }

    /// The same, or the error where no answer came (the receiver is gone: a crash test).
    pub fn try_post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, serde_json::Value), ureq::Error> {
        let mut request = self.agent.post(&format!("{}{path}", self.url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request.send(body)?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string()?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        ))
    }

    /// Requests the receiver is answering, this one included, as `/healthz` says.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub fn in_flight(&self) -> u64 {
        let mut response = self
            .agent
            .get(&format!("{}/healthz", self.url))
            .call()
            .unwrap();
        let text = response.body_mut().read_to_string().unwrap();
        let health: serde_json::Value = serde_json::from_str(&text).unwrap();
        health["in_flight"].as_u64().expect("in_flight in /healthz")
    }

    /// GET `path`: the status and the body as text.
    pub fn fetch(&self, path: &str) -> (u16, String) {
        let mut response = self
            .agent
            .get(&format!("{}{path}", self.url))
            .call()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    }

    /// `/healthz`, read.
    pub fn health(&self) -> serde_json::Value {
        let (status, text) = self.fetch("/healthz");
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Wait until `/healthz` says nothing is pending, at most `limit`.
    pub fn wait_until_nothing_pending(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            let health = self.health();
            if health["pending"] == 0 {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "still pending after {limit:?}: {health}\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn get(&self, path: &str) -> u16 {
        let response = self
            .agent
            .get(&format!("{}{path}", self.url))
            .call()
            .unwrap();
        response.status().as_u16()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log once it holds `text`, waiting for it a while: the receiver writes a line
    /// before it answers, but the pipe may not have carried it here yet.
    pub fn log_with(&self, text: &str) -> String {
        let started = Instant::now();
        loop {
            let log = self.log();
            if log.contains(text) {
                return log;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the log never said {text:?}:\n{log}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The first log line that starts with `prefix`, waiting for it as [`Receiver::log_with`].
    pub fn log_line(&self, prefix: &str) -> String {
        let log = self.log_with(&format!("\n{prefix}"));
        let line = log.lines().find(|l| l.starts_with(prefix));
        line.expect("a line that starts with it").to_owned()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for the receiver to exit, at most `limit`; its exit code.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        self.exit_status(limit).and_then(|status| status.code())
    }

    /// Wait for the receiver to end, at most `limit`, whether it exited or was killed.
    pub fn exit_status(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if started.elapsed() >= limit {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Collect the log as it comes; send where the receiver listens when it says. Unless
/// `read_on`, stop there and give the rest back unread.
fn collect<R: BufRead>(
    mut stderr: R,
    log: &Mutex<String>,
    listening: mpsc::Sender<String>,
    read_on: bool,
) -> Option<R> {
    let mut listening = Some(listening);
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap_or(0) > 0 {
        log.lock().unwrap().push_str(&line);
        if let Some((_, address)) = line.trim_end().split_once("listening on ") {
            if let Some(listening) = listening.take() {
                let _ = listening.send(address.to_owned());
                if !read_on {
                    return Some(stderr);
                }
            }
        }
        line.clear();
    }
    None
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        drop(self.unread.take());
        if let Some(reading) = self.reading.take() {
            let _ = reading.join();
        }
        let log = self.log();
        for secret in &self.secrets {
            if log.contains(secret.as_str()) && !thread::panicking() {
                panic!("a secret is in the receiver's log:\n{log}");
            }
        }
    }
}
