//! One reconcile of one WebSocketService: read -> validate -> build -> apply -> status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::apply::{apply, delete_owned, hand_over_replicas};
use crate::build::tls_secret::{
    CA_CERT_KEY, CA_KEY_KEY, CERT_KEY, ISSUE_REASON_ANNOTATION, KEY_KEY, TLS_SECRET_TYPE,
    tls_secret,
};
use crate::build::{autoscaler, config_map, deployment, disruption_budget, service};
use crate::certs::{self, Decision, IssueReason, Stored, StoredCa};
use crate::conditions::{self, DEGRADED};
use crate::crd::{TlsMode, WebSocketService, WebSocketServiceStatus};
use crate::error::{Error, InvalidSpec};
use crate::metrics::Metrics;
use crate::names::FIELD_MANAGER;
use crate::plan::{Plan, TlsPlan, plan};
use crate::status::{Certificate, Observation, Problem, invalid_status, reconciled_status};

/// Even with nothing to wait for, each object is looked at again this often.
const RESYNC: Duration = Duration::from_secs(3600);
const RETRY_MIN: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Gateway image for specs that name none.
    pub default_image: String,
    /// Consecutive failures per object, for exponential retry delays.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        default_image: String,
    ) -> Self {
        Self {
            client,
            recorder,
            metrics,
            default_image,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn api<K: Resource<Scope = k8s_openapi::NamespaceResourceScope>>(
        &self,
        namespace: &str,
    ) -> Api<K>
    where
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn publish(&self, wss: &WebSocketService, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &wss.object_ref(&())).await {
            tracing::warn!(error = %err, reason, "publishing an event");
        }
    }
}

fn object_key(guard: &DeserializeGuard<WebSocketService>) -> String {
    format!(
        "{}/{}",
        guard.namespace().unwrap_or_default(),
        guard.name_any()
    )
}

/// The controller's reconcile function.
pub async fn reconcile(
    guard: Arc<DeserializeGuard<WebSocketService>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = match &guard.0 {
        Ok(wss) => reconcile_valid(wss, &ctx).await,
        Err(invalid) => {
            // The schema should make this impossible; a stored object from an older schema is
            // reported and left alone until it changes.
            tracing::warn!(object = %object_key(&guard), error = %invalid, "cannot read object");
            ctx.metrics.error("InvalidObject");
            Ok(Action::await_change())
        }
    };
    ctx.metrics.reconciled(started.elapsed());
    if result.is_ok() {
        ctx.failures
            .lock()
            .expect("failure map lock")
            .remove(&object_key(&guard));
    }
    result
}

/// The controller's error policy: retry with a delay doubling per consecutive failure.
pub fn error_policy(
    guard: Arc<DeserializeGuard<WebSocketService>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.error(error.reason());
    let key = object_key(&guard);
    let attempts = {
        let mut failures = ctx.failures.lock().expect("failure map lock");
        let attempts = failures.entry(key.clone()).or_insert(0);
        *attempts = attempts.saturating_add(1);
        *attempts
    };
    let delay = RETRY_MIN
        .saturating_mul(1 << attempts.min(8).saturating_sub(1))
        .min(RETRY_MAX);
    tracing::warn!(object = %key, reason = error.reason(), error = %error, attempts, ?delay, "reconcile failed");
    if let Ok(wss) = &guard.0 {
        let (ctx, wss, reason, note) =
            (ctx.clone(), wss.clone(), error.reason(), error.to_string());
        tokio::spawn(async move { ctx.publish(&wss, EventType::Warning, reason, note).await });
    }
    Action::requeue(delay)
}

