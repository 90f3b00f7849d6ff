//! Relaying through a real gateway process: echo, path and subprotocols, close codes end to
//! end, limits, upstream failure and backpressure.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn messages_are_echoed_and_counted() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&upstream.url("/echo"), "").await;
    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    assert_eq!(round_trip(&mut client, "hello").await, "hello");
    let big = vec![42u8; 300_000];
    client.send(Message::binary(big.clone())).await.unwrap();
    match within("binary echo", client.next()).await {
        Some(Ok(Message::Binary(echo))) => assert_eq!(echo.as_ref(), &big[..]),
        other => panic!("unexpected {other:?}"),
    }
    gateway
        .wait_metric(
            "wsfleet_gateway_messages_total{direction=\"client_to_upstream\"}",
            2.0,
        )
        .await;
    gateway
        .wait_metric(
            "wsfleet_gateway_messages_total{direction=\"upstream_to_client\"}",
            2.0,
        )
        .await;
    assert!(
        gateway
            .metric("wsfleet_gateway_bytes_total{direction=\"client_to_upstream\"}")
            .await
            > 300_000.0
    );
    assert_eq!(
        gateway.metric("wsfleet_gateway_active_connections").await,
        1.0
    );
    assert_eq!(
        gateway
            .metric("wsfleet_gateway_handshakes_total{outcome=\"success\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn path_query_and_subprotocol_reach_the_upstream() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&upstream.url("/backend"), "listen:\n  path: /ws\n").await;
    let (mut client, response) = connect(
        &gateway.url("/ws/room/7?user=ann"),
        &[
            ("Sec-WebSocket-Protocol", "chat, other"),
            ("Origin", "https://app.test"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "chat",
        "the upstream's choice is relayed"
    );
    assert_eq!(round_trip(&mut client, "hi").await, "hi");
    let seen = &upstream.records.requests()[0];
    assert_eq!(seen.uri, "/backend/room/7?user=ann");
    assert_eq!(seen.header("sec-websocket-protocol"), Some("chat, other"));
    assert_eq!(seen.header("origin"), Some("https://app.test"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(refused_status(&gateway.url("/elsewhere"), &[]).await, 404);
}

#[tokio::test]
async fn close_codes_pass_end_to_end() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&upstream.url("/"), "").await;

    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    client
        .close(Some(CloseFrame {
            code: CloseCode::from(4001),
            reason: "client says bye".into(),
        }))
        .await
        .unwrap();
    assert_eq!(
        next_close(&mut client).await,
        Some((4001, "client says bye".into()))
    );
    eventually("the upstream to see the client's close", || async {
        upstream
            .records
            .events()
            .contains(&Seen::Close(Some((4001, "client says bye".into()))))
    })
    .await;

    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    client
        .send(Message::text("close:4002:upstream says bye"))
        .await
        .unwrap();
    assert_eq!(
        next_close(&mut client).await,
        Some((4002, "upstream says bye".into()))
    );
    gateway
        .wait_metric("wsfleet_gateway_handshakes_total{outcome=\"success\"}", 2.0)
        .await;
    eventually("both connections to be gone", || async {
        gateway.metric("wsfleet_gateway_active_connections").await == 0.0
    })
    .await;
}

/// Towards the upstream the gateway is the client: when its client vanishes, it sends the
/// upstream 1001 and lets the upstream end the TCP connection first, so that the upstream holds
/// the TIME_WAIT (RFC 6455, section 7.1.1) and the gateway's local port is free again at once.
#[tokio::test]
async fn after_a_client_vanishes_the_upstream_ends_first_and_holds_the_time_wait() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&upstream.url("/"), "").await;
    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    assert_eq!(round_trip(&mut client, "hi").await, "hi");
    let from_gateway = upstream.records.peers()[0];
    drop(client);
    eventually("the upstream to hear that the client went away", || async {
        upstream
            .records
            .events()
            .contains(&Seen::Close(Some((1001, "client went away".into()))))
    })
    .await;
    // The gateway's side leaves LAST_ACK a moment after the upstream's enters TIME_WAIT.
    eventually(
        "the upstream's side in TIME_WAIT and nothing left of the gateway's",
        || async {
            tcp_state(upstream.address, from_gateway) == Some(TCP_TIME_WAIT)
                && tcp_state(from_gateway, upstream.address).is_none()
        },
    )
    .await;
}

#[tokio::test]
async fn oversized_messages_close_1009_in_both_directions() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&upstream.url("/"), "limits:\n  maxMessageBytes: 1000\n").await;

    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    assert_eq!(round_trip(&mut client, "small").await, "small");
    client.send(Message::binary(vec![0u8; 1001])).await.unwrap();
    assert_eq!(
        next_close(&mut client).await.map(|close| close.0),
        Some(1009)
    );
    eventually("the upstream to hear 1001", || async {
        upstream
            .records
            .events()
            .iter()
            .any(|seen| matches!(seen, Seen::Close(Some((1001, _)))))
    })
    .await;

    // A fragmented message is measured whole.
    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    for (index, fin) in [(0, false), (1, false), (2, true)] {
        let opcode = if index == 0 {
            tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
                tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Binary,
            )
        } else {
            tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
                tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Continue,
            )
        };
        let frame = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
            vec![1u8; 400],
            opcode,
            fin,
        );
        if client.send(Message::Frame(frame)).await.is_err() {
            break;
        }
    }
    assert_eq!(
        next_close(&mut client).await.map(|close| close.0),
        Some(1009)
    );

    // The upstream's messages are limited too.
    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    client.send(Message::text("big:5000")).await.unwrap();
    assert_eq!(
        next_close(&mut client).await.map(|close| close.0),
        Some(1009)
    );
}

