//! One reconcile of one WebSocketService: read -> validate -> build -> apply -> status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::apply::{apply, delete_owned, hand_over_replicas};
use crate::build::scaled_object::{self, ScaledObject};
use crate::build::{
    autoscaler, config_map, deployment, disruption_budget, owner_reference, service,
};
use crate::conditions::{self, DEGRADED, READY};
use crate::crd::{WebSocketService, WebSocketServiceStatus};
use crate::error::{Error, InvalidSpec};
use crate::idle_timeout::heartbeat_condition;
use crate::metrics::Metrics;
use crate::names::FIELD_MANAGER;
use crate::plan::{Plan, plan};
use crate::status::{
    Observation, Problem, awaiting_deployment_controller, invalid_status, reconciled_status,
};

/// Even with nothing to wait for, each object is looked at again this often.
const RESYNC: Duration = Duration::from_secs(3600);
const RETRY_MIN: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// How often a fleet waiting on another controller looks again: for KEDA's or cert-manager's
/// CRD, or for cert-manager to issue (their objects are watched only when their CRDs were
/// served at the operator's start).
const RECHECK: Duration = Duration::from_secs(30);
const KEDA_NOT_INSTALLED: &str = "KedaNotInstalled";
/// Problems that no watch ends.
const RECHECKED: [&str; 3] = [
    KEDA_NOT_INSTALLED,
    crate::cert_manager::CERT_MANAGER_NOT_INSTALLED,
    crate::cert_manager::CERTIFICATE_NOT_READY,
];

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Gateway image for specs that name none.
    pub default_image: String,
    /// Consecutive failures per object (`namespace/name`), for exponential retry delays; an
    /// entry goes when the object is reconciled successfully or found deleted.
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

    /// Forgets the consecutive failures of the object `namespace/name`, which no longer exists.
    pub(crate) fn forget_failures(&self, namespace: &str, name: &str) {
        self.failures
            .lock()
            .expect("failure map lock")
            .remove(&failure_key(namespace, name));
    }

    pub(crate) fn api<K: Resource<Scope = k8s_openapi::NamespaceResourceScope>>(
        &self,
        namespace: &str,
    ) -> Api<K>
    where
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Publishes an Event about `object` (a WebSocketService, possibly one that failed to parse).
    pub(crate) async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(error = %err, reason, "publishing an event");
        }
    }
}

fn object_key(guard: &DeserializeGuard<WebSocketService>) -> String {
    failure_key(&guard.namespace().unwrap_or_default(), &guard.name_any())
}

fn failure_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
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
            let note = format!("the object does not match the WebSocketService schema: {invalid}");
            ctx.publish(guard.as_ref(), EventType::Warning, "InvalidObject", note)
                .await;
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
    let delay = retry_delay(attempts);
    tracing::warn!(object = %key, reason = error.reason(), error = %error, attempts, ?delay, "reconcile failed");
    if let Ok(wss) = &guard.0 {
        let (ctx, wss, reason, note) =
            (ctx.clone(), wss.clone(), error.reason(), error.to_string());
        tokio::spawn(async move { ctx.publish(&wss, EventType::Warning, reason, note).await });
    }
    Action::requeue(delay)
}

