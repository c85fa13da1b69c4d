//! The metrics of `vmifs serve --metrics ADDR`, counted as requests are
//! answered (a request counts once its answer has been sent, streamed bodies
//! included — when its access-log line would be written).
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `vmifs_serve_requests_total` | counter | `route`, `method`, `status` | requests answered |
//! | `vmifs_serve_request_duration_seconds` | histogram | `route`, `method` | time from the request to the last byte of its answer |
//! | `vmifs_serve_sent_bytes_total` | counter | `route` | body bytes sent |
//! | `vmifs_serve_received_bytes_total` | counter | | upload (`PUT`) body bytes received |
//! | `vmifs_serve_auth_refusals_total` | counter | `reason` | requests refused by the token check: `unauthorized` (401), `forbidden` (403); only with `--tokens` |
//!
//! `route` is `object` (a key), `list` (`/?list`), `index` (a directory
//! page); `method` is `GET`, `HEAD`, `PUT`, `DELETE` or `other`; `status`
//! the numeric status. All three are bounded sets.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

use crate::fetch::latency::BOUNDS_US;
use crate::metrics::Families;

/// The request counters of one `vmifs serve`.
#[derive(Debug)]
pub struct ServeMetrics {
    registry: Registry,
    requests: IntCounterVec,
    durations: HistogramVec,
    sent: IntCounterVec,
    received: IntCounter,
    refusals: IntCounterVec,
}

/// The `route` label of a request for `path` with the query `query`.
pub fn route(path: &str, query: Option<&str>) -> &'static str {
    if path == "/"
        && query.is_some_and(|q| q.split('&').any(|p| p.split('=').next() == Some("list")))
    {
        "list"
    } else if path.ends_with('/') {
        "index"
    } else {
        "object"
    }
}

/// The `method` label: the methods the server answers, else `other`.
pub fn method(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        _ => "other",
    }
}

impl ServeMetrics {
    /// Counters at zero; `auth` when the server checks tokens (the refusal
    /// counters are then shown from the start).
    pub fn new(auth: bool) -> ServeMetrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("vmifs_serve_requests_total", "Requests answered."),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let buckets = BOUNDS_US.iter().map(|&b| b as f64 / 1e6).collect();
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "vmifs_serve_request_duration_seconds",
                "Time from a request to the last byte of its answer.",
            )
            .buckets(buckets),
            &["route", "method"],
        )
        .expect("valid metric");
        let sent = IntCounterVec::new(
            Opts::new("vmifs_serve_sent_bytes_total", "Body bytes sent."),
            &["route"],
        )
        .expect("valid metric");
        let received = IntCounter::new(
            "vmifs_serve_received_bytes_total",
            "Upload body bytes received.",
        )
        .expect("valid metric");
        let refusals = IntCounterVec::new(
            Opts::new(
                "vmifs_serve_auth_refusals_total",
                "Requests refused by the token check.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        if auth {
            for reason in ["unauthorized", "forbidden"] {
                refusals.with_label_values(&[reason]);
            }
        }
        received.inc_by(0);
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(durations.clone()),
            Box::new(sent.clone()),
            Box::new(received.clone()),
            Box::new(refusals.clone()),
        ] {
            registry.register(c).expect("distinct metric names");
        }
        ServeMetrics {
            registry,
            requests,
            durations,
            sent,
            received,
            refusals,
        }
    }

    /// One answered request.
    pub fn answered(&self, route: &str, method: &str, status: u16, sent: u64, took: Duration) {
        let status = status.to_string();
        self.requests
            .with_label_values(&[route, method, &status])
            .inc();
        self.durations
            .with_label_values(&[route, method])
            .observe(took.as_secs_f64());
        self.sent.with_label_values(&[route]).inc_by(sent);
    }

    /// Upload body bytes received.
    pub fn received(&self, bytes: u64) {
        self.received.inc_by(bytes);
    }

    /// A request the token check refused with `status` (401 or 403).
    pub fn refused(&self, status: u16) {
        let reason = if status == 403 {
            "forbidden"
        } else {
            "unauthorized"
        };
        self.refusals.with_label_values(&[reason]).inc();
    }

    /// The scrape body.
    pub fn encode(&self) -> String {
        let mut f = Families::default();
        f.extend(self.registry.gather());
        f.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_methods_are_bounded() {
        assert_eq!(route("/", Some("list&prefix=a")), "list");
        assert_eq!(route("/", Some("prefix=a&list=")), "list");
        assert_eq!(route("/", Some("listing")), "index");
        assert_eq!(route("/", None), "index");
        assert_eq!(route("/shards/", None), "index");
        assert_eq!(route("/shards/ab", Some("list")), "object");
        assert_eq!(method("GET"), "GET");
        assert_eq!(method("PATCH"), "other");
    }

    #[test]
    fn counts_what_was_answered() {
        let m = ServeMetrics::new(true);
        m.answered("object", "GET", 206, 4096, Duration::from_millis(3));
        m.answered("object", "GET", 206, 100, Duration::from_millis(30));
        m.answered("list", "GET", 200, 10, Duration::from_micros(100));
        m.received(512);
        m.refused(401);
        let text = m.encode();
        for line in [
            "vmifs_serve_requests_total{method=\"GET\",route=\"object\",status=\"206\"} 2",
            "vmifs_serve_sent_bytes_total{route=\"object\"} 4196",
            "vmifs_serve_received_bytes_total 512",
            "vmifs_serve_auth_refusals_total{reason=\"unauthorized\"} 1",
            "vmifs_serve_auth_refusals_total{reason=\"forbidden\"} 0",
            "vmifs_serve_request_duration_seconds_bucket{method=\"GET\",route=\"object\",le=\"0.005\"} 1",
            "vmifs_serve_request_duration_seconds_count{method=\"GET\",route=\"object\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
    }

    #[test]
    fn no_refusal_counters_without_tokens() {
        let text = ServeMetrics::new(false).encode();
        assert!(!text.contains("auth_refusals"), "{text}");
        assert!(
            text.contains("vmifs_serve_received_bytes_total 0"),
            "{text}"
        );
    }
}
