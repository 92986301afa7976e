//! The open client connections: which are answering a request and which are idle (waiting
//! for a head, or for a client to read its answer), so that at the cap the longest idle is
//! cut for a newcomer, and at a stop every idle one goes at once.
//!
//! Each connection's bytes pass through a [`Wire`]: it follows the framing (a chunk announced
//! over the body limit) and ends a write that makes no progress.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_io_timeout::TimeoutStream;

use super::framing::Framing;

/// A connection is cut for a newcomer only once it has been quiet this long.
const QUIET: Duration = Duration::from_millis(100);

/// A write (an answer) that makes no progress for this long ends the connection: a client
/// that sends requests and never reads the answers holds nothing for longer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// One open connection, as the accept loop and its requests see it.
pub struct Connection {
    id: u64,
    /// Requests being answered.
    answering: AtomicUsize,
    /// When it last received bytes or finished an answer, in milliseconds since `began`.
    active: AtomicU64,
    began: Instant,
    /// Requests begun, counted as [`Framing`] counts heads.
    begun: AtomicU64,
    /// The number of the request whose chunks announced more than the body limit.
    oversized: watch::Sender<u64>,
    /// Asked to go while idle.
    cut: Notify,
    cutting: AtomicBool,
}

impl Connection {
    /// A request begins: the connection is busy until the guard is dropped. The request's
    /// number, for [`Connection::oversized`].
    pub fn begin(self: &Arc<Self>) -> (u64, Busy) {
        self.answering.fetch_add(1, Ordering::SeqCst);
        let number = self.begun.fetch_add(1, Ordering::SeqCst) + 1;
        let busy = Busy {
            connection: Arc::clone(self),
        };
        (number, busy)
    }

    /// Resolves once request `number`'s chunks have announced more than the body limit.
    pub async fn oversized(&self, number: u64) {
        let mut said = self.oversized.subscribe();
        let _ = said.wait_for(|said| *said == number).await;
    }

    fn idle(&self) -> bool {
        self.answering.load(Ordering::SeqCst) == 0
    }

