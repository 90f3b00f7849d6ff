//! Keys from an identity provider: its JWK set, fetched over HTTP or HTTPS, refreshed on a
//! schedule and when a token names a `kid` not yet held, so that key rotation needs no
//! restart.
//!
//! One task per key source fetches; handshakes only read the keys it stored. A token with an
//! unknown `kid` asks for one early fetch, which [`RefreshGate`] allows once per
//! `minRefreshInterval` and which concurrent handshakes share, and waits for it at most
//! [`UNKNOWN_KID_WAIT`]. A failed fetch keeps the keys held.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use tokio::sync::{Notify, watch};

mod key_set;

pub(crate) use key_set::KeySet;

use crate::telemetry::metrics::Metrics;
use crate::wire::tls::CaBundle;
use wsfleet_config::JwksConfig;

/// Longest a handshake waits for the fetch that its unknown `kid` asked for.
pub(crate) const UNKNOWN_KID_WAIT: Duration = Duration::from_secs(2);
/// Budget for one fetch: discovery, connect, TLS, request and the whole body.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A JWK set or discovery document is a few kilobytes; anything this large is not one.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// First retry after a failed fetch, doubled up to `refreshInterval`.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Where keys come from and what they must verify: a change of any part starts over.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KeySource {
    pub config: JwksConfig,
    /// `auth.jwt.issuer`: the discovery base, and what the discovery document must name.
    pub issuer: Option<String>,
    pub ca: Option<CaBundle>,
    /// `auth.jwt.algorithms`: keys for none of them are skipped.
    pub algorithms: Vec<Algorithm>,
}

/// The keys of one source, kept fresh by a background task that ends with this value.
pub(crate) struct JwksKeys {
    source: KeySource,
    state: Arc<KeyState>,
    task: tokio::task::AbortHandle,
}

/// What the fetching task and the handshakes share.
struct KeyState {
    keys: ArcSwap<KeySet>,
    gate: Mutex<RefreshGate>,
    /// Wakes the task for a fetch that [`RefreshGate::demand`] started.
    wanted: Notify,
    /// Sent after every fetch, for those waiting on one: its error, `None` when it succeeded.
    finished: watch::Sender<Option<String>>,
}

impl KeyState {
    fn gate(&self) -> MutexGuard<'_, RefreshGate> {
        self.gate.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for JwksKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksKeys")
            .field("source", &self.source.config)
            .field("keys", &self.state.keys.load().len())
            .finish_non_exhaustive()
    }
}

impl JwksKeys {
    /// Starts fetching from `source` on the current runtime; the first fetch begins at once.
    pub fn start(source: KeySource, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let fetcher = Fetcher::new(&source)?;
        let state = Arc::new(KeyState {
            keys: ArcSwap::from_pointee(KeySet::default()),
            gate: Mutex::new(RefreshGate::new(source.config.min_refresh_interval)),
            wanted: Notify::new(),
            finished: watch::Sender::new(None),
        });
        let task = tokio::spawn(keep_fresh(
            state.clone(),
            fetcher,
            source.config.refresh_interval,
            metrics,
        ))
        .abort_handle();
        Ok(Self {
            source,
            state,
            task,
        })
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// The keys held now.
    pub fn current(&self) -> Arc<KeySet> {
        self.state.keys.load_full()
    }

    /// Whether a fetch has succeeded yet.
    pub fn has_keys(&self) -> bool {
        !self.state.keys.load().is_empty()
    }

    /// Returns `Ok` once keys are held (at once when they are), or the error of the first fetch
    /// that fails while none are; that error names the config field and the URL.
    pub async fn first_keys(&self) -> Result<(), String> {
        // Subscribed before looking, so that a fetch finishing in between is not missed.
        let mut finished = self.state.finished.subscribe();
        loop {
            if self.has_keys() {
                return Ok(());
            }
            // The sender lives in `self.state`: it outlives this borrow, so no error here.
            let _ = finished.changed().await;
            if let Some(error) = &*finished.borrow_and_update()
                && !self.has_keys()
            {
                return Err(error.clone());
            }
        }
    }

    /// Returns at once when `kid` is held; otherwise asks for a fetch (or joins the one under
    /// way) and waits for it at most [`UNKNOWN_KID_WAIT`]. When the gate refuses a fetch,
    /// returns at once: the token is then checked against the keys held, and refused.
    pub async fn wait_for(&self, kid: &str) {
        if self.state.keys.load().holds(kid) {
            return;
        }
        // Subscribed before asking, so that a fetch finishing in between is not missed.
        let mut finished = self.state.finished.subscribe();
        match self.state.gate().demand(Instant::now()) {
            Demand::Refuse => return,
            Demand::Start => self.state.wanted.notify_one(),
            Demand::Join => {}
        }
        let _ = tokio::time::timeout(UNKNOWN_KID_WAIT, finished.changed()).await;
    }
}

impl Drop for JwksKeys {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Fetches on schedule (at once first, retrying failures with backoff) and on demand.
async fn keep_fresh(
    state: Arc<KeyState>,
    mut fetcher: Fetcher,
    refresh_interval: Duration,
    metrics: Arc<Metrics>,
) {
    let mut retry = FIRST_RETRY;
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            // A demanded fetch first: a scheduled one due at the same moment is then skipped.
            biased;
            () = state.wanted.notified() => {}
            () = tokio::time::sleep_until(next) => {
                if !state.gate().schedule(Instant::now()) {
                    // A demand started a fetch just now; its wake-up is pending.
                    continue;
                }
            }
        }
        let error = match fetcher.fetch().await {
            Ok(keys) => {
                tracing::debug!(keys = keys.len(), "JWK set fetched");
                metrics.jwks_fetched(keys.len(), SystemTime::now());
                state.keys.store(Arc::new(keys));
                retry = FIRST_RETRY;
                next = tokio::time::Instant::now() + refresh_interval;
                None
            }
            Err(err) => {
                metrics.jwks_fetch_failed();
                let wait = retry.min(refresh_interval);
                tracing::warn!(
                    error = %format!("{err:#}"),
                    retry_in = %wsfleet_config::duration_text::format(wait),
                    "JWK set fetch failed; the keys held stay in use"
                );
                next = tokio::time::Instant::now() + wait;
                retry = (retry * 2).min(refresh_interval);
                Some(format!("{err:#}"))
            }
        };
        state.gate().finished();
        state.finished.send_replace(error);
    }
}

