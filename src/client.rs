//! The Coveralls Parallel Build Webhook: the request, its answer, and when to try again.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::{CryptoProvider, KeyProvider, SecureRandom, WebPkiSupportedAlgorithms};
use serde::Serialize;
use serde_json::Value;
use ureq::Agent;
use ureq::http::{StatusCode, Uri};
use ureq::tls::{Certificate, RootCerts, TlsConfig};

use crate::commit::Head;
use crate::env::Env;
use crate::error::{Error, Kind};
use crate::report::Reporter;

pub const USER_AGENT: &str = concat!("coveralls-finish/", env!("CARGO_PKG_VERSION"));
/// The longest wait between two attempts, whether backoff or `Retry-After` asks for more.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// Under a deadline, no attempt starts with less time than this left.
const MIN_ATTEMPT: Duration = Duration::from_millis(500);
/// Under a deadline, an attempt may take half the time left, or at least this.
const SHARE_FLOOR: Duration = Duration::from_secs(2);
/// Connections each agent keeps alive for later requests.
const IDLE_CONNECTIONS: usize = 8;
/// Bodies larger than this are not Coveralls answering.
const MAX_ANSWER: u64 = 1 << 20;

/// Where Coveralls is, and how patiently to talk to it.
#[derive(Debug, Clone)]
pub struct Service {
    /// A base URL without a trailing `/`, checked by [`crate::config::parse_endpoint`].
    pub endpoint: String,
    pub retries: u32,
    /// How long one attempt may take, from connecting to the last byte.
    pub timeout: Duration,
}

/// The build to close: everything the request says but the token.
#[derive(Debug, Clone, Default)]
pub struct Build {
    pub number: String,
    /// Where the number came from, for logs and hints: a flag, a variable, `VAR, CI name`.
    pub number_from: String,
    pub service_name: Option<String>,
    pub repo_name: Option<String>,
    pub attempt: Option<String>,
    pub carryforward: Vec<String>,
    pub commit: Option<String>,
    pub branch: Option<String>,
    pub pull_request: Option<String>,
    pub build_url: Option<String>,
    pub job_id: Option<String>,
    /// The head commit's author, committer and message.
    pub head: Head,
}

/// The JSON body: what the official reporter sends (each field only when known), with the
/// token in it, never in the URL, where proxies and servers would log it.
#[derive(Serialize)]
struct Body<'a> {
    repo_token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    repo_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_name: Option<&'a str>,
    service_number: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_job_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_attempt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_branch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_pull_request: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_build_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    commit_sha: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    carryforward: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    git: Option<Git<'a>>,
    payload: Payload<'a>,
}

#[derive(Serialize)]
struct Payload<'a> {
    build_num: &'a str,
    status: &'static str,
}

/// What Coveralls needs, with `carryforward`, to create a build that no upload made.
#[derive(Serialize)]
struct Git<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    branch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    head: Option<GitHead<'a>>,
}

#[derive(Serialize)]
struct GitHead<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    author_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    author_email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    committer_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    committer_email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

/// The request's body for `build`, as JSON: the one form in which it is both sent and, in a
/// dry run, shown (one serializer of it in the binary, not one a form).
pub fn body(build: &Build, repo_token: &str) -> Value {
    serde_json::to_value(Body::new(build, repo_token)).expect("the body serialises")
}

impl<'a> Body<'a> {
    fn new(build: &'a Build, repo_token: &'a str) -> Self {
        let head = build.commit.as_deref().map(|id| {
            let head = &build.head;
            GitHead {
                id,
                author_name: head.author_name.as_deref(),
                author_email: head.author_email.as_deref(),
                committer_name: head.committer_name.as_deref(),
                committer_email: head.committer_email.as_deref(),
                message: head.message.as_deref(),
            }
        });
        let branch = build.branch.as_deref();
        let git = (branch.is_some() || head.is_some()).then_some(Git { branch, head });
        Body {
            repo_token,
            repo_name: build.repo_name.as_deref(),
            service_name: build.service_name.as_deref(),
            service_number: &build.number,
            service_job_id: build.job_id.as_deref(),
            service_attempt: build.attempt.as_deref(),
            service_branch: branch,
            service_pull_request: build.pull_request.as_deref(),
            service_build_url: build.build_url.as_deref(),
            commit_sha: build.commit.as_deref(),
            carryforward: Some(build.carryforward.join(",")).filter(|flags| !flags.is_empty()),
            git,
            payload: Payload {
                build_num: &build.number,
                status: "done",
            },
        }
    }
}

