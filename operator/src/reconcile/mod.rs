//! One reconcile of one WebSocketService, as a pipeline of named steps:
//!
//! 1. validate: [`plan`](crate::plan::plan) the spec, or report why it cannot be acted on;
//! 2. [`observe`]: read the children from the caches and the Secrets the spec names;
//! 3. [`desired`] (pure): build the desired set, including the certificate decision;
//! 4. [`applier`]: delete what is no longer desired, apply what differs;
//! 5. [`report`]: write the status and the Events when they change.

mod applier;
mod desired;
mod observe;
mod report;
pub(crate) mod serving_certificate;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::ResourceExt;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use crate::build::owner_reference;
use crate::context::{Context, object_key};
use crate::crd::WebSocketService;
use crate::error::Error;
use crate::plan::plan;
use crate::verified::FleetVersion;

const RETRY_MIN: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// The controller's reconcile function.
pub async fn reconcile(
    guard: Arc<DeserializeGuard<WebSocketService>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    // Inside the controller's span, which names what woke the object.
    tracing::debug!("reconcile started");
    let key = key_of(&guard);
    let result = match &guard.0 {
        Ok(wss) => reconcile_valid(wss, &ctx).await,
        Err(invalid) => {
            // The schema should make this impossible; a stored object from an older schema is
            // reported and left alone until it changes.
            tracing::warn!(object = %key, error = %invalid, "cannot read object");
            ctx.metrics.error("InvalidObject");
            let note = format!("the object does not match the WebSocketService schema: {invalid}");
            ctx.publish(guard.as_ref(), EventType::Warning, "InvalidObject", note)
                .await;
            Ok(Action::await_change())
        }
    };
    ctx.metrics.reconciled(started.elapsed());
    if result.is_ok() {
        ctx.forget_failures(&key);
    }
    result
}

async fn reconcile_valid(wss: &WebSocketService, ctx: &Context) -> Result<Action, Error> {
    if wss.metadata.deletion_timestamp.is_some() {
        // Owner references hand the children to the garbage collector.
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let plan = match plan(wss) {
        Ok(plan) => plan,
        Err(invalid) => return report::reject(wss, ctx, &invalid, now).await,
    };
    let observed = observe::observe(ctx, wss, &plan).await?;
    let desired = desired::desired(wss, &plan, &observed, &ctx.default_image, now, ctx.keys)?;
    let mut outcome = desired.outcome;
    let owner = owner_reference(wss);
    let namespace = &plan.names.namespace;
    let fleet = FleetVersion::of(wss);
    let applied = applier::apply_desired(
        ctx,
        namespace,
        &owner,
        fleet.as_ref(),
        desired.children,
        observed,
    )
    .await?;
    outcome.settle(applied.refused);
    if let Some((reason, note)) = outcome.issued.take() {
        ctx.publish(wss, EventType::Normal, reason, note).await;
    }
    report::report(wss, ctx, &plan, &outcome, &applied.deployment, now).await
}

/// The controller's error policy: retry with a delay doubling per consecutive failure.
pub fn error_policy(
    guard: Arc<DeserializeGuard<WebSocketService>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.error(error.reason());
    let key = key_of(&guard);
    let attempts = ctx.record_failure(&key);
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

fn key_of(guard: &DeserializeGuard<WebSocketService>) -> String {
    object_key(&guard.namespace().unwrap_or_default(), &guard.name_any())
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! A [`Context`] over a fake apiserver, for the reconcile steps' tests.

    use std::sync::Arc;

    use kube::Client;
    use kube::Resource;
    use kube::runtime::events::Reporter;
    use kube::runtime::reflector::{self, Store};
    use kube::runtime::watcher::Event;
    use serde_json::Value;

    use crate::context::Context;
    use crate::event_recorders::EventRecorders;
    use crate::metrics::Metrics;
    use crate::names::FIELD_MANAGER;
    use crate::observation_hold::ObservationHold;
    use crate::stores::{AddOnChildren, Cache, Stores, Unwatched};
    use crate::unseen_writes::UnseenWrites;
    use crate::verified::Verified;

    /// A Context whose requests go to `client`, with empty caches (as after the first list of
    /// an empty namespace).
    pub fn context(client: Client) -> Context {
        context_with(client, stores_holding(&[]))
    }

    /// Ready caches holding `objects`, each routed to its kind's cache by its `kind` field.
    pub fn stores_holding(objects: &[Value]) -> Stores {
        fn filled<K>(objects: &[Value]) -> Store<K>
        where
            K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + 'static,
        {
            let (store, mut writer) = reflector::store();
            writer.apply_watcher_event(&Event::Init);
            for object in objects
                .iter()
                .filter(|o| o["kind"] == K::kind(&()).as_ref())
            {
                let object = serde_json::from_value(object.clone()).expect("a valid object");
                writer.apply_watcher_event(&Event::InitApply(object));
            }
            writer.apply_watcher_event(&Event::InitDone);
            store
        }
        fn cache<K>(objects: &[Value]) -> Cache<K>
        where
            K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + 'static,
        {
            Cache {
                store: filled(objects),
                unseen: UnseenWrites::default(),
                verified: Verified::default(),
            }
        }
        Stores {
            config_maps: cache(objects),
            deployments: cache(objects),
            services: cache(objects),
            autoscalers: cache(objects),
            budgets: cache(objects),
            scaled_objects: AddOnChildren::Cached(cache(objects)),
            certificates: AddOnChildren::Cached(cache(objects)),
            service_names: filled(objects),
            observation_hold: ObservationHold::default(),
        }
    }

    /// [`stores_holding`] on a cluster whose add-ons' CRDs were not served as the term began.
    pub fn stores_without_add_ons(objects: &[Value]) -> Stores {
        Stores {
            scaled_objects: AddOnChildren::Unwatched(Unwatched::default()),
            certificates: AddOnChildren::Unwatched(Unwatched::default()),
            ..stores_holding(objects)
        }
    }

    /// A Context over `client` and `stores`.
    pub fn context_with(client: Client, stores: Stores) -> Context {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: None,
        };
        Context::new(
            client.clone(),
            stores,
            EventRecorders::new(&client, &reporter),
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
