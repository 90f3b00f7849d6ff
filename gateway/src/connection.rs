//! The life of one client connection: accept -> admit -> upgrade -> relay -> close.
//! Behind a load balancer that speaks the PROXY protocol, `peer` is the client it names.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::admission::{self, ClientChain};
use crate::deflate::Negotiated;
use crate::drain::ConnectionSlot;
use crate::handshake::{self, Head, HeadError, UpgradeRequest};
use crate::jwt::{self, TokenError};
use crate::metrics::HandshakeOutcome;
use crate::policy::Policy;
use crate::refusal::Refusal;
use crate::relay::{Relay, RelaySettings};
use crate::server::Shared;
use crate::transport::Transport;
use crate::upstream::ForwardPlan;
use crate::{proxy_protocol, socket_options};

/// Budget for writing a refusal to a client that may not be reading.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves one connection, accepted at `accepted`, to its end.
pub async fn serve(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, accepted: Instant) {
    // Accept, admit, upgrade. Boxed, so that none of the handshake's state stays in the task
    // of the connection for its whole life.
    let Some(upgraded) = Box::pin(upgrade(&shared, tcp, peer, accepted)).await else {
        return;
    };

    // Relay until either side closes, a limit is hit, or this connection's drain turn comes.
    let Upgraded {
        peer,
        client,
        upstream,
        client_early,
        upstream_early,
        settings,
        slot,
    } = upgraded;
    let ending = Relay::new(
        client,
        upstream,
        client_early,
        upstream_early,
        settings,
        slot.drain_turn(),
        shared.metrics.clone(),
    )
    .await;

    // Close: the slot goes with the connection. (The relay counted how it was closed.)
    shared.metrics.connection_lasted(accepted.elapsed());
    tracing::debug!(%peer, ?ending, "connection closed");
    drop(slot);
}

/// Everything the relay needs from a completed handshake.
struct Upgraded {
    /// The client's address (named by the PROXY header, when there is one).
    peer: SocketAddr,
    client: Transport,
    upstream: Transport,
    /// Bytes each side sent right after its handshake.
    client_early: Vec<u8>,
    upstream_early: Vec<u8>,
    settings: RelaySettings,
    slot: ConnectionSlot,
}

/// The handshake: `None` when the client was refused (and answered) or went away.
async fn upgrade(
    shared: &Arc<Shared>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    accepted: Instant,
) -> Option<Upgraded> {
    // One policy for the whole connection, even if a reload swaps it meanwhile.
    let policy = shared.policy.load_full();
    // Accepted sockets inherit TCP_NODELAY from the listener.
    if let Err(err) = socket_options::apply(&tcp, &policy.config.tcp, true) {
        tracing::debug!(%peer, error = %err, "setting the client socket's tcp options failed");
    }

    // The load balancer's PROXY header, if it must send one, names the client: from here on
    // that is the peer every check, limit and log uses.
    let proxy_protocol = policy.config.listen.proxy_protocol.as_ref();
    let peer = match proxy_protocol::client_address(&mut tcp, peer, proxy_protocol).await {
        Ok(client) => client,
        Err(Some(refusal)) => {
            refuse_unread(shared, tcp, refusal, peer).await;
            return None;
        }
        Err(None) => return None,
    };

    // Counted until the upgrade ends. Trusted proxies are exempt: every client behind one
    // shares its address.
    let _pending = if admission::is_trusted_proxy(peer.ip(), &policy.config.auth.trusted_proxies) {
        None
    } else {
        match shared.pending_handshakes.try_begin(peer.ip()) {
            Some(pending) => Some(pending),
            None => {
                refuse_unread(shared, tcp, Refusal::TooManyPendingHandshakes, peer).await;
                return None;
            }
        }
    };

    // Accept: TLS (if configured) and the request head, within the slowloris budget.
    let limits = &policy.config.limits;
    let (mut client, head) = match accept(
        shared,
        tcp,
        limits.handshake_timeout,
        limits.max_header_bytes,
    )
    .await
    {
        Accept::Head(client, head) => (client, head),
        Accept::Refuse(mut client, refusal) => {
            refuse(shared, &mut client, refusal, peer).await;
            return None;
        }
        Accept::Gone => return None,
    };

    // Admit: every policy check before any upstream work.
    let client_tls = matches!(client, Transport::ServerTls(_));
    let admitted = match admit(shared, &policy, &head, peer).await {
        Ok(admitted) => admitted,
        Err(refusal) => {
            refuse(shared, &mut client, refusal, peer).await;
            return None;
        }
    };

    // Upgrade: the upstream first, then its answer relayed to the client.
    let plan = ForwardPlan {
        client: &admitted.client,
        client_tls,
        path_suffix: &admitted.path_suffix,
        compression: policy.config.compression,
        allowed_subprotocols: &policy.config.validation.allowed_subprotocols,
        token_query_parameter: policy
            .jwt
            .as_ref()
            .and_then(|verifier| verifier.token_query_parameter()),
        set_headers: admitted.claim_headers,
    };
    let connecting = Instant::now();
    let opened = match policy.upstream.open(&admitted.request, &plan).await {
        Ok(opened) => {
            shared.metrics.upstream_connect_took(connecting.elapsed());
            opened
        }
        Err(failure) => {
            shared.metrics.upstream_error(failure.kind);
            tracing::warn!(%peer, error = %failure, "upstream handshake failed");
            refuse(shared, &mut client, failure.refusal, peer).await;
            return None;
        }
    };
    let mut answer = opened.answer;
    let deflate = Negotiated::from_answer(answer.extensions.as_deref());
    if answer.protocol.is_none() {
        answer.protocol = jwt::offered_token_protocol(&admitted.request).map(str::to_owned);
    }
    let answered = client.write_all(answer.render().as_bytes()).await;
    if answered.is_err() || client.flush().await.is_err() {
        return None;
    }
    shared.metrics.handshake(HandshakeOutcome::Success);
    shared.metrics.handshake_took(accepted.elapsed());
    Some(Upgraded {
        peer,
        client,
        upstream: opened.stream,
        client_early: head.rest,
        upstream_early: opened.early,
        settings: RelaySettings {
            max_message_bytes: limits.max_message_bytes,
            message_rate: limits.messages_per_connection,
            heartbeat: policy.config.heartbeat,
            deflate,
            validate_utf8: policy.config.validation.utf8,
        },
        slot: admitted.slot,
    })
}

