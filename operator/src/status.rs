//! The status step's pure half: from what the reconcile observed to the status to store.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::conditions::{self, CERTIFICATE_READY, DEGRADED, Observed, PROGRESSING, READY};
use crate::crd::{TlsStatus, WebSocketServiceStatus};
use crate::error::InvalidSpec;
use crate::names::{ChildNames, FIELD_MANAGER};
use crate::observation_hold::OBSERVATION_GRACE;

/// The longest a status waits for the Deployment controller while it works through a backlog:
/// a Deployment's default progress deadline.
const LONGEST_OBSERVATION_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Something that keeps the fleet from working as specified; surfaces as Degraded and an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// The serving certificate's state, when the spec asks for TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub secret_name: String,
    /// `Ok((reason, notAfter, renewalTime))` when usable, `Err(problem)` when not.
    pub state: Result<(&'static str, Timestamp, Option<Timestamp>), Problem>,
}

/// Everything the status is computed from.
pub struct Observation<'a> {
    pub names: &'a ChildNames,
    pub endpoint: String,
    pub problems: &'a [Problem],
    pub certificate: Option<&'a Certificate>,
    pub deployment: Option<&'a Deployment>,
    /// Whether the heartbeat fits the load balancer's idle timeout, when one is declared.
    pub heartbeat: Option<Observed>,
}

/// The status for a reconciled object.
pub fn reconciled_status(
    previous: &WebSocketServiceStatus,
    observation: &Observation<'_>,
    generation: Option<i64>,
    now: &Time,
) -> WebSocketServiceStatus {
    let rollout = Rollout::of(observation.deployment);
    let mut observed = Vec::new();
    let first_problem = observation.problems.first();
    observed.push(match (first_problem, rollout.available) {
        (Some(problem), _) => Observed::new(READY, false, problem.reason, problem.message.clone()),
        (None, true) => Observed::new(READY, true, "DeploymentAvailable", rollout.message.clone()),
        (None, false) => Observed::new(
            READY,
            false,
            "DeploymentProgressing",
            rollout.message.clone(),
        ),
    });
    observed.push(if rollout.progressing {
        Observed::new(
            PROGRESSING,
            true,
            "DeploymentProgressing",
            rollout.message.clone(),
        )
    } else {
        Observed::new(
            PROGRESSING,
            false,
            "Reconciled",
            "the gateway Deployment is up to date",
        )
    });
    observed.push(match first_problem {
        Some(problem) => {
            let all: Vec<&str> = observation
                .problems
                .iter()
                .map(|p| p.message.as_str())
                .collect();
            Observed::new(DEGRADED, true, problem.reason, all.join("; "))
        }
        None => Observed::new(DEGRADED, false, "Reconciled", "all children are in place"),
    });
    if let Some(certificate) = observation.certificate {
        observed.push(match &certificate.state {
            Ok((reason, not_after, _)) => Observed::new(
                CERTIFICATE_READY,
                true,
                reason,
                format!(
                    "Secret {} holds a certificate valid until {not_after}",
                    certificate.secret_name
                ),
            ),
            Err(problem) => Observed::new(
                CERTIFICATE_READY,
                false,
                problem.reason,
                problem.message.clone(),
            ),
        });
    }
    observed.extend(observation.heartbeat.clone());
    WebSocketServiceStatus {
        observed_generation: generation,
        replicas: rollout.replicas,
        ready_replicas: rollout.ready,
        selector: Some(observation.names.selector_string()),
        endpoint: Some(observation.endpoint.clone()),
        tls: observation.certificate.map(|certificate| {
            let (not_after, renewal_time) = match &certificate.state {
                Ok((_, not_after, renewal_time)) => {
                    (Some(Time(*not_after)), renewal_time.map(Time))
                }
                Err(_) => (None, None),
            };
            TlsStatus {
                secret_name: certificate.secret_name.clone(),
                not_after,
                renewal_time,
            }
        }),
        conditions: conditions::settle(&previous.conditions, observed, generation, now),
    }
}

/// How much longer to hold the status back for `deployment`: `Some` while the Deployment
/// controller has not observed the operator's latest change of it, made less than
/// [`OBSERVATION_GRACE`] ago, or less than [`LONGEST_OBSERVATION_WAIT`] ago when the controller
/// is `working` through other Deployments (see [`crate::observation_hold`]). Its status is about
/// to change, and the reconcile that change triggers writes the fleet's status instead of this
/// one superseding it a moment later.
pub fn awaiting_deployment_controller(
    deployment: &Deployment,
    now: Timestamp,
    working: bool,
) -> Option<std::time::Duration> {
    let observed = deployment
        .status
        .as_ref()
        .and_then(|status| status.observed_generation);
    if observed >= deployment.metadata.generation {
        return None;
    }
    let applied = deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| entry.manager.as_deref() == Some(FIELD_MANAGER))
        .filter_map(|entry| entry.time.as_ref())
        .map(|time| time.0)
        .max()?;
    let since = now.duration_since(applied).unsigned_abs();
    let wait = if working {
        LONGEST_OBSERVATION_WAIT
    } else {
        OBSERVATION_GRACE
    };
    wait.checked_sub(since).filter(|left| !left.is_zero())
}