/// Sends `pieces` as one text message, a frame each.
async fn send_text_frames(client: &mut Client, pieces: &[&[u8]]) {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    for (index, piece) in pieces.iter().enumerate() {
        let opcode = OpCode::Data(if index == 0 {
            Data::Text
        } else {
            Data::Continue
        });
        let fin = index + 1 == pieces.len();
        let frame = Frame::message(piece.to_vec(), opcode, fin);
        client.send(Message::Frame(frame)).await.unwrap();
    }
}

#[tokio::test]
async fn text_that_is_not_utf8_closes_1007_when_validated() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(
        &upstream.url("/"),
        "validation:\n  utf8: true\ncompression: Disabled\n",
    )
    .await;
    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    // Characters cut across frames are whole again at the upstream.
    let text = "é日本𝄞".as_bytes();
    send_text_frames(
        &mut client,
        &[&text[..1], &text[1..4], &text[4..12], &text[12..]],
    )
    .await;
    match within("the echo", client.next()).await {
        Some(Ok(Message::Text(echo))) => assert_eq!(echo.as_str(), "é日本𝄞"),
        other => panic!("expected the echo, got {other:?}"),
    }

    // A character started in one frame and broken in the next.
    send_text_frames(&mut client, &[b"ok \xE6\x97", b"\x41"]).await;
    assert_eq!(
        next_close(&mut client).await.map(|close| close.0),
        Some(1007)
    );
    eventually("the upstream to hear 1001, not the broken text", || async {
        upstream.records.events() == [Seen::Close(Some((1001, "text message not UTF-8".into())))]
    })
    .await;
    gateway
        .wait_metric(
            "wsfleet_gateway_closes_total{code=\"1007\",by=\"gateway\"}",
            1.0,
        )
        .await;
}