async fn reconcile_valid(wss: &WebSocketService, ctx: &Context) -> Result<Action, Error> {
    if wss.metadata.deletion_timestamp.is_some() {
        // Owner references hand the children to the garbage collector.
        return Ok(Action::await_change());
    }
    let previous = wss.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let plan = match plan(wss) {
        Ok(plan) => plan,
        Err(invalid) => return reject(wss, ctx, &previous, &invalid, now).await,
    };
    let owner = wss
        .controller_owner_ref(&())
        .expect("a stored object has a name and uid");
    let namespace = plan.names.namespace.clone();

    let mut problems = Vec::new();
    let mut requeue = RESYNC;
    let certificate = match &plan.tls {
        Some(tls) => {
            let (certificate, renew_in) =
                ensure_certificate(wss, ctx, &plan, tls, &owner, now).await?;
            if let Err(problem) = &certificate.state {
                problems.push(problem.clone());
            }
            requeue = requeue.min(renew_in.unwrap_or(RESYNC));
            Some(certificate)
        }
        None => None,
    };
    problems.extend(check_references(ctx, &plan).await?);

    let config_maps: Api<ConfigMap> = ctx.api(&namespace);
    let desired = config_map::config_map(&plan, &owner);
    apply(
        &config_maps,
        desired,
        get(&config_maps, &namespace, &plan.names.gateway()).await?,
    )
    .await?;

    let deployments: Api<Deployment> = ctx.api(&namespace);
    let observed = get(&deployments, &namespace, &plan.names.gateway()).await?;
    if let (Some(_), Some(observed)) = (&wss.spec.autoscaling, &observed) {
        hand_over_replicas(&deployments, observed).await?;
    }
    let mut desired = deployment::deployment(&plan, &wss.spec, &owner, &ctx.default_image);
    if let (Some(autoscaling), None) = (&wss.spec.autoscaling, &observed) {
        // A new Deployment starts at the autoscaler's minimum rather than the default of one;
        // the next reconcile hands the field over to the HPA.
        desired.spec.get_or_insert_default().replicas = Some(autoscaling.min_replicas);
    }
    let deployment = apply(&deployments, desired, observed).await?;

    let services: Api<Service> = ctx.api(&namespace);
    let desired = service::service(&plan, &wss.spec, &owner);
    apply(
        &services,
        desired,
        get(&services, &namespace, &plan.names.service()).await?,
    )
    .await?;

    let autoscalers: Api<HorizontalPodAutoscaler> = ctx.api(&namespace);
    let observed = get(&autoscalers, &namespace, &plan.names.gateway()).await?;
    match &wss.spec.autoscaling {
        Some(autoscaling) => {
            apply(
                &autoscalers,
                autoscaler::autoscaler(&plan, autoscaling, &owner),
                observed,
            )
            .await?;
        }
        None => delete_owned(&autoscalers, observed, &owner.uid).await?,
    }

    let budgets: Api<PodDisruptionBudget> = ctx.api(&namespace);
    let desired = disruption_budget::disruption_budget(&plan, &owner);
    apply(
        &budgets,
        desired,
        get(&budgets, &namespace, &plan.names.gateway()).await?,
    )
    .await?;

    announce_problems(wss, ctx, &previous, &problems).await;
    let observation = Observation {
        names: &plan.names,
        endpoint: plan
            .names
            .endpoint(plan.tls.is_some(), &wss.spec.listen.path),
        problems: &problems,
        certificate: certificate.as_ref(),
        deployment: Some(&deployment),
    };
    let status = reconciled_status(&previous, &observation, wss.metadata.generation, &Time(now));
    write_status(wss, ctx, &previous, status).await?;
    Ok(Action::requeue(requeue))
}

/// Records why the spec cannot be acted on, and waits for the user to change it.
async fn reject(
    wss: &WebSocketService,
    ctx: &Context,
    previous: &WebSocketServiceStatus,
    invalid: &InvalidSpec,
    now: Timestamp,
) -> Result<Action, Error> {
    ctx.metrics.error("InvalidSpec");
    let names = crate::names::ChildNames::of(wss);
    let status = invalid_status(
        previous,
        &names,
        invalid,
        wss.metadata.generation,
        &Time(now),
    );
    if status.conditions != previous.conditions {
        ctx.publish(wss, EventType::Warning, "InvalidSpec", invalid.to_string())
            .await;
    }
    write_status(wss, ctx, previous, status).await?;
    Ok(Action::await_change())
}

async fn get<K>(api: &Api<K>, namespace: &str, name: &str) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .map_err(Error::kube("get", K::kind(&()), namespace, name))
}

/// Problems with objects the spec refers to but the operator does not own.
async fn check_references(ctx: &Context, plan: &Plan) -> Result<Vec<Problem>, Error> {
    let namespace = &plan.names.namespace;
    let mut problems = Vec::new();
    if let Some(name) = &plan.upstream_service {
        let services: Api<Service> = ctx.api(namespace);
        if get(&services, namespace, name).await?.is_none() {
            problems.push(Problem {
                reason: "UpstreamServiceNotFound",
                message: format!("upstream Service {namespace}/{name} does not exist"),
            });
        }
    }
    if let Some(key) = &plan.jwt_key {
        let secrets: Api<Secret> = ctx.api(namespace);
        match get(&secrets, namespace, &key.name).await? {
            None => problems.push(Problem {
                reason: "JwtSecretNotFound",
                message: format!("JWT key Secret {namespace}/{} does not exist", key.name),
            }),
            Some(secret) if !secret_has(&secret, &key.key) => problems.push(Problem {
                reason: "JwtKeyNotFound",
                message: format!(
                    "JWT key Secret {namespace}/{} has no key {:?}",
                    key.name, key.key
                ),
            }),
            Some(_) => {}
        }
    }
    Ok(problems)
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

fn secret_bytes<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|bytes| bytes.0.as_slice())
}