/// The status for an object whose spec cannot be acted on; what was observed before is kept.
pub fn invalid_status(
    previous: &WebSocketServiceStatus,
    names: &ChildNames,
    invalid: &InvalidSpec,
    generation: Option<i64>,
    now: &Time,
) -> WebSocketServiceStatus {
    let message = invalid.to_string();
    let observed = vec![
        Observed::new(READY, false, "InvalidSpec", message.clone()),
        Observed::new(PROGRESSING, false, "InvalidSpec", message.clone()),
        Observed::new(DEGRADED, true, "InvalidSpec", message),
    ];
    WebSocketServiceStatus {
        observed_generation: generation,
        selector: Some(names.selector_string()),
        conditions: conditions::settle(&previous.conditions, observed, generation, now),
        ..previous.clone()
    }
}

/// All the status step reads of the gateway Deployment's status (besides its generation and
/// `spec.replicas`): a status update that changes none of it changes nothing a reconcile does.
#[derive(Debug, Hash)]
pub struct DeploymentProgress {
    observed_generation: Option<i64>,
    replicas: i32,
    updated: i32,
    ready: i32,
    /// Available describes the pods serving now, whichever generation they run. Until the
    /// Deployment controller observes an apply (a scale, a new template) that condition still
    /// holds, so Ready does not drop, and no Warning Event is sent, for that moment.
    available: bool,
}

impl DeploymentProgress {
    pub fn of(deployment: &Deployment) -> Self {
        let Some(status) = &deployment.status else {
            return Self {
                observed_generation: None,
                replicas: 0,
                updated: 0,
                ready: 0,
                available: false,
            };
        };
        Self {
            observed_generation: status.observed_generation,
            replicas: status.replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            available: status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Available" && c.status == "True"),
        }
    }
}

/// How far the gateway Deployment has rolled out.
struct Rollout {
    replicas: i32,
    ready: i32,
    progressing: bool,
    available: bool,
    message: String,
}

