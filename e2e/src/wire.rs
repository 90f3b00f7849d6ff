//! Real WebSocket traffic from the host to a fleet: a token signed as an identity provider
//! would, and a client that speaks wss:// trusting only the operator's `ca.crt` (or plain ws://
//! to a fleet without TLS), with what a test needs to see: the certificate served, the refusal
//! status, how a connection ended.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

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

/// Where and how a client reaches a wss:// fleet.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The address dialled: a Service's ClusterIP, or a loopback port.
    pub address: SocketAddr,
    /// The name the certificate must carry, sent as SNI and Host.
    pub server_name: String,
    pub path: String,
    /// The `ca.crt` the server's certificate must chain to; `None` speaks plain ws://.
    pub ca_pem: Option<String>,
    pub origin: String,
    /// The client's own address, when it must be a particular one (affinity by client IP).
    pub source: Option<std::net::IpAddr>,
}

/// What a connection runs over: a TLS stream for wss://, the TCP stream itself for ws://.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

type Socket = WebSocketStream<Box<dyn Transport>>;

/// One open WebSocket connection.
pub struct Session {
    socket: Socket,
    /// The DER of the leaf certificate the server presented; empty over ws://.
    pub certificate: Vec<u8>,
}

/// How a connection ended, as its client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// A close frame with this code arrived.
    Closed(u16),
    /// The stream ended or failed without a close frame.
    Cut(String),
}

impl Endpoint {
    /// The connection a handshake goes over, and the server's leaf certificate (none over
    /// ws://).
    async fn transport(&self) -> Result<(Box<dyn Transport>, Vec<u8>)> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        if let Some(source) = self.source {
            socket
                .bind(SocketAddr::new(source, 0))
                .with_context(|| format!("binding the client to {source}"))?;
        }
        let tcp = socket
            .connect(self.address)
            .await
            .with_context(|| format!("connecting to {}", self.address))?;
        let Some(ca_pem) = &self.ca_pem else {
            return Ok((Box::new(tcp), Vec::new()));
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.context("reading ca.crt")?)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let name = ServerName::try_from(self.server_name.clone())?;
        let stream = connector
            .connect(name, tcp)
            .await
            .context("TLS handshake (is the certificate signed by ca.crt?)")?;
        let certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| leaf.to_vec())
            .context("the server presented no certificate")?;
        Ok((Box::new(stream), certificate))
    }

    async fn handshake(&self, token: &str, origin: &str) -> Result<Result<Session, u16>> {
        let (stream, certificate) = self.transport().await?;
        let scheme = if self.ca_pem.is_some() { "wss" } else { "ws" };
        let url = format!("{scheme}://{}{}", self.server_name, self.path);
        let mut request = url.into_client_request()?;
        let headers = request.headers_mut();
        headers.insert("Origin", HeaderValue::from_str(origin)?);
        headers.insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {token}"))?,
        );
        match tokio_tungstenite::client_async(request, stream).await {
            Ok((socket, _)) => Ok(Ok(Session {
                socket,
                certificate,
            })),
            Err(WsError::Http(response)) => Ok(Err(response.status().as_u16())),
            Err(err) => Err(err).context("WebSocket handshake"),
        }
    }

    /// Opens a connection with `token`, from the endpoint's origin.
    pub async fn connect(&self, token: &str) -> Result<Session> {
        match self.handshake(token, &self.origin).await? {
            Ok(session) => Ok(session),
            Err(status) => bail!("the handshake was refused with HTTP {status}"),
        }
    }

    /// The HTTP status that refuses a handshake with `token` from `origin`.
    pub async fn refusal(&self, token: &str, origin: &str) -> Result<u16> {
        match self.handshake(token, origin).await? {
            Ok(_) => bail!("the handshake was accepted; expected a refusal"),
            Err(status) => Ok(status),
        }
    }
}

impl Session {
    /// Sends `text` and returns the next text or binary message.
    pub async fn round_trip(&mut self, text: &str) -> Result<String> {
        self.send(text).await?;
        self.next_text().await
    }

    pub async fn send(&mut self, text: &str) -> Result<()> {
        Ok(self.socket.send(Message::text(text)).await?)
    }

