//! Rendering the gateway config from the spec: every field converted and checked, errors
//! naming the spec field.

use super::*;

/// The gateway config for `spec`, built from the shared type (never from YAML text).
pub fn render_gateway_config(
    spec: &WebSocketServiceSpec,
    names: &ChildNames,
) -> Result<GatewayConfig, InvalidSpec> {
    let mut config = GatewayConfig::for_upstream(upstream_url(spec, names)?);
    config.listen.address = ([0, 0, 0, 0], port("spec.listen.port", spec.listen.port)?).into();
    config.listen.path = spec.listen.path.clone();
    config.listen.proxy_protocol = spec
        .listen
        .proxy_protocol
        .as_ref()
        .map(render_proxy_protocol)
        .transpose()?;
    config.metrics.address = ([0, 0, 0, 0], names::METRICS_PORT as u16).into();
    config.tls = spec.tls.as_ref().map(|_| TlsConfig {
        cert_file: PathBuf::from(names::TLS_DIR).join("tls.crt"),
        key_file: PathBuf::from(names::TLS_DIR).join("tls.key"),
    });
    if let Some(auth) = &spec.auth {
        config.auth = gw::AuthConfig {
            jwt: auth.jwt.as_ref().map(render_jwt).transpose()?,
            allowed_origins: auth.allowed_origins.clone().unwrap_or_default(),
            ip_allow: parse_cidrs("spec.auth.ipAllow", list(&auth.ip_allow))?,
            ip_deny: parse_cidrs("spec.auth.ipDeny", list(&auth.ip_deny))?,
            trusted_proxies: parse_cidrs("spec.auth.trustedProxies", list(&auth.trusted_proxies))?,
        };
    }
    let limits = &spec.limits;
    config.limits.max_connections = u32::try_from(limits.max_connections).map_err(|_| {
        InvalidSpec::new(
            "spec.limits.maxConnections",
            format!("must be positive, got {}", limits.max_connections),
        )
    })?;
    config.limits.connections_per_ip = limits
        .connections_per_ip
        .map(|rate| render_rate("spec.limits.connectionsPerIP", rate))
        .transpose()?;
    config.limits.pending_handshakes_per_ip = u32::try_from(limits.pending_handshakes_per_ip)
        .map_err(|_| {
            InvalidSpec::new(
                "spec.limits.pendingHandshakesPerIP",
                format!("must be positive, got {}", limits.pending_handshakes_per_ip),
            )
        })?;
    config.limits.connections_per_subject = limits
        .connections_per_subject
        .map(|limit| {
            u32::try_from(limit).map_err(|_| {
                InvalidSpec::new(
                    "spec.limits.connectionsPerSubject",
                    format!("must be positive, got {limit}"),
                )
            })
        })
        .transpose()?;
    config.limits.messages_per_connection = limits
        .messages_per_connection
        .map(|rate| render_rate("spec.limits.messagesPerConnection", rate))
        .transpose()?;
    config.limits.max_message_bytes = u64::try_from(limits.max_message_bytes).map_err(|_| {
        InvalidSpec::new(
            "spec.limits.maxMessageBytes",
            format!("must be positive, got {}", limits.max_message_bytes),
        )
    })?;
    config.heartbeat = Some(HeartbeatConfig {
        interval: parse_duration("spec.heartbeat.interval", &spec.heartbeat.interval)?,
        timeout: parse_duration("spec.heartbeat.timeout", &spec.heartbeat.timeout)?,
    });
    config.compression = match spec.compression {
        crd::Compression::Passthrough => gw::Compression::Passthrough,
        crd::Compression::Disabled => gw::Compression::Disabled,
    };
    config.validation = gw::ValidationConfig {
        utf8: spec.validation.utf8,
        allowed_subprotocols: spec
            .validation
            .allowed_subprotocols
            .clone()
            .unwrap_or_default(),
    };
    config.drain.grace_period = Duration::from_secs(drain_seconds(spec));
    if let Some(tcp) = &spec.tcp {
        config.tcp = render_tcp(tcp)?;
    }
    if let Some(access_log) = &spec.access_log {
        config.access_log = gw::AccessLogConfig {
            enabled: access_log.enabled,
            sample_one_in: u32::try_from(access_log.sample_one_in).map_err(|_| {
                InvalidSpec::new(
                    "spec.accessLog.sampleOneIn",
                    format!("must be positive, got {}", access_log.sample_one_in),
                )
            })?,
            refusals: access_log.refusals,
        };
    }
    Ok(config)
}

