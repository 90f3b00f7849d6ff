//! A Prometheus histogram over durations with fixed bucket bounds, in plain atomics, encoded
//! through prometheus-client.
//!
//! prometheus-client's own histogram takes a lock per observation; this one is a binary search
//! over a dozen bounds and two relaxed adds (the bucket and the sum). Buckets hold their own
//! counts, not cumulative ones, and `_count` is their total: a scrape racing an observation may
//! miss it in the sum, but never sees a `+Inf` bucket smaller than a finite one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// A histogram over fixed bucket bounds, in microseconds, ascending. Clones share the counts,
/// so one handle can be registered and another observed.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    counts: Arc<Counts>,
}

#[derive(Debug)]
struct Counts {
    bounds: &'static [u64],
    /// `buckets[i]`: observations at most `bounds[i]` and above `bounds[i - 1]`; the last
    /// holds those above every bound.
    buckets: Box<[AtomicU64]>,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// A histogram over `bounds`: microseconds, strictly ascending.
    pub fn new(bounds: &'static [u64]) -> Self {
        debug_assert!(bounds.windows(2).all(|pair| pair[0] < pair[1]));
        Self {
            counts: Arc::new(Counts {
                bounds,
                buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum_micros: AtomicU64::new(0),
            }),
        }
    }

    /// Counts one observation.
    pub fn observe(&self, value: Duration) {
        let counts = &*self.counts;
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        let bucket = counts.bounds.partition_point(|&bound| bound < micros);
        counts.buckets[bucket].fetch_add(1, Relaxed);
        counts.sum_micros.fetch_add(micros, Relaxed);
    }
}

/// So that a family of histograms, one per label set, can be registered.
impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    /// Bounds in seconds with each bucket's own count; the encoder makes them cumulative.
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts = &*self.counts;
        let upper_bounds = counts
            .bounds
            .iter()
            .map(|&bound| seconds(bound))
            .chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = upper_bounds
            .zip(counts.buckets.iter().map(|bucket| bucket.load(Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, count)| count).sum();
        let sum = seconds(counts.sum_micros.load(Relaxed));
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn seconds(micros: u64) -> f64 {
    micros as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode_registry;
    use prometheus_client::registry::Registry;

    use super::*;

    const BOUNDS: [u64; 3] = [5_000, 100_000, 1_000_000];

    fn render(histogram: &Histogram) -> String {
        let mut registry = Registry::default();
        registry.register("h", "A histogram", histogram.clone());
        let mut text = String::new();
        encode_registry(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let histogram = Histogram::new(&BOUNDS);
        // On a bound: that bucket (`le` is "less than or equal").
        histogram.observe(Duration::from_millis(5));
        histogram.observe(Duration::from_micros(5_001));
        histogram.observe(Duration::from_millis(100));
        histogram.observe(Duration::from_secs(3));
        histogram.observe(Duration::ZERO);
        let counts: Vec<u64> = histogram
            .counts
            .buckets
            .iter()
            .map(|bucket| bucket.load(Relaxed))
            .collect();
        assert_eq!(counts, [2, 2, 0, 1], "the last bucket is above every bound");
    }

    #[test]
    fn encodes_cumulative_buckets_sum_and_count_in_seconds() {
        let histogram = Histogram::new(&BOUNDS);
        histogram.observe(Duration::from_millis(2));
        histogram.observe(Duration::from_millis(50));
        histogram.observe(Duration::from_millis(250));
        histogram.observe(Duration::from_secs(2));
        assert_eq!(
            render(&histogram),
            "# HELP h A histogram.\n\
             # TYPE h histogram\n\
             h_sum 2.302\n\
             h_count 4\n\
             h_bucket{le=\"0.005\"} 1\n\
             h_bucket{le=\"0.1\"} 2\n\
             h_bucket{le=\"1.0\"} 3\n\
             h_bucket{le=\"+Inf\"} 4\n"
        );
    }

    #[test]
    fn an_empty_histogram_encodes_every_series_at_zero() {
        let text = render(&Histogram::new(&BOUNDS));
        assert_eq!(text.lines().count(), 2 + BOUNDS.len() + 3);
        assert!(text.contains("h_bucket{le=\"+Inf\"} 0\n"), "{text}");
        assert!(text.contains("h_sum 0.0\nh_count 0\n"), "{text}");
    }
}
