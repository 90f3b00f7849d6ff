//! The apply step: server-side apply with the operator's field manager, skipped entirely when the
//! child already holds what would be sent, so a steady state writes nothing.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::Error;
use crate::lean::Lean;
use crate::names::FIELD_MANAGER;
use crate::stores::Cache;
use crate::verified::FleetVersion;

/// Annotation on each child holding a digest of the last content the operator applied; a new
/// digest reveals fields the operator stopped setting, which a content comparison cannot see.
pub const APPLIED_DIGEST: &str = "wsfleet.io/applied-digest";
/// Field manager that briefly co-owns `spec.replicas` when an HPA takes the count over.
const HANDOVER_MANAGER: &str = "wsfleet-operator-handover";

/// Applies `desired` unless `observed` already holds it; returns the child as it now stands, its
/// managed fields cut as the caches' are ([`Lean`]).
/// `cache` is the kind's, when it has one: its record of the operator's own applies keeps this
/// one until the child's watch delivers it, and its memory of children found up to date for
/// `fleet` (the version of the fleet that wants `desired`), the applied one included, spares
/// comparing them again.
pub async fn apply<K>(
    api: &Api<Lean<K>>,
    mut desired: K,
    observed: Option<Arc<K>>,
    cache: Option<&Cache<K>>,
    fleet: Option<&FleetVersion>,
) -> Result<Arc<K>, Error>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    let verified = cache.map(|cache| &cache.verified).zip(fleet);
    if let (Some((verified, fleet)), Some(observed)) = (verified, &observed)
        && verified.holds(fleet, observed.as_ref())
    {
        return Ok(observed.clone());
    }
    let digest = digest(
        &serde_json::to_vec(&desired).map_err(|source| Error::Serialize {
            kind: kind_of::<K>(),
            source,
        })?,
    );
    desired
        .annotations_mut()
        .insert(APPLIED_DIGEST.to_owned(), digest.clone());
    let observed = match observed {
        Some(observed) if up_to_date(&desired, &observed, &digest) => {
            if let Some((verified, fleet)) = verified {
                verified.record(fleet, observed.as_ref());
            }
            return Ok(observed);
        }
        observed => observed,
    };
    let name = desired.name_any();
    let namespace = desired.namespace().unwrap_or_default();
    let pending = cache.map(|cache| cache.unseen.begin(&namespace, &name, observed.as_deref()));
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
        .map(|Lean(applied)| Arc::new(applied))
        .map_err(Error::kube("apply", kind_of::<K>(), &namespace, &name))?;
    if let Some(pending) = pending {
        pending.written(&applied);
    }
    // The apiserver's answer to a forced apply holds every field sent, unless an admission
    // webhook changed one on the way in; applying again would be changed the same way. So the
    // answer is up to date until it changes, and the next reconcile need not compare it.
    if let Some((verified, fleet)) = verified {
        verified.record(fleet, applied.as_ref());
    }
    tracing::info!(kind = %kind_of::<K>(), %namespace, %name, "applied");
    Ok(applied)
}

/// Whether `observed` holds `desired`: the digest of the same content, and every field of it.
/// The digest is compared first, on the typed object: a child the operator has yet to bring up
/// to date differs there, and telling so needs no conversion to JSON.
fn up_to_date<K: Resource + Serialize>(desired: &K, observed: &K, digest: &str) -> bool {
    if observed
        .meta()
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(APPLIED_DIGEST))
        .map(String::as_str)
        != Some(digest)
    {
        return false;
    }
    let (Ok(desired), Ok(observed)) = (
        serde_json::to_value(desired),
        serde_json::to_value(observed),
    ) else {
        return false;
    };
    contains(&observed, &desired)
}

/// Whether every field of `wanted` is present in `have` with the same value; lists must match
/// element by element. Fields only `have` holds (server defaults, other managers) are ignored.
pub fn contains(have: &Value, wanted: &Value) -> bool {
    match (have, wanted) {
        (Value::Object(have), Value::Object(wanted)) => wanted
            .iter()
            .all(|(key, value)| have.get(key).is_some_and(|have| contains(have, value))),
        (Value::Array(have), Value::Array(wanted)) => {
            have.len() == wanted.len()
                && have
                    .iter()
                    .zip(wanted)
                    .all(|(have, wanted)| contains(have, wanted))
        }
        _ => have == wanted,
    }
}

