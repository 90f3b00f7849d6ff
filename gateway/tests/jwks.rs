//! Keys from an identity provider through a real gateway: a provider of the test's own on
//! 127.0.0.1 that serves a JWK set (and a discovery document), counts requests, rotates keys
//! and fails on demand; real WebSocket clients present tokens signed by its keys.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::watch;

const JWKS_PATH: &str = "/protocol/openid-connect/certs";
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// A P-256 signing key published under `kid`.
struct SigningKey {
    kid: String,
    key: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    fn new(kid: &str) -> Self {
        let pem = KeyPair::generate().unwrap().serialize_pem();
        let key = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
        let mut jwk =
            serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap()).unwrap();
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        Self {
            kid: kid.to_owned(),
            key,
            jwk,
        }
    }

    /// A valid token for `issuer`, its header naming `kid`.
    fn token_as(&self, kid: Option<&str>, issuer: &str) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(str::to_owned);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({"sub": "alice", "iss": issuer, "aud": "chat", "exp": now + 300});
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }

    fn token(&self) -> String {
        self.token_as(Some(&self.kid), ISSUER)
    }
}

const ISSUER: &str = "https://id.test/realms/chat";

/// How the provider answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Keys,
    ServerError,
    /// Closes the connection without an answer.
    Hang,
}

#[derive(Default)]
struct ProviderState {
    keys: Vec<Value>,
    answer: Option<Answer>,
    /// Paths requested, in order.
    requests: Vec<String>,
    /// Connections accepted, whether their request was read yet or not.
    connections: usize,
}

/// A JWKS (and OIDC discovery) server on 127.0.0.1.
struct Provider {
    address: SocketAddr,
    tls: bool,
    state: Arc<Mutex<ProviderState>>,
    /// While false, requests are held unanswered: a provider the test decides when to answer.
    open: watch::Sender<bool>,
}

impl Provider {
    async fn start(keys: &[&SigningKey]) -> Self {
        Self::start_with(keys, None).await
    }

    /// With `tls`, the provider speaks HTTPS with that server config.
    async fn start_with(keys: &[&SigningKey], tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ProviderState {
            keys: keys.iter().map(|key| key.jwk.clone()).collect(),
            answer: Some(Answer::Keys),
            requests: Vec::new(),
            connections: 0,
        }));
        let provider = Self {
            address,
            tls: tls.is_some(),
            state: state.clone(),
            open: watch::Sender::new(true),
        };
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let open = provider.open.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                state.lock().unwrap().connections += 1;
                let state = state.clone();
                let acceptor = acceptor.clone();
                let mut open = open.subscribe();
                tokio::spawn(async move {
                    let _ = open.wait_for(|open| *open).await;
                    match acceptor {
                        None => answer(tcp, &state, address).await,
                        Some(acceptor) => {
                            // A client that does not trust the certificate gives up here.
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                answer(tls, &state, address).await;
                            }
                        }
                    }
                });
            }
        });
        provider
    }

    fn base(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://localhost:{}", self.address.port())
    }

    fn jwks_url(&self) -> String {
        format!("{}{JWKS_PATH}", self.base())
    }

    fn publish(&self, keys: &[&SigningKey]) {
        self.state.lock().unwrap().keys = keys.iter().map(|key| key.jwk.clone()).collect();
    }

    /// Holds requests unanswered until [`Provider::open`].
    fn hold(&self) {
        self.open.send_replace(false);
    }

    fn open(&self) {
        self.open.send_replace(true);
    }

    /// Connections accepted so far, answered or held.
    fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    fn answer_with(&self, answer: Answer) {
        self.state.lock().unwrap().answer = Some(answer);
    }

    /// Requests for `path` so far.
    fn requests_for(&self, path: &str) -> usize {
        let state = self.state.lock().unwrap();
        state
            .requests
            .iter()
            .filter(|requested| *requested == path)
            .count()
    }
}