/// After its 1009 the gateway keeps the connection open until the client's close frame
/// arrives, and only then ends it (FIN, not a reset): the client's closing handshake completes,
/// so browsers report `wasClean: true`.
#[tokio::test]
async fn gateway_waits_for_the_client_close_after_1009() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&upstream.url("/"), "limits:\n  maxMessageBytes: 1000\n").await;
    let mut tcp = TcpStream::connect(gateway.address).await.unwrap();
    tcp.write_all(upgrade_head("/", "").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(within("the 101 answer", tcp.read_u8()).await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));

    tcp.write_all(&masked_frame(0x82, &[0; 5000]))
        .await
        .unwrap();
    let mut close = [0u8; 4];
    within("the gateway's close frame", tcp.read_exact(&mut close))
        .await
        .unwrap();
    assert_eq!(close[0], 0x88);
    assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1009);
    let mut reason = vec![0; usize::from(close[1]) - 2];
    tcp.read_exact(&mut reason).await.unwrap();

    // Nothing more, not even the end of the stream, until the client has answered.
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "the gateway ended the stream before the client's close: {early:?}"
    );

    tcp.write_all(&masked_frame(0x88, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let end = within("the end of the stream", tcp.read_to_end(&mut rest)).await;
    assert!(
        end.is_ok() && rest.is_empty(),
        "expected a clean end, got {end:?} after {rest:?}"
    );
}

/// A client frame with a short payload, masked with a zero key.
fn masked_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![first_byte];
    match u16::try_from(payload.len()) {
        Ok(len @ 0..=125) => frame.push(0x80 | len as u8),
        Ok(len) => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&len.to_be_bytes());
        }
        Err(_) => panic!("payload too long for this test"),
    }
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(payload);
    frame
}

/// `bytes_total` counts what is relayed: a refused message is not.
#[tokio::test]
async fn refused_messages_are_not_counted_as_relayed_bytes() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&upstream.url("/"), "limits:\n  maxMessageBytes: 1000\n").await;
    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    assert_eq!(round_trip(&mut client, "small").await, "small");
    client
        .send(Message::binary(vec![0u8; 64 * 1024]))
        .await
        .unwrap();
    assert_eq!(
        next_close(&mut client).await.map(|close| close.0),
        Some(1009)
    );
    eventually("the connection to be gone", || async {
        gateway.metric("wsfleet_gateway_active_connections").await == 0.0
    })
    .await;
    // "small" as a masked text frame: 2 bytes of header, 4 of mask, 5 of payload.
    assert_eq!(
        gateway
            .metric("wsfleet_gateway_bytes_total{direction=\"client_to_upstream\"}")
            .await,
        11.0
    );
}

/// Sends `count` frames made by `frame` past a rate of 1 a second (bursts of 3) and expects
/// the gateway to close with 1008.
async fn flood_closes_1008(count: u8, frame: impl Fn(u8) -> Message) {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(
        &upstream.url("/"),
        "limits:\n  messagesPerConnection: {perSecond: 1, burst: 3}\n",
    )
    .await;
    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    for n in 0..count {
        if client.send(frame(n)).await.is_err() {
            break;
        }
    }
    assert_eq!(
        next_close(&mut client).await.map(|close| close.0),
        Some(1008)
    );
}

#[tokio::test]
async fn message_rate_closes_1008() {
    flood_closes_1008(10, |n| Message::text(format!("m{n}"))).await;
}

/// Pings cost the peers as much as messages: a ping flood is rate-limited like a data flood.
#[tokio::test]
async fn ping_flood_closes_1008() {
    flood_closes_1008(100, |n| Message::Ping(vec![n].into())).await;
}

#[tokio::test]
async fn upstream_failure_closes_the_client_1011() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&upstream.url("/"), "").await;
    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    client.send(Message::text("drop")).await.unwrap();
    assert_eq!(
        next_close(&mut client).await.map(|close| close.0),
        Some(1011)
    );
    gateway
        .wait_metric("wsfleet_gateway_upstream_errors_total{kind=\"relay\"}", 1.0)
        .await;
}

#[tokio::test]
async fn slow_client_stalls_the_upstream_instead_of_growing_memory() {
    const FLOOD: u64 = 128 * 1024 * 1024;
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&upstream.url("/"), "heartbeat: null\n").await;
    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    let rss_before = gateway.rss_kib();
    client
        .send(Message::text(format!("flood:{FLOOD}")))
        .await
        .unwrap();

    // The client reads nothing: once socket buffers fill, the upstream's writes must block.
    let flooded = || upstream.records.flooded.load(Ordering::Relaxed);
    eventually("the upstream to start flooding", || async { flooded() > 0 }).await;
    let mut last = 0;
    eventually("the upstream's writes to stall", || {
        let now = flooded();
        let stalled = now == last;
        last = now;
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            stalled
        }
    })
    .await;
    let stalled_at = flooded();
    assert!(
        stalled_at < FLOOD / 3,
        "upstream wrote {stalled_at} bytes into a client that reads nothing"
    );
    let growth = gateway.rss_kib().saturating_sub(rss_before);
    assert!(growth < 16 * 1024, "gateway memory grew by {growth} KiB");

    // Once the client reads, everything arrives.
    let mut received = 0u64;
    while received < FLOOD {
        match within("flooded data", client.next()).await {
            Some(Ok(Message::Binary(bytes))) => received += bytes.len() as u64,
            Some(Ok(_)) => {}
            other => panic!("flood interrupted: {other:?}"),
        }
    }
    assert_eq!(received, FLOOD);
}