/// How the accept phase ended.
enum Accept {
    /// A complete request head.
    Head(Transport, Head),
    /// A refusal to answer.
    Refuse(Transport, Refusal),
    /// Nothing to answer: the peer left, or its TLS handshake failed.
    Gone,
}

/// TLS handshake and request head, both within `budget`.
async fn accept(
    shared: &Shared,
    tcp: TcpStream,
    budget: Duration,
    max_header_bytes: usize,
) -> Accept {
    let deadline = tokio::time::Instant::now() + budget;
    let mut client = match &shared.tls {
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => Transport::ServerTls(Box::new(tls)),
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "TLS handshake failed");
                return Accept::Gone;
            }
            Err(_) => {
                // No TLS session to answer on: counted, then dropped.
                shared.count_refusal(Refusal::HandshakeTimeout);
                return Accept::Gone;
            }
        },
        None => Transport::Plain(tcp),
    };
    match tokio::time::timeout_at(
        deadline,
        handshake::read_head(&mut client, max_header_bytes),
    )
    .await
    {
        Ok(Ok(head)) => Accept::Head(client, head),
        Ok(Err(HeadError::TooLarge(_))) => Accept::Refuse(client, Refusal::HeadersTooLarge),
        Ok(Err(HeadError::Closed | HeadError::Io(_))) => Accept::Gone,
        Err(_) => Accept::Refuse(client, Refusal::HandshakeTimeout),
    }
}

/// A request that passed every check.
struct Admitted {
    request: UpgradeRequest,
    slot: ConnectionSlot,
    client: ClientChain,
    path_suffix: String,
    claim_headers: Vec<(String, String)>,
}

/// The checks in order: cheapest first, and the connection slot before the costly token check.
async fn admit(
    shared: &Arc<Shared>,
    policy: &Policy,
    head: &Head,
    peer: SocketAddr,
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
    let client = ClientChain::of(peer.ip(), &request, &config.auth.trusted_proxies);
    let client_ip = client.client();
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
    admission::check_subprotocols(&request, &config.validation)?;
    let claim_headers = match &policy.jwt {
        None => Vec::new(),
        Some(verifier) => {
            verifier.await_token_key(&request).await;
            match verifier.verify_request(&request) {
                Ok(claim_headers) => claim_headers,
                Err(TokenError::Missing) => return Err(Refusal::TokenMissing),
                Err(err @ (TokenError::Invalid(_) | TokenError::UnknownKey)) => {
                    tracing::debug!(%peer, error = %err, "token refused");
                    return Err(Refusal::TokenInvalid);
                }
            }
        }
    };
    Ok(Admitted {
        request,
        slot,
        client,
        path_suffix,
        claim_headers,
    })
}

/// Refuses a connection before its TLS handshake: plain HTTP gets an answer, while a TLS
/// client could not read one and is only counted and dropped.
async fn refuse_unread(shared: &Shared, mut tcp: TcpStream, refusal: Refusal, peer: SocketAddr) {
    if shared.tls.is_some() {
        shared.count_refusal(refusal);
        tracing::debug!(%peer, reason = refusal.reason(), "handshake refused");
    } else {
        refuse(shared, &mut tcp, refusal, peer).await;
    }
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