/// 2s after the first failure, doubling per consecutive failure, at most 5 minutes.
fn retry_delay(attempts: u32) -> Duration {
    let doublings = attempts.clamp(1, 16) - 1;
    RETRY_MIN.saturating_mul(1 << doublings).min(RETRY_MAX)
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
    let owner = owner_reference(wss);

    let mut problems = Vec::new();
    let mut requeue = RESYNC;
    let certificate = match &plan.tls {
        Some(tls) => {
            let (certificate, renew_in) =
                crate::certificate::ensure_certificate(wss, ctx, &plan, tls, &owner, now).await?;
            if let Err(problem) = &certificate.state {
                problems.push(problem.clone());
            }
            requeue = requeue.min(renew_in.unwrap_or(RESYNC));
            Some(certificate)
        }
        None => None,
    };
    problems.extend(check_references(ctx, &plan).await?);

    let deployment = apply_children(wss, ctx, &plan, &owner, &mut problems).await?;
    crate::cert_manager::remove_unwanted(ctx, &plan, &owner).await?;
    if problems.iter().any(|p| RECHECKED.contains(&p.reason)) {
        requeue = requeue.min(RECHECK);
    }

    if problems.is_empty()
        && let Some(wait) = awaiting_deployment_controller(&deployment, now)
    {
        // The Deployment's status update wakes this object again; this is only the fallback.
        return Ok(Action::requeue(wait.min(requeue)));
    }
    announce_problems(wss, ctx, &previous, &problems).await;
    let observation = Observation {
        names: &plan.names,
        endpoint: plan
            .names
            .endpoint(plan.tls.is_some(), &wss.spec.listen.path),
        problems: &problems,
        certificate: certificate.as_ref(),
        deployment: Some(&deployment),
        heartbeat: plan.gateway_config.heartbeat.and_then(|heartbeat| {
            heartbeat_condition(wss.spec.service.annotations.as_ref(), heartbeat.interval)
        }),
    };
    let status = reconciled_status(&previous, &observation, wss.metadata.generation, &Time(now));
    write_status(wss, ctx, &previous, status).await?;
    Ok(Action::requeue(requeue))
}

/// Applies every child (each only when it differs) and returns the gateway Deployment; a child
/// the cluster cannot hold (KEDA's ScaledObject without KEDA) is added to `problems`.
async fn apply_children(
    wss: &WebSocketService,
    ctx: &Context,
    plan: &Plan,
    owner: &OwnerReference,
    problems: &mut Vec<Problem>,
) -> Result<Deployment, Error> {
    let namespace = &plan.names.namespace;
    let gateway = plan.names.gateway();
    apply_named(ctx, namespace, config_map::config_map(plan, owner)).await?;

    let deployments: Api<Deployment> = ctx.api(namespace);
    let observed = get(&deployments, namespace, &gateway).await?;
    if let (Some(_), Some(observed)) = (&wss.spec.autoscaling, &observed) {
        hand_over_replicas(&deployments, observed).await?;
    }
    let mut desired = deployment::deployment(plan, &wss.spec, owner, &ctx.default_image);
    if let (Some(autoscaling), None) = (&wss.spec.autoscaling, &observed) {
        // A new Deployment starts at the autoscaler's minimum rather than the default of one;
        // the next reconcile hands the field over to the HPA.
        desired.spec.get_or_insert_default().replicas = Some(autoscaling.min_replicas);
    }
    let deployment = apply(&deployments, desired, observed).await?;

    apply_named(ctx, namespace, service::service(plan, &wss.spec, owner)).await?;
    apply_autoscaler(wss, ctx, plan, owner, problems).await?;
    apply_named(
        ctx,
        namespace,
        disruption_budget::disruption_budget(plan, owner),
    )
    .await?;
    Ok(deployment)
}

/// The operator's own HPA, or KEDA's ScaledObject (KEDA then makes the HPA), or neither; the
/// one not wanted is deleted first, so that two autoscalers never scale the Deployment at once.
async fn apply_autoscaler(
    wss: &WebSocketService,
    ctx: &Context,
    plan: &Plan,
    owner: &OwnerReference,
    problems: &mut Vec<Problem>,
) -> Result<(), Error> {
    let namespace = &plan.names.namespace;
    let gateway = plan.names.gateway();
    let autoscaling = wss.spec.autoscaling.as_ref();
    let keda = autoscaling.and_then(|autoscaling| autoscaling.keda.as_ref());
    if autoscaling.is_none() || keda.is_some() {
        let autoscalers: Api<HorizontalPodAutoscaler> = ctx.api(namespace);
        let observed = get(&autoscalers, namespace, &gateway).await?;
        delete_owned(&autoscalers, observed, &owner.uid).await?;
    }
    if keda.is_none() {
        // Without KEDA's CRD the read answers 404, which reads as absent: nothing to delete.
        let scaled_objects: Api<ScaledObject> = ctx.api(namespace);
        let observed = get(&scaled_objects, namespace, &gateway).await?;
        delete_owned(&scaled_objects, observed, &owner.uid).await?;
    }
    match (autoscaling, keda) {
        (Some(autoscaling), Some(keda)) => {
            let desired = scaled_object::scaled_object(plan, autoscaling, keda, owner);
            match apply_named(ctx, namespace, desired).await {
                Ok(_) => {}
                Err(err) if err.is_not_found() => problems.push(Problem {
                    reason: KEDA_NOT_INSTALLED,
                    message: format!(
                        "autoscaling.keda needs KEDA: the CustomResourceDefinition scaledobjects.keda.sh is not installed, so ScaledObject {namespace}/{gateway} cannot be created"
                    ),
                }),
                Err(err) => return Err(err),
            }
        }
        (Some(autoscaling), None) => {
            apply_named(
                ctx,
                namespace,
                autoscaler::autoscaler(plan, autoscaling, owner),
            )
            .await?;
        }
        (None, _) => {}
    }
    Ok(())
}