/// An upstream that reads nothing until `ticks` closes: until then it sends each number it
/// gets from `ticks` as a text message. Then it reads binary messages and reports how many
/// bytes arrived once `expected` have.
async fn stalling_upstream(
    mut ticks: tokio::sync::mpsc::Receiver<u64>,
    expected: u64,
) -> (String, tokio::task::JoinHandle<u64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let upstream = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let (mut sink, mut stream) = ws.split();
        while let Some(tick) = ticks.recv().await {
            sink.send(Message::text(tick.to_string())).await.unwrap();
        }
        let mut received = 0u64;
        while received < expected {
            match stream.next().await {
                Some(Ok(Message::Binary(bytes))) => received += bytes.len() as u64,
                other => panic!("the upstream expected flood data, got {other:?}"),
            }
        }
        received
    });
    (url, upstream)
}

/// Over plain TCP each direction is woken on its own: one direction stalled on a slow
/// upstream must not stop the other, and must resume when the upstream reads again, whatever
/// the other direction does.
#[tokio::test]
async fn a_stalled_direction_resumes_while_the_other_keeps_flowing() {
    // Far more than the socket buffers on the way hold, so the client's writes must stall.
    const FLOOD: u64 = 64 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    /// Round trips upstream to client without progress of the flood, taken as its stall.
    const STALLED_ROUND_TRIPS: u32 = 20;
    for threads in ["1", "2"] {
        let (ticks, tick_source) = tokio::sync::mpsc::channel(1);
        let (upstream_url, upstream) = stalling_upstream(tick_source, FLOOD).await;
        // No heartbeat: its timer would poll both directions now and then, and so hide a
        // direction that is never woken by its own socket.
        let gateway = Gateway::start_command(
            tempfile::tempdir().unwrap(),
            &upstream_url,
            "heartbeat: null\n",
            |command| {
                command.env("WSFLEET_GATEWAY_WORKER_THREADS", threads);
            },
        )
        .await;
        let (client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
        let (mut client_sink, mut client_stream) = client.split();
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let flood = tokio::spawn({
            let sent = sent.clone();
            async move {
                while sent.load(Ordering::Relaxed) < FLOOD {
                    client_sink
                        .send(Message::binary(vec![3u8; CHUNK]))
                        .await
                        .unwrap();
                    sent.fetch_add(CHUNK as u64, Ordering::Relaxed);
                }
            }
        });

        // Upstream to client keeps flowing while client to upstream fills up and stalls.
        let (mut tick, mut stalled_for, mut last_sent) = (0u64, 0, 0);
        while stalled_for < STALLED_ROUND_TRIPS {
            ticks.send(tick).await.unwrap();
            match within("a message towards the client", client_stream.next()).await {
                Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), tick.to_string()),
                other => panic!("{threads} thread(s): expected tick {tick}, got {other:?}"),
            }
            let now = sent.load(Ordering::Relaxed);
            stalled_for = if now == last_sent { stalled_for + 1 } else { 0 };
            last_sent = now;
            tick += 1;
        }
        assert!(
            last_sent < FLOOD,
            "{threads} thread(s): the upstream read nothing, yet the whole flood went out"
        );

        // The upstream reads again: the stalled direction must be woken by that alone.
        drop(ticks);
        within("the flood to reach the upstream", flood)
            .await
            .unwrap();
        assert_eq!(
            within("the upstream to count the flood", upstream)
                .await
                .unwrap(),
            FLOOD,
            "{threads} thread(s)"
        );
    }
}
