//! The kube-runtime Controller: which watches trigger a reconcile of which WebSocketService.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, controller, watcher};

use crate::context::{Context, object_key};
use crate::crd::WebSocketService;
use crate::error::Error;
use crate::lean::{self, Lean};
use crate::reconcile::{error_policy, reconcile};
use crate::references::{Kind, References};
use crate::stores::Watches;
use crate::triggers;

type Guarded = DeserializeGuard<WebSocketService>;

/// Triggers for one object closer together than this are merged into one reconcile.
const DEBOUNCE: Duration = Duration::from_secs(1);
/// At most this many reconciles run at once. Each holds one request to the apiserver at a time,
/// so this bounds the connections the client opens (over HTTP/1.1, one per request in flight)
/// and the memory of the requests; without it a thousand new objects open hundreds of TLS
/// connections, and the controller's queue rescans every waiting object on each poll.
const CONCURRENT_RECONCILES: u16 = 64;

/// Runs the controller until `shutdown` resolves; watches one namespace or all. `watches` fill
/// the caches in `ctx` and are the triggers of the children's owners.
pub async fn run(
    ctx: Arc<Context>,
    watches: Watches,
    namespace: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    // Decoded lean: a fleet's managed fields (the spec as its creator sent it, the status as
    // the operator wrote it) would otherwise be decoded whole on every event, and buffered and
    // copied once more by the guard against objects that do not match the schema.
    let api: Api<Lean<Guarded>> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let secrets: Api<Lean<PartialObjectMeta<Secret>>> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (store, writer) = reflector::store();
    let references = References::default();
    let objects = fleet_triggers(
        watcher(api, watcher::Config::default().any_semantic()).map_ok(lean::unwrap),
        writer,
        references.clone(),
    );
    let controller = Controller::for_stream(objects, store).with_config(
        controller::Config::default()
            // A rollout sends a burst of Deployment status updates; one reconcile covers them.
            .debounce(DEBOUNCE)
            .concurrency(CONCURRENT_RECONCILES),
    );
    let secret_references = references.clone();
    let outcomes = ctx.clone();
    let observation_stopped = ctx.stores.observation_hold.stopped();
    // KEDA's ScaledObjects and cert-manager's Certificates are watched only where their CRDs
    // are served: a watch of a resource that does not exist would fail for good. A cluster that
    // gains them later needs an operator restart for the watch; meanwhile the fleets that use
    // them look again every 30 s.
    let mut controller = controller
        .owns_stream(watches.config_maps)
        .owns_stream(watches.deployments)
        .owns_stream(watches.services)
        .owns_stream(watches.autoscalers)
        .owns_stream(watches.budgets);
    if let Some(scaled_objects) = watches.scaled_objects {
        controller = controller.owns_stream(scaled_objects);
    }
    if let Some(certificates) = watches.certificates {
        controller = controller.owns_stream(certificates);
    }
    controller
        // The user's TLS and JWT Secrets and the upstream Service are not the operator's, yet
        // their appearance must end a Degraded state, so all of them are watched. Both by
        // metadata only (an `Api<PartialObjectMeta<_>>` asks the apiserver for metadata): the
        // operator keeps no Secret's data in memory, and every write to a Secret still arrives,
        // since it moves the resourceVersion.
        .watches_stream(
            watcher(secrets, watcher::Config::default())
                .map_ok(lean::unwrap)
                .touched_objects(),
            move |secret: PartialObjectMeta<Secret>| referrers(&secret_references, &secret),
        )
        // A fleet's own Service wakes it through the owned children's watch, which tells the
        // echo of the fleet's own apply; only the fleets that name a Service as their upstream
        // are woken from here.
        .watches_stream(watches.service_names, move |service| {
            named_by(&references, Kind::Service, &service)
        })
        // Fleets whose status waited for a Deployment controller that has stopped working.
        .reconcile_on(observation_stopped)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|outcome| {
            record_outcome(&outcomes, outcome);
            std::future::ready(())
        })
        .await;
}

/// The WebSocketService watch as the controller's trigger: every event goes into the cache of
/// `writer`, but wakes its object only when it changed what a reconcile acts on
/// ([`triggers::acted_on`]); the cache takes it first, so a reconcile reads the latest status
/// all the same.
fn fleet_triggers(
    events: impl Stream<Item = Result<watcher::Event<Guarded>, watcher::Error>>,
    writer: Writer<Guarded>,
    references: References,
) -> impl Stream<Item = Result<Guarded, watcher::Error>> {
    events
        .inspect_ok(move |event| references.saw(event))
        // Nothing reads a WebSocketService's managed fields; kept, they would double the size
        // of each cached object.
        .modify(|guard: &mut Guarded| {
            if let Ok(wss) = &mut guard.0 {
                wss.metadata.managed_fields = None;
            }
        })
        .reflect(writer)
        .applied_objects()
        .predicate_filter(triggers::acted_on, Default::default())
}

