//! The one error type: what went wrong, what to do about it, and the exit code it maps to.

use std::fmt;

#[derive(Debug)]
pub struct Error {
    kind: Kind,
    message: String,
    hint: Option<String>,
    /// The server's answer, when there was one.
    answer: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Exit 2: the settings are wrong; nothing was sent.
    Config,
    /// Exit 1: Coveralls refused, in a way another try would not change.
    Refused,
    /// Exit 1: Coveralls failed or could not be reached; another try may pass.
    Unavailable,
    /// Exit 1: a deadline came before Coveralls answered.
    OutOfTime,
    /// Exit 3: a check the user asked for failed (expected jobs, fail-under); the build was
    /// closed. Never softened by `COVERALLS_FAIL_ON_ERROR=false`.
    Check,
}

impl Error {
    pub fn config(message: impl Into<String>) -> Self {
        Error::new(Kind::Config, message.into())
    }

    pub fn refused(message: impl Into<String>) -> Self {
        Error::new(Kind::Refused, message.into())
    }

    /// A check the user asked for did not pass.
    pub fn check(message: impl Into<String>) -> Self {
        Error::new(Kind::Check, message.into())
    }

    /// A failure that another attempt may get past.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::new(Kind::Unavailable, message.into())
    }

    /// Out of time, with the last attempt's error if there was one.
    pub fn out_of_time(last: Option<Error>) -> Self {
        let last = last.unwrap_or_else(|| Error::refused("no attempt made"));
        Error {
            kind: Kind::OutOfTime,
            ..last.context("out of time before Coveralls answered; the last")
        }
    }

    fn new(kind: Kind, message: String) -> Self {
        Error {
            kind,
            message,
            hint: None,
            answer: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_answer(mut self, answer: impl Into<String>) -> Self {
        self.answer = Some(answer.into());
        self
    }

    pub fn context(mut self, prefix: impl fmt::Display) -> Self {
        self.message = format!("{prefix}: {}", self.message);
        self
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether another attempt may get past this error: the one place that decides it, for
    /// the closer's retries and the receiver's answers alike.
    pub fn retryable(&self) -> bool {
        matches!(self.kind, Kind::Unavailable | Kind::OutOfTime)
    }

    /// The message alone, without the hint.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn answer(&self) -> Option<&str> {
        self.answer.as_deref()
    }

    pub fn exit_code(&self) -> u8 {
        match self.kind {
            Kind::Config => 2,
            Kind::Refused | Kind::Unavailable | Kind::OutOfTime => 1,
            Kind::Check => 3,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match &self.hint {
            Some(hint) => write!(f, "\nhint: {hint}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for Error {}
