//! Prometheus metrics: what the mount daemon (`[metrics] listen`) and
//! `vmifs serve --metrics ADDR` expose at `GET /metrics`, in the Prometheus
//! text format (version 0.0.4), encoded by the `prometheus` crate.
//!
//! - [`mount`] turns the daemon's [`Status`](crate::mount::control::Status)
//!   document and the per-store latency histograms into metric families at
//!   scrape time: the counters the fetcher, the cache and the image readers
//!   keep anyway are read, never duplicated on the read path.
//! - [`serve`] counts the requests of `vmifs serve` as they are answered.
//! - [`endpoint`] binds the listener (an address that is bad or taken is an
//!   error at start-up) and answers `/metrics` with axum, the HTTP stack the
//!   server already uses.
//!
//! Names start with `vmifs_`, carry their unit (`_bytes`, `_seconds`) and
//! end in `_total` for counters. Labels are bounded: `store` (the configured
//! stores), `image` (`name:tag`, the tags the mount shows), and for serve
//! `route`, `method`, `status`.
//!
//! Why not the OpenMetrics encoder of `prometheus-client`: `promtool check
//! metrics`, which CI runs on a real scrape, reads the classic text format,
//! in which an OpenMetrics counter (`# TYPE x counter`, sample `x_total`)
//! parses as an untyped family without help text and fails the check.
//! Prometheus scrapes either format.

pub mod endpoint;
pub mod mount;
pub mod serve;

use prometheus::proto::MetricType;
use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily};

use crate::fetch::latency::LatencySnapshot;

/// The `Content-Type` of a scrape.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Label names and values of one sample.
pub type Labels = Vec<(&'static str, String)>;

/// Metric families being assembled for one scrape.
#[derive(Debug, Default)]
pub struct Families(Vec<MetricFamily>);

impl Families {
    /// A counter family (`name` ends in `_total`), one sample per label set.
    pub fn counter(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        let metrics = samples.into_iter().map(|(labels, v)| {
            let mut c = Counter::default();
            c.set_value(v);
            let mut m = metric(labels);
            m.set_counter(c);
            m
        });
        self.push(name, help, MetricType::COUNTER, metrics);
    }

    /// A gauge family, one sample per label set.
    pub fn gauge(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        let metrics = samples.into_iter().map(|(labels, v)| {
            let mut g = Gauge::default();
            g.set_value(v);
            let mut m = metric(labels);
            m.set_gauge(g);
            m
        });
        self.push(name, help, MetricType::GAUGE, metrics);
    }

    /// A histogram family (`name` ends in the unit, e.g. `_seconds`).
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, LatencySnapshot)>,
    ) {
        let metrics = samples.into_iter().map(|(labels, s)| {
            let mut h = Histogram::default();
            h.set_sample_count(s.count);
            h.set_sample_sum(s.sum_seconds);
            h.set_bucket(
                s.buckets
                    .iter()
                    .map(|&(le, n)| {
                        let mut b = Bucket::default();
                        b.set_upper_bound(le);
                        b.set_cumulative_count(n);
                        b
                    })
                    .collect(),
            );
            let mut m = metric(labels);
            m.set_histogram(h);
            m
        });
        self.push(name, help, MetricType::HISTOGRAM, metrics);
    }

    /// Families gathered elsewhere (a `prometheus::Registry`).
    pub fn extend(&mut self, families: Vec<MetricFamily>) {
        self.0.extend(families);
    }

    fn push(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        metrics: impl Iterator<Item = Metric>,
    ) {
        let metrics: Vec<Metric> = metrics.collect();
        // A family without samples is not valid in the text format.
        if metrics.is_empty() {
            return;
        }
        let mut f = MetricFamily::default();
        f.set_name(name.to_string());
        f.set_help(help.to_string());
        f.set_field_type(kind);
        f.set_metric(metrics);
        self.0.push(f);
    }

    /// The names of the families, in order.
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|f| f.name()).collect()
    }

    /// The scrape body.
    pub fn encode(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        match prometheus::TextEncoder::new().encode(&self.0, &mut buf) {
            Ok(()) => String::from_utf8(buf).unwrap_or_default(),
            // Only families without samples or names fail, and `push`
            // makes neither.
            Err(e) => format!("# vmifs: cannot encode the metrics: {e}\n"),
        }
    }
}

fn metric(labels: Labels) -> Metric {
    let mut m = Metric::default();
    m.set_label(
        labels
            .into_iter()
            .map(|(k, v)| {
                let mut l = LabelPair::default();
                l.set_name(k.to_string());
                l.set_value(v);
                l
            })
            .collect(),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_with_escaped_labels_and_cumulative_buckets() {
        let mut f = Families::default();
        f.counter(
            "vmifs_x_total",
            "Things.",
            [(vec![("store", "a\"b".to_string())], 3.0)],
        );
        f.gauge("vmifs_empty", "Nothing.", []);
        f.histogram(
            "vmifs_d_seconds",
            "Durations.",
            [(
                vec![],
                LatencySnapshot {
                    buckets: vec![(0.001, 1), (0.01, 2)],
                    sum_seconds: 0.5,
                    count: 3,
                },
            )],
        );
        let text = f.encode();
        assert_eq!(
            text,
            "# HELP vmifs_x_total Things.\n\
             # TYPE vmifs_x_total counter\n\
             vmifs_x_total{store=\"a\\\"b\"} 3\n\
             # HELP vmifs_d_seconds Durations.\n\
             # TYPE vmifs_d_seconds histogram\n\
             vmifs_d_seconds_bucket{le=\"0.001\"} 1\n\
             vmifs_d_seconds_bucket{le=\"0.01\"} 2\n\
             vmifs_d_seconds_bucket{le=\"+Inf\"} 3\n\
             vmifs_d_seconds_sum 0.5\n\
             vmifs_d_seconds_count 3\n"
        );
        assert_eq!(f.names(), ["vmifs_x_total", "vmifs_d_seconds"]);
    }
}
