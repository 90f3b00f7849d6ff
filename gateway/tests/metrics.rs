//! What operators watch, scraped from a real gateway's `/metrics`: handshake and upstream
//! connect latency, the handshake's steps, connection lifetime, and closes by code and by the
//! side that closed.

mod common;

use common::*;
use futures::{SinkExt as _, StreamExt as _};
use tokio::io::AsyncWriteExt as _;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const HANDSHAKES: &str = "wsfleet_gateway_handshake_duration_seconds_count";
const UPSTREAM_CONNECTS: &str = "wsfleet_gateway_upstream_connect_duration_seconds_count";
const LIFETIMES: &str = "wsfleet_gateway_connection_duration_seconds_count";

fn closes(code: &str, by: &str) -> String {
    format!("wsfleet_gateway_closes_total{{code=\"{code}\",by=\"{by}\"}}")
}

/// Every `wsfleet_gateway_closes_total` series with its value, for exact comparisons.
async fn nonzero_closes(gateway: &Gateway) -> Vec<(String, f64)> {
    let (_, body) = http_get(gateway.metrics_address, "/metrics").await.unwrap();
    body.lines()
        .filter(|line| line.starts_with("wsfleet_gateway_closes_total{"))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            (value > 0.0).then(|| (series.to_owned(), value))
        })
        .collect()
}

#[tokio::test]
async fn a_handshake_is_timed_from_accept_and_its_upstream_connect_too() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&upstream.url("/"), "").await;
    assert_eq!(gateway.metric(HANDSHAKES).await, 0.0);
    assert_eq!(gateway.metric(UPSTREAM_CONNECTS).await, 0.0);

    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    assert_eq!(round_trip(&mut client, "timed").await, "timed");
    assert_eq!(gateway.metric(HANDSHAKES).await, 1.0);
    assert_eq!(gateway.metric(UPSTREAM_CONNECTS).await, 1.0);
    // Within the 10 s bucket and above nothing: a real duration, in seconds.
    assert_eq!(
        gateway
            .metric("wsfleet_gateway_handshake_duration_seconds_bucket{le=\"10.0\"}")
            .await,
        1.0
    );
    let sum = gateway
        .metric("wsfleet_gateway_handshake_duration_seconds_sum")
        .await;
    let upstream_sum = gateway
        .metric("wsfleet_gateway_upstream_connect_duration_seconds_sum")
        .await;
    assert!(
        sum > 0.0 && sum < 10.0 && upstream_sum <= sum,
        "handshake {sum} s, upstream connect {upstream_sum} s"
    );

    // Refused handshakes are counted elsewhere: neither histogram moves.
    let plain_get = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    assert_eq!(raw_status(gateway.address, plain_get).await, 400);
    let dead_upstream = format!("ws://127.0.0.1:{}/", free_port());
    let unreachable = Gateway::start(&dead_upstream, "").await;
    assert_eq!(refused_status(&unreachable.url("/"), &[]).await, 502);
    assert_eq!(unreachable.metric(HANDSHAKES).await, 0.0);
    assert_eq!(unreachable.metric(UPSTREAM_CONNECTS).await, 0.0);
    assert_eq!(gateway.metric(HANDSHAKES).await, 1.0);
    // No connection has ended yet.
    assert_eq!(gateway.metric(LIFETIMES).await, 0.0);
}

const STEPS: [&str; 6] = [
    "queued",
    "client_request",
    "admission",
    "upstream_connect",
    "upstream_answer",
    "client_answer",
];

fn step(step: &str, suffix: &str) -> String {
    format!("wsfleet_gateway_handshake_step_duration_seconds_{suffix}{{step=\"{step}\"}}")
}

