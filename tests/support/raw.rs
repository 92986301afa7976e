//! A raw TCP client for the receiver, for what a well-behaved HTTP client never sends:
//! slow heads and bodies, absurd lengths, endless lines, resets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub struct Raw {
    stream: TcpStream,
}

/// An answer as it came over the wire.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        Raw::bounded(TcpStream::connect(addr).unwrap())
    }

    /// A connection made within `limit`, if one was: a listener whose queue of connections
    /// waiting to be accepted is full drops the attempts until it has room.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub fn connect_within(addr: SocketAddr, limit: Duration) -> Option<Raw> {
        TcpStream::connect_timeout(&addr, limit)
            .ok()
            .map(Raw::bounded)
    }

    /// Every wait bounded: a read or a write that stalls 20 seconds fails.
    fn bounded(stream: TcpStream) -> Raw {
        let limit = Some(Duration::from_secs(20));
        stream.set_read_timeout(limit).unwrap();
        stream.set_write_timeout(limit).unwrap();
        Raw { stream }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// End the connection with a reset (SO_LINGER 0) rather than a close.
    pub fn reset(self) {
        let socket = socket2::SockRef::from(&self.stream);
        socket.set_linger(Some(Duration::ZERO)).unwrap();
    }

    /// The next answer; `None` where the connection ended (or was reset) first.
    pub fn answer(&mut self) -> Option<Answer> {
        let mut received = Vec::new();
        let mut byte = [0; 1];
        while !received.ends_with(b"\r\n\r\n") {
            match self.stream.read(&mut byte) {
                Ok(1) => received.push(byte[0]),
                _ => return None,
            }
        }
        let head = String::from_utf8_lossy(&received).into_owned();
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        let length = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        });
        let mut body = vec![0; length.unwrap_or(0)];
        self.stream.read_exact(&mut body).ok()?;
        Some(Answer {
            status,
            head,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// How long until the receiver ended the connection (an end of file or a reset), if it
    /// did within `limit`; whatever arrives meanwhile is read and dropped.
    pub fn closed_within(&mut self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        self.stream.set_read_timeout(Some(limit)).unwrap();
        let mut buffer = [0; 4096];
        loop {
            match self.stream.read(&mut buffer) {
                Ok(0) => return Some(started.elapsed()),
                Ok(_) if started.elapsed() < limit => continue,
                Ok(_) => return None,
                Err(err) if matches!(err.kind(), std::io::ErrorKind::ConnectionReset) => {
                    return Some(started.elapsed());
                }
                Err(_) => return None,
            }
        }
    }
}

/// A request head, with `Host` and the given headers.
pub fn head(method: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: receiver\r\n");
    for (name, value) in headers {
        text += &format!("{name}: {value}\r\n");
    }
    text += "\r\n";
    text.into_bytes()
}

/// The receiver's resident memory in KiB, where the system says (Linux).
pub fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
