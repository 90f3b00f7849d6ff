//! X.509 for serving certificates: reading and checking a `kubernetes.io/tls` Secret's contents,
//! deciding when a SelfSigned certificate is renewed, and issuing one with a CA. Pure: the clock
//! and the source of keys are passed in.

use std::time::Duration;

use jiff::Timestamp;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Lifetime of an operator-issued CA; a leaf that would outlive it gets a new CA.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start this far in the past, for clients whose clocks run slightly behind.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// What the operator needs to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub not_after: Timestamp,
    /// DNS subject alternative names, in certificate order.
    pub dns_names: Vec<String>,
}

/// Parses the first certificate of a PEM bundle and checks that `key_pem` is its private key.
pub fn check_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertInfo, String> {
    let cert_der = CertificateDer::pem_slice_iter(cert_pem)
        .next()
        .ok_or("tls.crt holds no PEM certificate")?
        .map_err(|err| format!("tls.crt is not valid PEM: {err}"))?;
    let (_, cert) = X509Certificate::from_der(&cert_der)
        .map_err(|err| format!("tls.crt is not a valid X.509 certificate: {err}"))?;
    let key_der = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|err| format!("tls.key is not a PEM private key: {err}"))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|err| format!("tls.key is not a usable private key: {err}"))?;
    let public_key = signing_key
        .public_key()
        .ok_or("tls.key's public key cannot be derived")?;
    if public_key.as_ref() != cert.public_key().raw {
        return Err("tls.key does not match the certificate in tls.crt".to_owned());
    }
    info(&cert)
}

fn info(cert: &X509Certificate<'_>) -> Result<CertInfo, String> {
    let not_after = Timestamp::from_second(cert.validity().not_after.timestamp())
        .map_err(|err| format!("certificate expiry is out of range: {err}"))?;
    let dns_names = cert
        .subject_alternative_name()
        .map_err(|err| format!("certificate subjectAltName is malformed: {err}"))?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(CertInfo {
        not_after,
        dns_names,
    })
}

/// The state of the certificate currently stored in a SelfSigned Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Missing,
    Damaged(String),
    Valid(CertInfo),
}

/// Why a new certificate is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueReason {
    /// No certificate yet: the first issuance.
    Missing,
    /// The stored one cannot be used (unparsable, or key and certificate disagree).
    Damaged,
    /// The wanted DNS names differ from the certificate's.
    NamesChanged,
    /// `renewBefore` of the expiry has been reached.
    Expiring,
}

/// Whether to keep the stored certificate or issue a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Keep { renewal_time: Timestamp },
    Issue(IssueReason),
}

/// Renew when the certificate is missing or damaged, names a different set of DNS names, or
/// `now >= notAfter - renewBefore`.
pub fn decide(
    stored: &Stored,
    wanted_names: &[String],
    renew_before: Duration,
    now: Timestamp,
) -> Decision {
    let info = match stored {
        Stored::Missing => return Decision::Issue(IssueReason::Missing),
        Stored::Damaged(_) => return Decision::Issue(IssueReason::Damaged),
        Stored::Valid(info) => info,
    };
    let mut have: Vec<&str> = info.dns_names.iter().map(String::as_str).collect();
    let mut want: Vec<&str> = wanted_names.iter().map(String::as_str).collect();
    have.sort_unstable();
    want.sort_unstable();
    if have != want {
        return Decision::Issue(IssueReason::NamesChanged);
    }
    let renewal_time = renewal_time(info.not_after, renew_before);
    if now >= renewal_time {
        Decision::Issue(IssueReason::Expiring)
    } else {
        Decision::Keep { renewal_time }
    }
}

/// `notAfter - renewBefore`, saturating at the epoch.
pub fn renewal_time(not_after: Timestamp, renew_before: Duration) -> Timestamp {
    let seconds = not_after
        .as_second()
        .saturating_sub(renew_before.as_secs() as i64);
    Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// PEM texts of a CA and a leaf it signed: the contents of a SelfSigned Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub not_after: Timestamp,
    /// Whether the CA was created for this leaf (clients must learn the new `ca.crt`).
    pub new_ca: bool,
}

/// A CA kept from an earlier issuance.
pub struct StoredCa<'a> {
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
}

/// Where new private keys come from.
pub type KeySource = fn() -> Result<KeyPair, String>;

/// A fresh ECDSA P-256 key from the system's randomness.
pub fn generate_key() -> Result<KeyPair, String> {
    KeyPair::generate().map_err(|err| format!("generating a key: {err}"))
}