#[tokio::test]
async fn each_step_of_a_successful_handshake_is_timed_and_together_they_are_the_whole() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&upstream.url("/"), "").await;
    for name in STEPS {
        assert_eq!(gateway.metric(&step(name, "count")).await, 0.0, "{name}");
    }

    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    assert_eq!(round_trip(&mut client, "timed").await, "timed");
    // A refused handshake times no step.
    let plain_get = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    assert_eq!(raw_status(gateway.address, plain_get).await, 400);

    let mut steps = 0.0;
    for name in STEPS {
        assert_eq!(gateway.metric(&step(name, "count")).await, 1.0, "{name}");
        steps += gateway.metric(&step(name, "sum")).await;
    }
    let whole = gateway
        .metric("wsfleet_gateway_handshake_duration_seconds_sum")
        .await;
    let upstream_steps = gateway.metric(&step("upstream_connect", "sum")).await
        + gateway.metric(&step("upstream_answer", "sum")).await;
    let upstream_whole = gateway
        .metric("wsfleet_gateway_upstream_connect_duration_seconds_sum")
        .await;
    // Each sum is of whole microseconds: six truncations against one.
    let rounding = 1e-5;
    assert!(
        steps > 0.0 && steps <= whole + rounding,
        "steps {steps} s, handshake {whole} s"
    );
    assert!(
        upstream_steps + rounding >= upstream_whole,
        "upstream steps {upstream_steps} s, upstream connect {upstream_whole} s"
    );
}

#[tokio::test]
async fn a_client_close_is_counted_with_its_code_and_the_connection_lifetime() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&upstream.url("/"), "").await;
    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    assert_eq!(round_trip(&mut client, "hi").await, "hi");
    client
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    while within("the close answer", client.next()).await.is_some() {}

    gateway.wait_metric(LIFETIMES, 1.0).await;
    assert_eq!(
        nonzero_closes(&gateway).await,
        [(closes("1000", "client"), 1.0)],
        "the upstream's answering close is not a second close"
    );
    assert_eq!(
        gateway
            .metric("wsfleet_gateway_connection_duration_seconds_bucket{le=\"+Inf\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn an_upstream_close_is_counted_for_the_upstream() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&upstream.url("/"), "").await;
    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    client.send(Message::text("close:1013:busy")).await.unwrap();
    assert_eq!(
        next_close(&mut client).await,
        Some((1013, "busy".to_owned()))
    );

    // An application code (4000-4999) is `other`.
    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    client.send(Message::text("close:4000:app")).await.unwrap();
    assert_eq!(
        next_close(&mut client).await,
        Some((4000, "app".to_owned()))
    );

    gateway.wait_metric(LIFETIMES, 2.0).await;
    let mut counted = nonzero_closes(&gateway).await;
    counted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        counted,
        [
            (closes("1013", "upstream"), 1.0),
            (closes("other", "upstream"), 1.0)
        ]
    );
}

#[tokio::test]
async fn a_message_too_big_is_a_gateway_close_with_1009() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&upstream.url("/"), "limits:\n  maxMessageBytes: 1000\n").await;
    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    client.send(Message::binary(vec![0u8; 2000])).await.unwrap();
    assert_eq!(
        next_close(&mut client).await.map(|(code, _)| code),
        Some(1009)
    );

    gateway.wait_metric(LIFETIMES, 1.0).await;
    assert_eq!(
        nonzero_closes(&gateway).await,
        [(closes("1009", "gateway"), 1.0)]
    );
}

#[tokio::test]
async fn a_connection_cut_without_a_close_frame_counts_as_1006() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&upstream.url("/"), "").await;

    // The client's TCP connection ends without a close frame.
    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    assert_eq!(round_trip(&mut client, "then gone").await, "then gone");
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = client.get_mut() else {
        panic!("a plain connection");
    };
    tcp.shutdown().await.unwrap();
    drop(client);
    gateway.wait_metric(LIFETIMES, 1.0).await;

    // The upstream drops its connection.
    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    client.send(Message::text("drop")).await.unwrap();
    assert_eq!(
        next_close(&mut client).await.map(|(code, _)| code),
        Some(1011)
    );
    gateway.wait_metric(LIFETIMES, 2.0).await;

    let mut counted = nonzero_closes(&gateway).await;
    counted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        counted,
        [
            (closes("1006", "client"), 1.0),
            (closes("1006", "upstream"), 1.0)
        ]
    );
}
