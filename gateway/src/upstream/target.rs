//! The upstream side of the handshake: connect (TCP, then TLS for `wss://`), forward the
//! client's upgrade request, and read the upstream's answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::telemetry::metrics::UpstreamError;
use crate::upstream::addresses::UpstreamAddresses;
use crate::wire::forwarded::{self, ClientChain};
use crate::wire::handshake::{self, UpgradeAnswer, UpgradeRequest, push_header};
use crate::wire::refusal::Refusal;
use crate::wire::socket_options;
use crate::wire::tls_stream::ClientTlsStream;
use crate::wire::transport::Transport;
use wsfleet_config::{Compression, TcpConfig, UpstreamConfig};

/// The least time one upstream address gets to accept a connection when a name has many.
const MIN_CONNECT_PER_ADDRESS: Duration = Duration::from_secs(1);
/// Upstream answers larger than this are treated as broken.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// A parsed `upstream.url` with what is needed to reach it.
#[derive(Debug)]
pub(crate) struct UpstreamTarget {
    addresses: UpstreamAddresses,
    /// The `Host` header value.
    authority: String,
    path: String,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    connect_timeout: Duration,
    handshake_timeout: Duration,
    tcp: TcpConfig,
}

/// A failed upstream handshake: what the client is answered and what is counted.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub(crate) struct UpstreamFailure {
    pub refusal: Refusal,
    pub kind: UpstreamError,
    pub detail: String,
}

impl UpstreamFailure {
    fn new(kind: UpstreamError, detail: impl std::fmt::Display) -> Self {
        let refusal = match kind {
            UpstreamError::Timeout => Refusal::UpstreamTimeout,
            _ => Refusal::UpstreamUnavailable,
        };
        Self {
            refusal,
            kind,
            detail: detail.to_string(),
        }
    }
}

/// What the gateway adds to and removes from the client's request.
#[derive(Debug)]
pub(crate) struct ForwardPlan<'a> {
    pub client: &'a ClientChain,
    pub client_tls: bool,
    /// The client's path beyond `listen.path`, appended to the upstream's path.
    pub path_suffix: &'a str,
    pub compression: Compression,
    /// `validation.allowedSubprotocols`: other offered entries are dropped.
    pub allowed_subprotocols: &'a [String],
    /// The query parameter the client's token may come in: dropped, like the subprotocol
    /// token entry, so the upstream (and its logs) never see the token.
    pub token_query_parameter: Option<&'a str>,
    /// Headers the gateway sets (claims); client copies of the same names are dropped.
    pub set_headers: Vec<(String, String)>,
}

/// An upgraded upstream connection.
#[derive(Debug)]
pub(crate) struct OpenUpstream {
    pub stream: Transport,
    /// When the connection (TCP, and TLS for `wss://`) was up, before the upgrade was sent.
    pub connected: Instant,
    pub answer: UpgradeAnswer,
    /// Bytes the upstream sent right after its answer: its first frames.
    pub early: Vec<u8>,
}

