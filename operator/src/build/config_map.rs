//! ConfigMap `<name>-gateway`: the rendered gateway config, reloaded in place by the gateways.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::child_metadata;
use crate::names::CONFIG_KEY;
use crate::plan::Plan;

pub fn config_map(plan: &Plan, owner: &OwnerReference) -> ConfigMap {
    ConfigMap {
        metadata: child_metadata(&plan.names, plan.names.gateway(), owner),
        data: Some(BTreeMap::from([(
            CONFIG_KEY.to_owned(),
            plan.gateway_config.to_yaml(),
        )])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wsfleet_gateway::config::{GatewayConfig, JwtAlgorithm, Rate, TokenSource};

    use super::*;
    use crate::build::fixtures::{example, owner, plan_of};

    fn rendered(file: &str) -> (ConfigMap, GatewayConfig) {
        let wss = example(file);
        let map = config_map(&plan_of(&wss), &owner(&wss));
        let text = &map.data.as_ref().unwrap()["gateway.yaml"];
        let config = GatewayConfig::from_yaml(text).expect("rendered config is valid");
        (map, config)
    }

    #[test]
    fn minimal_config_points_at_the_upstream_service() {
        let (map, config) = rendered("minimal.yaml");
        assert_eq!(map.metadata.name.as_deref(), Some("chat-gateway"));
        assert_eq!(map.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(map.data.as_ref().unwrap().len(), 1);
        assert_eq!(config.upstream.url, "ws://chat-backend.team-a.svc:8080/ws");
        assert_eq!(config.listen.address.to_string(), "0.0.0.0:8080");
        assert_eq!(config.listen.path, "/");
        assert_eq!(config.metrics.address.to_string(), "0.0.0.0:9090");
        assert_eq!(config.tls, None);
        assert_eq!(config.auth.jwt, None);
        assert_eq!(config.limits.max_connections, 10_000);
        assert_eq!(config.limits.max_message_bytes, 1 << 20);
        assert_eq!(config.drain.grace_period, Duration::from_secs(60));
        let heartbeat = config.heartbeat.unwrap();
        assert_eq!(heartbeat.interval, Duration::from_secs(30));
        assert_eq!(heartbeat.timeout, Duration::from_secs(10));
    }

    #[test]
    fn production_config_carries_tls_auth_and_limits() {
        let (_, config) = rendered("production.yaml");
        assert_eq!(config.listen.address.to_string(), "0.0.0.0:8443");
        assert_eq!(config.listen.path, "/ws");
        let tls = config.tls.unwrap();
        assert_eq!(tls.cert_file.to_str(), Some("/etc/wsfleet/tls/tls.crt"));
        assert_eq!(tls.key_file.to_str(), Some("/etc/wsfleet/tls/tls.key"));
        let jwt = config.auth.jwt.unwrap();
        assert_eq!(jwt.issuer.as_deref(), Some("https://auth.example.com"));
        assert_eq!(jwt.audiences, ["chat"]);
        assert_eq!(jwt.algorithms, [JwtAlgorithm::RS256]);
        assert_eq!(jwt.key_file.to_str(), Some("/etc/wsfleet/jwt/public.pem"));
        assert_eq!(
            jwt.token_from,
            [
                TokenSource::Header,
                TokenSource::Query,
                TokenSource::Subprotocol
            ]
        );
        assert_eq!(jwt.query_parameter, "access_token");
        assert_eq!(jwt.leeway, Duration::from_secs(30));
        assert_eq!(jwt.forward_claims.len(), 1);
        assert_eq!(jwt.forward_claims[0].claim, "sub");
        assert_eq!(jwt.forward_claims[0].header, "X-User-Id");
        assert_eq!(config.auth.allowed_origins, ["https://chat.example.com"]);
        assert_eq!(config.auth.ip_deny, ["192.0.2.0/24".parse().unwrap()]);
        assert!(config.auth.ip_allow.is_empty());
        assert_eq!(
            config.limits.connections_per_ip,
            Some(Rate {
                per_second: 10,
                burst: 20
            })
        );
        assert_eq!(
            config.limits.messages_per_connection,
            Some(Rate {
                per_second: 100,
                burst: 200
            })
        );
    }

    #[test]
    fn url_upstream_is_used_as_written() {
        let (_, config) = rendered("hpa-cpu.yaml");
        assert_eq!(
            config.upstream.url,
            "ws://chat-backend.backend.svc.cluster.local:8080/ws"
        );
    }

    #[test]
    fn compression_off_and_drain_reach_the_config() {
        let mut wss = example("minimal.yaml");
        wss.spec.compression = crate::crd::Compression::Disabled;
        wss.spec.drain.grace_period_seconds = 5;
        let map = config_map(&plan_of(&wss), &owner(&wss));
        let config = GatewayConfig::from_yaml(&map.data.unwrap()["gateway.yaml"]).unwrap();
        assert_eq!(
            config.compression,
            wsfleet_gateway::config::Compression::Disabled
        );
        assert_eq!(config.drain.grace_period, Duration::from_secs(5));
    }
}