/// What a token with an unknown `kid` may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Demand {
    /// Start a fetch.
    Start,
    /// Wait for the fetch under way.
    Join,
    /// Neither: the last fetch started less than `minRefreshInterval` ago.
    Refuse,
}

/// Rate-limits fetches asked for by unknown `kid`s and makes concurrent ones share a fetch.
#[derive(Debug)]
struct RefreshGate {
    min_interval: Duration,
    last_start: Option<Instant>,
    in_flight: bool,
}

impl RefreshGate {
    fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last_start: None,
            in_flight: false,
        }
    }

    fn demand(&mut self, now: Instant) -> Demand {
        if self.in_flight {
            return Demand::Join;
        }
        if self
            .last_start
            .is_some_and(|last| now.saturating_duration_since(last) < self.min_interval)
        {
            return Demand::Refuse;
        }
        self.start(now);
        Demand::Start
    }

    /// A scheduled fetch starts; false when a demanded one already has.
    fn schedule(&mut self, now: Instant) -> bool {
        if self.in_flight {
            return false;
        }
        self.start(now);
        true
    }

    fn start(&mut self, now: Instant) {
        self.in_flight = true;
        self.last_start = Some(now);
    }

    fn finished(&mut self) {
        self.in_flight = false;
    }
}

/// Where the JWK set is.
enum Location {
    Url(Uri),
    /// The discovery document, whose `jwks_uri` names the JWK set.
    Discovery(Uri),
}

impl Location {
    /// The config field that leads here.
    fn field(&self) -> &'static str {
        match self {
            Self::Url(_) => "auth.jwt.jwks.url",
            Self::Discovery(_) => "auth.jwt.jwks.discovery",
        }
    }

    fn uri(&self) -> &Uri {
        match self {
            Self::Url(uri) | Self::Discovery(uri) => uri,
        }
    }
}

/// Fetches and parses the JWK set of one source.
struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    location: Location,
    issuer: Option<String>,
    algorithms: Vec<Algorithm>,
    /// The `jwks_uri` found by discovery, kept until a fetch from it fails.
    discovered: Option<Uri>,
}

/// The part of an OpenID Connect discovery document the gateway reads.
#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    jwks_uri: String,
}

