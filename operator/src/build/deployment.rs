//! Deployment `<name>-gateway`: the gateway pods, locked down, spread over nodes, and rolled only
//! when a change needs new pods (config and certificates are reloaded from mounted files).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction, KeyToPath,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{child_metadata, pod_selector};
use crate::crd::WebSocketServiceSpec;
use crate::names::{CONFIG_DIR, CONFIG_KEY, JWKS_CA_DIR, JWT_DIR, METRICS_PORT, TLS_DIR};
use crate::plan::{Plan, drain_seconds};

/// The user (and group) the gateway image runs as.
pub const GATEWAY_UID: i64 = 65532;
/// Time a pod gets beyond the drain period to finish closing before it is killed.
const TERMINATION_MARGIN_SECONDS: i64 = 15;
/// Secret and ConfigMap files readable by the gateway's group only.
const VOLUME_MODE: i32 = 0o440;

/// Name of the listen port: `wss` with TLS, `ws` without.
pub fn listen_port_name(plan: &Plan) -> &'static str {
    if plan.tls.is_some() { "wss" } else { "ws" }
}

pub fn deployment(
    plan: &Plan,
    spec: &WebSocketServiceSpec,
    owner: &OwnerReference,
    default_image: &str,
) -> Deployment {
    let names = &plan.names;
    Deployment {
        metadata: child_metadata(names, names.gateway(), owner),
        spec: Some(DeploymentSpec {
            // Under an autoscaler the HPA owns the count; leaving it out of the patch keeps it so.
            replicas: spec.autoscaling.is_none().then_some(spec.replicas),
            selector: pod_selector(names),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                // Keep full capacity during a rollout: a new pod is ready before an old one drains.
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: pod_template(plan, spec, default_image),
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn pod_template(plan: &Plan, spec: &WebSocketServiceSpec, default_image: &str) -> PodTemplateSpec {
    let names = &plan.names;
    let (volumes, mounts) = volumes(plan);
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(names.labels()),
            annotations: spec.pod_annotations.clone().filter(|map| !map.is_empty()),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![gateway_container(plan, spec, default_image, mounts)],
            volumes: Some(volumes),
            // The gateway never talks to the Kubernetes API.
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(GATEWAY_UID),
                run_as_group: Some(GATEWAY_UID),
                fs_group: Some(GATEWAY_UID),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            termination_grace_period_seconds: Some(
                drain_seconds(spec) as i64 + TERMINATION_MARGIN_SECONDS,
            ),
            topology_spread_constraints: Some(vec![TopologySpreadConstraint {
                max_skew: 1,
                topology_key: "kubernetes.io/hostname".to_owned(),
                when_unsatisfiable: "ScheduleAnyway".to_owned(),
                label_selector: Some(pod_selector(names)),
                // Spread each ReplicaSet on its own so a rollout does not skew the new pods.
                match_label_keys: Some(vec!["pod-template-hash".to_owned()]),
                ..TopologySpreadConstraint::default()
            }]),
            node_selector: spec.node_selector.clone().filter(|map| !map.is_empty()),
            tolerations: spec.tolerations.clone().filter(|list| !list.is_empty()),
            ..PodSpec::default()
        }),
    }
}

fn gateway_container(
    plan: &Plan,
    spec: &WebSocketServiceSpec,
    default_image: &str,
    volume_mounts: Vec<VolumeMount>,
) -> Container {
    let probe = |path: &str, failure_threshold: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("metrics".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(5),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    };
    Container {
        name: "gateway".to_owned(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| default_image.to_owned()),
        ),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: Some(
            [
                "--config",
                &format!("{CONFIG_DIR}/{CONFIG_KEY}"),
                "--log-format",
                "json",
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        ports: Some(vec![
            ContainerPort {
                name: Some(listen_port_name(plan).to_owned()),
                container_port: spec.listen.port,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("metrics".to_owned()),
                container_port: METRICS_PORT,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(probe("/readyz", 1)),
        liveness_probe: Some(probe("/healthz", 3)),
        resources: Some(plan.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts),
        ..Container::default()
    }
}

/// Requests when the spec names none: CPU autoscaling needs a CPU request to measure against.
fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("100m".to_owned())),
            ("memory".to_owned(), Quantity("64Mi".to_owned())),
        ])),
        ..ResourceRequirements::default()
    }
}