/// Issues a leaf for `dns_names` valid for `lifetime` from `now`, signed by `ca` when it can
/// still sign such a leaf, otherwise by a new CA named after `owner`; keys come from `keys`.
pub fn issue(
    keys: KeySource,
    owner: &str,
    dns_names: &[String],
    lifetime: Duration,
    now: Timestamp,
    ca: Option<StoredCa<'_>>,
) -> Result<Issued, String> {
    let leaf_not_after = add(now, lifetime)?;
    let reusable = ca.and_then(|ca| reusable_ca(ca, leaf_not_after));
    let (issuer, ca_cert_pem, ca_key_pem, new_ca) = match reusable {
        Some((issuer, cert_pem, key_pem)) => (issuer, cert_pem, key_pem, false),
        None => {
            let (issuer, cert_pem, key_pem) = new_ca(keys, owner, now)?;
            (issuer, cert_pem, key_pem, true)
        }
    };
    let mut params = CertificateParams::new(dns_names.to_vec())
        .map_err(|err| format!("invalid DNS names {dns_names:?}: {err}"))?;
    params.distinguished_name.push(
        DnType::CommonName,
        dns_names.first().cloned().unwrap_or_default(),
    );
    params.not_before = offset_time(sub(now, BACKDATE)?)?;
    params.not_after = offset_time(leaf_not_after)?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let key = keys()?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|err| format!("signing the certificate: {err}"))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        ca_cert_pem,
        ca_key_pem,
        not_after: leaf_not_after,
        new_ca,
    })
}

type CaParts = (Issuer<'static, KeyPair>, String, String);

/// The stored CA, if it parses and outlives the leaf it would sign.
fn reusable_ca(ca: StoredCa<'_>, leaf_not_after: Timestamp) -> Option<CaParts> {
    let ca_der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).ok()?;
    let (_, parsed) = X509Certificate::from_der(&ca_der).ok()?;
    if parsed.validity().not_after.timestamp() < leaf_not_after.as_second() {
        return None;
    }
    let key = KeyPair::from_pem(ca.key_pem).ok()?;
    if key.subject_public_key_info() != parsed.public_key().raw {
        return None;
    }
    let issuer = Issuer::from_ca_cert_pem(ca.cert_pem, key).ok()?;
    Some((issuer, ca.cert_pem.to_owned(), ca.key_pem.to_owned()))
}

