//! What a run learns back after the close, and the checks the user asked for: the jobs that
//! arrived against the jobs expected, and the build's coverage (waited for) against a
//! threshold. A failed check is exit 3, which `COVERALLS_FAIL_ON_ERROR=false` never softens.

use std::time::{Duration, Instant};

use ureq::Agent;

use crate::client::{self, Closed, Coverage, Coveralls};
use crate::error::Error;
use crate::report::Reporter;

/// How long a threshold waits for the coverage when no wait was given.
pub const WAIT_FOR_FAIL_UNDER: Duration = Duration::from_secs(120);
/// Asking again for the coverage: after 1 s, then 2 s, 4 s, … at most 10 s apart.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default)]
pub struct Checks {
    pub expected_jobs: Option<u64>,
    /// Zero: do not wait for the coverage.
    pub wait: Duration,
    pub fail_under: Option<f64>,
}

/// The build's coverage, in percent, and its change from the build before.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub percent: f64,
    pub change: Option<f64>,
}

impl Figures {
    /// `87.52% (-0.31)`.
    pub fn describe(&self) -> String {
        match self.change {
            Some(change) => format!("{:.2}% ({change:+.2})", self.percent),
            None => format!("{:.2}%", self.percent),
        }
    }
}

impl Checks {
    /// What would be learned and checked after the close, for a dry run; `None` for nothing.
    pub fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(jobs) = self.expected_jobs {
            parts.push(format!("expect at least {jobs} jobs in the closed build"));
        }
        if !self.wait.is_zero() {
            parts.push(format!("wait up to {:?} for its coverage", self.wait));
        }
        if let Some(threshold) = self.fail_under {
            parts.push(format!("fail under {threshold}% coverage"));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// Wait for the closed build's coverage, if asked to: `Ok(None)` where not asked, or where no
/// figure came and none was needed (a warning says why); an error (exit 1) where a threshold
/// needed the figure.
pub fn wait(
    agent: &Agent,
    closed: &Closed,
    checks: &Checks,
    coveralls: &Coveralls,
    ui: &mut Reporter<'_>,
) -> Result<Option<Figures>, Error> {
    if checks.wait.is_zero() {
        return Ok(None);
    }
    let Some(url) = &closed.url else {
        return without_a_figure(
            checks,
            "the answer holds no build URL to ask".to_owned(),
            ui,
        );
    };
    let deadline = Instant::now() + checks.wait;
    let mut pause = FIRST_PAUSE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = coveralls.timeout.min(left).max(Duration::from_millis(500));
        let why = match client::coverage(agent, url, timeout, ui) {
            Coverage::Known { percent, change } => return Ok(Some(Figures { percent, change })),
            Coverage::Private(why) => {
                let why = format!(
                    "{why}: the build of a private repository cannot be read without a login, \
                     so its coverage is not known here"
                );
                return without_a_figure(checks, why, ui);
            }
            Coverage::NotYet(why) => why,
        };
        if Instant::now() + pause >= deadline {
            let why = format!("no coverage within {:?} ({why})", checks.wait);
            return without_a_figure(checks, why, ui);
        }
        ui.log(&format!(
            "no coverage yet ({why}); asking again in {}s",
            pause.as_secs()
        ));
        std::thread::sleep(pause);
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// No figure: a warning, or, where a threshold needed it, an ordinary failure.
fn without_a_figure(
    checks: &Checks,
    why: String,
    ui: &mut Reporter<'_>,
) -> Result<Option<Figures>, Error> {
    match checks.fail_under {
        Some(threshold) => Err(Error::unavailable(format!(
            "{why}, so the coverage could not be checked against {threshold}%"
        ))),
        None => {
            ui.warning(&why);
            Ok(None)
        }
    }
}

/// The checks asked for, on what the close and the wait told: every one that failed, as one
/// error of exit code 3.
pub fn verdict(closed: &Closed, figures: Option<Figures>, checks: &Checks) -> Result<(), Error> {
    let mut failed = Vec::new();
    let mut hint = None;
    if let Some(expected) = checks.expected_jobs {
        if closed.jobs.is_none_or(|jobs| jobs < expected) {
            let arrived = closed
                .jobs
                .map_or("an unknown number".to_owned(), |j| j.to_string());
            failed.push(format!(
                "{arrived} of {expected} expected jobs arrived before the build was closed \
                 (Coveralls cannot reopen it)"
            ));
            hint = Some(
                "the close came before every upload: check that the closing job needs every \
                 upload job (`needs:`), that each upload sets `parallel: true`, and that each \
                 has a `flag-name` of its own",
            );
        }
    }
    if let (Some(threshold), Some(figures)) = (checks.fail_under, figures) {
        if figures.percent < threshold {
            failed.push(format!(
                "the coverage, {:.2}%, is under {threshold}%",
                figures.percent
            ));
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    let error = Error::check(failed.join("; and "));
    Err(match hint {
        Some(hint) => error.with_hint(hint),
        None => error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(jobs: Option<u64>) -> Closed {
        Closed {
            url: Some("https://coveralls.io/builds/1".to_owned()),
            jobs,
            raw: String::new(),
        }
    }

    #[test]
    fn the_checks_pass_or_say_every_one_that_failed() {
        let checks = Checks {
            expected_jobs: Some(6),
            wait: Duration::ZERO,
            fail_under: Some(80.0),
        };
        let met = Figures {
            percent: 87.52,
            change: Some(-0.31),
        };
        assert!(verdict(&closed(Some(6)), Some(met), &checks).is_ok());
        let low = Figures {
            percent: 79.994,
            change: None,
        };
        let error = verdict(&closed(Some(4)), Some(low), &checks).unwrap_err();
        assert_eq!(error.exit_code(), 3);
        let text = error.to_string();
        assert!(text.contains("4 of 6 expected jobs arrived"), "{text}");
        assert!(
            text.contains("the coverage, 79.99%, is under 80%"),
            "{text}"
        );
        assert!(
            text.contains("hint: the close came before every upload"),
            "{text}"
        );
        let text = verdict(&closed(None), None, &checks)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("an unknown number of 6 expected jobs"),
            "{text}"
        );
    }

    #[test]
    fn figures_read_as_a_person_would_write_them() {
        let figures = Figures {
            percent: 87.5238,
            change: Some(0.3),
        };
        assert_eq!(figures.describe(), "87.52% (+0.30)");
        assert_eq!(Checks::default().describe(), None);
    }
}
