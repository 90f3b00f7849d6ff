//! The metrics port: `/metrics` (Prometheus text), `/healthz` (the process runs) and
//! `/readyz` (accepting connections and able to check tokens; fails as soon as draining
//! starts).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};

use crate::process::accept_backoff::AcceptBackoff;
use crate::state::Shared;
use crate::wire::handshake::read_head;

/// Scrapes and probes are small and quick; anything else is dropped.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the endpoints until the process exits.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut backoff = AcceptBackoff::default();
    loop {
        let (stream, _) = backoff.accept(&listener, "metrics").await;
        tokio::spawn(answer(stream, shared.clone()));
    }
}

async fn answer(mut stream: TcpStream, shared: Arc<Shared>) {
    let Ok(Ok(head)) =
        tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream, MAX_REQUEST_BYTES)).await
    else {
        return;
    };
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut slots);
    let path = match request.parse(&head.head) {
        Ok(httparse::Status::Complete(_)) => request.path.unwrap_or("/"),
        _ => return,
    };
    let (status, content_type, body) = match path.split('?').next().unwrap_or_default() {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4",
            shared.metrics.render(),
        ),
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
        "/readyz" if is_ready(&shared) => ("200 OK", "text/plain", "ready\n".to_owned()),
        "/readyz" => (
            "503 Service Unavailable",
            "text/plain",
            "not ready\n".to_owned(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Listening and not draining; with keys from an identity provider, once they were fetched:
/// until then every token would be refused.
fn is_ready(shared: &Shared) -> bool {
    shared.ready.load(Ordering::Relaxed)
        && shared
            .policy
            .load()
            .jwt
            .as_ref()
            .is_none_or(|verifier| verifier.has_keys())
}
