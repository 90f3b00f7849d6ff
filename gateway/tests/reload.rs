//! Config reloads under live connections: a valid change applies to new handshakes only, an
//! invalid one is refused and the previous config stays.

mod common;

use common::*;

#[tokio::test]
async fn config_reload_keeps_live_connections() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&upstream.url("/"), "").await;
    let mut live = Vec::new();
    for n in 0..5 {
        let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
        assert_eq!(
            round_trip(&mut client, &format!("c{n}")).await,
            format!("c{n}")
        );
        live.push(client);
    }

    gateway.rewrite_config(
        &upstream.url("/"),
        "auth:\n  allowedOrigins: [https://app.test]\n",
    );
    gateway
        .wait_metric(
            "wsfleet_gateway_reloads_total{kind=\"config\",outcome=\"success\"}",
            1.0,
        )
        .await;
    assert_eq!(
        refused_status(&gateway.url("/"), &[]).await,
        403,
        "new handshakes follow the new config"
    );
    assert!(
        connect(&gateway.url("/"), &[("Origin", "https://app.test")])
            .await
            .is_ok()
    );
    for (n, client) in live.iter_mut().enumerate() {
        assert_eq!(
            round_trip(client, &format!("after {n}")).await,
            format!("after {n}")
        );
    }

    gateway.rewrite_config(&upstream.url("/"), "limits:\n  maxConnections: 0\n");
    gateway
        .wait_metric(
            "wsfleet_gateway_reloads_total{kind=\"config\",outcome=\"failure\"}",
            1.0,
        )
        .await;
    assert_eq!(
        refused_status(&gateway.url("/"), &[]).await,
        403,
        "the previous config stays"
    );
    for client in &mut live {
        assert_eq!(round_trip(client, "still here").await, "still here");
    }
    assert_eq!(
        gateway.metric("wsfleet_gateway_active_connections").await,
        5.0
    );
}

#[tokio::test]
async fn check_flag_names_the_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, "upstream:\n  url: http://backend/\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wsfleet-gateway"))
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("upstream.url") && stderr.contains("http://backend/"),
        "{stderr}"
    );

    std::fs::write(&path, "upstream:\n  url: ws://backend/\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wsfleet-gateway"))
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
}
