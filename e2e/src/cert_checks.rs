//! Checks on certificates the operator produces, as a TLS client would make them. Issuing the
//! harness's own certificates is [`crate::test_ca`].

use anyhow::{Context, Result, bail, ensure};
use x509_parser::extensions::GeneralName;
use x509_parser::pem::parse_x509_pem;
use x509_parser::prelude::{ASN1Time, X509Certificate};

/// What a serving certificate says about itself.
#[derive(Debug, Clone)]
pub struct CertificateFacts {
    pub dns_names: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
}

/// Checks that the first certificate in `chain_pem` is signed by `ca_pem`, is valid now
/// and names every one of `dns_names`; returns what it found.
pub fn verify_serving_certificate(
    chain_pem: &str,
    ca_pem: &str,
    dns_names: &[&str],
) -> Result<CertificateFacts> {
    let (_, leaf_pem) = parse_x509_pem(chain_pem.as_bytes()).context("tls.crt is not PEM")?;
    let leaf = leaf_pem
        .parse_x509()
        .context("tls.crt is not an X.509 certificate")?;
    let (_, ca_pem) = parse_x509_pem(ca_pem.as_bytes()).context("ca.crt is not PEM")?;
    let ca = ca_pem
        .parse_x509()
        .context("ca.crt is not an X.509 certificate")?;

    ensure!(
        ca.is_ca(),
        "ca.crt ({}) is not a CA certificate",
        ca.subject()
    );
    leaf.verify_signature(Some(ca.public_key()))
        .map_err(|err| anyhow::anyhow!("tls.crt is not signed by ca.crt: {err}"))?;
    ensure!(
        leaf.issuer() == ca.subject(),
        "tls.crt issuer {} differs from ca.crt subject {}",
        leaf.issuer(),
        ca.subject()
    );
    ensure!(
        leaf.validity().is_valid_at(ASN1Time::now()),
        "tls.crt is not valid now: {:?}",
        leaf.validity()
    );

    let names = dns_names_of(&leaf)?;
    for wanted in dns_names {
        if !names.iter().any(|name| name == wanted) {
            bail!("tls.crt does not name {wanted}; it names {names:?}");
        }
    }
    Ok(CertificateFacts {
        dns_names: names,
        not_before: leaf.validity().not_before.timestamp(),
        not_after: leaf.validity().not_after.timestamp(),
    })
}

fn dns_names_of(cert: &X509Certificate<'_>) -> Result<Vec<String>> {
    let Some(san) = cert
        .subject_alternative_name()
        .context("reading subjectAltName")?
    else {
        return Ok(Vec::new());
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            _ => None,
        })
        .collect())
}
