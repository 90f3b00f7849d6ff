//! The apply step: makes the cluster hold the desired set. Children that are no longer desired
//! are deleted first, when this fleet controls them, so that two autoscalers never scale the
//! Deployment at once; then each desired child is applied, and only when it differs from what
//! was observed.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, PostParams};

use super::desired::{Child, ChildKind};
use super::observe::{Observed, get};
use super::serving_certificate::ensure_ours;
use crate::apply::{apply, delete_owned, hand_over_replicas};
use crate::context::Context;
use crate::error::Error;
use crate::names::FIELD_MANAGER;
use crate::status::Problem;
use crate::stores::{AddOnChildren, Cache};
use crate::verified::FleetVersion;

/// What the apply step leaves behind.
#[derive(Debug)]
pub struct Applied {
    /// The gateway Deployment as it now stands.
    pub deployment: Arc<Deployment>,
    /// Children the cluster would not take, with the reason: an add-on's type is not served,
    /// or another fleet holds the certificate Secret's name.
    pub refused: Vec<(ChildKind, Problem)>,
}

/// Applies `children` (the desired set, in order, of the fleet `owner` in version `fleet`) over
/// `observed`.
pub async fn apply_desired(
    ctx: &Context,
    namespace: &str,
    owner: &OwnerReference,
    fleet: Option<&FleetVersion>,
    children: Vec<Child>,
    mut observed: Observed,
) -> Result<Applied, Error> {
    delete_undesired(ctx, namespace, &owner.uid, &children, &observed).await?;
    let mut deployment = None;
    let mut refused = Vec::new();
    for child in children {
        let kind = child.kind();
        let not_served = child.not_served();
        let result = match child {
            Child::IssuedSecret { secret, create } => {
                match store_secret(
                    ctx,
                    namespace,
                    secret,
                    create,
                    observed.tls_secret.take(),
                    owner,
                )
                .await?
                {
                    Ok(()) => Ok(()),
                    Err(problem) => {
                        refused.push((kind, problem));
                        continue;
                    }
                }
            }
            Child::CertManagerCertificate(certificate) => {
                let children = &ctx.stores.certificates;
                let observed = observed.cert_manager_certificate.take();
                put_add_on(ctx, namespace, certificate, observed, children, fleet).await
            }
            Child::ConfigMap(config_map) => {
                let cache = &ctx.stores.config_maps;
                let observed = observed.config_map.take();
                put(ctx, namespace, config_map, observed, cache, fleet).await
            }
            Child::Deployment {
                deployment: desired,
                hand_over_replicas: hand_over,
            } => {
                if let (true, Some(observed)) = (hand_over, observed.deployment.as_deref()) {
                    let api: Api<Deployment> = ctx.api(namespace);
                    hand_over_replicas(&api, observed).await?;
                }
                deployment = Some(
                    apply(
                        &ctx.api(namespace),
                        *desired,
                        observed.deployment.take(),
                        Some(&ctx.stores.deployments),
                        fleet,
                    )
                    .await?,
                );
                Ok(())
            }
            Child::Service(service) => {
                let cache = &ctx.stores.services;
                let observed = observed.service.take();
                put(ctx, namespace, service, observed, cache, fleet).await
            }
            Child::Autoscaler(autoscaler) => {
                let cache = &ctx.stores.autoscalers;
                let observed = observed.autoscaler.take();
                put(ctx, namespace, autoscaler, observed, cache, fleet).await
            }
            Child::ScaledObject(scaled_object) => {
                let children = &ctx.stores.scaled_objects;
                let observed = observed.scaled_object.take();
                put_add_on(ctx, namespace, scaled_object, observed, children, fleet).await
            }
            Child::Budget(budget) => {
                let cache = &ctx.stores.budgets;
                let observed = observed.budget.take();
                put(ctx, namespace, budget, observed, cache, fleet).await
            }
        };
        match (result, not_served) {
            (Ok(()), _) => {}
            (Err(err), Some(problem)) if err.is_not_found() => refused.push((kind, problem)),
            (Err(err), _) => return Err(err),
        }
    }
    let deployment = deployment.expect("the desired set always holds the Deployment");
    Ok(Applied {
        deployment,
        refused,
    })
}

