//! TLS with rustls (ring): the serving certificate, swapped whole on reload so that new
//! handshakes see the new pair while live connections keep theirs, and the client side
//! used for `wss://` upstreams and `https://` key providers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use wsfleet_config::TlsConfig;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The serving certificate; [`ReloadingCertificate::reload`] replaces it atomically.
#[derive(Debug)]
pub(crate) struct ReloadingCertificate {
    files: TlsConfig,
    current: ArcSwap<CertifiedKey>,
    /// The PEM texts last loaded and last refused, to tell real changes from repeated events.
    seen: std::sync::Mutex<SeenFiles>,
}

#[derive(Debug, Default)]
struct SeenFiles {
    loaded: (Vec<u8>, Vec<u8>),
    refused: Option<(Vec<u8>, Vec<u8>)>,
}

impl ReloadingCertificate {
    /// Loads the pair named by `files`; a missing, malformed or mismatched pair is an error.
    pub fn load(files: &TlsConfig) -> anyhow::Result<Self> {
        let (cert_pem, key_pem) = read_pair(files)?;
        let key = certified_key(&cert_pem, &key_pem, files)?;
        Ok(Self {
            files: files.clone(),
            current: ArcSwap::from_pointee(key),
            seen: std::sync::Mutex::new(SeenFiles {
                loaded: (cert_pem, key_pem),
                refused: None,
            }),
        })
    }

    /// Re-reads both files. `Ok(false)`: nothing new (unchanged, or refused before). On
    /// error the old pair stays.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let pair = read_pair(&self.files)?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.loaded == pair || seen.refused.as_ref() == Some(&pair) {
            return Ok(false);
        }
        match certified_key(&pair.0, &pair.1, &self.files) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                seen.loaded = pair;
                seen.refused = None;
                Ok(true)
            }
            Err(err) => {
                seen.refused = Some(pair);
                Err(err)
            }
        }
    }

    /// notAfter of the certificate served now (the first of the chain), in Unix seconds;
    /// `None` if it cannot be read.
    pub fn not_after(&self) -> Option<i64> {
        self.current
            .load()
            .cert
            .first()
            .and_then(|leaf| certificate_not_after(leaf))
    }

    /// A rustls server config that asks this resolver on every handshake.
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<Arc<ServerConfig>> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read_pair(files: &TlsConfig) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let read =
        |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    Ok((read(&files.cert_file)?, read(&files.key_file)?))
}

fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    files: &TlsConfig,
) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("tls.certFile {}: invalid PEM", files.cert_file.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "tls.certFile {}: no certificate",
        files.cert_file.display()
    );
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .with_context(|| format!("tls.keyFile {}: no private key", files.key_file.display()))?;
    CertifiedKey::from_der(chain, key, &provider()).with_context(|| {
        format!(
            "tls.keyFile {} does not match tls.certFile {}",
            files.key_file.display(),
            files.cert_file.display()
        )
    })
}

/// notAfter of a DER certificate in Unix seconds: `tbsCertificate.validity.notAfter` (RFC 5280
/// section 4.1), read with the few DER rules a certificate needs, so no X.509 crate is linked.
fn certificate_not_after(der: &[u8]) -> Option<i64> {
    const SEQUENCE: u8 = 0x30;
    let (certificate, _) = der_element(der, SEQUENCE)?;
    let (tbs, _) = der_element(certificate, SEQUENCE)?;
    // [0] version, present from v2 on.
    let rest = match der_element(tbs, 0xA0) {
        Some((_, rest)) => rest,
        None => tbs,
    };
    let (_, rest) = der_element(rest, 0x02)?; // serialNumber
    let (_, rest) = der_element(rest, SEQUENCE)?; // signature
    let (_, rest) = der_element(rest, SEQUENCE)?; // issuer
    let (validity, _) = der_element(rest, SEQUENCE)?;
    let not_before_tag = *validity.first()?;
    let (_, not_after) = der_element(validity, not_before_tag)?;
    match *not_after.first()? {
        UTC_TIME => der_time(der_element(not_after, UTC_TIME)?.0, 2),
        GENERALIZED_TIME => der_time(der_element(not_after, GENERALIZED_TIME)?.0, 4),
        _ => None,
    }
}

