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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::connections::{Busy, Connection, Connections, WireIo};
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
    let builder = builder();
    let connections = Arc::new(Connections::new(app.budget.spare));
    // Answers to connections past the cap: a few at a time, each brief.
    let refusals = Arc::new(Semaphore::new(app.budget.spare));
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    let mut backoff = AcceptBackoff::default();
    loop {
        // Every connection is accepted at once, none left waiting in the backlog: at the
        // cap, the longest idle is cut for it, or it is answered 503 when none is idle.
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
        let cap = app.budget.connections;
        if connections.taken() >= cap {
            if !connections.cut_longest_idle() {
                refuse(&app, &refusals, stream).await;
                continue;
            }
            app.metrics.shed("idle");
            // Descriptors of connections asked to go but not gone yet: a few (the spare
            // places), never more than the reserve holds.
            let most = cap + app.budget.spare;
            connections.below(most, Duration::from_millis(100)).await;
        }
        let (connection, io) = connections.add(stream, MAX_BODY as u64);
        let serving = graceful.watch(connect(&app, &connection, io, &builder));
        let connections = Arc::clone(&connections);
        tokio::spawn(async move {
            // Errors are the client's (a reset, a timeout, a malformed head): hyper has
            // answered what could be answered; the connection is done either way.
            tokio::select! {
                _ = serving => {}
                () = connection.cut() => {}
            }
            connections.remove(&connection);
        });
    }
    drop(listener);
    let _ = app.stopping.send(true);
    let deadline = tokio::time::Instant::now() + GRACE;
    connections.cut_every_idle();
    let _ = tokio::time::timeout_at(deadline, graceful.shutdown()).await;
    // A delivery whose sender has gone is still at work: its close, its log line.
    while app.in_flight.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.in_flight.load(Ordering::SeqCst)
}

/// hyper serving one connection, each request on it answered by [`respond`].
fn connect(
    app: &Arc<App>,
    connection: &Arc<Connection>,
    io: WireIo,
    builder: &http1::Builder,
) -> impl hyper_util::server::graceful::GracefulConnection + use<> {
    let (app, connection) = (Arc::clone(app), Arc::clone(connection));
    let service = service_fn(move |request| {
        let (number, busy) = connection.begin();
        respond(
            Arc::clone(&app),
            Arc::clone(&connection),
            number,
            busy,
            request,
        )
    });
    builder.serve_connection(TokioIo::new(io), service)
}

/// hyper's limits and timeouts for every connection.
fn builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // From the first byte a connection could send, and again after each answer, so an
        // idle keep-alive connection is cut off too.
        .header_read_timeout(HEAD_TIMEOUT)
        .max_header_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .max_buf_size(4 * MAX_HEAD)
        // A client that ends its side once the request is sent (`nc -N`, some HTTP/1.0
        // clients) still gets its answer.
        .half_close(true)
        .keep_alive(true);
    builder
}

/// How long a refusal may take, its answer and the read of what the client sent.
const REFUSAL: Duration = Duration::from_secs(1);
/// A refused client that, once it began, sends nothing for this long has sent its request:
/// closing then leaves nothing unread, so it sees the answer and an end, not a reset.
const REFUSAL_QUIET: Duration = Duration::from_millis(100);
/// How long a refused client may take to send its first bytes: one that sends nothing is
/// idle, and holds no place longer.
const REFUSAL_FIRST: Duration = Duration::from_millis(300);
/// How long the accept loop waits for a refusal's place before closing a connection
/// unanswered.
const REFUSAL_PLACE: Duration = Duration::from_millis(300);

/// Answer a connection past the cap, none of whose places is idle: 503, try again in a
/// second. Where even refusals are all taken for a while, it is closed unanswered.
async fn refuse(app: &App, refusals: &Arc<Semaphore>, mut stream: TcpStream) {
    let place = tokio::time::timeout(REFUSAL_PLACE, Arc::clone(refusals).acquire_owned());
    let Ok(Ok(place)) = place.await else {
        app.metrics.shed("dropped");
        return;
    };
    app.metrics.shed("refused");
    tokio::spawn(async move {
        let answer = async {
            stream.write_all(busy().as_bytes()).await?;
            stream.shutdown().await?;
            // The request's first bytes (or its end), if they come soon, then the rest.
            let mut sink = [0; 4096];
            let first = tokio::time::timeout(REFUSAL_FIRST, stream.read(&mut sink)).await;
            if !matches!(first, Ok(Ok(1..))) {
                return Ok(());
            }
            while let Ok(read) = tokio::time::timeout(REFUSAL_QUIET, stream.read(&mut sink)).await {
                if read? == 0 {
                    break;
                }
            }
            io::Result::Ok(())
        };
        let _ = tokio::time::timeout(REFUSAL, answer).await;
        drop(place);
    });
}

