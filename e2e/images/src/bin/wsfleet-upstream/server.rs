//! Accepts connections and answers their HTTP requests: GET /healthz for a readiness probe, or
//! a WebSocket upgrade that becomes a session. On shutdown it stops accepting, lets every
//! session close with 1001 and returns once all connections are gone.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{SEC_WEBSOCKET_EXTENSIONS, UPGRADE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use yawc::{Options, WebSocket};

use crate::Mode;
use crate::room::Room;
use crate::session::{self, Session};
use crate::whoami;

/// How long to wait after a failed accept (typically out of file descriptors) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What every connection shares.
pub struct Upstream {
    /// The pod name `whoami` reports.
    pod: String,
    /// The chat room; None in echo mode.
    room: Option<Arc<Room>>,
}

impl Upstream {
    /// The shared state for `mode`, with the pod name `whoami` reports.
    pub fn new(mode: Mode, pod: String) -> Self {
        let room = (mode == Mode::Chat).then(|| Arc::new(Room::default()));
        Self { pod, room }
    }
}

/// Serves `listener` until `shutdown` is cancelled, then waits for every connection to end.
pub async fn serve(listener: TcpListener, upstream: Upstream, shutdown: CancellationToken) {
    let upstream = Arc::new(upstream);
    let tasks = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let connection = Connection {
                    upstream: Arc::clone(&upstream),
                    // An IPv4 client of a dual-stack listener shows up as ::ffff:a.b.c.d.
                    peer: peer.ip().to_canonical(),
                    shutdown: shutdown.clone(),
                    tasks: tasks.clone(),
                };
                tasks.spawn(connection.serve_http(stream));
            }
            Err(error) => {
                eprintln!("accepting a connection: {error}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

/// One accepted TCP connection.
#[derive(Clone)]
struct Connection {
    upstream: Arc<Upstream>,
    peer: IpAddr,
    shutdown: CancellationToken,
    /// Where the WebSocket session is spawned, so that shutdown waits for it.
    tasks: TaskTracker,
}

impl Connection {
    /// Serves the connection's HTTP requests until it closes, is upgraded, or shutdown begins.
    async fn serve_http(self, stream: TcpStream) {
        let shutdown = self.shutdown.clone();
        let service = service_fn(move |request| {
            let response = self.respond(request);
            async move { Ok::<_, Infallible>(response) }
        });
        let http = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::pin!(http);
        let served = tokio::select! {
            served = http.as_mut() => served,
            () = shutdown.cancelled() => {
                http.as_mut().graceful_shutdown();
                http.await
            }
        };
        // A client that hangs up mid-request is its own business; nothing here needs cleaning up.
        let _ = served;
    }

    /// Routes one request: an upgrade on any path, or the probe.
    fn respond(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let upgrade = request
            .headers()
            .get(UPGRADE)
            .is_some_and(|protocol| protocol.as_bytes().eq_ignore_ascii_case(b"websocket"));
        if upgrade {
            return self.upgrade(request);
        }
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok".to_owned()),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: every path takes a WebSocket upgrade; GET /healthz is the probe\n"
                    .to_owned(),
            ),
        }
    }

    /// Answers the upgrade and starts the session on the upgraded connection.
    fn upgrade(&self, mut request: Request<Incoming>) -> Response<Full<Bytes>> {
        let whoami = whoami::answer(&self.upstream.pod, self.peer, &request);
        let path = request.uri().path().to_owned();
        // permessage-deflate whenever the client offers it; text must be UTF-8 for chat's JSON.
        let options = Options::default()
            .with_low_latency_compression()
            .with_utf8();
        let (response, upgraded) = match WebSocket::upgrade_with_options(&mut request, options) {
            Ok(upgrade) => upgrade,
            Err(error) => {
                return text(StatusCode::BAD_REQUEST, format!("bad upgrade: {error}\n"));
            }
        };
        let deflate = response.headers().contains_key(SEC_WEBSOCKET_EXTENSIONS);
        let session = Session {
            peer: self.peer,
            whoami,
            // Joining before the 101 goes out: a client that has its answer is in the room.
            chat: self.upstream.room.as_ref().map(Room::join),
        };
        let shutdown = self.shutdown.clone();
        let peer = self.peer;
        self.tasks.spawn(async move {
            let ending = match upgraded.await {
                Ok(ws) => session::run(ws, session, &shutdown).await.to_string(),
                Err(error) => format!("upgrade failed: {error}"),
            };
            println!("websocket from {peer} path {path} deflate {deflate}: {ending}");
        });
        response.map(|_| Full::default())
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
