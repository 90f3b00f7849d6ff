//! wsfleet-upstream as a real process on 127.0.0.1, with real clients: yawc for echo and chat,
//! raw HTTP for the probe and the handshake's headers, and Python's `websockets` (installed by
//! scripts/install-test-deps) as the independent permessage-deflate client.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use yawc::close::CloseCode;
use yawc::{Frame, HttpRequestBuilder, OpCode, TcpWebSocket, WebSocket};

/// Longer than anything here should take on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(20);
const POD: &str = "upstream-0";
const DEFLATE_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/deflate_client.py");

/// A running wsfleet-upstream and the lines it logs after `listening`.
struct Upstream {
    child: Child,
    address: SocketAddr,
    log: mpsc::Receiver<String>,
}

impl Upstream {
    fn start(mode: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wsfleet-upstream"))
            .args(["serve", "--listen", "127.0.0.1:0", "--mode", mode])
            .env("POD_NAME", POD)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting wsfleet-upstream");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("a listening line").unwrap();
        let address = first
            .strip_prefix("listening ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|address| address.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        let (sender, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            address,
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.address)
    }

    fn next_log_line(&self) -> String {
        self.log.recv_timeout(DEADLINE).expect("a log line")
    }

    fn terminate(&self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).expect("sending SIGTERM");
    }

    fn wait(&mut self) -> ExitStatus {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < DEADLINE, "the upstream did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Opens a connection and writes `request` on it as is.
    fn send_raw(&self, request: &str) -> BufReader<TcpStream> {
        let mut stream = TcpStream::connect(self.address).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        BufReader::new(stream)
    }

    /// The whole response to a `Connection: close` request.
    fn http(&self, request: &str) -> String {
        let mut response = String::new();
        self.send_raw(request)
            .read_to_string(&mut response)
            .unwrap();
        response
    }

    /// The head of a response that leaves the connection open, such as a 101.
    fn response_head(&self, request: &str) -> String {
        let mut reader = self.send_raw(request);
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            assert_ne!(reader.read_line(&mut head).unwrap(), 0, "{head}");
        }
        head
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(url: &str, request: HttpRequestBuilder) -> TcpWebSocket {
    WebSocket::connect(url.parse().unwrap())
        .with_request(request)
        .await
        .expect("the WebSocket handshake")
}

async fn next_frame(ws: &mut TcpWebSocket) -> Frame {
    tokio::time::timeout(DEADLINE, ws.next())
        .await
        .expect("a frame in time")
        .expect("the connection stays open")
}

async fn next_json(ws: &mut TcpWebSocket) -> Value {
    let frame = next_frame(ws).await;
    assert_eq!(frame.opcode(), OpCode::Text);
    serde_json::from_slice(frame.payload()).unwrap()
}

async fn send(ws: &mut TcpWebSocket, frame: Frame) {
    ws.send(frame).await.expect("sending");
}

#[tokio::test]
async fn echo_returns_messages_and_answers_whoami() {
    let upstream = Upstream::start("echo");
    let request = HttpRequestBuilder::new()
        .uri("/rooms/7?user=u-1")
        .header("X-User-Id", "u-1")
        .header("X-Forwarded-For", "203.0.113.9")
        .header("Origin", "https://app.example")
        .header("Sec-WebSocket-Protocol", "chat.v1");
    let mut ws = connect(&upstream.url("/rooms/7?user=u-1"), request).await;

    send(&mut ws, Frame::text("hello")).await;
    let echo = next_frame(&mut ws).await;
    assert_eq!((echo.opcode(), echo.as_str()), (OpCode::Text, "hello"));

    send(&mut ws, Frame::binary(vec![0u8, 1, 2, 255])).await;
    let echo = next_frame(&mut ws).await;
    assert_eq!(echo.opcode(), OpCode::Binary);
    assert_eq!(&echo.payload()[..], [0, 1, 2, 255]);

    send(&mut ws, Frame::ping("are you there")).await;
    let pong = next_frame(&mut ws).await;
    assert_eq!(
        (pong.opcode(), pong.as_str()),
        (OpCode::Pong, "are you there")
    );

    send(&mut ws, Frame::text("whoami")).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({
            "pod": POD,
            "peer": "127.0.0.1",
            "headers": {
                "x-user-id": "u-1",
                "x-forwarded-for": "203.0.113.9",
                "origin": "https://app.example",
                "sec-websocket-protocol": "chat.v1",
                "path": "/rooms/7?user=u-1",
            },
        })
    );

    send(&mut ws, Frame::close(CloseCode::Normal, "bye")).await;
    let close = next_frame(&mut ws).await;
    assert_eq!(
        close.close_code(),
        Some(CloseCode::Normal),
        "the close is answered"
    );
    assert_eq!(
        upstream.next_log_line(),
        "websocket from 127.0.0.1 path /rooms/7 deflate false: closed by the client (1000)"
    );
}

