//! The life of one client connection: accept -> admit -> upgrade -> relay -> close.
//! Behind a load balancer that speaks the PROXY protocol, `peer` is the client it names.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::policy::admission;
use crate::policy::jwt::{self, TokenError, Verified};
use crate::policy::live_counts::LiveCount;
use crate::policy::running::Policy;
use crate::relay::session::{Relay, RelaySettings};
use crate::state::Shared;
use crate::state::access_log::{ConnectionRecord, RefusalRecord};
use crate::state::drain::ConnectionSlot;
use crate::telemetry::metrics::{HandshakeOutcome, HandshakeStep, HandshakeSteps};
use crate::upstream::target::ForwardPlan;
use crate::wire::deflate::Negotiated;
use crate::wire::forwarded::{ClientChain, is_trusted_proxy};
use crate::wire::handshake::{self, Head, HeadError, UpgradeRequest};
use crate::wire::proxy_protocol;
use crate::wire::refusal::Refusal;
use crate::wire::socket_options;
use crate::wire::tls_stream::ServerTlsStream;
use crate::wire::transport::Transport;

/// Budget for writing a refusal to a client that may not be reading.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves one connection, accepted at `accepted`, to its end.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    accepted: Instant,
) {
    // Accept, admit, upgrade. Boxed, so that none of the handshake's state stays in the task
    // of the connection for its whole life.
    let Some(upgraded) = Box::pin(upgrade(&shared, tcp, peer, accepted)).await else {
        return;
    };

    // Relay until either side closes, a limit is hit, or this connection's drain turn comes.
    let Upgraded {
        peer,
        caller,
        client,
        upstream,
        client_early,
        upstream_early,
        settings,
        slot,
        subject_slot,
    } = upgraded;
    let outcome = Relay::new(
        client,
        upstream,
        client_early,
        upstream_early,
        settings,
        slot.drain_turn(),
        shared.metrics.clone(),
    )
    .await;

    // Close: the slots go with the connection, the subject's first, so that a connection the
    // gauge no longer shows no longer counts against its user. (The relay counted how it
    // was closed.)
    let lifetime = accepted.elapsed();
    shared.metrics.connection_lasted(lifetime);
    tracing::debug!(%peer, ending = ?outcome.ending, "connection closed");
    drop(subject_slot);
    drop(slot);
    shared.access_log.connection(
        &shared.policy.load().config.access_log,
        &ConnectionRecord {
            client: caller.client,
            subject: caller.subject.as_deref(),
            path: &caller.path,
            duration: lifetime,
            outcome: &outcome,
        },
    );
}

/// Everything the relay needs from a completed handshake.
struct Upgraded {
    /// The client's address (named by the PROXY header, when there is one).
    peer: SocketAddr,
    caller: Caller,
    client: Transport,
    upstream: Transport,
    /// Bytes each side sent right after its handshake.
    client_early: Vec<u8>,
    upstream_early: Vec<u8>,
    settings: RelaySettings,
    slot: ConnectionSlot,
    /// Held while `limits.connectionsPerSubject` counts this connection.
    subject_slot: Option<LiveCount<Box<str>>>,
}

/// Who connected where, for the access log line at the end.
struct Caller {
    /// The client the admission used (see [`ClientChain`]).
    client: IpAddr,
    path: String,
    subject: Option<String>,
}

/// A handshake as far as it got, to answer, count and log a refusal by.
struct Attempt<'a> {
    shared: &'a Shared,
    policy: &'a Policy,
    peer: SocketAddr,
    client: IpAddr,
    path: Option<&'a str>,
}

