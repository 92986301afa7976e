//! The closed build's coverage, from its public JSON (`{url}.json`).

use std::time::Duration;

use serde_json::Value;
use ureq::Agent;

use super::attempt::{MAX_ANSWER, status_line};
use crate::report::Reporter;

/// What the build's JSON (`{url}.json`) said of its coverage.
pub enum Coverage {
    /// `covered_percent`, and `coverage_change` where there is one.
    Known { percent: f64, change: Option<f64> },
    /// Not computed yet (`covered_percent` is null), or an answer worth asking again.
    NotYet(String),
    /// 401, 403 or 404: a private repository's build, which this client may not read.
    Private(String),
}

/// Ask for the coverage of the build at `url` (the close's answer's), without the token: it
/// never goes into a URL.
pub fn coverage(agent: &Agent, url: &str, timeout: Duration, ui: &mut Reporter<'_>) -> Coverage {
    let json_url = format!("{}.json", url.trim_end_matches('/'));
    ui.debug_block(&format!("GET {json_url}"), &[]);
    let answer = agent
        .get(&json_url)
        .config()
        .timeout_global(Some(timeout))
        .build()
        .call();
    let mut response = match answer {
        Ok(response) => response,
        Err(err) => return Coverage::NotYet(format!("could not reach {json_url}: {err}")),
    };
    let status = response.status();
    let raw = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_vec()
        .unwrap_or_default();
    ui.debug_block(
        &format!("answer: {}", status_line(status)),
        &[&String::from_utf8_lossy(&raw)],
    );
    if matches!(status.as_u16(), 401 | 403 | 404) {
        return Coverage::Private(format!("{json_url} answered {}", status_line(status)));
    }
    let json: Option<Value> = serde_json::from_slice(&raw).ok();
    let number = |name: &str| json.as_ref()?.get(name)?.as_f64();
    match (status.is_success(), number("covered_percent")) {
        (true, Some(percent)) => Coverage::Known {
            percent,
            change: number("coverage_change"),
        },
        (true, None) => Coverage::NotYet("the coverage is not computed yet".to_owned()),
        (false, _) => Coverage::NotYet(format!("{json_url} answered {}", status_line(status))),
    }
}