/// `spec.drain.gracePeriodSeconds`, never negative.
pub fn drain_seconds(spec: &WebSocketServiceSpec) -> u64 {
    u64::try_from(spec.drain.grace_period_seconds).unwrap_or(0)
}

pub(super) fn upstream_url(
    spec: &WebSocketServiceSpec,
    names: &ChildNames,
) -> Result<String, InvalidSpec> {
    let upstream = &spec.upstream;
    match (&upstream.service, &upstream.url) {
        (Some(service), None) => {
            let port = upstream.port.ok_or_else(|| {
                InvalidSpec::new("spec.upstream.port", "is required with upstream.service")
            })?;
            let port = self::port("spec.upstream.port", port)?;
            let path = upstream.path.as_deref().unwrap_or("/");
            if !path.starts_with('/') {
                return Err(InvalidSpec::new(
                    "spec.upstream.path",
                    format!("must start with '/', got {path:?}"),
                ));
            }
            Ok(format!(
                "ws://{service}.{}.svc:{port}{path}",
                names.namespace
            ))
        }
        (None, Some(url)) => Ok(url.clone()),
        _ => Err(InvalidSpec::new(
            "spec.upstream",
            "set exactly one of upstream.service or upstream.url",
        )),
    }
}

pub(super) fn render_tcp(tcp: &crd::TcpSpec) -> Result<gw::TcpConfig, InvalidSpec> {
    let positive = |field: &str, value: Option<i32>| {
        value
            .map(|value| {
                u32::try_from(value)
                    .map_err(|_| InvalidSpec::new(field, format!("must be positive, got {value}")))
            })
            .transpose()
    };
    Ok(gw::TcpConfig {
        no_delay: tcp.no_delay,
        keepalive: tcp
            .keepalive
            .as_ref()
            .map(|keepalive| {
                Ok::<_, InvalidSpec>(gw::KeepaliveConfig {
                    idle: parse_duration("spec.tcp.keepalive.idle", &keepalive.idle)?,
                    interval: parse_duration("spec.tcp.keepalive.interval", &keepalive.interval)?,
                    count: u32::try_from(keepalive.count).map_err(|_| {
                        InvalidSpec::new(
                            "spec.tcp.keepalive.count",
                            format!("must be positive, got {}", keepalive.count),
                        )
                    })?,
                })
            })
            .transpose()?,
        send_buffer_bytes: positive("spec.tcp.sendBufferBytes", tcp.send_buffer_bytes)?,
        receive_buffer_bytes: positive("spec.tcp.receiveBufferBytes", tcp.receive_buffer_bytes)?,
        listen_backlog: positive("spec.tcp.listenBacklog", tcp.listen_backlog)?
            .unwrap_or_else(|| gw::TcpConfig::default().listen_backlog),
    })
}

pub(super) fn render_proxy_protocol(
    proxy_protocol: &crd::ProxyProtocolSpec,
) -> Result<gw::ProxyProtocolConfig, InvalidSpec> {
    Ok(gw::ProxyProtocolConfig {
        trusted_proxies: parse_cidrs(
            "spec.listen.proxyProtocol.trustedProxies",
            &proxy_protocol.trusted_proxies,
        )?,
        header_timeout: parse_duration(
            "spec.listen.proxyProtocol.headerTimeout",
            &proxy_protocol.header_timeout,
        )?,
    })
}

pub(super) fn render_jwt(jwt: &crd::JwtSpec) -> Result<JwtConfig, InvalidSpec> {
    Ok(JwtConfig {
        issuer: jwt.issuer.clone(),
        audiences: jwt.audiences.clone().unwrap_or_default(),
        algorithms: jwt
            .algorithms
            .iter()
            .map(|alg| render_algorithm(*alg))
            .collect(),
        key_file: jwt
            .key_secret_ref
            .as_ref()
            .map(|key| PathBuf::from(names::JWT_DIR).join(&key.key)),
        jwks: jwt.jwks.as_ref().map(render_jwks).transpose()?,
        token_from: jwt
            .token_from
            .iter()
            .map(|source| match source {
                crd::TokenSource::Header => gw::TokenSource::Header,
                crd::TokenSource::Query => gw::TokenSource::Query,
                crd::TokenSource::Subprotocol => gw::TokenSource::Subprotocol,
            })
            .collect(),
        query_parameter: jwt.query_parameter.clone(),
        subject_claim: jwt.subject_claim.clone(),
        forward_claims: jwt
            .forward_claims
            .iter()
            .flatten()
            .map(|forwarded| gw::ForwardedClaim {
                claim: forwarded.claim.clone(),
                header: forwarded.header.clone(),
            })
            .collect(),
        // Zero is a valid leeway, so only the shape is checked.
        leeway: is_go_duration(&jwt.leeway)
            .then(|| duration_text::parse(&jwt.leeway).ok())
            .flatten()
            .ok_or_else(|| {
                InvalidSpec::new(
                    "spec.auth.jwt.leeway",
                    format!(
                        "must be a duration in h, m, s or ms such as 30s, got {:?}",
                        jwt.leeway
                    ),
                )
            })?,
    })
}

