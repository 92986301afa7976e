//! One attempt at the Parallel Build Webhook: the request, and what its answer means.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use ureq::Agent;
use ureq::http::StatusCode;

use super::body::{Build, body};
use super::hints::{Sent, hint};
use crate::error::Error;
use crate::report::Reporter;

/// Bodies larger than this are not Coveralls answering.
pub(super) const MAX_ANSWER: u64 = 1 << 20;

/// A close, ready to send as often as it takes: the URL, the body, and what the hints need
/// (the kind of token, never the token).
pub struct Webhook<'a> {
    url: String,
    body: Vec<u8>,
    sent: Sent<'a>,
}

impl<'a> Webhook<'a> {
    pub fn new(endpoint: &str, build: &'a Build, token: &str) -> Self {
        Webhook {
            url: webhook_url(endpoint),
            body: serde_json::to_vec(&body(build, token)).expect("JSON serialises"),
            sent: Sent::new(build, token),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
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
#[derive(Debug)]
pub struct Failed {
    pub error: Error,
    /// The server's `Retry-After`.
    pub retry_after: Option<Duration>,
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Failed {
            error,
            retry_after: None,
        }
    }
}

/// One attempt: the request, and what its answer means. The closer's retry loop and the
/// receiver's background closer both make their attempts with this.
pub fn attempt(
    agent: &Agent,
    webhook: &Webhook<'_>,
    timeout: Duration,
    ui: &mut Reporter<'_>,
) -> Result<Closed, Failed> {
    let url = &webhook.url;
    let mut response = agent
        .post(url)
        .config()
        .timeout_global(Some(timeout))
        .build()
        .header("Content-Type", "application/json")
        .send(&webhook.body[..])
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
    answer.judge(&webhook.sent)
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
            // 405 too: Coveralls answers its maintenance page with it, to every method.
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

pub(super) fn status_line(status: StatusCode) -> String {
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
fn summarize(raw: &str) -> String {
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
fn one_line(text: &str, max: usize) -> String {
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