    /// The next text or binary message, as text.
    pub async fn next_text(&mut self) -> Result<String> {
        loop {
            match self.socket.next().await.context("the connection ended")?? {
                Message::Text(reply) => return Ok(reply.to_string()),
                Message::Binary(bytes) => return Ok(String::from_utf8_lossy(&bytes).into_owned()),
                Message::Close(frame) => bail!("closed by the server: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// What the test upstream says about this connection: its pod, and the address of the
    /// gateway that forwarded it (`peer`).
    pub async fn whoami(&mut self) -> Result<Value> {
        let reply = self.round_trip("whoami").await?;
        serde_json::from_str(&reply).with_context(|| format!("whoami answered {reply:?}"))
    }

    /// The gateway pod's address, as the upstream saw it.
    pub async fn gateway_ip(&mut self) -> Result<String> {
        let identity = self.whoami().await?;
        identity["peer"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no peer in {identity}"))
    }

    /// Closes the connection normally.
    pub async fn close(mut self) -> Result<()> {
        self.socket.close(None).await?;
        while let Some(Ok(_)) = self.socket.next().await {}
        Ok(())
    }

    /// Waits, sending nothing, until the server ends the connection; returns how.
    pub async fn ending(mut self) -> Ending {
        loop {
            if let Err(ending) = received(self.socket.next().await) {
                return ending;
            }
        }
    }

    /// Sends a numbered message every `interval` and checks that the echoes come back whole
    /// and in order (counting each in `echoes` too), until the server ends the connection or
    /// `stop` changes. On `stop` it sends no more, waits up to [`SETTLE`] for the echoes still
    /// owed, then closes normally.
    pub async fn keep_talking(
        mut self,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
        echoes: Arc<AtomicU64>,
    ) -> Talk {
        let mut talk = Talk::default();
        match self.gateway_ip().await {
            Ok(gateway) => talk.gateway = gateway,
            Err(err) => {
                talk.ending = Some((
                    Ending::Cut(format!("asking whoami: {err:#}")),
                    Instant::now(),
                ));
                return talk;
            }
        }
        let mut ticker = tokio::time::interval(interval);
        let ending = loop {
            tokio::select! {
                // The flag only ever turns true, so any change means stop.
                _ = stop.changed() => match self.settle(&mut talk).await {
                    Ok(()) => {
                        let _ = self.close().await;
                        return talk;
                    }
                    Err(ending) => break ending,
                },
                _ = ticker.tick() => {
                    if let Err(err) = self.socket.send(Message::text(numbered(talk.sent))).await {
                        break Ending::Cut(format!("sending: {err}"));
                    }
                    talk.sent += 1;
                }
                message = self.socket.next() => match received(message) {
                    Ok(Some(text)) => {
                        talk.echo(&text);
                        echoes.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(None) => {}
                    Err(ending) => break ending,
                },
            }
        };
        talk.ending = Some((ending, Instant::now()));
        talk
    }

    /// Reads until every message sent has come back, for at most [`SETTLE`].
    async fn settle(&mut self, talk: &mut Talk) -> Result<(), Ending> {
        let deadline = tokio::time::Instant::now() + SETTLE;
        while talk.echoed < talk.sent {
            let Ok(message) = tokio::time::timeout_at(deadline, self.socket.next()).await else {
                return Ok(());
            };
            if let Some(text) = received(message)? {
                talk.echo(&text);
            }
        }
        Ok(())
    }
}

/// How long a finishing connection waits for the echoes of what it already sent.
const SETTLE: Duration = Duration::from_secs(10);

/// The text of a talking connection's `index`th message.
fn numbered(index: u64) -> String {
    format!("message {index}")
}

/// What one connection of a [`Swarm`] saw.
#[derive(Clone, Debug, Default)]
pub struct Talk {
    /// How and when the server ended it; `None` if it was open until the swarm finished.
    pub ending: Option<(Ending, Instant)>,
    /// Messages sent.
    pub sent: u64,
    /// Messages that came back.
    pub echoed: u64,
    /// The first echo that was not the next message sent: a message lost, altered or
    /// reordered on the way.
    pub misordered: Option<String>,
    /// The address of the gateway pod that carried it.
    pub gateway: String,
}

impl Talk {
    fn echo(&mut self, text: &str) {
        if self.misordered.is_none() && text != numbered(self.echoed) {
            self.misordered = Some(format!(
                "echo {} was {text:?}, expected {:?}",
                self.echoed,
                numbered(self.echoed)
            ));
        }
        self.echoed += 1;
    }

    /// Messages sent that never came back.
    pub fn unanswered(&self) -> u64 {
        self.sent - self.echoed.min(self.sent)
    }
}

/// What one read from the server means: `Ok(Some(text))` a message (binary ones as text),
/// `Ok(None)` a control frame, or how the connection ended.
fn received(
    message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> Result<Option<String>, Ending> {
    match message {
        Some(Ok(Message::Text(text))) => Ok(Some(text.to_string())),
        Some(Ok(Message::Binary(bytes))) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Some(Ok(Message::Close(frame))) => Err(Ending::Closed(
            frame.map_or(1005, |frame| u16::from(frame.code)),
        )),
        Some(Ok(_)) => Ok(None),
        Some(Err(err)) => Err(Ending::Cut(err.to_string())),
        None => Err(Ending::Cut("end of stream".into())),
    }
}

/// Many connections talking at once, each in its own task, until [`Swarm::finish`].
pub struct Swarm {
    stop: tokio::sync::watch::Sender<bool>,
    talks: Vec<tokio::task::JoinHandle<Talk>>,
    echoes: Arc<AtomicU64>,
}

impl Swarm {
    /// Opens `count` connections with `token`; each sends a message every `interval`.
    pub async fn open(
        endpoint: &Endpoint,
        token: &str,
        count: usize,
        interval: Duration,
    ) -> Result<Self> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let echoes = Arc::new(AtomicU64::new(0));
        let mut talks = Vec::with_capacity(count);
        for index in 0..count {
            let session = endpoint
                .connect(token)
                .await
                .with_context(|| format!("opening connection {index} of {count}"))?;
            talks.push(tokio::spawn(session.keep_talking(
                interval,
                stopped.clone(),
                echoes.clone(),
            )));
        }
        Ok(Self {
            stop,
            talks,
            echoes,
        })
    }

    /// How many echoes all connections have received so far.
    pub fn echoed(&self) -> u64 {
        self.echoes.load(Ordering::Relaxed)
    }

    /// How many connections have ended so far.
    pub fn ended(&self) -> usize {
        self.talks.iter().filter(|talk| talk.is_finished()).count()
    }

    /// Stops the connections still open (they close normally) and returns what each saw.
    pub async fn finish(self) -> Result<Vec<Talk>> {
        let _ = self.stop.send(true);
        let mut outcomes = Vec::with_capacity(self.talks.len());
        for talk in self.talks {
            outcomes.push(talk.await.context("a connection's task panicked")?);
        }
        Ok(outcomes)
    }
}
