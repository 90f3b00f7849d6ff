//! The kube-runtime Controller: which watches trigger a reconcile of which WebSocketService.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, controller, watcher};
use kube::{Resource, ResourceExt};

use crate::crd::{TlsMode, WebSocketService};
use crate::names::FIELD_MANAGER;
use crate::reconcile::{Context, error_policy, reconcile};

type Guarded = DeserializeGuard<WebSocketService>;

/// Triggers for one object closer together than this are merged into one reconcile.
const DEBOUNCE: Duration = Duration::from_secs(1);

/// Runs the controller until `shutdown` resolves; watches one namespace or all.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let api = |client: kube::Client| -> Api<Guarded> {
        match namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    };
    macro_rules! scoped {
        ($kind:ty) => {
            match namespace {
                Some(ns) => Api::<$kind>::namespaced(client.clone(), ns),
                None => Api::<$kind>::all(client.clone()),
            }
        };
    }
    let children =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"));
    let controller = Controller::new(
        api(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    // A rollout sends a burst of Deployment status updates; one reconcile covers them.
    .with_config(controller::Config::default().debounce(DEBOUNCE));
    let store = controller.store();
    let secret_store = store.clone();
    controller
        .owns(scoped!(ConfigMap), children.clone())
        .owns(scoped!(Deployment), children.clone())
        .owns(scoped!(HorizontalPodAutoscaler), children.clone())
        .owns(scoped!(PodDisruptionBudget), children)
        // Secrets and Services are watched whole: the user's TLS and JWT Secrets and the upstream
        // Service are not the operator's, yet their appearance must end a Degraded state.
        .watches(
            scoped!(Secret),
            watcher::Config::default(),
            move |secret: Secret| referrers(&secret_store, &secret, secret_references),
        )
        .watches(
            scoped!(Service),
            watcher::Config::default(),
            move |service: Service| referrers(&store, &service, service_references),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(object = %object, "reconciled"),
                // Reconcile failures are logged by the error policy; the rest are watch problems.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(err) => tracing::warn!(error = %err, "controller"),
            }
        })
        .await;
}

/// The WebSocketServices that own `object` or whose spec names it.
fn referrers<K: Resource>(
    store: &Store<Guarded>,
    object: &K,
    references: fn(&WebSocketService, &str) -> bool,
) -> Vec<ObjectRef<Guarded>> {
    let namespace = object.meta().namespace.clone().unwrap_or_default();
    let name = object.meta().name.clone().unwrap_or_default();
    let mut found: Vec<ObjectRef<Guarded>> = object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .filter(|owner| {
            owner.kind == "WebSocketService" && owner.api_version == "wsfleet.io/v1alpha1"
        })
        .map(|owner| ObjectRef::new(&owner.name).within(&namespace))
        .collect();
    found.extend(
        store
            .state()
            .iter()
            .filter(|guard| guard.namespace().as_deref() == Some(namespace.as_str()))
            .filter(|guard| guard.0.as_ref().is_ok_and(|wss| references(wss, &name)))
            .map(|guard| ObjectRef::from_obj(guard.as_ref())),
    );
    found
}

/// Whether `wss` reads the Secret `name`: a user TLS Secret or the JWT key.
pub fn secret_references(wss: &WebSocketService, name: &str) -> bool {
    let tls =
        wss.spec.tls.as_ref().is_some_and(|tls| {
            tls.mode == TlsMode::Secret && tls.secret_name.as_deref() == Some(name)
        });
    let jwt = wss
        .spec
        .auth
        .as_ref()
        .and_then(|auth| auth.jwt.as_ref())
        .is_some_and(|jwt| jwt.key_secret_ref.name == name);
    tls || jwt
}

/// Whether `wss` forwards to the Service `name`.
pub fn service_references(wss: &WebSocketService, name: &str) -> bool {
    wss.spec.upstream.service.as_deref() == Some(name)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::runtime::reflector;

    use super::*;
    use crate::build::fixtures::{example, owner};

    fn store_of(objects: &[WebSocketService]) -> Store<Guarded> {
        let (store, mut writer) = reflector::store();
        for object in objects {
            writer
                .apply_watcher_event(&watcher::Event::Apply(DeserializeGuard(Ok(object.clone()))));
        }
        store
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
        let store = store_of(&[
            production.clone(),
            example("user-tls.yaml"),
            example("minimal.yaml"),
        ]);
        let secret = |name: &str, owners: Option<Vec<_>>| Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("team-a".to_owned()),
                owner_references: owners,
                ..ObjectMeta::default()
            },
            ..Secret::default()
        };
        let found = |s: &Secret| names(referrers(&store, s, secret_references));
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
        let store = store_of(&[
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
            names(referrers(&store, &backend, service_references)),
            ["team-a/chat", "team-a/chat-prod"]
        );
    }

    #[test]
    fn user_tls_and_jwt_secrets_are_references() {
        assert!(secret_references(
            &example("user-tls.yaml"),
            "chat-user-tls"
        ));
        assert!(!secret_references(&example("user-tls.yaml"), "other"));
        let production = example("production.yaml");
        assert!(secret_references(&production, "chat-jwt"));
        // An operator-issued Secret is found through its owner reference instead.
        assert!(!secret_references(&production, "chat-prod-tls"));
    }

    #[test]
    fn upstream_service_is_a_reference() {
        assert!(service_references(&example("minimal.yaml"), "chat-backend"));
        // The fleet's own Service is found through its owner reference instead.
        assert!(!service_references(&example("minimal.yaml"), "chat"));
        assert!(!service_references(
            &example("hpa-cpu.yaml"),
            "chat-backend"
        ));
    }
}
