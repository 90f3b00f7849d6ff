//! Real WebSocket traffic for the demo: an echo upstream, a token signed like an identity
//! provider would, and a client that speaks wss:// trusting only the operator's ca.crt.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use futures::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Starts an upstream on 127.0.0.1 that echoes every message back; returns its address.
pub async fn start_echo_upstream() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(echo(stream));
        }
    });
    Ok(address)
}

async fn echo(stream: TcpStream) {
    let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    while let Some(Ok(message)) = socket.next().await {
        if message.is_text() || message.is_binary() {
            let echoed = match message {
                Message::Text(text) => Message::text(format!("echo: {text}")),
                other => other,
            };
            if socket.send(echoed).await.is_err() {
                return;
            }
        }
    }
}

/// An RS256 JWT for `subject`, signed with the PEM private key, valid for ten minutes.
pub fn sign_token(
    private_pem: &[u8],
    issuer: &str,
    audience: &str,
    subject: &str,
) -> Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = serde_json::json!({
        "iss": issuer, "aud": audience, "sub": subject, "iat": now, "exp": now + 600,
    });
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(private_pem).context("reading the RSA key")?;
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

/// How the demo client reaches the gateway.
pub struct ClientSettings<'a> {
    /// Where the gateway listens (loopback).
    pub address: SocketAddr,
    /// The name the certificate must carry, sent as SNI and Host.
    pub server_name: &'a str,
    pub path: &'a str,
    pub ca_pem: &'a str,
    pub origin: &'a str,
    pub token: &'a str,
}

/// Connects over wss:// trusting only `ca_pem`, sends each message and returns the replies.
pub async fn exchange(settings: &ClientSettings<'_>, messages: &[&str]) -> Result<Vec<String>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(settings.ca_pem.as_bytes()) {
        roots.add(cert.context("reading ca.crt")?)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = TcpStream::connect(settings.address)
        .await
        .with_context(|| format!("connecting to the gateway at {}", settings.address))?;
    let name = ServerName::try_from(settings.server_name.to_owned())?;
    let stream = connector
        .connect(name, tcp)
        .await
        .context("TLS handshake with the gateway (is the certificate signed by ca.crt?)")?;

    let url = format!("wss://{}{}", settings.server_name, settings.path);
    let mut request = url.into_client_request()?;
    let headers = request.headers_mut();
    headers.insert("Origin", HeaderValue::from_str(settings.origin)?);
    headers.insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {}", settings.token))?,
    );
    let (mut socket, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .context("WebSocket handshake through the gateway")?;
    ensure!(
        response.status() == 101,
        "handshake answered {}",
        response.status()
    );

    let mut replies = Vec::new();
    for message in messages {
        socket.send(Message::text(*message)).await?;
        let reply = loop {
            match socket
                .next()
                .await
                .context("the gateway closed the connection")??
            {
                Message::Text(text) => break text.to_string(),
                Message::Binary(bytes) => break String::from_utf8_lossy(&bytes).into_owned(),
                _ => continue,
            }
        };
        replies.push(reply);
    }
    socket.close(None).await?;
    Ok(replies)
}
