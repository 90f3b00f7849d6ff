//! The apiserver's aggregation layer, for extension apiservers that run as processes on the
//! host (metrics-server, KEDA's metrics adapter): the front-proxy CA and client certificate
//! the apiserver presents to them, their own TLS material, and the APIService registrations
//! that route an API group to an address on the node.
//!
//! With `--enable-aggregator-routing=true` the apiserver dials the address in the Service's
//! Endpoints itself, so a Service without a selector and one hand-written endpoint (the node's
//! address, on which the host process listens) stands for a Deployment behind a Service.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result, ensure};
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use rcgen::ExtendedKeyUsagePurpose;

use crate::kubectl::Kubectl;
use crate::poll::{DEADLINE, eventually, give_up};
use crate::process::ManagedProcess;
use crate::test_ca::CertificateAuthority;

/// The name in the apiserver's front-proxy client certificate, the one the extension
/// apiservers accept (`--requestheader-allowed-names`).
pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

/// Writes the front-proxy CA and client certificate into `dir` and returns the apiserver's
/// aggregation-layer flags.
pub fn apiserver_flags(dir: &Path) -> Result<Vec<String>> {
    let ca = CertificateAuthority::new("wsfleet-e2e-front-proxy-ca")?;
    let client = ca.issue(
        FRONT_PROXY_CLIENT,
        &[],
        &[ExtendedKeyUsagePurpose::ClientAuth],
    )?;
    let files = [
        ("front-proxy-ca.crt", ca.cert_pem()),
        ("front-proxy-client.crt", client.cert_pem),
        ("front-proxy-client.key", client.key_pem),
    ];
    for (name, contents) in &files {
        std::fs::write(dir.join(name), contents)
            .with_context(|| format!("writing {}", dir.join(name).display()))?;
    }
    let file = |name: &str| dir.join(name).display().to_string();
    Ok(vec![
        format!(
            "--requestheader-client-ca-file={}",
            file("front-proxy-ca.crt")
        ),
        format!("--requestheader-allowed-names={FRONT_PROXY_CLIENT}"),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_owned(),
        "--requestheader-group-headers=X-Remote-Group".to_owned(),
        "--requestheader-username-headers=X-Remote-User".to_owned(),
        format!(
            "--proxy-client-cert-file={}",
            file("front-proxy-client.crt")
        ),
        format!("--proxy-client-key-file={}", file("front-proxy-client.key")),
        "--enable-aggregator-routing=true".to_owned(),
    ])
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` into `dir`: a CA of its own and a certificate for
/// `names` (DNS names and IP addresses) good for serving and for client authentication (KEDA's
/// operator and adapter use one such pair for their mutual TLS). Returns the CA's PEM, the
/// APIService's `caBundle`.
pub fn write_tls_dir(dir: &Path, names: &[&str]) -> Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = CertificateAuthority::new("wsfleet-e2e-extension-ca")?;
    let pair = ca.issue(
        names.first().copied().unwrap_or("server"),
        names,
        &[
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )?;
    let files = [
        ("ca.crt", ca.cert_pem()),
        ("tls.crt", pair.cert_pem),
        ("tls.key", pair.key_pem),
    ];
    for (name, contents) in files {
        std::fs::write(dir.join(name), contents)
            .with_context(|| format!("writing {}", dir.join(name).display()))?;
    }
    Ok(ca.cert_pem())
}

/// The flags every extension apiserver here takes alike: the cluster (for delegated
/// authentication and authorization), where it listens, and its TLS pair in `tls` (as
/// [`write_tls_dir`] writes it).
pub fn serving_args(kubeconfig: &Path, address: Ipv4Addr, port: u16, tls: &Path) -> Vec<String> {
    let kubeconfig = kubeconfig.display();
    vec![
        format!("--authentication-kubeconfig={kubeconfig}"),
        format!("--authorization-kubeconfig={kubeconfig}"),
        format!("--bind-address={address}"),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", tls.display()),
        format!("--tls-cert-file={}", tls.join("tls.crt").display()),
        format!("--tls-private-key-file={}", tls.join("tls.key").display()),
    ]
}

/// An API group served by a process on the host, as an APIService sees it.
pub struct Extension<'a> {
    /// `metrics.k8s.io`, `external.metrics.k8s.io`.
    pub group: &'a str,
    pub version: &'a str,
    /// The Service standing for the process, and its namespace (created if absent).
    pub namespace: &'a str,
    pub service: &'a str,
    /// Where the process listens: the node's address, which the apiserver reaches.
    pub address: Ipv4Addr,
    pub port: u16,
    /// The CA that signed the process' serving certificate.
    pub ca_pem: &'a str,
}

impl Extension<'_> {
    /// `v1beta1.metrics.k8s.io`.
    pub fn api_service(&self) -> String {
        format!("{}.{}", self.version, self.group)
    }

    /// The DNS names the apiserver checks the serving certificate against.
    pub fn service_names(&self) -> Vec<String> {
        vec![
            format!("{}.{}.svc", self.service, self.namespace),
            format!("{}.{}.svc.cluster.local", self.service, self.namespace),
        ]
    }

    /// Creates the namespace, the selector-less Service with its one endpoint, and the
    /// APIService, then waits until the apiserver reports the APIService Available; gives up
    /// as soon as `alive` fails (the server exited).
    pub fn register(&self, kubectl: &Kubectl, mut alive: impl FnMut() -> Result<()>) -> Result<()> {
        let bundle = BASE64_STANDARD.encode(self.ca_pem.as_bytes());
        let (namespace, service, port, address) =
            (self.namespace, self.service, self.port, self.address);
        kubectl.apply(&format!(
            r#"apiVersion: v1
kind: Namespace
metadata: {{name: {namespace}}}
---
apiVersion: v1
kind: Service
metadata: {{name: {service}, namespace: {namespace}}}
spec:
  ports: [{{name: https, port: 443, targetPort: {port}, protocol: TCP}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: {service}, namespace: {namespace}}}
subsets:
  - addresses: [{{ip: "{address}"}}]
    ports: [{{name: https, port: {port}, protocol: TCP}}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{name: {name}}}
spec:
  group: {group}
  version: {version}
  service: {{name: {service}, namespace: {namespace}, port: 443}}
  caBundle: {bundle}
  groupPriorityMinimum: 100
  versionPriority: 100
"#,
            name = self.api_service(),
            group = self.group,
            version = self.version,
        ))?;
        await_available(kubectl, &self.api_service(), &mut alive)
    }
}

/// An APIService to remove when its server stops: one left pointing at nothing makes API
/// discovery incomplete, and the namespace controller then refuses to finish deleting any
/// namespace.
pub struct Registration {
    kubectl: Kubectl,
    api_service: String,
}

impl Registration {
    pub fn new(kubectl: &Kubectl, extension: &Extension<'_>) -> Self {
        Self {
            kubectl: kubectl.clone(),
            api_service: extension.api_service(),
        }
    }

    /// Deletes the APIService; failures are printed (this runs while stopping).
    pub fn remove(&self) {
        let deleted = self.kubectl.run(&[
            "delete",
            "apiservice",
            &self.api_service,
            "--ignore-not-found",
            "--wait=false",
        ]);
        if let Err(err) = deleted {
            eprintln!("APIService {} was not removed: {err:#}", self.api_service);
        }
    }
}

/// Waits until the APIService `name` is Available, while `alive` holds.
pub fn await_available(
    kubectl: &Kubectl,
    name: &str,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<()> {
    eventually(&format!("APIService {name} Available"), DEADLINE, || {
        alive().map_err(give_up)?;
        let service = kubectl.get("apiservice", name)?;
        let available = service["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|condition| condition["type"] == "Available");
        ensure!(
            available.is_some_and(|condition| condition["status"] == "True"),
            "Available: {available:?}"
        );
        Ok(())
    })
}

/// The resident memory of a host process now, in MiB (`VmRSS`).
pub fn resident_mib(process: &ManagedProcess) -> Result<f64> {
    Ok(crate::process::rss_kib(process.pid())? as f64 / 1024.0)
}
