//! TLS with rustls (ring): the serving certificate, swapped whole on reload so that new
//! handshakes see the new pair while live connections keep theirs, and the client side
//! used for `wss://` upstreams.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::TlsConfig;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The serving certificate; [`ReloadingCertificate::reload`] replaces it atomically.
#[derive(Debug)]
pub struct ReloadingCertificate {
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

/// The client config for `wss://` upstreams: roots from `ca_file`, or the system's.
pub fn upstream_client_config(ca_file: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("upstream.caFile: reading {}", path.display()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert
                    .with_context(|| format!("upstream.caFile {}: invalid PEM", path.display()))?;
                roots.add(cert).with_context(|| {
                    format!("upstream.caFile {}: unusable certificate", path.display())
                })?;
            }
            anyhow::ensure!(
                !roots.is_empty(),
                "upstream.caFile {}: no certificate",
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
