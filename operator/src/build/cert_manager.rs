//! cert-manager `Certificate` `<name>-gateway` (cert-manager.io/v1), present only with
//! `tls.mode: CertManager`. cert-manager issues it into `tls.secretName` and renews it; the
//! gateway pods mount that Secret as they mount a user's.
//!
//! Only the fields the operator sets and the status it reads are modelled: an observed
//! Certificate parses into this type with cert-manager's other fields ignored.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::child_metadata;
use crate::plan::{Plan, TlsPlan};

/// The part of cert-manager's Certificate spec that the operator writes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "cert-manager.io",
    version = "v1",
    kind = "Certificate",
    plural = "certificates",
    namespaced,
    status = "CertManagerCertificateStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct CertManagerCertificateSpec {
    pub secret_name: String,
    pub dns_names: Vec<String>,
    pub duration: String,
    pub renew_before: String,
    pub issuer_ref: CertManagerIssuerRef,
    pub private_key: PrivateKey,
    /// Labels on the Secret cert-manager writes, so that it reads as the fleet's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CertManagerIssuerRef {
    pub name: String,
    pub kind: String,
    pub group: String,
}

/// The serving key: ECDSA P-256 like the SelfSigned certificates, a new key at every renewal.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PrivateKey {
    pub algorithm: String,
    pub size: i32,
    pub rotation_policy: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// What cert-manager reports: its conditions and the certificate's times (RFC 3339).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CertManagerCertificateStatus {
    #[serde(default)]
    pub conditions: Vec<CertManagerCondition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CertManagerCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

impl Certificate {
    /// The `Ready` condition cert-manager set, if any.
    pub fn ready(&self) -> Option<&CertManagerCondition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|condition| condition.type_ == "Ready")
    }
}

/// The Certificate for `tls` (whose `issuer_ref` is set: CertManager mode).
pub fn certificate(plan: &Plan, tls: &TlsPlan, owner: &OwnerReference) -> Option<Certificate> {
    let issuer = tls.issuer_ref.as_ref()?;
    let names = &plan.names;
    Some(Certificate {
        metadata: child_metadata(names, names.gateway(), owner),
        spec: CertManagerCertificateSpec {
            secret_name: tls.secret_name.clone(),
            dns_names: tls.dns_names.clone(),
            duration: go_duration(tls.duration),
            renew_before: go_duration(tls.renew_before),
            issuer_ref: CertManagerIssuerRef {
                name: issuer.name.clone(),
                kind: issuer.kind.clone(),
                group: issuer.group.clone(),
            },
            private_key: PrivateKey {
                algorithm: "ECDSA".to_owned(),
                size: 256,
                rotation_policy: "Always".to_owned(),
            },
            secret_template: Some(SecretTemplate {
                labels: names.labels(),
            }),
        },
        status: None,
    })
}

/// A duration as Go's `time.ParseDuration` reads it, in the largest whole unit.
fn go_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    match millis {
        m if m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m % 1_000 == 0 => format!("{}s", m / 1_000),
        m => format!("{m}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{cert_manager_fleet, owner, plan_of};

    #[test]
    fn the_certificate_names_the_issuer_the_secret_and_the_service_names() {
        let wss = cert_manager_fleet();
        let plan = plan_of(&wss);
        let tls = plan.tls.as_ref().expect("tls planned");
        let certificate =
            certificate(&plan, tls, &owner(&wss)).expect("CertManager has a Certificate");
        let spec = &certificate.spec;
        assert_eq!(
            certificate.metadata.name.as_deref(),
            Some(plan.names.gateway().as_str())
        );
        assert_eq!(spec.secret_name, tls.secret_name);
        assert_eq!(spec.dns_names, tls.dns_names);
        assert!(
            spec.dns_names
                .iter()
                .any(|name| name.ends_with(".svc.cluster.local"))
        );
        assert_eq!(
            (spec.duration.as_str(), spec.renew_before.as_str()),
            ("2160h", "360h")
        );
        assert_eq!(
            (
                spec.issuer_ref.kind.as_str(),
                spec.issuer_ref.group.as_str()
            ),
            ("ClusterIssuer", "cert-manager.io")
        );
        assert_eq!(spec.secret_name, "chat-tls");
        assert_eq!(spec.private_key.algorithm, "ECDSA");
        let value = serde_json::to_value(&certificate).unwrap();
        assert_eq!(value["apiVersion"], "cert-manager.io/v1");
        assert_eq!(value["kind"], "Certificate");
        assert!(value.get("status").is_none(), "{value}");
    }

    #[test]
    fn durations_are_written_in_their_largest_whole_unit() {
        assert_eq!(go_duration(Duration::from_secs(90 * 60)), "90m");
        assert_eq!(go_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(go_duration(Duration::from_secs(61)), "61s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
    }
}