fn digest(bytes: &[u8]) -> String {
    let sum = ring::digest::digest(&ring::digest::SHA256, bytes);
    sum.as_ref()[..12]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn kind_of<K: Resource<DynamicType = ()>>() -> String {
    K::kind(&()).into_owned()
}

/// Before the operator's patch stops naming `spec.replicas` (an HPA took over), another manager
/// co-owns the field, so that dropping it from the patch keeps the current count instead of
/// resetting it to the default of 1. This is the documented server-side apply ownership handover.
pub async fn hand_over_replicas(api: &Api<Deployment>, observed: &Deployment) -> Result<(), Error> {
    if !applies_replicas(observed) {
        return Ok(());
    }
    let name = observed.name_any();
    let replicas = observed
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1);
    let patch = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas},
    });
    api.patch(
        &name,
        &PatchParams::apply(HANDOVER_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube(
        "apply",
        "Deployment",
        &observed.namespace().unwrap_or_default(),
        &name,
    ))?;
    Ok(())
}

/// Whether the operator's own apply currently sets `spec.replicas` of `deployment`.
pub fn applies_replicas(deployment: &Deployment) -> bool {
    deployment.managed_fields().iter().any(|entry| {
        entry.manager.as_deref() == Some(FIELD_MANAGER)
            && entry.operation.as_deref() == Some("Apply")
            && entry.fields_v1.as_ref().is_some_and(names_replicas)
    })
}

/// Whether a managed-fields set names `spec.replicas`.
pub fn names_replicas(fields: &FieldsV1) -> bool {
    fields.0.pointer("/f:spec/f:replicas").is_some()
}

/// Deletes the child `name` if it exists and is controlled by the object with `owner_uid`.
pub async fn delete_owned<K>(
    api: &Api<K>,
    observed: Option<&K>,
    owner_uid: &str,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug,
{
    let Some(observed) = observed else {
        return Ok(());
    };
    let owned = observed
        .owner_references()
        .iter()
        .any(|owner| owner.uid == owner_uid && owner.controller == Some(true));
    if !owned {
        return Ok(());
    }
    let name = observed.name_any();
    match api.delete(&name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(err) => Err(Error::kube(
            "delete",
            kind_of::<K>(),
            &observed.namespace().unwrap_or_default(),
            &name,
        )(err)),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        FieldsV1, ManagedFieldsEntry, ObjectMeta,
    };

    use super::*;

    #[test]
    fn server_defaults_do_not_count_as_drift() {
        let wanted = json!({"spec": {"ports": [{"name": "ws", "port": 80}]}});
        let have = json!({"spec": {"ports": [{"name": "ws", "port": 80, "protocol": "TCP"}], "clusterIP": "10.0.0.1"}});
        assert!(contains(&have, &wanted));
    }

    #[test]
    fn changed_missing_or_extra_list_entries_are_drift() {
        let wanted = json!({"spec": {"ports": [{"name": "ws", "port": 80}]}});
        assert!(!contains(
            &json!({"spec": {"ports": [{"name": "ws", "port": 81}]}}),
            &wanted
        ));
        assert!(!contains(&json!({"spec": {}}), &wanted));
        let two =
            json!({"spec": {"ports": [{"name": "ws", "port": 80}, {"name": "x", "port": 1}]}});
        assert!(!contains(&two, &wanted));
    }

    #[test]
    fn digest_is_stable_and_content_sensitive() {
        assert_eq!(digest(b"abc"), digest(b"abc"));
        assert_ne!(digest(b"abc"), digest(b"abd"));
        assert_eq!(digest(b"abc").len(), 24);
    }

    #[test]
    fn applied_replicas_are_found_in_managed_fields() {
        let entry = |manager: &str, operation: &str, fields: Value| ManagedFieldsEntry {
            manager: Some(manager.to_owned()),
            operation: Some(operation.to_owned()),
            fields_v1: Some(FieldsV1(fields)),
            ..ManagedFieldsEntry::default()
        };
        let with = |entries: Vec<ManagedFieldsEntry>| Deployment {
            metadata: ObjectMeta {
                managed_fields: Some(entries),
                ..ObjectMeta::default()
            },
            ..Deployment::default()
        };
        let replicas = json!({"f:spec": {"f:replicas": {}, "f:template": {}}});
        assert!(applies_replicas(&with(vec![entry(
            FIELD_MANAGER,
            "Apply",
            replicas.clone()
        )])));
        assert!(!applies_replicas(&with(vec![entry(
            FIELD_MANAGER,
            "Apply",
            json!({"f:spec": {"f:template": {}}})
        )])));
        assert!(!applies_replicas(&with(vec![entry(
            "kube-controller-manager",
            "Update",
            replicas
        )])));
    }
}
