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

    use serde_json::{Value, json};
    use wsfleet_config::{GatewayConfig, JwtAlgorithm, Rate, TokenSource};

    use super::*;
    use crate::build::fixtures::{example, owner, plan_of, wss};
    use crate::crd::admission::{self, Admission};
    use crate::plan::plan;

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
        assert_eq!(
            jwt.key_file.unwrap().to_str(),
            Some("/etc/wsfleet/jwt/public.pem")
        );
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
    fn compression_off_validation_and_drain_reach_the_config() {
        let mut wss = example("minimal.yaml");
        wss.spec.compression = crate::crd::Compression::Disabled;
        wss.spec.validation.utf8 = true;
        wss.spec.validation.allowed_subprotocols = Some(vec!["chat.v2".into()]);
        wss.spec.drain.grace_period_seconds = 5;
        let map = config_map(&plan_of(&wss), &owner(&wss));
        let config = GatewayConfig::from_yaml(&map.data.unwrap()["gateway.yaml"]).unwrap();
        assert_eq!(config.compression, wsfleet_config::Compression::Disabled);
        assert!(config.validation.utf8);
        assert_eq!(config.validation.allowed_subprotocols, ["chat.v2"]);
        assert_eq!(config.drain.grace_period, Duration::from_secs(5));
    }

    /// The contract between the CRD and the gateway: every spec the CRD accepts renders a config
    /// that the gateway loads, holding exactly what was planned (no duration rounded away).
    #[test]
    fn every_accepted_spec_renders_a_config_the_gateway_loads_unchanged() {
        let admission = Admission::new();
        let mut accepted = 0;
        let mut broken = Vec::new();
        for (edge, spec) in edge_specs(&admission::schema()) {
            let manifest = admission::with_spec(spec);
            if !admission.cel_errors(&manifest).is_empty() {
                continue;
            }
            accepted += 1;
            if let Err(why) = render_and_load(&admission.stored(&manifest)) {
                broken.push(format!("{edge}: {why}"));
            }
        }
        assert!(
            broken.is_empty(),
            "accepted by the CRD, yet:\n{}",
            broken.join("\n")
        );
        assert!(accepted > 150, "only {accepted} edge specs were accepted");
    }

    /// Plans a stored manifest, renders its ConfigMap and loads the config with the gateway's
    /// own parser and validation.
    fn render_and_load(stored: &Value) -> Result<(), String> {
        let stored = wss(&stored.to_string());
        let planned = plan(&stored).map_err(|err| format!("the operator refuses it: {err}"))?;
        let map = config_map(&planned, &owner(&stored));
        let text = &map.data.as_ref().expect("config data")[CONFIG_KEY];
        let loaded = GatewayConfig::from_yaml(text)
            .map_err(|err| format!("the gateway refuses the rendered config: {err}"))?;
        if loaded == planned.gateway_config {
            return Ok(());
        }
        // Name the fields that differ, from the two configs' debug renderings.
        let (planned, loaded) = (
            format!("{:#?}", planned.gateway_config),
            format!("{loaded:#?}"),
        );
        let field = |line: &str| line.trim().trim_end_matches(',').to_owned();
        let changed: Vec<String> = planned
            .lines()
            .zip(loaded.lines())
            .filter(|(planned, loaded)| planned != loaded)
            .map(|(planned, loaded)| {
                format!("planned {}, loaded {}", field(planned), field(loaded))
            })
            .collect();
        Err(format!(
            "the rendered config changed: {}",
            changed.join("; ")
        ))
    }

    /// Specs at the edges of what the CRD accepts, starting from the full production example:
    /// every bounded integer at its minimum and maximum (read from the schema, since kube's CEL
    /// evaluator does not check OpenAPI bounds), every duration field at each of a generated set
    /// of durations, and hand-picked strings, upstreams, algorithm sets and absent sections.
    /// Each spec comes with a description of its edge, such as `spec.heartbeat.interval = "1ms"`.
    fn edge_specs(schema: &Value) -> Vec<(String, Value)> {
        let base = serde_json::to_value(example("production.yaml").spec).expect("spec serializes");
        let with = |path: &[&str], value: Value| {
            let text = value.to_string();
            let shown: String = text.chars().take(60).collect();
            let elided = if shown.len() < text.len() { "..." } else { "" };
            let edge = format!("spec.{} = {shown}{elided}", path.join("."));
            let mut spec = base.clone();
            *path.iter().fold(&mut spec, |node, key| &mut node[*key]) = value;
            (edge, spec)
        };
        let mut specs = vec![("examples/production.yaml".to_owned(), base.clone())];

        let mut integers = Vec::new();
        bounded_integers(
            &schema["properties"]["spec"],
            &mut Vec::new(),
            &mut integers,
        );
        assert!(integers.len() >= 12, "bounded integers: {integers:?}");
        for (path, bounds) in &integers {
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            specs.extend(bounds.iter().map(|bound| with(&path, json!(bound))));
        }
        for rate in ["connectionsPerIP", "messagesPerConnection"] {
            for limit in [1, 1_000_000] {
                specs.push(with(
                    &["limits", rate],
                    json!({"perSecond": limit, "burst": limit}),
                ));
            }
        }

        let duration_fields: [&[&str]; 7] = [
            &["tcp", "keepalive", "idle"],
            &["tcp", "keepalive", "interval"],
            &["heartbeat", "interval"],
            &["heartbeat", "timeout"],
            &["auth", "jwt", "leeway"],
            &["tls", "duration"],
            &["tls", "renewBefore"],
        ];
        for field in duration_fields {
            specs.extend(durations().into_iter().map(|text| with(field, json!(text))));
        }

        let long_path = format!("/{}", "p".repeat(1023));
        for upstream in [
            json!({"service": "c", "port": 1}),
            json!({"service": "s".repeat(63), "port": 65535, "path": long_path}),
            json!({"service": "/", "port": 80}),
            json!({"service": "chat.backend", "port": 80}),
            json!({"url": "ws://a"}),
            json!({"url": "wss://[::1]:65535/x?y=1"}),
            json!({"url": "ws://a#b"}),
        ] {
            specs.push(with(&["upstream"], upstream));
        }
        specs.push(with(&["listen", "path"], json!(long_path)));
        for algorithms in [
            json!(["HS256", "HS384", "HS512"]),
            json!(["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]),
            json!(["ES256", "ES384"]),
        ] {
            specs.push(with(&["auth", "jwt", "algorithms"], algorithms));
        }
        specs.push(with(&["auth", "jwt", "tokenFrom"], json!(["Query"])));
        specs.push(with(&["auth", "jwt", "queryParameter"], json!("q")));
        specs.push(with(
            &["auth", "jwt", "queryParameter"],
            json!("q".repeat(64)),
        ));
        specs.push(with(
            &["auth", "jwt", "forwardClaims"],
            json!([{"claim": "c", "header": "H".repeat(128)}]),
        ));
        specs.push(with(&["auth", "ipAllow"], json!(["0.0.0.0/0", "::/0"])));
        specs.push(with(&["auth", "trustedProxies"], json!(["10.0.0.1/32"])));
        specs.push(with(
            &["auth", "allowedOrigins"],
            json!(["http://a", "https://[::1]:8443"]),
        ));
        specs.push(with(&["compression"], json!("Disabled")));
        specs.push(with(&["validation", "utf8"], json!(true)));
        specs.push(with(
            &["validation", "allowedSubprotocols"],
            json!(["x".repeat(128), "!#$%&'*+-.^_`|~9Z"]),
        ));
        specs.push(with(&["sessionAffinity", "type"], json!("None")));
        specs.push(with(
            &["tls"],
            json!({"mode": "Secret", "secretName": "chat-user-tls"}),
        ));
        for section in [
            "tls",
            "auth",
            "autoscaling",
            "limits",
            "heartbeat",
            "resources",
        ] {
            let mut spec = base.clone();
            spec.as_object_mut()
                .expect("spec is an object")
                .remove(section);
            specs.push((format!("no spec.{section}"), spec));
        }
        specs
    }

    /// Collects every integer field under `node` that has both a `minimum` and a `maximum`.
    fn bounded_integers(
        node: &Value,
        path: &mut Vec<String>,
        found: &mut Vec<(Vec<String>, [i64; 2])>,
    ) {
        if node["type"] == "integer" {
            if let (Some(minimum), Some(maximum)) =
                (node["minimum"].as_f64(), node["maximum"].as_f64())
            {
                found.push((path.clone(), [minimum as i64, maximum as i64]));
            }
            return;
        }
        for (name, child) in node["properties"].as_object().into_iter().flatten() {
            path.push(name.clone());
            bounded_integers(child, path, found);
            path.pop();
        }
    }

    /// Every unit at amounts from zero to the largest Go duration, and compound forms.
    fn durations() -> Vec<String> {
        let amounts = [0_u64, 1, 9, 59, 60, 999, 1000, 1500, 86_400, 2_562_047];
        let units = ["ns", "us", "ms", "s", "m", "h"];
        let mut texts: Vec<String> = amounts
            .iter()
            .flat_map(|amount| units.iter().map(move |unit| format!("{amount}{unit}")))
            .collect();
        texts.extend(
            [
                "1h30m",
                "1m0s",
                "0s1ms",
                "1s500ms",
                "1ms500us",
                "1h1ns",
                "0h0m0s1ms",
                "007s",
                "2562047h47m16s854ms",
            ]
            .map(String::from),
        );
        texts
    }
}
