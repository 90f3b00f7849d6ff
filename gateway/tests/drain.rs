//! Draining on SIGTERM: readiness fails at once, clients get 1001, the process exits.

mod common;

use common::*;

#[tokio::test]
async fn sigterm_drains_and_exits() {
    let upstream = EchoUpstream::start().await;
    let mut gateway = Gateway::start(&upstream.url("/"), "drain: {gracePeriod: 2s}\n").await;
    let mut clients = Vec::new();
    for n in 0..4 {
        let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
        assert_eq!(
            round_trip(&mut client, &format!("c{n}")).await,
            format!("c{n}")
        );
        clients.push(client);
    }

    gateway.terminate();
    eventually("readiness to fail", || async { !gateway.is_ready().await }).await;
    assert_eq!(
        http_get(gateway.metrics_address, "/healthz")
            .await
            .map(|(status, _)| status),
        Some(200),
        "draining is not unhealthy"
    );
    assert!(
        connect(&gateway.url("/"), &[]).await.is_err(),
        "no new connections"
    );
    for client in &mut clients {
        assert_eq!(next_close(client).await.map(|close| close.0), Some(1001));
    }
    let status = within("the gateway to exit", async {
        loop {
            if let Some(status) = gateway.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(status.success(), "{status}");
    let closes = upstream
        .records
        .events()
        .iter()
        .filter(|seen| matches!(seen, Seen::Close(Some((1001, _)))))
        .count();
    assert_eq!(closes, 4, "the upstream hears 1001 for every client");
}
