//! The receiver's log: one line a delivery, on standard error. Every field that a sender
//! controls is escaped and cut short, so that a line can neither be forged nor carry a
//! terminal escape; secrets are redacted like everywhere else.

use std::time::Instant;

use serde_json::Value;

use super::App;
use super::reply::Reply;

/// The longest a field may be in a log line.
const MAX_FIELD: usize = 200;

/// What a delivery's log line says beside its method, path and status, filled in as the
/// delivery is handled.
#[derive(Default)]
pub struct LogFields {
    pub event: Option<String>,
    pub id: Option<String>,
    pub project: Option<String>,
    pub build: Option<String>,
    pub outcome: Option<String>,
}

/// `text` as one log field: as it is when it is a plain token (an id, a slug, a number),
/// else quoted with every control character escaped; at most `max` characters.
pub fn field(text: &str, max: usize) -> String {
    let mut cut: String = text.chars().take(max).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    let plain = !cut.is_empty()
        && cut
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/@+#…".contains(c));
    if plain { cut } else { format!("{cut:?}") }
}

/// Text from elsewhere (Coveralls' answers, errors) as part of a log line: every control
/// character escaped, so that it can neither start a line nor drive a terminal; at most
/// `max` characters.
pub fn text(text: &str, max: usize) -> String {
    let mut line = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == max {
            line.push('…');
            break;
        }
        match c {
            c if c.is_control() => line.extend(c.escape_debug()),
            c => line.push(c),
        }
    }
    line
}

impl App {
    /// One line of the log, redacted.
    pub fn log_line(&self, text: &str) {
        let (mut out, mut err) = (std::io::sink(), std::io::stderr());
        self.reporter(&mut out, &mut err).log(text);
    }

    pub fn log_delivery(
        &self,
        method: &hyper::Method,
        path: &str,
        reply: &Reply,
        fields: &LogFields,
        arrival: Instant,
    ) {
        let value = |value: &Option<String>| match value {
            Some(value) => field(value, MAX_FIELD),
            None => "-".to_owned(),
        };
        let outcome = fields.outcome.clone().unwrap_or_else(|| {
            let said = reply.body.get("error").or(reply.body.get("ignored"));
            said.and_then(Value::as_str).unwrap_or("ok").to_owned()
        });
        let outcome: String = outcome.chars().take(MAX_FIELD).collect();
        self.log_line(&format!(
            "{} {path} event={} id={} project={} build={} status={} outcome={outcome:?} ms={:.1}",
            field(method.as_str(), 32),
            value(&fields.event),
            value(&fields.id),
            value(&fields.project),
            value(&fields.build),
            reply.status,
            arrival.elapsed().as_secs_f64() * 1000.0,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_plain_or_quoted_and_escaped_and_short() {
        assert_eq!(field("fda08377-fe7e-46b1", 50), "fda08377-fe7e-46b1");
        assert_eq!(field("gh/acme/api", 50), "gh/acme/api");
        assert_eq!(
            field("x\nPOST /circleci status=200\u{1b}[2J", 100),
            r#""x\nPOST /circleci status=200\u{1b}[2J""#
        );
        assert_eq!(field("a b", 50), r#""a b""#);
        assert_eq!(field("", 50), r#""""#);
        assert_eq!(field(&"y".repeat(300), 5), "yyyyy…");
    }
}
