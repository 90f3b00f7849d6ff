//! Leader election on a coordination.k8s.io/v1 Lease: only the holder runs the controller.
//!
//! As in client-go: the holder renews every `retry_period`, each lease call gives up after
//! `retry_period`, and leadership lasts `renew_deadline` from when the last successful renewal
//! was sent. Another replica may take the lease once its `renewTime` is `duration` old, and
//! `renew_deadline < duration`, so a holder that cannot renew stops acting (see [`Fence`])
//! before anyone else can start. Writes use the Lease's resourceVersion, so two replicas
//! racing for an expired lease cannot both win.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::fence::Fence;

/// Where the lease lives, who this replica is, and the election's timing.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// How long a holder that stopped renewing keeps the lease in others' eyes.
    pub duration: Duration,
    /// How long this replica acts after sending its last successful renewal; shorter than
    /// `duration`, so it has stopped before another replica may take over.
    pub renew_deadline: Duration,
    /// Pause between attempts, and the time limit of each lease call.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(name: String, namespace: String, identity: String) -> Self {
        Self {
            name,
            namespace,
            identity,
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A handle on the shared Lease object.
pub struct LeaderLease {
    api: Api<Lease>,
    settings: LeaseSettings,
    fence: Fence,
}

/// One attempt to take or renew the lease.
enum Attempt {
    Held,
    HeldElsewhere,
    Failed(String),
}

impl LeaderLease {
    /// `fence` is opened while this replica leads; the controller's client checks it.
    pub fn new(client: Client, settings: LeaseSettings, fence: Fence) -> Self {
        ensure_timing(&settings);
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            fence,
        }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.attempt().await {
                Attempt::Held => {
                    tracing::info!(lease = %self.settings.name, identity = %self.settings.identity, "acquired the lease");
                    return;
                }
                Attempt::HeldElsewhere => {
                    tracing::debug!(lease = %self.settings.name, "lease held elsewhere; waiting")
                }
                Attempt::Failed(err) => {
                    tracing::warn!(lease = %self.settings.name, error = %err, "reading the lease")
                }
            }
            tokio::time::sleep(self.settings.retry_period).await;
        }
    }

    /// Renews until leadership is lost; returns why. The fence is shut by then, and the caller
    /// must stop the controller.
    pub async fn keep(&self) -> anyhow::Error {
        let lapsed = || {
            self.fence.close();
            anyhow::anyhow!(
                "could not renew lease {} within {:?}",
                self.settings.name,
                self.settings.renew_deadline
            )
        };
        loop {
            let deadline = self.fence.open_until().unwrap_or_else(Instant::now);
            let pause = tokio::time::sleep(self.settings.retry_period);
            // The deadline wins ties: past it, nothing else this replica does matters.
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(deadline.into()) => return lapsed(),
                () = pause => {}
            }
            let attempt = tokio::select! {
                biased;
                () = tokio::time::sleep_until(deadline.into()) => return lapsed(),
                attempt = self.attempt() => attempt,
            };
            match attempt {
                Attempt::Held => {}
                Attempt::HeldElsewhere => {
                    self.fence.close();
                    return anyhow::anyhow!(
                        "lease {} was taken by another replica",
                        self.settings.name
                    );
                }
                Attempt::Failed(err) => {
                    tracing::warn!(lease = %self.settings.name, error = %err, "renewing the lease; retrying")
                }
            }
        }
    }

    /// One bounded try; on success the fence opens until `renew_deadline` after it was sent.
    async fn attempt(&self) -> Attempt {
        let sent = Instant::now();
        match tokio::time::timeout(self.settings.retry_period, self.try_hold()).await {
            Ok(Ok(true)) => {
                self.fence.extend_to(sent + self.settings.renew_deadline);
                Attempt::Held
            }
            Ok(Ok(false)) => Attempt::HeldElsewhere,
            Ok(Err(err)) => Attempt::Failed(err.to_string()),
            Err(_) => Attempt::Failed(format!("no answer within {:?}", self.settings.retry_period)),
        }
    }

    /// Gives the lease up so a standby replica takes over without waiting for it to expire.
    pub async fn release(&self) {
        self.fence.close();
        let Ok(Some(mut lease)) = self.api.get_opt(&self.settings.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.settings.name, "released the lease"),
            Err(err) => {
                tracing::warn!(lease = %self.settings.name, error = %err, "releasing the lease")
            }
        }
    }

    /// Takes or renews the lease if this replica may; `Ok(false)` when another holds it.
    async fn try_hold(&self) -> Result<bool, kube::Error> {
        let settings = &self.settings;
        let lease = self.api.get_opt(&settings.name).await?;
        // Stamped after the read, so a slow read cannot write a renewal that is already old.
        let now = Timestamp::now();
        let Some(mut lease) = lease else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(settings.name.clone()),
                    namespace: Some(settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(held_spec(&LeaseSpec::default(), settings, now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(false),
                Err(err) => Err(err),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if !may_hold(&spec, &settings.identity, now) {
            return Ok(false);
        }
        lease.spec = Some(held_spec(&spec, settings, now));
        match self
            .api
            .replace(&settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(err),
        }
    }
}

/// Refuses timing under which a replica could still act after another took over.
fn ensure_timing(settings: &LeaseSettings) {
    assert!(
        settings.retry_period < settings.renew_deadline
            && settings.renew_deadline < settings.duration,
        "lease timing must satisfy retry period < renew deadline < duration: {settings:?}"
    );
}

/// Whether `identity` may hold a lease in state `spec` at `now`: it is free, ours, or expired.
pub fn may_hold(spec: &LeaseSpec, identity: &str, now: Timestamp) -> bool {
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == identity {
        return true;
    }
    let Some(MicroTime(renewed)) = spec.renew_time else {
        return true;
    };
    let duration =
        jiff::SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    renewed + duration < now
}

/// `spec` renewed by `settings.identity` at `now`, counting a transition when the holder changes.
fn held_spec(spec: &LeaseSpec, settings: &LeaseSettings, now: Timestamp) -> LeaseSpec {
    let taking_over = spec.holder_identity.as_deref() != Some(settings.identity.as_str());
    LeaseSpec {
        holder_identity: Some(settings.identity.clone()),
        lease_duration_seconds: Some(settings.duration.as_secs() as i32),
        acquire_time: if taking_over {
            Some(MicroTime(now))
        } else {
            spec.acquire_time.clone()
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(
            spec.lease_transitions.unwrap_or(0)
                + i32::from(taking_over && spec.holder_identity.is_some()),
        ),
        ..spec.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn held_by(holder: Option<&str>, renewed: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            ..LeaseSpec::default()
        }
    }

    fn settings() -> LeaseSettings {
        LeaseSettings::new(
            "wsfleet-operator".into(),
            "wsfleet-system".into(),
            "b".into(),
        )
    }

    /// A client whose apiserver accepts the request and never answers, as in a network
    /// partition that drops packets.
    fn unanswering_client() -> Client {
        let service = tower::service_fn(|_: http::Request<kube::client::Body>| {
            std::future::pending::<
                Result<http::Response<kube::client::Body>, std::convert::Infallible>,
            >()
        });
        Client::new(service, "wsfleet-system")
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_that_never_answers_ends_leadership_at_the_renew_deadline() {
        let fence = Fence::default();
        let lease = LeaderLease::new(unanswering_client(), settings(), fence.clone());
        // Tokio's paused clock measures the wait; the fence runs on the real one.
        let started = tokio::time::Instant::now();
        fence.extend_to(Instant::now() + settings().renew_deadline);

        let lost = lease.keep().await;

        assert!(lost.to_string().contains("within 10s"), "{lost}");
        let waited = started.elapsed();
        assert!(
            waited.abs_diff(settings().renew_deadline) < Duration::from_millis(10),
            "stepped down after {waited:?}"
        );
        assert!(!fence.is_open(), "writes still allowed after the deadline");
    }

    #[test]
    #[should_panic(expected = "renew deadline < duration")]
    fn a_renew_deadline_as_long_as_the_lease_is_refused() {
        let settings = LeaseSettings {
            renew_deadline: Duration::from_secs(15),
            ..settings()
        };
        ensure_timing(&settings);
    }

    #[test]
    fn a_live_lease_of_another_replica_is_respected() {
        let spec = held_by(Some("a"), "2026-11-25T12:00:00Z");
        assert!(!may_hold(&spec, "b", at("2026-11-25T12:00:10Z")));
        assert!(!may_hold(&spec, "b", at("2026-11-25T12:00:15Z")));
        assert!(may_hold(&spec, "b", at("2026-11-25T12:00:16Z")));
    }

    #[test]
    fn free_or_own_leases_may_be_held() {
        assert!(may_hold(
            &held_by(None, "2026-11-25T12:00:00Z"),
            "b",
            at("2026-11-25T12:00:01Z")
        ));
        assert!(may_hold(
            &held_by(Some(""), "2026-11-25T12:00:00Z"),
            "b",
            at("2026-11-25T12:00:01Z")
        ));
        assert!(may_hold(
            &held_by(Some("b"), "2026-11-25T12:00:00Z"),
            "b",
            at("2026-11-25T12:00:01Z")
        ));
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_does_not() {
        let now = at("2026-11-25T12:01:00Z");
        let taken = held_spec(
            &held_by(Some("a"), "2026-11-25T12:00:00Z"),
            &settings(),
            now,
        );
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.lease_transitions, Some(1));
        assert_eq!(taken.acquire_time, Some(MicroTime(now)));
        assert_eq!(taken.lease_duration_seconds, Some(15));
        let later = at("2026-11-25T12:01:05Z");
        let renewed = held_spec(&taken, &settings(), later);
        assert_eq!(renewed.lease_transitions, Some(1));
        assert_eq!(renewed.acquire_time, Some(MicroTime(now)));
        assert_eq!(renewed.renew_time, Some(MicroTime(later)));
        let first = held_spec(&LeaseSpec::default(), &settings(), now);
        assert_eq!(first.lease_transitions, Some(0));
    }
}
