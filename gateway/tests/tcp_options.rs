//! The `tcp` options on a real gateway's sockets, read back by `ss` (iproute2) from the
//! kernel: keepalive probes and the send buffer on the accepted client socket and on the
//! upstream socket.

mod common;

use std::process::Command;

use common::*;

/// `ss`'s view of the established TCP sockets matching `filter`, with timers and memory.
fn sockets(filter: &str) -> String {
    let output = Command::new("ss")
        .args(["-tnom", "state", "established", filter])
        .output()
        .expect("ss runs (iproute2; scripts/install-test-deps installs it)");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn keepalive_and_buffers_are_set_on_client_and_upstream_sockets() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(
        &upstream.url("/"),
        "tcp:\n  keepalive: {idle: 45s, interval: 7s, count: 4}\n  sendBufferBytes: 65536\n",
    )
    .await;
    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    assert_eq!(round_trip(&mut client, "probe").await, "probe");

    for (side, filter) in [
        // The gateway's end of the client's connection, and its connection to the upstream.
        ("client", format!("( sport = :{} )", gateway.address.port())),
        (
            "upstream",
            format!("( dport = :{} )", upstream.address.port()),
        ),
    ] {
        // Once the socket is quiet (no retransmission timer), its keepalive timer runs from the
        // idle time (45s) down; the kernel doubles SO_SNDBUF.
        let expected =
            |text: &str| text.contains("timer:(keepalive,4") && text.contains("tb131072");
        let what = format!("the {side} socket to show keepalive and its send buffer");
        eventually(&what, || {
            let filter = filter.clone();
            async move { expected(&sockets(&filter)) }
        })
        .await;
    }
}
