//! wsfleet-probes: the small HTTP server behind `/healthz`, `/readyz` and `/metrics`.
//!
//! [`serve`] answers each request on a listener with what the caller's `respond` returns for
//! its path, asked at request time so that readiness and metrics are current. Probes and
//! scrapes are small and quick, so a request head larger than [`MAX_REQUEST_BYTES`] or a
//! connection open longer than [`REQUEST_TIMEOUT`] is dropped, and every connection closes
//! after one answer. Accepting is paced while the process is out of file descriptors
//! ([`accept_backoff`]).

#![forbid(unsafe_code)]

pub mod accept_backoff;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

pub use hyper::StatusCode;

use crate::accept_backoff::AcceptBackoff;

/// The largest request head answered; hyper refuses a larger one with 431.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a connection may take from accept to the end of the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: String,
}

/// The content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Reply {
    /// An answer with any status.
    pub fn new(status: StatusCode, content_type: &'static str, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type,
            body: body.into(),
        }
    }

    /// `200 OK` with a plain-text body.
    pub fn text(body: impl Into<String>) -> Self {
        Self::new(StatusCode::OK, "text/plain", body)
    }

    /// `200 OK` with a metrics exposition in the OpenMetrics text format, which both binaries
    /// encode with prometheus-client.
    pub fn openmetrics(body: impl Into<String>) -> Self {
        Self::new(StatusCode::OK, OPENMETRICS, body)
    }

    /// `404 Not Found`, for a path the server does not know.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "text/plain", "not found\n")
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        Response::builder()
            .status(self.status)
            .header("content-type", self.content_type)
            .body(Full::new(Bytes::from(self.body)))
            .expect("a status code and a static content type make a valid response")
    }
}

/// Answers connections on `listener` until the returned future is dropped; `respond` maps a
/// request's path (without the query) to its answer. `name` names the listener in the log.
pub async fn serve<R>(listener: TcpListener, name: &'static str, respond: R)
where
    R: Fn(&str) -> Reply + Send + Sync + 'static,
{
    let respond = Arc::new(respond);
    let mut backoff = AcceptBackoff::default();
    loop {
        let (stream, _) = backoff.accept(&listener, name).await;
        tokio::spawn(answer(stream, name, respond.clone()));
    }
}

async fn answer<R>(stream: TcpStream, name: &'static str, respond: Arc<R>)
where
    R: Fn(&str) -> Reply + Send + Sync + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let reply = respond.as_ref()(request.uri().path());
        async move { Ok::<_, Infallible>(reply.into_response()) }
    });
    let connection = http1::Builder::new()
        .max_buf_size(MAX_REQUEST_BYTES)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(REQUEST_TIMEOUT, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(listener = name, error = %err, "connection failed"),
        Err(_) => tracing::debug!(listener = name, "connection timed out"),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::time::Instant;

    use super::*;

    /// Serves a fixed table on 127.0.0.1 and returns its address.
    async fn start() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readiness = ready.clone();
        tokio::spawn(serve(listener, "test", move |path| match path {
            "/healthz" => Reply::text("ok\n"),
            "/readyz" if readiness.swap(true, std::sync::atomic::Ordering::Relaxed) => {
                Reply::text("ready\n")
            }
            "/readyz" => Reply::new(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n"),
            "/metrics" => Reply::openmetrics("up 1\n# EOF\n"),
            _ => Reply::not_found(),
        }));
        address
    }

    /// Sends `request` as it is and reads until the server closes the connection.
    async fn exchange(address: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        String::from_utf8_lossy(&response).into_owned()
    }

    async fn get(address: SocketAddr, target: &str) -> String {
        let request = format!("GET {target} HTTP/1.1\r\nHost: probes\r\n\r\n");
        exchange(address, request.as_bytes()).await
    }

    #[tokio::test]
    async fn paths_are_answered_with_status_content_type_and_body() {
        let address = start().await;
        let metrics = get(address, "/metrics?name[]=up").await;
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(metrics.contains(
            "content-type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"
        ));
        assert!(metrics.contains("content-length: 11\r\n"));
        assert!(metrics.ends_with("\r\n\r\nup 1\n# EOF\n"));
        assert!(get(address, "/healthz").await.ends_with("\r\n\r\nok\n"));
        let missing = get(address, "/other").await;
        assert!(
            missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{missing}"
        );
    }

    #[tokio::test]
    async fn readiness_is_asked_at_request_time() {
        let address = start().await;
        let first = get(address, "/readyz").await;
        assert!(first.starts_with("HTTP/1.1 503 "), "{first}");
        assert!(first.ends_with("not ready\n"));
        let second = get(address, "/readyz").await;
        assert!(second.starts_with("HTTP/1.1 200 "), "{second}");
    }

    #[tokio::test]
    async fn a_connection_closes_after_one_answer() {
        let address = start().await;
        let twice =
            b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
        let response = exchange(address, twice).await;
        assert_eq!(response.matches("HTTP/1.1 200").count(), 1, "{response}");
        assert!(response.contains("connection: close\r\n"), "{response}");
    }

    #[tokio::test]
    async fn an_oversized_request_head_is_refused() {
        let address = start().await;
        let padding = "x".repeat(MAX_REQUEST_BYTES);
        let request = format!("GET /healthz HTTP/1.1\r\nHost: a\r\nX-Padding: {padding}\r\n\r\n");
        let response = exchange(address, request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 431 "), "{response}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_never_finishes_is_dropped_after_the_time_limit() {
        let address = start().await;
        let started = Instant::now();
        let unfinished = exchange(address, b"GET /healthz HTTP/1.1\r\nHost:");
        let response = tokio::time::timeout(REQUEST_TIMEOUT * 2, unfinished)
            .await
            .expect("the server drops the connection");
        assert_eq!(response, "");
        assert!(started.elapsed() >= REQUEST_TIMEOUT);
    }
}