impl Fetcher {
    fn new(source: &KeySource) -> anyhow::Result<Self> {
        let location = match (&source.config.url, &source.issuer) {
            (Some(url), _) => Location::Url(http_uri(url).context("auth.jwt.jwks.url")?),
            (None, Some(issuer)) => Location::Discovery(
                http_uri(&format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                ))
                .context("auth.jwt.issuer")?,
            ),
            (None, None) => anyhow::bail!("auth.jwt.jwks: needs url, or discovery with an issuer"),
        };
        let tls = crate::wire::tls::client_config(source.ca.as_ref())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(Arc::unwrap_or_clone(tls))
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            location,
            issuer: source.issuer.clone(),
            algorithms: source.algorithms.clone(),
            discovered: None,
        })
    }

    async fn fetch(&mut self) -> anyhow::Result<KeySet> {
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, self.fetch_unbounded())
            .await
            .unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "no answer from {} within {}",
                    self.location.uri(),
                    wsfleet_config::duration_text::format(FETCH_TIMEOUT)
                ))
            });
        // Named after the setting, so that a log line or a waiting reload says what to check.
        fetched.context(self.location.field())
    }

    async fn fetch_unbounded(&mut self) -> anyhow::Result<KeySet> {
        let uri = match (&self.location, &self.discovered) {
            (Location::Url(uri), _) | (Location::Discovery(_), Some(uri)) => uri.clone(),
            (Location::Discovery(document), None) => self.discover(document).await?,
        };
        let keys = async { KeySet::parse(&self.get(&uri).await?, &self.algorithms) }
            .await
            .with_context(|| format!("JWK set {uri}"));
        // A provider that moved its keys is asked again where they are.
        self.discovered = keys.is_ok().then_some(uri);
        keys
    }

    async fn discover(&self, document: &Uri) -> anyhow::Result<Uri> {
        let found: DiscoveryDocument = serde_json::from_slice(&self.get(document).await?)
            .with_context(|| format!("discovery document {document}: no issuer or jwks_uri"))?;
        // OpenID Connect Discovery section 4.3: a document for another issuer is not used.
        if let Some(issuer) = &self.issuer {
            anyhow::ensure!(
                found.issuer == *issuer,
                "discovery document {document}: names issuer {:?}, not auth.jwt.issuer {issuer:?}",
                found.issuer
            );
        }
        http_uri(&found.jwks_uri)
            .with_context(|| format!("discovery document {document}: jwks_uri"))
    }

    async fn get(&self, uri: &Uri) -> anyhow::Result<Bytes> {
        let response = self
            .client
            .get(uri.clone())
            .await
            .with_context(|| format!("GET {uri}"))?;
        anyhow::ensure!(
            response.status() == StatusCode::OK,
            "GET {uri}: status {}",
            response.status()
        );
        let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|err| anyhow::anyhow!("GET {uri}: {err}"))?;
        Ok(body.to_bytes())
    }
}

