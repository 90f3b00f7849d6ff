//! Leader election on a coordination.k8s.io/v1 Lease: only the holder runs the controller.
//!
//! The holder renews every `renew_every`; a replica may take the lease once its holder has not
//! renewed for `duration`. Writes use the Lease's resourceVersion, so two replicas racing for an
//! expired lease cannot both win.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

/// Where the lease lives and who this replica is.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// How long a holder that stopped renewing keeps the lease.
    pub duration: Duration,
    pub renew_every: Duration,
}

/// A handle on the shared Lease object.
pub struct LeaderLease {
    api: Api<Lease>,
    settings: LeaseSettings,
}

impl LeaderLease {
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_hold().await {
                Ok(true) => {
                    tracing::info!(lease = %self.settings.name, identity = %self.settings.identity, "acquired the lease");
                    return;
                }
                Ok(false) => {
                    tracing::debug!(lease = %self.settings.name, "lease held elsewhere; waiting")
                }
                Err(err) => {
                    tracing::warn!(lease = %self.settings.name, error = %err, "reading the lease")
                }
            }
            tokio::time::sleep(self.settings.renew_every).await;
        }
    }

    /// Renews until the lease is lost; returns why. The caller must stop acting as leader.
    pub async fn keep(&self) -> anyhow::Error {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.settings.renew_every).await;
            match self.try_hold().await {
                Ok(true) => last_renewed = Instant::now(),
                Ok(false) => {
                    return anyhow::anyhow!(
                        "lease {} was taken by another replica",
                        self.settings.name
                    );
                }
                Err(err) if last_renewed.elapsed() >= self.settings.duration => {
                    return anyhow::anyhow!(
                        "could not renew lease {} for {:?}: {err}",
                        self.settings.name,
                        self.settings.duration
                    );
                }
                Err(err) => {
                    tracing::warn!(lease = %self.settings.name, error = %err, "renewing the lease; retrying")
                }
            }
        }
    }

    /// Gives the lease up so a standby replica takes over without waiting for it to expire.
    pub async fn release(&self) {
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
        let now = Timestamp::now();
        let settings = &self.settings;
        let Some(mut lease) = self.api.get_opt(&settings.name).await? else {
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
        LeaseSettings {
            name: "wsfleet-operator".into(),
            namespace: "wsfleet-system".into(),
            identity: "b".into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
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
