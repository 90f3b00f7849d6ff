//! The certificates the TLS scenarios serve: self-signed for `localhost`, with an ECDSA
//! P-256 or an RSA 2048 key, written where nginx, HAProxy and the gateway all read them.

use std::path::Path;

use anyhow::{Context as _, ensure};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::CertificateDer;

use crate::proxies::ServingCertificate;

/// The key a served certificate carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// ECDSA on P-256, signing with SHA-256.
    Ecdsa,
    /// RSA with a 2048-bit modulus.
    Rsa,
}

impl KeyKind {
    /// For file names.
    pub fn label(self) -> &'static str {
        match self {
            KeyKind::Ecdsa => "ecdsa",
            KeyKind::Rsa => "rsa",
        }
    }

    /// For tables.
    pub fn title(self) -> &'static str {
        match self {
            KeyKind::Ecdsa => "ECDSA P-256",
            KeyKind::Rsa => "RSA 2048",
        }
    }

    fn key_pair(self, dir: &Path) -> anyhow::Result<KeyPair> {
        match self {
            KeyKind::Ecdsa => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .context("generating an ECDSA P-256 key"),
            // rcgen's ring backend cannot generate RSA keys; OpenSSL, which nginx and HAProxy
            // link anyway, can.
            KeyKind::Rsa => {
                let path = dir.join("rsa-2048.key");
                let status = std::process::Command::new("openssl")
                    .args([
                        "genpkey",
                        "-quiet",
                        "-algorithm",
                        "RSA",
                        "-pkeyopt",
                        "rsa_keygen_bits:2048",
                    ])
                    .arg("-out")
                    .arg(&path)
                    .status()
                    .context("running openssl genpkey")?;
                ensure!(status.success(), "openssl genpkey failed with {status}");
                let pem = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                KeyPair::from_pem(&pem).context("loading the RSA key")
            }
        }
    }
}

/// Generates a key of `kind` and a certificate for `localhost` under `dir`; returns the files
/// and the certificate the load generator pins.
pub fn generate(
    dir: &Path,
    kind: KeyKind,
) -> anyhow::Result<(ServingCertificate, CertificateDer<'static>)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = kind.key_pair(dir)?;
    let certificate = CertificateParams::new(vec!["localhost".to_owned()])?
        .self_signed(&key)
        .with_context(|| format!("signing the {} certificate", kind.title()))?;
    let label = kind.label();
    let files = ServingCertificate {
        label,
        cert: dir.join(format!("{label}.crt")),
        key: dir.join(format!("{label}.key")),
        combined: dir.join(format!("{label}.pem")),
    };
    let (cert_pem, key_pem) = (certificate.pem(), key.serialize_pem());
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    };
    write(&files.cert, &cert_pem)?;
    write(&files.key, &key_pem)?;
    write(&files.combined, &format!("{cert_pem}{key_pem}"))?;
    Ok((files, certificate.der().clone()))
}
