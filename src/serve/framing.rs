//! A watch on the bytes a connection sends, beside hyper's own parser: the sizes a chunked
//! body's chunks announce. hyper streams a chunk as its bytes come and never tells its size,
//! so a chunk announced far over the body limit would otherwise be read (or waited for)
//! until the limit or the body's timeout; seen here, it is refused at once (413).
//!
//! Heads are read with `httparse`, hyper's own parser. Anything this watch cannot follow
//! (a head it cannot parse, an overlong line) ends the watch for that connection: hyper,
//! which answers such a request itself, is the judge of what is valid.

/// A head longer than this is one hyper refuses anyway (431): the watch stops there.
const MAX_HEAD: usize = 64 << 10;
/// A chunk-size line (with its extensions) or a trailer line longer than this ends the watch.
const MAX_LINE: usize = 4 << 10;
/// As many header lines as hyper takes, and some.
const MAX_HEADERS: usize = 100;

pub struct Framing {
    state: State,
    /// The head or line being gathered.
    line: Vec<u8>,
    /// What this request's chunks announced so far.
    announced: u64,
    /// Heads seen on this connection: the number of the request being read.
    requests: u64,
    limit: u64,
}

#[derive(Debug, PartialEq)]
enum State {
    Head,
    /// Bytes of a body of known length still to come.
    Fixed(u64),
    ChunkSize,
    /// Bytes of a chunk still to come, then its CRLF.
    ChunkData(u64),
    ChunkEnd(u8),
    Trailers,
    Off,
}

impl Framing {
    /// A watch for bodies of at most `limit` bytes.
    pub fn new(limit: u64) -> Framing {
        Framing {
            state: State::Head,
            line: Vec::new(),
            announced: 0,
            requests: 0,
            limit,
        }
    }

