//! An answer to a delivery: a status and a JSON body.

use serde_json::{Value, json};

/// A status and a JSON body (or a text of another type: `/metrics`); `hang_up` ends the
/// connection after it (`Connection: close`).
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    /// A body that is not JSON, and its content type.
    pub text: Option<(&'static str, String)>,
    pub hang_up: bool,
}

impl Reply {
    pub fn new(status: u16, body: Value) -> Self {
        Reply {
            status,
            body,
            text: None,
            hang_up: false,
        }
    }

    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Reply::new(status, json!({ "error": message.into() }))
    }

    /// 200 with `text` of `content_type`.
    pub fn text(content_type: &'static str, text: String) -> Self {
        Reply {
            text: Some((content_type, text)),
            ..Reply::new(200, Value::Null)
        }
    }

    pub fn ignored(why: impl Into<String>) -> Self {
        Reply::new(202, json!({ "ignored": why.into() }))
    }

    /// The same answer, and the connection closed after it.
    pub fn hang_up(mut self) -> Self {
        self.hang_up = true;
        self
    }
}
