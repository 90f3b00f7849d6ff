//! The build step: from the plan and what was observed to the desired set of children, the
//! problems with what the spec refers to, and the certificate's state. Pure: no client; the
//! clock and the key source are passed in.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::observe::Observed;
use super::serving_certificate::{
    CERT_MANAGER_NOT_INSTALLED, CertificateWrite, Decided, decide as decide_certificate,
};
use crate::build::cert_manager::Certificate as CertManagerCertificate;
use crate::build::scaled_object::{self, ScaledObject};
use crate::build::{
    autoscaler, config_map, deployment, disruption_budget, owner_reference, service,
};
use crate::crd::WebSocketService;
use crate::error::Error;
use crate::plan::Plan;
use crate::status::{Certificate, Problem};
use crate::x509::KeySource;

pub const KEDA_NOT_INSTALLED: &str = "KedaNotInstalled";

/// What the fleet should consist of.
#[derive(Debug)]
pub struct Desired {
    /// In the order they are applied: the certificate before the pods that mount it.
    pub children: Vec<Child>,
    pub outcome: Outcome,
}

/// What the status reports, once the apply step has said which children the cluster took.
#[derive(Debug, Default)]
pub struct Outcome {
    /// With objects the spec names but the operator does not own, and children refused.
    pub problems: Vec<Problem>,
    pub certificate: Option<Certificate>,
    /// For SelfSigned, the time until the certificate is renewed.
    pub renew_in: Option<Duration>,
    /// The Event of a newly issued certificate, published once it is stored.
    pub issued: Option<(&'static str, String)>,
}

impl Outcome {
    /// Takes in the children the cluster refused: a refused certificate child is the
    /// certificate's problem (and nothing was issued); any other is a problem of its own.
    pub fn settle(&mut self, refused: Vec<(ChildKind, Problem)>) {
        for (kind, problem) in refused {
            match (kind, &mut self.certificate) {
                (
                    ChildKind::IssuedSecret | ChildKind::CertManagerCertificate,
                    Some(certificate),
                ) => {
                    self.issued = None;
                    certificate.state = Err(problem);
                }
                _ => self.problems.push(problem),
            }
        }
    }

    /// Every problem, the certificate's first.
    pub fn all_problems(&self) -> Vec<Problem> {
        let certificate = self
            .certificate
            .as_ref()
            .and_then(|certificate| certificate.state.clone().err());
        certificate
            .into_iter()
            .chain(self.problems.iter().cloned())
            .collect()
    }
}

/// One object the operator writes.
#[derive(Debug)]
pub enum Child {
    /// A SelfSigned certificate's Secret: created when `create`, since another fleet may race
    /// for the same name; applied over the fleet's own otherwise.
    IssuedSecret {
        secret: Secret,
        create: bool,
    },
    CertManagerCertificate(CertManagerCertificate),
    ConfigMap(ConfigMap),
    /// `hand_over_replicas`: an autoscaler owns the replica count, so before the apply stops
    /// naming `spec.replicas` another field manager takes it over (see `apply`).
    Deployment {
        deployment: Box<Deployment>,
        hand_over_replicas: bool,
    },
    Service(Service),
    Autoscaler(HorizontalPodAutoscaler),
    ScaledObject(ScaledObject),
    Budget(PodDisruptionBudget),
}

/// The kinds of [`Child`]: what the applier compares the observed children against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildKind {
    IssuedSecret,
    CertManagerCertificate,
    ConfigMap,
    Deployment,
    Service,
    Autoscaler,
    ScaledObject,
    Budget,
}

impl Child {
    pub fn kind(&self) -> ChildKind {
        match self {
            Self::IssuedSecret { .. } => ChildKind::IssuedSecret,
            Self::CertManagerCertificate(_) => ChildKind::CertManagerCertificate,
            Self::ConfigMap(_) => ChildKind::ConfigMap,
            Self::Deployment { .. } => ChildKind::Deployment,
            Self::Service(_) => ChildKind::Service,
            Self::Autoscaler(_) => ChildKind::Autoscaler,
            Self::ScaledObject(_) => ChildKind::ScaledObject,
            Self::Budget(_) => ChildKind::Budget,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Self::IssuedSecret { secret, .. } => &secret.metadata,
            Self::CertManagerCertificate(certificate) => &certificate.metadata,
            Self::ConfigMap(config_map) => &config_map.metadata,
            Self::Deployment { deployment, .. } => &deployment.metadata,
            Self::Service(service) => &service.metadata,
            Self::Autoscaler(autoscaler) => &autoscaler.metadata,
            Self::ScaledObject(scaled_object) => &scaled_object.metadata,
            Self::Budget(budget) => &budget.metadata,
        }
    }