/// Logs what the controller did with one request, and forgets the failures of deleted objects.
fn record_outcome(
    ctx: &Context,
    outcome: Result<(ObjectRef<Guarded>, Action), controller::Error<Error, watcher::Error>>,
) {
    match outcome {
        Ok((object, _)) => tracing::debug!(object = %object, "reconciled"),
        // Reconcile failures are logged by the error policy.
        Err(controller::Error::ReconcilerFailed(..)) => {}
        // A retry came due for an object deleted meanwhile: deleted objects are never reconciled
        // again, so this is the moment to drop their failure count.
        Err(controller::Error::ObjectNotFound(object)) => {
            tracing::debug!(object = %object, "deleted before its retry");
            ctx.forget_failures(&object_key(
                object.namespace.as_deref().unwrap_or_default(),
                &object.name,
            ));
        }
        Err(err) => tracing::warn!(error = %err, "controller"),
    }
}

/// The WebSocketServices that own the Secret `secret` or whose spec names it, each once.
fn referrers(
    references: &References,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<Guarded>> {
    let namespace = secret.metadata.namespace.clone().unwrap_or_default();
    let mut found: Vec<ObjectRef<Guarded>> = secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|owner| {
            owner.kind == "WebSocketService" && owner.api_version == "wsfleet.io/v1alpha1"
        })
        .map(|owner| ObjectRef::new(&owner.name).within(&namespace))
        .collect();
    for referrer in named_by(references, Kind::Secret, secret) {
        if !found.contains(&referrer) {
            found.push(referrer);
        }
    }
    found
}