const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The content of the element with `tag` at the start of `input`, and what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let octets = usize::from(first & 0x7F);
        if octets == 0 || octets > 4 || rest.len() < octets {
            return None;
        }
        let len = rest[..octets]
            .iter()
            .fold(0usize, |len, &byte| (len << 8) | usize::from(byte));
        (len, &rest[octets..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, `year_digits` 2) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, 4) as
/// Unix seconds; RFC 5280 requires seconds and `Z`.
fn der_time(text: &[u8], year_digits: usize) -> Option<i64> {
    if text.len() != year_digits + 11 || text.last() != Some(&b'Z') {
        return None;
    }
    let digits = |from: usize, count: usize| -> Option<i64> {
        text[from..from + count].iter().try_fold(0i64, |value, &c| {
            c.is_ascii_digit().then(|| value * 10 + i64::from(c - b'0'))
        })
    };
    let year = match digits(0, year_digits)? {
        // RFC 5280 section 4.1.2.5.1: two-digit years 50-99 are 19YY, 00-49 are 20YY.
        short if year_digits == 2 && short >= 50 => 1900 + short,
        short if year_digits == 2 => 2000 + short,
        year => year,
    };
    let at = year_digits;
    let (month, day) = (digits(at, 2)?, digits(at + 2, 2)?);
    let (hour, minute, second) = (digits(at + 4, 2)?, digits(at + 6, 2)?, digits(at + 8, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The client config for `wss://` upstreams: roots from `ca_file`, or the system's.
pub(crate) fn upstream_client_config(ca_file: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let ca = ca_file
        .map(|path| CaBundle::read("upstream.caFile", path))
        .transpose()?;
    client_config(ca.as_ref())
}

/// A PEM bundle of trusted roots, read from the file that `field` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CaBundle {
    field: &'static str,
    path: PathBuf,
    pem: Vec<u8>,
}

impl CaBundle {
    pub fn read(field: &'static str, path: &Path) -> anyhow::Result<Self> {
        let pem =
            std::fs::read(path).with_context(|| format!("{field}: reading {}", path.display()))?;
        Ok(Self {
            field,
            path: path.to_owned(),
            pem,
        })
    }
}

/// A client config trusting `ca`, or the system's roots without one.
pub(crate) fn client_config(ca: Option<&CaBundle>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(CaBundle { field, path, pem }) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert =
                    cert.with_context(|| format!("{field} {}: invalid PEM", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("{field} {}: unusable certificate", path.display()))?;
            }
            anyhow::ensure!(
                !roots.is_empty(),
                "{field} {}: no certificate",
                path.display()
            );
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate expiring at midnight UTC of the day given.
    fn certificate_expiring(year: i32, month: u8, day: u8) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn not_after_is_read_from_utc_and_generalized_time() {
        // 2030: UTCTime; from 2050 on certificates carry GeneralizedTime.
        let utc = certificate_expiring(2030, 1, 2);
        assert_eq!(certificate_not_after(&utc), Some(1_893_542_400));
        let generalized = certificate_expiring(2060, 6, 15);
        assert_eq!(certificate_not_after(&generalized), Some(2_854_483_200));
    }

    #[test]
    fn dates_and_broken_input() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(der_time(b"991231235959Z", 2), Some(946_684_799));
        assert_eq!(der_time(b"20000229000000Z", 4), Some(951_782_400));
        assert_eq!(der_time(b"2000022900000Z", 4), None);
        assert_eq!(der_time(b"000229000000+", 2), None);
        assert_eq!(certificate_not_after(b"\x30\x03\x30\x01"), None);
        assert_eq!(certificate_not_after(&[]), None);
    }
}
