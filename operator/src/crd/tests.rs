use serde_json::{Value, json};

use super::admission::{cel_errors, schema, with_spec};
use super::*;

fn service_upstream() -> Value {
    json!({"service": "chat-backend", "port": 8080})
}

fn refused_with(spec: Value, message: &str) {
    let errors = cel_errors(&with_spec(spec.clone()));
    assert!(
        errors.iter().any(|err| err.contains(message)),
        "expected {message:?} for {spec}, got {errors:?}"
    );
}

#[test]
fn every_example_is_accepted_and_parses() {
    let dir = format!("{}/../examples", env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let manifest: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(
            cel_errors(&manifest),
            Vec::<String>::new(),
            "{}",
            path.display()
        );
        let _: WebSocketService =
            serde_yaml::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        seen += 1;
    }
    assert!(seen >= 4);
}

#[test]
fn upstream_needs_exactly_one_of_service_and_url() {
    refused_with(
        json!({"upstream": {}}),
        "exactly one of upstream.service or upstream.url",
    );
    refused_with(
        json!({"upstream": {"service": "b", "port": 1, "url": "ws://b:1/"}}),
        "exactly one of upstream.service or upstream.url",
    );
    refused_with(
        json!({"upstream": {"service": "b"}}),
        "upstream.port is required",
    );
    refused_with(
        json!({"upstream": {"url": "ws://b:1/", "port": 80}}),
        "apply only to upstream.service",
    );
}

#[test]
fn upstream_url_must_be_websocket() {
    refused_with(
        json!({"upstream": {"url": "http://b:1/"}}),
        "upstream.url must be ws://",
    );
    refused_with(
        json!({"upstream": {"url": "ws://"}}),
        "upstream.url must be ws://",
    );
    assert!(
        cel_errors(&with_spec(
            json!({"upstream": {"url": "wss://b.example:443/x"}})
        ))
        .is_empty()
    );
}

#[test]
fn paths_start_with_a_slash() {
    refused_with(
        json!({"upstream": {"service": "b", "port": 1, "path": "ws"}}),
        "upstream.path must start with '/'",
    );
    refused_with(
        json!({"upstream": service_upstream(), "listen": {"path": "ws"}}),
        "listen.path must start with '/'",
    );
}

#[test]
fn listen_path_has_no_dot_segments_nor_encoded_separators() {
    for path in [
        "/ws/..",
        "/ws/./x",
        "/%2E%2e/x",
        "/ws%2fx",
        "/ws%5Cx",
        "/ws\\x",
    ] {
        refused_with(
            json!({"upstream": service_upstream(), "listen": {"path": path}}),
            "listen.path must not hold '.' or '..' segments",
        );
    }
    for path in ["/", "/ws", "/ws/.well-known", "/a..b/..."] {
        let spec = json!({"upstream": service_upstream(), "listen": {"path": path}});
        assert_eq!(cel_errors(&with_spec(spec)), Vec::<String>::new(), "{path}");
    }
}

#[test]
fn utf8_validation_needs_compression_disabled() {
    refused_with(
        json!({"upstream": service_upstream(), "validation": {"utf8": true}}),
        "validation.utf8 needs compression: Disabled",
    );
    for spec in [
        json!({"upstream": service_upstream(), "validation": {"utf8": true}, "compression": "Disabled"}),
        json!({"upstream": service_upstream(), "validation": {"utf8": false}}),
        json!({"upstream": service_upstream(), "validation": {}}),
    ] {
        assert_eq!(
            cel_errors(&with_spec(spec.clone())),
            Vec::<String>::new(),
            "{spec}"
        );
    }
}

#[test]
fn allowed_subprotocols_are_tokens_and_not_token_carriers() {
    for bad in ["chat v2", "bearer.x", "a,b"] {
        refused_with(
            json!({"upstream": service_upstream(), "validation": {"allowedSubprotocols": ["chat", bad]}}),
            "validation.allowedSubprotocols entries must be HTTP tokens",
        );
    }
    let spec = json!({"upstream": service_upstream(), "validation": {"allowedSubprotocols": ["chat.v2", "mqtt", "x'y"]}});
    assert_eq!(cel_errors(&with_spec(spec)), Vec::<String>::new());
}

