//! The gauges that exist only while there is something to report: the served certificate's
//! expiry, and the age and size of the JWK set in use. A registered metric is always
//! exposed, so these are a collector that writes them at scrape time, when set.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use wsfleet_config::metric_names as names;

use super::unix_millis;

/// The certificate gauge's value while no certificate is served.
const NO_CERTIFICATE: i64 = i64::MIN;
/// The JWK set's fetch time while no set has been fetched.
const NO_KEYS: i64 = i64::MIN;

#[derive(Debug)]
pub(super) struct Held {
    /// notAfter of the served certificate in Unix seconds; [`NO_CERTIFICATE`] without one.
    certificate_not_after: AtomicI64,
    /// When the keys in use were fetched, in Unix milliseconds; [`NO_KEYS`] before the first.
    jwks_fetched_at: AtomicI64,
    /// Usable keys in the last JWK set fetched.
    jwks_keys: AtomicU64,
}

impl Default for Held {
    fn default() -> Self {
        Self {
            certificate_not_after: AtomicI64::new(NO_CERTIFICATE),
            jwks_fetched_at: AtomicI64::new(NO_KEYS),
            jwks_keys: AtomicU64::new(0),
        }
    }
}

impl Held {
    pub(super) fn certificate_served(&self, not_after: Option<i64>) {
        self.certificate_not_after
            .store(not_after.unwrap_or(NO_CERTIFICATE), Relaxed);
    }

    pub(super) fn jwks_fetched(&self, keys: usize, at_unix_millis: i64) {
        self.jwks_keys.store(keys as u64, Relaxed);
        self.jwks_fetched_at.store(at_unix_millis, Relaxed);
    }

    pub(super) fn jwks_not_in_use(&self) {
        self.jwks_fetched_at.store(NO_KEYS, Relaxed);
        self.jwks_keys.store(0, Relaxed);
    }

    /// The series held at `now`.
    fn encode_at(
        &self,
        encoder: &mut DescriptorEncoder,
        now: SystemTime,
    ) -> Result<(), std::fmt::Error> {
        let not_after = self.certificate_not_after.load(Relaxed);
        if not_after != NO_CERTIFICATE {
            gauge(
                encoder,
                names::CERTIFICATE_NOT_AFTER_SECONDS,
                "notAfter of the certificate served to new clients, in Unix seconds.",
                ConstGauge::new(not_after),
            )?;
        }
        let fetched_at = self.jwks_fetched_at.load(Relaxed);
        if fetched_at == NO_KEYS {
            return Ok(());
        }
        let age_millis = (unix_millis(now) - fetched_at).max(0);
        gauge(
            encoder,
            names::JWKS_KEY_AGE_SECONDS,
            "Seconds since the JWK set in use was fetched; grows while the provider fails.",
            ConstGauge::new(age_millis as f64 / 1000.0),
        )?;
        let keys = i64::try_from(self.jwks_keys.load(Relaxed)).unwrap_or(i64::MAX);
        gauge(
            encoder,
            names::JWKS_KEYS,
            "Usable keys in the JWK set in use.",
            ConstGauge::new(keys),
        )
    }
}

impl Collector for Held {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_at(&mut encoder, SystemTime::now())
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, value.metric_type())?;
    value.encode(metric)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use prometheus_client::encoding::text::encode_registry;
    use prometheus_client::registry::Registry;

    use super::*;

    /// What `held` writes at `now`, through a registry as a scrape does.
    fn render_at(held: &Arc<Held>, now: SystemTime) -> String {
        #[derive(Debug)]
        struct At(Arc<Held>, SystemTime);
        impl Collector for At {
            fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
                self.0.encode_at(&mut encoder, self.1)
            }
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(At(held.clone(), now)));
        let mut text = String::new();
        encode_registry(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn the_key_age_is_counted_from_the_fetch_to_the_scrape() {
        let held = Arc::new(Held::default());
        let fetched = UNIX_EPOCH + Duration::from_secs(1_000);
        held.jwks_fetched(3, unix_millis(fetched));
        let text = render_at(&held, fetched + Duration::from_millis(90_500));
        assert!(
            text.contains("wsfleet_gateway_jwks_key_age_seconds 90.5\n"),
            "{text}"
        );
        assert!(text.contains("wsfleet_gateway_jwks_keys 3\n"), "{text}");
        assert!(
            text.contains("# TYPE wsfleet_gateway_jwks_key_age_seconds gauge\n"),
            "{text}"
        );
        // A clock that went back: the age is 0, never negative.
        let text = render_at(&held, fetched - Duration::from_secs(5));
        assert!(
            text.contains("wsfleet_gateway_jwks_key_age_seconds 0.0\n"),
            "{text}"
        );
    }

    #[test]
    fn nothing_is_written_while_nothing_is_held() {
        assert_eq!(render_at(&Arc::default(), SystemTime::now()), "");
    }
}
