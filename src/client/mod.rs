//! The Coveralls client: one [`attempt()`] at the Parallel Build Webhook, and [`close`], the
//! closer's retry policy over it. The receiver's closes call the same entry.

mod agent;
mod attempt;
mod body;
mod coverage;
mod hints;
mod tls;

use std::time::{Duration, Instant};

use ureq::Agent;

pub use agent::agent;
#[cfg(feature = "serve")]
pub use agent::agents;
pub use attempt::{Closed, Failed, Webhook, attempt, webhook_url};
pub use body::{Build, body};
pub use coverage::{Coverage, coverage};

use crate::error::Error;
use crate::report::Reporter;

pub const USER_AGENT: &str = concat!("coveralls-finish/", env!("CARGO_PKG_VERSION"));
/// The longest wait between two attempts, whether backoff or `Retry-After` asks for more.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Under a deadline, no attempt starts with less time than this left.
const MIN_ATTEMPT: Duration = Duration::from_millis(500);
/// Under a deadline, an attempt may take half the time left, or at least this.
const SHARE_FLOOR: Duration = Duration::from_secs(2);

/// Where Coveralls is, and how patiently to talk to it.
#[derive(Debug, Clone)]
pub struct Coveralls {
    /// A base URL without a trailing `/`, checked by [`crate::config::parse_endpoint`].
    pub endpoint: String,
    pub retries: u32,
    /// How long one attempt may take, from connecting to the last byte.
    pub timeout: Duration,
}

/// Close `build` with `token`: the one entry for the closer and the receiver. Builds the
/// request, retries what may pass, and logs each retry with its reason.
///
/// With a `deadline` (the receiver must answer its caller in time), every attempt is cut to
/// fit, and no retry starts that could not finish: the error is then [`crate::error::Kind::OutOfTime`].
pub fn close(
    agent: &Agent,
    coveralls: &Coveralls,
    build: &Build,
    token: &str,
    deadline: Option<Instant>,
    ui: &mut Reporter,
) -> Result<Closed, Error> {
    let webhook = Webhook::new(&coveralls.endpoint, build, token);
    let attempts = coveralls.retries + 1;
    let remaining = || deadline.map(|d| d.saturating_duration_since(Instant::now()));
    for number in 1..=attempts {
        let timeout = match remaining() {
            Some(left) if left < MIN_ATTEMPT => return Err(Error::out_of_time(None)),
            // At most half of what is left (but not under 2s), so that one stalled
            // connection leaves time to try a fresh one.
            Some(left) => left.min(coveralls.timeout).min((left / 2).max(SHARE_FLOOR)),
            None => coveralls.timeout,
        };
        let url = webhook.url();
        ui.debug_block(&format!("POST {url} (attempt {number}/{attempts})"), &[]);
        let Failed { error, retry_after } = match attempt(agent, &webhook, timeout, ui) {
            Ok(closed) => return Ok(closed),
            Err(failed) => failed,
        };
        if !error.retryable() {
            return Err(error);
        }
        if number == attempts {
            return Err(match attempts {
                1 => error,
                _ => error.context(format!("gave up after {attempts} attempts; the last")),
            });
        }
        let (wait, why) = match retry_after {
            Some(after) => (after.min(MAX_BACKOFF), "as Retry-After asks"),
            None => (backoff(number), "backing off"),
        };
        if remaining().is_some_and(|left| left < wait + MIN_ATTEMPT) {
            return Err(Error::out_of_time(Some(error)));
        }
        ui.log(&format!(
            "attempt {number}/{attempts} failed: {}; retrying in {:.1}s ({why})",
            error.message(),
            wait.as_secs_f64()
        ));
        std::thread::sleep(wait);
    }
    unreachable!("the loop returns on its last attempt")
}

/// Exponential backoff with jitter: about 1s, 2s, 4s, … capped, each between half and all of it.
fn backoff(attempt: u32) -> Duration {
    let full = FIRST_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let jitter = crate::random::u64() % 1000;
    full / 2 + (full / 2).mul_f64(jitter as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        for attempt in 1..=8 {
            let full = Duration::from_secs(1 << (attempt - 1)).min(MAX_BACKOFF);
            let wait = backoff(attempt);
            assert!(
                wait >= full / 2 && wait <= full,
                "attempt {attempt}: {wait:?}"
            );
        }
        assert!(backoff(40) <= MAX_BACKOFF);
    }
}