#[test]
fn listen_port_cannot_take_the_metrics_port() {
    refused_with(
        json!({"upstream": service_upstream(), "listen": {"port": 9090}}),
        "listen.port must not be 9090",
    );
}

#[test]
fn secret_mode_needs_a_secret_name() {
    refused_with(
        json!({"upstream": service_upstream(), "tls": {"mode": "Secret"}}),
        "tls.secretName is required when tls.mode is Secret",
    );
    assert!(
        cel_errors(&with_spec(
            json!({"upstream": service_upstream(), "tls": {}})
        ))
        .is_empty()
    );
}

#[test]
fn tls_durations_parse_are_positive_and_ordered() {
    for (tls, message) in [
        (
            json!({"duration": "90 days"}),
            "tls.duration must be a positive duration",
        ),
        (
            json!({"duration": "0s", "renewBefore": "0h"}),
            "tls.duration must be a positive duration",
        ),
        (
            json!({"renewBefore": "-1h"}),
            "tls.renewBefore must be a positive duration",
        ),
        (
            json!({"duration": "24h", "renewBefore": "48h"}),
            "tls.renewBefore must be shorter than tls.duration",
        ),
        (
            json!({"duration": "24h", "renewBefore": "24h"}),
            "tls.renewBefore must be shorter than tls.duration",
        ),
        (
            json!({"dnsNames": ["Chat.Example.com"]}),
            "tls.dnsNames entries must be lowercase DNS names",
        ),
    ] {
        refused_with(json!({"upstream": service_upstream(), "tls": tls}), message);
    }
    let fine = json!({"duration": "1h30m", "renewBefore": "30m", "dnsNames": ["*.example.com"]});
    assert!(
        cel_errors(&with_spec(
            json!({"upstream": service_upstream(), "tls": fine})
        ))
        .is_empty()
    );
}

#[test]
fn connections_per_subject_needs_jwt() {
    let message = "limits.connectionsPerSubject needs auth.jwt";
    refused_with(
        json!({"upstream": service_upstream(), "limits": {"connectionsPerSubject": 3}}),
        message,
    );
    refused_with(
        json!({"upstream": service_upstream(), "limits": {"connectionsPerSubject": 3},
               "auth": {"allowedOrigins": ["https://chat.example.com"]}}),
        message,
    );
    let jwt = json!({"algorithms": ["HS256"], "keySecretRef": {"name": "k", "key": "key"}, "subjectClaim": "user_id"});
    for spec in [
        json!({"upstream": service_upstream(), "limits": {"connectionsPerSubject": 3}, "auth": {"jwt": jwt}}),
        json!({"upstream": service_upstream(), "limits": {"maxConnections": 10}}),
        json!({"upstream": service_upstream()}),
    ] {
        assert_eq!(
            cel_errors(&with_spec(spec.clone())),
            Vec::<String>::new(),
            "{spec}"
        );
    }
    let limits = &schema()["properties"]["spec"]["properties"]["limits"]["properties"];
    assert_eq!(limits["connectionsPerSubject"]["minimum"], json!(1.0));
}

#[test]
fn the_access_log_takes_defaults_and_samples_at_least_one_in_one() {
    let admission = super::admission::Admission::new();
    let manifest =
        with_spec(json!({"upstream": service_upstream(), "accessLog": {"enabled": true}}));
    assert_eq!(admission.cel_errors(&manifest), Vec::<String>::new());
    let stored = admission.stored(&manifest);
    assert_eq!(
        stored["spec"]["accessLog"],
        json!({"enabled": true, "sampleOneIn": 1, "refusals": true})
    );
    let access_log = &schema()["properties"]["spec"]["properties"]["accessLog"]["properties"];
    assert_eq!(access_log["sampleOneIn"]["minimum"], json!(1.0));
}

#[test]
fn heartbeat_durations_must_be_positive() {
    refused_with(
        json!({"upstream": service_upstream(), "heartbeat": {"interval": "0s"}}),
        "heartbeat.interval must be a positive duration",
    );
    refused_with(
        json!({"upstream": service_upstream(), "heartbeat": {"timeout": "soon"}}),
        "heartbeat.timeout must be a positive duration",
    );
}