/// The handshake: `None` when the client was refused (and answered) or went away.
async fn upgrade(
    shared: &Arc<Shared>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    accepted: Instant,
) -> Option<Upgraded> {
    let mut steps = HandshakeSteps::since(accepted);
    steps.ended(HandshakeStep::Queued);
    // One policy for the whole connection, even if a reload swaps it meanwhile.
    let policy = shared.policy.load_full();
    // Accepted sockets inherit TCP_NODELAY from the listener.
    if let Err(err) = socket_options::apply(&tcp, &policy.config.tcp, true) {
        tracing::debug!(%peer, error = %err, "setting the client socket's tcp options failed");
    }
    let mut attempt = Attempt {
        shared,
        policy: &policy,
        peer,
        client: peer.ip(),
        path: None,
    };

    // The load balancer's PROXY header, if it must send one, names the client: from here on
    // that is the peer every check, limit and log uses.
    let proxy_protocol = policy.config.listen.proxy_protocol.as_ref();
    let peer = match proxy_protocol::client_address(&mut tcp, peer, proxy_protocol).await {
        Ok(client) => client,
        Err(Some(refusal)) => {
            attempt.refuse_unread(tcp, refusal).await;
            return None;
        }
        Err(None) => return None,
    };
    attempt.peer = peer;
    attempt.client = peer.ip();

    // Counted until the upgrade ends. Trusted proxies are exempt: every client behind one
    // shares its address.
    let _pending = if is_trusted_proxy(peer.ip(), &policy.config.auth.trusted_proxies) {
        None
    } else {
        let cap = policy.config.limits.pending_handshakes_per_ip;
        match shared.pending_handshakes.try_begin(peer.ip(), cap) {
            Some(pending) => Some(pending),
            None => {
                attempt
                    .refuse_unread(tcp, Refusal::TooManyPendingHandshakes)
                    .await;
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
            attempt.refuse(&mut client, refusal).await;
            return None;
        }
        Accept::Unanswerable(refusal) => {
            attempt.refused(refusal);
            return None;
        }
        Accept::Gone => return None,
    };
    steps.ended(HandshakeStep::ClientRequest);

    // Admit: the request and where it comes from, then every policy check before any
    // upstream work.
    let client_tls = matches!(client, Transport::ServerTls(_));
    let request = match UpgradeRequest::parse(&head.head) {
        Ok(request) => request,
        Err(refusal) => {
            attempt.refuse(&mut client, refusal).await;
            return None;
        }
    };
    let chain = ClientChain::of(peer.ip(), &request, &policy.config.auth.trusted_proxies);
    attempt.client = chain.client();
    attempt.path = Some(&request.path);
    let admitted = match admit(shared, &policy, &request, &chain, peer).await {
        Ok(admitted) => admitted,
        Err(refusal) => {
            attempt.refuse(&mut client, refusal).await;
            return None;
        }
    };
    steps.ended(HandshakeStep::Admission);

    // Upgrade: the upstream first, then its answer relayed to the client.
    let plan = ForwardPlan {
        client: &chain,
        client_tls,
        path_suffix: &admitted.path_suffix,
        compression: policy.config.compression,
        allowed_subprotocols: &policy.config.validation.allowed_subprotocols,
        token_query_parameter: policy
            .jwt
            .as_ref()
            .and_then(|verifier| verifier.token_query_parameter()),
        set_headers: admitted.verified.claim_headers,
    };
    let opened = match policy.upstream.open(&request, &plan).await {
        Ok(opened) => {
            steps.ended_at(HandshakeStep::UpstreamConnect, opened.connected);
            steps.ended(HandshakeStep::UpstreamAnswer);
            shared.metrics.upstream_connect_took(steps.upstream());
            opened
        }
        Err(failure) => {
            shared.metrics.upstream_error(failure.kind);
            tracing::warn!(%peer, error = %failure, "upstream handshake failed");
            attempt.refuse(&mut client, failure.refusal).await;
            return None;
        }
    };
    let mut answer = opened.answer;
    let deflate = Negotiated::from_answer(answer.extensions.as_deref());
    if answer.protocol.is_none() {
        answer.protocol = jwt::offered_token_protocol(&request).map(str::to_owned);
    }
    let answered = client.write_all(answer.render().as_bytes()).await;
    if answered.is_err() || client.flush().await.is_err() {
        return None;
    }
    steps.ended(HandshakeStep::ClientAnswer);
    shared.metrics.handshake(HandshakeOutcome::Success);
    shared.metrics.handshake_took(steps.whole());
    shared.metrics.handshake_steps_took(&steps);
    Some(Upgraded {
        peer,
        caller: Caller {
            client: chain.client(),
            path: request.path,
            subject: admitted.verified.subject,
        },
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
        subject_slot: admitted.subject_slot,
    })
}

/// How the accept phase ended.
enum Accept {
    /// A complete request head.
    Head(Transport, Head),
    /// A refusal to answer.
    Refuse(Transport, Refusal),
    /// A refusal with no session to answer on (the TLS handshake ran out of time).
    Unanswerable(Refusal),
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
        Some(config) => {
            match tokio::time::timeout_at(deadline, ServerTlsStream::accept(tcp, config.clone()))
                .await
            {
                Ok(Ok(tls)) => Transport::ServerTls(Box::new(tls)),
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, "TLS handshake failed");
                    return Accept::Gone;
                }
                Err(_) => return Accept::Unanswerable(Refusal::HandshakeTimeout),
            }
        }
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
    slot: ConnectionSlot,
    path_suffix: String,
    verified: Verified,
    subject_slot: Option<LiveCount<Box<str>>>,
}

