//! A recording HTTP server on loopback that answers from a script, and a runner for the
//! built binary with an explicit environment.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What the server does with the next request.
#[derive(Clone, Debug)]
pub enum Reply {
    Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Read the request and never answer.
    Stall,
    /// Answer, but only after a while.
    Slow(Duration, Box<Reply>),
    /// Serve these files by path (200), anything else 404: fake release assets.
    Files(Arc<Vec<(String, Vec<u8>)>>),
}

pub fn json(status: u16, body: &str) -> Reply {
    Reply::Answer {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: body.into(),
    }
}

pub fn with_header(reply: Reply, name: &str, value: &str) -> Reply {
    match reply {
        Reply::Answer {
            status,
            mut headers,
            body,
        } => {
            headers.push((name.into(), value.into()));
            Reply::Answer {
                status,
                headers,
                body,
            }
        }
        other => other,
    }
}

pub const CLOSED: &str = r#"{"done":true,"url":"https://coveralls.io/builds/77","jobs":3}"#;

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("the request body is JSON")
    }
}

pub struct Server {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
}

impl Server {
    /// Answers the n-th request with the n-th reply; the last reply repeats.
    pub fn start(script: Vec<Reply>) -> Server {
        Server::start_with(script, None)
    }

    /// A server of files by path, like a release's download URLs.
    pub fn files(files: Vec<(String, Vec<u8>)>) -> Server {
        Server::start(vec![Reply::Files(Arc::new(files))])
    }

    /// The same over TLS, with a certificate for `localhost` from a private CA; returns
    /// the CA's PEM, which a client must trust to talk to it.
    pub fn start_tls(script: Vec<Reply>) -> (Server, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        (
            Server::start_with(script, Some(Arc::new(config))),
            ca_cert.pem(),
        )
    }

    fn start_with(script: Vec<Reply>, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        assert!(!script.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let next = Arc::new(AtomicUsize::new(0));
        let server_log = Arc::clone(&log);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, script, next) = (
                    Arc::clone(&server_log),
                    Arc::clone(&script),
                    Arc::clone(&next),
                );
                let tls = tls.clone();
                thread::spawn(move || match tls {
                    None => serve(stream, &log, &script, &next),
                    Some(config) => {
                        let connection = rustls::ServerConnection::new(config).unwrap();
                        let stream = rustls::StreamOwned::new(connection, stream);
                        serve(stream, &log, &script, &next)
                    }
                });
            }
        });
        Server { addr, log }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    /// The one request a test expected.
    pub fn only_request(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "{requests:#?}");
        requests.into_iter().next().unwrap()
    }
}

fn serve(
    stream: impl Read + Write,
    log: &Mutex<Vec<Recorded>>,
    script: &[Reply],
    next: &AtomicUsize,
) {
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader) {
        let stream = reader.get_mut();
        let connect = request.method == "CONNECT";
        let target = request.target.clone();
        log.lock().unwrap().push(request);
        if connect {
            // Act as a proxy that tunnels to itself: the next request arrives on this stream.
            let _ = stream.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
            let _ = stream.flush();
            continue;
        }
        let n = next.fetch_add(1, Ordering::SeqCst);
        let mut reply = &script[n.min(script.len() - 1)];
        if let Reply::Slow(delay, then) = reply {
            thread::sleep(*delay);
            reply = then;
        }
        let file;
        if let Reply::Files(files) = reply {
            file = match files.iter().find(|(path, _)| *path == target) {
                Some((_, body)) => Reply::Answer {
                    status: 200,
                    headers: vec![],
                    body: body.clone(),
                },
                None => Reply::Answer {
                    status: 404,
                    headers: vec![],
                    body: b"Not Found".to_vec(),
                },
            };
            reply = &file;
        }
        match reply {
            Reply::Slow(..) | Reply::Files(_) => unreachable!("one level of Slow or Files"),
            Reply::Stall => {
                thread::sleep(Duration::from_secs(20));
                return;
            }
            Reply::Answer {
                status,
                headers,
                body,
            } => {
                let mut head = format!(
                    "HTTP/1.1 {status} Scripted\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (name, value) in headers {
                    head += &format!("{name}: {value}\r\n");
                }
                let _ = stream.write_all(format!("{head}\r\n").as_bytes());
                let _ = stream.write_all(body);
                let _ = stream.flush();
                return;
            }
        }
    }
}

fn read_request(reader: &mut impl BufRead) -> Option<Recorded> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Recorded {
        method,
        target,
        headers,
        body: String::from_utf8(body).unwrap(),
    })
}

