//! A reconnect storm: every client of a drained pod connects at once. Connections the gateway
//! has not accepted yet wait in the kernel's listen queue; one that finds the queue full loses
//! its SYN and retries a second later, which was the whole tail of the storm benchmark.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use tokio::net::TcpStream;

/// More than the 128 a default listen queue holds, fewer than a test process's descriptors.
const STORM: usize = 600;

fn signal(gateway: &Gateway, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(gateway.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn a_storm_waits_in_the_listen_queue_while_the_gateway_is_busy() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&upstream.url("/"), "").await;
    // A stopped gateway accepts nothing: every connection of the storm stays queued.
    signal(&gateway, "STOP");
    let storm = futures::future::join_all((0..STORM).map(|_| TcpStream::connect(gateway.address)));
    let connected = tokio::time::timeout(Duration::from_secs(10), storm).await;
    signal(&gateway, "CONT");
    let streams = connected.expect("every connection of the storm was queued, none dropped");
    assert_eq!(streams.iter().filter(|s| s.is_ok()).count(), STORM);

    // Once running again the gateway works through the queue and serves new clients.
    drop(streams);
    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    assert_eq!(
        round_trip(&mut client, "after the storm").await,
        "after the storm"
    );
}
