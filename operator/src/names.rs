//! Names, labels and addresses of a WebSocketService's children: the contract with the gateway pods,
//! the chart and the end-to-end tests.

use std::collections::BTreeMap;

use crate::crd::WebSocketService;

/// Field manager of every server-side apply the operator sends.
pub const FIELD_MANAGER: &str = "wsfleet-operator";
/// Where the rendered gateway config is mounted in a gateway pod.
pub const CONFIG_DIR: &str = "/etc/wsfleet/config";
/// Key of the gateway config in the ConfigMap, and its file name under [`CONFIG_DIR`].
pub const CONFIG_KEY: &str = "gateway.yaml";
/// Where the serving certificate (`tls.crt`, `tls.key`) is mounted.
pub const TLS_DIR: &str = "/etc/wsfleet/tls";
/// Where the JWT verification key is mounted.
pub const JWT_DIR: &str = "/etc/wsfleet/jwt";
/// Where the CA bundle for an identity provider's certificate is mounted.
pub const JWKS_CA_DIR: &str = "/etc/wsfleet/jwks-ca";
/// Container and Service port of the gateway's metrics and health endpoints.
pub const METRICS_PORT: i32 = 9090;

const NAME_LABEL: &str = "app.kubernetes.io/name";
const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// The names of one WebSocketService's children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildNames {
    pub namespace: String,
    /// The WebSocketService's name, also the Service's.
    pub instance: String,
}

impl ChildNames {
    pub fn of(wss: &WebSocketService) -> Self {
        Self {
            namespace: wss.metadata.namespace.clone().unwrap_or_default(),
            instance: wss.metadata.name.clone().unwrap_or_default(),
        }
    }

    /// ConfigMap, Deployment, HorizontalPodAutoscaler and PodDisruptionBudget share this name.
    pub fn gateway(&self) -> String {
        format!("{}-gateway", self.instance)
    }

    pub fn service(&self) -> String {
        self.instance.clone()
    }

    /// The TLS Secret when `spec.tls.secretName` is unset.
    pub fn default_tls_secret(&self) -> String {
        format!("{}-tls", self.instance)
    }

    /// Labels on every child.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels();
        labels.insert(
            "app.kubernetes.io/component".to_owned(),
            "gateway".to_owned(),
        );
        labels.insert(
            "app.kubernetes.io/managed-by".to_owned(),
            FIELD_MANAGER.to_owned(),
        );
        labels
    }

    /// Labels that select the gateway pods.
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (NAME_LABEL.to_owned(), "wsfleet-gateway".to_owned()),
            (INSTANCE_LABEL.to_owned(), self.instance.clone()),
        ])
    }

    /// [`Self::selector_labels`] as a label-selector string, for the scale subresource.
    pub fn selector_string(&self) -> String {
        self.selector_labels()
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The DNS names of the Service, shortest first.
    pub fn service_dns_names(&self) -> Vec<String> {
        let service = self.service();
        let ns = &self.namespace;
        vec![
            service.clone(),
            format!("{service}.{ns}"),
            format!("{service}.{ns}.svc"),
            format!("{service}.{ns}.svc.cluster.local"),
        ]
    }

    /// `ws://<name>.<ns>.svc<path>` or `wss://...`: where clients inside the cluster connect.
    pub fn endpoint(&self, tls: bool, path: &str) -> String {
        let scheme = if tls { "wss" } else { "ws" };
        format!("{scheme}://{}.{}.svc{path}", self.service(), self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> ChildNames {
        ChildNames {
            namespace: "team-a".to_owned(),
            instance: "chat".to_owned(),
        }
    }

    #[test]
    fn children_are_named_after_the_instance() {
        let names = names();
        assert_eq!(names.gateway(), "chat-gateway");
        assert_eq!(names.service(), "chat");
        assert_eq!(names.default_tls_secret(), "chat-tls");
        assert_eq!(
            names.service_dns_names(),
            [
                "chat",
                "chat.team-a",
                "chat.team-a.svc",
                "chat.team-a.svc.cluster.local"
            ]
        );
    }

    #[test]
    fn labels_and_selector() {
        let names = names();
        let labels = names.labels();
        assert_eq!(labels["app.kubernetes.io/name"], "wsfleet-gateway");
        assert_eq!(labels["app.kubernetes.io/instance"], "chat");
        assert_eq!(labels["app.kubernetes.io/component"], "gateway");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "wsfleet-operator");
        assert_eq!(names.selector_labels().len(), 2);
        assert_eq!(
            names.selector_string(),
            "app.kubernetes.io/instance=chat,app.kubernetes.io/name=wsfleet-gateway"
        );
    }

    #[test]
    fn endpoint_scheme_follows_tls() {
        assert_eq!(names().endpoint(false, "/ws"), "ws://chat.team-a.svc/ws");
        assert_eq!(names().endpoint(true, "/"), "wss://chat.team-a.svc/");
    }
}