pub fn webhook_url(endpoint: &str) -> String {
    format!("{endpoint}/webhook")
}

/// A closed build, as Coveralls described it.
#[derive(Debug)]
pub struct Closed {
    pub url: Option<String>,
    pub jobs: Option<u64>,
    /// The answer as received, for the `coveralls-api-result` output.
    pub raw: String,
}

/// An attempt that did not close the build; another may, if the error is retryable.
struct Failed {
    error: Error,
    /// The server's `Retry-After`.
    retry_after: Option<Duration>,
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Failed {
            error,
            retry_after: None,
        }
    }
}

/// An agent for one endpoint (checked by [`crate::config::parse_endpoint`]); each request
/// sets its own timeout.
pub fn agent(endpoint: &str, env: &Env) -> Result<Agent, Error> {
    Ok(agents(endpoint, env, 1)?.remove(0))
}

/// `count` agents for one endpoint, each with a connection pool of its own: the receiver
/// gives one to each worker, since threads sharing one pool wait on each other.
pub fn agents(endpoint: &str, env: &Env, count: usize) -> Result<Vec<Agent>, Error> {
    let uri: Uri = endpoint.parse().expect("endpoint checked in config");
    let mut builder = Agent::config_builder()
        .http_status_as_error(false)
        // A redirect is reported, not followed: the token must not travel on to another host.
        .max_redirects(0)
        .user_agent(USER_AGENT)
        .accept("application/json")
        // Enough kept-alive connections for the receiver's closes at once: a new one costs a
        // handshake, and a thread of its own for the host's lookup.
        .max_idle_connections(IDLE_CONNECTIONS)
        .max_idle_connections_per_host(IDLE_CONNECTIONS)
        .proxy(proxy(env, &uri)?);
    if uri.scheme_str() == Some("https") {
        let tls = TlsConfig::builder()
            .root_certs(root_certs())
            .unversioned_rustls_crypto_provider(crypto_provider())
            .build();
        builder = builder.tls_config(tls);
    }
    let config = builder.build();
    Ok((0..count).map(|_| config.clone().new_agent()).collect())
}

/// ring's cryptography, as rustls' default provider for it offers, less what a client of one
/// server does not use: ChaCha20-Poly1305 (every server that speaks TLS 1.2 or 1.3 offers
/// AES-GCM) and loading a private key (it presents no certificate). Built here rather than
/// trimmed from `default_provider()`, which would keep the rest referenced and in the binary;
/// a unit test holds it to rustls' defaults.
fn crypto_provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite, kx_group};
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        signature_verification_algorithms: SIGNATURE_ALGORITHMS,
        secure_random: &SystemRandom,
        key_provider: &NoPrivateKeys,
    })
}