    /// Follow `bytes`, the next the connection sent; the number of the request (counted
    /// from 1, as heads arrive) whose chunks have just announced more than the limit.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Option<u64> {
        while !bytes.is_empty() && self.state != State::Off {
            let used = match self.state {
                State::Head | State::ChunkSize | State::Trailers => self.gather(bytes),
                State::Fixed(left) | State::ChunkData(left) => self.skip(bytes, left),
                State::ChunkEnd(left) => self.skip(bytes, u64::from(left)),
                State::Off => bytes.len(),
            };
            bytes = &bytes[used..];
            if self.announced > self.limit {
                self.state = State::Off;
                return Some(self.requests);
            }
        }
        None
    }

    /// Whether the connection stopped in the middle of a body: the client may still be
    /// sending it.
    pub fn mid_body(&self) -> bool {
        !matches!(self.state, State::Head | State::Off)
    }

    /// Skip up to `left` bytes of a body or chunk; the number used.
    fn skip(&mut self, bytes: &[u8], left: u64) -> usize {
        let used = usize::try_from(left).map_or(bytes.len(), |left| left.min(bytes.len()));
        let left = left - used as u64;
        self.state = match (&self.state, left) {
            (State::Fixed(_), 0) => State::Head,
            (State::Fixed(_), left) => State::Fixed(left),
            (State::ChunkData(_), 0) => State::ChunkEnd(2),
            (State::ChunkData(_), left) => State::ChunkData(left),
            (_, 0) => State::ChunkSize,
            (_, left) => State::ChunkEnd(left as u8),
        };
        used
    }

    /// Gather a head (to its blank line) or a line (to its LF); the number of bytes used.
    fn gather(&mut self, bytes: &[u8]) -> usize {
        let head = self.state == State::Head;
        let start = self.line.len().saturating_sub(3);
        let limit = if head { MAX_HEAD } else { MAX_LINE };
        let take = bytes.len().min(limit + 1 - self.line.len().min(limit));
        self.line.extend_from_slice(&bytes[..take]);
        let end = match head {
            true => find(&self.line[start..], b"\r\n\r\n").map(|at| start + at + 4),
            false => find(&self.line[start..], b"\n").map(|at| start + at + 1),
        };
        let Some(end) = end else {
            if self.line.len() > limit {
                self.state = State::Off;
            }
            return take;
        };
        let used = take - (self.line.len() - end);
        self.line.truncate(end);
        let line = std::mem::take(&mut self.line);
        self.state = match self.state {
            State::Head => self.after_head(&line),
            State::ChunkSize => self.after_size(&line),
            _ if line == b"\r\n" || line == b"\n" => State::Head,
            _ => State::Trailers,
        };
        used
    }

    /// What follows a head: its body, as its headers frame it.
    fn after_head(&mut self, head: &[u8]) -> State {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        if !matches!(request.parse(head), Ok(httparse::Status::Complete(_))) {
            return State::Off;
        }
        self.requests += 1;
        self.announced = 0;
        let value = |name: &str| {
            let found = request.headers.iter().rev();
            let mut found = found.filter(|h| h.name.eq_ignore_ascii_case(name));
            found
                .next()
                .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
        };
        if let Some(codings) = value("transfer-encoding") {
            return match codings.trim_end().ends_with("chunked") {
                true => State::ChunkSize,
                false => State::Off,
            };
        }
        match value("content-length").map(|length| length.trim().parse::<u64>()) {
            None | Some(Ok(0)) => State::Head,
            Some(Ok(length)) => State::Fixed(length),
            Some(Err(_)) => State::Off,
        }
    }

    /// What follows a chunk-size line: its data, or the trailers after the last chunk.
    fn after_size(&mut self, line: &[u8]) -> State {
        match httparse::parse_chunk_size(line) {
            Ok(httparse::Status::Complete((_, 0))) => State::Trailers,
            Ok(httparse::Status::Complete((_, size))) => {
                self.announced = self.announced.saturating_add(size);
                State::ChunkData(size)
            }
            _ => State::Off,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POST: &[u8] = b"POST /circleci HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";

    /// Every way of cutting `bytes` in two: what the watch says, each the same.
    fn fed(bytes: &[u8]) -> Option<u64> {
        let whole = Framing::new(100).feed(bytes);
        for cut in 0..bytes.len() {
            let mut framing = Framing::new(100);
            let first = framing.feed(&bytes[..cut]);
            let said = first.or_else(|| framing.feed(&bytes[cut..]));
            assert_eq!(said, whole, "cut at {cut}");
        }
        whole
    }

    #[test]
    fn a_chunk_announced_over_the_limit_is_seen_before_its_data() {
        assert_eq!(fed(&[POST, b"65\r\n"].concat()), Some(1));
        assert_eq!(fed(&[POST, b"64\r\n"].concat()), None);
        assert_eq!(
            fed(&[POST, b"ffffffffffffffff;ext=1\r\n"].concat()),
            Some(1)
        );
    }

    #[test]
    fn chunks_count_together_and_only_within_their_request() {
        let first = [POST, b"32\r\n", &[b'a'; 50], b"\r\n"].concat();
        assert_eq!(fed(&[&first[..], b"33\r\n"].concat()), Some(1));
        let whole = [&first[..], b"0\r\nTrailer: x\r\n\r\n"].concat();
        assert_eq!(fed(&[&whole[..], POST, b"64\r\n"].concat()), None);
        assert_eq!(fed(&[&whole[..], POST, b"65\r\n"].concat()), Some(2));
    }

    #[test]
    fn bodies_of_known_length_are_skipped_whatever_they_hold() {
        let fixed =
            b"POST /a HTTP/1.1\r\nContent-Length: 30\r\n\r\n65\r\nffffffffffffffffffffffffff";
        assert_eq!(fed(&[&fixed[..], POST, b"65\r\n"].concat()), Some(2));
        let get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            fed(&[&get[..], &get[..], POST, b"65\r\n"].concat()),
            Some(3)
        );
    }

    #[test]
    fn what_it_cannot_follow_ends_the_watch() {
        assert_eq!(
            fed(&[b"NOT A HEAD\r\n\r\n", POST, b"65\r\n"].concat()),
            None
        );
        assert_eq!(fed(&[POST, b"zz\r\n", POST, b"65\r\n"].concat()), None);
        let gzip = b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n65\r\n";
        assert_eq!(fed(gzip), None);
        let mut endless = Framing::new(100);
        assert_eq!(endless.feed(&vec![b'a'; MAX_HEAD + 10]), None);
        assert_eq!(endless.state, State::Off);
    }
}