#[tokio::test]
async fn chat_broadcasts_to_every_client_and_answers_whoami_to_the_asker() {
    let upstream = Upstream::start("chat");
    let mut alice = connect(&upstream.url("/"), HttpRequestBuilder::new()).await;
    let mut bob = connect(&upstream.url("/"), HttpRequestBuilder::new()).await;

    send(&mut alice, Frame::text("hello room")).await;
    let hello = json!({ "from": "127.0.0.1", "text": "hello room" });
    assert_eq!(next_json(&mut alice).await, hello, "the sender gets it too");
    assert_eq!(next_json(&mut bob).await, hello);

    send(&mut bob, Frame::text("whoami")).await;
    assert_eq!(next_json(&mut bob).await["pod"], POD);
    send(&mut alice, Frame::text("second")).await;
    let second = json!({ "from": "127.0.0.1", "text": "second" });
    assert_eq!(
        next_json(&mut alice).await,
        second,
        "bob's whoami went to bob only"
    );
    assert_eq!(next_json(&mut bob).await, second);
}

#[tokio::test]
async fn sigterm_closes_sessions_with_1001_and_exits_zero() {
    let mut upstream = Upstream::start("chat");
    let mut ws = connect(&upstream.url("/"), HttpRequestBuilder::new()).await;
    upstream.terminate();
    let close = next_frame(&mut ws).await;
    assert_eq!(close.close_code(), Some(CloseCode::Away));
    // Polling on sends yawc's reply to the close, completing the handshake.
    assert!(ws.next().await.is_none());
    assert!(upstream.wait().success());
    assert_eq!(
        upstream.next_log_line(),
        "websocket from 127.0.0.1 path / deflate false: closed: server shutting down (1001)"
    );
}

#[test]
fn healthz_answers_plain_http() {
    let upstream = Upstream::start("echo");
    let response = upstream.http("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\nok"), "{response}");
    let response = upstream.http("GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 404 "), "{response}");
}

#[test]
fn the_upgrade_selects_no_subprotocol() {
    let upstream = Upstream::start("echo");
    let response = upstream.response_head(
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: chat.v1, chat.v2\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 101 "), "{response}");
    assert!(
        response.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{response}"
    );
    assert!(
        !response
            .to_ascii_lowercase()
            .contains("sec-websocket-protocol"),
        "{response}"
    );
}

#[test]
fn permessage_deflate_with_python_websockets() {
    let upstream = Upstream::start("echo");
    // 10 KB of repetitive text, sent three times: the later copies are back-references into the
    // earlier ones, which only a decoder that keeps its context (as negotiated) can follow.
    let text = "wsfleet-upstream deflates what it echoes; ".repeat(240);
    let output = Command::new("python3")
        .args([DEFLATE_CLIENT, &upstream.url("/deflate"), &text, "3"])
        .output()
        .expect("python3 with the websockets package (scripts/install-test-deps)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        report["extensions"]
            .as_str()
            .unwrap()
            .starts_with("permessage-deflate"),
        "{report}"
    );
    assert_eq!(report["echoes_match"], true, "{report}");
    let (text_bytes, wire_bytes) = (
        report["text_bytes"].as_u64().unwrap(),
        report["wire_bytes"].as_u64().unwrap(),
    );
    assert_eq!(text_bytes, 3 * text.len() as u64);
    assert!(
        wire_bytes < text_bytes / 10,
        "the echoes arrive compressed: {report}"
    );
    assert_eq!(
        upstream.next_log_line(),
        "websocket from 127.0.0.1 path /deflate deflate true: closed by the client (1000)"
    );
}