/// A child kind the applier writes.
trait ChildType:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + serde::Serialize
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> ChildType for K where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug
{
}

/// Applies `desired` unless `observed` already holds it; `cache` is the kind's.
async fn put<K: ChildType>(
    ctx: &Context,
    namespace: &str,
    desired: K,
    observed: Option<Arc<K>>,
    cache: &Cache<K>,
    fleet: Option<&FleetVersion>,
) -> Result<(), Error> {
    apply(&ctx.api(namespace), desired, observed, Some(cache), fleet)
        .await
        .map(drop)
}

/// [`put`] for an add-on's child; an unwatched kind notes the write, so that its children are
/// looked for from now on.
async fn put_add_on<K: ChildType>(
    ctx: &Context,
    namespace: &str,
    desired: K,
    observed: Option<Arc<K>>,
    children: &AddOnChildren<K>,
    fleet: Option<&FleetVersion>,
) -> Result<(), Error> {
    match children {
        AddOnChildren::Cached(cache) => put(ctx, namespace, desired, observed, cache, fleet).await,
        AddOnChildren::Unwatched(unwatched) => {
            apply(&ctx.api(namespace), desired, observed, None, fleet).await?;
            unwatched.wrote();
            Ok(())
        }
    }
}

/// Deletes each observed child whose kind the desired set no longer holds, when this fleet
/// controls it. The ConfigMap, Deployment, Service and PodDisruptionBudget are always desired;
/// an issued Secret stays until its fleet is deleted, since another mode may come back to it.
async fn delete_undesired(
    ctx: &Context,
    namespace: &str,
    owner_uid: &str,
    children: &[Child],
    observed: &Observed,
) -> Result<(), Error> {
    let wanted = |kind| children.iter().any(|child| child.kind() == kind);
    if !wanted(ChildKind::Autoscaler) {
        let observed = observed.autoscaler.as_deref();
        delete_owned(&ctx.api(namespace), observed, owner_uid).await?;
    }
    if !wanted(ChildKind::ScaledObject) {
        let observed = observed.scaled_object.as_deref();
        delete_owned(&ctx.api(namespace), observed, owner_uid).await?;
    }
    if !wanted(ChildKind::CertManagerCertificate) {
        // cert-manager would otherwise go on writing the Secret.
        let observed = observed.cert_manager_certificate.as_deref();
        delete_owned(&ctx.api(namespace), observed, owner_uid).await?;
    }
    Ok(())
}

/// Stores an issued certificate's Secret. A create fails when the Secret exists, unlike an
/// apply, which every fleet sends with the same field manager and so would silently overwrite
/// another's; losing that race is the problem naming the winner.
async fn store_secret(
    ctx: &Context,
    namespace: &str,
    secret: Secret,
    create: bool,
    observed: Option<Secret>,
    owner: &OwnerReference,
) -> Result<Result<(), Problem>, Error> {
    if !create {
        apply(
            &ctx.api(namespace),
            secret,
            observed.map(Arc::new),
            None,
            None,
        )
        .await?;
        return Ok(Ok(()));
    }
    let secrets: Api<Secret> = ctx.api(namespace);
    let name = secret.name_any();
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    match secrets.create(&params, &secret).await {
        Ok(_) => Ok(Ok(())),
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            match get::<Secret>(ctx, namespace, &name).await? {
                Some(winner) => Ok(ensure_ours(&winner, owner)),
                // Gone again already: a failure, so that the retry creates it.
                None => Err(Error::kube("create", "Secret", namespace, &name)(
                    kube::Error::Api(status),
                )),
            }
        }
        Err(err) => Err(Error::kube("create", "Secret", namespace, &name)(err)),
    }
}