/// Reads one request head and answers it the way the provider is set to.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    state: &Mutex<ProviderState>,
    address: SocketAddr,
) {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => head.extend_from_slice(&buffer[..read]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
    let (answer, body) = {
        let mut state = state.lock().unwrap();
        state.requests.push(path.clone());
        let body = match path.as_str() {
            JWKS_PATH => json!({ "keys": state.keys }),
            DISCOVERY_PATH => json!({
                "issuer": format!("http://127.0.0.1:{}", address.port()),
                "jwks_uri": format!("http://127.0.0.1:{}{JWKS_PATH}", address.port()),
            }),
            _ => Value::Null,
        };
        (state.answer.unwrap_or(Answer::Keys), body)
    };
    let response = match (answer, body) {
        (Answer::Hang, _) => return,
        (Answer::ServerError, _) => {
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_owned()
        }
        (Answer::Keys, Value::Null) => {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
        }
        (Answer::Keys, body) => {
            let body = body.to_string();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// `auth.jwt` with keys from `jwks` (the YAML flow mapping's inside).
fn jwks_config(issuer: &str, jwks: &str) -> String {
    format!(
        "auth:\n  jwt:\n    issuer: {issuer}\n    audiences: [chat]\n    algorithms: [ES256]\n    jwks: {{{jwks}}}\n    leeway: 0s\n"
    )
}

async fn status_with(gateway: &Gateway, token: &str) -> u16 {
    match connect(
        &gateway.url("/"),
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await
    {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP answer, got {other}"),
    }
}

async fn accepted(gateway: &Gateway, token: &str) -> bool {
    status_with(gateway, token).await == 101
}

#[tokio::test]
async fn tokens_are_checked_with_the_key_their_kid_names() {
    let upstream = EchoUpstream::start().await;
    let first = SigningKey::new("first");
    let second = SigningKey::new("second");
    let provider = Provider::start(&[&first, &second]).await;
    let gateway = Gateway::start(
        &upstream.url("/"),
        &jwks_config(ISSUER, &format!("url: {}", provider.jwks_url())),
    )
    .await;

    let (mut client, _) = connect(
        &gateway.url("/"),
        &[("Authorization", &format!("Bearer {}", first.token()))],
    )
    .await
    .unwrap();
    assert_eq!(round_trip(&mut client, "hi").await, "hi");
    assert!(accepted(&gateway, &second.token()).await);

    // Signed by one key under the other's kid, by a key the provider never published, and
    // without a kid while the set holds two keys: all refused.
    let stranger = SigningKey::new("stranger");
    for token in [
        first.token_as(Some("second"), ISSUER),
        stranger.token(),
        stranger.token_as(Some("first"), ISSUER),
        first.token_as(None, ISSUER),
    ] {
        assert_eq!(status_with(&gateway, &token).await, 401);
    }
    assert_eq!(gateway.metric("wsfleet_gateway_jwks_keys").await, 2.0);
    assert_eq!(
        gateway
            .metric("wsfleet_gateway_refusals_total{reason=\"token_invalid\"}")
            .await,
        4.0
    );
}

#[tokio::test]
async fn a_key_added_by_the_provider_is_accepted_without_a_restart() {
    let upstream = EchoUpstream::start().await;
    let old = SigningKey::new("2026-01");
    let provider = Provider::start(&[&old]).await;
    let gateway = Gateway::start(
        &upstream.url("/"),
        &jwks_config(
            ISSUER,
            &format!("url: {}, minRefreshInterval: 1ms", provider.jwks_url()),
        ),
    )
    .await;
    assert!(accepted(&gateway, &old.token()).await);
    assert_eq!(provider.requests_for(JWKS_PATH), 1);

    let new = SigningKey::new("2026-02");
    provider.publish(&[&old, &new]);
    assert!(accepted(&gateway, &new.token()).await, "the new kid");
    assert_eq!(
        provider.requests_for(JWKS_PATH),
        2,
        "one fetch for the new kid"
    );
    assert!(accepted(&gateway, &old.token()).await);
    assert!(accepted(&gateway, &new.token()).await);
    assert_eq!(
        provider.requests_for(JWKS_PATH),
        2,
        "known kids fetch nothing"
    );
}

#[tokio::test]
async fn the_last_good_keys_stay_while_the_provider_fails() {
    let upstream = EchoUpstream::start().await;
    let key = SigningKey::new("k1");
    let provider = Provider::start(&[&key]).await;
    let gateway = Gateway::start(
        &upstream.url("/"),
        &jwks_config(
            ISSUER,
            &format!(
                "url: {}, refreshInterval: 200ms, minRefreshInterval: 100ms",
                provider.jwks_url()
            ),
        ),
    )
    .await;
    let errors = "wsfleet_gateway_jwks_fetches_total{outcome=\"error\"}";
    let age = "wsfleet_gateway_jwks_key_age_seconds";
    assert_eq!(gateway.metric(errors).await, 0.0);

    for (failure, failed_before) in [(Answer::ServerError, 0.0), (Answer::Hang, 2.0)] {
        provider.answer_with(failure);
        gateway.wait_metric(errors, failed_before + 2.0).await;
        assert!(accepted(&gateway, &key.token()).await, "{failure:?}");
        assert!(gateway.is_ready().await);
    }
    let age_seen = gateway.metric(age).await;
    eventually("the key age to grow", || async {
        gateway.metric(age).await > age_seen + 0.3
    })
    .await;
    assert_eq!(gateway.metric("wsfleet_gateway_jwks_keys").await, 1.0);

    // Back again: fresh keys, the age falls.
    let successes = gateway
        .metric("wsfleet_gateway_jwks_fetches_total{outcome=\"success\"}")
        .await;
    provider.answer_with(Answer::Keys);
    gateway
        .wait_metric(
            "wsfleet_gateway_jwks_fetches_total{outcome=\"success\"}",
            successes + 1.0,
        )
        .await;
    assert!(gateway.metric(age).await < age_seen + 0.3);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_at_most_once_per_min_interval() {
    let upstream = EchoUpstream::start().await;
    let key = SigningKey::new("k1");
    let provider = Provider::start(&[&key]).await;
    let min_interval = Duration::from_millis(500);
    let gateway = Gateway::start(
        &upstream.url("/"),
        &jwks_config(
            ISSUER,
            &format!(
                "url: {}, refreshInterval: 1h, minRefreshInterval: 500ms",
                provider.jwks_url()
            ),
        ),
    )
    .await;
    let before = provider.requests_for(JWKS_PATH);
    let started = Instant::now();
    // Batches below the per-address limit of handshakes in progress.
    for batch in 0..10 {
        let handshakes = (0..20).map(|index| {
            let token = key.token_as(Some(&format!("made-up-{batch}-{index}")), ISSUER);
            let gateway = &gateway;
            async move { status_with(gateway, &token).await }
        });
        let statuses = futures::future::join_all(handshakes).await;
        assert!(statuses.iter().all(|status| *status == 401), "{statuses:?}");
    }
    let elapsed = started.elapsed();
    let fetches = provider.requests_for(JWKS_PATH) - before;
    // Starts are at least minRefreshInterval apart.
    let bound = (elapsed.as_secs_f64() / min_interval.as_secs_f64()).floor() as usize + 1;
    println!("200 unknown kids in {elapsed:?}: {fetches} fetches (bound {bound})");
    assert!(fetches <= bound, "{fetches} fetches in {elapsed:?}");
    assert_eq!(
        gateway
            .metric("wsfleet_gateway_refusals_total{reason=\"token_invalid\"}")
            .await,
        200.0
    );
    assert!(accepted(&gateway, &key.token()).await);
}

/// A test certificate authority and a server certificate for 127.0.0.1 and localhost.
fn provider_tls() -> (String, Arc<rustls::ServerConfig>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from_pem_slice(server.pem().as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(server_key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    (ca_pem, Arc::new(config))
}

#[tokio::test]
async fn an_https_provider_is_trusted_through_its_ca_file_only() {
    let upstream = EchoUpstream::start().await;
    let key = SigningKey::new("k1");
    let (ca_pem, tls) = provider_tls();
    let provider = Provider::start_with(&[&key], Some(tls)).await;

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("provider-ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let trusting = Gateway::start_in(
        dir,
        &upstream.url("/"),
        &jwks_config(
            ISSUER,
            &format!(
                "url: {}, caFile: {}",
                provider.jwks_url(),
                ca_file.display()
            ),
        ),
    )
    .await;
    assert!(accepted(&trusting, &key.token()).await);

    // The system roots do not know the test CA: no keys, not ready, every token refused.
    let untrusting = Gateway::launch(
        tempfile::tempdir().unwrap(),
        &upstream.url("/"),
        &jwks_config(ISSUER, &format!("url: {}", provider.jwks_url())),
        |_| {},
    );
    eventually("the gateway to answer on its metrics port", || async {
        http_get(untrusting.metrics_address, "/metrics")
            .await
            .is_some()
    })
    .await;
    untrusting
        .wait_metric("wsfleet_gateway_jwks_fetches_total{outcome=\"error\"}", 1.0)
        .await;
    assert!(!untrusting.is_ready().await);
    assert_eq!(status_with(&untrusting, &key.token()).await, 401);
    assert_eq!(
        untrusting
            .metric("wsfleet_gateway_jwks_fetches_total{outcome=\"success\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn keys_are_found_through_the_issuers_discovery_document() {
    let upstream = EchoUpstream::start().await;
    let key = SigningKey::new("k1");
    let provider = Provider::start(&[&key]).await;
    let issuer = format!("http://127.0.0.1:{}", provider.address.port());
    let gateway =
        Gateway::start(&upstream.url("/"), &jwks_config(&issuer, "discovery: true")).await;
    assert!(accepted(&gateway, &key.token_as(Some("k1"), &issuer)).await);
    assert_eq!(provider.requests_for(DISCOVERY_PATH), 1);
    assert_eq!(provider.requests_for(JWKS_PATH), 1);
}

#[tokio::test]
async fn a_reload_keeps_the_keys_of_an_unchanged_source() {
    let upstream = EchoUpstream::start().await;
    let key = SigningKey::new("k1");
    let provider = Provider::start(&[&key]).await;
    let jwks = format!("url: {}", provider.jwks_url());
    let gateway = Gateway::start(&upstream.url("/"), &jwks_config(ISSUER, &jwks)).await;
    assert_eq!(provider.requests_for(JWKS_PATH), 1);

    // Another audience list: the JWKS settings are the same.
    let config = jwks_config(ISSUER, &jwks).replace("[chat]", "[chat, billing]");
    gateway.rewrite_config(&upstream.url("/"), &config);
    gateway.wait_metric(RELOADED, 1.0).await;
    assert!(gateway.is_ready().await);
    assert!(accepted(&gateway, &key.token()).await);
    assert_eq!(
        provider.requests_for(JWKS_PATH),
        1,
        "no fetch for the reload"
    );
}

const RELOADED: &str = "wsfleet_gateway_reloads_total{kind=\"config\",outcome=\"success\"}";
const RELOAD_REFUSED: &str = "wsfleet_gateway_reloads_total{kind=\"config\",outcome=\"failure\"}";

/// Polls `/readyz` until dropped; [`ReadinessWatch::dropped`] tells whether any poll failed.
struct ReadinessWatch {
    polls: tokio::task::JoinHandle<()>,
    unready: Arc<Mutex<usize>>,
}

impl ReadinessWatch {
    fn start(gateway: &Gateway) -> Self {
        let address = gateway.metrics_address;
        let unready = Arc::new(Mutex::new(0));
        let polls = tokio::spawn({
            let unready = unready.clone();
            async move {
                let mut every = tokio::time::interval(Duration::from_millis(5));
                loop {
                    every.tick().await;
                    if !matches!(http_get(address, "/readyz").await, Some((200, _))) {
                        *unready.lock().unwrap() += 1;
                    }
                }
            }
        });
        Self { polls, unready }
    }

    /// Probes that found the gateway unready.
    fn unready(&self) -> usize {
        *self.unready.lock().unwrap()
    }
}

impl Drop for ReadinessWatch {
    fn drop(&mut self) {
        self.polls.abort();
    }
}

#[tokio::test]
async fn a_new_source_is_used_once_it_answers_and_the_gateway_stays_ready_meanwhile() {
    let upstream = EchoUpstream::start().await;
    let old = SigningKey::new("old");
    let old_provider = Provider::start(&[&old]).await;
    let gateway = Gateway::start(
        &upstream.url("/"),
        &jwks_config(ISSUER, &format!("url: {}", old_provider.jwks_url())),
    )
    .await;
    let readiness = ReadinessWatch::start(&gateway);

    let new = SigningKey::new("new");
    let second = SigningKey::new("second");
    let new_provider = Provider::start(&[&new, &second]).await;
    new_provider.hold();
    gateway.rewrite_config(
        &upstream.url("/"),
        &jwks_config(ISSUER, &format!("url: {}", new_provider.jwks_url())),
    );
    eventually("the new source to be asked", || async {
        new_provider.connections() == 1
    })
    .await;
    // Not answered yet: the old policy serves, with the old keys and their gauges.
    assert!(accepted(&gateway, &old.token()).await);
    assert_eq!(status_with(&gateway, &new.token()).await, 401);
    assert_eq!(gateway.metric("wsfleet_gateway_jwks_keys").await, 1.0);
    assert_eq!(gateway.metric(RELOADED).await, 0.0);

    new_provider.open();
    gateway.wait_metric(RELOADED, 1.0).await;
    assert!(accepted(&gateway, &new.token()).await);
    assert_eq!(status_with(&gateway, &old.token()).await, 401);
    assert_eq!(gateway.metric("wsfleet_gateway_jwks_keys").await, 2.0);
    assert_eq!(gateway.metric(RELOAD_REFUSED).await, 0.0);
    assert_eq!(readiness.unready(), 0, "the gateway turned unready");
}

#[tokio::test]
async fn a_new_source_that_does_not_answer_leaves_the_old_keys_in_use() {
    let upstream = EchoUpstream::start().await;
    let old = SigningKey::new("old");
    let old_provider = Provider::start(&[&old]).await;
    let gateway = Gateway::start(
        &upstream.url("/"),
        &jwks_config(ISSUER, &format!("url: {}", old_provider.jwks_url())),
    )
    .await;
    let readiness = ReadinessWatch::start(&gateway);

    // A port nothing listens on: every fetch is refused at once.
    let unreachable = format!("http://127.0.0.1:{}{JWKS_PATH}", free_port());
    gateway.rewrite_config(
        &upstream.url("/"),
        &jwks_config(ISSUER, &format!("url: {unreachable}")),
    );
    gateway.wait_metric(RELOAD_REFUSED, 1.0).await;
    assert!(gateway.is_ready().await);
    assert!(accepted(&gateway, &old.token()).await);
    assert_eq!(gateway.metric(RELOADED).await, 0.0);
    assert_eq!(gateway.metric("wsfleet_gateway_jwks_keys").await, 1.0);
    // Retried (after 1 s), and still reported once.
    gateway
        .wait_metric("wsfleet_gateway_jwks_fetches_total{outcome=\"error\"}", 2.0)
        .await;
    assert_eq!(gateway.metric(RELOAD_REFUSED).await, 1.0);

    // The next change supersedes the waiting one.
    let new = SigningKey::new("new");
    let new_provider = Provider::start(&[&new]).await;
    gateway.rewrite_config(
        &upstream.url("/"),
        &jwks_config(ISSUER, &format!("url: {}", new_provider.jwks_url())),
    );
    gateway.wait_metric(RELOADED, 1.0).await;
    assert!(accepted(&gateway, &new.token()).await);
    assert_eq!(status_with(&gateway, &old.token()).await, 401);
    assert_eq!(gateway.metric(RELOAD_REFUSED).await, 1.0);
    assert_eq!(readiness.unready(), 0, "the gateway turned unready");
}