    /// The problem to report when the apiserver does not serve this child's type: an add-on
    /// the spec asks for is not installed.
    pub fn not_served(&self) -> Option<Problem> {
        let namespace = self.meta().namespace.as_deref().unwrap_or_default();
        let name = self.meta().name.as_deref().unwrap_or_default();
        match self {
            Self::ScaledObject(_) => Some(Problem {
                reason: KEDA_NOT_INSTALLED,
                message: format!(
                    "autoscaling.keda needs KEDA: the CustomResourceDefinition scaledobjects.keda.sh is not installed, so ScaledObject {namespace}/{name} cannot be created"
                ),
            }),
            Self::CertManagerCertificate(_) => Some(Problem {
                reason: CERT_MANAGER_NOT_INSTALLED,
                message: format!(
                    "tls.mode CertManager needs cert-manager: the CustomResourceDefinition \
                     certificates.cert-manager.io is not installed, so Certificate \
                     {namespace}/{name} cannot be created"
                ),
            }),
            _ => None,
        }
    }
}

/// The desired fleet of `wss`.
pub fn desired(
    wss: &WebSocketService,
    plan: &Plan,
    observed: &Observed,
    default_image: &str,
    now: Timestamp,
    keys: KeySource,
) -> Result<Desired, Error> {
    let owner = owner_reference(wss);
    let mut children = Vec::new();
    let mut outcome = Outcome {
        problems: reference_problems(plan, observed),
        ..Outcome::default()
    };
    if let Some(tls) = &plan.tls {
        let Decided {
            certificate: decided,
            renew_in: renew,
            write,
        } = decide_certificate(
            plan,
            tls,
            &owner,
            observed.tls_secret.as_ref(),
            observed.cert_manager_certificate.as_deref(),
            now,
            keys,
        )?;
        match write {
            Some(CertificateWrite::Issued {
                secret,
                create,
                event,
            }) => {
                children.push(Child::IssuedSecret { secret, create });
                outcome.issued = Some(event);
            }
            Some(CertificateWrite::CertManager(desired)) => {
                children.push(Child::CertManagerCertificate(desired));
            }
            None => {}
        }
        (outcome.certificate, outcome.renew_in) = (Some(decided), renew);
    }

    let spec = &wss.spec;
    children.push(Child::ConfigMap(config_map::config_map(plan, &owner)));
    let mut gateway = deployment::deployment(plan, spec, &owner, default_image);
    if let (Some(autoscaling), None) = (&spec.autoscaling, &observed.deployment) {
        // A new Deployment starts at the autoscaler's minimum rather than the default of one;
        // the next reconcile hands the field over to the autoscaler.
        gateway.spec.get_or_insert_default().replicas = Some(autoscaling.min_replicas);
    }
    children.push(Child::Deployment {
        deployment: Box::new(gateway),
        hand_over_replicas: spec.autoscaling.is_some() && observed.deployment.is_some(),
    });
    children.push(Child::Service(service::service(plan, spec, &owner)));
    // The operator's own HPA, or KEDA's ScaledObject (KEDA then makes the HPA), or neither.
    if let Some(autoscaling) = &spec.autoscaling {
        children.push(match &autoscaling.keda {
            Some(keda) => Child::ScaledObject(scaled_object::scaled_object(
                plan,
                autoscaling,
                keda,
                &owner,
            )),
            None => Child::Autoscaler(autoscaler::autoscaler(plan, autoscaling, &owner)),
        });
    }
    children.push(Child::Budget(disruption_budget::disruption_budget(
        plan, &owner,
    )));
    Ok(Desired { children, outcome })
}

