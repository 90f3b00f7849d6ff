//! cert-manager as far as it can be had here: its real CRDs (from its Go module, copied by
//! e2e/addons/build.sh), and [`CertManagerStandIn`], which plays the controller's documented
//! part for one Certificate. The controller itself cannot be built from the module proxy.
//!
//! What the stand-in does is what cert-manager's issuing controllers do for a Certificate: while
//! it issues, `Ready=False` (reason `DoesNotExist`) with `Issuing=True`; then the
//! `kubernetes.io/tls` Secret named in `spec.secretName`, with `tls.crt`, `tls.key`, `ca.crt`,
//! the `cert-manager.io/*` annotations and `spec.secretTemplate`'s labels, and `Ready=True` with
//! `notBefore`, `notAfter`, `renewalTime` and `revision` in the status.

use anyhow::{Context, Result};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Unit};
use serde_json::{Value, json};

use crate::binaries::addons_bin_dir;
use crate::kubectl::Kubectl;
use crate::poll::{DEADLINE, eventually};
use crate::test_ca::{CertificateAuthority, ServingCertificate};

/// The CRD whose presence means cert-manager's API is served.
pub const CERTIFICATES_CRD: &str = "certificates.cert-manager.io";

/// Applies cert-manager's CRDs and waits until Certificates are served.
pub fn install_crds(kubectl: &Kubectl) -> Result<()> {
    kubectl.install_crds(
        &addons_bin_dir()?.join("cert-manager-crds"),
        CERTIFICATES_CRD,
    )
}

/// The names a Certificate asks for (`spec.dnsNames`).
pub fn dns_names(certificate: &Value) -> Vec<&str> {
    certificate["spec"]["dnsNames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Plays cert-manager's part for Certificates in one namespace, signing with a CA of its own.
pub struct CertManagerStandIn {
    kubectl: Kubectl,
    ca: CertificateAuthority,
}

impl CertManagerStandIn {
    /// Acts in the namespace `kubectl` works in.
    pub fn new(kubectl: &Kubectl) -> Result<Self> {
        Ok(Self {
            kubectl: kubectl.clone(),
            ca: CertificateAuthority::new("wsfleet-e2e-cert-manager-issuer")?,
        })
    }

    /// Waits until the operator has written Certificate `name`, then issues it as
    /// [`CertManagerStandIn::issue`] does.
    pub fn issue_once_written(
        &self,
        name: &str,
        until: (i32, u8, u8),
        revision: u32,
    ) -> Result<ServingCertificate> {
        eventually(
            &format!("Certificate {name} to be written"),
            DEADLINE,
            || {
                self.kubectl
                    .try_get("certificate", name)?
                    .map(drop)
                    .ok_or_else(|| anyhow::anyhow!("not yet"))
            },
        )?;
        self.issue(name, until, revision)
    }

    /// The CA clients trust.
    pub fn ca_pem(&self) -> String {
        self.ca.cert_pem()
    }

    /// Reports Certificate `name` as being issued, as cert-manager does before the first
    /// Secret exists.
    pub fn report_issuing(&self, name: &str) -> Result<()> {
        self.patch_status(
            name,
            json!({"conditions": [
                condition("Ready", "False", "DoesNotExist", "Issuing certificate as Secret does not exist"),
                condition("Issuing", "True", "DoesNotExist", "Issuing certificate as Secret does not exist"),
            ]}),
        )
    }

    /// Issues Certificate `name` for the names in its spec, valid until `until`
    /// (`(year, month, day)`): writes its Secret, then reports it Ready as `revision`.
    /// Returns what was issued.
    pub fn issue(
        &self,
        name: &str,
        until: (i32, u8, u8),
        revision: u32,
    ) -> Result<ServingCertificate> {
        let certificate = self.kubectl.get("certificate", name)?;
        let spec = &certificate["spec"];
        let dns_names = dns_names(&certificate);
        let secret_name = spec["secretName"]
            .as_str()
            .with_context(|| format!("Certificate {name} has no secretName"))?;
        let issued = self.ca.issue_serving_until(&dns_names, until)?;
        let issuer = &spec["issuerRef"];
        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {
                "name": secret_name,
                "labels": spec["secretTemplate"]["labels"],
                "annotations": {
                    "cert-manager.io/certificate-name": name,
                    "cert-manager.io/common-name": dns_names.first().copied().unwrap_or_default(),
                    "cert-manager.io/alt-names": dns_names.join(","),
                    "cert-manager.io/ip-sans": "",
                    "cert-manager.io/uri-sans": "",
                    "cert-manager.io/issuer-name": issuer["name"],
                    "cert-manager.io/issuer-kind": issuer["kind"],
                    "cert-manager.io/issuer-group": issuer["group"],
                },
            },
            "stringData": {
                "tls.crt": issued.cert_pem,
                "tls.key": issued.key_pem,
                "ca.crt": self.ca.cert_pem(),
            },
        });
        self.kubectl.apply(&secret.to_string())?;
        let (year, month, day) = until;
        let not_after = jiff::civil::date(year as i16, month as i8, day as i8)
            .to_zoned(TimeZone::UTC)?
            .timestamp();
        self.patch_status(
            name,
            json!({
                "conditions": [
                    condition("Ready", "True", "Ready", "Certificate is up to date and has not expired"),
                ],
                "notBefore": kubernetes_time(Timestamp::now()),
                "notAfter": kubernetes_time(not_after),
                // renewBefore's default, 15 days.
                "renewalTime": kubernetes_time(not_after - SignedDuration::from_hours(360)),
                "revision": revision,
            }),
        )?;
        Ok(issued)
    }

    fn patch_status(&self, name: &str, status: Value) -> Result<()> {
        self.kubectl
            .run(&[
                "patch",
                "certificate",
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                &json!({ "status": status }).to_string(),
            ])
            .with_context(|| format!("reporting on Certificate {name}"))?;
        Ok(())
    }
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": kubernetes_time(Timestamp::now()),
    })
}

/// RFC 3339 to the second, as Kubernetes writes times.
fn kubernetes_time(time: Timestamp) -> String {
    time.round(Unit::Second)
        .map(|time| time.to_string())
        .unwrap_or_else(|_| time.to_string())
}
