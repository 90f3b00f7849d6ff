//! The PROXY protocol with a real HAProxy in front: the client HAProxy names (from its own
//! loopback address) is the one admitted and forwarded, over v1 and v2; connections that skip,
//! garble or stall the header, or come from elsewhere, are refused and counted.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use common::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

fn refusals(reason: &str) -> String {
    format!("wsfleet_gateway_refusals_total{{reason=\"{reason}\"}}")
}

/// A gateway that takes PROXY headers from 127.0.0.1 only and denies client 127.0.0.3.
async fn gateway_behind_a_proxy(upstream: &EchoUpstream) -> Gateway {
    Gateway::start(
        &upstream.url("/"),
        "listen:\n  proxyProtocol:\n    trustedProxies: [127.0.0.1/32]\n    headerTimeout: 300ms\n\
         auth:\n  ipDeny: [127.0.0.3/32]\n",
    )
    .await
}

/// HAProxy in TCP mode on two loopback ports, relaying to the gateway with a v1 and a v2
/// PROXY header respectively.
struct Haproxy {
    child: Child,
    v1: u16,
    v2: u16,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    async fn start(gateway: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (v1, v2) = (free_port(), free_port());
        let config = format!(
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             listen v1\n  bind 127.0.0.1:{v1}\n  server gateway {gateway} send-proxy\n\
             listen v2\n  bind 127.0.0.1:{v2}\n  server gateway {gateway} send-proxy-v2\n"
        );
        let config_path = dir.path().join("haproxy.cfg");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("haproxy runs (scripts/install-test-deps installs it)");
        let haproxy = Self {
            child,
            v1,
            v2,
            _dir: dir,
        };
        for port in [v1, v2] {
            eventually("HAProxy to listen", || async move {
                TcpStream::connect(("127.0.0.1", port)).await.is_ok()
            })
            .await;
        }
        haproxy
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP connection to `port` on 127.0.0.1 from the loopback address `source`.
async fn tcp_from(source: &str, port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap()
}

/// A WebSocket handshake to `port` from `source`.
async fn connect_from(
    source: &str,
    port: u16,
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    let tcp = tcp_from(source, port).await;
    tokio_tungstenite::client_async(
        format!("ws://localhost:{port}/"),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await
    .map(|(client, _)| client)
}

#[tokio::test]
async fn haproxy_names_the_client_over_v1_and_v2() {
    let upstream = EchoUpstream::start().await;
    let gateway = gateway_behind_a_proxy(&upstream).await;
    let haproxy = Haproxy::start(gateway.address).await;

    for (version, port, client) in [
        ("v1", haproxy.v1, "127.0.0.2"),
        ("v2", haproxy.v2, "127.0.0.4"),
    ] {
        let mut ws = connect_from(client, port).await.unwrap();
        assert_eq!(round_trip(&mut ws, version).await, version);
        let seen = upstream.records.requests().last().cloned().unwrap();
        assert_eq!(seen.header("x-forwarded-for"), Some(client), "{version}");

        // Admission judges the named client, not HAProxy's address.
        match connect_from("127.0.0.3", port).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 403, "{version}")
            }
            other => panic!("{version}: expected 403 for 127.0.0.3, got {other:?}"),
        }
    }
    assert_eq!(gateway.metric(&refusals("ip_denied")).await, 2.0);
}

/// Sends `bytes` on `tcp` and returns the status line of the answer.
async fn answer_to(mut tcp: TcpStream, bytes: &[u8]) -> String {
    tcp.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    within("an answer", tcp.read_to_end(&mut answer))
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn untrusted_missing_malformed_and_stalled_headers_are_refused() {
    let upstream = EchoUpstream::start().await;
    let gateway = gateway_behind_a_proxy(&upstream).await;
    let port = gateway.address.port();
    let request = upgrade_head("/", "");

    // A client reaching the gateway directly, around the load balancer.
    let answer = answer_to(tcp_from("127.0.0.2", port).await, request.as_bytes()).await;
    assert_eq!(answer, "HTTP/1.1 403 Forbidden");
    assert_eq!(gateway.metric(&refusals("proxy_untrusted")).await, 1.0);

    // From the trusted address, but no header: a load balancer not configured to send one.
    let answer = answer_to(tcp_from("127.0.0.1", port).await, request.as_bytes()).await;
    assert_eq!(answer, "HTTP/1.1 400 Bad Request");
    assert_eq!(gateway.metric(&refusals("proxy_header_missing")).await, 1.0);

    let garbled = format!("PROXY TCP4 127.0.0.9 127.0.0.1 99999 80\r\n{request}");
    let answer = answer_to(tcp_from("127.0.0.1", port).await, garbled.as_bytes()).await;
    assert_eq!(answer, "HTTP/1.1 400 Bad Request");
    assert_eq!(gateway.metric(&refusals("proxy_header_invalid")).await, 1.0);

    // Half a header, then silence until the header timeout.
    let answer = answer_to(tcp_from("127.0.0.1", port).await, b"PROXY TCP4 127.0.").await;
    assert_eq!(answer, "HTTP/1.1 408 Request Timeout");
    assert_eq!(gateway.metric(&refusals("proxy_header_timeout")).await, 1.0);

    // A well-formed header written by hand still works, and names its client upstream.
    let mut tcp = tcp_from("127.0.0.1", port).await;
    tcp.write_all(b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 80\r\n")
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(
        gateway.url("/"),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await
    .unwrap();
    assert_eq!(round_trip(&mut ws, "by hand").await, "by hand");
    let seen = upstream.records.requests().last().cloned().unwrap();
    assert_eq!(seen.header("x-forwarded-for"), Some("198.51.100.7"));
}
