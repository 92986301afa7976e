//! The receiver's HTTP side, on hyper: connections accepted within a cap sized to the file
//! limit, hyper's limits and timeouts, each request answered (a panic too) and logged once,
//! and a stop that answers what was accepted before it lets go.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;

use super::intake::{self, BUDGET};
use super::log::{LogFields, field};
use super::reply::Reply;
use super::sources::{SOURCES, Source, listed};
use super::{App, metrics};

/// Time to send a request's head: a slow or idle client (keep-alive included) is cut off.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to send the body, once the head is in.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bodies above this are refused (413) without being read.
pub const MAX_BODY: usize = 1 << 20;
/// A request head: its size and how many header lines (431 beyond).
const MAX_HEAD: usize = 16 << 10;
const MAX_HEADERS: usize = 64;
/// After a stop signal: answer what is in flight, then go, within CircleCI's 10 seconds.
pub const GRACE: Duration = Duration::from_millis(9500);
/// The longest path that goes into the log.
const MAX_LOGGED_PATH: usize = 100;

/// Connections past the cap wait to be accepted in a queue of this length.
const BACKLOG: u32 = 1024;

/// Listen on `address` (a host name is looked up), with a long queue of connections waiting
/// to be accepted.
pub async fn listen(address: &str) -> io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(address).await? {
        let socket = match addr {
            std::net::SocketAddr::V4(_) => TcpSocket::new_v4()?,
            std::net::SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        // A restart must not wait for the old connections' TIME_WAIT (not on Windows, where
        // the option lets another process take the port).
        #[cfg(not(windows))]
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address")))
}

/// Serve until `stop` resolves; then stop accepting, answer what was accepted and close
/// the rest. The number of deliveries that were still unanswered when the grace ran out.
pub async fn serve(listener: TcpListener, app: Arc<App>, stop: impl Future<Output = ()>) -> usize {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // From the first byte a connection could send, and again after each answer, so an
        // idle keep-alive connection is cut off too.
        .header_read_timeout(HEAD_TIMEOUT)
        .max_header_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .max_buf_size(4 * MAX_HEAD)
        .keep_alive(true);
    let permits = Arc::new(Semaphore::new(app.max_connections));
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    let mut backoff = AcceptBackoff::default();
    loop {
        // A permit before each accept: at the cap, new connections wait in the backlog.
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("never closed"),
            () = stop.as_mut() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    backoff.wait(&app, err).await;
                    continue;
                }
            },
            () = stop.as_mut() => break,
        };
        backoff.reset();
        let app = Arc::clone(&app);
        let service = service_fn(move |request| respond(Arc::clone(&app), request));
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Errors are the client's (a reset, a timeout, a malformed head): hyper has
            // answered what could be answered; the connection is done either way.
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = app.stopping.send(true);
    let _ = tokio::time::timeout(GRACE, graceful.shutdown()).await;
    app.in_flight.load(Ordering::SeqCst)
}

/// Accept errors (out of file descriptors, a connection reset before it was accepted) never
/// stop the listener: wait a little when the process is short of something, log sparingly.
#[derive(Default)]
struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    async fn wait(&mut self, app: &App, err: io::Error) {
        self.failures += 1;
        if self.failures.is_power_of_two() {
            app.log_line(&format!(
                "accepting a connection failed ({} times in a row): {err}",
                self.failures
            ));
        }
        let short_of_resources = !matches!(
            err.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::Interrupted
        );
        if short_of_resources {
            let wait = Duration::from_millis(10 << self.failures.min(6));
            tokio::time::sleep(wait).await;
        }
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Counts a request as in flight for as long as it is being answered.
struct InFlight<'a>(&'a App);