/// The WebSocketServices whose spec names `object`, a `kind`.
fn named_by<K: Resource>(
    references: &References,
    kind: Kind,
    object: &K,
) -> Vec<ObjectRef<Guarded>> {
    let meta = object.meta();
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    references.fleets_naming(kind, namespace, meta.name.as_deref().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::runtime::reflector;
    use kube::{Client, ResourceExt};

    use super::*;
    use crate::build::fixtures::{example, owner};
    use crate::reconcile::fixtures::{context, context_with, unanswering_client};

    fn references_of(objects: &[WebSocketService]) -> References {
        let references = References::default();
        for object in objects {
            references.saw(&watcher::Event::Apply(DeserializeGuard(Ok(object.clone()))));
        }
        references
    }

    fn names(found: Vec<ObjectRef<Guarded>>) -> Vec<String> {
        let mut names: Vec<String> = found
            .into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_secret_maps_to_its_owner_and_to_the_services_that_name_it() {
        let production = example("production.yaml");
        let references = references_of(&[
            production.clone(),
            example("user-tls.yaml"),
            example("minimal.yaml"),
        ]);
        let secret = |name: &str, owners: Option<Vec<_>>| PartialObjectMeta::<Secret> {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("team-a".to_owned()),
                owner_references: owners,
                ..ObjectMeta::default()
            },
            ..PartialObjectMeta::default()
        };
        let found = |s: &PartialObjectMeta<Secret>| names(referrers(&references, s));
        assert_eq!(
            found(&secret("chat-user-tls", None)),
            ["team-a/chat-user-tls"]
        );
        assert_eq!(found(&secret("chat-jwt", None)), ["team-a/chat-prod"]);
        assert_eq!(
            found(&secret("chat-prod-tls", Some(vec![owner(&production)]))),
            ["team-a/chat-prod"]
        );
        assert!(found(&secret("unrelated", None)).is_empty());
        let mut elsewhere = secret("chat-jwt", None);
        elsewhere.metadata.namespace = Some("team-b".to_owned());
        assert!(found(&elsewhere).is_empty(), "references are namespaced");
    }

    #[test]
    fn the_upstream_service_maps_to_every_fleet_in_front_of_it() {
        let references = references_of(&[
            example("minimal.yaml"),
            example("production.yaml"),
            example("hpa-cpu.yaml"),
        ]);
        let backend = Service {
            metadata: ObjectMeta {
                name: Some("chat-backend".to_owned()),
                namespace: Some("team-a".to_owned()),
                ..ObjectMeta::default()
            },
            ..Service::default()
        };
        assert_eq!(
            names(named_by(&references, Kind::Service, &backend)),
            ["team-a/chat", "team-a/chat-prod"]
        );
        // A fleet's own Service is left to the owned children's watch.
        let own = Service {
            metadata: ObjectMeta {
                name: Some("chat".to_owned()),
                namespace: Some("team-a".to_owned()),
                owner_references: Some(vec![owner(&example("minimal.yaml"))]),
                ..ObjectMeta::default()
            },
            ..Service::default()
        };
        assert!(names(named_by(&references, Kind::Service, &own)).is_empty());
    }

    #[test]
    fn an_issued_secret_maps_to_its_owner_and_every_fleet_waiting_for_its_name() {
        let production = example("production.yaml");
        let mut canary = production.clone();
        canary.metadata.name = Some("chat-canary".to_owned());
        canary.metadata.uid = Some("uid-2".to_owned());
        let references = references_of(&[production.clone(), canary, example("minimal.yaml")]);
        // Deleting the owner deletes its Secret; that event must wake the canary at once.
        let issued = PartialObjectMeta::<Secret> {
            metadata: ObjectMeta {
                name: Some("chat-prod-tls".to_owned()),
                namespace: Some("team-a".to_owned()),
                owner_references: Some(vec![owner(&production)]),
                ..ObjectMeta::default()
            },
            ..PartialObjectMeta::default()
        };
        assert_eq!(
            names(referrers(&references, &issued)),
            ["team-a/chat-canary", "team-a/chat-prod"]
        );
    }

    #[tokio::test]
    async fn secrets_are_watched_by_metadata_only() {
        let (requests, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let apiserver = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let accept = request
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let _ = requests.send((request.uri().path().to_owned(), accept));
            std::future::pending::<
                Result<http::Response<kube::client::Body>, std::convert::Infallible>,
            >()
        });
        let client = Client::new(apiserver, "team-a");
        let (stores, watches) = crate::stores::watch(
            &client,
            Some("team-a"),
            crate::stores::Served {
                keda: false,
                cert_manager: false,
            },
        );
        let ctx = Arc::new(context_with(client, stores));
        let secret_list_accepts = async {
            while let Some((path, accept)) = seen.recv().await {
                if path == "/api/v1/namespaces/team-a/secrets" {
                    return accept;
                }
            }
            panic!("the controller never listed Secrets");
        };
        let accept = tokio::select! {
            accept = secret_list_accepts => accept,
            () = run(ctx, watches, Some("team-a"), std::future::pending()) => panic!("the controller stopped"),
            () = tokio::time::sleep(Duration::from_secs(30)) => panic!("no Secret list within 30s"),
        };
        assert!(accept.contains("as=PartialObjectMetadataList"), "{accept}");
    }

    #[test]
    fn the_operators_own_status_write_is_cached_but_wakes_nothing() {
        let created = example("minimal.yaml");
        let mut status_written = created.clone();
        status_written.metadata.resource_version = Some("2".to_owned());
        status_written.status = Some(crate::crd::WebSocketServiceStatus {
            observed_generation: created.metadata.generation,
            ..Default::default()
        });
        let mut relabelled = status_written.clone();
        relabelled.metadata.resource_version = Some("3".to_owned());
        relabelled.metadata.labels = Some([("team".to_owned(), "a".to_owned())].into());
        let (store, writer) = reflector::store();
        let events = [&created, &status_written, &relabelled]
            .map(|wss| Ok(watcher::Event::Apply(DeserializeGuard(Ok(wss.clone())))));
        let references = References::default();
        let woken: Vec<_> = futures::executor::block_on(
            fleet_triggers(futures::stream::iter(events), writer, references.clone()).collect(),
        );
        assert_eq!(
            names(references.fleets_naming(Kind::Service, "team-a", "chat-backend")),
            ["team-a/chat"],
            "every event reaches the references too"
        );
        let versions: Vec<_> = woken
            .iter()
            .map(|guard| guard.as_ref().unwrap().resource_version())
            .collect();
        assert_eq!(versions, [created.resource_version(), Some("3".to_owned())]);
        let cached = store.get(&ObjectRef::from_obj(&DeserializeGuard(Ok(created))));
        let cached = cached.expect("the object is cached");
        assert_eq!(
            cached.0.as_ref().unwrap().resource_version().as_deref(),
            Some("3")
        );
    }

    #[tokio::test]
    async fn a_deleted_object_leaves_no_failure_count_behind() {
        let ctx = Arc::new(context(unanswering_client()));
        let guard = Arc::new(DeserializeGuard(Ok(example("minimal.yaml"))));
        let fail = || {
            let error = Error::Certificate {
                secret: "chat-tls".to_owned(),
                message: "no entropy".to_owned(),
            };
            error_policy(guard.clone(), &error, ctx.clone())
        };
        let seconds = |secs| Action::requeue(Duration::from_secs(secs));
        assert_eq!([fail(), fail()], [seconds(2), seconds(4)]);
        // The retry comes due after the object was deleted.
        let deleted = ObjectRef::from_obj(guard.as_ref()).erase();
        record_outcome(
            &ctx,
            Err(controller::Error::ObjectNotFound(Box::new(deleted))),
        );
        assert_eq!(
            fail(),
            seconds(2),
            "a new object of that name starts afresh"
        );
    }
}