/// rustls' own table for ring (`SUPPORTED_SIG_ALGS`, private to it).
const SIGNATURE_ALGORITHMS: WebPkiSupportedAlgorithms = {
    use rustls::SignatureScheme as Scheme;
    use webpki::ring as alg;
    WebPkiSupportedAlgorithms {
        all: &[
            alg::ECDSA_P256_SHA256,
            alg::ECDSA_P256_SHA384,
            alg::ECDSA_P384_SHA256,
            alg::ECDSA_P384_SHA384,
            alg::ED25519,
            alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
            alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
            alg::RSA_PKCS1_2048_8192_SHA256,
            alg::RSA_PKCS1_2048_8192_SHA384,
            alg::RSA_PKCS1_2048_8192_SHA512,
            alg::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
            alg::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
            alg::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
        ],
        mapping: &[
            (
                Scheme::ECDSA_NISTP384_SHA384,
                &[alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384],
            ),
            (
                Scheme::ECDSA_NISTP256_SHA256,
                &[alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256],
            ),
            (Scheme::ED25519, &[alg::ED25519]),
            (
                Scheme::RSA_PSS_SHA512,
                &[alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
            ),
            (
                Scheme::RSA_PSS_SHA384,
                &[alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
            ),
            (
                Scheme::RSA_PSS_SHA256,
                &[alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
            ),
            (Scheme::RSA_PKCS1_SHA512, &[alg::RSA_PKCS1_2048_8192_SHA512]),
            (Scheme::RSA_PKCS1_SHA384, &[alg::RSA_PKCS1_2048_8192_SHA384]),
            (Scheme::RSA_PKCS1_SHA256, &[alg::RSA_PKCS1_2048_8192_SHA256]),
        ],
    }
};

#[derive(Debug)]
struct SystemRandom;

impl SecureRandom for SystemRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        use ring::rand::SecureRandom as _;
        ring::rand::SystemRandom::new()
            .fill(buf)
            .map_err(|_| rustls::crypto::GetRandomFailed)
    }
}

#[derive(Debug)]
struct NoPrivateKeys;

impl KeyProvider for NoPrivateKeys {
    fn load_private_key(
        &self,
        _: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        Err(rustls::Error::General(
            "this client presents no certificate".into(),
        ))
    }
}

/// The platform's roots (which `SSL_CERT_FILE` and `SSL_CERT_DIR` replace, as in OpenSSL),
/// so that a private CA works without ever turning verification off; where the platform has
/// none at all (a minimal container), the bundled Mozilla roots.
fn root_certs() -> RootCerts {
    let platform = rustls_native_certs::load_native_certs().certs;
    if platform.is_empty() {
        return RootCerts::WebPki;
    }
    let platform = platform
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned());
    RootCerts::from(platform)
}