/// Problems with objects the spec refers to but the operator does not own.
fn reference_problems(plan: &Plan, observed: &Observed) -> Vec<Problem> {
    let namespace = &plan.names.namespace;
    let mut problems = Vec::new();
    if let (Some(name), Some(false)) = (&plan.upstream_service, observed.upstream_service) {
        problems.push(Problem {
            reason: "UpstreamServiceNotFound",
            message: format!("upstream Service {namespace}/{name} does not exist"),
        });
    }
    let secret_keys = [
        (
            &plan.jwt_key,
            &observed.jwt_secret,
            "JWT key",
            "JwtSecretNotFound",
            "JwtKeyNotFound",
        ),
        (
            &plan.jwks_ca,
            &observed.jwks_ca_secret,
            "JWKS CA",
            "JwksCaSecretNotFound",
            "JwksCaKeyNotFound",
        ),
    ];
    for (key, secret, what, secret_missing, key_missing) in secret_keys {
        let Some(key) = key else { continue };
        match secret {
            None => problems.push(Problem {
                reason: secret_missing,
                message: format!("{what} Secret {namespace}/{} does not exist", key.name),
            }),
            Some(secret) if !secret_has(secret, &key.key) => problems.push(Problem {
                reason: key_missing,
                message: format!(
                    "{what} Secret {namespace}/{} has no key {:?}",
                    key.name, key.key
                ),
            }),
            Some(_) => {}
        }
    }
    problems
}

fn secret_has(secret: &Secret, key: &str) -> bool {
    secret
        .data
        .as_ref()
        .is_some_and(|data| data.contains_key(key))
        || secret
            .string_data
            .as_ref()
            .is_some_and(|data| data.contains_key(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{example, plan_of};
    use crate::x509::generate_key;

    fn kinds(wss: &WebSocketService, observed: &Observed) -> Vec<ChildKind> {
        let desired = desired(
            wss,
            &plan_of(wss),
            observed,
            "img",
            Timestamp::now(),
            generate_key,
        )
        .unwrap();
        desired.children.iter().map(Child::kind).collect()
    }

    #[test]
    fn the_certificate_comes_first_and_one_autoscaler_at_most() {
        use ChildKind::*;
        let base = [ConfigMap, Deployment, Service];
        assert_eq!(
            kinds(&example("minimal.yaml"), &Observed::default()),
            [&base[..], &[Budget]].concat()
        );
        assert_eq!(
            kinds(&example("hpa-cpu.yaml"), &Observed::default()),
            [&base[..], &[Autoscaler, Budget]].concat()
        );
        assert_eq!(
            kinds(&example("keda.yaml"), &Observed::default()),
            [&base[..], &[ScaledObject, Budget]].concat()
        );
        assert_eq!(
            kinds(&example("production.yaml"), &Observed::default())[0],
            IssuedSecret
        );
    }

    #[test]
    fn a_new_autoscaled_deployment_starts_at_the_minimum_and_an_existing_one_is_handed_over() {
        let wss = example("hpa-cpu.yaml");
        let deployment_of = |observed: &Observed| {
            let desired = desired(
                &wss,
                &plan_of(&wss),
                observed,
                "img",
                Timestamp::now(),
                generate_key,
            )
            .unwrap();
            desired.children.into_iter().find_map(|child| match child {
                Child::Deployment {
                    deployment,
                    hand_over_replicas,
                } => Some((deployment.spec.unwrap().replicas, hand_over_replicas)),
                _ => None,
            })
        };
        let minimum = wss.spec.autoscaling.as_ref().unwrap().min_replicas;
        assert_eq!(
            deployment_of(&Observed::default()),
            Some((Some(minimum), false))
        );
        let existing = Observed {
            deployment: Some(std::sync::Arc::new(Deployment::default())),
            ..Observed::default()
        };
        assert_eq!(deployment_of(&existing), Some((None, true)));
    }

    #[test]
    fn missing_references_are_problems_named_after_the_object() {
        let wss = example("production.yaml");
        let plan = plan_of(&wss);
        let observed = Observed {
            upstream_service: plan.upstream_service.as_ref().map(|_| false),
            ..Observed::default()
        };
        let problems = reference_problems(&plan, &observed);
        let reasons: Vec<_> = problems.iter().map(|p| p.reason).collect();
        assert!(reasons.contains(&"JwtSecretNotFound"), "{problems:?}");
        let without_key = Observed {
            jwt_secret: Some(Secret::default()),
            ..observed
        };
        let problem = reference_problems(&plan, &without_key)
            .into_iter()
            .find(|p| p.reason == "JwtKeyNotFound")
            .expect("a Secret without the key is reported");
        assert!(problem.message.contains("team-a/chat-jwt"), "{problem:?}");
    }
}