/// The checks in order: cheapest first, and the connection slot before the costly token check.
async fn admit(
    shared: &Arc<Shared>,
    policy: &Policy,
    request: &UpgradeRequest,
    client: &ClientChain,
    peer: SocketAddr,
) -> Result<Admitted, Refusal> {
    let config = &policy.config;
    let path_suffix = policy
        .path_suffix(&request.path)
        .ok_or(Refusal::NotFound)?
        .to_owned();
    if shared.drain.is_draining() {
        return Err(Refusal::Draining);
    }
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
    admission::check_origin(request, &config.auth)?;
    admission::check_subprotocols(request, &config.validation)?;
    let verified = match &policy.jwt {
        None => Verified::default(),
        Some(verifier) => {
            verifier.await_token_key(request).await;
            match verifier.verify_request(request) {
                Ok(verified) => verified,
                Err(TokenError::Missing) => return Err(Refusal::TokenMissing),
                Err(err @ (TokenError::Invalid(_) | TokenError::UnknownKey)) => {
                    tracing::debug!(%peer, error = %err, "token refused");
                    return Err(Refusal::TokenInvalid);
                }
            }
        }
    };
    let subject_slot = match config.limits.connections_per_subject {
        None => None,
        // A token without the subject claim is refused while the limit is on: admitting it
        // would let any such token past the limit.
        Some(limit) => {
            let subject = verified.subject.as_deref().ok_or_else(|| {
                tracing::debug!(%peer, "token refused: no subject claim");
                Refusal::TokenInvalid
            })?;
            Some(
                shared
                    .per_subject
                    .try_open(subject.into(), limit)
                    .ok_or(Refusal::SubjectLimited)?,
            )
        }
    };
    Ok(Admitted {
        slot,
        path_suffix,
        verified,
        subject_slot,
    })
}

impl Attempt<'_> {
    /// Refuses before the TLS handshake: plain HTTP gets an answer, while a TLS client could
    /// not read one and is only counted and dropped.
    async fn refuse_unread(&self, mut tcp: TcpStream, refusal: Refusal) {
        if self.shared.tls.is_some() {
            self.refused(refusal);
        } else {
            self.refuse(&mut tcp, refusal).await;
        }
    }

    /// Answers a refusal (best effort), counts and logs it.
    async fn refuse<S: AsyncWrite + Unpin>(&self, client: &mut S, refusal: Refusal) {
        self.refused(refusal);
        let answer = async {
            client.write_all(refusal.response().as_bytes()).await?;
            client.shutdown().await
        };
        let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, answer).await;
    }

    /// Counts and logs a refusal: every refused handshake passes here once.
    fn refused(&self, refusal: Refusal) {
        self.shared.count_refusal(refusal);
        tracing::debug!(peer = %self.peer, reason = refusal.reason(), "handshake refused");
        self.shared.access_log.refusal(
            &self.policy.config.access_log,
            &RefusalRecord {
                client: self.client,
                path: self.path,
                refusal,
            },
        );
    }
}