fn new_ca(keys: KeySource, owner: &str, now: Timestamp) -> Result<CaParts, String> {
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(|err| format!("CA parameters: {err}"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("wsfleet CA for {owner}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = offset_time(sub(now, BACKDATE)?)?;
    params.not_after = offset_time(add(now, CA_LIFETIME)?)?;
    let key = keys()?;
    let cert = params
        .self_signed(&key)
        .map_err(|err| format!("self-signing the CA: {err}"))?;
    let key_pem = key.serialize_pem();
    Ok((Issuer::new(params, key), cert.pem(), key_pem))
}

fn add(at: Timestamp, span: Duration) -> Result<Timestamp, String> {
    Timestamp::from_second(at.as_second().saturating_add(span.as_secs() as i64))
        .map_err(|err| format!("certificate lifetime out of range: {err}"))
}

fn sub(at: Timestamp, span: Duration) -> Result<Timestamp, String> {
    Timestamp::from_second(at.as_second().saturating_sub(span.as_secs() as i64))
        .map_err(|err| format!("certificate start out of range: {err}"))
}

fn offset_time(at: Timestamp) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::from_unix_timestamp(at.as_second())
        .map_err(|err| format!("time out of range: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn names() -> Vec<String> {
        vec!["chat.example.com".to_owned(), "chat.team-a.svc".to_owned()]
    }

    fn now() -> Timestamp {
        "2026-11-25T12:00:00Z".parse().unwrap()
    }

    fn valid(not_after: Timestamp) -> Stored {
        Stored::Valid(CertInfo {
            not_after,
            dns_names: names(),
        })
    }

    #[test]
    fn missing_or_damaged_certificates_are_issued() {
        assert_eq!(
            decide(&Stored::Missing, &names(), DAY, now()),
            Decision::Issue(IssueReason::Missing)
        );
        assert_eq!(
            decide(&Stored::Damaged("bad".into()), &names(), DAY, now()),
            Decision::Issue(IssueReason::Damaged)
        );
    }

    #[test]
    fn renewal_happens_exactly_at_not_after_minus_renew_before() {
        let not_after = add(now(), 10 * DAY).unwrap();
        let renew_at = add(now(), 9 * DAY).unwrap();
        assert_eq!(
            decide(&valid(not_after), &names(), DAY, now()),
            Decision::Keep {
                renewal_time: renew_at
            }
        );
        let just_before = sub(renew_at, Duration::from_secs(1)).unwrap();
        assert!(matches!(
            decide(&valid(not_after), &names(), DAY, just_before),
            Decision::Keep { .. }
        ));
        assert_eq!(
            decide(&valid(not_after), &names(), DAY, renew_at),
            Decision::Issue(IssueReason::Expiring)
        );
        let expired = add(not_after, DAY).unwrap();
        assert_eq!(
            decide(&valid(not_after), &names(), DAY, expired),
            Decision::Issue(IssueReason::Expiring)
        );
    }

    #[test]
    fn changed_names_are_reissued_but_order_does_not_matter() {
        let stored = valid(add(now(), 10 * DAY).unwrap());
        let mut reordered = names();
        reordered.reverse();
        assert!(matches!(
            decide(&stored, &reordered, DAY, now()),
            Decision::Keep { .. }
        ));
        let mut more = names();
        more.push("extra.example.com".to_owned());
        assert_eq!(
            decide(&stored, &more, DAY, now()),
            Decision::Issue(IssueReason::NamesChanged)
        );
    }

    #[test]
    fn issued_leaf_carries_the_names_and_lifetime_and_matches_its_key() {
        let issued = issue(generate_key, "team-a/chat", &names(), 90 * DAY, now(), None).unwrap();
        assert!(issued.new_ca);
        let info = check_pair(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes()).unwrap();
        assert_eq!(info.dns_names, names());
        assert_eq!(info.not_after, add(now(), 90 * DAY).unwrap());
        assert_eq!(issued.not_after, info.not_after);
        let ca = check_pair(issued.ca_cert_pem.as_bytes(), issued.ca_key_pem.as_bytes()).unwrap();
        assert!(ca.not_after > info.not_after);
    }

    #[test]
    fn leaf_chains_to_the_ca() {
        let issued = issue(generate_key, "team-a/chat", &names(), 90 * DAY, now(), None).unwrap();
        let leaf_der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        let ca_der = CertificateDer::from_pem_slice(issued.ca_cert_pem.as_bytes()).unwrap();
        let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
        let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
        assert_eq!(leaf.issuer(), ca.subject());
        leaf.verify_signature(Some(ca.public_key()))
            .expect("signed by the CA");
        assert!(ca.is_ca());
        assert!(!leaf.is_ca());
    }

    #[test]
    fn renewal_keeps_a_ca_that_outlives_the_new_leaf() {
        let first = issue(generate_key, "team-a/chat", &names(), 90 * DAY, now(), None).unwrap();
        let stored = || StoredCa {
            cert_pem: &first.ca_cert_pem,
            key_pem: &first.ca_key_pem,
        };
        let later = add(now(), 80 * DAY).unwrap();
        let renewed = issue(
            generate_key,
            "team-a/chat",
            &names(),
            90 * DAY,
            later,
            Some(stored()),
        )
        .unwrap();
        assert!(!renewed.new_ca);
        assert_eq!(renewed.ca_cert_pem, first.ca_cert_pem);
        assert_ne!(renewed.cert_pem, first.cert_pem);
        let near_ca_expiry = add(now(), 3640 * DAY).unwrap();
        let replaced = issue(
            generate_key,
            "team-a/chat",
            &names(),
            90 * DAY,
            near_ca_expiry,
            Some(stored()),
        )
        .unwrap();
        assert!(replaced.new_ca);
    }

    #[test]
    fn a_ca_key_that_does_not_match_its_certificate_is_replaced() {
        let first = issue(generate_key, "team-a/chat", &names(), 90 * DAY, now(), None).unwrap();
        let other = issue(
            generate_key,
            "team-a/other",
            &names(),
            90 * DAY,
            now(),
            None,
        )
        .unwrap();
        let mixed = StoredCa {
            cert_pem: &first.ca_cert_pem,
            key_pem: &other.ca_key_pem,
        };
        assert!(
            issue(
                generate_key,
                "team-a/chat",
                &names(),
                90 * DAY,
                now(),
                Some(mixed)
            )
            .unwrap()
            .new_ca
        );
    }

    #[test]
    fn mismatched_or_garbled_pairs_are_named() {
        let one = issue(generate_key, "a", &names(), DAY * 2, now(), None).unwrap();
        let two = issue(generate_key, "b", &names(), DAY * 2, now(), None).unwrap();
        let err = check_pair(one.cert_pem.as_bytes(), two.key_pem.as_bytes()).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
        let err = check_pair(b"hello", one.key_pem.as_bytes()).unwrap_err();
        assert!(err.contains("tls.crt"), "{err}");
        let err = check_pair(
            one.cert_pem.as_bytes(),
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(err.contains("tls.key"), "{err}");
    }
}
