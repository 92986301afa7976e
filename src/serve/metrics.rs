//! `GET /metrics`, in the Prometheus (OpenMetrics) text format, with the Prometheus project's
//! own client. Labels carry only names from fixed lists: never a token, a secret, a project
//! or a build number, which a sender controls or which would grow without bound.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::store::{Counts, now_ms};

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    source: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabels {
    how: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    deliveries: Family<DeliveryLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    close_seconds: Histogram,
    pending: Gauge,
    failed: Gauge,
    oldest_pending: Gauge<f64, AtomicU64>,
    commits: Counter,
    shed: Family<ShedLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let metrics = Metrics {
            registry: Registry::with_prefix("coveralls_finish"),
            deliveries: Family::default(),
            attempts: Family::default(),
            // 5 ms to about 20 s.
            close_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 13)),
            pending: Gauge::default(),
            failed: Gauge::default(),
            oldest_pending: Gauge::default(),
            commits: Counter::default(),
            shed: Family::default(),
        };
        let mut registry = metrics.registry;
        registry.register(
            "deliveries",
            "Deliveries received on a source's route, by what was answered",
            metrics.deliveries.clone(),
        );
        registry.register(
            "close_attempts",
            "Attempts at closing a build, by their result",
            metrics.attempts.clone(),
        );
        registry.register(
            "close_seconds",
            "How long one attempt at closing a build took",
            metrics.close_seconds.clone(),
        );
        registry.register(
            "pending_closes",
            "Closes accepted and not made yet",
            metrics.pending.clone(),
        );
        registry.register(
            "failed_closes",
            "Closes given up or refused, kept until dropped or retried",
            metrics.failed.clone(),
        );
        registry.register(
            "oldest_pending_seconds",
            "How long ago the oldest pending close was received; 0 with none",
            metrics.oldest_pending.clone(),
        );
        registry.register(
            "store_commits",
            "Transactions the store committed, each with every delivery waiting for it",
            metrics.commits.clone(),
        );
        registry.register(
            "connections_shed",
            "Connections at the cap: the longest idle cut for a newcomer (idle), a newcomer \
             answered 503 (refused) or closed unanswered (dropped)",
            metrics.shed.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// A connection went at the cap: `idle`, `refused` or `dropped`.
    pub fn shed(&self, how: &'static str) {
        self.shed.get_or_create(&ShedLabels { how }).inc();
    }

    /// A delivery on `source`'s route was answered with `outcome` (closed, queued,
    /// duplicate, ignored, rejected, refused, unavailable).
    pub fn delivered(&self, source: &'static str, outcome: &'static str) {
        let labels = DeliveryLabels { source, outcome };
        self.deliveries.get_or_create(&labels).inc();
    }

    /// An attempt at a close ended with `result` (closed, retry, failed) after `took`.
    pub fn attempted(&self, result: &'static str, took: Duration) {
        self.attempts.get_or_create(&AttemptLabels { result }).inc();
        self.close_seconds.observe(took.as_secs_f64());
    }

    /// The text a scrape gets, with the store's figures as they are now (`commits`: the
    /// transactions it has committed).
    pub fn render(&self, counts: Counts, commits: u64) -> String {
        self.commits
            .inc_by(commits.saturating_sub(self.commits.get()));
        self.pending.set(counts.pending);
        self.failed.set(counts.failed);
        let oldest = counts
            .oldest_pending
            .map_or(0.0, |at| (now_ms() - at).max(0) as f64 / 1000.0);
        self.oldest_pending.set(oldest);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample named (with its labels) exactly so.
    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
    }

    #[test]
    fn figures_move_and_read_back_as_numbers() {
        let metrics = Metrics::new();
        let empty = metrics.render(Counts::default(), 0);
        assert_eq!(sample(&empty, "coveralls_finish_pending_closes"), Some(0.0));
        assert_eq!(
            sample(&empty, "coveralls_finish_oldest_pending_seconds"),
            Some(0.0)
        );
        metrics.delivered("circleci", "closed");
        metrics.delivered("circleci", "closed");
        metrics.delivered("magnum", "queued");
        metrics.attempted("retry", Duration::from_millis(30));
        let counts = Counts {
            pending: 3,
            failed: 1,
            oldest_pending: Some(now_ms() - 90_000),
        };
        let text = metrics.render(counts, 7);
        let value = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("{name}:\n{text}"));
        let closed = r#"coveralls_finish_deliveries_total{source="circleci",outcome="closed"}"#;
        assert_eq!(value(closed), 2.0);
        let queued = r#"coveralls_finish_deliveries_total{source="magnum",outcome="queued"}"#;
        assert_eq!(value(queued), 1.0);
        let retried = r#"coveralls_finish_close_attempts_total{result="retry"}"#;
        assert_eq!(value(retried), 1.0);
        assert_eq!(value("coveralls_finish_close_seconds_count"), 1.0);
        assert_eq!(value("coveralls_finish_pending_closes"), 3.0);
        assert_eq!(value("coveralls_finish_failed_closes"), 1.0);
        let oldest = value("coveralls_finish_oldest_pending_seconds");
        assert!((90.0..100.0).contains(&oldest), "{oldest}");
        assert_eq!(value("coveralls_finish_store_commits_total"), 7.0);
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
