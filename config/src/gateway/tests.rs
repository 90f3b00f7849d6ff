use super::*;

const MINIMAL: &str = "upstream:\n  url: ws://127.0.0.1:9000/ws\n";

#[test]
fn minimal_config_takes_defaults() {
    let config = GatewayConfig::from_yaml(MINIMAL).unwrap();
    assert_eq!(
        config,
        GatewayConfig::for_upstream("ws://127.0.0.1:9000/ws")
    );
    assert_eq!(config.limits.max_connections, 10_000);
    assert_eq!(config.heartbeat, Some(HeartbeatConfig::default()));
}

#[test]
fn heartbeats_turned_off_stay_off_when_rendered() {
    // Found by the config fuzz target: `heartbeat: null` rendered without the key, which
    // loads back as the default heartbeat.
    let mut config = GatewayConfig::for_upstream("wss://chat.default.svc:8080/ws");
    config.heartbeat = None;
    let text = config.to_yaml();
    assert!(text.contains("heartbeat: null"), "{text}");
    assert_eq!(GatewayConfig::from_yaml(&text).unwrap().heartbeat, None);
}

#[test]
fn rendered_yaml_reads_back_identically() {
    let mut config = GatewayConfig::for_upstream("wss://chat.default.svc:8080/ws");
    config.limits.messages_per_connection = Some(Rate {
        per_second: 100,
        burst: 200,
    });
    config.auth.ip_deny = vec!["10.1.0.0/16".parse().unwrap()];
    config.drain.grace_period = Duration::from_secs(90);
    let text = config.to_yaml();
    assert!(text.contains("gracePeriod: 1m30s"), "{text}");
    assert_eq!(GatewayConfig::from_yaml(&text).unwrap(), config);
}

fn error_of(yaml: &str) -> ConfigError {
    GatewayConfig::from_yaml(yaml).unwrap_err()
}

#[test]
fn bad_upstream_scheme_names_the_field_and_value() {
    let err = error_of("upstream:\n  url: http://x:1/\n");
    assert_eq!(err.field, "upstream.url");
    assert!(err.message.contains("http://x:1/"), "{err}");
}

#[test]
fn listen_path_with_dot_segments_is_refused() {
    let err = error_of(&format!("{MINIMAL}listen: {{path: /ws/../admin}}\n"));
    assert_eq!(err.field, "listen.path");
    assert!(err.message.contains("/ws/../admin"), "{err}");
}

#[test]
fn utf8_validation_needs_compression_disabled() {
    let err = error_of(&format!("{MINIMAL}validation: {{utf8: true}}\n"));
    assert_eq!(err.field, "validation.utf8");
    let config = GatewayConfig::from_yaml(&format!(
        "{MINIMAL}validation: {{utf8: true}}\ncompression: Disabled\n"
    ))
    .unwrap();
    assert!(config.validation.utf8);
}

#[test]
fn allowed_subprotocols_are_tokens_and_not_token_carriers() {
    for bad in ["\"\"", "\"chat v2\"", "bearer.x", "\"a,b\""] {
        let err = error_of(&format!(
            "{MINIMAL}validation: {{allowedSubprotocols: [chat, {bad}]}}\n"
        ));
        assert_eq!(err.field, "validation.allowedSubprotocols[1]", "{bad}");
    }
}

#[test]
fn burst_below_rate_is_refused() {
    let err = error_of(&format!(
        "{MINIMAL}limits:\n  connectionsPerIP: {{perSecond: 10, burst: 5}}\n"
    ));
    assert_eq!(err.field, "limits.connectionsPerIP.burst");
}

#[test]
fn pending_handshakes_per_ip_defaults_to_32_and_is_bounded() {
    let config = GatewayConfig::from_yaml(MINIMAL).unwrap();
    assert_eq!(config.limits.pending_handshakes_per_ip, 32);
    for refused in [0, 100_001] {
        let err = error_of(&format!(
            "{MINIMAL}limits: {{pendingHandshakesPerIP: {refused}}}\n"
        ));
        assert_eq!(err.field, "limits.pendingHandshakesPerIP");
        assert!(err.message.contains(&refused.to_string()), "{err}");
    }
}

