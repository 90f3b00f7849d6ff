//! The build step: pure functions from a [`Plan`](crate::plan::Plan) to the children's desired
//! state. No client, no clock; every field is covered by the unit tests beside each builder.

pub mod autoscaler;
pub mod cert_manager;
pub mod config_map;
pub mod deployment;
pub mod disruption_budget;
pub mod scaled_object;
pub mod service;
pub mod tls_secret;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Resource;

use crate::crd::WebSocketService;
use crate::names::ChildNames;

/// The controller reference every child carries. `blockOwnerDeletion` makes a foreground
/// deletion of `wss` wait until the garbage collector has removed the child.
pub fn owner_reference(wss: &WebSocketService) -> OwnerReference {
    OwnerReference {
        block_owner_deletion: Some(true),
        ..wss
            .controller_owner_ref(&())
            .expect("a stored object has a name and uid")
    }
}

/// Metadata of a child: its name, the operator's labels and the controller reference to `owner`.
pub fn child_metadata(names: &ChildNames, name: String, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        labels: Some(names.labels()),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The selector of the gateway pods.
pub fn pod_selector(names: &ChildNames) -> LabelSelector {
    LabelSelector {
        match_labels: Some(names.selector_labels()),
        ..LabelSelector::default()
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! A WebSocketService as the apiserver stores it (schema defaults applied), for builder tests.

    pub use super::owner_reference as owner;
    use crate::crd::WebSocketService;
    use crate::plan::{Plan, plan};

    /// Parses a manifest such as those in examples/, as stored in namespace `team-a`.
    pub fn wss(manifest: &str) -> WebSocketService {
        let mut wss: WebSocketService = serde_yaml::from_str(manifest).expect("manifest parses");
        wss.metadata.namespace = Some("team-a".to_owned());
        wss.metadata.uid = Some("uid-1".to_owned());
        wss.metadata.generation = Some(3);
        wss
    }

    pub fn example(file: &str) -> WebSocketService {
        let path = format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR"));
        wss(&std::fs::read_to_string(&path).expect("example exists"))
    }

    pub fn plan_of(wss: &WebSocketService) -> Plan {
        plan(wss).expect("valid spec")
    }

    /// A fleet whose certificate cert-manager issues, from a ClusterIssuer.
    pub fn cert_manager_fleet() -> WebSocketService {
        wss(r#"
apiVersion: wsfleet.io/v1alpha1
kind: WebSocketService
metadata: {name: chat}
spec:
  upstream: {service: chat-backend, port: 8080}
  tls:
    mode: CertManager
    issuerRef: {name: letsencrypt, kind: ClusterIssuer}
"#)
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{example, owner, plan_of};
    use super::*;

    #[test]
    fn children_are_controlled_by_their_websocketservice_and_block_its_deletion() {
        let wss = example("minimal.yaml");
        let names = plan_of(&wss).names;
        let meta = child_metadata(&names, names.gateway(), &owner(&wss));
        assert_eq!(
            meta.owner_references,
            Some(vec![OwnerReference {
                api_version: "wsfleet.io/v1alpha1".to_owned(),
                kind: "WebSocketService".to_owned(),
                name: "chat".to_owned(),
                uid: "uid-1".to_owned(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }])
        );
    }
}