impl<'a> InFlight<'a> {
    fn enter(app: &'a App) -> Self {
        app.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(app)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One request in, one answer and one log line out. The work runs as a task of its own, so
/// that a panic in it is answered 500 rather than dropping the connection.
async fn respond(
    app: Arc<App>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let arrival = Instant::now();
    let _in_flight = InFlight::enter(&app);
    let method = request.method().clone();
    let path = field(request.uri().path(), MAX_LOGGED_PATH);
    let route = Route::of(request.uri().path());
    let (reply, fields) = match tokio::spawn(handle(Arc::clone(&app), request, arrival)).await {
        Ok(done) => done,
        Err(failed) => {
            let fields = LogFields {
                outcome: Some(format!("failed: {failed}")),
                ..LogFields::default()
            };
            let reply = Reply::error(500, "the receiver failed on this delivery; see its log");
            (reply, fields)
        }
    };
    app.log_delivery(&method, &path, &reply, &fields, arrival);
    Ok(response(&reply, route))
}

/// Where a request goes, by its path.
#[derive(Clone, Copy)]
enum Route {
    Health,
    Metrics,
    Source(&'static dyn Source),
    Nowhere,
}

impl Route {
    fn of(path: &str) -> Route {
        match path {
            "/healthz" => return Route::Health,
            "/metrics" => return Route::Metrics,
            _ => {}
        }
        let source = SOURCES
            .iter()
            .find(|source| path.strip_prefix('/') == Some(source.name()));
        source.map_or(Route::Nowhere, |source| Route::Source(*source))
    }

    /// The methods it takes, for a 405's `Allow`.
    fn allow(self) -> Option<&'static str> {
        match self {
            Route::Health | Route::Metrics => Some("GET, HEAD"),
            Route::Source(_) => Some("POST"),
            Route::Nowhere => None,
        }
    }
}

/// Every route, as a 404 lists them: `/circleci, /magnum or /healthz`.
fn routes() -> String {
    let mut routes: Vec<String> = SOURCES.iter().map(|s| format!("/{}", s.name())).collect();
    routes.extend(["/healthz".to_owned(), "/metrics".to_owned()]);
    listed(&routes, "or")
}

/// `serve --help`'s routes: `Routes: POST /circleci, POST /magnum?secret=..., GET /healthz,
/// GET /metrics.`
pub fn routes_help() -> String {
    let sources = SOURCES
        .iter()
        .map(|s| format!("POST /{}{}, ", s.name(), s.query_help()));
    format!(
        "Routes: {}GET /healthz, GET /metrics.",
        sources.collect::<String>()
    )
}

/// `/healthz`: up, and what the store holds that is not closed.
fn health(app: &App) -> Reply {
    let in_flight = app.in_flight.load(Ordering::SeqCst);
    match app.store.counts() {
        Ok(counts) => {
            let oldest = counts
                .oldest_pending
                .map(|at| (super::store::now_ms() - at).max(0) / 1000);
            Reply::new(
                200,
                json!({
                    "ok": true, "in_flight": in_flight, "pending": counts.pending,
                    "failed": counts.failed, "oldest_pending_s": oldest,
                }),
            )
        }
        Err(error) => Reply::new(
            503,
            json!({"ok": false, "in_flight": in_flight, "error": app.redact(&error.to_string())}),
        ),
    }
}

async fn handle(app: Arc<App>, request: Request<Incoming>, arrival: Instant) -> (Reply, LogFields) {
    let mut fields = LogFields::default();
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let reply = match (Route::of(path), &parts.method) {
        (Route::Health, &Method::GET | &Method::HEAD) => health(&app),
        (Route::Metrics, &Method::GET | &Method::HEAD) => match app.store.counts() {
            Ok(counts) => {
                let text = app.metrics.render(counts, app.store.commits());
                Reply::text(metrics::CONTENT_TYPE, text)
            }
            Err(error) => Reply::error(503, app.redact(&error.to_string())),
        },
        (Route::Source(source), &Method::POST) => {
            match read_body(&app, &parts, body, arrival).await {
                Ok(body) => {
                    let deadline = arrival + BUDGET;
                    intake::deliver(&app, source, &parts, &body, deadline, &mut fields).await
                }
                Err(reply) => reply,
            }
        }
        (Route::Health | Route::Metrics | Route::Source(_), method) => {
            Reply::error(405, format!("{method} is not allowed on {path}"))
        }
        (Route::Nowhere, _) => Reply::error(
            404,
            format!(
                "no route {}; expected {}",
                field(path, MAX_LOGGED_PATH),
                routes()
            ),
        ),
    };
    (reply, fields)
}

/// The body, at most [`MAX_BODY`] bytes and within [`BODY_TIMEOUT`] of the head; cut short
/// (and the connection closed) when the receiver stops.
async fn read_body(
    app: &App,
    parts: &hyper::http::request::Parts,
    body: Incoming,
    arrival: Instant,
) -> Result<Bytes, Reply> {
    let too_large = || Reply::error(413, format!("the body is over {MAX_BODY} bytes")).hang_up();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Refused before a byte of it is read: the rest is never drained.
    if declared.is_some_and(|length| length > MAX_BODY as u64) {
        return Err(too_large());
    }
    let mut stopping = app.stopping.subscribe();
    let read = tokio::time::timeout_at(
        (arrival + BODY_TIMEOUT).into(),
        Limited::new(body, MAX_BODY).collect(),
    );
    tokio::select! {
        read = read => match read {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(err)) if err.is::<LengthLimitError>() => Err(too_large()),
            Ok(Err(err)) => Err(Reply::error(400, format!("cannot read the body: {err}")).hang_up()),
            Err(_) => Err(Reply::error(
                408,
                format!("the body did not arrive within {BODY_TIMEOUT:?}"),
            )
            .hang_up()),
        },
        _ = stopping.wait_for(|stopping| *stopping) => Err(Reply::error(
            503,
            "the receiver is stopping; deliver again",
        )
        .hang_up()),
    }
}

fn response(reply: &Reply, route: Route) -> Response<Full<Bytes>> {
    let (content_type, body) = match &reply.text {
        Some((content_type, text)) => (*content_type, Bytes::from(text.clone())),
        None => ("application/json", Bytes::from(reply.body.to_string())),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = hyper::StatusCode::from_u16(reply.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let (405, Some(allow)) = (reply.status, route.allow()) {
        headers.insert(ALLOW, HeaderValue::from_static(allow));
    }
    if reply.hang_up {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// File descriptors kept for everything but client connections: closes under way, the
/// agents' idle connections to Coveralls, the listener and the standard streams.
const RESERVED_FILES: u64 = 320;
/// The most client connections open at once, whatever the file limit allows.
const MAX_CONNECTIONS: u64 = 4096;

/// The cap on open client connections, sized to the open-file limit (raised first, as far as
/// the hard limit allows), so that the process never runs out of file descriptors; and a
/// note for the log on how the cap was set.
pub fn connection_cap() -> (usize, Option<String>) {
    let files = open_file_limit();
    let cap = match files {
        None => MAX_CONNECTIONS,
        Some(files) if files >= RESERVED_FILES + 64 => {
            (files - RESERVED_FILES).min(MAX_CONNECTIONS)
        }
        // A very low limit: keep most of it for closes.
        Some(files) => (files / 4).max(1),
    };
    let note = files
        .filter(|_| cap < MAX_CONNECTIONS)
        .map(|files| format!("the open-file limit is {files}; more wait to be accepted"));
    (usize::try_from(cap).unwrap_or(usize::MAX), note)
}

/// The soft open-file limit, after raising it towards the hard one; `None` when unlimited.
#[cfg(unix)]
fn open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let wanted = MAX_CONNECTIONS + RESERVED_FILES;
    let current = limit.current?;
    if current < wanted {
        let raised = limit.maximum.map_or(wanted, |hard| hard.min(wanted));
        let new = Rlimit {
            current: Some(raised),
            maximum: limit.maximum,
        };
        if raised > current && setrlimit(Resource::Nofile, new).is_ok() {
            return Some(raised);
        }
    }
    Some(current)
}

/// Windows has no such limit on sockets.
#[cfg(not(unix))]
fn open_file_limit() -> Option<u64> {
    None
}
