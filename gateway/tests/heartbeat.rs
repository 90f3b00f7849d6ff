//! Heartbeats: a silent client is closed, an answering one survives, and the client's own
//! pings and pongs pass between client and upstream untouched.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn silent_clients_are_closed_and_answering_ones_survive() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(
        &upstream.url("/"),
        "heartbeat: {interval: 300ms, timeout: 2s}\n",
    )
    .await;

    // Answers pings (tungstenite does so while it reads) and counts them.
    let (answering, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    let (mut sink, mut stream) = answering.split();
    let pings = Arc::new(AtomicUsize::new(0));
    let (echoes_tx, mut echoes) = tokio::sync::mpsc::unbounded_channel();
    let counted = pings.clone();
    tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            match message {
                Message::Ping(_) => {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                other => {
                    let _ = echoes_tx.send(other);
                }
            }
        }
    });

    // Completes the handshake by hand and then never reads or writes again.
    let mut silent = TcpStream::connect(gateway.address).await.unwrap();
    silent
        .write_all(upgrade_head("/", "").as_bytes())
        .await
        .unwrap();

    let mut received = Vec::new();
    within(
        "the gateway to close the silent client",
        silent.read_to_end(&mut received),
    )
    .await
    .unwrap();
    let close_at = received
        .windows(2)
        .position(|pair| pair == [0x88, 0x02 + "heartbeat timeout".len() as u8])
        .expect("a close frame after the 101 and the ping");
    assert_eq!(
        &received[close_at + 2..close_at + 4],
        &1001u16.to_be_bytes()
    );
    eventually(
        "the upstream to hear 1001 for the silent client",
        || async {
            upstream
                .records
                .events()
                .contains(&Seen::Close(Some((1001, "heartbeat timeout".into()))))
        },
    )
    .await;

    eventually("the answering client to be pinged twice", || async {
        pings.load(Ordering::Relaxed) >= 2
    })
    .await;
    sink.send(Message::text("alive")).await.unwrap();
    let echo = within("an echo", echoes.recv()).await.unwrap();
    assert_eq!(echo, Message::text("alive"));

    // The client's own ping reaches the upstream; the answers to the gateway's pings do not.
    sink.send(Message::Ping(b"app-ping".to_vec().into()))
        .await
        .unwrap();
    eventually("the upstream to see the client's ping", || async {
        upstream
            .records
            .events()
            .contains(&Seen::Ping(b"app-ping".to_vec()))
    })
    .await;
    assert!(
        !upstream
            .records
            .events()
            .iter()
            .any(|seen| matches!(seen, Seen::Pong(_))),
        "heartbeat pongs must not be forwarded: {:?}",
        upstream.records.events()
    );
    let pong = within("the upstream's pong", async {
        loop {
            if let Some(Message::Pong(payload)) = echoes.recv().await {
                return payload;
            }
        }
    })
    .await;
    assert_eq!(pong.as_ref(), b"app-ping");
}

/// The heartbeat keeps its configured times: a silent client is pinged no sooner than the
/// interval and closed no sooner than the timeout after that; the coarse clock may add up to
/// a second to each.
#[tokio::test]
async fn a_silent_client_is_pinged_and_closed_no_sooner_than_configured() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(
        &upstream.url("/"),
        "heartbeat: {interval: 1s, timeout: 1s}\n",
    )
    .await;
    let mut silent = TcpStream::connect(gateway.address).await.unwrap();
    silent
        .write_all(upgrade_head("/", "").as_bytes())
        .await
        .unwrap();
    let upgraded = std::time::Instant::now();

    // Server frames are unmasked: the ping is 0x89 and its length, the close 0x88.
    let payload = b"wsfleet-heartbeat";
    let ping = [&[0x89, payload.len() as u8][..], payload].concat();
    let (mut received, mut pinged_after, mut closed_after) = (Vec::new(), None, None);
    within("a ping, then a close", async {
        let mut buf = [0; 1024];
        while closed_after.is_none() {
            let read = silent.read(&mut buf).await.unwrap();
            assert_ne!(
                read, 0,
                "the gateway ended the stream without a close frame"
            );
            received.extend_from_slice(&buf[..read]);
            let head_end = received.windows(4).position(|w| w == b"\r\n\r\n");
            let Some(frames) = head_end.map(|at| &received[at + 4..]) else {
                continue;
            };
            if pinged_after.is_none() && frames.windows(ping.len()).any(|w| w == ping) {
                pinged_after = Some(upgraded.elapsed());
            }
            if frames.windows(2).any(|w| w[0] == 0x88 && w[1] > 2) {
                closed_after = Some(upgraded.elapsed());
            }
        }
    })
    .await;
    let pinged_after = pinged_after.expect("a ping before the close");
    let closed_after = closed_after.unwrap();
    let second = std::time::Duration::from_secs(1);
    assert!(pinged_after >= second, "pinged after {pinged_after:?}");
    assert!(
        closed_after >= pinged_after + second - std::time::Duration::from_millis(50),
        "closed {closed_after:?} after the upgrade, pinged after {pinged_after:?}"
    );
    // One second each, plus at most a tick each, plus slack for a loaded machine.
    assert!(closed_after <= 6 * second, "closed after {closed_after:?}");
}
