//! What every reconcile shares: the client, the caches, the Event recorders, the metrics, and the
//! count of each object's consecutive failures.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::events::{Event, EventType};
use kube::{Client, Resource};

use crate::event_recorders::EventRecorders;
use crate::metrics::Metrics;
use crate::stores::Stores;
use crate::x509::KeySource;

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub recorders: EventRecorders,
    pub metrics: Arc<Metrics>,
    /// Gateway image for specs that name none.
    pub default_image: String,
    /// Where the keys of issued certificates come from.
    pub keys: KeySource,
    /// Consecutive failures per object (`namespace/name`), for exponential retry delays; an
    /// entry goes when the object is reconciled successfully or found deleted.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        stores: Stores,
        recorders: EventRecorders,
        metrics: Arc<Metrics>,
        default_image: String,
    ) -> Self {
        Self {
            client,
            stores,
            recorders,
            metrics,
            default_image,
            keys: crate::x509::generate_key,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one more consecutive failure of the object `key`; returns the count.
    pub(crate) fn record_failure(&self, key: &str) -> u32 {
        let mut failures = self.failures.lock().expect("failure map lock");
        let attempts = failures.entry(key.to_owned()).or_insert(0);
        *attempts = attempts.saturating_add(1);
        *attempts
    }

    /// Forgets the consecutive failures of the object `key` (`namespace/name`): it was
    /// reconciled, or it no longer exists.
    pub(crate) fn forget_failures(&self, key: &str) {
        self.failures.lock().expect("failure map lock").remove(key);
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
        let regarding = object.object_ref(&());
        let recorder = self.recorders.of(&regarding);
        if let Err(err) = recorder.publish(&event, &regarding).await {
            tracing::warn!(error = %err, reason, "publishing an event");
        }
    }
}

/// An object's `namespace/name` key: its failure count, and the caches' records of its own
/// applies and of children found up to date.
pub(crate) fn object_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// [`object_key`] of the object `meta` describes.
pub(crate) fn key_of(meta: &ObjectMeta) -> String {
    object_key(
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}