/// Provides the serving certificate; returns its state and, for SelfSigned, the time until renewal.
async fn ensure_certificate(
    wss: &WebSocketService,
    ctx: &Context,
    plan: &Plan,
    tls: &TlsPlan,
    owner: &OwnerReference,
    now: Timestamp,
) -> Result<(Certificate, Option<Duration>), Error> {
    let namespace = &plan.names.namespace;
    let secrets: Api<Secret> = ctx.api(namespace);
    let existing = get(&secrets, namespace, &tls.secret_name).await?;
    let certificate = |state| Certificate {
        secret_name: tls.secret_name.clone(),
        state,
    };
    if tls.mode == TlsMode::Secret {
        return Ok((
            certificate(check_user_secret(namespace, tls, existing.as_ref(), now)),
            None,
        ));
    }
    if let Some(secret) = &existing
        && !secret.owner_references().iter().any(|o| o.uid == owner.uid)
    {
        let problem = Problem {
            reason: "SecretInvalid",
            message: format!(
                "Secret {namespace}/{} exists and is not managed by this WebSocketService; \
                     choose another tls.secretName or delete it",
                tls.secret_name
            ),
        };
        return Ok((certificate(Err(problem)), None));
    }
    let stored = match &existing {
        None => Stored::Missing,
        Some(secret) => match (
            secret_bytes(secret, CERT_KEY),
            secret_bytes(secret, KEY_KEY),
        ) {
            (Some(cert), Some(key)) => match certs::check_pair(cert, key) {
                Ok(info) => Stored::Valid(info),
                Err(message) => Stored::Damaged(message),
            },
            _ => Stored::Damaged("tls.crt or tls.key is missing".to_owned()),
        },
    };
    let reason = match certs::decide(&stored, &tls.dns_names, tls.renew_before, now) {
        Decision::Keep { renewal_time } => {
            let Stored::Valid(info) = &stored else {
                unreachable!("only a valid certificate is kept")
            };
            let reason = match existing
                .as_ref()
                .and_then(|secret| secret.annotations().get(ISSUE_REASON_ANNOTATION))
            {
                Some(reason) if reason == "CertificateRenewed" => "CertificateRenewed",
                _ => "CertificateIssued",
            };
            let renew_in = (renewal_time - now).try_into().unwrap_or(Duration::ZERO);
            return Ok((
                certificate(Ok((reason, info.not_after, Some(renewal_time)))),
                Some(renew_in),
            ));
        }
        Decision::Issue(reason) => reason,
    };
    let stored_ca = existing.as_ref().and_then(|secret| {
        let cert_pem = std::str::from_utf8(secret_bytes(secret, CA_CERT_KEY)?).ok()?;
        let key_pem = std::str::from_utf8(secret_bytes(secret, CA_KEY_KEY)?).ok()?;
        Some((cert_pem, key_pem))
    });
    let issued = certs::issue(
        &format!("{namespace}/{}", plan.names.instance),
        &tls.dns_names,
        tls.duration,
        now,
        stored_ca.map(|(cert_pem, key_pem)| StoredCa { cert_pem, key_pem }),
    )
    .map_err(|message| Error::Certificate {
        secret: tls.secret_name.clone(),
        message,
    })?;
    let (event_reason, why) = match reason {
        IssueReason::Missing => ("CertificateIssued", "first issuance"),
        IssueReason::Damaged => ("CertificateRenewed", "the stored certificate was unusable"),
        IssueReason::NamesChanged => ("CertificateRenewed", "the DNS names changed"),
        IssueReason::Expiring => ("CertificateRenewed", "renewBefore was reached"),
    };
    let secret = tls_secret(plan, tls, &issued, event_reason, owner);
    apply(&secrets, secret, existing).await?;
    let ca_note = if issued.new_ca {
        "a new CA"
    } else {
        "the existing CA"
    };
    ctx.publish(
        wss,
        EventType::Normal,
        event_reason,
        format!(
            "issued a certificate in Secret {} for {} valid until {} ({why}), signed by {ca_note}",
            tls.secret_name,
            tls.dns_names.join(", "),
            issued.not_after
        ),
    )
    .await;
    let renewal_time = certs::renewal_time(issued.not_after, tls.renew_before);
    let renew_in = (renewal_time - now).try_into().unwrap_or(Duration::ZERO);
    Ok((
        certificate(Ok((event_reason, issued.not_after, Some(renewal_time)))),
        Some(renew_in),
    ))
}