/// Reads the child named like `desired` and applies `desired` if it differs.
pub(crate) async fn apply_named<K>(ctx: &Context, namespace: &str, desired: K) -> Result<K, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = ctx.api(namespace);
    let observed = get(&api, namespace, &desired.name_any()).await?;
    apply(&api, desired, observed).await
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

pub(crate) async fn get<K>(api: &Api<K>, namespace: &str, name: &str) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get(name).await {
        Ok(object) => Ok(Some(object)),
        // Absent, or its type is not served (KEDA's ScaledObject without KEDA).
        Err(err) if crate::error::is_not_found(&err) => Ok(None),
        Err(err) => Err(Error::kube("get", K::kind(&()), namespace, name)(err)),
    }
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
    let secret_keys = [
        (
            &plan.jwt_key,
            "JWT key",
            "JwtSecretNotFound",
            "JwtKeyNotFound",
        ),
        (
            &plan.jwks_ca,
            "JWKS CA",
            "JwksCaSecretNotFound",
            "JwksCaKeyNotFound",
        ),
    ];
    for (key, what, secret_missing, key_missing) in secret_keys {
        let Some(key) = key else { continue };
        let secrets: Api<Secret> = ctx.api(namespace);
        match get(&secrets, namespace, &key.name).await? {
            None => problems.push(Problem {
                reason: secret_missing,
                message: format!("{what} Secret {namespace}/{} does not exist", key.name),
            }),
            Some(secret) if !secret_has(&secret, &key.key) => problems.push(Problem {
                reason: key_missing,
                message: format!(
                    "{what} Secret {namespace}/{} has no key {:?}",
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

/// A Normal Event when the fleet becomes Ready, a Warning when it stops being Ready, so that
/// `kubectl describe` tells the fleet's story and not only its problems.
async fn announce_readiness(
    wss: &WebSocketService,
    ctx: &Context,
    previous: &WebSocketServiceStatus,
    status: &WebSocketServiceStatus,
) {
    let was_ready =
        conditions::find(&previous.conditions, READY).is_some_and(|c| c.status == "True");
    let Some(ready) = conditions::find(&status.conditions, READY) else {
        return;
    };
    let event_type = match (was_ready, ready.status == "True") {
        (false, true) => EventType::Normal,
        (true, false) => EventType::Warning,
        _ => return,
    };
    ctx.publish(wss, event_type, &ready.reason, ready.message.clone())
        .await;
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
    announce_readiness(wss, ctx, previous, &status).await;
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
pub(crate) mod fixtures {
    //! A [`Context`] over a fake apiserver, for the reconcile steps' tests.

    use std::sync::Arc;

    use kube::Client;
    use kube::runtime::events::{Recorder, Reporter};

    use super::Context;
    use crate::metrics::Metrics;
    use crate::names::FIELD_MANAGER;

    /// A Context whose requests go to `client`.
    pub fn context(client: Client) -> Context {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: None,
        };
        Context::new(
            client.clone(),
            Recorder::new(client, reporter),
            Arc::new(Metrics::default()),
            "wsfleet/gateway:test".to_owned(),
        )
    }

    /// A client whose apiserver accepts every request and never answers.
    pub fn unanswering_client() -> Client {
        let service = tower::service_fn(|_: http::Request<kube::client::Body>| {
            std::future::pending::<
                Result<http::Response<kube::client::Body>, std::convert::Infallible>,
            >()
        });
        Client::new(service, "team-a")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_a_cap() {
        let delays: Vec<u64> = (1..=9).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128, 256, 300]);
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX);
    }
}
