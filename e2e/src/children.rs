//! What the operator must create for a WebSocketService, and the metadata every child carries.

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::kubectl::Kubectl;

/// The operator's server-side-apply field manager.
pub const FIELD_MANAGER: &str = "wsfleet-operator";

/// One child object, by kubectl kind and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub kind: &'static str,
    pub name: String,
}

/// The children of WebSocketService `name`: `tls_secret` is the Secret the operator issues
/// (None for plain ws or a user-managed Secret), `autoscaling` adds the HPA.
pub fn expected_children(name: &str, tls_secret: Option<&str>, autoscaling: bool) -> Vec<Child> {
    let gateway = format!("{name}-gateway");
    let mut children = vec![
        Child {
            kind: "configmap",
            name: gateway.clone(),
        },
        Child {
            kind: "deployment",
            name: gateway.clone(),
        },
        Child {
            kind: "service",
            name: name.to_owned(),
        },
        Child {
            kind: "poddisruptionbudget",
            name: gateway.clone(),
        },
    ];
    if autoscaling {
        children.push(Child {
            kind: "horizontalpodautoscaler",
            name: gateway,
        });
    }
    if let Some(secret) = tls_secret {
        children.push(Child {
            kind: "secret",
            name: secret.to_owned(),
        });
    }
    children
}

/// Checks the recommended labels and the controller owner reference pointing at `owner`.
pub fn check_child_metadata(child: &Value, owner: &Value) -> Result<()> {
    let what = format!(
        "{}/{}",
        child["kind"].as_str().unwrap_or("?"),
        child["metadata"]["name"].as_str().unwrap_or("?")
    );
    let instance = owner["metadata"]["name"]
        .as_str()
        .context("owner has no name")?;
    let labels = &child["metadata"]["labels"];
    for (key, value) in [
        ("app.kubernetes.io/name", "wsfleet-gateway"),
        ("app.kubernetes.io/instance", instance),
        ("app.kubernetes.io/component", "gateway"),
        ("app.kubernetes.io/managed-by", "wsfleet-operator"),
    ] {
        ensure!(
            labels[key] == value,
            "{what}: label {key} is {}",
            labels[key]
        );
    }
    let references = child["metadata"]["ownerReferences"]
        .as_array()
        .with_context(|| format!("{what} has no ownerReferences"))?;
    let controller = references
        .iter()
        .find(|reference| reference["controller"] == true)
        .with_context(|| format!("{what} has no controller reference: {references:?}"))?;
    ensure!(
        controller["kind"] == "WebSocketService"
            && controller["apiVersion"] == "wsfleet.io/v1alpha1"
            && controller["name"] == instance
            && controller["uid"] == owner["metadata"]["uid"],
        "{what}: controller reference {controller} does not point at {instance}"
    );
    Ok(())
}

/// Fetches every child, checks its metadata, and returns them in order.
pub fn fetch_children(kubectl: &Kubectl, owner: &Value, children: &[Child]) -> Result<Vec<Value>> {
    children
        .iter()
        .map(|child| {
            let object = kubectl.get(child.kind, &child.name)?;
            check_child_metadata(&object, owner)?;
            Ok(object)
        })
        .collect()
}

/// The field paths (`f:spec` style keys) that `manager` owns in `object`.
pub fn fields_owned_by<'a>(object: &'a Value, manager: &str) -> Vec<&'a Value> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["manager"] == manager)
        .map(|entry| &entry["fieldsV1"])
        .collect()
}