impl UpstreamTarget {
    /// Parses the URL and prepares TLS for `wss://`.
    pub fn from_config(config: &UpstreamConfig, tcp: TcpConfig) -> anyhow::Result<Self> {
        let (secure, rest) = match config.url.split_once("://") {
            Some(("ws", rest)) => (false, rest),
            Some(("wss", rest)) => (true, rest),
            _ => anyhow::bail!(
                "upstream.url: scheme must be ws:// or wss://, got {:?}",
                config.url
            ),
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        let default_port = if secure { 443 } else { 80 };
        let (host, port) = split_host_port(authority, default_port)
            .with_context(|| format!("upstream.url: bad host or port in {:?}", config.url))?;
        let tls = if secure {
            let name = ServerName::try_from(host.clone()).with_context(|| {
                format!("upstream.url: {host:?} is not a valid TLS server name")
            })?;
            Some((
                crate::wire::tls::upstream_client_config(config.ca_file.as_deref())?,
                name,
            ))
        } else {
            None
        };
        Ok(Self {
            addresses: UpstreamAddresses::new(&host, port),
            authority: authority.to_owned(),
            path,
            tls,
            connect_timeout: config.connect_timeout,
            handshake_timeout: config.handshake_timeout,
            tcp,
        })
    }

    /// Connects, forwards the upgrade and returns the upgraded stream.
    pub async fn open(
        &self,
        request: &UpgradeRequest,
        plan: &ForwardPlan<'_>,
    ) -> Result<OpenUpstream, UpstreamFailure> {
        let mut stream = tokio::time::timeout(self.connect_timeout, self.connect())
            .await
            .map_err(|_| {
                UpstreamFailure::new(
                    UpstreamError::Timeout,
                    format!("connect to {} timed out", self.authority),
                )
            })??;
        let connected = Instant::now();
        let head = self.render_request(request, plan);
        let exchange = async {
            stream.write_all(head.as_bytes()).await.map_err(|err| {
                UpstreamFailure::new(
                    UpstreamError::Connect,
                    format!("sending the upgrade: {err}"),
                )
            })?;
            handshake::read_head(&mut stream, MAX_ANSWER_BYTES)
                .await
                .map_err(|err| {
                    UpstreamFailure::new(
                        UpstreamError::Rejected,
                        format!("reading the answer: {err}"),
                    )
                })
        };
        let answer = tokio::time::timeout(self.handshake_timeout, exchange)
            .await
            .map_err(|_| {
                UpstreamFailure::new(
                    UpstreamError::Timeout,
                    format!("{} did not answer the upgrade in time", self.authority),
                )
            })??;
        let parsed = UpgradeAnswer::parse(&answer.head)
            .map_err(|err| UpstreamFailure::new(UpstreamError::Rejected, err))?;
        Ok(OpenUpstream {
            stream,
            connected,
            answer: parsed,
            early: answer.rest,
        })
    }

    async fn connect(&self) -> Result<Transport, UpstreamFailure> {
        let connect_failed = |detail: String| UpstreamFailure::new(UpstreamError::Connect, detail);
        let candidates = self
            .addresses
            .for_connection()
            .await
            .map_err(|err| connect_failed(err.to_string()))?;
        // Each address gets a share of the budget, so one that never answers (a pod gone
        // without a trace) leaves time for the next.
        let count = candidates.count();
        let per_address = (self.connect_timeout / count as u32).max(MIN_CONNECT_PER_ADDRESS);
        let mut refused = Vec::new();
        let mut connected = None;
        for address in candidates.iter() {
            let attempt = TcpStream::connect(address);
            // A lone address has the whole budget, which `open` bounds already. A second timer
            // would cost a system call per handshake: tokio wakes its own driver whenever a new
            // timer is its earliest.
            let outcome = if count == 1 {
                Ok(attempt.await)
            } else {
                tokio::time::timeout(per_address, attempt).await
            };
            let failure = match outcome {
                Ok(Ok(tcp)) => {
                    connected = Some(tcp);
                    break;
                }
                Ok(Err(err)) => err.to_string(),
                Err(_) => format!("no answer within {per_address:?}"),
            };
            // A name's addresses are listed; an address URL needs no repeating.
            refused.push(if count == 1 {
                failure
            } else {
                format!("{address}: {failure}")
            });
        }
        let tcp = connected.ok_or_else(|| {
            connect_failed(format!(
                "connect to {}: {}",
                self.authority,
                refused.join("; ")
            ))
        })?;
        // A fresh socket has Nagle's algorithm on.
        if let Err(err) = socket_options::apply(&tcp, &self.tcp, false) {
            tracing::debug!(error = %err, "setting the upstream socket's tcp options failed");
        }
        match &self.tls {
            None => Ok(Transport::Plain(tcp)),
            Some((config, name)) => {
                let tls = ClientTlsStream::connect(tcp, config.clone(), name.clone())
                    .await
                    .map_err(|err| {
                        UpstreamFailure::new(
                            UpstreamError::Connect,
                            format!("TLS with {}: {err}", self.authority),
                        )
                    })?;
                Ok(Transport::ClientTls(Box::new(tls)))
            }
        }
    }

    /// The request head sent upstream, written into one buffer with no temporary strings.
    fn render_request(&self, request: &UpgradeRequest, plan: &ForwardPlan<'_>) -> String {
        let client_bytes: usize = request
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len() + 4)
            .sum();
        let mut out = String::with_capacity(client_bytes + self.path.len() + 256);
        let (base, upstream_query) = match self.path.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (self.path.as_str(), None),
        };
        out.push_str("GET ");
        out.push_str(base);
        let suffix = plan.path_suffix.trim_start_matches('/');
        if !suffix.is_empty() {
            if !base.ends_with('/') {
                out.push('/');
            }
            out.push_str(suffix);
        }
        let client_query = request.query_pairs().filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(name, _)| name);
            Some(name) != plan.token_query_parameter
        });
        for (index, query) in upstream_query.into_iter().chain(client_query).enumerate() {
            out.push(if index == 0 { '?' } else { '&' });
            out.push_str(query);
        }
        out.push_str(" HTTP/1.1\r\n");
        push_header(&mut out, "Host", &self.authority);
        out.push_str("Upgrade: websocket\r\nConnection: Upgrade\r\n");
        let set_by_gateway = |name: &str| {
            plan.set_headers
                .iter()
                .any(|(set, _)| set.eq_ignore_ascii_case(name))
        };
        for (name, value) in &request.headers {
            if !is_rewritten(name) && !set_by_gateway(name) {
                push_header(&mut out, name, value);
            }
        }
        push_list(
            &mut out,
            "Sec-WebSocket-Protocol",
            forwarded::forwarded_subprotocols(request, plan.allowed_subprotocols),
        );
        if plan.compression == Compression::Passthrough {
            push_list(
                &mut out,
                "Sec-WebSocket-Extensions",
                request.list("sec-websocket-extensions"),
            );
        }
        out.push_str("X-Forwarded-For: ");
        plan.client.write_forwarded_for(&mut out);
        out.push_str("\r\nX-Forwarded-Proto: ");
        out.push_str(if plan.client_tls { "https" } else { "http" });
        out.push_str("\r\n");
        for (name, value) in &plan.set_headers {
            push_header(&mut out, name, value);
        }
        out.push_str("\r\n");
        out
    }
}

