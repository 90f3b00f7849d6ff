//! What the apiserver would say about a manifest, judged by the CRD's CEL rules as kube's
//! CEL evaluator runs them. OpenAPI bounds (`minimum`, `maxLength`, ...) are not checked.

use kube::CustomResourceExt;
use kube::core::cel::{CompiledSchema, Validator, apply_defaults, compile_schema};
use serde_json::{Value, json};

use super::WebSocketService;

/// The CRD's `openAPIV3Schema`.
pub fn schema() -> Value {
    let crd = serde_json::to_value(WebSocketService::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// The CRD's schema with its CEL rules compiled once, for judging many manifests.
pub struct Admission {
    schema: Value,
    compiled: CompiledSchema,
    validator: Validator,
}

impl Admission {
    pub fn new() -> Self {
        let schema = schema();
        Self {
            compiled: compile_schema(&schema),
            schema,
            validator: Validator::new(),
        }
    }

    /// The CEL messages the apiserver would answer `manifest` with, after applying
    /// schema defaults.
    pub fn cel_errors(&self, manifest: &Value) -> Vec<String> {
        match self
            .validator
            .validate_compiled(&self.compiled, manifest, None)
        {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(|err| err.message.clone()).collect(),
        }
    }

    /// The CEL messages the apiserver would answer an update from `old` to `new` with,
    /// transition rules (`oldSelf`) included.
    pub fn update_errors(&self, old: &Value, new: &Value) -> Vec<String> {
        let old = self.stored(old);
        match self
            .validator
            .validate_compiled(&self.compiled, new, Some(&old))
        {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(|err| err.message.clone()).collect(),
        }
    }

    /// `manifest` as the apiserver stores it: schema defaults applied.
    pub fn stored(&self, manifest: &Value) -> Value {
        apply_defaults(&self.schema, manifest)
    }
}

/// The CEL messages the apiserver would answer `manifest` with.
pub fn cel_errors(manifest: &Value) -> Vec<String> {
    Admission::new().cel_errors(manifest)
}

/// A manifest of WebSocketService `team-a/chat` with `spec`.
pub fn with_spec(spec: Value) -> Value {
    json!({"apiVersion": "wsfleet.io/v1alpha1", "kind": "WebSocketService",
           "metadata": {"name": "chat", "namespace": "team-a"}, "spec": spec})
}
