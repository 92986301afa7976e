//! `coveralls-finish serve` on a free loopback port, its log collected as it runs and checked
//! for secrets when the test is done with it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{Server, binary};

/// The secrets the usual receiver is started with.
pub const SECRET: &str = "circle-webhook-secret-7f3a";
pub const MAGNUM: &str = "magnum-hook-secret-91c2";
pub const REPO_TOKEN: &str = "repo-token-55aa66bb";

pub struct Receiver {
    child: Child,
    pub url: String,
    log: Arc<Mutex<String>>,
    reading: Option<JoinHandle<()>>,
    agent: ureq::Agent,
    /// Never to appear in the log: every `*TOKEN` and `*SECRET` variable it was given.
    secrets: Vec<String>,
    /// Where its projects file is, if it has one.
    _projects: Option<tempfile::TempDir>,
}

impl Receiver {
    pub fn start(env: &[(&str, &str)], args: &[&str]) -> Receiver {
        let mut command = binary();
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args);
        Receiver::spawn(command, env)
    }

    /// A receiver with a projects file of this text (`{endpoint}` stands for `coveralls`).
    pub fn with_projects(coveralls: &Server, toml: &str, env: &[(&str, &str)]) -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("projects.toml");
        std::fs::write(&path, toml.replace("{endpoint}", &coveralls.url())).unwrap();
        let mut receiver = Receiver::start(env, &["--config", path.to_str().unwrap()]);
        receiver._projects = Some(dir);
        receiver
    }

    /// The same, under an open-file limit of `files` (the shell's `ulimit -n`).
    #[cfg(unix)]
    pub fn start_with_file_limit(files: u32, env: &[(&str, &str)]) -> Receiver {
        let mut command = std::process::Command::new("/bin/sh");
        command.env_clear().arg("-c").arg(format!(
            "ulimit -n {files} && exec \"$0\" serve --listen 127.0.0.1:0"
        ));
        command.arg(env!("CARGO_BIN_EXE_coveralls-finish"));
        Receiver::spawn(command, env)
    }

    fn spawn(mut command: std::process::Command, env: &[(&str, &str)]) -> Receiver {
        command
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let log = Arc::new(Mutex::new(String::new()));
        let mut url = None;
        let mut line = String::new();
        while stderr.read_line(&mut line).unwrap() > 0 {
            log.lock().unwrap().push_str(&line);
            if let Some((_, addr)) = line.trim_end().split_once("listening on ") {
                url = Some(addr.to_owned());
                break;
            }
            line.clear();
        }
        let Some(url) = url else {
            let status = child.wait().unwrap();
            panic!(
                "the receiver did not start ({status}):\n{}",
                log.lock().unwrap()
            );
        };
        let collected = Arc::clone(&log);
        let reading = thread::spawn(move || {
            let mut line = String::new();
            while stderr.read_line(&mut line).unwrap_or(0) > 0 {
                collected.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // The receiver is on loopback: whatever the test machine's proxy settings say.
            .proxy(None)
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
            reading: Some(reading),
            agent,
            secrets,
            _projects: None,
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
        let mut request = self.agent.post(&format!("{}{path}", self.url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request.send(body).unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// A CircleCI delivery of `body`, signed with `secret`.
    pub fn circleci(&self, secret: &str, event: &str, body: &[u8]) -> (u16, serde_json::Value) {
        let signature = format!("v1={}", sign(secret, body));
        self.post(
            "/circleci",
            &[
                ("content-type", "application/json"),
                ("circleci-event-type", event),
                ("circleci-signature", &signature),
            ],
            body,
        )
    }

    /// Requests the receiver is answering, this one included, as `/healthz` says.
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

    /// Wait for the receiver to exit; its exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// The lowercase hex HMAC-SHA256 of `body` keyed with `secret`, as CircleCI signs.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A fixture from `tests/fixtures/`.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The workflow-completed fixture with its ids replaced, as another delivery would carry.
pub fn workflow_event(event_id: &str, workflow_id: &str, slug: &str) -> Vec<u8> {
    let mut event: serde_json::Value =
        serde_json::from_slice(&fixture("circleci_workflow_completed_github_oauth.json")).unwrap();
    event["id"] = event_id.into();
    event["workflow"]["id"] = workflow_id.into();
    event["project"]["slug"] = slug.into();
    event["project"]["id"] = format!("id-of-{slug}").into();
    serde_json::to_vec(&event).unwrap()
}