/// The answer to a connection past the cap.
fn busy() -> String {
    let body = r#"{"error":"the receiver is at its connection cap; deliver again in a second"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
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

/// Counts a delivery as in flight for as long as its work runs, answered or not.
struct InFlight(Arc<App>);

impl InFlight {
    fn enter(app: &Arc<App>) -> Self {
        app.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(app))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One request in, one answer and one log line out. The work runs as a task of its own
/// that writes the log line itself: hyper drops this future with the connection when the
/// client goes, and the work must outlive it, its close and its line too.
async fn respond(
    app: Arc<App>,
    connection: Arc<Connection>,
    number: u64,
    _busy: Busy,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let route = Route::of(request.uri().path());
    let request = Arrived {
        request,
        connection,
        number,
        arrival: Instant::now(),
    };
    let reply = match tokio::spawn(work(app, request)).await {
        Ok(reply) => reply,
        Err(_) => Reply::error(500, "the receiver failed on this delivery; see its log"),
    };
    Ok(response(&reply, route))
}

/// A request as it came in, on its connection: the `number`th there.
struct Arrived {
    request: Request<Incoming>,
    connection: Arc<Connection>,
    number: u64,
    arrival: Instant,
}

/// A request's work, in flight until it ends: its answer, and its log line. The answer is
/// made in a task of its own, so that a panic in it is answered 500 and logged.
async fn work(app: Arc<App>, incoming: Arrived) -> Reply {
    let arrival = incoming.arrival;
    let _in_flight = InFlight::enter(&app);
    let method = incoming.request.method().clone();
    let path = field(incoming.request.uri().path(), MAX_LOGGED_PATH);
    let (reply, fields) = match tokio::spawn(handle(Arc::clone(&app), incoming)).await {
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
    reply
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

async fn handle(app: Arc<App>, arrived: Arrived) -> (Reply, LogFields) {
    let mut fields = LogFields::default();
    let (parts, body) = arrived.request.into_parts();
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
            let on = (&arrived.connection, arrived.number, arrived.arrival);
            let admitted = too_large(&parts).and_then(|()| source.admit(&app.settings, &parts));
            match admitted
                .map_err(Reply::hang_up)
                .map(|()| read_body(&app, &parts, body, on))
            {
                Ok(read) => match read.await {
                    Ok((body, _held)) => {
                        let deadline = arrived.arrival + BUDGET;
                        intake::deliver(&app, source, &parts, &body, deadline, &mut fields).await
                    }
                    Err(reply) => reply,
                },
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

/// The body's length, where the head says it.
fn declared_length(parts: &hyper::http::request::Parts) -> Option<u64> {
    let length = parts.headers.get(CONTENT_LENGTH)?;
    length.to_str().ok()?.parse().ok()
}

/// A body declared over [`MAX_BODY`] is refused before a byte of it is read.
fn too_large(parts: &hyper::http::request::Parts) -> Result<(), Reply> {
    match declared_length(parts).is_some_and(|length| length > MAX_BODY as u64) {
        true => Err(over_limit()),
        false => Ok(()),
    }
}

fn over_limit() -> Reply {
    Reply::error(413, format!("the body is over {MAX_BODY} bytes")).hang_up()
}

/// Memory for bodies being read or worked on, all requests together (each takes what its
/// `Content-Length` says, or [`MAX_BODY`] where it does not say).
pub const BODIES: usize = 64 << 20;

/// The body, at most [`MAX_BODY`] bytes and within [`BODY_TIMEOUT`] of the head, with its
/// share of [`BODIES`] (held until it is dropped); cut short (and the connection closed)
/// when the receiver stops or when a chunk announces more than the limit.
async fn read_body(
    app: &App,
    parts: &hyper::http::request::Parts,
    body: Incoming,
    (connection, number, arrival): (&Arc<Connection>, u64, Instant),
) -> Result<(Bytes, OwnedSemaphorePermit), Reply> {
    let declared = declared_length(parts);
    let share = declared.map_or(MAX_BODY as u32, |length| length.max(1) as u32);
    let deadline = (arrival + BODY_TIMEOUT).into();
    let mut stopping = app.stopping.subscribe();
    let read = async {
        let held = Arc::clone(&app.bodies).acquire_many_owned(share);
        let Ok(held) = tokio::time::timeout_at(deadline, held).await else {
            let why = format!("the receiver holds {BODIES} bytes of bodies; deliver again");
            return Err(Reply::error(503, why).hang_up());
        };
        let collect = Limited::new(body, MAX_BODY).collect();
        match tokio::time::timeout_at(deadline, collect).await {
            Ok(Ok(collected)) => Ok((collected.to_bytes(), held.expect("never closed"))),
            Ok(Err(err)) if err.is::<LengthLimitError>() => Err(over_limit()),
            Ok(Err(err)) => {
                Err(Reply::error(400, format!("cannot read the body: {err}")).hang_up())
            }
            Err(_) => {
                let why = format!("the body did not arrive within {BODY_TIMEOUT:?}");
                Err(Reply::error(408, why).hang_up())
            }
        }
    };
    tokio::select! {
        read = read => read,
        () = connection.oversized(number) => Err(over_limit()),
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

/// File descriptors kept for everything but client connections: the listener, the standard
/// streams, the store's files, lookups; the closes under way; the agents' idle connections
/// to Coveralls, all endpoints together; connections past the cap being refused, and ended
/// ones lingering to read a body they were answered before.
const RESERVED_FILES: u64 = 64
    + super::closer::ATTEMPTS_AT_ONCE as u64
    + super::projects::POOLED_CONNECTIONS as u64
    + 2 * MAX_SPARE as u64;
/// The most client connections open at once, whatever the file limit allows.
const MAX_CONNECTIONS: u64 = 4096;
/// Connections refused (503) at once, and as many lingering: each holds a descriptor for a
/// second at most.
const MAX_SPARE: usize = 64;

/// What the open-file limit allows client connections.
pub struct Budget {
    /// Open at once.
    pub connections: usize,
    /// Refused (503) at once past them, and as many ended ones lingering.
    pub spare: usize,
    /// How the cap was set, for the log.
    pub note: String,
}

/// The cap on open client connections, sized to the open-file limit (raised first, as far as
/// the hard limit allows), so that the process never runs out of file descriptors.
pub fn budget() -> Budget {
    let files = open_file_limit();
    let (cap, spare) = match files {
        None => (MAX_CONNECTIONS, MAX_SPARE as u64),
        Some(files) if files >= RESERVED_FILES + 64 => (
            (files - RESERVED_FILES).min(MAX_CONNECTIONS),
            MAX_SPARE as u64,
        ),
        // A very low limit: keep most of it for closes.
        Some(files) => ((files / 4).max(1), (files / 16).max(1)),
    };
    let note = match files {
        Some(files) if cap < MAX_CONNECTIONS => format!("the open-file limit is {files}"),
        _ => "the most it takes".to_owned(),
    };
    Budget {
        connections: usize::try_from(cap).unwrap_or(usize::MAX),
        spare: spare as usize,
        note: format!(
            "{note}; at the cap the longest idle is cut for a newcomer, or it is answered 503"
        ),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_past_the_cap_is_a_whole_503_that_says_when_to_come_back() {
        let answer = busy();
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut response = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = response.parse(answer.as_bytes()) else {
            panic!("not a response: {answer}");
        };
        assert_eq!(response.code, Some(503));
        let header = |name: &str| {
            let found = response.headers.iter().find(|h| h.name == name);
            found.map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        let body = &answer[head..];
        assert_eq!(header("Content-Length"), Some(body.len().to_string()));
        assert_eq!(header("Retry-After").as_deref(), Some("1"));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(json["error"].as_str().unwrap().contains("connection cap"));
    }
}