impl Rollout {
    fn of(deployment: Option<&Deployment>) -> Self {
        let Some(deployment) = deployment else {
            return Self {
                replicas: 0,
                ready: 0,
                progressing: true,
                available: false,
                message: "the gateway Deployment does not exist yet".to_owned(),
            };
        };
        let desired = deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.replicas)
            .unwrap_or(1);
        let DeploymentProgress {
            observed_generation,
            replicas,
            updated,
            ready,
            available,
        } = DeploymentProgress::of(deployment);
        let seen = observed_generation >= deployment.metadata.generation;
        let progressing = !seen || updated < desired || replicas > updated;
        Self {
            replicas,
            ready,
            progressing,
            available,
            message: format!("gateway pods: {ready} ready, {desired} wanted, {updated} up to date"),
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::conditions::{HEARTBEAT_WITHIN_IDLE_TIMEOUT, find};

    fn names() -> ChildNames {
        ChildNames {
            namespace: "team-a".into(),
            instance: "chat".into(),
        }
    }

    fn now() -> Time {
        Time("2026-11-25T12:00:00Z".parse().unwrap())
    }

    fn deployment(desired: i32, updated: i32, ready: i32, available: bool) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(desired),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(2),
                replicas: Some(updated.max(desired)),
                updated_replicas: Some(updated),
                ready_replicas: Some(ready),
                conditions: Some(vec![DeploymentCondition {
                    type_: "Available".into(),
                    status: if available { "True" } else { "False" }.into(),
                    ..DeploymentCondition::default()
                }]),
                ..DeploymentStatus::default()
            }),
        }
    }

    fn status_of(
        problems: &[Problem],
        certificate: Option<&Certificate>,
        deployment: Option<&Deployment>,
    ) -> WebSocketServiceStatus {
        let names = names();
        let observation = Observation {
            names: &names,
            endpoint: "ws://chat.team-a.svc/".into(),
            problems,
            certificate,
            deployment,
            heartbeat: None,
        };
        reconciled_status(
            &WebSocketServiceStatus::default(),
            &observation,
            Some(7),
            &now(),
        )
    }

    #[test]
    fn available_deployment_makes_the_fleet_ready() {
        let status = status_of(&[], None, Some(&deployment(2, 2, 2, true)));
        assert_eq!(status.observed_generation, Some(7));
        assert_eq!((status.replicas, status.ready_replicas), (2, 2));
        assert_eq!(
            status.selector.as_deref(),
            Some("app.kubernetes.io/instance=chat,app.kubernetes.io/name=wsfleet-gateway")
        );
        assert_eq!(status.endpoint.as_deref(), Some("ws://chat.team-a.svc/"));
        let ready = find(&status.conditions, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "DeploymentAvailable")
        );
        let progressing = find(&status.conditions, PROGRESSING).unwrap();
        assert_eq!(progressing.status, "False");
        let degraded = find(&status.conditions, DEGRADED).unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("False", "Reconciled")
        );
        assert!(find(&status.conditions, CERTIFICATE_READY).is_none());
        assert_eq!(status.tls, None);
    }

    #[test]
    fn a_heartbeat_warning_is_its_own_condition_and_leaves_the_fleet_ready() {
        let names = names();
        let available = deployment(2, 2, 2, true);
        let warning = Observed::new(
            HEARTBEAT_WITHIN_IDLE_TIMEOUT,
            false,
            "HeartbeatExceedsIdleTimeout",
            "heartbeat.interval 5m is not shorter than the 4m idle timeout",
        );
        let observation = Observation {
            names: &names,
            endpoint: "ws://chat.team-a.svc/".into(),
            problems: &[],
            certificate: None,
            deployment: Some(&available),
            heartbeat: Some(warning),
        };
        let status = reconciled_status(
            &WebSocketServiceStatus::default(),
            &observation,
            Some(7),
            &now(),
        );
        let heartbeat = find(&status.conditions, HEARTBEAT_WITHIN_IDLE_TIMEOUT).unwrap();
        assert_eq!(
            (heartbeat.status.as_str(), heartbeat.reason.as_str()),
            ("False", "HeartbeatExceedsIdleTimeout")
        );
        assert_eq!(find(&status.conditions, READY).unwrap().status, "True");
        assert_eq!(find(&status.conditions, DEGRADED).unwrap().status, "False");
    }

    #[test]
    fn the_status_waits_briefly_for_the_deployment_controller_to_observe_an_apply() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let applied_at = |deployment: &mut Deployment, time: &str, manager: &str| {
            deployment.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
                manager: Some(manager.to_owned()),
                operation: Some("Apply".to_owned()),
                time: Some(Time(time.parse().unwrap())),
                ..ManagedFieldsEntry::default()
            }]);
        };
        let now: Timestamp = "2026-11-25T10:00:00Z".parse().unwrap();
        let mut unobserved = deployment(1, 0, 0, false);
        unobserved.metadata.generation = Some(2);
        unobserved.status.as_mut().unwrap().observed_generation = Some(1);

        applied_at(&mut unobserved, "2026-11-25T09:59:57Z", FIELD_MANAGER);
        for working in [false, true] {
            assert!(awaiting_deployment_controller(&unobserved, now, working).is_some());
        }
        assert_eq!(
            awaiting_deployment_controller(&unobserved, now, false),
            Some(std::time::Duration::from_secs(7))
        );
        // Past the grace: a controller manager that is down does not hold the status back; one
        // that works through a backlog does, up to a Deployment's progress deadline.
        applied_at(&mut unobserved, "2026-11-25T09:59:40Z", FIELD_MANAGER);
        assert_eq!(
            awaiting_deployment_controller(&unobserved, now, false),
            None
        );
        assert_eq!(
            awaiting_deployment_controller(&unobserved, now, true),
            Some(std::time::Duration::from_secs(580))
        );
        applied_at(&mut unobserved, "2026-11-25T09:50:00Z", FIELD_MANAGER);
        assert_eq!(awaiting_deployment_controller(&unobserved, now, true), None);
        // Changed by someone else: nothing of the operator's to wait for.
        applied_at(&mut unobserved, "2026-11-25T09:59:57Z", "kubectl-edit");
        for working in [false, true] {
            assert_eq!(
                awaiting_deployment_controller(&unobserved, now, working),
                None
            );
        }

        let mut observed = unobserved.clone();
        applied_at(&mut observed, "2026-11-25T09:59:57Z", FIELD_MANAGER);
        observed.status.as_mut().unwrap().observed_generation = Some(2);
        for working in [false, true] {
            assert_eq!(
                awaiting_deployment_controller(&observed, now, working),
                None
            );
        }
    }

    #[test]
    fn rolling_deployment_is_progressing_and_not_ready() {
        let status = status_of(&[], None, Some(&deployment(3, 1, 1, false)));
        let ready = find(&status.conditions, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "DeploymentProgressing")
        );
        assert_eq!(
            find(&status.conditions, PROGRESSING).unwrap().status,
            "True"
        );
        assert!(
            find(&status.conditions, READY)
                .unwrap()
                .message
                .contains("1 ready, 3 wanted")
        );
        let missing = status_of(&[], None, None);
        assert_eq!(
            find(&missing.conditions, PROGRESSING).unwrap().status,
            "True"
        );
        assert_eq!(missing.replicas, 0);
    }

    #[test]
    fn ready_holds_until_the_deployment_controller_observes_an_apply() {
        let names = names();
        let observe = |previous: &WebSocketServiceStatus, deployment: &Deployment, at: &Time| {
            let observation = Observation {
                names: &names,
                endpoint: "ws://chat.team-a.svc/".into(),
                problems: &[],
                certificate: None,
                deployment: Some(deployment),
                heartbeat: None,
            };
            reconciled_status(previous, &observation, Some(7), at)
        };
        let serving = observe(
            &WebSocketServiceStatus::default(),
            &deployment(7, 7, 7, true),
            &now(),
        );
        let later = Time("2026-11-25T12:05:00Z".parse().unwrap());
        // Scaled from 7 to 3, and a template annotation changed with the same count: each apply
        // moved the generation past the one the Deployment's status describes.
        let mut scaled_down = deployment(3, 7, 7, true);
        let mut same_count = deployment(7, 7, 7, true);
        for applied in [&mut scaled_down, &mut same_count] {
            applied.metadata.generation = Some(3);
            let status = observe(&serving, applied, &later);
            let ready = find(&status.conditions, READY).unwrap();
            assert_eq!(
                (ready.status.as_str(), ready.reason.as_str()),
                ("True", "DeploymentAvailable"),
                "{}",
                ready.message
            );
            assert_eq!(ready.last_transition_time, now(), "Ready did not flap");
        }
        let ready = find(&observe(&serving, &scaled_down, &later).conditions, READY).cloned();
        assert_eq!(
            ready.unwrap().message,
            "gateway pods: 7 ready, 3 wanted, 7 up to date"
        );
    }

    #[test]
    fn problems_degrade_and_unready_the_fleet() {
        let problems = [
            Problem {
                reason: "UpstreamServiceNotFound",
                message: "Service chat-backend not found".into(),
            },
            Problem {
                reason: "JwtSecretNotFound",
                message: "Secret chat-jwt not found".into(),
            },
        ];
        let status = status_of(&problems, None, Some(&deployment(2, 2, 2, true)));
        let degraded = find(&status.conditions, DEGRADED).unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "UpstreamServiceNotFound")
        );
        assert!(degraded.message.contains("chat-backend") && degraded.message.contains("chat-jwt"));
        let ready = find(&status.conditions, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "UpstreamServiceNotFound")
        );
    }

    #[test]
    fn certificate_state_reaches_condition_and_tls_status() {
        let not_after: Timestamp = "2027-02-23T12:00:00Z".parse().unwrap();
        let renewal: Timestamp = "2027-02-08T12:00:00Z".parse().unwrap();
        let issued = Certificate {
            secret_name: "chat-tls".into(),
            state: Ok(("CertificateIssued", not_after, Some(renewal))),
        };
        let status = status_of(&[], Some(&issued), Some(&deployment(2, 2, 2, true)));
        let condition = find(&status.conditions, CERTIFICATE_READY).unwrap();
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("True", "CertificateIssued")
        );
        let tls = status.tls.unwrap();
        assert_eq!(tls.secret_name, "chat-tls");
        assert_eq!(tls.not_after, Some(Time(not_after)));
        assert_eq!(tls.renewal_time, Some(Time(renewal)));

        let problem = Problem {
            reason: "SecretNotFound",
            message: "Secret chat-tls not found".into(),
        };
        let missing = Certificate {
            secret_name: "chat-tls".into(),
            state: Err(problem.clone()),
        };
        let status = status_of(&[problem], Some(&missing), None);
        let condition = find(&status.conditions, CERTIFICATE_READY).unwrap();
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("False", "SecretNotFound")
        );
        assert_eq!(status.tls.unwrap().not_after, None);
    }

    #[test]
    fn invalid_spec_keeps_observed_counts_and_says_why() {
        let previous = status_of(&[], None, Some(&deployment(2, 2, 2, true)));
        let invalid = InvalidSpec::new("spec.tls.duration", "must be longer than 0s");
        let status = invalid_status(&previous, &names(), &invalid, Some(8), &now());
        assert_eq!(status.replicas, 2);
        assert_eq!(status.observed_generation, Some(8));
        let degraded = find(&status.conditions, DEGRADED).unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "InvalidSpec")
        );
        assert!(degraded.message.contains("spec.tls.duration"));
    }
}
