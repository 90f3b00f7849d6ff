//! The operator's caches of what it reads: every child kind it writes, and the metadata of all
//! Services. The watches that fill them are also the controller's triggers, so the observe step
//! reads them instead of asking the apiserver, and a steady state costs no reads.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::Event;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::build::cert_manager::Certificate as CertManagerCertificate;
use crate::build::scaled_object::ScaledObject;
use crate::child_triggers::{self, ChildTriggers};
use crate::error::Error;
use crate::lean::{self, Lean};
use crate::names::FIELD_MANAGER;
use crate::observation_hold::ObservationHold;
use crate::unseen_writes::UnseenWrites;
use crate::verified::Verified;

/// A stream of changed objects that keeps a [`Store`] up to date as it is polled.
pub type Changes<K> = BoxStream<'static, Result<K, watcher::Error>>;

/// The caches the observe step reads.
#[derive(Clone)]
pub struct Stores {
    pub config_maps: Cache<ConfigMap>,
    pub deployments: Cache<Deployment>,
    pub services: Cache<Service>,
    pub autoscalers: Cache<HorizontalPodAutoscaler>,
    pub budgets: Cache<PodDisruptionBudget>,
    pub scaled_objects: AddOnChildren<ScaledObject>,
    pub certificates: AddOnChildren<CertManagerCertificate>,
    /// Every Service in scope by metadata only: an upstream Service need only exist.
    pub service_names: Store<PartialObjectMeta<Service>>,
    /// The fleets whose status waits for the Deployment controller; the Deployment watch tells
    /// it whether the controller works.
    pub observation_hold: ObservationHold,
}

/// One child kind's cache: what its watch delivered, the operator's own applies the watch has
/// not delivered yet, and the children found up to date.
pub struct Cache<K: 'static + Resource<DynamicType = ()>> {
    pub store: Store<K>,
    pub unseen: UnseenWrites<K>,
    pub verified: Verified,
}

impl<K: 'static + Resource<DynamicType = ()> + Clone> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            unseen: self.unseen.clone(),
            verified: self.verified.clone(),
        }
    }
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + 'static,
{
    /// The child `namespace/name` as a reconcile should see it (see [`UnseenWrites::newer`]).
    pub async fn get(&self, namespace: &str, name: &str) -> Result<Option<Arc<K>>, Error> {
        let cached = cached(&self.store, namespace, name).await?;
        Ok(self.unseen.newer(namespace, name, cached))
    }
}

/// The children of an add-on's kind (KEDA's ScaledObject, cert-manager's Certificate): cached
/// when the add-on's CRD was served as the operator's term began, read from the apiserver
/// otherwise.
#[derive(Clone)]
pub enum AddOnChildren<K: 'static + Resource<DynamicType = ()>> {
    Cached(Cache<K>),
    Unwatched(Unwatched),
}

/// An add-on kind whose CRD was not served as the term began. No object of it can have existed
/// then (objects go with their CRD), so until this term writes one, a fleet that does not ask
/// for the add-on has none to look for, and its reconcile need not ask the apiserver: two
/// requests per reconcile on a cluster without KEDA or cert-manager.
#[derive(Clone, Default)]
pub struct Unwatched {
    written: Arc<AtomicBool>,
}

impl Unwatched {
    /// Whether a child of this kind may exist: this term has written one.
    pub fn may_exist(&self) -> bool {
        self.written.load(Ordering::Relaxed)
    }

    /// Notes that a child of this kind was written (the CRD is served by now).
    pub fn wrote(&self) {
        self.written.store(true, Ordering::Relaxed);
    }
}

/// The watches that fill [`Stores`]; the controller polls them as its triggers.
pub struct Watches {
    pub config_maps: Changes<ConfigMap>,
    pub deployments: Changes<Deployment>,
    pub services: Changes<Service>,
    pub autoscalers: Changes<HorizontalPodAutoscaler>,
    pub budgets: Changes<PodDisruptionBudget>,
    pub scaled_objects: Option<Changes<ScaledObject>>,
    pub certificates: Option<Changes<CertManagerCertificate>>,
    pub service_names: Changes<PartialObjectMeta<Service>>,
}

/// Which add-on CRDs the apiserver served when the operator started.
#[derive(Debug, Clone, Copy)]
pub struct Served {
    pub keda: bool,
    pub cert_manager: bool,
}

impl Served {
    /// Asks the apiserver.
    pub async fn discover(client: &Client) -> Self {
        Self {
            keda: served::<ScaledObject>(client, "KEDA").await,
            cert_manager: served::<CertManagerCertificate>(client, "cert-manager").await,
        }
    }
}