#[test]
fn connections_per_subject_needs_jwt_and_at_least_one() {
    let jwt = "auth:\n  jwt: {algorithms: [HS256], keyFile: /k}\n";
    let err = error_of(&format!("{MINIMAL}limits: {{connectionsPerSubject: 3}}\n"));
    assert_eq!(err.field, "limits.connectionsPerSubject");
    assert!(err.message.contains("auth.jwt"), "{err}");
    let err = error_of(&format!(
        "{MINIMAL}{jwt}limits: {{connectionsPerSubject: 0}}\n"
    ));
    assert_eq!(err.field, "limits.connectionsPerSubject");
    let config = GatewayConfig::from_yaml(&format!(
        "{MINIMAL}{jwt}limits: {{connectionsPerSubject: 3}}\n"
    ))
    .unwrap();
    assert_eq!(config.limits.connections_per_subject, Some(3));
    assert_eq!(config.auth.jwt.as_ref().unwrap().subject_claim, "sub");
    assert_eq!(GatewayConfig::from_yaml(&config.to_yaml()).unwrap(), config);
}

#[test]
fn mixed_jwt_key_families_are_refused() {
    let err = error_of(&format!(
        "{MINIMAL}auth:\n  jwt: {{algorithms: [HS256, RS256], keyFile: /k}}\n"
    ));
    assert_eq!(err.field, "auth.jwt.algorithms");
}

#[test]
fn jwt_keys_come_from_exactly_one_source() {
    let jwt = |fields: &str| format!("{MINIMAL}auth:\n  jwt: {{algorithms: [RS256]{fields}}}\n");
    assert_eq!(error_of(&jwt("")).field, "auth.jwt");
    assert_eq!(
        error_of(&jwt(", keyFile: /k, jwks: {url: https://id.test/keys}")).field,
        "auth.jwt"
    );
    assert_eq!(
        error_of(&jwt(", jwks: {url: https://id.test/keys, discovery: true}")).field,
        "auth.jwt.jwks"
    );
    assert_eq!(
        error_of(&jwt(", jwks: {url: ftp://id.test/keys}")).field,
        "auth.jwt.jwks.url"
    );
    assert_eq!(
        error_of(&jwt(", jwks: {discovery: true}")).field,
        "auth.jwt.issuer"
    );
    assert_eq!(
        error_of(&jwt(
            ", jwks: {url: https://id.test/keys, refreshInterval: 10s, minRefreshInterval: 1m}"
        ))
        .field,
        "auth.jwt.jwks.minRefreshInterval"
    );
    let hmac = format!(
        "{MINIMAL}auth:\n  jwt: {{algorithms: [HS256], jwks: {{url: https://id.test/keys}}}}\n"
    );
    assert_eq!(error_of(&hmac).field, "auth.jwt.algorithms");
}

#[test]
fn jwks_settings_take_defaults_and_read_back() {
    let config = GatewayConfig::from_yaml(&format!(
        "{MINIMAL}auth:\n  jwt:\n    issuer: https://id.test/realms/chat\n    algorithms: [ES256]\n    jwks: {{discovery: true, caFile: /ca.pem}}\n"
    ))
    .unwrap();
    let jwks = config.auth.jwt.as_ref().unwrap().jwks.as_ref().unwrap();
    assert_eq!(jwks.refresh_interval, Duration::from_secs(300));
    assert_eq!(jwks.min_refresh_interval, Duration::from_secs(30));
    assert_eq!(GatewayConfig::from_yaml(&config.to_yaml()).unwrap(), config);
}

#[test]
fn unknown_fields_and_none_algorithm_are_refused() {
    assert!(
        error_of(&format!("{MINIMAL}colour: blue\n"))
            .message
            .contains("colour")
    );
    let err = error_of(&format!(
        "{MINIMAL}auth:\n  jwt: {{algorithms: [none], keyFile: /k}}\n"
    ));
    assert!(err.message.contains("none"), "{err}");
}

#[test]
fn bad_duration_and_cidr_name_the_value() {
    let err = error_of(&format!("{MINIMAL}drain: {{gracePeriod: soon}}\n"));
    assert!(err.message.contains("soon"), "{err}");
    let err = error_of(&format!("{MINIMAL}auth: {{ipAllow: [10.0.0.0/33]}}\n"));
    assert!(
        err.message.contains("10.0.0.0/33") || err.message.contains("invalid"),
        "{err}"
    );
}