/// `HTTPS_PROXY` or `HTTP_PROXY` by the endpoint's scheme, then `ALL_PROXY`; `NO_PROXY` applies.
fn proxy(env: &Env, endpoint: &Uri) -> Result<Option<ureq::Proxy>, Error> {
    let names: &[&str] = if endpoint.scheme_str() == Some("https") {
        &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
    } else {
        &["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
    };
    let mut found = None;
    for name in names {
        if let Some(value) = env.get(name)? {
            found = Some((*name, value));
            break;
        }
    }
    let Some((name, value)) = found else {
        return Ok(None);
    };
    // The value may hold a password: name the variable, never print the value.
    let bad = || Error::config(format!("{name} is not a valid proxy URL"));
    let parsed = ureq::Proxy::new(value).map_err(|_| bad())?;
    let mut builder = ureq::Proxy::builder(parsed.protocol())
        .host(parsed.host())
        .port(parsed.port());
    if let Some(user) = parsed.username() {
        builder = builder.username(user);
    }
    if let Some(password) = parsed.password() {
        builder = builder.password(password);
    }
    for name in ["no_proxy", "NO_PROXY"] {
        for entry in env.get(name)?.unwrap_or_default().split(',') {
            builder = builder.no_proxy(entry.trim());
        }
    }
    let proxy = builder.build().map_err(|_| bad())?;
    Ok((!proxy.is_no_proxy(endpoint)).then_some(proxy))
}

/// Close `build` with `token`: the one entry for the closer and the receiver. Builds the
/// request, retries what may pass, and logs each retry with its reason.
///
/// With a `deadline` (the receiver must answer its caller in time), every attempt is cut to
/// fit, and no retry starts that could not finish: the error is then [`Kind::OutOfTime`].
pub fn close(
    agent: &Agent,
    service: &Service,
    build: &Build,
    token: &str,
    deadline: Option<Instant>,
    ui: &mut Reporter,
) -> Result<Closed, Error> {
    let url = webhook_url(&service.endpoint);
    let body = serde_json::to_vec(&body(build, token)).expect("JSON serialises");
    let sent = Sent::new(build, token);
    let attempts = service.retries + 1;
    let remaining = || deadline.map(|d| d.saturating_duration_since(Instant::now()));
    for attempt in 1..=attempts {
        let timeout = match remaining() {
            Some(left) if left < MIN_ATTEMPT => return Err(Error::out_of_time(None)),
            // At most half of what is left (but not under 2s), so that one stalled
            // connection leaves time to try a fresh one.
            Some(left) => left.min(service.timeout).min((left / 2).max(SHARE_FLOOR)),
            None => service.timeout,
        };
        ui.debug_block(&format!("POST {url} (attempt {attempt}/{attempts})"), &[]);
        let Failed { error, retry_after } = match send(agent, &url, &body, timeout, &sent, ui) {
            Ok(closed) => return Ok(closed),
            Err(failed) => failed,
        };
        if error.kind() != Kind::Unavailable {
            return Err(error);
        }
        if attempt == attempts {
            return Err(match attempts {
                1 => error,
                _ => error.context(format!("gave up after {attempts} attempts; the last")),
            });
        }
        let (wait, why) = match retry_after {
            Some(after) => (after.min(MAX_WAIT), "as Retry-After asks"),
            None => (backoff(attempt), "backing off"),
        };
        if remaining().is_some_and(|left| left < wait + MIN_ATTEMPT) {
            return Err(Error::out_of_time(Some(error)));
        }
        ui.log(&format!(
            "attempt {attempt}/{attempts} failed: {}; retrying in {:.1}s ({why})",
            error.message(),
            wait.as_secs_f64()
        ));
        std::thread::sleep(wait);
    }
    unreachable!("the loop returns on its last attempt")
}

/// What the build's JSON (`{url}.json`) said of its coverage.
pub enum Coverage {
    /// `covered_percent`, and `coverage_change` where there is one.
    Known { percent: f64, change: Option<f64> },
    /// Not computed yet (`covered_percent` is null), or an answer worth asking again.
    NotYet(String),
    /// 401, 403 or 404: a private repository's build, which this client may not read.
    Private(String),
}

/// Ask for the coverage of the build at `url` (the close's answer's), without the token: it
/// never goes into a URL.
pub fn coverage(agent: &Agent, url: &str, timeout: Duration, ui: &mut Reporter<'_>) -> Coverage {
    let json_url = format!("{}.json", url.trim_end_matches('/'));
    ui.debug_block(&format!("GET {json_url}"), &[]);
    let answer = agent
        .get(&json_url)
        .config()
        .timeout_global(Some(timeout))
        .build()
        .call();
    let mut response = match answer {
        Ok(response) => response,
        Err(err) => return Coverage::NotYet(format!("could not reach {json_url}: {err}")),
    };
    let status = response.status();
    let raw = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_vec()
        .unwrap_or_default();
    ui.debug_block(
        &format!("answer: {}", status_line(status)),
        &[&String::from_utf8_lossy(&raw)],
    );
    if matches!(status.as_u16(), 401 | 403 | 404) {
        return Coverage::Private(format!("{json_url} answered {}", status_line(status)));
    }
    let json: Option<Value> = serde_json::from_slice(&raw).ok();
    let number = |name: &str| json.as_ref()?.get(name)?.as_f64();
    match (status.is_success(), number("covered_percent")) {
        (true, Some(percent)) => Coverage::Known {
            percent,
            change: number("coverage_change"),
        },
        (true, None) => Coverage::NotYet("the coverage is not computed yet".to_owned()),
        (false, _) => Coverage::NotYet(format!("{json_url} answered {}", status_line(status))),
    }
}

/// Exponential backoff with jitter: about 1s, 2s, 4s, … capped, each between half and all of it.
fn backoff(attempt: u32) -> Duration {
    let full = FIRST_WAIT
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_WAIT);
    let jitter = RandomState::new().hash_one(attempt) % 1000;
    full / 2 + (full / 2).mul_f64(jitter as f64 / 1000.0)
}

