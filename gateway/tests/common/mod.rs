//! Test harness: a real gateway process, a real WebSocket upstream, real clients, all on
//! 127.0.0.1, and a helper that waits for conditions instead of sleeping.
#![allow(dead_code)] // Each test binary uses its own part of the harness.

use std::future::Future;
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::Response as ClientResponse;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{ClientRequestBuilder, Message};

/// Generous bound for conditions that normally hold within milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `condition` until it holds; panics with `what` after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Awaits `future` within [`PATIENCE`] or panics naming `what`.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A handshake the upstream saw.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub uri: String,
    pub headers: Vec<(String, String)>,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Something the upstream received besides data it echoed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
    /// The connection ended without a close frame.
    Dropped,
}

/// Shared records of what the echo upstream saw.
#[derive(Debug, Default)]
pub struct Records {
    pub requests: Mutex<Vec<SeenRequest>>,
    pub events: Mutex<Vec<Seen>>,
    /// The address each connection came from, in the order they were accepted.
    pub peers: Mutex<Vec<SocketAddr>>,
    /// Bytes of payload the upstream managed to send in `flood` mode.
    pub flooded: std::sync::atomic::AtomicU64,
}

impl Records {
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.requests.lock().unwrap().clone()
    }
    pub fn events(&self) -> Vec<Seen> {
        self.events.lock().unwrap().clone()
    }
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}

/// A tokio-tungstenite echo server. Text commands change its behaviour:
/// `close:CODE:REASON` closes with that code, `big:N` answers N bytes, `drop` drops the TCP
/// connection, `flood:N` sends N bytes in 64 KiB messages as fast as it may.
pub struct EchoUpstream {
    pub address: SocketAddr,
    pub records: Arc<Records>,
}

