//! The validate step: turns a WebSocketService into a [`Plan`] the builders can use without
//! failing, or an [`InvalidSpec`] naming the field. The CRD schema refuses most bad specs
//! already; this catches what CEL cannot express and objects stored under an older schema.

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::ResourceRequirements;
use wsfleet_config::{
    self as gw, GatewayConfig, HeartbeatConfig, JwtConfig, TlsConfig, duration_text,
};

use crate::crd::{self, IssuerRef, SecretKeyRef, TlsMode, WebSocketService, WebSocketServiceSpec};
use crate::error::InvalidSpec;
use crate::names::{self, ChildNames};
use crate::quantity::stored_resources;

/// Everything the build step needs, already checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub names: ChildNames,
    /// The config every gateway pod of this fleet runs.
    pub gateway_config: GatewayConfig,
    pub tls: Option<TlsPlan>,
    /// The upstream Service in the same namespace, when the upstream is given as one.
    pub upstream_service: Option<String>,
    pub jwt_key: Option<SecretKeyRef>,
    /// The CA bundle for an `https://` identity provider's certificate.
    pub jwks_ca: Option<SecretKeyRef>,
    /// `spec.resources` as the apiserver stores it (`0.5` as `500m`), so that the built
    /// Deployment matches the stored one and an unchanged spec applies nothing.
    pub resources: Option<ResourceRequirements>,
}

/// The serving certificate to provide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPlan {
    pub mode: TlsMode,
    pub secret_name: String,
    /// SelfSigned and CertManager: `spec.tls.dnsNames` followed by the Service's cluster
    /// names, without repeats.
    pub dns_names: Vec<String>,
    pub duration: Duration,
    pub renew_before: Duration,
    /// CertManager: the issuer named in `spec.tls.issuerRef`.
    pub issuer_ref: Option<IssuerRef>,
}

/// Checks `wss` and derives its [`Plan`].
pub fn plan(wss: &WebSocketService) -> Result<Plan, InvalidSpec> {
    let names = ChildNames::of(wss);
    let spec = &wss.spec;
    let tls = spec
        .tls
        .as_ref()
        .map(|tls| plan_tls(tls, &names))
        .transpose()?;
    let gateway_config = render_gateway_config(spec, &names)?;
    gateway_config.validate()?;
    check_service_exposure(&spec.service)?;
    let resources = spec.resources.as_ref().map(stored_resources).transpose()?;
    let jwt = spec.auth.as_ref().and_then(|auth| auth.jwt.as_ref());
    Ok(Plan {
        upstream_service: spec.upstream.service.clone(),
        jwt_key: jwt.and_then(|jwt| jwt.key_secret_ref.clone()),
        jwks_ca: jwt
            .and_then(|jwt| jwt.jwks.as_ref())
            .and_then(|jwks| jwks.ca_secret_ref.clone()),
        names,
        gateway_config,
        tls,
        resources,
    })
}

fn plan_tls(tls: &crd::TlsSpec, names: &ChildNames) -> Result<TlsPlan, InvalidSpec> {
    let duration = parse_duration("spec.tls.duration", &tls.duration)?;
    let renew_before = parse_duration("spec.tls.renewBefore", &tls.renew_before)?;
    if renew_before >= duration {
        return Err(InvalidSpec::new(
            "spec.tls.renewBefore",
            format!(
                "must be shorter than tls.duration ({}), got {}",
                tls.duration, tls.renew_before
            ),
        ));
    }
    match (tls.mode, &tls.issuer_ref) {
        (TlsMode::CertManager, None) => {
            return Err(InvalidSpec::new(
                "spec.tls.issuerRef",
                "is required when tls.mode is CertManager",
            ));
        }
        (TlsMode::SelfSigned | TlsMode::Secret, Some(_)) => {
            return Err(InvalidSpec::new(
                "spec.tls.issuerRef",
                "is allowed only when tls.mode is CertManager",
            ));
        }
        _ => {}
    }
    let secret_name = tls_secret_name(tls, names).ok_or_else(|| {
        InvalidSpec::new("spec.tls.secretName", "is required when tls.mode is Secret")
    })?;
    let mut dns_names: Vec<String> = Vec::new();
    let requested = tls.dns_names.iter().flatten().cloned();
    for name in requested.chain(names.service_dns_names()) {
        if !dns_names.contains(&name) {
            dns_names.push(name);
        }
    }
    Ok(TlsPlan {
        mode: tls.mode,
        secret_name,
        dns_names,
        duration,
        renew_before,
        issuer_ref: tls.issuer_ref.clone(),
    })
}