/// One attempt: the request, and what its answer means.
fn send(
    agent: &Agent,
    url: &str,
    body: &[u8],
    timeout: Duration,
    sent: &Sent<'_>,
    ui: &mut Reporter<'_>,
) -> Result<Closed, Failed> {
    let mut response = agent
        .post(url)
        .config()
        .timeout_global(Some(timeout))
        .build()
        .header("Content-Type", "application/json")
        .send(body)
        .map_err(|err| transport_error(url, err))?;
    let header = |name: &str| {
        let value = response.headers().get(name)?.to_str().ok()?;
        Some(value.to_owned())
    };
    let (retry_after, location) = (header("retry-after"), header("location"));
    // What Coveralls support asks for, to find the request in their logs.
    let trace = match (header("cf-ray"), header("x-request-id")) {
        (Some(ray), _) => Some(format!("cf-ray {}", one_line(&ray, 100))),
        (None, Some(id)) => Some(format!("x-request-id {}", one_line(&id, 100))),
        (None, None) => None,
    };
    let status = response.status();
    let read = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_vec();
    let raw = match read {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        // Not Coveralls' JSON, but the status still says what happened (a 5xx is retried).
        Err(ureq::Error::BodyExceedsLimit(_)) => {
            format!("(an answer of over {MAX_ANSWER} bytes, not read)")
        }
        Err(err) => return Err(transport_error(url, err)),
    };
    let answer = Answer {
        status,
        retry_after: retry_after.as_deref().and_then(parse_retry_after),
        location,
        trace,
        raw,
    };
    ui.debug_block(
        &format!("answer: {}", status_line(answer.status)),
        &[&answer.raw],
    );
    answer.judge(sent)
}

fn transport_error(url: &str, err: ureq::Error) -> Failed {
    use ureq::Error as E;
    let message = match &err {
        E::Timeout(_) => "no complete answer within the timeout (COVERALLS_TIMEOUT)".to_owned(),
        other => other.to_string(),
    };
    let message = format!("could not reach {url}: {message}");
    // rustls reports a refused certificate as an I/O error that wraps its own.
    let tls_failed = match &err {
        E::Io(io) => io
            .get_ref()
            .is_some_and(|inner| inner.is::<rustls::Error>()),
        E::Tls(_) | E::Rustls(_) => true,
        _ => false,
    };
    if tls_failed {
        return Error::refused(message)
            .with_hint(
                "the TLS certificate was not trusted; for a private CA set SSL_CERT_FILE to its \
                 PEM bundle (verification is never turned off)",
            )
            .into();
    }
    match err {
        E::Timeout(_)
        | E::Io(_)
        | E::HostNotFound
        | E::ConnectionFailed
        | E::Protocol(_)
        | E::BodyStalled
        | E::ConnectProxyFailed(_) => Error::unavailable(message).into(),
        _ => Error::refused(message).into(),
    }
}

/// An answer from Coveralls, read in full.
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    location: Option<String>,
    /// The request's trace id, where the answer carries one.
    trace: Option<String>,
    raw: String,
}

/// What was sent, for the hints: the build, and the kind of token (never the token).
struct Sent<'a> {
    build: &'a Build,
    token: &'static str,
}

impl<'a> Sent<'a> {
    fn new(build: &'a Build, token: &str) -> Self {
        let github = ["ghs_", "ghp_", "gho_", "ghu_", "ghr_", "github_pat_"];
        let token = match github.iter().any(|prefix| token.starts_with(prefix)) {
            true => "a GitHub token (GITHUB_TOKEN)",
            false => "a Coveralls repo token",
        };
        Sent { build, token }
    }
}

