//! permessage-deflate end to end between a client and an upstream that both negotiate it
//! (Python's `websockets`; see scripts/install-test-deps): compressed frames pass the gateway
//! untouched, RSV1 and all.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};

use common::*;

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pmd_peer.py");
/// Compresses to a small fraction of its length.
const TEXT: &str = "wsfleet compresses nothing itself; ";

struct PythonUpstream {
    child: Child,
    lines: BufReader<ChildStdout>,
    port: u16,
}

impl PythonUpstream {
    fn start() -> Self {
        let mut child = Command::new("python3")
            .args([PEER, "upstream"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with the websockets package (scripts/install-test-deps)");
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let port = Self::read_line(&mut lines)
            .strip_prefix("listening ")
            .and_then(|port| port.parse().ok())
            .expect("the upstream's port");
        Self { child, lines, port }
    }

    fn read_line(lines: &mut BufReader<ChildStdout>) -> String {
        let mut line = String::new();
        lines.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }
}

impl Drop for PythonUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python_client(url: &str) -> serde_json::Value {
    let output = Command::new("python3")
        .args([PEER, "client", url, &TEXT.repeat(40)])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Runs the Python client through a gateway (with `extra_config`) to a Python upstream; returns
/// what the upstream reports about the extensions it saw, and the client's report.
async fn exchange_through_gateway(extra_config: &str) -> (String, serde_json::Value) {
    let mut upstream = PythonUpstream::start();
    let gateway = Gateway::start(&format!("ws://127.0.0.1:{}/", upstream.port), extra_config).await;
    let report = tokio::task::spawn_blocking({
        let url = gateway.url("/");
        move || python_client(&url)
    })
    .await
    .unwrap();
    (PythonUpstream::read_line(&mut upstream.lines), report)
}

#[tokio::test]
async fn compressed_frames_pass_through() {
    let (upstream_saw, report) = exchange_through_gateway("").await;
    assert_eq!(upstream_saw, "extensions permessage-deflate");
    assert!(
        report["extensions"]
            .as_str()
            .unwrap()
            .contains("permessage-deflate"),
        "{report}"
    );
    assert_eq!(report["sent_rsv1"], true, "{report}");
    assert_eq!(
        report["echo_rsv1"], true,
        "the upstream's compressed frame arrives as it was: {report}"
    );
    assert!(
        report["echo_wire_payload"].as_u64().unwrap() < 125,
        "compressed on the wire: {report}"
    );
    assert_eq!(report["echo_matches"], true, "{report}");
}

#[tokio::test]
async fn compression_disabled_removes_the_offer() {
    let (upstream_saw, report) = exchange_through_gateway("compression: Disabled\n").await;
    assert_eq!(upstream_saw, "extensions none");
    assert!(report["extensions"].is_null(), "{report}");
    assert_eq!(report["echo_rsv1"], false, "{report}");
    assert_eq!(report["echo_matches"], true, "{report}");
}

/// Runs `pmd_peer.py limit` through a gateway with a 64 KiB `maxMessageBytes`: messages under
/// the limit, then one of `size` characters sent by `sender` (`client` or `upstream`).
async fn limit_through_gateway(sender: &str, size: usize) -> serde_json::Value {
    let upstream = PythonUpstream::start();
    let gateway = Gateway::start(
        &format!("ws://127.0.0.1:{}/", upstream.port),
        "limits:\n  maxMessageBytes: 65536\n",
    )
    .await;
    let url = gateway.url("/");
    let sender = sender.to_owned();
    tokio::task::spawn_blocking(move || {
        let output = Command::new("python3")
            .args([PEER, "limit", &url, &sender, &size.to_string()])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    })
    .await
    .unwrap()
}

/// 10 MB of one repeated character compresses to about 10 KB: the limit is on what a message
/// inflates to, not on its compressed size.
#[tokio::test]
async fn a_compressed_message_from_the_client_is_limited_by_its_inflated_size() {
    ensure_only_the_bomb_refused(&limit_through_gateway("client", 10_000_000).await);
}

#[tokio::test]
async fn a_compressed_message_from_the_upstream_is_limited_by_its_inflated_size() {
    ensure_only_the_bomb_refused(&limit_through_gateway("upstream", 10_000_000).await);
}

/// The messages under the limit passed, window and all, and the bomb was refused with 1009.
fn ensure_only_the_bomb_refused(report: &serde_json::Value) {
    assert_eq!(
        report["echoes_match"],
        serde_json::json!([true, true, true, true, true]),
        "messages under the limit pass, window and all: {report}"
    );
    assert_eq!(report["close_code"], 1009, "{report}");
    assert_eq!(report["close_reason"], "message too big", "{report}");
}

/// Compressed data that does not inflate is refused by the gateway (1007), not passed on.
#[tokio::test]
async fn compressed_data_that_does_not_inflate_closes_1007() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let upstream = PythonUpstream::start();
    let gateway = Gateway::start(&format!("ws://127.0.0.1:{}/", upstream.port), "").await;
    let mut socket = tokio::net::TcpStream::connect(gateway.address)
        .await
        .unwrap();
    let head = upgrade_head("/", "Sec-WebSocket-Extensions: permessage-deflate\r\n");
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let answer_end = loop {
        let mut chunk = [0u8; 4096];
        let read = within("the upgrade answer", socket.read(&mut chunk))
            .await
            .unwrap();
        assert!(read > 0, "closed during the handshake");
        received.extend_from_slice(&chunk[..read]);
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let answer = String::from_utf8_lossy(&received[..answer_end]).to_lowercase();
    assert!(answer.contains("permessage-deflate"), "{answer}");

    // A masked text frame with RSV1 set and a payload that is not DEFLATE.
    let key = [9u8, 8, 7, 6];
    let mut frame = vec![0xC1, 0x80 | 20];
    frame.extend_from_slice(&key);
    frame.extend((0..20).map(|index| 0xff ^ key[index % 4]));
    socket.write_all(&frame).await.unwrap();

    let mut rest = received.split_off(answer_end);
    within("a close frame", async {
        while rest.len() < 4 || rest[0] != 0x88 {
            let mut chunk = [0u8; 4096];
            let read = socket.read(&mut chunk).await.unwrap();
            assert!(read > 0, "ended without a close frame: {rest:?}");
            rest.extend_from_slice(&chunk[..read]);
        }
    })
    .await;
    let len = usize::from(rest[1] & 0x7f);
    while rest.len() < 2 + len {
        let mut chunk = [0u8; 4096];
        let read = socket.read(&mut chunk).await.unwrap();
        assert!(read > 0);
        rest.extend_from_slice(&chunk[..read]);
    }
    let code = u16::from_be_bytes([rest[2], rest[3]]);
    let reason = String::from_utf8_lossy(&rest[4..2 + len]);
    assert_eq!((code, &*reason), (1007, "invalid compressed data"));
}
