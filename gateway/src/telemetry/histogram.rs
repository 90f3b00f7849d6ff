//! A Prometheus histogram over durations with fixed bucket bounds, in plain atomics.
//!
//! Observing is a binary search over a dozen bounds and two relaxed adds (the bucket and the sum),
//! with no lock. Buckets hold their own counts, not cumulative ones, and `_count` is their
//! total: a scrape racing an observation may miss it in the sum, but never sees a `+Inf`
//! bucket smaller than a finite one.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A histogram over fixed bucket bounds, in microseconds, ascending.
#[derive(Debug)]
pub(crate) struct Histogram {
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
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    pub fn observe(&self, value: Duration) {
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        let bucket = self.bounds.partition_point(|&bound| bound < micros);
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    /// Appends the `_bucket`, `_sum` and `_count` series of `name` to `out`.
    pub fn render(&self, out: &mut String, name: &str) {
        let mut cumulative = 0u64;
        for (index, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Relaxed);
            match self.bounds.get(index) {
                Some(&bound) => {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{le=\"{}\"}} {cumulative}",
                        seconds(bound)
                    );
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = seconds(self.sum_micros.load(Relaxed));
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// Microseconds as seconds, in the shortest decimal that reads back the same (`0.005`, `1`).
fn seconds(micros: u64) -> f64 {
    micros as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [u64; 3] = [5_000, 100_000, 1_000_000];

    fn series(text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
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
            .buckets
            .iter()
            .map(|bucket| bucket.load(Relaxed))
            .collect();
        assert_eq!(counts, [2, 2, 0, 1], "the last bucket is above every bound");
    }

    #[test]
    fn renders_cumulative_buckets_sum_and_count_in_seconds() {
        let histogram = Histogram::new(&BOUNDS);
        histogram.observe(Duration::from_millis(2));
        histogram.observe(Duration::from_millis(50));
        histogram.observe(Duration::from_millis(250));
        histogram.observe(Duration::from_secs(2));
        let mut text = String::new();
        histogram.render(&mut text, "h");
        assert_eq!(
            text,
            "h_bucket{le=\"0.005\"} 1\n\
             h_bucket{le=\"0.1\"} 2\n\
             h_bucket{le=\"1\"} 3\n\
             h_bucket{le=\"+Inf\"} 4\n\
             h_sum 2.302\n\
             h_count 4\n"
        );
        assert_eq!(series(&text, "h_sum"), 2.302);
    }

    #[test]
    fn an_empty_histogram_renders_every_series_at_zero() {
        let mut text = String::new();
        Histogram::new(&BOUNDS).render(&mut text, "h");
        assert_eq!(text.lines().count(), BOUNDS.len() + 3);
        assert!(text.contains("h_bucket{le=\"+Inf\"} 0\n"), "{text}");
        assert!(text.contains("h_sum 0\nh_count 0\n"), "{text}");
    }
}
