//! A recording HTTP server on loopback that answers from a script. Anything it cannot parse,
//! and any panic in its threads, fails the test when the server is dropped; dropping it also
//! stops it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What the server does with the next request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// `{server}` in the body stands for the server's own URL.
    Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Read the request and never answer (until the server stops, or 20 seconds).
    Stall,
    /// Answer, but only after a while.
    Slow(Duration, Box<Reply>),
    /// Serve these files by path (200), anything else 404: fake release assets.
    Files(Arc<Vec<(String, Vec<u8>)>>),
    /// Answer as this function decides from the request: a stand-in with a rule of its own.
    Decide(fn(&Recorded) -> Reply),
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

/// What the accept loop and the connection threads share.
struct Shared {
    log: Mutex<Vec<Recorded>>,
    errors: Mutex<Vec<String>>,
    script: Vec<Reply>,
    next: AtomicUsize,
    stopping: AtomicBool,
    url: String,
    /// Answer every request of a connection, as the real Coveralls does, rather than one.
    keep_alive: bool,
}

pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accepting: Option<JoinHandle<()>>,
}

impl Server {
    /// Answers the n-th request with the n-th reply; the last reply repeats.
    pub fn start(script: Vec<Reply>) -> Server {
        Server::start_with(script, None, false)
    }

    /// The same, but a connection stays open after an answer for the next request, as the
    /// real Coveralls keeps it: a client's pool of idle connections to it fills up.
    pub fn start_keeping_alive(script: Vec<Reply>) -> Server {
        Server::start_with(script, None, true)
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
            Server::start_with(script, Some(Arc::new(config)), false),
            ca_cert.pem(),
        )
    }

    fn start_with(
        script: Vec<Reply>,
        tls: Option<Arc<rustls::ServerConfig>>,
        keep_alive: bool,
    ) -> Server {
        assert!(!script.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let shared = Arc::new(Shared {
            log: Mutex::default(),
            errors: Mutex::default(),
            script,
            next: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            url: format!("{scheme}://{addr}"),
            keep_alive,
        });
        let server_shared = Arc::clone(&shared);
        let accepting = thread::spawn(move || {
            for stream in listener.incoming() {
                let shared = Arc::clone(&server_shared);
                if shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let tls = tls.clone();
                thread::spawn(move || shared.guard(|| connection(stream, tls, &shared)));
            }
        });
        Server {
            addr,
            shared,
            accepting: Some(accepting),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log.lock().unwrap().clone()
    }

    /// The one request a test expected.
    pub fn only_request(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "{requests:#?}");
        requests.into_iter().next().unwrap()
    }

    /// Wait until `n` requests have arrived (at most `limit`); whether they did.
    pub fn wait_for(&self, n: usize, limit: Duration) -> bool {
        let started = Instant::now();
        while self.requests().len() < n {
            if started.elapsed() > limit {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag and closes the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accepting) = self.accepting.take() {
            let _ = accepting.join();
        }
        let errors = self.shared.errors.lock().unwrap().clone();
        if !errors.is_empty() && !thread::panicking() {
            panic!("the recording server failed:\n{}", errors.join("\n"));
        }
    }
}

impl Shared {
    /// Run `work`, recording its error or panic as a failure of the test.
    fn guard(&self, work: impl FnOnce() -> Result<(), String>) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        let error = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error,
            Err(panic) => match panic.downcast_ref::<String>() {
                Some(message) => format!("panicked: {message}"),
                None => format!("panicked: {:?}", panic.downcast_ref::<&str>()),
            },
        };
        self.errors.lock().unwrap().push(error);
    }
}

fn connection(
    stream: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    shared: &Shared,
) -> Result<(), String> {
    if shared.stopping.load(Ordering::SeqCst) {
        return Ok(());
    }
    match tls {
        None => serve(stream, shared),
        Some(config) => {
            let connection = rustls::ServerConnection::new(config).map_err(|e| e.to_string())?;
            serve(rustls::StreamOwned::new(connection, stream), shared)
        }
    }
}

fn serve(stream: impl Read + Write, shared: &Shared) -> Result<(), String> {
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader)? {
        let stream = reader.get_mut();
        let connect = request.method == "CONNECT";
        let target = request.target.clone();
        let decided = match &shared.script[shared
            .next
            .load(Ordering::SeqCst)
            .min(shared.script.len() - 1)]
        {
            Reply::Decide(decide) => Some(decide(&request)),
            _ => None,
        };
        shared.log.lock().unwrap().push(request);
        if connect {
            // Act as a proxy that tunnels to itself: the next request arrives on this stream.
            let _ = stream.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
            let _ = stream.flush();
            continue;
        }
        let n = shared.next.fetch_add(1, Ordering::SeqCst);
        let mut reply = &shared.script[n.min(shared.script.len() - 1)];
        if let Some(decided) = &decided {
            reply = decided;
        }
        if let Reply::Slow(delay, then) = reply {
            thread::sleep(*delay);
            reply = then;
        }
        send(stream, reply, &target, shared)?;
        if !shared.keep_alive {
            return Ok(());
        }
    }
    Ok(())
}

/// Send `reply` to the request for `target` (a Stall holds the connection, then ends it).
fn send(
    stream: &mut impl Write,
    reply: &Reply,
    target: &str,
    shared: &Shared,
) -> Result<(), String> {
    match reply {
        Reply::Slow(..) | Reply::Decide(_) => Err("one level of Slow or Decide only".to_owned()),
        Reply::Stall => {
            let started = Instant::now();
            while !shared.stopping.load(Ordering::SeqCst)
                && started.elapsed() < Duration::from_secs(20)
            {
                thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        }
        Reply::Files(files) => {
            let found = files.iter().find(|(path, _)| *path == target);
            let (status, body) = match found {
                Some((_, body)) => (200, body.as_slice()),
                None => (404, b"Not Found".as_slice()),
            };
            answer(stream, status, &[], body, shared.keep_alive);
            Ok(())
        }
        Reply::Answer {
            status,
            headers,
            body,
        } => {
            let body = String::from_utf8_lossy(body).replace("{server}", &shared.url);
            answer(stream, *status, headers, body.as_bytes(), shared.keep_alive);
            Ok(())
        }
    }
}

/// Write an answer; unless the connection is to be kept alive, it says `Connection: close`.
fn answer(
    stream: &mut impl Write,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    keep_alive: bool,
) {
    let close = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    let mut head = format!(
        "HTTP/1.1 {status} Scripted\r\nContent-Length: {}\r\n{close}",
        body.len()
    );
    for (name, value) in headers {
        head += &format!("{name}: {value}\r\n");
    }
    // The client may have given up already (a timeout test): not the server's failure.
    let _ = stream.write_all(format!("{head}\r\n").as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}

/// The next request, `None` where the client closed the connection between requests (or
/// gave up mid-way: a timeout test), an error for anything that is not HTTP as a client
/// should send it.
fn read_request(reader: &mut impl BufRead) -> Result<Option<Recorded>, String> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) | Err(_) => return Ok(None),
        Ok(_) => {}
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some("HTTP/1.1")) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("a malformed request line: {line:?}"));
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Ok(None);
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("a malformed header line: {line:?}"))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let length = match headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        Some((_, value)) => value
            .parse()
            .map_err(|_| format!("a malformed Content-Length: {value:?}"))?,
        None => 0,
    };
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return Ok(None);
    }
    let body =
        String::from_utf8(body).map_err(|_| format!("a body that is not UTF-8 ({target})"))?;
    Ok(Some(Recorded {
        method,
        target,
        headers,
        body,
    }))
}

/// A port on which nothing listens.
pub fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}
