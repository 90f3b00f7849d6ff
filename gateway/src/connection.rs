//! The life of one client connection: accept -> admit -> upgrade -> relay -> close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::admission;
use crate::drain::ConnectionSlot;
use crate::handshake::{self, Head, HeadError, UpgradeRequest};
use crate::jwt::TokenError;
use crate::metrics::HandshakeOutcome;
use crate::policy::Policy;
use crate::refusal::Refusal;
use crate::relay::{Relay, RelaySettings};
use crate::server::Shared;
use crate::transport::Transport;
use crate::upstream::{ForwardPlan, OpenUpstream};

/// Budget for writing a refusal to a client that may not be reading.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves one accepted TCP connection to its end.
pub async fn serve(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    // Frames are written whole; waiting to coalesce them only adds latency.
    let _ = tcp.set_nodelay(true);
    // One policy for the whole connection, even if a reload swaps it meanwhile.
    let policy = shared.policy.load_full();

    // Accept: TLS (if configured) and the request head, within the slowloris budget.
    let limits = &policy.config.limits;
    // Handshake futures are boxed: kept inline they would size every idle connection's task.
    let accepted = tokio::time::timeout(
        limits.handshake_timeout,
        Box::pin(accept(&shared, tcp, limits.max_header_bytes)),
    )
    .await;
    let (mut client, head) = match accepted {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(Some((mut client, refusal)))) => {
            return refuse(&shared, &mut client, refusal, peer).await;
        }
        Ok(Err(None)) => return,
        Err(_) => {
            shared.count_refusal(Refusal::HandshakeTimeout);
            tracing::debug!(%peer, "handshake timed out");
            return;
        }
    };

    // Admit: every policy check before any upstream work.
    let admitted = match admit(
        &shared,
        &policy,
        &head,
        peer,
        matches!(client, Transport::ServerTls(_)),
    ) {
        Ok(admitted) => admitted,
        Err(refusal) => return refuse(&shared, &mut client, refusal, peer).await,
    };

    // Upgrade: the upstream first, then its answer relayed to the client.
    let plan = ForwardPlan {
        client_ip: admitted.client_ip,
        client_tls: admitted.client_tls,
        path_suffix: &admitted.path_suffix,
        compression: policy.config.compression,
        set_headers: admitted.claim_headers,
    };
    let OpenUpstream {
        stream: upstream,
        answer,
        early,
    } = match Box::pin(policy.upstream.open(&admitted.request, &plan)).await {
        Ok(open) => open,
        Err(failure) => {
            shared.metrics.upstream_error(failure.kind);
            tracing::warn!(%peer, error = %failure, "upstream handshake failed");
            return refuse(&shared, &mut client, failure.refusal, peer).await;
        }
    };
    if client.write_all(answer.render().as_bytes()).await.is_err() || client.flush().await.is_err()
    {
        return;
    }
    shared.metrics.handshake(HandshakeOutcome::Success);

    // Relay until either side closes, a limit is hit, or this connection's drain turn comes.
    let settings = RelaySettings {
        max_message_bytes: policy.config.limits.max_message_bytes,
        message_rate: policy.config.limits.messages_per_connection,
        heartbeat: policy.config.heartbeat,
    };
    drop(policy);
    let slot = admitted.slot;
    let mut relay = Relay::new(
        client,
        upstream,
        head.rest,
        early,
        settings,
        shared.metrics.clone(),
    );
    let ending = tokio::select! {
        ending = &mut relay => ending,
        () = slot.drain_turn() => {
            relay.close_going_away();
            relay.await
        }
    };

    // Close: the slot goes with the connection.
    tracing::debug!(%peer, ?ending, "connection closed");
    drop(slot);
}

/// TLS handshake and request head. `Err(Some)`: answer with a refusal; `Err(None)`: just drop.
async fn accept(
    shared: &Shared,
    tcp: TcpStream,
    max_header_bytes: usize,
) -> Result<(Transport, Head), Option<(Transport, Refusal)>> {
    let mut client = match &shared.tls {
        Some(acceptor) => match acceptor.accept(tcp).await {
            Ok(tls) => Transport::ServerTls(Box::new(tls)),
            Err(err) => {
                tracing::debug!(error = %err, "TLS handshake failed");
                return Err(None);
            }
        },
        None => Transport::Plain(tcp),
    };
    match handshake::read_head(&mut client, max_header_bytes).await {
        Ok(head) => Ok((client, head)),
        Err(HeadError::TooLarge(_)) => Err(Some((client, Refusal::HeadersTooLarge))),
        Err(HeadError::Closed | HeadError::Io(_)) => Err(None),
    }
}

/// A request that passed every check.
struct Admitted {
    request: UpgradeRequest,
    slot: ConnectionSlot,
    client_ip: std::net::IpAddr,
    client_tls: bool,
    path_suffix: String,
    claim_headers: Vec<(String, String)>,
}

/// The checks in order: cheapest first, and the connection slot before the costly token check.
fn admit(
    shared: &Arc<Shared>,
    policy: &Policy,
    head: &Head,
    peer: SocketAddr,
    client_tls: bool,
) -> Result<Admitted, Refusal> {
    let config = &policy.config;
    let request = UpgradeRequest::parse(&head.head)?;
    let path_suffix = policy
        .path_suffix(&request.path)
        .ok_or(Refusal::NotFound)?
        .to_owned();
    if shared.drain.is_draining() {
        return Err(Refusal::Draining);
    }
    let client_ip = admission::client_ip(peer.ip(), &request, &config.auth.trusted_proxies);
    admission::check_ip(client_ip, &config.auth)?;
    if let Some(rate) = config.limits.connections_per_ip
        && !shared.per_ip.try_admit(client_ip, rate, Instant::now())
    {
        return Err(Refusal::RateLimited);
    }
    let slot = shared
        .drain
        .try_open(config.limits.max_connections)
        .ok_or(Refusal::TooManyConnections)?;
    admission::check_origin(&request, &config.auth)?;
    let claim_headers = match &policy.jwt {
        None => Vec::new(),
        Some(verifier) => match verifier.verify_request(&request) {
            Ok(claims) => verifier.claim_headers(&claims),
            Err(TokenError::Missing) => return Err(Refusal::TokenMissing),
            Err(err @ TokenError::Invalid(_)) => {
                tracing::debug!(%peer, error = %err, "token refused");
                return Err(Refusal::TokenInvalid);
            }
        },
    };
    Ok(Admitted {
        request,
        slot,
        client_ip,
        client_tls,
        path_suffix,
        claim_headers,
    })
}

/// Answers a refusal (best effort) and counts it.
async fn refuse<S: AsyncWrite + Unpin>(
    shared: &Shared,
    client: &mut S,
    refusal: Refusal,
    peer: SocketAddr,
) {
    shared.count_refusal(refusal);
    tracing::debug!(%peer, reason = refusal.reason(), "handshake refused");
    let answer = async {
        client.write_all(refusal.response().as_bytes()).await?;
        client.shutdown().await
    };
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, answer).await;
}