impl Answer {
    /// Success is 2xx and `"done": true` and no `"error"`.
    fn judge(self, sent: &Sent<'_>) -> Result<Closed, Failed> {
        let json: Option<Value> = serde_json::from_slice(self.raw.as_bytes()).ok();
        let field = |name: &str| {
            json.as_ref()
                .and_then(|j| j.get(name))
                .filter(|v| !v.is_null())
        };
        if !self.status.is_success() {
            let why = field("error")
                .or(field("message"))
                .map(text_of)
                .unwrap_or_else(|| summarize(&self.raw));
            return Err(self.failure(&why, sent));
        }
        if let Some(error) = field("error") {
            return Err(self.refused(&text_of(error), sent).into());
        }
        match field("done").and_then(Value::as_bool) {
            Some(true) => Ok(Closed {
                url: field("url").and_then(Value::as_str).map(str::to_owned),
                jobs: field("jobs").and_then(Value::as_u64),
                raw: self.raw.clone(),
            }),
            Some(false) => {
                let why = "\"done\" is false: the build was not closed";
                Err(self.refused(why, sent).into())
            }
            None => {
                let why = format!("no \"done\": true in the answer: {}", summarize(&self.raw));
                Err(self.refused(&why, sent).into())
            }
        }
    }

    /// What a status other than 2xx means.
    fn failure(&self, why: &str, sent: &Sent<'_>) -> Failed {
        if self.status.is_redirection() {
            let to = self
                .location
                .as_deref()
                .unwrap_or("nowhere (no Location header)");
            let why = format!("a redirect to {to}, which is not followed");
            return self
                .error(Error::refused, &why)
                .with_hint(
                    "point COVERALLS_ENDPOINT at the final address (redirects are not followed \
                     so the token never travels on)",
                )
                .into();
        }
        match self.status.as_u16() {
            408 | 429 | 405 | 500..=599 => Failed {
                error: self.error(Error::unavailable, why),
                retry_after: self.retry_after,
            },
            _ => self.refused(why, sent).into(),
        }
    }

    /// A refusal, with a hint where the server's words or status say what to do.
    fn refused(&self, why: &str, sent: &Sent<'_>) -> Error {
        let error = self.error(Error::refused, why);
        match hint(self.status.as_u16(), why, sent) {
            Some(hint) => error.with_hint(hint),
            None => error,
        }
    }

    fn error(&self, kind: fn(String) -> Error, why: &str) -> Error {
        let trace = match &self.trace {
            Some(trace) => format!(" ({trace})"),
            None => String::new(),
        };
        kind(format!(
            "Coveralls answered {}: {why}{trace}",
            status_line(self.status)
        ))
        .with_answer(self.raw.clone())
    }
}

/// What to do about a refusal, from the server's words and status.
fn hint(status: u16, why: &str, sent: &Sent<'_>) -> Option<String> {
    let (build, said) = (sent.build, why.to_ascii_lowercase());
    if said.contains("no build matching") {
        let create = match build.carryforward.is_empty() {
            true => {
                "; with carryforward flags (and the commit and branch, sent when known), \
                 Coveralls creates the build instead, as for a monorepo whose coverage jobs \
                 were all skipped"
            }
            false => "",
        };
        return Some(format!(
            "sent build number {} (from {}); the parallel uploads must have sent the same \
             service_number, and at least one must have reached Coveralls with parallel: \
             true{create}",
            build.number, build.number_from
        ));
    }
    if said.contains("already closed") {
        return Some(
            "the build was closed before: a re-run of a workflow keeps its build number (and \
             Coveralls cannot reopen a build), or a job closed it before every upload was in \
             (a `needs:` that misses an upload job)"
                .to_owned(),
        );
    }
    let about_the_token = said.contains("couldn't find a repository")
        || said.contains("invalid github token")
        || matches!(status, 401 | 403 | 422);
    about_the_token.then(|| {
        let repo_name = match &build.repo_name {
            Some(name) => format!("with repo_name {name}"),
            None => "without repo_name".to_owned(),
        };
        format!(
            "sent {} {repo_name}. A GITHUB_TOKEN works only with the repository's name \
             (COVERALLS_REPO_NAME, detected on GitHub); a repo token must be this repository's, \
             from its page on Coveralls. Pull requests from forks and from Dependabot get no \
             secrets, so there the token set is not the one sent",
            sent.token
        )
    })
}

