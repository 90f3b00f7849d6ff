//! The access log through a real gateway: its stdout carries one JSON line per connection and
//! per refused handshake, and sampling keeps one connection in N.

mod common;

use std::process::Stdio;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use futures::SinkExt as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_tungstenite::tungstenite::Message;

const HMAC_SECRET: &[u8] = b"hmac-secret-used-only-by-these-tests";

/// A gateway with `access_log` and HS256 tokens, its stdout read line by line.
async fn logging_gateway(
    upstream: &EchoUpstream,
    access_log: &str,
) -> (Gateway, UnboundedReceiver<String>) {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("key");
    std::fs::write(&key_path, HMAC_SECRET).unwrap();
    let extra = format!(
        "auth:\n  jwt:\n    algorithms: [HS256]\n    keyFile: {}\naccessLog: {access_log}\n",
        key_path.display()
    );
    let mut gateway = Gateway::start_command(dir, &upstream.url("/"), &extra, |command| {
        command.stdout(Stdio::piped());
    })
    .await;
    let lines = gateway.stdout_lines();
    (gateway, lines)
}

fn bearer(subject: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": subject, "exp": exp}),
        &EncodingKey::from_secret(HMAC_SECRET),
    )
    .unwrap();
    format!("Bearer {token}")
}

/// The next stdout line, parsed: every line must be an access log line.
async fn next_line(lines: &mut UnboundedReceiver<String>) -> Value {
    let line = within("an access log line", lines.recv())
        .await
        .expect("the gateway's stdout ended");
    let parsed: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("{line}"));
    assert_eq!(parsed["type"], "access", "{line}");
    parsed
}

/// Checks that the time field is an RFC 3339 time, then leaves it out.
fn without_time(mut line: Value) -> Value {
    let time = line.as_object_mut().unwrap().remove("time").unwrap();
    assert!(
        humantime::parse_rfc3339(time.as_str().unwrap()).is_ok(),
        "{time}"
    );
    line
}

#[tokio::test]
async fn a_connection_and_a_refusal_each_write_one_line() {
    let upstream = EchoUpstream::start().await;
    let (gateway, mut lines) = logging_gateway(&upstream, "{enabled: true}").await;

    let url = gateway.url("/rooms/7?access_token=secret");
    let (mut client, _) = connect(&url, &[("Authorization", &bearer("al\"ice"))])
        .await
        .unwrap();
    assert_eq!(round_trip(&mut client, "one").await, "one");
    assert_eq!(round_trip(&mut client, "two").await, "two");
    client.send(Message::text("close:4001:bye")).await.unwrap();
    assert_eq!(next_close(&mut client).await, Some((4001, "bye".into())));
    let mut line = without_time(next_line(&mut lines).await);
    let duration = line.as_object_mut().unwrap().remove("duration_ms").unwrap();
    assert!(duration.as_u64().is_some(), "{duration}");
    // Frames with headers: masked from the client (6 bytes), plain from the upstream (2),
    // close frames included.
    assert_eq!(
        line,
        json!({
            "type": "access", "event": "connection", "client": "127.0.0.1",
            "subject": "al\"ice", "path": "/rooms/7",
            "bytes_client_to_upstream": 9 + 9 + 20 + 11, "messages_client_to_upstream": 3,
            "bytes_upstream_to_client": 5 + 5 + 7, "messages_upstream_to_client": 2,
            "close_code": 4001, "closed_by": "upstream", "ending": "closed",
        })
    );

    assert_eq!(refused_status(&gateway.url("/lobby"), &[]).await, 401);
    assert_eq!(
        without_time(next_line(&mut lines).await),
        json!({"type": "access", "event": "refusal", "client": "127.0.0.1", "path": "/lobby",
               "reason": "token_missing", "status": 401})
    );
}

#[tokio::test]
async fn one_connection_in_n_is_logged_and_refusals_can_be_left_out() {
    let upstream = EchoUpstream::start().await;
    let (gateway, mut lines) = logging_gateway(
        &upstream,
        "{enabled: true, sampleOneIn: 2, refusals: false}",
    )
    .await;
    for room in 1..=5 {
        let url = gateway.url(&format!("/{room}"));
        let (mut client, _) = connect(&url, &[("Authorization", &bearer("bob"))])
            .await
            .unwrap();
        assert_eq!(round_trip(&mut client, "hi").await, "hi");
        client.close(None).await.unwrap();
        next_close(&mut client).await;
        // One at a time, so that they end in order.
        eventually("the connection to leave the gateway", || async {
            gateway.metric("wsfleet_gateway_active_connections").await == 0.0
        })
        .await;
    }
    assert_eq!(refused_status(&gateway.url("/"), &[]).await, 401);

    // The gateway writes what is queued before it exits, then its stdout ends.
    gateway.terminate();
    let mut paths = Vec::new();
    while let Some(line) = within("the gateway's stdout to end", lines.recv()).await {
        let line: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(line["event"], "connection", "{line}");
        paths.push(line["path"].as_str().unwrap().to_owned());
    }
    assert_eq!(paths, ["/1", "/3", "/5"]);
}