/// One header listing `entries` comma-separated; nothing when there are none.
fn push_list<'a>(out: &mut String, name: &str, entries: impl Iterator<Item = &'a str>) {
    let mut listed = false;
    for entry in entries {
        if listed {
            out.push_str(", ");
        } else {
            out.push_str(name);
            out.push_str(": ");
            listed = true;
        }
        out.push_str(entry);
    }
    if listed {
        out.push_str("\r\n");
    }
}

/// Headers the gateway writes itself (hop-by-hop, negotiated, or forwarding information).
fn is_rewritten(name: &str) -> bool {
    const REWRITTEN: [&str; 11] = [
        "host",
        "connection",
        "upgrade",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "x-forwarded-proto",
    ];
    REWRITTEN
        .iter()
        .any(|rewritten| rewritten.eq_ignore_ascii_case(name))
        || name.eq_ignore_ascii_case("x-forwarded-for")
}

fn split_host_port(authority: &str, default_port: u16) -> anyhow::Result<(String, u16)> {
    anyhow::ensure!(!authority.is_empty(), "no host");
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').context("unclosed IPv6 bracket")?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse()?,
            None => default_port,
        };
        return Ok((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Ok((host.to_owned(), port.parse()?)),
        None => Ok((authority.to_owned(), default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsfleet_config::GatewayConfig;

    fn target(url: &str) -> UpstreamTarget {
        UpstreamTarget::from_config(
            &GatewayConfig::for_upstream(url).upstream,
            TcpConfig::default(),
        )
        .unwrap()
    }

    fn request(extra: &str, target: &str) -> UpgradeRequest {
        UpgradeRequest::parse(
            format!(
                "GET {target} HTTP/1.1\r\nHost: gw.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    /// A client at 192.0.2.7 that reached the gateway directly.
    fn direct_client() -> ClientChain {
        ClientChain::of("192.0.2.7".parse().unwrap(), &request("", "/"), &[])
    }

    fn plan<'a>(suffix: &'a str, client: &'a ClientChain) -> ForwardPlan<'a> {
        ForwardPlan {
            client,
            client_tls: true,
            path_suffix: suffix,
            compression: Compression::Passthrough,
            allowed_subprotocols: &[],
            token_query_parameter: Some("access_token"),
            set_headers: vec![("X-User".into(), "alice".into())],
        }
    }

    #[test]
    fn urls_split_into_host_port_and_path() {
        let plain = target("ws://backend:9000/ws?v=2");
        assert_eq!(
            (plain.authority.as_str(), plain.path.as_str()),
            ("backend:9000", "/ws?v=2")
        );
        assert_eq!(
            split_host_port("backend:9000", 80).unwrap(),
            ("backend".to_owned(), 9000)
        );
        assert_eq!(
            split_host_port("[::1]", 80).unwrap(),
            ("::1".to_owned(), 80)
        );
        assert_eq!(target("ws://h").path, "/");
    }

    #[test]
    fn request_forwards_path_query_protocols_and_claims() {
        let upstream = target("ws://backend:9000/ws?v=2");
        let client = request(
            "Sec-WebSocket-Protocol: chat, bearer.secret\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\nX-User: mallory\r\nx-forwarded-for: 6.6.6.6\r\nCookie: a=b\r\n",
            "/gw/room/7?x=1",
        );
        let head = upstream.render_request(&client, &plan("/room/7", &direct_client()));
        assert!(
            head.starts_with("GET /ws/room/7?v=2&x=1 HTTP/1.1\r\nHost: backend:9000\r\n"),
            "{head}"
        );
        assert!(head.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        assert!(head.contains("Sec-WebSocket-Protocol: chat\r\n"), "{head}");
        assert!(!head.contains("bearer."));
        assert!(
            head.contains(
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            )
        );
        assert!(
            head.contains("X-User: alice\r\n") && !head.contains("mallory"),
            "{head}"
        );
        assert!(head.contains("X-Forwarded-For: 192.0.2.7\r\n") && !head.contains("6.6.6.6"));
        assert!(head.contains("Cookie: a=b\r\n"));
        assert_eq!(head.matches("Host:").count(), 1);
    }

    #[test]
    fn the_token_query_parameter_is_dropped_and_the_others_keep_their_order() {
        let direct = direct_client();
        let request_line = |upstream_url: &str, client_target: &str, plan: &ForwardPlan<'_>| {
            let head = target(upstream_url).render_request(&request("", client_target), plan);
            head.lines().next().unwrap().to_owned()
        };
        let strips = plan("", &direct);
        assert_eq!(
            request_line(
                "ws://backend/ws?v=2",
                "/?b=2&access_token=secret&a=1&access_token=again",
                &strips
            ),
            "GET /ws?v=2&b=2&a=1 HTTP/1.1"
        );
        assert_eq!(
            request_line("ws://backend/ws", "/?access_token=secret", &strips),
            "GET /ws HTTP/1.1"
        );
        // Only that exact name: a longer one is another parameter.
        assert_eq!(
            request_line("ws://backend/ws", "/?access_token_hint=x&a=", &strips),
            "GET /ws?access_token_hint=x&a= HTTP/1.1"
        );
        // The query is no token source: the parameter is the upstream's.
        let keeps = ForwardPlan {
            token_query_parameter: None,
            ..plan("", &direct)
        };
        assert_eq!(
            request_line("ws://backend/ws", "/?access_token=kept", &keeps),
            "GET /ws?access_token=kept HTTP/1.1"
        );
    }

    #[test]
    fn compression_disabled_drops_the_offer() {
        let upstream = target("ws://backend:9000/");
        let client = request("Sec-WebSocket-Extensions: permessage-deflate\r\n", "/");
        let direct = direct_client();
        let mut disabled = plan("", &direct);
        disabled.compression = Compression::Disabled;
        let head = upstream.render_request(&client, &disabled);
        assert!(
            !head.to_ascii_lowercase().contains("permessage-deflate"),
            "{head}"
        );
        assert!(head.starts_with("GET / HTTP/1.1\r\n"));
    }

    static SPREAD_OVER: std::sync::OnceLock<Vec<std::net::SocketAddr>> = std::sync::OnceLock::new();

    fn spread_over(
        _host: String,
        _port: u16,
    ) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<Vec<std::net::SocketAddr>>> + Send>>
    {
        Box::pin(async { Ok(SPREAD_OVER.get().cloned().unwrap_or_default()) })
    }

    /// Connections take the resolved addresses in turn, and one that refuses is skipped.
    #[tokio::test]
    async fn connections_rotate_over_addresses_and_skip_a_refusing_one() {
        let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let second = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let refusing = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        SPREAD_OVER
            .set(vec![
                first.local_addr().unwrap(),
                refusing,
                second.local_addr().unwrap(),
            ])
            .unwrap();
        let mut upstream = target("ws://backend/");
        upstream.addresses = UpstreamAddresses::with_lookup("backend", 80, spread_over);

        let mut reached = Vec::new();
        for _ in 0..6 {
            let Transport::Plain(tcp) = upstream.connect().await.unwrap() else {
                panic!("a plain connection");
            };
            let (name, listener) = if tcp.peer_addr().unwrap() == first.local_addr().unwrap() {
                ("first", &first)
            } else {
                ("second", &second)
            };
            let (accepted, _) = listener.accept().await.unwrap();
            assert_eq!(accepted.peer_addr().unwrap(), tcp.local_addr().unwrap());
            reached.push(name);
        }
        // Turns start at first, refusing (so second), second, and again.
        assert_eq!(
            reached,
            ["first", "second", "second", "first", "second", "second"]
        );
    }

    static SILENT_THEN_LIVE: std::sync::OnceLock<Vec<std::net::SocketAddr>> =
        std::sync::OnceLock::new();

    fn silent_then_live(
        _host: String,
        _port: u16,
    ) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<Vec<std::net::SocketAddr>>> + Send>>
    {
        Box::pin(async { Ok(SILENT_THEN_LIVE.get().cloned().unwrap_or_default()) })
    }

    /// An address that never answers gets its share of the connect budget, then the next one
    /// is tried.
    #[tokio::test]
    async fn an_address_that_never_answers_leaves_time_for_the_next() {
        // A listener whose accept queue is full drops further SYNs: connecting to it hangs.
        let silent = tokio::net::TcpSocket::new_v4().unwrap();
        silent.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let silent = silent.listen(1).unwrap();
        let silent_addr = silent.local_addr().unwrap();
        let _queued = [
            std::net::TcpStream::connect(silent_addr).unwrap(),
            std::net::TcpStream::connect(silent_addr).unwrap(),
        ];
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        SILENT_THEN_LIVE
            .set(vec![silent_addr, live.local_addr().unwrap()])
            .unwrap();
        let mut config = GatewayConfig::for_upstream("ws://backend/").upstream;
        config.connect_timeout = Duration::from_secs(2);
        let mut upstream = UpstreamTarget::from_config(&config, TcpConfig::default()).unwrap();
        upstream.addresses = UpstreamAddresses::with_lookup("backend", 80, silent_then_live);

        // Bounded so that the old behaviour, waiting out the silent address's SYN retries for
        // about two minutes, fails here instead of hanging.
        let connected = tokio::time::timeout(Duration::from_secs(10), upstream.connect())
            .await
            .expect("connected to the live address")
            .unwrap();
        let Transport::Plain(tcp) = connected else {
            panic!("a plain connection");
        };
        assert_eq!(tcp.peer_addr().unwrap(), live.local_addr().unwrap());
    }
}
