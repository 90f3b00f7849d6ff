//! The load generator's end of a connection: plain TCP for `ws://`, TLS 1.3 for `wss://`.
//!
//! Every TLS client offers one cipher suite and one key-exchange group, so that nginx,
//! HAProxy and the gateway all negotiate the same handshake, and trusts exactly the
//! certificate the runner generated (pinned), so that verifying a chain costs the load
//! generator's core as little as possible.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, Resumption};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, HandshakeKind, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::frame::FrameBuf;
use crate::handshake::{self, Endpoint};

/// Sessions one client keeps for resumption (rustls keeps up to eight tickets per server).
const SESSION_CACHE: usize = 256;

/// How the load generator speaks TLS to a `wss://` target.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    connector: TlsConnector,
    name: ServerName<'static>,
    resume: bool,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// TLS 1.3 with AES-128-GCM and X25519 only, trusting exactly `certificate`; with
    /// `resume`, sessions are kept and offered again (tickets), otherwise every handshake
    /// is a full one.
    pub fn new(certificate: CertificateDer<'static>, resume: bool) -> anyhow::Result<Self> {
        let provider = Arc::new(CryptoProvider {
            cipher_suites: vec![ring::cipher_suite::TLS13_AES_128_GCM_SHA256],
            kx_groups: vec![ring::kx_group::X25519],
            ..ring::default_provider()
        });
        let verifier = PinnedCertificate {
            certificate,
            algorithms: provider.signature_verification_algorithms,
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS 1.3 with the ring provider")?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config.resumption = if resume {
            Resumption::in_memory_sessions(SESSION_CACHE)
        } else {
            Resumption::disabled()
        };
        let config = Arc::new(config);
        Ok(Self {
            connector: TlsConnector::from(config.clone()),
            config,
            name: ServerName::try_from("localhost")?,
            resume,
        })
    }

    /// The same client with a session store of its own (when it resumes at all): clients
    /// sharing one store would take each other's tickets.
    pub fn with_own_sessions(&self) -> Self {
        if !self.resume {
            return self.clone();
        }
        let mut config = ClientConfig::clone(&self.config);
        config.resumption = Resumption::in_memory_sessions(SESSION_CACHE);
        let config = Arc::new(config);
        Self {
            connector: TlsConnector::from(config.clone()),
            config,
            name: self.name.clone(),
            resume: true,
        }
    }
}

/// Accepts the one certificate the runner generated, and checks the handshake's signature
/// against it as any client would.
#[derive(Debug)]
struct PinnedCertificate {
    certificate: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.certificate.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not the benchmark's certificate".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// An upgraded client connection.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// What one upgrade produced.
pub struct Upgraded {
    pub conn: Conn,
    pub frames: FrameBuf,
    /// The TLS handshake resumed an earlier session.
    pub resumed: bool,
}

/// Connects (from `source`, if given), runs TLS when `tls` is given, and upgrades.
pub async fn connect(
    endpoint: &Endpoint,
    tls: Option<&TlsClient>,
    source: Option<IpAddr>,
    bearer: Option<&str>,
) -> anyhow::Result<Upgraded> {
    let tcp = handshake::dial(endpoint, source).await?;
    match tls {
        None => {
            let (tcp, frames) = handshake::upgrade(tcp, endpoint, bearer).await?;
            Ok(Upgraded {
                conn: Conn::Plain(tcp),
                frames,
                resumed: false,
            })
        }
        Some(tls) => {
            let stream = tls
                .connector
                .connect(tls.name.clone(), tcp)
                .await
                .context("TLS handshake")?;
            let resumed = stream.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
            let (stream, frames) = handshake::upgrade(stream, endpoint, bearer).await?;
            Ok(Upgraded {
                conn: Conn::Tls(Box::new(stream)),
                frames,
                resumed,
            })
        }
    }
}

/// The reading half of a [`Conn`].
pub enum ConnRead {
    Plain(OwnedReadHalf),
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

/// The writing half of a [`Conn`].
pub enum ConnWrite {
    Plain(OwnedWriteHalf),
    Tls(WriteHalf<TlsStream<TcpStream>>),
}

impl Conn {
    /// Halves for a reader task and a writer task; a TLS session is shared through a lock.
    pub fn split(self) -> (ConnRead, ConnWrite) {
        match self {
            Conn::Plain(tcp) => {
                let (read, write) = tcp.into_split();
                (ConnRead::Plain(read), ConnWrite::Plain(write))
            }
            Conn::Tls(tls) => {
                let (read, write) = tokio::io::split(*tls);
                (ConnRead::Tls(read), ConnWrite::Tls(write))
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for ConnRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ConnRead::Plain(read) => Pin::new(read).poll_read(cx, buf),
            ConnRead::Tls(read) => Pin::new(read).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ConnWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ConnWrite::Plain(write) => Pin::new(write).poll_write(cx, buf),
            ConnWrite::Tls(write) => Pin::new(write).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ConnWrite::Plain(write) => Pin::new(write).poll_flush(cx),
            ConnWrite::Tls(write) => Pin::new(write).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ConnWrite::Plain(write) => Pin::new(write).poll_shutdown(cx),
            ConnWrite::Tls(write) => Pin::new(write).poll_shutdown(cx),
        }
    }
}
