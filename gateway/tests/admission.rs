//! Every refusal a client can meet, with its HTTP status and metric reason.

mod common;

use common::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

fn refusals(reason: &str) -> String {
    format!("wsfleet_gateway_refusals_total{{reason=\"{reason}\"}}")
}

#[tokio::test]
async fn ip_lists_and_forwarded_for_from_trusted_proxies() {
    let upstream = EchoUpstream::start().await;
    let denied = Gateway::start(&upstream.url("/"), "auth:\n  ipDeny: [127.0.0.0/8]\n").await;
    assert_eq!(refused_status(&denied.url("/"), &[]).await, 403);
    assert_eq!(denied.metric(&refusals("ip_denied")).await, 1.0);

    let allow_list = Gateway::start(&upstream.url("/"), "auth:\n  ipAllow: [10.0.0.0/8]\n").await;
    assert_eq!(refused_status(&allow_list.url("/"), &[]).await, 403);

    let behind_proxy = Gateway::start(
        &upstream.url("/"),
        "auth:\n  ipDeny: [203.0.113.0/24]\n  trustedProxies: [127.0.0.1/32]\n",
    )
    .await;
    let forwarded_denied = [("X-Forwarded-For", "203.0.113.5")];
    assert_eq!(
        refused_status(&behind_proxy.url("/"), &forwarded_denied).await,
        403
    );
    // The upstream hears the chain from the client on: what the client claimed before that
    // is dropped, and the trusted proxy (the gateway's peer) is appended.
    let (mut client, _) = connect(
        &behind_proxy.url("/"),
        &[("X-Forwarded-For", "6.6.6.6, 198.51.100.1")],
    )
    .await
    .unwrap();
    assert_eq!(round_trip(&mut client, "via proxy").await, "via proxy");
    let seen = upstream.records.requests().last().cloned().unwrap();
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("198.51.100.1, 127.0.0.1")
    );

    // From an untrusted peer the header is ignored.
    let untrusted = Gateway::start(&upstream.url("/"), "auth:\n  ipDeny: [203.0.113.0/24]\n").await;
    assert!(
        connect(&untrusted.url("/"), &forwarded_denied)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn origin_outside_the_allowlist_is_403() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(
        &upstream.url("/"),
        "auth:\n  allowedOrigins: [https://app.test]\n",
    )
    .await;
    assert_eq!(
        refused_status(&gateway.url("/"), &[("Origin", "https://evil.test")]).await,
        403
    );
    assert_eq!(refused_status(&gateway.url("/"), &[]).await, 403);
    assert!(
        connect(&gateway.url("/"), &[("Origin", "https://app.test")])
            .await
            .is_ok()
    );
    assert_eq!(gateway.metric(&refusals("origin_denied")).await, 2.0);
}

#[tokio::test]
async fn per_ip_rate_is_429() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(
        &upstream.url("/"),
        "limits:\n  connectionsPerIP: {perSecond: 1, burst: 2}\n",
    )
    .await;
    let _first = connect(&gateway.url("/"), &[]).await.unwrap();
    let _second = connect(&gateway.url("/"), &[]).await.unwrap();
    assert_eq!(refused_status(&gateway.url("/"), &[]).await, 429);
    assert_eq!(gateway.metric(&refusals("rate_limited")).await, 1.0);
}

#[tokio::test]
async fn paths_with_dot_segments_are_400_and_never_reach_the_upstream() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&upstream.url("/app"), "listen:\n  path: /ws\n").await;
    // A real client, and raw heads for the spellings a client library might tidy up.
    assert_eq!(
        refused_status(&gateway.url("/ws/%2e%2e/admin"), &[]).await,
        400
    );
    let probes = [
        "/ws/../admin",
        "/ws/./x",
        "/ws/%2E./admin",
        "/ws/..%2fadmin",
        "/ws/..%5Cadmin",
    ];
    for path in probes {
        assert_eq!(
            raw_status(gateway.address, &upgrade_head(path, "")).await,
            400,
            "{path}"
        );
    }
    let refused = 1.0 + probes.len() as f64;
    assert_eq!(gateway.metric(&refusals("unsafe_path")).await, refused);
    assert!(upstream.records.requests().is_empty());

    // Dots that are not whole segments are ordinary names.
    let (mut client, _) = connect(&gateway.url("/ws/.well-known/a..b"), &[])
        .await
        .unwrap();
    assert_eq!(round_trip(&mut client, "fine").await, "fine");
    assert_eq!(upstream.records.requests()[0].uri, "/app/.well-known/a..b");
}

