//! Bad manifests are refused by `kubectl apply` itself, with a message naming the field:
//! the CRD's OpenAPI schema and CEL rules do the work, no operator involved.

use anyhow::{Result, bail};
use wsfleet_e2e::TestNamespace;

/// One refused manifest: what is wrong, the `spec:` body, and the field the message must name.
struct BadSpec {
    wrong: &'static str,
    spec: &'static str,
    names: &'static str,
}

const UPSTREAM: &str = "  upstream: {service: chat-backend, port: 8080}\n";

const JWT_KEY: &str = "keySecretRef: {name: chat-jwt, key: public.pem}";

fn cases() -> Vec<BadSpec> {
    let case = |wrong, spec, names| BadSpec { wrong, spec, names };
    vec![
        case(
            "replicas of the wrong type",
            "  replicas: two\n",
            "spec.replicas",
        ),
        case("negative replicas", "  replicas: -1\n", "spec.replicas"),
        case("too many replicas", "  replicas: 5000\n", "spec.replicas"),
        case(
            "upstream port out of range",
            "  upstream: {service: chat-backend, port: 70000}\n",
            "spec.upstream.port",
        ),
        case(
            "upstream service and url together",
            "  upstream: {service: chat-backend, port: 8080, url: 'ws://a:1/'}\n",
            "spec.upstream",
        ),
        case(
            "upstream with neither service nor url",
            "  upstream: {}\n",
            "spec.upstream",
        ),
        case(
            "upstream url that is not ws/wss",
            "  upstream: {url: 'http://chat-backend:8080/ws'}\n",
            "spec.upstream.url",
        ),
        case(
            "upstream path without a leading slash",
            "  upstream: {service: chat-backend, port: 8080, path: ws}\n",
            "spec.upstream.path",
        ),
        case(
            "upstream service without a port",
            "  upstream: {service: chat-backend}\n",
            "spec.upstream",
        ),
        case(
            "privileged listen port",
            "  listen: {port: 80}\n",
            "spec.listen.port",
        ),
        case(
            "listen port taken by metrics",
            "  listen: {port: 9090}\n",
            "spec.listen.port",
        ),
        case(
            "unknown TLS mode",
            "  tls: {mode: Bogus}\n",
            "spec.tls.mode",
        ),
        case(
            "TLS duration that is not a duration",
            "  tls: {mode: SelfSigned, duration: forever}\n",
            "spec.tls.duration",
        ),
        case(
            "renewBefore longer than duration",
            "  tls: {mode: SelfSigned, duration: 24h, renewBefore: 48h}\n",
            "spec.tls",
        ),
        case(
            "Secret mode without secretName",
            "  tls: {mode: Secret}\n",
            "spec.tls",
        ),
        case(
            "DNS name with capitals",
            "  tls: {mode: SelfSigned, dnsNames: [Chat.Example.com]}\n",
            "spec.tls.dnsNames",
        ),
        case(
            "CIDR with a /33 prefix",
            "  auth: {ipAllow: [10.0.0.0/33]}\n",
            "spec.auth.ipAllow",
        ),
        case(
            "deny entry that is no CIDR",
            "  auth: {ipDeny: [not-an-ip]}\n",
            "spec.auth.ipDeny",
        ),
        case(
            "trusted proxy that is no CIDR",
            "  auth: {trustedProxies: ['1.2.3']}\n",
            "spec.auth.trustedProxies",
        ),
        case(
            "origin without a scheme",
            "  auth: {allowedOrigins: [chat.example.com]}\n",
            "spec.auth.allowedOrigins",
        ),
        case(
            "JWT algorithm none",
            "  auth: {jwt: {algorithms: [none], KEY}}\n",
            "spec.auth.jwt.algorithms",
        ),
        case(
            "JWT algorithms of two key types",
            "  auth: {jwt: {algorithms: [HS256, RS256], KEY}}\n",
            "spec.auth.jwt",
        ),
        case(
            "JWT token source that does not exist",
            "  auth: {jwt: {algorithms: [RS256], tokenFrom: [Cookie], KEY}}\n",
            "spec.auth.jwt.tokenFrom",
        ),
        case(
            "JWT without a key",
            "  auth: {jwt: {algorithms: [RS256]}}\n",
            "spec.auth.jwt",
        ),
        case(
            "zero maxConnections",
            "  limits: {maxConnections: 0}\n",
            "spec.limits.maxConnections",
        ),
        case(
            "maxMessageBytes below a frame header",
            "  limits: {maxMessageBytes: 10}\n",
            "spec.limits.maxMessageBytes",
        ),
        case(
            "burst smaller than the rate",
            "  limits: {connectionsPerIP: {perSecond: 10, burst: 5}}\n",
            "spec.limits.connectionsPerIP",
        ),
        case(
            "heartbeat interval that is not a duration",
            "  heartbeat: {interval: abc, timeout: 10s}\n",
            "spec.heartbeat.interval",
        ),
        case(
            "unknown compression",
            "  compression: Gzip\n",
            "spec.compression",
        ),
        case(
            "minReplicas above maxReplicas",
            "  autoscaling: {minReplicas: 5, maxReplicas: 2, targetCPUUtilization: 70}\n",
            "spec.autoscaling",
        ),
        case(
            "autoscaling without a target",
            "  autoscaling: {minReplicas: 2, maxReplicas: 5}\n",
            "spec.autoscaling",
        ),
        case(
            "CPU target above 100%",
            "  autoscaling: {minReplicas: 2, maxReplicas: 5, targetCPUUtilization: 150}\n",
            "spec.autoscaling.targetCPUUtilization",
        ),
        case(
            "zero session affinity timeout",
            "  sessionAffinity: {timeoutSeconds: 0}\n",
            "spec.sessionAffinity.timeoutSeconds",
        ),
        case(
            "unknown session affinity type",
            "  sessionAffinity: {type: Cookie}\n",
            "spec.sessionAffinity.type",
        ),
        case(
            "drain period over an hour",
            "  drain: {gracePeriodSeconds: 7200}\n",
            "spec.drain.gracePeriodSeconds",
        ),
        case("unknown field", "  bogus: true\n", "spec.bogus"),
    ]
}