impl EchoUpstream {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// With `tls`, the upstream speaks wss:// using that rustls server config.
    pub async fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let records = Arc::new(Records::default());
        let shared = records.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    return;
                };
                shared.peers.lock().unwrap().push(peer);
                let records = shared.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(config) => {
                            if let Ok(stream) =
                                tokio_rustls::TlsAcceptor::from(config).accept(tcp).await
                            {
                                echo(stream, records).await;
                            }
                        }
                        None => echo(tcp, records).await,
                    }
                });
            }
        });
        Self { address, records }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.address)
    }
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(stream: S, records: Arc<Records>) {
    let seen = records.clone();
    #[allow(clippy::result_large_err)] // The callback's signature is tungstenite's.
    let callback = move |request: &Request, mut response: Response| {
        seen.requests.lock().unwrap().push(SeenRequest {
            uri: request.uri().to_string(),
            headers: request
                .headers()
                .iter()
                .map(|(name, value)| {
                    (
                        name.to_string(),
                        value.to_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
        });
        let offered = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .flat_map(|value| value.to_str().unwrap_or_default().split(','))
            .map(str::trim)
            .any(|protocol| protocol == "chat");
        if offered {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static("chat"));
        }
        Ok(response)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    while let Some(message) = ws.next().await {
        let Ok(message) = message else {
            records.events.lock().unwrap().push(Seen::Dropped);
            return;
        };
        match message {
            Message::Text(text) => {
                let text = text.as_str();
                if let Some(rest) = text.strip_prefix("close:") {
                    let (code, reason) = rest.split_once(':').unwrap();
                    let frame = CloseFrame {
                        code: CloseCode::from(code.parse::<u16>().unwrap()),
                        reason: reason.to_owned().into(),
                    };
                    let _ = ws.close(Some(frame)).await;
                } else if let Some(size) = text.strip_prefix("big:") {
                    let _ = ws
                        .send(Message::binary(vec![7u8; size.parse().unwrap()]))
                        .await;
                } else if text == "drop" {
                    return;
                } else if let Some(total) = text.strip_prefix("flood:") {
                    let total: u64 = total.parse().unwrap();
                    let chunk = vec![1u8; 64 * 1024];
                    while records.flooded.load(std::sync::atomic::Ordering::Relaxed) < total {
                        if ws.send(Message::binary(chunk.clone())).await.is_err() {
                            return;
                        }
                        records
                            .flooded
                            .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                } else if ws.send(Message::text(text.to_owned())).await.is_err() {
                    return;
                }
            }
            Message::Binary(bytes) => {
                if ws.send(Message::Binary(bytes)).await.is_err() {
                    return;
                }
            }
            Message::Ping(payload) => records
                .events
                .lock()
                .unwrap()
                .push(Seen::Ping(payload.to_vec())),
            Message::Pong(payload) => records
                .events
                .lock()
                .unwrap()
                .push(Seen::Pong(payload.to_vec())),
            Message::Close(frame) => {
                records.events.lock().unwrap().push(Seen::Close(
                    frame.map(|frame| (u16::from(frame.code), frame.reason.to_string())),
                ));
            }
            Message::Frame(_) => {}
        }
    }
}

/// A running gateway process with its own config file.
pub struct Gateway {
    pub child: Child,
    pub address: SocketAddr,
    pub metrics_address: SocketAddr,
    pub dir: tempfile::TempDir,
    pub tls: bool,
}

impl Gateway {
    /// Starts the gateway with `extra` YAML appended to a config that sets the listen and
    /// metrics addresses and the upstream URL, and waits until it is ready.
    pub async fn start(upstream_url: &str, extra: &str) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), upstream_url, extra).await
    }

    /// Like [`Gateway::start`] with a prepared directory (for key and certificate files).
    pub async fn start_in(dir: tempfile::TempDir, upstream_url: &str, extra: &str) -> Self {
        Self::start_command(dir, upstream_url, extra, |_| {}).await
    }

    /// Like [`Gateway::start_in`], with further arguments or environment set by `adjust`.
    pub async fn start_command(
        dir: tempfile::TempDir,
        upstream_url: &str,
        extra: &str,
        adjust: impl FnOnce(&mut Command),
    ) -> Self {
        let gateway = Self::launch(dir, upstream_url, extra, adjust);
        eventually("the gateway to become ready", || gateway.is_ready()).await;
        gateway
    }

    /// Starts the gateway like [`Gateway::start_command`] without waiting until it is ready.
    pub fn launch(
        dir: tempfile::TempDir,
        upstream_url: &str,
        extra: &str,
        adjust: impl FnOnce(&mut Command),
    ) -> Self {
        let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics_address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = render_config(address, metrics_address, upstream_url, extra);
        std::fs::write(dir.path().join("gateway.yaml"), config).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_wsfleet-gateway"));
        command
            .arg("--config")
            .arg(dir.path().join("gateway.yaml"))
            .env("RUST_LOG", "wsfleet_gateway=debug,wsfleet_probes=debug")
            .stdin(Stdio::null());
        adjust(&mut command);
        let child = command.spawn().unwrap();
        Self {
            child,
            address,
            metrics_address,
            tls: extra.contains("certFile"),
            dir,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    /// Rewrites the config the way Kubernetes updates a mounted ConfigMap: a new file renamed
    /// over the old one.
    pub fn rewrite_config(&self, upstream_url: &str, extra: &str) {
        let config = render_config(self.address, self.metrics_address, upstream_url, extra);
        replace_file(&self.config_path(), config.as_bytes());
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://localhost:{}{path}", self.address.port())
    }

    pub async fn is_ready(&self) -> bool {
        matches!(
            http_get(self.metrics_address, "/readyz").await,
            Some((200, _))
        )
    }

    /// The value of one metric series, e.g. `wsfleet_gateway_refusals_total{reason="rate_limited"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, body) = http_get(self.metrics_address, "/metrics")
            .await
            .expect("metrics answer");
        body.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in\n{body}"))
    }

    /// Waits until a metric series reaches `value`.
    pub async fn wait_metric(&self, series: &str, value: f64) {
        eventually(&format!("{series} to reach {value}"), || async {
            self.metric(series).await >= value
        })
        .await;
    }

    /// Resident memory of the gateway process in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// The gateway's stdout line by line, read on a thread of its own, until it exits. Needs
    /// a gateway started with stdout piped (see [`Gateway::start_command`]).
    pub fn stdout_lines(&mut self) -> tokio::sync::mpsc::UnboundedReceiver<String> {
        let stdout = self
            .child
            .stdout
            .take()
            .expect("the gateway's stdout is piped");
        let (lines, received) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        received
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `extra` may start with `listen:` lines (indented), which join the listen section.
fn render_config(
    address: SocketAddr,
    metrics_address: SocketAddr,
    upstream_url: &str,
    extra: &str,
) -> String {
    let (listen_extra, extra) = match extra.strip_prefix("listen:\n") {
        Some(rest) => {
            let end = rest.find(|c: char| c != ' ').map_or(0, |_| {
                rest.lines()
                    .take_while(|line| line.starts_with("  "))
                    .map(|line| line.len() + 1)
                    .sum()
            });
            rest.split_at(end)
        }
        None => ("", extra),
    };
    format!(
        "listen:\n  address: {address}\n{listen_extra}metrics:\n  address: {metrics_address}\nupstream:\n  url: {upstream_url}\n  connectTimeout: 2s\n  handshakeTimeout: 2s\n{extra}"
    )
}

/// Writes `contents` to a temporary sibling and renames it over `path` (an atomic swap).
pub fn replace_file(path: &Path, contents: &[u8]) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, contents).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// A plain HTTP GET; `None` if the server is not answering.
pub async fn http_get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).await.ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// Sends a raw request head and returns the status code of the answer.
pub async fn raw_status(address: SocketAddr, head: &str) -> u16 {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    within("an HTTP answer", stream.read_to_end(&mut response))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

/// An upgrade request head for `path` with `extra` header lines.
pub fn upgrade_head(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

pub type Client = WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Connects a WebSocket client with extra request headers.
pub async fn connect(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(Client, ClientResponse), tokio_tungstenite::tungstenite::Error> {
    let mut request = ClientRequestBuilder::new(url.parse().unwrap());
    for (name, value) in headers {
        request = request.with_header(*name, *value);
    }
    let port = url
        .rsplit_once(':')
        .unwrap()
        .1
        .split('/')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(tokio_tungstenite::tungstenite::Error::Io)?;
    tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(tcp)).await
}

/// The HTTP status of a refused WebSocket handshake.
pub async fn refused_status(url: &str, headers: &[(&str, &str)]) -> u16 {
    match connect(url, headers).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, the handshake succeeded"),
    }
}

/// Sends a text message and returns the echoed text.
pub async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut WebSocketStream<S>,
    text: &str,
) -> String {
    client.send(Message::text(text.to_owned())).await.unwrap();
    loop {
        match within("an echo", client.next()).await {
            Some(Ok(Message::Text(echo))) => return echo.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected an echo of {text:?}, got {other:?}"),
        }
    }
}

/// Reads until a close frame arrives and the connection ends (the client answers the close
/// on the way); returns the code and reason.
pub async fn next_close<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut WebSocketStream<S>,
) -> Option<(u16, String)> {
    let mut close = None;
    loop {
        match within("a close frame and the end of the stream", client.next()).await {
            Some(Ok(Message::Close(frame))) => {
                close = Some(frame.map(|frame| (u16::from(frame.code), frame.reason.to_string())));
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return close.expect("the stream ended without a close frame"),
        }
    }
}

/// TCP states as `/proc/net/tcp` numbers them.
pub const TCP_TIME_WAIT: u8 = 6;

/// The state of this network namespace's IPv4 TCP socket bound to `local` and connected to
/// `remote`, if there is one.
pub fn tcp_state(local: SocketAddr, remote: SocketAddr) -> Option<u8> {
    let hex = |address: SocketAddr| match address {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => panic!("only IPv4 sockets are listed in /proc/net/tcp"),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").expect("reading /proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
            .then(|| u8::from_str_radix(fields[3], 16).expect("a hex TCP state"))
    })
}
