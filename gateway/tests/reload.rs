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

#[tokio::test]
async fn jwt_key_rotation_applies_to_new_handshakes() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let token = |secret: &[u8]| {
        let claims = serde_json::json!({"sub": "ann", "exp": 4_000_000_000u64});
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let upstream = EchoUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key_dir = dir.path().join("jwt");
    std::fs::create_dir(&key_dir).unwrap();
    std::fs::write(key_dir.join("key"), "first-secret-first-secret").unwrap();
    let extra = format!(
        "auth:\n  jwt:\n    algorithms: [HS256]\n    keyFile: {}\n",
        key_dir.join("key").display()
    );
    let gateway = Gateway::start_in(dir, &upstream.url("/"), &extra).await;
    let old = format!("Bearer {}", token(b"first-secret-first-secret"));
    let (mut live, _) = connect(&gateway.url("/"), &[("Authorization", &old)])
        .await
        .unwrap();

    replace_file(&key_dir.join("key"), b"second-secret-second-secret");
    gateway
        .wait_metric(
            "wsfleet_gateway_reloads_total{kind=\"config\",outcome=\"success\"}",
            1.0,
        )
        .await;
    assert_eq!(
        refused_status(&gateway.url("/"), &[("Authorization", &old)]).await,
        401
    );
    let new = format!("Bearer {}", token(b"second-secret-second-secret"));
    assert!(
        connect(&gateway.url("/"), &[("Authorization", &new)])
            .await
            .is_ok()
    );
    assert_eq!(round_trip(&mut live, "kept").await, "kept");
}

/// Only the files the config names (and Kubernetes' `..data` swap) trigger a reload, not a log
/// written beside the config. To tell, the config is a symlink to a file outside the watched
/// directory: its content changes without an event of its own, so a reload that follows can
/// only come from the log's events.
#[tokio::test]
async fn a_log_file_beside_the_config_does_not_trigger_reloads() {
    let upstream = EchoUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let hidden = tempfile::tempdir().unwrap();
    let target = hidden.path().join("gateway.yaml");
    std::fs::write(&target, "").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("gateway.yaml")).unwrap();
    let gateway = Gateway::start_in(dir, &upstream.url("/"), "").await;
    let success = "wsfleet_gateway_reloads_total{kind=\"config\",outcome=\"success\"}";

    let config = std::fs::read_to_string(&target).unwrap();
    std::fs::write(
        &target,
        format!("{config}auth:\n  allowedOrigins: [https://app.test]\n"),
    )
    .unwrap();
    let log = gateway.dir.path().join("gateway.log");
    for line in 0..20 {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        writeln!(file, "line {line}").unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    // Well past the reload's settling time: a reload the log triggered would have happened.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(
        gateway.metric(success).await,
        0.0,
        "the log triggered a reload"
    );
    assert!(
        connect(&gateway.url("/"), &[]).await.is_ok(),
        "the old config stays"
    );

    gateway.rewrite_config(
        &upstream.url("/"),
        "auth:\n  allowedOrigins: [https://app.test]\n",
    );
    gateway.wait_metric(success, 1.0).await;
    assert_eq!(refused_status(&gateway.url("/"), &[]).await, 403);
}