/// The manifest for `case`: its spec body, plus a valid upstream unless it sets its own.
fn manifest(index: usize, case: &BadSpec) -> String {
    let mut spec = case.spec.replace("KEY", JWT_KEY);
    if !spec.contains("upstream:") {
        spec.push_str(UPSTREAM);
    }
    format!(
        "apiVersion: wsfleet.io/v1alpha1\nkind: WebSocketService\nmetadata:\n  name: bad-{index}\nspec:\n{spec}"
    )
}

#[test]
fn bad_manifests_are_refused_naming_the_field() -> Result<()> {
    let namespace = TestNamespace::create("validation")?;
    namespace.control_plane().install_crd()?;
    let kubectl = namespace.kubectl();

    // The base manifest itself is valid, so each refusal is down to the one bad field.
    kubectl.apply(&format!(
        "apiVersion: wsfleet.io/v1alpha1\nkind: WebSocketService\nmetadata:\n  name: good\nspec:\n{UPSTREAM}"
    ))?;

    let cases = cases();
    assert!(cases.len() >= 20, "the issue asks for at least 20 cases");
    let mut problems = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let outcome = kubectl.outcome(&["apply", "-f", "-"], Some(&manifest(index, case)))?;
        if outcome.success {
            problems.push(format!("accepted: {}", case.wrong));
        } else if !outcome.stderr.contains(case.names) {
            problems.push(format!(
                "refused {} without naming {}: {}",
                case.wrong,
                case.names,
                outcome.stderr.trim()
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "{} of {} bad manifests:\n{}",
            problems.len(),
            cases.len(),
            problems.join("\n")
        );
    }
    Ok(())
}
