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

mod gateway_config;

use gateway_config::*;
pub use gateway_config::{drain_seconds, render_gateway_config};

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
                listen_backlog: 4096,
            }
        );
        let object = wss(
            "metadata: {name: edge}\nspec:\n  upstream: {url: 'ws://b:1/'}\n  \
             tcp: {listenBacklog: 16384}\n",
        );
        assert_eq!(
            plan(&object).unwrap().gateway_config.tcp.listen_backlog,
            16384
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
                listen_backlog: None,
            });
        });
        assert_eq!(err.field, "spec.tcp.keepalive.idle");
        let err = refused(|o| {
            o.spec.tcp = Some(crd::TcpSpec {
                no_delay: true,
                keepalive: None,
                send_buffer_bytes: None,
                receive_buffer_bytes: None,
                listen_backlog: Some(-1),
            });
        });
        assert_eq!(err.field, "spec.tcp.listenBacklog");
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
