//! The version of what an object's writers change other than its status, for kinds whose
//! generation the apiserver raises on every spec change (custom resources with a status
//! subresource, Deployments): a status update moves the resourceVersion, not this.

use std::hash::{DefaultHasher, Hash, Hasher};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

/// The annotation the Deployment controller sets, through a status update, on each rollout.
pub(crate) const DEPLOYMENT_REVISION: &str = "deployment.kubernetes.io/revision";

/// A hash of the uid, the generation (the spec) and the metadata a user or another controller
/// may change; `None` for an object without a generation.
pub fn content_version(meta: &ObjectMeta) -> Option<u64> {
    content_version_less(meta, &[])
}

/// [`content_version`] of a Deployment less its revision annotation. No reconcile reads it,
/// and the Deployment controller writes it before it has observed the Deployment's new
/// generation: counted, it woke each new fleet for a reconcile that could only wait for the
/// status update after it.
pub fn deployment_content_version(meta: &ObjectMeta) -> Option<u64> {
    content_version_less(meta, &[DEPLOYMENT_REVISION])
}

/// [`content_version`] without the annotations named in `ignored`.
fn content_version_less(meta: &ObjectMeta, ignored: &[&str]) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    meta.generation?.hash(&mut hasher);
    hash_metadata(meta, ignored, &mut hasher);
    Some(hasher.finish())
}

/// [`content_version`] for a kind whose generation the apiserver does not keep (a
/// HorizontalPodAutoscaler): `spec` as serialized stands in for the generation.
pub fn spec_version(meta: &ObjectMeta, spec: &impl Serialize) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    serde_json::to_vec(spec).ok()?.hash(&mut hasher);
    hash_metadata(meta, &[], &mut hasher);
    Some(hasher.finish())
}

fn hash_metadata(meta: &ObjectMeta, ignored: &[&str], hasher: &mut DefaultHasher) {
    meta.uid.hash(hasher);
    meta.labels.hash(hasher);
    let annotations = meta.annotations.iter().flatten();
    let kept = annotations.filter(|(name, _)| !ignored.contains(&name.as_str()));
    // Counted, as a map's hash is, so that no annotation can pass for the fields after it.
    let mut count = 0_usize;
    for annotation in kept {
        annotation.hash(hasher);
        count += 1;
    }
    count.hash(hasher);
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