fn status_line(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => one_line(text, 300),
        other => one_line(&other.to_string(), 300),
    }
}

/// A short, single-line account of a body that is not the JSON we expect. An HTML page
/// (a gateway or maintenance page) is named by its title rather than dumped.
pub fn summarize(raw: &str) -> String {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return "an empty body".to_owned();
    }
    let lower = trimmed.to_ascii_lowercase();
    if lower.starts_with("<!doctype html") || lower.starts_with("<html") || lower.contains("<body")
    {
        let title = lower
            .find("<title>")
            .map(|start| start + "<title>".len())
            .and_then(|start| Some(start..start + lower[start..].find("</title>")?))
            .map(|range| one_line(&trimmed[range], 120));
        return match title {
            Some(title) if !title.is_empty() => {
                format!("an HTML page titled {title:?} ({} bytes)", raw.len())
            }
            _ => format!("an HTML page ({} bytes)", raw.len()),
        };
    }
    one_line(trimmed, 300)
}

/// Collapse whitespace (so server text can never start a line of its own) and cut to `max` chars.
pub fn one_line(text: &str, max: usize) -> String {
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some((cut, _)) = line.char_indices().nth(max) {
        line.truncate(cut);
        line.push('…');
    }
    line
}

/// `Retry-After`: delta-seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crypto_provider_is_rustls_default_less_chacha_and_private_keys() {
        let default = rustls::crypto::ring::default_provider();
        let ours = crypto_provider();
        assert_eq!(
            format!("{:?}", ours.signature_verification_algorithms),
            format!("{:?}", default.signature_verification_algorithms)
        );
        let names = |suites: &[rustls::SupportedCipherSuite]| -> Vec<String> {
            suites.iter().map(|s| format!("{:?}", s.suite())).collect()
        };
        let expected: Vec<String> = names(&default.cipher_suites)
            .into_iter()
            .filter(|name| !name.contains("CHACHA20"))
            .collect();
        assert_eq!(names(&ours.cipher_suites), expected);
        let groups = |p: &CryptoProvider| -> Vec<String> {
            p.kx_groups
                .iter()
                .map(|g| format!("{:?}", g.name()))
                .collect()
        };
        assert_eq!(groups(&ours), groups(&default));
    }

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        for attempt in 1..=8 {
            let full = Duration::from_secs(1 << (attempt - 1)).min(MAX_WAIT);
            let wait = backoff(attempt);
            assert!(
                wait >= full / 2 && wait <= full,
                "attempt {attempt}: {wait:?}"
            );
        }
        assert!(backoff(40) <= MAX_WAIT);
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        let soon = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(90));
        let wait = parse_retry_after(&soon).unwrap();
        assert!(
            wait > Duration::from_secs(80) && wait <= Duration::from_secs(90),
            "{wait:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn html_is_summarised_by_its_title() {
        let page = "<html><head><title>502 Bad\n Gateway</title></head><body>x</body></html>";
        assert_eq!(
            summarize(page),
            format!(
                "an HTML page titled \"502 Bad Gateway\" ({} bytes)",
                page.len()
            )
        );
        assert_eq!(
            summarize("<!DOCTYPE html><p>down</p>"),
            "an HTML page (26 bytes)"
        );
        assert_eq!(summarize("  \n"), "an empty body");
        assert_eq!(one_line("a\r\n::error::b", 100), "a ::error::b");
        assert_eq!(one_line("ééé", 2), "éé…");
    }
}
