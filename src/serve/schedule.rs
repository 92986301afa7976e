//! When to try a close again: the retry schedule, as data.

use std::time::Duration;

/// The waits after each failed attempt (the last one repeats), and how long a close is
/// tried in all before it is given up. Jitter keeps many closes from retrying in step.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub waits: Vec<Duration>,
    pub give_up_after: Duration,
}

/// No `Retry-After` holds a close back longer than this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

impl Schedule {
    /// The wait after the `attempts`-th failed attempt (1 for the first), as the server's
    /// `Retry-After` asks if it asks for longer.
    pub fn wait(&self, attempts: u64, retry_after: Option<Duration>) -> Duration {
        let index = usize::try_from(attempts.saturating_sub(1)).unwrap_or(usize::MAX);
        let planned = self.waits[index.min(self.waits.len() - 1)];
        // Between three quarters and all of the planned wait.
        let jitter = planned / 4;
        let fraction = (crate::random::u64() % 1000) as f64 / 1000.0;
        let planned = planned - jitter + jitter.mul_f64(fraction);
        match retry_after {
            Some(asked) => planned.max(asked.min(MAX_RETRY_AFTER)),
            None => planned,
        }
    }
}

/// A duration as humantime reads it: `250ms`, `90s`, `2m`, `1h 30m`, `7d`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text.trim()).ok()
}

/// A list of durations separated by commas, at least one, none of them zero.
pub fn parse_waits(text: &str) -> Option<Vec<Duration>> {
    let waits: Option<Vec<Duration>> = text.split(',').map(parse_duration).collect();
    waits.filter(|waits| !waits.is_empty() && waits.iter().all(|wait| !wait.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Key, Setting};

    #[test]
    fn durations_take_units() {
        let secs = Duration::from_secs;
        assert_eq!(parse_duration(" 90s "), Some(secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(secs(120)));
        assert_eq!(parse_duration("1h 30m"), Some(secs(5400)));
        assert_eq!(parse_duration("7d"), Some(secs(7 * 86400)));
        for bad in ["", "h", "90", "-1s", "1e3", "forever"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(parse_waits("1s,0s"), None, "a zero wait would spin");
        let default = Setting::of(Key::RetrySchedule).default_text();
        assert_eq!(parse_waits(default).unwrap().len(), 9);
    }

    #[test]
    fn waits_follow_the_schedule_with_jitter_repeat_the_last_and_honour_retry_after() {
        let schedule = Schedule {
            waits: parse_waits("4s,40s").unwrap(),
            give_up_after: Duration::from_secs(3600),
        };
        for (attempts, planned) in [(1, 4), (2, 40), (3, 40), (50, 40)] {
            let planned = Duration::from_secs(planned);
            let wait = schedule.wait(attempts, None);
            assert!(
                wait >= planned * 3 / 4 && wait <= planned,
                "{attempts}: {wait:?}"
            );
        }
        let asked = schedule.wait(1, Some(Duration::from_secs(30)));
        assert_eq!(asked, Duration::from_secs(30));
        let capped = schedule.wait(1, Some(Duration::from_secs(86400)));
        assert_eq!(capped, MAX_RETRY_AFTER);
    }
}