/// A port on which nothing listens.
pub fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// Variables for one case of a table-driven test.
pub type Vars<'a> = &'a [(&'a str, &'a str)];

pub const TOKEN: &str = "tok-9DhgwUv9YiJjkm6PP4c6DxBgeUiXObJjK";

/// The binary, run with exactly the environment given (nothing inherited).
#[derive(Default)]
pub struct Finish {
    env: Vec<(String, String)>,
    args: Vec<String>,
    github: Option<tempfile::TempDir>,
}

pub fn finish() -> Finish {
    Finish::default()
}

impl Finish {
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn envs(mut self, vars: &[(&str, &str)]) -> Self {
        for (name, value) in vars {
            self = self.env(name, value);
        }
        self
    }

    /// The usual: a token, a build number, the server as endpoint, quick retries.
    pub fn against(self, server: &Server) -> Self {
        self.env("COVERALLS_REPO_TOKEN", TOKEN)
            .env("COVERALLS_ENDPOINT", &server.url())
            .env("COVERALLS_SERVICE_NUMBER", "42")
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Run as a GitHub Actions step, with output and summary files.
    pub fn github(mut self) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("output");
        let summary = dir.path().join("summary");
        self.github = Some(dir);
        self.env("GITHUB_ACTIONS", "true")
            .env("GITHUB_OUTPUT", output.to_str().unwrap())
            .env("GITHUB_STEP_SUMMARY", summary.to_str().unwrap())
    }

    pub fn run(self) -> Outcome {
        let mut command = Command::new(env!("CARGO_BIN_EXE_coveralls-finish"));
        command.env_clear().args(&self.args);
        // Windows cannot start a process without these.
        for keep in ["SYSTEMROOT", "SystemRoot"] {
            if let Ok(value) = std::env::var(keep) {
                command.env(keep, value);
            }
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let started = Instant::now();
        let output = command.output().unwrap();
        let read = |name: &str| {
            let dir = self.github.as_ref()?;
            std::fs::read_to_string(dir.path().join(name)).ok()
        };
        let outcome = Outcome {
            code: output.status.code().expect("exited"),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
            outputs: read("output"),
            summary: read("summary"),
            elapsed: started.elapsed(),
        };
        let token = self.env.iter().find(|(n, _)| n == "COVERALLS_REPO_TOKEN");
        if let Some((_, token)) = token {
            outcome.assert_no_secret(token);
        }
        outcome
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub outputs: Option<String>,
    pub summary: Option<String>,
    pub elapsed: Duration,
}

impl Outcome {
    /// The secret appears nowhere but in the one `::add-mask::` line GitHub needs to hide it.
    pub fn assert_no_secret(&self, secret: &str) {
        let mask = format!("::add-mask::{secret}");
        for line in self.stdout.lines().chain(self.stderr.lines()) {
            assert!(
                line == mask || !line.contains(secret),
                "secret printed: {line:?}\n{self:#?}"
            );
        }
        for file in [&self.outputs, &self.summary].into_iter().flatten() {
            assert!(!file.contains(secret), "secret written: {file}");
        }
    }

    pub fn all_output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Parsed `name<<DELIMITER` blocks of `$GITHUB_OUTPUT`.
    pub fn step_outputs(&self) -> BTreeMap<String, String> {
        let text = self.outputs.as_deref().expect("GITHUB_OUTPUT was written");
        let mut outputs = BTreeMap::new();
        let mut lines = text.lines();
        while let Some(head) = lines.next() {
            let (name, delimiter) = head.split_once("<<").expect("multi-line form");
            let mut value = Vec::new();
            for line in lines.by_ref() {
                if line == delimiter {
                    break;
                }
                value.push(line);
            }
            outputs.insert(name.to_owned(), value.join("\n"));
        }
        outputs
    }
}

/// `coveralls-finish serve` on a free loopback port, its log collected as it runs.
pub struct Receiver {
    child: std::process::Child,
    pub url: String,
    log: Arc<Mutex<String>>,
    agent: ureq::Agent,
}

impl Receiver {
    pub fn start(env: &[(&str, &str)], args: &[&str]) -> Receiver {
        let mut command = Command::new(env!("CARGO_BIN_EXE_coveralls-finish"));
        command
            .env_clear()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
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
        thread::spawn(move || {
            let mut line = String::new();
            while stderr.read_line(&mut line).unwrap_or(0) > 0 {
                collected.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        Receiver {
            child,
            url,
            log,
            agent,
        }
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