/// Whole-directory mounts (never `subPath`), so the kubelet's atomic updates reach the gateway.
fn volumes(plan: &Plan) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    let secret_volume = |name: &str, secret: &str, keys: &[&str]| Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            default_mode: Some(VOLUME_MODE),
            // Only the named keys: a SelfSigned Secret also holds the CA key, which pods never need.
            items: Some(
                keys.iter()
                    .map(|key| KeyToPath {
                        key: (*key).to_owned(),
                        path: (*key).to_owned(),
                        ..KeyToPath::default()
                    })
                    .collect(),
            ),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mut volumes = vec![Volume {
        name: "config".to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: plan.names.gateway(),
            default_mode: Some(VOLUME_MODE),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let mut mounts = vec![mount("config", CONFIG_DIR)];
    if let Some(tls) = &plan.tls {
        volumes.push(secret_volume(
            "tls",
            &tls.secret_name,
            &["tls.crt", "tls.key"],
        ));
        mounts.push(mount("tls", TLS_DIR));
    }
    if let Some(key) = &plan.jwt_key {
        volumes.push(secret_volume("jwt", &key.name, &[&key.key]));
        mounts.push(mount("jwt", JWT_DIR));
    }
    if let Some(ca) = &plan.jwks_ca {
        volumes.push(secret_volume("jwks-ca", &ca.name, &[&ca.key]));
        mounts.push(mount("jwks-ca", JWKS_CA_DIR));
    }
    (volumes, mounts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{example, owner, plan_of};
    use crate::crd::WebSocketService;

    const IMAGE: &str = "wsfleet/wsfleet:0.1.0";

    fn build(wss: &WebSocketService) -> Deployment {
        deployment(&plan_of(wss), &wss.spec, &owner(wss), IMAGE)
    }

    fn pod(deployment: &Deployment) -> &PodSpec {
        deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
    }

    #[test]
    fn metadata_selector_and_owner() {
        let wss = example("minimal.yaml");
        let deployment = build(&wss);
        let meta = &deployment.metadata;
        assert_eq!(meta.name.as_deref(), Some("chat-gateway"));
        assert_eq!(meta.namespace.as_deref(), Some("team-a"));
        assert_eq!(meta.labels.as_ref().unwrap().len(), 4);
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("WebSocketService", "chat")
        );
        assert_eq!(owner.controller, Some(true));
        let spec = deployment.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(spec.selector.match_labels.as_ref().unwrap().len(), 2);
        let template_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        for (key, value) in spec.selector.match_labels.as_ref().unwrap() {
            assert_eq!(
                template_labels.get(key),
                Some(value),
                "template carries {key}"
            );
        }
        let rolling = spec
            .strategy
            .as_ref()
            .unwrap()
            .rolling_update
            .as_ref()
            .unwrap();
        assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
    }

    #[test]
    fn autoscaled_deployment_leaves_replicas_to_the_hpa() {
        let deployment = build(&example("production.yaml"));
        assert_eq!(deployment.spec.as_ref().unwrap().replicas, None);
        let patch = serde_json::to_value(&deployment).unwrap();
        assert!(patch["spec"].get("replicas").is_none(), "{patch}");
    }

    #[test]
    fn container_is_locked_down_and_probed_on_the_metrics_port() {
        let deployment = build(&example("minimal.yaml"));
        let pod = pod(&deployment);
        let pod_security = pod.security_context.as_ref().unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(pod_security.run_as_user, Some(65532));
        assert_eq!(
            pod_security.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.termination_grace_period_seconds, Some(75));
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some(IMAGE));
        assert_eq!(
            container.args.as_ref().unwrap(),
            &[
                "--config",
                "/etc/wsfleet/config/gateway.yaml",
                "--log-format",
                "json"
            ]
        );
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(
            security
                .capabilities
                .as_ref()
                .unwrap()
                .drop
                .as_ref()
                .unwrap(),
            &["ALL"]
        );
        let ports = container.ports.as_ref().unwrap();
        assert_eq!(ports[0].name.as_deref(), Some("ws"));
        assert_eq!(ports[0].container_port, 8080);
        assert_eq!(ports[1].name.as_deref(), Some("metrics"));
        assert_eq!(ports[1].container_port, 9090);
        let readiness = container
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(readiness.path.as_deref(), Some("/readyz"));
        assert_eq!(readiness.port, IntOrString::String("metrics".to_owned()));
        let liveness = container
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(liveness.path.as_deref(), Some("/healthz"));
        let requests = container
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap();
        assert_eq!(requests["cpu"], Quantity("100m".to_owned()));
        let spread = &pod.topology_spread_constraints.as_ref().unwrap()[0];
        assert_eq!(spread.topology_key, "kubernetes.io/hostname");
        assert_eq!(spread.when_unsatisfiable, "ScheduleAnyway");
    }

    #[test]
    fn the_identity_providers_ca_is_mounted_as_a_directory() {
        let deployment = build(&example("oidc-jwks.yaml"));
        let pod = pod(&deployment);
        let mount = pod.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .last()
            .unwrap();
        assert_eq!(
            (mount.name.as_str(), mount.mount_path.as_str()),
            ("jwks-ca", "/etc/wsfleet/jwks-ca")
        );
        let ca = pod
            .volumes
            .as_ref()
            .unwrap()
            .last()
            .unwrap()
            .secret
            .as_ref()
            .unwrap();
        assert_eq!(ca.secret_name.as_deref(), Some("id-example-ca"));
        assert_eq!(ca.items.as_ref().unwrap()[0].key, "ca.crt");
    }

    #[test]
    fn config_tls_and_jwt_are_mounted_as_directories() {
        let deployment = build(&example("production.yaml"));
        let pod = pod(&deployment);
        let mounts: Vec<(&str, &str)> = pod.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| (m.name.as_str(), m.mount_path.as_str()))
            .collect();
        assert_eq!(
            mounts,
            [
                ("config", "/etc/wsfleet/config"),
                ("tls", "/etc/wsfleet/tls"),
                ("jwt", "/etc/wsfleet/jwt")
            ]
        );
        assert!(
            pod.containers[0]
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .all(|m| m.sub_path.is_none())
        );
        let volumes = pod.volumes.as_ref().unwrap();
        assert_eq!(
            volumes[0].config_map.as_ref().unwrap().name,
            "chat-prod-gateway"
        );
        let tls = volumes[1].secret.as_ref().unwrap();
        assert_eq!(tls.secret_name.as_deref(), Some("chat-prod-tls"));
        let tls_keys: Vec<&str> = tls
            .items
            .as_ref()
            .unwrap()
            .iter()
            .map(|i| i.key.as_str())
            .collect();
        assert_eq!(tls_keys, ["tls.crt", "tls.key"]);
        let jwt = volumes[2].secret.as_ref().unwrap();
        assert_eq!(jwt.secret_name.as_deref(), Some("chat-jwt"));
        assert_eq!(jwt.items.as_ref().unwrap()[0].key, "public.pem");
        let container = &pod.containers[0];
        assert_eq!(
            container.ports.as_ref().unwrap()[0].name.as_deref(),
            Some("wss")
        );
        assert_eq!(container.ports.as_ref().unwrap()[0].container_port, 8443);
        let limits = container
            .resources
            .as_ref()
            .unwrap()
            .limits
            .as_ref()
            .unwrap();
        assert_eq!(limits["memory"], Quantity("512Mi".to_owned()));
    }

    #[test]
    fn pod_settings_pass_through() {
        let mut wss = example("minimal.yaml");
        wss.spec.image = Some("registry.example/gateway:1.2".to_owned());
        wss.spec.node_selector = Some(BTreeMap::from([("pool".to_owned(), "edge".to_owned())]));
        wss.spec.tolerations = Some(vec![k8s_openapi::api::core::v1::Toleration {
            key: Some("edge".to_owned()),
            operator: Some("Exists".to_owned()),
            ..Default::default()
        }]);
        wss.spec.pod_annotations = Some(BTreeMap::from([(
            "prometheus.io/scrape".to_owned(),
            "true".to_owned(),
        )]));
        let deployment = build(&wss);
        let template = &deployment.spec.as_ref().unwrap().template;
        assert_eq!(
            template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()["prometheus.io/scrape"],
            "true"
        );
        let pod = template.spec.as_ref().unwrap();
        assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "edge");
        assert_eq!(
            pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
            Some("edge")
        );
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("registry.example/gateway:1.2")
        );
    }

    #[test]
    fn resources_are_built_as_the_apiserver_stores_them() {
        let mut wss = example("minimal.yaml");
        wss.spec.resources = Some(
            serde_json::from_value(serde_json::json!({
                "requests": {"cpu": "0.5", "memory": "1.5Gi"},
                "limits": {"cpu": "1000m", "memory": "2048Mi"}
            }))
            .unwrap(),
        );
        let deployment = build(&wss);
        let resources = pod(&deployment).containers[0].resources.as_ref().unwrap();
        let stored = serde_json::json!({
            "requests": {"cpu": "500m", "memory": "1536Mi"},
            "limits": {"cpu": "1", "memory": "2Gi"}
        });
        assert_eq!(serde_json::to_value(resources).unwrap(), stored);
    }

    #[test]
    fn config_only_changes_leave_the_pod_template_alone() {
        let before = example("production.yaml");
        let mut after = before.clone();
        after.spec.limits.max_connections = 5;
        after.spec.heartbeat.interval = "45s".to_owned();
        after.spec.auth.as_mut().unwrap().allowed_origins = None;
        after.spec.tls.as_mut().unwrap().dns_names = Some(vec!["other.example.com".to_owned()]);
        after.spec.autoscaling.as_mut().unwrap().max_replicas = 30;
        let template = |wss: &WebSocketService| build(wss).spec.unwrap().template;
        assert_eq!(template(&before), template(&after));
        assert!(
            template(&before)
                .metadata
                .unwrap()
                .annotations
                .unwrap()
                .len()
                == 1
        );
    }
}