#[test]
fn proxy_protocol_needs_trusted_proxies_and_a_timeout() {
    let config = GatewayConfig::from_yaml(&format!(
        "{MINIMAL}listen:\n  proxyProtocol: {{trustedProxies: [10.0.0.0/8]}}\n"
    ))
    .unwrap();
    let proxy_protocol = config.listen.proxy_protocol.unwrap();
    assert_eq!(proxy_protocol.header_timeout, Duration::from_secs(5));
    let err = error_of(&format!(
        "{MINIMAL}listen:\n  proxyProtocol: {{trustedProxies: []}}\n"
    ));
    assert_eq!(err.field, "listen.proxyProtocol.trustedProxies");
    let err = error_of(&format!(
        "{MINIMAL}listen:\n  proxyProtocol: {{trustedProxies: [10.0.0.0/8], headerTimeout: 0s}}\n"
    ));
    assert_eq!(err.field, "listen.proxyProtocol.headerTimeout");
}

#[test]
fn tcp_options_are_bounded_and_left_out_when_default() {
    assert!(
        !GatewayConfig::for_upstream("ws://b:1/")
            .to_yaml()
            .contains("tcp")
    );
    let config = GatewayConfig::from_yaml(&format!(
        "{MINIMAL}tcp:\n  noDelay: false\n  keepalive: {{idle: 1m, interval: 10s, count: 5}}\n  sendBufferBytes: 65536\n"
    ))
    .unwrap();
    assert_eq!(
        config.tcp.keepalive.map(|k| (k.idle, k.count)),
        Some((Duration::from_secs(60), 5))
    );
    assert_eq!(config.tcp.listen_backlog, 4096, "the default");
    assert_eq!(GatewayConfig::from_yaml(&config.to_yaml()).unwrap(), config);
    for (tcp, field) in [
        (
            "keepalive: {idle: 1500ms, interval: 10s, count: 5}",
            "tcp.keepalive.idle",
        ),
        (
            "keepalive: {idle: 1m, interval: 10h, count: 5}",
            "tcp.keepalive.interval",
        ),
        (
            "keepalive: {idle: 1m, interval: 10s, count: 0}",
            "tcp.keepalive.count",
        ),
        ("receiveBufferBytes: 100", "tcp.receiveBufferBytes"),
        ("listenBacklog: 0", "tcp.listenBacklog"),
        ("listenBacklog: 65536", "tcp.listenBacklog"),
    ] {
        assert_eq!(error_of(&format!("{MINIMAL}tcp: {{{tcp}}}\n")).field, field);
    }
}

#[test]
fn access_log_defaults_and_sampling() {
    let config =
        GatewayConfig::from_yaml(&format!("{MINIMAL}accessLog: {{enabled: true}}\n")).unwrap();
    assert_eq!(
        config.access_log,
        AccessLogConfig {
            enabled: true,
            sample_one_in: 1,
            refusals: true,
        }
    );
    assert_eq!(GatewayConfig::from_yaml(&config.to_yaml()).unwrap(), config);
    assert!(
        !GatewayConfig::for_upstream("ws://b:1/")
            .to_yaml()
            .contains("accessLog")
    );
    let err = error_of(&format!(
        "{MINIMAL}accessLog: {{enabled: true, sampleOneIn: 0}}\n"
    ));
    assert_eq!(err.field, "accessLog.sampleOneIn");
}

#[test]
fn compression_speaks_the_crds_words() {
    let config = GatewayConfig::from_yaml(&format!("{MINIMAL}compression: Disabled\n")).unwrap();
    assert_eq!(config.compression, Compression::Disabled);
    let err = error_of(&format!("{MINIMAL}compression: Off\n"));
    assert!(
        err.message.contains("Off") && err.message.contains("Disabled"),
        "{err}"
    );
}

#[test]
fn durations_format_without_spaces() {
    assert_eq!(
        duration_text::format(Duration::from_secs(2160 * 3600)),
        "2160h"
    );
    assert_eq!(
        duration_text::format(Duration::from_millis(1500)),
        "1s500ms"
    );
    assert_eq!(
        duration_text::parse("2160h").unwrap(),
        Duration::from_secs(2160 * 3600)
    );
}