#[tokio::test]
async fn offers_without_an_allowed_subprotocol_are_400() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(
        &upstream.url("/"),
        "validation:\n  allowedSubprotocols: [chat, chat.v2]\n",
    )
    .await;
    let offer = |protocols| [("Sec-WebSocket-Protocol", protocols)];
    assert_eq!(refused_status(&gateway.url("/"), &offer("mqtt")).await, 400);
    assert_eq!(refused_status(&gateway.url("/"), &[]).await, 400);
    assert_eq!(gateway.metric(&refusals("subprotocol_denied")).await, 2.0);
    assert!(upstream.records.requests().is_empty());

    // Only the allowed entries reach the upstream, which selects among them.
    let (mut client, response) = connect(&gateway.url("/"), &offer("mqtt, chat"))
        .await
        .unwrap();
    assert_eq!(round_trip(&mut client, "hi").await, "hi");
    assert_eq!(
        response.headers()["sec-websocket-protocol"]
            .to_str()
            .unwrap(),
        "chat"
    );
    let seen = upstream.records.requests();
    assert_eq!(seen[0].header("sec-websocket-protocol"), Some("chat"));
}

#[tokio::test]
async fn max_connections_is_503() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&upstream.url("/"), "limits:\n  maxConnections: 1\n").await;
    let (first, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    assert_eq!(refused_status(&gateway.url("/"), &[]).await, 503);
    assert_eq!(gateway.metric(&refusals("max_connections")).await, 1.0);
    drop(first);
    eventually("the slot to come back", || async {
        connect(&gateway.url("/"), &[]).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn oversized_and_slow_heads_are_refused() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(
        &upstream.url("/"),
        "limits:\n  maxHeaderBytes: 1024\n  handshakeTimeout: 1s\n",
    )
    .await;
    let padding = "a".repeat(2000);
    assert_eq!(
        raw_status(
            gateway.address,
            &upgrade_head("/", &format!("X-Pad: {padding}\r\n"))
        )
        .await,
        431
    );
    assert_eq!(gateway.metric(&refusals("headers_too_large")).await, 1.0);

    // Slowloris: a head that never completes is answered 408 and cut off.
    let mut slow = TcpStream::connect(gateway.address).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    within(
        "the gateway to drop a slow handshake",
        slow.read_to_end(&mut answer),
    )
    .await
    .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 408 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(gateway.metric(&refusals("handshake_timeout")).await, 1.0);

    assert_eq!(
        raw_status(gateway.address, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await,
        400
    );
    let version_8 = upgrade_head("/", "").replace("Version: 13", "Version: 8");
    assert_eq!(raw_status(gateway.address, &version_8).await, 426);
}

/// A client's malformed `Sec-WebSocket-Key` is the client's fault: 400, counted as a refusal,
/// and never forwarded for the upstream to refuse.
/// Sockets that never finish their request head are capped per client address: beyond the
/// cap one is refused at once, while another address still connects.
#[tokio::test]
async fn idle_handshakes_are_capped_per_client_address() {
    let upstream = EchoUpstream::start().await;
    let cap = 5;
    let limits = format!("limits:\n  handshakeTimeout: 60s\n  pendingHandshakesPerIP: {cap}\n");
    let gateway = Gateway::start(&upstream.url("/"), &limits).await;
    let mut idle = Vec::new();
    for _ in 0..=cap {
        idle.push(TcpStream::connect(gateway.address).await.unwrap());
    }
    // Whichever socket the gateway counted last is the one over the cap.
    let answers = idle.iter_mut().map(|socket| {
        Box::pin(async move {
            let mut answer = Vec::new();
            socket.read_to_end(&mut answer).await.map(|_| answer)
        })
    });
    let (answer, _, _) = within(
        "one idle socket over the cap to be refused",
        futures::future::select_all(answers),
    )
    .await;
    let answer = String::from_utf8(answer.unwrap()).unwrap();
    assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
    assert_eq!(gateway.metric(&refusals("pending_handshakes")).await, 1.0);

    let other_address = tokio::net::TcpSocket::new_v4().unwrap();
    other_address.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let tcp = other_address.connect(gateway.address).await.unwrap();
    let (mut client, _) = tokio_tungstenite::client_async(
        gateway.url("/"),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await
    .unwrap();
    assert_eq!(
        round_trip(&mut client, "still served").await,
        "still served"
    );
}

#[tokio::test]
async fn bad_websocket_keys_are_400_and_client_refusals() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&upstream.url("/"), "").await;
    let good_key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let bad_keys = [
        "Sec-WebSocket-Key: a2V5\r\n",
        // Base64 of 15 bytes.
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j\r\n",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ!!\r\n",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n",
    ];
    for bad_key in bad_keys {
        let head = upgrade_head("/", "").replace(good_key, bad_key);
        assert_eq!(raw_status(gateway.address, &head).await, 400, "{bad_key}");
    }
    let refused = bad_keys.len() as f64;
    assert_eq!(gateway.metric(&refusals("bad_request")).await, refused);
    assert_eq!(
        gateway
            .metric("wsfleet_gateway_handshakes_total{outcome=\"refused\"}")
            .await,
        refused
    );
    assert_eq!(
        gateway
            .metric("wsfleet_gateway_handshakes_total{outcome=\"upstream_failed\"}")
            .await,
        0.0
    );
    assert!(upstream.records.requests().is_empty());
}

#[tokio::test]
async fn missing_or_bad_token_is_401() {
    let upstream = EchoUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "s3cret-s3cret-s3cret-s3cret").unwrap();
    let extra = format!(
        "auth:\n  jwt:\n    algorithms: [HS256]\n    keyFile: {}\n",
        dir.path().join("secret").display()
    );
    let gateway = Gateway::start_in(dir, &upstream.url("/"), &extra).await;
    assert_eq!(refused_status(&gateway.url("/"), &[]).await, 401);
    assert_eq!(
        refused_status(
            &gateway.url("/"),
            &[("Authorization", "Bearer not.a.token")]
        )
        .await,
        401
    );
    assert_eq!(gateway.metric(&refusals("token_missing")).await, 1.0);
    assert_eq!(gateway.metric(&refusals("token_invalid")).await, 1.0);
    assert!(
        upstream.records.requests().is_empty(),
        "refused requests never reach the upstream"
    );
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    let closed_port = free_port();
    let gateway = Gateway::start(&format!("ws://127.0.0.1:{closed_port}/"), "").await;
    assert_eq!(refused_status(&gateway.url("/"), &[]).await, 502);
    assert_eq!(
        gateway
            .metric("wsfleet_gateway_upstream_errors_total{kind=\"connect\"}")
            .await,
        1.0
    );
    assert_eq!(
        gateway
            .metric("wsfleet_gateway_handshakes_total{outcome=\"upstream_failed\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn upstream_refusing_the_upgrade_is_502() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let gateway = Gateway::start(&format!("ws://{address}/"), "").await;
    assert_eq!(refused_status(&gateway.url("/"), &[]).await, 502);
    assert_eq!(
        gateway
            .metric("wsfleet_gateway_upstream_errors_total{kind=\"rejected\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn silent_upstream_is_504() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (held, mut holder) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // Accepts and never answers.
            let _ = held.send(stream);
        }
    });
    let gateway = Gateway::start(&format!("ws://{address}/"), "").await;
    assert_eq!(refused_status(&gateway.url("/"), &[]).await, 504);
    assert_eq!(gateway.metric(&refusals("upstream_timeout")).await, 1.0);
    assert!(holder.try_recv().is_ok());
}
