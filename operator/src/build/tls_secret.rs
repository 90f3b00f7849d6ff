//! The SelfSigned TLS Secret: the cert-manager shape (`tls.crt`, `tls.key`, `ca.crt`) plus the CA
//! key (`ca.key`) so renewals keep the CA that clients already trust.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::child_metadata;
use crate::plan::{Plan, TlsPlan};
use crate::x509::Issued;

pub const CERT_KEY: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";
pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
/// Annotation recording why the certificate in the Secret was issued (`CertificateIssued` for the
/// first one, `CertificateRenewed` after), so the condition reason survives operator restarts.
pub const ISSUE_REASON_ANNOTATION: &str = "wsfleet.io/certificate-reason";

pub fn tls_secret(
    plan: &Plan,
    tls: &TlsPlan,
    issued: &Issued,
    reason: &str,
    owner: &OwnerReference,
) -> Secret {
    let entry = |key: &str, pem: &str| (key.to_owned(), ByteString(pem.as_bytes().to_vec()));
    let mut metadata = child_metadata(&plan.names, tls.secret_name.clone(), owner);
    metadata.annotations = Some(BTreeMap::from([(
        ISSUE_REASON_ANNOTATION.to_owned(),
        reason.to_owned(),
    )]));
    Secret {
        metadata,
        type_: Some(TLS_SECRET_TYPE.to_owned()),
        data: Some(BTreeMap::from([
            entry(CERT_KEY, &issued.cert_pem),
            entry(KEY_KEY, &issued.key_pem),
            entry(CA_CERT_KEY, &issued.ca_cert_pem),
            entry(CA_KEY_KEY, &issued.ca_key_pem),
        ])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{example, owner, plan_of};
    use crate::x509::{check_pair, generate_key, issue};

    #[test]
    fn secret_holds_the_issued_pair_and_ca() {
        let wss = example("production.yaml");
        let plan = plan_of(&wss);
        let tls = plan.tls.as_ref().unwrap();
        let issued = issue(
            generate_key,
            "team-a/chat-prod",
            &tls.dns_names,
            tls.duration,
            jiff::Timestamp::now(),
            None,
        )
        .unwrap();
        let secret = tls_secret(&plan, tls, &issued, "CertificateIssued", &owner(&wss));
        assert_eq!(
            secret.metadata.annotations.as_ref().unwrap()[ISSUE_REASON_ANNOTATION],
            "CertificateIssued"
        );
        assert_eq!(secret.metadata.name.as_deref(), Some("chat-prod-tls"));
        assert_eq!(secret.metadata.labels.as_ref().unwrap().len(), 4);
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        let data = secret.data.unwrap();
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(keys, ["ca.crt", "ca.key", "tls.crt", "tls.key"]);
        let info = check_pair(&data["tls.crt"].0, &data["tls.key"].0).unwrap();
        assert_eq!(info.dns_names, tls.dns_names);
        assert_eq!(data["ca.crt"].0, issued.ca_cert_pem.as_bytes());
    }
}
