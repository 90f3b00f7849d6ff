//! The version of what an object's writers change other than its status, for kinds whose
//! generation the apiserver raises on every spec change (custom resources with a status
//! subresource, Deployments): a status update moves the resourceVersion, not this.

use std::hash::{DefaultHasher, Hash, Hasher};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

/// A hash of the uid, the generation (the spec) and the metadata a user or another controller
/// may change; `None` for an object without a generation.
pub fn content_version(meta: &ObjectMeta) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    meta.generation?.hash(&mut hasher);
    hash_metadata(meta, &mut hasher);
    Some(hasher.finish())
}

/// [`content_version`] for a kind whose generation the apiserver does not keep (a
/// HorizontalPodAutoscaler): `spec` as serialized stands in for the generation.
pub fn spec_version(meta: &ObjectMeta, spec: &impl Serialize) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    serde_json::to_vec(spec).ok()?.hash(&mut hasher);
    hash_metadata(meta, &mut hasher);
    Some(hasher.finish())
}

fn hash_metadata(meta: &ObjectMeta, hasher: &mut DefaultHasher) {
    meta.uid.hash(hasher);
    meta.labels.hash(hasher);
    meta.annotations.hash(hasher);
    meta.finalizers.hash(hasher);
    meta.deletion_timestamp
        .as_ref()
        .map(|time| time.0)
        .hash(hasher);
    meta.deletion_grace_period_seconds.hash(hasher);
    for owner in meta.owner_references.iter().flatten() {
        (
            &owner.api_version,
            &owner.kind,
            &owner.name,
            &owner.uid,
            owner.controller,
            owner.block_owner_deletion,
        )
            .hash(hasher);
    }
}