/// What the schema's rules on `spec.service` say, for objects stored before them.
fn check_service_exposure(exposure: &crd::ServiceExposureSpec) -> Result<(), InvalidSpec> {
    let only_for = |field: &str, set: bool, allowed: bool, types: &str| {
        if set && !allowed {
            Err(InvalidSpec::new(
                format!("spec.service.{field}"),
                format!("applies only to service.type {types}"),
            ))
        } else {
            Ok(())
        }
    };
    let load_balancer = exposure.type_ == crd::ServiceType::LoadBalancer;
    only_for(
        "externalTrafficPolicy",
        exposure.external_traffic_policy.is_some(),
        exposure.type_ != crd::ServiceType::ClusterIP,
        "NodePort or LoadBalancer",
    )?;
    only_for(
        "loadBalancerSourceRanges",
        exposure.load_balancer_source_ranges.is_some(),
        load_balancer,
        "LoadBalancer",
    )?;
    only_for(
        "loadBalancerClass",
        exposure.load_balancer_class.is_some(),
        load_balancer,
        "LoadBalancer",
    )?;
    parse_cidrs(
        "spec.service.loadBalancerSourceRanges",
        list(&exposure.load_balancer_source_ranges),
    )?;
    Ok(())
}

/// The Secret holding the serving certificate: `tls.secretName`, by default `<name>-tls` for
/// SelfSigned and CertManager; `None` when `tls.mode` is Secret and no name is given.
pub fn tls_secret_name(tls: &crd::TlsSpec, names: &ChildNames) -> Option<String> {
    match (tls.mode, &tls.secret_name) {
        (_, Some(name)) => Some(name.clone()),
        (TlsMode::SelfSigned | TlsMode::CertManager, None) => Some(names.default_tls_secret()),
        (TlsMode::Secret, None) => None,
    }
}

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

fn upstream_url(spec: &WebSocketServiceSpec, names: &ChildNames) -> Result<String, InvalidSpec> {
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

fn render_tcp(tcp: &crd::TcpSpec) -> Result<gw::TcpConfig, InvalidSpec> {
    let bytes = |field: &str, value: Option<i32>| {
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
        send_buffer_bytes: bytes("spec.tcp.sendBufferBytes", tcp.send_buffer_bytes)?,
        receive_buffer_bytes: bytes("spec.tcp.receiveBufferBytes", tcp.receive_buffer_bytes)?,
    })
}

