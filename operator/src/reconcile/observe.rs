//! The observe step: everything a reconcile reads, up front. Children come from the
//! controller's caches; the Secrets the spec names are read from the apiserver (the operator
//! keeps no Secret data in memory), concurrently, and so are an add-on's children when its
//! kind is not cached.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use kube::api::Api;
use serde::de::DeserializeOwned;

use crate::build::cert_manager::Certificate as CertManagerCertificate;
use crate::build::scaled_object::ScaledObject;
use crate::context::Context;
use crate::crd::TlsMode;
use crate::crd::WebSocketService;
use crate::error::Error;
use crate::plan::Plan;
use crate::stores::{AddOnChildren, cached};

/// What exists now of a fleet's children and of the objects its spec names. The children are
/// shared with the caches: a reconcile only reads them.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    pub config_map: Option<Arc<ConfigMap>>,
    pub deployment: Option<Arc<Deployment>>,
    pub service: Option<Arc<Service>>,
    pub autoscaler: Option<Arc<HorizontalPodAutoscaler>>,
    pub scaled_object: Option<Arc<ScaledObject>>,
    pub budget: Option<Arc<PodDisruptionBudget>>,
    pub cert_manager_certificate: Option<Arc<CertManagerCertificate>>,
    /// The TLS Secret, when the spec asks for TLS.
    pub tls_secret: Option<Secret>,
    pub jwt_secret: Option<Secret>,
    pub jwks_ca_secret: Option<Secret>,
    /// Whether the upstream Service exists, when the spec names one.
    pub upstream_service: Option<bool>,
}

/// Reads what `wss`, planned as `plan`, is reconciled against.
pub async fn observe(
    ctx: &Context,
    wss: &WebSocketService,
    plan: &Plan,
) -> Result<Observed, Error> {
    let stores = &ctx.stores;
    let namespace = plan.names.namespace.as_str();
    let gateway = plan.names.gateway();
    let secret = |name: Option<&String>| {
        let name = name.cloned();
        async move {
            match name {
                Some(name) => get::<Secret>(ctx, namespace, &name).await,
                None => Ok(None),
            }
        }
    };
    let (tls_secret, jwt_secret, jwks_ca_secret) = futures::try_join!(
        secret(plan.tls.as_ref().map(|tls| &tls.secret_name)),
        secret(plan.jwt_key.as_ref().map(|key| &key.name)),
        secret(plan.jwks_ca.as_ref().map(|key| &key.name)),
    )?;
    let upstream_service = match &plan.upstream_service {
        Some(name) => Some(
            cached(&stores.service_names, namespace, name)
                .await?
                .is_some(),
        ),
        None => None,
    };
    let keda = wss
        .spec
        .autoscaling
        .as_ref()
        .is_some_and(|autoscaling| autoscaling.keda.is_some());
    let cert_manager = plan
        .tls
        .as_ref()
        .is_some_and(|tls| tls.mode == TlsMode::CertManager);
    Ok(Observed {
        config_map: stores.config_maps.get(namespace, &gateway).await?,
        deployment: stores.deployments.get(namespace, &gateway).await?,
        service: stores
            .services
            .get(namespace, &plan.names.service())
            .await?,
        autoscaler: stores.autoscalers.get(namespace, &gateway).await?,
        scaled_object: read(ctx, &stores.scaled_objects, keda, namespace, &gateway).await?,
        budget: stores.budgets.get(namespace, &gateway).await?,
        cert_manager_certificate: read(
            ctx,
            &stores.certificates,
            cert_manager,
            namespace,
            &gateway,
        )
        .await?,
        tls_secret,
        jwt_secret,
        jwks_ca_secret,
        upstream_service,
    })
}

/// An add-on's child from its cache; from the apiserver when its kind has none and the fleet
/// asks for the add-on (installed after the term began, it may be served by now) or this term
/// wrote one of its kind (the fleet may have had one and no longer asks for it).
async fn read<K>(
    ctx: &Context,
    children: &AddOnChildren<K>,
    wanted: bool,
    namespace: &str,
    name: &str,
) -> Result<Option<Arc<K>>, Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + 'static,
{
    match children {
        AddOnChildren::Cached(cache) => cache.get(namespace, name).await,
        AddOnChildren::Unwatched(unwatched) if wanted || unwatched.may_exist() => {
            Ok(get(ctx, namespace, name).await?.map(Arc::new))
        }
        AddOnChildren::Unwatched(_) => Ok(None),
    }
}

/// The object `namespace/name` from the apiserver, `None` when absent or its type is not
/// served (KEDA's ScaledObject without KEDA).
pub(crate) async fn get<K>(ctx: &Context, namespace: &str, name: &str) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = ctx.api(namespace);
    match api.get(name).await {
        Ok(object) => Ok(Some(object)),
        Err(err) if crate::error::is_not_found(&err) => Ok(None),
        Err(err) => Err(Error::kube("get", K::kind(&()), namespace, name)(err)),
    }
}
