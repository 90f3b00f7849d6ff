//! The harness's own certificate authority and the keys it issues: the apiserver's serving
//! certificate, the service-account signing key, and user-managed TLS Secrets for the examples.
//! Checking what the operator issued is [`crate::cert_checks`].

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate authority that signs serving and client certificates.
pub struct CertificateAuthority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM encoded.
pub struct ServingCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertificateAuthority {
    pub fn new(common_name: &str) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)
            .with_context(|| format!("issuing CA {common_name}"))?;
        Ok(Self { issuer })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn issue_serving(&self, names: &[&str]) -> Result<ServingCertificate> {
        self.issue(
            names.first().copied().unwrap_or("server"),
            names,
            &[ExtendedKeyUsagePurpose::ServerAuth],
        )
    }

    /// A server certificate for `names` that expires at the start of `(year, month, day)`.
    pub fn issue_serving_until(
        &self,
        names: &[&str],
        (year, month, day): (i32, u8, u8),
    ) -> Result<ServingCertificate> {
        self.issue_with(
            names.first().copied().unwrap_or("server"),
            names,
            &[ExtendedKeyUsagePurpose::ServerAuth],
            |params| params.not_after = rcgen::date_time_ymd(year, month, day),
        )
    }

    /// A certificate for `common_name`, with `names` (DNS names or IP addresses) as its
    /// alternative names, good for `usages`.
    pub fn issue(
        &self,
        common_name: &str,
        names: &[&str],
        usages: &[ExtendedKeyUsagePurpose],
    ) -> Result<ServingCertificate> {
        self.issue_with(common_name, names, usages, |_| {})
    }

    fn issue_with(
        &self,
        common_name: &str,
        names: &[&str],
        usages: &[ExtendedKeyUsagePurpose],
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Result<ServingCertificate> {
        let sans: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params =
            CertificateParams::new(sans).with_context(|| format!("certificate names {names:?}"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = usages.to_vec();
        adjust(&mut params);
        let key = KeyPair::generate()?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("issuing a certificate for {common_name}"))?;
        Ok(ServingCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A key pair for signing service-account tokens: (private PEM, public PEM).
pub fn service_account_key_pair() -> Result<(String, String)> {
    let key = KeyPair::generate().context("generating the service-account key")?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}