fn render_proxy_protocol(
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

fn render_jwt(jwt: &crd::JwtSpec) -> Result<JwtConfig, InvalidSpec> {
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

fn render_jwks(jwks: &crd::JwksSpec) -> Result<gw::JwksConfig, InvalidSpec> {
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

fn render_algorithm(alg: crd::JwtAlgorithm) -> gw::JwtAlgorithm {
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

fn render_rate(field: &str, rate: crd::RateSpec) -> Result<gw::Rate, InvalidSpec> {
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

fn parse_duration(field: &str, text: &str) -> Result<Duration, InvalidSpec> {
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
fn is_go_duration(text: &str) -> bool {
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
fn list(items: &Option<Vec<String>>) -> &[String] {
    items.as_deref().unwrap_or_default()
}

fn parse_cidrs(field: &str, cidrs: &[String]) -> Result<Vec<IpNet>, InvalidSpec> {
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

fn port(field: &str, value: i32) -> Result<u16, InvalidSpec> {
    u16::try_from(value)
        .ok()
        .filter(|port| *port > 0)
        .ok_or_else(|| InvalidSpec::new(field, format!("must be a port 1-65535, got {value}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{example, wss};

    fn refused(mutate: impl FnOnce(&mut WebSocketService)) -> InvalidSpec {
        let mut object = example("production.yaml");
        mutate(&mut object);
        plan(&object).expect_err("spec must be refused")
    }

    #[test]
    fn every_example_plans() {
        for file in [
            "minimal.yaml",
            "production.yaml",
            "user-tls.yaml",
            "hpa-cpu.yaml",
            "aws-nlb-proxy-protocol.yaml",
            "gke-passthrough.yaml",
        ] {
            plan(&example(file)).unwrap_or_else(|err| panic!("{file}: {err}"));
        }
    }

    #[test]
    fn self_signed_names_add_the_service_names_once() {
        let mut object = example("production.yaml");
        object.spec.tls.as_mut().unwrap().dns_names = Some(vec![
            "chat.example.com".into(),
            "chat-prod.team-a.svc".into(),
        ]);
        let tls = plan(&object).unwrap().tls.unwrap();
        assert_eq!(
            tls.dns_names,
            [
                "chat.example.com",
                "chat-prod.team-a.svc",
                "chat-prod",
                "chat-prod.team-a",
                "chat-prod.team-a.svc.cluster.local"
            ]
        );
        assert_eq!(tls.duration, Duration::from_secs(2160 * 3600));
        assert_eq!(tls.renew_before, Duration::from_secs(360 * 3600));
        assert_eq!(tls.secret_name, "chat-prod-tls");
    }

    #[test]
    fn self_signed_secret_name_defaults_to_name_tls() {
        let object =
            wss("metadata: {name: edge}\nspec:\n  upstream: {url: 'ws://b:1/'}\n  tls: {}\n");
        let tls = plan(&object).unwrap().tls.unwrap();
        assert_eq!(
            (tls.mode, tls.secret_name.as_str()),
            (TlsMode::SelfSigned, "edge-tls")
        );
    }

    #[test]
    fn references_are_collected() {
        let planned = plan(&example("production.yaml")).unwrap();
        assert_eq!(planned.upstream_service.as_deref(), Some("chat-backend"));
        let key = planned.jwt_key.unwrap();
        assert_eq!(
            (key.name.as_str(), key.key.as_str()),
            ("chat-jwt", "public.pem")
        );
        assert_eq!(
            plan(&example("hpa-cpu.yaml")).unwrap().upstream_service,
            None
        );
    }

    #[test]
    fn provider_keys_render_with_their_ca_mounted() {
        let planned = plan(&example("oidc-jwks.yaml")).unwrap();
        assert_eq!(planned.jwt_key, None);
        let ca = planned.jwks_ca.unwrap();
        assert_eq!(
            (ca.name.as_str(), ca.key.as_str()),
            ("id-example-ca", "ca.crt")
        );
        let jwt = planned.gateway_config.auth.jwt.unwrap();
        assert_eq!(jwt.key_file, None);
        assert_eq!(
            jwt.jwks,
            Some(gw::JwksConfig {
                url: None,
                discovery: true,
                ca_file: Some(PathBuf::from("/etc/wsfleet/jwks-ca/ca.crt")),
                refresh_interval: Duration::from_secs(300),
                min_refresh_interval: Duration::from_secs(30),
            })
        );
    }

    #[test]
    fn provider_key_intervals_are_checked_by_the_gateways_rules() {
        let with_jwks = |edit: fn(&mut crd::JwksSpec)| {
            let mut object = example("oidc-jwks.yaml");
            let jwt = object.spec.auth.as_mut().unwrap().jwt.as_mut().unwrap();
            edit(jwt.jwks.as_mut().unwrap());
            plan(&object).unwrap_err()
        };
        let err = with_jwks(|jwks| jwks.min_refresh_interval = "10m".into());
        assert_eq!(err.field, "spec.auth.jwt.jwks.minRefreshInterval");
        let err = with_jwks(|jwks| jwks.refresh_interval = "soon".into());
        assert_eq!(err.field, "spec.auth.jwt.jwks.refreshInterval");
    }

    #[test]
    fn bad_durations_name_the_field() {
        let err = refused(|o| o.spec.tls.as_mut().unwrap().duration = "90 days".into());
        assert_eq!(err.field, "spec.tls.duration");
        let err = refused(|o| o.spec.tls.as_mut().unwrap().renew_before = "0s".into());
        assert_eq!(err.field, "spec.tls.renewBefore");
        let err = refused(|o| o.spec.tls.as_mut().unwrap().renew_before = "2160h".into());
        assert_eq!(err.field, "spec.tls.renewBefore");
        assert!(err.message.contains("shorter than"), "{err}");
        let err = refused(|o| o.spec.heartbeat.timeout = "soon".into());
        assert_eq!(err.field, "spec.heartbeat.timeout");
        assert!(err.message.contains("soon"));
    }

    #[test]
    fn sub_millisecond_durations_from_an_older_schema_name_the_field() {
        let err = refused(|o| o.spec.heartbeat.interval = "500us".into());
        assert_eq!(err.field, "spec.heartbeat.interval");
        assert!(err.message.contains("500us"), "{err}");
        let err = refused(|o| o.spec.heartbeat.timeout = "1500us".into());
        assert_eq!(err.field, "spec.heartbeat.timeout");
        let err = refused(|o| {
            o.spec.auth.as_mut().unwrap().jwt.as_mut().unwrap().leeway = "1000000ns".into()
        });
        assert_eq!(err.field, "spec.auth.jwt.leeway");
    }

    #[test]
    fn durations_take_the_go_shape_only() {
        for good in ["30s", "1h30m", "2160h", "250ms", "1m0s"] {
            assert!(is_go_duration(good), "{good}");
        }
        for bad in [
            "", "30", "s", "90 days", "1.5h", "-1h", "1h 30m", "1d", "500us", "1s1ns",
        ] {
            assert!(!is_go_duration(bad), "{bad}");
        }
    }

    #[test]
    fn secret_mode_without_a_name_is_refused() {
        let err = refused(|o| {
            let tls = o.spec.tls.as_mut().unwrap();
            tls.mode = TlsMode::Secret;
            tls.secret_name = None;
        });
        assert_eq!(err.field, "spec.tls.secretName");
    }

    #[test]
    fn malformed_cidrs_name_the_entry() {
        let err = refused(|o| {
            o.spec.auth.as_mut().unwrap().ip_deny =
                Some(vec!["10.0.0.0/8".into(), "10.0.0.0/33".into()]);
        });
        assert_eq!(err.field, "spec.auth.ipDeny[1]");
        assert!(err.message.contains("10.0.0.0/33"));
    }

    #[test]
    fn proxy_protocol_is_rendered_and_checked() {
        let object = wss(
            "metadata: {name: edge}\nspec:\n  upstream: {url: 'ws://b:1/'}\n  \
             listen: {proxyProtocol: {trustedProxies: [10.0.0.0/16], headerTimeout: 2s}}\n",
        );
        let rendered = plan(&object).unwrap().gateway_config.listen.proxy_protocol;
        assert_eq!(
            rendered,
            Some(gw::ProxyProtocolConfig {
                trusted_proxies: vec!["10.0.0.0/16".parse().unwrap()],
                header_timeout: Duration::from_secs(2),
            })
        );
        assert_eq!(
            plan(&example("minimal.yaml"))
                .unwrap()
                .gateway_config
                .listen
                .proxy_protocol,
            None
        );
        let proxy_protocol = |trusted: &[&str], timeout: &str| {
            let trusted = trusted.iter().map(|net| net.to_string()).collect();
            let timeout = timeout.to_owned();
            move |o: &mut WebSocketService| {
                o.spec.listen.proxy_protocol = Some(crd::ProxyProtocolSpec {
                    trusted_proxies: trusted,
                    header_timeout: timeout,
                });
            }
        };
        let err = refused(proxy_protocol(&["10.0.0.0/8", "nope"], "5s"));
        assert_eq!(err.field, "spec.listen.proxyProtocol.trustedProxies[1]");
        let err = refused(proxy_protocol(&["10.0.0.0/8"], "0s"));
        assert_eq!(err.field, "spec.listen.proxyProtocol.headerTimeout");
        // An object stored before the schema's minimum still meets the gateway's check.
        let err = refused(proxy_protocol(&[], "5s"));
        assert_eq!(err.field, "spec.listen.proxyProtocol.trustedProxies");
    }

    #[test]
    fn service_exposure_is_checked_against_its_type() {
        let err = refused(|o| {
            o.spec.service.external_traffic_policy = Some(crd::ExternalTrafficPolicy::Local);
        });
        assert_eq!(err.field, "spec.service.externalTrafficPolicy");
        let err = refused(|o| {
            o.spec.service.type_ = crd::ServiceType::NodePort;
            o.spec.service.load_balancer_class = Some("x".into());
        });
        assert_eq!(err.field, "spec.service.loadBalancerClass");
        let err = refused(|o| {
            o.spec.service.type_ = crd::ServiceType::LoadBalancer;
            o.spec.service.load_balancer_source_ranges = Some(vec!["10.0.0.1".into()]);
        });
        assert_eq!(err.field, "spec.service.loadBalancerSourceRanges[0]");
    }

    #[test]
    fn tcp_options_are_rendered_and_checked() {
        let object = wss(
            "metadata: {name: edge}\nspec:\n  upstream: {url: 'ws://b:1/'}\n  \
             tcp: {noDelay: false, keepalive: {idle: 2m, interval: 15s, count: 4}, sendBufferBytes: 65536}\n",
        );
        assert_eq!(
            plan(&object).unwrap().gateway_config.tcp,
            gw::TcpConfig {
                no_delay: false,
                keepalive: Some(gw::KeepaliveConfig {
                    idle: Duration::from_secs(120),
                    interval: Duration::from_secs(15),
                    count: 4,
                }),
                send_buffer_bytes: Some(65536),
                receive_buffer_bytes: None,
            }
        );
        let err = refused(|o| {
            o.spec.tcp = Some(crd::TcpSpec {
                no_delay: true,
                keepalive: Some(crd::KeepaliveSpec {
                    idle: "1500ms".into(),
                    interval: "10s".into(),
                    count: 3,
                }),
                send_buffer_bytes: None,
                receive_buffer_bytes: None,
            });
        });
        assert_eq!(err.field, "spec.tcp.keepalive.idle");
    }

    #[test]
    fn resources_are_planned_in_stored_form_and_bad_quantities_name_the_field() {
        let with = |resources: serde_json::Value| {
            move |o: &mut WebSocketService| {
                o.spec.resources = Some(serde_json::from_value(resources).unwrap());
            }
        };
        let mut object = example("production.yaml");
        with(serde_json::json!({"requests": {"cpu": "0.5"}, "limits": {"memory": "1.5Gi"}}))(
            &mut object,
        );
        let resources = plan(&object).unwrap().resources.unwrap();
        assert_eq!(resources.requests.unwrap()["cpu"].0, "500m");
        assert_eq!(resources.limits.unwrap()["memory"].0, "1536Mi");

        let err = refused(with(serde_json::json!({"limits": {"cpu": "1 core"}})));
        assert_eq!(err.field, "spec.resources.limits.cpu");
        assert!(err.message.contains(r#""1 core""#), "{err}");
        let err = refused(with(serde_json::json!({"requests": {"memory": "-64Mi"}})));
        assert_eq!(err.field, "spec.resources.requests.memory");
        assert!(
            err.message.contains("negative") && err.message.contains("-64Mi"),
            "{err}"
        );
    }

    #[test]
    fn upstream_shape_is_enforced() {
        let err = refused(|o| o.spec.upstream.url = Some("ws://x:1/".into()));
        assert_eq!(err.field, "spec.upstream");
        let err = refused(|o| o.spec.upstream.port = None);
        assert_eq!(err.field, "spec.upstream.port");
        let err = refused(|o| {
            o.spec.upstream = crd::UpstreamSpec {
                url: Some("http://x:1/".into()),
                ..Default::default()
            }
        });
        assert_eq!(err.field, "spec.upstream.url");
    }

    #[test]
    fn gateway_validation_applies_too() {
        let err = refused(|o| o.spec.limits.max_message_bytes = 10);
        assert_eq!(err.field, "spec.limits.maxMessageBytes");
        let err = refused(|o| o.spec.validation.utf8 = true);
        assert_eq!(err.field, "spec.validation.utf8");
        let err = refused(|o| {
            o.spec.limits.connections_per_ip = Some(crd::RateSpec {
                per_second: 10,
                burst: 2,
            });
        });
        assert_eq!(err.field, "spec.limits.connectionsPerIP.burst");
        let err = refused(|o| {
            o.spec.auth = None;
            o.spec.limits.connections_per_subject = Some(3);
        });
        assert_eq!(err.field, "spec.limits.connectionsPerSubject");
        let err = refused(|o| o.spec.limits.connections_per_subject = Some(0));
        assert_eq!(err.field, "spec.limits.connectionsPerSubject");
    }

    #[test]
    fn the_access_log_is_rendered_and_checked() {
        let object = wss(
            "metadata: {name: edge}\nspec:\n  upstream: {url: 'ws://b:1/'}\n  \
             accessLog: {enabled: true, sampleOneIn: 10}\n",
        );
        assert_eq!(
            plan(&object).unwrap().gateway_config.access_log,
            gw::AccessLogConfig {
                enabled: true,
                sample_one_in: 10,
                refusals: true,
            }
        );
        assert_eq!(
            plan(&example("minimal.yaml"))
                .unwrap()
                .gateway_config
                .access_log,
            gw::AccessLogConfig::default()
        );
        // An object stored before the schema's minimum still meets the gateway's check.
        let err = refused(|o| {
            o.spec.access_log = Some(crd::AccessLogSpec {
                enabled: true,
                sample_one_in: 0,
                refusals: true,
            });
        });
        assert_eq!(err.field, "spec.accessLog.sampleOneIn");
    }

    #[test]
    fn connections_per_subject_and_the_subject_claim_are_rendered() {
        let object = wss(
            "metadata: {name: edge}\nspec:\n  upstream: {url: 'ws://b:1/'}\n  \
             auth: {jwt: {algorithms: [HS256], keySecretRef: {name: k, key: key}, subjectClaim: user_id}}\n  \
             limits: {connectionsPerSubject: 20}\n",
        );
        let config = plan(&object).unwrap().gateway_config;
        assert_eq!(config.limits.connections_per_subject, Some(20));
        assert_eq!(config.auth.jwt.unwrap().subject_claim, "user_id");
        let config = plan(&example("minimal.yaml")).unwrap().gateway_config;
        assert_eq!(config.limits.connections_per_subject, None);
    }

    #[test]
    fn the_pending_handshake_cap_is_rendered_with_its_default() {
        let config = plan(&example("minimal.yaml")).unwrap().gateway_config;
        assert_eq!(config.limits.pending_handshakes_per_ip, 32);
        let behind_nat = wss(
            "metadata: {name: edge}\nspec:\n  upstream: {url: 'ws://b:1/'}\n  \
             limits: {pendingHandshakesPerIP: 2000}\n",
        );
        let config = plan(&behind_nat).unwrap().gateway_config;
        assert_eq!(config.limits.pending_handshakes_per_ip, 2000);
    }
}
