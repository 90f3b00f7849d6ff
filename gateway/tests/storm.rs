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

/// The listener's queue limit as the kernel reports it: `ss` shows a listening socket's
/// backlog as its Send-Q.
fn listen_backlog(gateway: &Gateway) -> u32 {
    let filter = format!("sport = :{}", gateway.address.port());
    let output = Command::new("ss")
        .args(["-Hltn", &filter])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<&str> = text.split_whitespace().collect();
    // State, Recv-Q, Send-Q, local address, peer address.
    fields
        .get(2)
        .and_then(|send_q| send_q.parse().ok())
        .unwrap_or_else(|| panic!("no listener on {} in {text:?}", gateway.address))
}

#[tokio::test]
async fn the_listen_backlog_follows_the_config_and_its_reloads() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&upstream.url("/"), "tcp:\n  listenBacklog: 16\n").await;
    assert_eq!(listen_backlog(&gateway), 16);

    let (mut live, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    gateway.rewrite_config(&upstream.url("/"), "tcp:\n  listenBacklog: 64\n");
    eventually("the open listener to take the new backlog", || async {
        listen_backlog(&gateway) == 64
    })
    .await;
    // The same listener, resized: the connection made before is still relayed, and new
    // clients are accepted.
    assert_eq!(round_trip(&mut live, "before").await, "before");
    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    assert_eq!(round_trip(&mut client, "after").await, "after");
}