/// How long the operator waits at start for the answer to whether a CRD is served.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the apiserver serves the custom resource `K` (of the add-on `owner`).
async fn served<K: Resource<DynamicType = ()>>(client: &Client, owner: &str) -> bool {
    let group_version = K::api_version(&());
    let discovered = tokio::time::timeout(
        DISCOVERY_TIMEOUT,
        client.list_api_group_resources(&group_version),
    )
    .await;
    let plural = K::plural(&());
    let installed = match discovered {
        Ok(Ok(resources)) => resources
            .resources
            .iter()
            .any(|resource| resource.name == plural),
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "discovering {group_version}");
            false
        }
        Err(_) => {
            tracing::warn!("no answer about {group_version} within {DISCOVERY_TIMEOUT:?}");
            false
        }
    };
    tracing::info!(
        installed,
        "{owner} {plural} ({group_version}) are {}watched",
        if installed { "" } else { "not " }
    );
    installed
}

/// The stores and the watches that fill them, in one namespace or all.
pub fn watch(client: &Client, namespace: Option<&str>, served: Served) -> (Stores, Watches) {
    let scope = Scope {
        client,
        namespace,
        children: watcher::Config::default()
            .labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}")),
    };
    let (config_maps, config_map_changes) =
        scope.children(Verified::default(), ChildTriggers::every_event());
    // A rollout updates the Deployment's status at every step; its spec is what is compared.
    let (deployments, deployment_changes) = scope.children(
        Verified::by_deployment_content(),
        ChildTriggers::new(child_triggers::deployment),
    );
    // Every observation of a Deployment changes its progress, so it wakes its fleet and passes.
    let observation_hold = ObservationHold::default();
    let deployment_changes = {
        let hold = observation_hold.clone();
        deployment_changes
            .inspect_ok(move |deployment| hold.saw(deployment))
            .boxed()
    };
    let (services, service_changes) =
        scope.children(Verified::default(), ChildTriggers::every_event());
    let (autoscalers, autoscaler_changes) = scope.children(
        Verified::default(),
        ChildTriggers::new(child_triggers::autoscaler),
    );
    let (budgets, budget_changes) = scope.children(
        Verified::by_content(),
        ChildTriggers::new(child_triggers::content),
    );
    let (scaled_objects, scaled_object_changes) = add_on(served.keda, || {
        let triggers = ChildTriggers::new(child_triggers::content);
        scope.children(Verified::by_content(), triggers)
    });
    let (certificates, certificate_changes) = add_on(served.cert_manager, || {
        scope.children(Verified::default(), ChildTriggers::every_event())
    });
    let (service_names, service_name_changes) = {
        let (store, writer) = reflector::store();
        let api = scope.api::<Lean<PartialObjectMeta<Service>>>();
        let changes = watcher(api, watcher::Config::default())
            .default_backoff()
            .map_ok(lean::unwrap)
            // Only the name and the owners are read (whether it exists, and whose it is).
            .modify(|service: &mut PartialObjectMeta<Service>| {
                let meta = &mut service.metadata;
                meta.managed_fields = None;
                meta.annotations = None;
                meta.labels = None;
            })
            .reflect(writer)
            .touched_objects()
            .boxed();
        (store, changes)
    };
    let stores = Stores {
        config_maps,
        deployments,
        services,
        autoscalers,
        budgets,
        scaled_objects,
        certificates,
        service_names,
        observation_hold,
    };
    let watches = Watches {
        config_maps: config_map_changes,
        deployments: deployment_changes,
        services: service_changes,
        autoscalers: autoscaler_changes,
        budgets: budget_changes,
        scaled_objects: scaled_object_changes,
        certificates: certificate_changes,
        service_names: service_name_changes,
    };
    (stores, watches)
}

/// An add-on kind's children and their watch, when `served`.
fn add_on<K: Resource<DynamicType = ()> + Clone>(
    served: bool,
    reflect: impl FnOnce() -> (Cache<K>, Changes<K>),
) -> (AddOnChildren<K>, Option<Changes<K>>) {
    if served {
        let (cache, changes) = reflect();
        (AddOnChildren::Cached(cache), Some(changes))
    } else {
        (AddOnChildren::Unwatched(Unwatched::default()), None)
    }
}

struct Scope<'a> {
    client: &'a Client,
    namespace: Option<&'a str>,
    /// What selects the operator's children.
    children: watcher::Config,
}

impl Scope<'_> {
    fn api<K: Resource<DynamicType = (), Scope = NamespaceResourceScope>>(&self) -> Api<K> {
        match self.namespace {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        }
    }

    /// The cache of one kind of the operator's children, and its changes ([`reflect`]).
    fn children<K>(&self, verified: Verified, triggers: ChildTriggers<K>) -> (Cache<K>, Changes<K>)
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug
            + Send
            + Sync
            + 'static,
    {
        reflect(self.api(), self.children.clone(), verified, triggers)
    }
}