/// An `http://` or `https://` URI with a host.
fn http_uri(text: &str) -> anyhow::Result<Uri> {
    let uri: Uri = text
        .parse()
        .with_context(|| format!("invalid URL {text:?}"))?;
    anyhow::ensure!(
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some(),
        "must be an http:// or https:// URL with a host, got {text:?}"
    );
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const RSA_PRIVATE: &str = include_str!("../../tests/fixtures/jwt-rsa.key");

    /// The JWK of the test RSA key, with `kid` and `alg` as given.
    fn rsa_jwk(kid: Option<&str>, alg: Option<&str>) -> serde_json::Value {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let mut jwk =
            serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap()).unwrap();
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(alg);
        jwk
    }

    /// A fresh P-256 key: its signing key and its JWK with `kid`.
    fn ec_key(kid: &str) -> (EncodingKey, serde_json::Value) {
        let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let key = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
        let mut jwk =
            serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap()).unwrap();
        jwk["kid"] = json!(kid);
        (key, jwk)
    }

    fn header(alg: Algorithm, kid: Option<&str>) -> Header {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        header
    }

    fn set(keys: &[serde_json::Value], algorithms: &[Algorithm]) -> anyhow::Result<KeySet> {
        KeySet::parse(json!({ "keys": keys }).to_string().as_bytes(), algorithms)
    }

    /// Verifies a token signed by `key` with the key `set` selects for it.
    fn verifies(set: &KeySet, alg: Algorithm, kid: Option<&str>, key: &EncodingKey) -> bool {
        let claims = json!({"exp": u64::MAX / 2});
        let token = jsonwebtoken::encode(&header(alg, kid), &claims, key).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        set.select(&header).is_some_and(|decoding| {
            jsonwebtoken::decode::<serde_json::Value>(
                &token,
                decoding,
                &jsonwebtoken::Validation::new(alg),
            )
            .is_ok()
        })
    }

    #[test]
    fn rsa_and_ec_keys_verify_tokens_by_kid() {
        let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let rsa_set = set(&[rsa_jwk(Some("r1"), Some("RS256"))], &[Algorithm::RS256]).unwrap();
        assert!(verifies(&rsa_set, Algorithm::RS256, Some("r1"), &rsa));
        assert!(!verifies(&rsa_set, Algorithm::RS256, Some("r2"), &rsa));

        let (first, first_jwk) = ec_key("e1");
        let (second, second_jwk) = ec_key("e2");
        let ec_set = set(&[first_jwk, second_jwk], &[Algorithm::ES256]).unwrap();
        assert_eq!(ec_set.len(), 2);
        assert!(verifies(&ec_set, Algorithm::ES256, Some("e1"), &first));
        assert!(verifies(&ec_set, Algorithm::ES256, Some("e2"), &second));
        assert!(
            !verifies(&ec_set, Algorithm::ES256, Some("e1"), &second),
            "a key under another key's kid"
        );
    }

    #[test]
    fn a_token_without_kid_uses_only_a_one_key_set() {
        let (only, only_jwk) = ec_key("e1");
        let one = set(std::slice::from_ref(&only_jwk), &[Algorithm::ES256]).unwrap();
        assert!(verifies(&one, Algorithm::ES256, None, &only));
        let (_, other_jwk) = ec_key("e2");
        let two = set(&[only_jwk, other_jwk], &[Algorithm::ES256]).unwrap();
        assert!(two.select(&header(Algorithm::ES256, None)).is_none());
    }

    #[test]
    fn a_key_bound_to_another_algorithm_is_not_selected() {
        let rsa_set = set(
            &[rsa_jwk(Some("r1"), Some("RS256"))],
            &[Algorithm::RS256, Algorithm::PS256],
        )
        .unwrap();
        assert!(
            rsa_set
                .select(&header(Algorithm::RS256, Some("r1")))
                .is_some()
        );
        assert!(
            rsa_set
                .select(&header(Algorithm::PS256, Some("r1")))
                .is_none()
        );
    }

    #[test]
    fn unusable_entries_are_skipped_not_fatal() {
        let (_, ec_jwk) = ec_key("e1");
        let mut encryption = rsa_jwk(Some("enc"), None);
        encryption["use"] = json!("enc");
        let entries = [
            rsa_jwk(Some("r1"), None),
            encryption,
            json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"}),
            json!({"kty": "RSA", "kid": "broken"}),
            json!({"kty": "RSA", "kid": "oaep", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"}),
            ec_jwk,
        ];
        let rsa_set = set(&entries, &[Algorithm::RS256]).unwrap();
        assert_eq!(rsa_set.len(), 1);
        assert!(rsa_set.holds("r1"));
        let ec_set = set(&entries, &[Algorithm::ES256]).unwrap();
        assert_eq!(ec_set.len(), 1);
        assert!(ec_set.holds("e1"));
        // A P-256 key cannot verify ES384, and nothing here verifies PS384 but the RSA key.
        assert!(set(&entries, &[Algorithm::ES384]).is_err());
        assert!(set(&[], &[Algorithm::RS256]).is_err());
        assert!(KeySet::parse(b"{\"issuer\": \"x\"}", &[Algorithm::RS256]).is_err());
    }

    #[test]
    fn unknown_kids_start_one_fetch_per_min_interval_and_share_it() {
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let mut gate = RefreshGate::new(Duration::from_secs(30));
        assert_eq!(gate.demand(at(0)), Demand::Start);
        assert_eq!(gate.demand(at(0)), Demand::Join, "a fetch is under way");
        gate.finished();
        assert_eq!(gate.demand(at(10)), Demand::Refuse);
        assert_eq!(gate.demand(at(29)), Demand::Refuse);
        assert_eq!(gate.demand(at(30)), Demand::Start);
        gate.finished();
        // A scheduled fetch counts as a start too.
        assert!(gate.schedule(at(40)));
        assert!(!gate.schedule(at(40)), "one fetch at a time");
        assert_eq!(gate.demand(at(41)), Demand::Join);
        gate.finished();
        assert_eq!(gate.demand(at(50)), Demand::Refuse);
        assert_eq!(gate.demand(at(70)), Demand::Start);
    }

    #[test]
    fn only_http_urls_with_a_host_are_fetched() {
        assert!(http_uri("https://id.test/keys").is_ok());
        assert!(http_uri("http://127.0.0.1:8080/certs").is_ok());
        assert!(http_uri("ftp://id.test/keys").is_err());
        assert!(http_uri("/keys").is_err());
    }
}