pub(super) fn render_jwks(jwks: &crd::JwksSpec) -> Result<gw::JwksConfig, InvalidSpec> {
    Ok(gw::JwksConfig {
        url: jwks.url.clone(),
        discovery: jwks.discovery.unwrap_or(false),
        ca_file: jwks
            .ca_secret_ref
            .as_ref()
            .map(|ca| PathBuf::from(names::JWKS_CA_DIR).join(&ca.key)),
        refresh_interval: parse_duration(
            "spec.auth.jwt.jwks.refreshInterval",
            &jwks.refresh_interval,
        )?,
        min_refresh_interval: parse_duration(
            "spec.auth.jwt.jwks.minRefreshInterval",
            &jwks.min_refresh_interval,
        )?,
    })
}

pub(super) fn render_algorithm(alg: crd::JwtAlgorithm) -> gw::JwtAlgorithm {
    use crd::JwtAlgorithm as A;
    match alg {
        A::HS256 => gw::JwtAlgorithm::HS256,
        A::HS384 => gw::JwtAlgorithm::HS384,
        A::HS512 => gw::JwtAlgorithm::HS512,
        A::RS256 => gw::JwtAlgorithm::RS256,
        A::RS384 => gw::JwtAlgorithm::RS384,
        A::RS512 => gw::JwtAlgorithm::RS512,
        A::PS256 => gw::JwtAlgorithm::PS256,
        A::PS384 => gw::JwtAlgorithm::PS384,
        A::PS512 => gw::JwtAlgorithm::PS512,
        A::ES256 => gw::JwtAlgorithm::ES256,
        A::ES384 => gw::JwtAlgorithm::ES384,
    }
}

pub(super) fn render_rate(field: &str, rate: crd::RateSpec) -> Result<gw::Rate, InvalidSpec> {
    let positive = |name: &str, value: i32| {
        u32::try_from(value)
            .ok()
            .filter(|value| *value > 0)
            .ok_or_else(|| {
                InvalidSpec::new(
                    format!("{field}.{name}"),
                    format!("must be at least 1, got {value}"),
                )
            })
    };
    Ok(gw::Rate {
        per_second: positive("perSecond", rate.per_second)?,
        burst: positive("burst", rate.burst)?,
    })
}

pub(super) fn parse_duration(field: &str, text: &str) -> Result<Duration, InvalidSpec> {
    if !is_go_duration(text) {
        return Err(InvalidSpec::new(
            field,
            format!(
                "must be a duration in h, m, s or ms such as 30s, 1h30m or 250ms, got {text:?}"
            ),
        ));
    }
    let value = duration_text::parse(text).map_err(|message| InvalidSpec::new(field, message))?;
    if value.is_zero() {
        return Err(InvalidSpec::new(
            field,
            format!("must be longer than 0s, got {text:?}"),
        ));
    }
    Ok(value)
}

/// The shape the CRD's CEL rules accept (`^([0-9]+(ms|s|m|h))+$`), stricter than the
/// gateway's parser, which also reads `90 days` and `500us`. An object stored under an older
/// schema may hold `us` or `ns`; the gateway config keeps whole milliseconds only.
pub(super) fn is_go_duration(text: &str) -> bool {
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["ms", "s", "m", "h"]
            .iter()
            .find(|unit| rest.starts_with(*unit))
        else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    !text.is_empty()
}

/// An optional list of the spec, absent read as empty.
pub(super) fn list(items: &Option<Vec<String>>) -> &[String] {
    items.as_deref().unwrap_or_default()
}

pub(super) fn parse_cidrs(field: &str, cidrs: &[String]) -> Result<Vec<IpNet>, InvalidSpec> {
    cidrs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            text.parse().map_err(|_| {
                InvalidSpec::new(
                    format!("{field}[{index}]"),
                    format!("must be a CIDR such as 10.0.0.0/8, got {text:?}"),
                )
            })
        })
        .collect()
}

pub(super) fn port(field: &str, value: i32) -> Result<u16, InvalidSpec> {
    u16::try_from(value)
        .ok()
        .filter(|port| *port > 0)
        .ok_or_else(|| InvalidSpec::new(field, format!("must be a port 1-65535, got {value}")))
}
