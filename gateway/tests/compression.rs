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