/// A watch of `api` whose objects are kept in the returned cache, their managed fields cut as
/// they are read ([`Lean`]), with `verified` as the memory of children found up to date; the
/// returned changes are the children whose fleets `triggers` wakes.
fn reflect<K>(
    api: Api<Lean<K>>,
    config: watcher::Config,
    verified: Verified,
    triggers: ChildTriggers<K>,
) -> (Cache<K>, Changes<K>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let cache = Cache {
        store,
        unseen: UnseenWrites::default(),
        verified,
    };
    let events = watcher(api, config).default_backoff().map_ok(lean::unwrap);
    let changes = cached_changes(events, writer, &cache, triggers);
    (cache, changes)
}

/// `events` into `cache` (into its store through `writer`); the children whose fleets
/// `triggers` wakes.
fn cached_changes<K>(
    events: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
    mut writer: Writer<K>,
    cache: &Cache<K>,
    mut triggers: ChildTriggers<K>,
) -> Changes<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
{
    let (unseen, verified) = (cache.unseen.clone(), cache.verified.clone());
    events
        .try_filter_map(move |event| {
            // Before the store takes the event, so that no remembered apply outlives the
            // version of the child it was decided on.
            let echo = unseen.saw(&event);
            verified.saw(&event);
            writer.apply_watcher_event(&event);
            std::future::ready(Ok(triggers.wakes(event, echo)))
        })
        .boxed()
}

/// How long a reconcile waits for a cache's first list; after that it fails and is retried.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The object `namespace/name` in `store`, once the store holds the cluster's state: a
/// reconcile before that would take every child for missing.
pub async fn cached<K>(
    store: &Store<K>,
    namespace: &str,
    name: &str,
) -> Result<Option<Arc<K>>, Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + 'static,
{
    match tokio::time::timeout(READY_TIMEOUT, store.wait_until_ready()).await {
        Ok(Ok(())) => Ok(store.get(&ObjectRef::new(name).within(namespace))),
        // The watch was dropped (the controller stops) or never listed.
        _ => Err(Error::CacheNotReady {
            kind: K::kind(&()).into_owned(),
            seconds: READY_TIMEOUT.as_secs(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::ResourceExt;

    use super::*;

    /// A cache of Deployments, with `unseen` as its record of the operator's applies, after
    /// `events` went through [`cached_changes`]; and the versions of the woken children.
    fn deployments_after(
        unseen: UnseenWrites<Deployment>,
        events: Vec<Deployment>,
    ) -> (Cache<Deployment>, Vec<Option<String>>) {
        let (store, writer) = reflector::store();
        let cache = Cache {
            store,
            unseen,
            verified: Verified::by_deployment_content(),
        };
        let events = futures::stream::iter(events.into_iter().map(|d| Ok(Event::Apply(d))));
        let triggers = ChildTriggers::new(crate::child_triggers::deployment);
        let woken: Vec<_> =
            futures::executor::block_on(cached_changes(events, writer, &cache, triggers).collect());
        let versions = woken
            .into_iter()
            .map(|child| child.unwrap().resource_version())
            .collect();
        (cache, versions)
    }

    fn cached_version(cache: &Cache<Deployment>, of: &Deployment) -> Option<String> {
        let cached = cache.store.get(&ObjectRef::from_obj(of));
        cached.and_then(|cached| cached.resource_version())
    }

    #[test]
    fn a_childs_every_event_is_cached_and_only_changes_a_reconcile_reads_wake_its_fleet() {
        let created = crate::child_triggers::tests::deployment(1, 1, 0);
        let mut counted = created.clone();
        counted.metadata.resource_version = Some("2".to_owned());
        counted.status.as_mut().unwrap().unavailable_replicas = Some(1);
        let (cache, woken) =
            deployments_after(UnseenWrites::default(), vec![created.clone(), counted]);
        assert_eq!(woken, [Some("1".to_owned())]);
        assert_eq!(cached_version(&cache, &created).as_deref(), Some("2"));
    }

    #[test]
    fn the_echo_of_the_operators_own_apply_is_cached_but_wakes_nothing() {
        let applied = crate::child_triggers::tests::deployment(1, 1, 0);
        let ready = crate::child_triggers::tests::deployment(2, 1, 1);
        let unseen = UnseenWrites::default();
        unseen
            .begin("team-a", "chat-gateway", None)
            .written(&Arc::new(applied.clone()));
        let (cache, woken) = deployments_after(unseen, vec![applied.clone(), ready]);
        assert_eq!(
            woken,
            [Some("2".to_owned())],
            "only the Deployment controller's write"
        );
        assert_eq!(cache.unseen.remembered(), 0);
        assert_eq!(cached_version(&cache, &applied).as_deref(), Some("2"));
    }
}