/// Checks a user-provided Secret without ever writing it.
fn check_user_secret(
    namespace: &str,
    tls: &TlsPlan,
    secret: Option<&Secret>,
    now: Timestamp,
) -> Result<(&'static str, Timestamp, Option<Timestamp>), Problem> {
    let name = &tls.secret_name;
    let invalid = |message: String| Problem {
        reason: "SecretInvalid",
        message: format!("TLS Secret {namespace}/{name}: {message}"),
    };
    let secret = secret.ok_or_else(|| Problem {
        reason: "SecretNotFound",
        message: format!("TLS Secret {namespace}/{name} does not exist"),
    })?;
    let type_ = secret.type_.as_deref().unwrap_or("Opaque");
    if type_ != TLS_SECRET_TYPE {
        return Err(invalid(format!("has type {type_}, want {TLS_SECRET_TYPE}")));
    }
    let (Some(cert), Some(key)) = (
        secret_bytes(secret, CERT_KEY),
        secret_bytes(secret, KEY_KEY),
    ) else {
        return Err(invalid("needs both tls.crt and tls.key".to_owned()));
    };
    let info = certs::check_pair(cert, key).map_err(invalid)?;
    if info.not_after <= now {
        return Err(invalid(format!(
            "the certificate expired at {}",
            info.not_after
        )));
    }
    Ok(("SecretValid", info.not_after, None))
}

/// One Warning Event per problem when it first appears, not on every reconcile.
async fn announce_problems(
    wss: &WebSocketService,
    ctx: &Context,
    previous: &WebSocketServiceStatus,
    problems: &[Problem],
) {
    let already = conditions::find(&previous.conditions, DEGRADED)
        .filter(|c| c.status == "True")
        .map(|c| c.message.as_str())
        .unwrap_or_default();
    for problem in problems {
        ctx.metrics.error(problem.reason);
        if !already.contains(&problem.message) {
            ctx.publish(
                wss,
                EventType::Warning,
                problem.reason,
                problem.message.clone(),
            )
            .await;
        }
    }
}

/// Writes `status` unless it equals what is stored.
async fn write_status(
    wss: &WebSocketService,
    ctx: &Context,
    previous: &WebSocketServiceStatus,
    status: WebSocketServiceStatus,
) -> Result<(), Error> {
    if wss.status.is_some() && &status == previous {
        return Ok(());
    }
    let namespace = wss.namespace().unwrap_or_default();
    let name = wss.name_any();
    let api: Api<WebSocketService> = ctx.api(&namespace);
    let patch = json!({
        "apiVersion": WebSocketService::api_version(&()),
        "kind": WebSocketService::kind(&()),
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube(
        "apply",
        "WebSocketService status",
        &namespace,
        &name,
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;
    use crate::build::fixtures::{example, plan_of};

    fn user_secret(type_: &str, data: &[(&str, &[u8])]) -> Secret {
        Secret {
            type_: Some(type_.to_owned()),
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn user_secrets_are_checked_for_presence_type_keys_and_pairing() {
        let plan = plan_of(&example("user-tls.yaml"));
        let tls = plan.tls.as_ref().unwrap();
        let now = Timestamp::now();
        let reason = |secret: Option<&Secret>| match check_user_secret("team-a", tls, secret, now) {
            Ok((reason, _, _)) => reason,
            Err(problem) => problem.reason,
        };
        assert_eq!(reason(None), "SecretNotFound");
        let issued =
            certs::issue("x", &["chat".into()], Duration::from_secs(86400), now, None).unwrap();
        let other =
            certs::issue("y", &["chat".into()], Duration::from_secs(86400), now, None).unwrap();
        let good = user_secret(
            "kubernetes.io/tls",
            &[
                ("tls.crt", issued.cert_pem.as_bytes()),
                ("tls.key", issued.key_pem.as_bytes()),
            ],
        );
        assert_eq!(reason(Some(&good)), "SecretValid");
        let opaque = user_secret(
            "Opaque",
            &[
                ("tls.crt", issued.cert_pem.as_bytes()),
                ("tls.key", issued.key_pem.as_bytes()),
            ],
        );
        assert_eq!(reason(Some(&opaque)), "SecretInvalid");
        let no_key = user_secret(
            "kubernetes.io/tls",
            &[("tls.crt", issued.cert_pem.as_bytes())],
        );
        assert_eq!(reason(Some(&no_key)), "SecretInvalid");
        let mismatched = user_secret(
            "kubernetes.io/tls",
            &[
                ("tls.crt", issued.cert_pem.as_bytes()),
                ("tls.key", other.key_pem.as_bytes()),
            ],
        );
        let problem = check_user_secret("team-a", tls, Some(&mismatched), now).unwrap_err();
        assert_eq!(problem.reason, "SecretInvalid");
        assert!(
            problem.message.contains("team-a/chat-user-tls")
                && problem.message.contains("does not match"),
            "{}",
            problem.message
        );
        let later = now + jiff::SignedDuration::from_hours(48);
        assert_eq!(
            check_user_secret("team-a", tls, Some(&good), later)
                .unwrap_err()
                .reason,
            "SecretInvalid"
        );
    }
}