    fn now(&self) -> u64 {
        u64::try_from(self.began.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Idle, and quiet for [`QUIET`] at least: nothing received, nothing answered. A client
    /// whose request is on its way (connected a moment ago, or sending its head) is not.
    fn cuttable(&self, now: u64) -> bool {
        let quiet = now.saturating_sub(self.active.load(Ordering::SeqCst));
        self.idle() && quiet >= QUIET.as_millis() as u64 && !self.cutting.load(Ordering::SeqCst)
    }

    /// Resolves when the connection is asked to go and is idle.
    pub async fn cut(&self) {
        loop {
            self.cut.notified().await;
            if self.idle() {
                return;
            }
        }
    }
}

/// A request being answered; idle again once dropped.
pub struct Busy {
    connection: Arc<Connection>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let connection = &self.connection;
        connection.active.store(connection.now(), Ordering::SeqCst);
        connection.answering.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long a connection ended in the middle of a request's body (answered before it was
/// read: 401, 413) goes on reading it, so that the client, still sending, sees the answer
/// rather than a reset.
const LINGER: Duration = Duration::from_secs(1);
/// And reads no more than a body may hold, and some.
const LINGER_BYTES: usize = 2 << 20;

/// Every open connection.
pub struct Connections {
    open: Mutex<HashMap<u64, Arc<Connection>>>,
    next: AtomicU64,
    /// One removed.
    removed: Notify,
    /// Asked to go and not removed yet: their places are as good as free.
    being_cut: AtomicUsize,
    /// Places for ended connections still reading a body they were answered before.
    lingering: Arc<Semaphore>,
}

impl Connections {
    /// Connections that may linger `lingering` at once.
    pub fn new(lingering: usize) -> Connections {
        Connections {
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            removed: Notify::new(),
            being_cut: AtomicUsize::new(0),
            lingering: Arc::new(Semaphore::new(lingering)),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn len(&self) -> usize {
        self.open().len()
    }

    /// Places taken: the open connections but those asked to go.
    pub fn taken(&self) -> usize {
        let open = self.open().len();
        open.saturating_sub(self.being_cut.load(Ordering::SeqCst))
    }

    /// A new connection, idle from now, its bytes through a [`Wire`].
    pub fn add(&self, stream: TcpStream, body_limit: u64) -> (Arc<Connection>, WireIo) {
        let connection = Arc::new(Connection {
            id: self.next.fetch_add(1, Ordering::SeqCst),
            answering: AtomicUsize::new(0),
            active: AtomicU64::new(0),
            began: Instant::now(),
            begun: AtomicU64::new(0),
            oversized: watch::Sender::new(0),
            cut: Notify::new(),
            cutting: AtomicBool::new(false),
        });
        self.open().insert(connection.id, Arc::clone(&connection));
        let wire = Wire {
            stream: Some(stream),
            framing: Framing::new(body_limit),
            connection: Arc::clone(&connection),
            lingering: Arc::clone(&self.lingering),
        };
        let mut io = TimeoutStream::new(wire);
        io.set_write_timeout(Some(WRITE_TIMEOUT));
        (connection, Box::pin(io))
    }

    pub fn remove(&self, connection: &Connection) {
        let removed = self.open().remove(&connection.id);
        if removed.is_some() && connection.cutting.load(Ordering::SeqCst) {
            self.being_cut.fetch_sub(1, Ordering::SeqCst);
        }
        self.removed.notify_waiters();
    }

    /// Wait (for `limit` at most) until fewer than `cap` are open: one was just cut.
    pub async fn below(&self, cap: usize, limit: Duration) {
        let wait = async {
            loop {
                let removed = self.removed.notified();
                if self.len() < cap {
                    return;
                }
                removed.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }

    /// Ask the connection quiet the longest to go, for a newcomer; false where none is
    /// idle and quiet.
    pub fn cut_longest_idle(&self) -> bool {
        let open = self.open();
        let idle = open
            .values()
            .filter(|c| c.cuttable(c.now()))
            .min_by_key(|c| c.began + Duration::from_millis(c.active.load(Ordering::SeqCst)));
        match idle {
            Some(connection) => {
                connection.cutting.store(true, Ordering::SeqCst);
                self.being_cut.fetch_add(1, Ordering::SeqCst);
                connection.cut.notify_one();
                true
            }
            None => false,
        }
    }

    /// At a stop: every idle connection goes now (a half-sent head too); each busy one as
    /// soon as its answer is out.
    pub fn cut_every_idle(&self) {
        for connection in self.open().values() {
            connection.cut.notify_one();
        }
    }
}

/// A connection's bytes, as hyper reads and writes them.
pub type WireIo = Pin<Box<TimeoutStream<Wire>>>;

/// A client's socket, its incoming bytes followed by a [`Framing`].
pub struct Wire {
    /// Taken only when it is dropped.
    stream: Option<TcpStream>,
    framing: Framing,
    connection: Arc<Connection>,
    lingering: Arc<Semaphore>,
}

impl Wire {
    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.stream.as_mut().expect("taken only when dropped"))
    }
}

/// Ended in the middle of a body: end the sending side at once, and read (and drop) what the
/// client still sends for a while, if a place is free.
impl Drop for Wire {
    fn drop(&mut self) {
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        let runtime = tokio::runtime::Handle::try_current();
        let place = Arc::clone(&self.lingering).try_acquire_owned();
        let (true, Ok(runtime), Ok(place)) = (self.framing.mid_body(), runtime, place) else {
            return;
        };
        runtime.spawn(async move {
            let drain = async {
                stream.shutdown().await?;
                let mut sink = [0; 8192];
                let mut read = 0;
                while read < LINGER_BYTES {
                    match stream.read(&mut sink).await? {
                        0 => break,
                        n => read += n,
                    }
                }
                io::Result::Ok(())
            };
            let _ = tokio::time::timeout(LINGER, drain).await;
            drop(place);
        });
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let wire = self.get_mut();
        let before = buf.filled().len();
        ready!(wire.stream().poll_read(cx, buf))?;
        if buf.filled().len() > before {
            let connection = &wire.connection;
            connection.active.store(connection.now(), Ordering::SeqCst);
        }
        if let Some(number) = wire.framing.feed(&buf.filled()[before..]) {
            wire.connection.oversized.send_replace(number);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().stream().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(TcpStream::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream().poll_shutdown(cx)
    }
}
