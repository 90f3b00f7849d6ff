//! Status conditions per Kubernetes API conventions: one entry per type, and
//! `lastTransitionTime` moves only when the status of that type changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const CERTIFICATE_READY: &str = "CertificateReady";
/// Only when the Service annotations declare a load balancer idle timeout.
pub const HEARTBEAT_WITHIN_IDLE_TIMEOUT: &str = "HeartbeatWithinIdleTimeout";

/// A condition as the operator currently sees it, before timestamps are settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Observed {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// The conditions to store: `observed`, in that order, each keeping the previous
/// `lastTransitionTime` of its type unless its status changed. Types no longer observed are dropped.
pub fn settle(
    previous: &[Condition],
    observed: Vec<Observed>,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    observed
        .into_iter()
        .map(|condition| {
            let status = if condition.status { "True" } else { "False" }.to_owned();
            let last_transition_time = previous
                .iter()
                .find(|old| old.type_ == condition.type_ && old.status == status)
                .map(|old| old.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: condition.type_.to_owned(),
                status,
                reason: condition.reason,
                message: condition.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The condition of `type_` in `conditions`, if any.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|condition| condition.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Time {
        Time(text.parse().unwrap())
    }

    #[test]
    fn first_observation_transitions_now() {
        let now = at("2026-11-25T10:00:00Z");
        let settled = settle(
            &[],
            vec![Observed::new(
                READY,
                false,
                "DeploymentProgressing",
                "waiting",
            )],
            Some(1),
            &now,
        );
        assert_eq!(settled.len(), 1);
        assert_eq!(settled[0].type_, "Ready");
        assert_eq!(settled[0].status, "False");
        assert_eq!(settled[0].reason, "DeploymentProgressing");
        assert_eq!(settled[0].message, "waiting");
        assert_eq!(settled[0].observed_generation, Some(1));
        assert_eq!(settled[0].last_transition_time, now);
    }

    #[test]
    fn same_status_keeps_the_transition_time_even_when_reason_changes() {
        let first = at("2026-11-25T10:00:00Z");
        let later = at("2026-11-25T11:00:00Z");
        let before = settle(
            &[],
            vec![Observed::new(DEGRADED, true, "SecretNotFound", "a")],
            Some(1),
            &first,
        );
        let after = settle(
            &before,
            vec![Observed::new(DEGRADED, true, "SecretInvalid", "b")],
            Some(2),
            &later,
        );
        assert_eq!(after[0].last_transition_time, first);
        assert_eq!(after[0].reason, "SecretInvalid");
        assert_eq!(after[0].observed_generation, Some(2));
    }

    #[test]
    fn status_change_moves_the_transition_time() {
        let first = at("2026-11-25T10:00:00Z");
        let later = at("2026-11-25T11:00:00Z");
        let before = settle(
            &[],
            vec![Observed::new(READY, false, "DeploymentProgressing", "")],
            Some(1),
            &first,
        );
        let after = settle(
            &before,
            vec![Observed::new(READY, true, "DeploymentAvailable", "")],
            Some(1),
            &later,
        );
        assert_eq!(after[0].last_transition_time, later);
        assert_eq!(after[0].status, "True");
    }

    #[test]
    fn unchanged_observation_settles_to_identical_conditions() {
        let first = at("2026-11-25T10:00:00Z");
        let later = at("2026-11-25T11:00:00Z");
        let observed = || {
            vec![
                Observed::new(READY, true, "DeploymentAvailable", "2 of 2 ready"),
                Observed::new(DEGRADED, false, "Reconciled", ""),
            ]
        };
        let before = settle(&[], observed(), Some(4), &first);
        assert_eq!(settle(&before, observed(), Some(4), &later), before);
    }

    #[test]
    fn conditions_no_longer_observed_are_dropped() {
        let now = at("2026-11-25T10:00:00Z");
        let before = settle(
            &[],
            vec![
                Observed::new(READY, true, "DeploymentAvailable", ""),
                Observed::new(CERTIFICATE_READY, true, "CertificateIssued", ""),
            ],
            Some(1),
            &now,
        );
        let after = settle(
            &before,
            vec![Observed::new(READY, true, "DeploymentAvailable", "")],
            Some(2),
            &now,
        );
        assert_eq!(after.len(), 1);
        assert!(find(&after, CERTIFICATE_READY).is_none());
        assert!(find(&after, READY).is_some());
    }
}