#[test]
fn durations_are_whole_milliseconds() {
    let jwt = |leeway: &str| json!({"algorithms": ["HS256"], "keySecretRef": {"name": "k", "key": "key"}, "leeway": leeway});
    for (spec, message) in [
        (
            json!({"heartbeat": {"interval": "500us"}}),
            "heartbeat.interval must be a positive duration in h, m, s or ms",
        ),
        (
            json!({"heartbeat": {"timeout": "1s1500us"}}),
            "heartbeat.timeout must be a positive duration in h, m, s or ms",
        ),
        (
            json!({"auth": {"jwt": jwt("1000000ns")}}),
            "auth.jwt.leeway must be a duration in h, m, s or ms",
        ),
        (
            json!({"tls": {"renewBefore": "360h1us"}}),
            "tls.renewBefore must be a positive duration in h, m, s or ms",
        ),
    ] {
        let mut spec = spec;
        spec["upstream"] = service_upstream();
        refused_with(spec, message);
    }
    let fine = json!({"upstream": service_upstream(), "heartbeat": {"interval": "1s500ms", "timeout": "1ms"},
                      "auth": {"jwt": jwt("0s")}});
    assert_eq!(cel_errors(&with_spec(fine)), Vec::<String>::new());
}

#[test]
fn upstream_service_is_a_service_name() {
    for name in ["/", "Chat", "chat.backend", "-chat", "1chat", "chat-"] {
        refused_with(
            json!({"upstream": {"service": name, "port": 80}}),
            "upstream.service must be a Service name",
        );
    }
    for name in ["c", "chat-backend", "b2"] {
        let spec = json!({"upstream": {"service": name, "port": 80}});
        assert_eq!(cel_errors(&with_spec(spec)), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn cidrs_must_be_well_formed() {
    for (field, message) in [
        ("ipAllow", "auth.ipAllow entries must be CIDRs"),
        ("ipDeny", "auth.ipDeny entries must be CIDRs"),
        (
            "trustedProxies",
            "auth.trustedProxies entries must be CIDRs",
        ),
    ] {
        refused_with(
            json!({"upstream": service_upstream(), "auth": {field: ["10.0.0.0/33"]}}),
            message,
        );
        refused_with(
            json!({"upstream": service_upstream(), "auth": {field: ["not-a-network"]}}),
            message,
        );
    }
    let fine = json!({"ipAllow": ["10.0.0.0/8", "2001:db8::/32"]});
    assert!(
        cel_errors(&with_spec(
            json!({"upstream": service_upstream(), "auth": fine})
        ))
        .is_empty()
    );
}

#[test]
fn proxy_protocol_needs_cidrs_and_a_positive_timeout() {
    let listen = |proxy_protocol: Value| json!({"upstream": service_upstream(), "listen": {"proxyProtocol": proxy_protocol}});
    refused_with(
        listen(json!({"trustedProxies": ["10.0.0.0/33"]})),
        "listen.proxyProtocol.trustedProxies entries must be CIDRs",
    );
    refused_with(
        listen(json!({"trustedProxies": ["10.0.0.0/8"], "headerTimeout": "0s"})),
        "listen.proxyProtocol.headerTimeout must be a positive duration",
    );
    assert_eq!(
        cel_errors(&with_spec(listen(
            json!({"trustedProxies": ["10.0.0.0/8", "fd00::/8"], "headerTimeout": "2s"})
        ))),
        Vec::<String>::new()
    );
    let schema = schema();
    let proxy_protocol =
        &schema["properties"]["spec"]["properties"]["listen"]["properties"]["proxyProtocol"];
    assert_eq!(proxy_protocol["required"], json!(["trustedProxies"]));
    assert_eq!(
        proxy_protocol["properties"]["trustedProxies"]["minItems"],
        1
    );
}

#[test]
fn service_fields_fit_the_service_type() {
    let service = |service: Value| json!({"upstream": service_upstream(), "service": service});
    for (fields, message) in [
        (
            json!({"externalTrafficPolicy": "Local"}),
            "service.externalTrafficPolicy applies only to service.type NodePort or LoadBalancer",
        ),
        (
            json!({"type": "NodePort", "loadBalancerSourceRanges": ["10.0.0.0/8"]}),
            "service.loadBalancerSourceRanges applies only to service.type LoadBalancer",
        ),
        (
            json!({"type": "NodePort", "loadBalancerClass": "service.k8s.aws/nlb"}),
            "service.loadBalancerClass applies only to service.type LoadBalancer",
        ),
        (
            json!({"type": "LoadBalancer", "loadBalancerSourceRanges": ["10.0.0.1"]}),
            "service.loadBalancerSourceRanges entries must be CIDRs",
        ),
    ] {
        refused_with(service(fields), message);
    }
    let fine = json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                      "loadBalancerSourceRanges": ["203.0.113.0/24"], "loadBalancerClass": "service.k8s.aws/nlb",
                      "annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "external"}});
    assert_eq!(cel_errors(&with_spec(service(fine))), Vec::<String>::new());
    let node_port = json!({"type": "NodePort", "externalTrafficPolicy": "Cluster"});
    assert_eq!(
        cel_errors(&with_spec(service(node_port))),
        Vec::<String>::new()
    );
    assert_eq!(
        schema()["properties"]["spec"]["properties"]["service"]["properties"]["type"]["enum"],
        json!(["ClusterIP", "NodePort", "LoadBalancer"])
    );
}

#[test]
fn load_balancer_class_is_fixed_while_the_type_stays_load_balancer() {
    let manifest =
        |service: Value| with_spec(json!({"upstream": service_upstream(), "service": service}));
    let nlb = manifest(json!({"type": "LoadBalancer", "loadBalancerClass": "service.k8s.aws/nlb"}));
    let plain_lb = manifest(json!({"type": "LoadBalancer"}));
    let other_class =
        manifest(json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"}));
    let cluster_ip = manifest(json!({}));
    let admission = super::admission::Admission::new();
    let message = "service.loadBalancerClass cannot be set, changed or removed";
    for (old, new) in [(&nlb, &other_class), (&nlb, &plain_lb), (&plain_lb, &nlb)] {
        let errors = admission.update_errors(old, new);
        assert!(
            errors.iter().any(|err| err.contains(message)),
            "{old} -> {new}: {errors:?}"
        );
    }
    // Unchanged, or with a type change on either side, Kubernetes allows it.
    for (old, new) in [(&nlb, &nlb), (&cluster_ip, &nlb), (&nlb, &cluster_ip)] {
        assert_eq!(
            admission.update_errors(old, new),
            Vec::<String>::new(),
            "{old} -> {new}"
        );
    }
    assert_eq!(
        cel_errors(&nlb),
        Vec::<String>::new(),
        "a create has no old class"
    );
}

#[test]
fn keepalive_times_are_whole_seconds_in_range() {
    let keepalive = |idle: &str, interval: &str| json!({"upstream": service_upstream(), "tcp": {"keepalive": {"idle": idle, "interval": interval, "count": 5}}});
    refused_with(
        keepalive("1500ms", "10s"),
        "tcp.keepalive.idle must be whole seconds",
    );
    refused_with(
        keepalive("0s", "10s"),
        "tcp.keepalive.idle must be whole seconds",
    );
    refused_with(
        keepalive("60s", "10h"),
        "tcp.keepalive.interval must be whole seconds",
    );
    assert_eq!(
        cel_errors(&with_spec(keepalive("2m", "10s"))),
        Vec::<String>::new()
    );
}

#[test]
fn origins_are_bare_scheme_and_host() {
    refused_with(
        json!({"upstream": service_upstream(), "auth": {"allowedOrigins": ["https://a.example/"]}}),
        "auth.allowedOrigins entries must be scheme://host[:port]",
    );
}

#[test]
fn jwt_algorithms_share_one_key_type() {
    let jwt = |algorithms: Value| {
        json!({"upstream": service_upstream(), "auth": {"jwt": {
            "algorithms": algorithms, "keySecretRef": {"name": "k", "key": "key"}}}})
    };
    refused_with(
        jwt(json!(["HS256", "RS256"])),
        "auth.jwt.algorithms must all use one key type",
    );
    assert!(cel_errors(&with_spec(jwt(json!(["RS256", "PS512"])))).is_empty());
}

#[test]
fn jwt_keys_come_from_a_secret_or_a_provider() {
    let jwt = |fields: Value| {
        let mut jwt = json!({"algorithms": ["RS256"]});
        jwt.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        json!({"upstream": service_upstream(), "auth": {"jwt": jwt}})
    };
    let secret = json!({"name": "k", "key": "key"});
    refused_with(
        jwt(json!({})),
        "auth.jwt must set exactly one of keySecretRef and jwks",
    );
    refused_with(
        jwt(json!({"keySecretRef": secret, "jwks": {"url": "https://id.example/keys"}})),
        "auth.jwt must set exactly one of keySecretRef and jwks",
    );
    refused_with(
        jwt(json!({"jwks": {"url": "https://id.example/keys", "discovery": true}})),
        "auth.jwt.jwks must set exactly one of url and discovery: true",
    );
    refused_with(
        jwt(json!({"jwks": {}})),
        "auth.jwt.jwks must set exactly one of url and discovery: true",
    );
    refused_with(
        jwt(json!({"jwks": {"url": "ftp://id.example/keys"}})),
        "auth.jwt.jwks.url must be an http:// or https:// URL",
    );
    refused_with(
        jwt(json!({"jwks": {"discovery": true}})),
        "auth.jwt.issuer must be set with auth.jwt.jwks.discovery",
    );
    refused_with(
        jwt(json!({"jwks": {"url": "https://id.example/keys", "refreshInterval": "0s"}})),
        "auth.jwt.jwks.refreshInterval must be a positive duration",
    );
    let mut hmac = jwt(json!({"jwks": {"url": "https://id.example/keys"}}));
    hmac["auth"]["jwt"]["algorithms"] = json!(["HS256"]);
    refused_with(
        hmac,
        "auth.jwt.algorithms must be RSA or EC algorithms with auth.jwt.jwks",
    );
    for accepted in [
        jwt(json!({"keySecretRef": secret})),
        jwt(
            json!({"jwks": {"url": "http://keycloak.auth.svc:8080/realms/chat/protocol/openid-connect/certs"}}),
        ),
        jwt(
            json!({"issuer": "https://id.example", "jwks": {"discovery": true,
            "caSecretRef": {"name": "id-ca", "key": "ca.crt"}, "refreshInterval": "10m"}}),
        ),
    ] {
        assert!(
            cel_errors(&with_spec(accepted.clone())).is_empty(),
            "{accepted}"
        );
    }
}

#[test]
fn burst_must_cover_the_rate() {
    refused_with(
        json!({"upstream": service_upstream(), "limits": {"connectionsPerIP": {"perSecond": 10, "burst": 5}}}),
        "burst must be at least perSecond",
    );
    refused_with(
        json!({"upstream": service_upstream(), "limits": {"messagesPerConnection": {"perSecond": 10, "burst": 9}}}),
        "burst must be at least perSecond",
    );
}

#[test]
fn autoscaling_bounds_are_ordered_and_need_a_target() {
    refused_with(
        json!({"upstream": service_upstream(), "autoscaling": {"minReplicas": 5, "maxReplicas": 2, "targetCPUUtilization": 50}}),
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
    );
    refused_with(
        json!({"upstream": service_upstream(), "autoscaling": {"maxReplicas": 4}}),
        "autoscaling needs targetConnectionsPerPod, targetCPUUtilization or targetMemoryUtilization",
    );
    assert!(
        cel_errors(&with_spec(
            json!({"upstream": service_upstream(), "autoscaling": {"maxReplicas": 4, "targetMemoryUtilization": 80}})
        ))
        .is_empty()
    );
}

#[test]
fn keda_needs_a_connection_target_and_a_prometheus_url() {
    let keda = |address: &str| json!({"prometheus": {"serverAddress": address}});
    refused_with(
        json!({"upstream": service_upstream(), "autoscaling": {"maxReplicas": 4, "targetCPUUtilization": 50, "keda": keda("http://prometheus:9090")}}),
        "autoscaling.keda needs autoscaling.targetConnectionsPerPod",
    );
    for address in [
        "prometheus:9090",
        "ftp://prometheus",
        "http://",
        "http:///x",
    ] {
        refused_with(
            json!({"upstream": service_upstream(), "autoscaling": {"maxReplicas": 4, "targetConnectionsPerPod": 50, "keda": keda(address)}}),
            "autoscaling.keda.prometheus.serverAddress must be http://host",
        );
    }
    let fine = json!({"upstream": service_upstream(), "autoscaling": {"maxReplicas": 4, "targetConnectionsPerPod": 50,
                      "keda": {"prometheus": {"serverAddress": "https://prometheus.monitoring.svc:9090/prom", "query": "sum(x)"}}}});
    assert_eq!(cel_errors(&with_spec(fine)), Vec::<String>::new());
    let keda = &schema()["properties"]["spec"]["properties"]["autoscaling"]["properties"]["keda"];
    assert_eq!(keda["required"], json!(["prometheus"]));
    assert_eq!(
        keda["properties"]["prometheus"]["required"],
        json!(["serverAddress"])
    );
}

#[test]
fn openapi_bounds_and_closed_enums_are_in_the_schema() {
    let spec = &schema()["properties"]["spec"]["properties"];
    assert_eq!(spec["listen"]["properties"]["port"]["minimum"], 1024.0);
    assert_eq!(spec["listen"]["properties"]["port"]["maximum"], 65535.0);
    assert_eq!(spec["upstream"]["properties"]["port"]["maximum"], 65535.0);
    let max_message = &spec["limits"]["properties"]["maxMessageBytes"];
    assert_eq!(
        (
            max_message["minimum"].clone(),
            max_message["maximum"].clone()
        ),
        (json!(125.0), json!(1073741824.0))
    );
    assert_eq!(
        spec["limits"]["properties"]["connectionsPerIP"]["properties"]["perSecond"]["minimum"],
        1.0
    );
    assert_eq!(
        spec["tls"]["properties"]["mode"]["enum"],
        json!(["SelfSigned", "Secret", "CertManager"])
    );
    assert_eq!(
        spec["compression"]["enum"],
        json!(["Passthrough", "Disabled"])
    );
    let affinity = &spec["sessionAffinity"]["properties"];
    assert_eq!(affinity["type"]["enum"].as_array().unwrap().len(), 2);
    assert_eq!(affinity["timeoutSeconds"]["maximum"], 86400.0);
    let algorithms =
        &spec["auth"]["properties"]["jwt"]["properties"]["algorithms"]["items"]["enum"];
    assert!(!algorithms.as_array().unwrap().contains(&json!("none")));
    assert_eq!(
        spec["drain"]["properties"]["gracePeriodSeconds"]["maximum"],
        3600.0
    );
}

#[test]
fn defaults_fill_a_minimal_spec() {
    let schema = schema();
    let defaulted = kube::core::cel::apply_defaults(
        &schema,
        &with_spec(
            json!({"upstream": service_upstream(), "tls": {}, "autoscaling": {"maxReplicas": 3, "targetCPUUtilization": 60}}),
        ),
    );
    let wss: WebSocketService = serde_json::from_value(defaulted).unwrap();
    let spec = wss.spec;
    assert_eq!(spec.replicas, 2);
    assert_eq!(
        spec.listen,
        ListenSpec {
            port: 8080,
            path: "/".into(),
            proxy_protocol: None,
        }
    );
    assert_eq!(spec.limits, LimitsSpec::default());
    assert_eq!(spec.heartbeat, HeartbeatSpec::default());
    assert_eq!(spec.session_affinity.type_, AffinityType::ClientIP);
    assert_eq!(spec.session_affinity.timeout_seconds, 10800);
    assert_eq!(spec.drain.grace_period_seconds, 60);
    let tls = spec.tls.unwrap();
    assert_eq!(
        (tls.mode, tls.duration.as_str(), tls.renew_before.as_str()),
        (TlsMode::SelfSigned, "2160h", "360h")
    );
    let autoscaling = spec.autoscaling.unwrap();
    assert_eq!(
        (
            autoscaling.min_replicas,
            autoscaling.scale_down_stabilization_seconds
        ),
        (2, 300)
    );
}

#[test]
fn conditions_are_a_list_map_keyed_by_type() {
    let conditions = &schema()["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
}
