//! JSON Web Token checks on the upgrade request.
//!
//! The accepted algorithms share one key family (checked by the config), and the key is
//! loaded as that family only, so a token cannot pick a weaker interpretation of the key:
//! an HS256 token signed with an RSA public key is refused because HS256 is not accepted.
//! With keys from an identity provider ([`crate::policy::jwks`]), the token's `kid` picks the key.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use crate::policy::jwks::{JwksKeys, KeySource};
use crate::telemetry::metrics::Metrics;
use crate::wire::handshake::UpgradeRequest;
use crate::wire::tls::CaBundle;
use wsfleet_config::{ForwardedClaim, JwtAlgorithm, JwtConfig, KeyFamily, TokenSource};

/// The entry prefix that carries a token in `Sec-WebSocket-Protocol`.
pub use wsfleet_config::TOKEN_SUBPROTOCOL_PREFIX as SUBPROTOCOL_PREFIX;

/// Verifies tokens with one set of rules.
pub struct JwtVerifier {
    keys: VerificationKeys,
    validation: Validation,
    sources: Vec<TokenSource>,
    query_parameter: String,
    forward_claims: Vec<ForwardedClaim>,
    /// The claim named the subject, when something needs it (see [`JwtVerifier::collecting_subject`]).
    subject_claim: Option<String>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

/// The keys tokens are checked with.
enum VerificationKeys {
    /// `auth.jwt.keyFile`: one key for every token.
    File(DecodingKey),
    /// `auth.jwt.jwks`: the provider's keys, picked by the token's `kid`.
    Jwks(Arc<JwksKeys>),
}

/// What a verified token yields.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verified {
    /// The subject claim's value; `None` when it is not collected, absent or not a string.
    pub subject: Option<String>,
    /// Headers for the configured claims the token carries.
    pub claim_headers: Vec<(String, String)>,
}

/// Why a request's token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no token in the request")]
    Missing,
    #[error("token refused: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("token refused: no key for its kid and algorithm")]
    UnknownKey,
}

impl JwtVerifier {
    /// Reads the key file, or starts fetching the provider's keys (keeping `previous`'s when
    /// they come from the same source), and prepares the validation rules.
    pub fn load(
        config: &JwtConfig,
        previous: Option<&Self>,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let family = config
            .algorithms
            .first()
            .context("auth.jwt.algorithms: must name at least one algorithm")?
            .key_family();
        let algorithms: Vec<Algorithm> = config
            .algorithms
            .iter()
            .map(|alg| algorithm(*alg))
            .collect();
        let keys = match (&config.key_file, &config.jwks) {
            (Some(key_file), None) => VerificationKeys::File(read_key_file(key_file, family)?),
            (None, Some(jwks)) => {
                let source = KeySource {
                    config: jwks.clone(),
                    issuer: config.issuer.clone(),
                    ca: jwks
                        .ca_file
                        .as_deref()
                        .map(|path| CaBundle::read("auth.jwt.jwks.caFile", path))
                        .transpose()?,
                    algorithms: algorithms.clone(),
                };
                VerificationKeys::Jwks(provider_keys(source, previous, metrics)?)
            }
            _ => anyhow::bail!("auth.jwt: set exactly one of keyFile and jwks"),
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.required_spec_claims = HashSet::from(["exp".to_owned()]);
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
        }
        if config.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&config.audiences);
        }
        Ok(Self {
            keys,
            validation,
            sources: config.token_from.clone(),
            query_parameter: config.query_parameter.clone(),
            forward_claims: config.forward_claims.clone(),
            subject_claim: None,
        })
    }

    /// Also returns the `auth.jwt.subjectClaim` of verified tokens. Off unless a limit or a
    /// log needs it: collecting claims decodes them into a map.
    pub(crate) fn collecting_subject(mut self, claim: &str) -> Self {
        self.subject_claim = Some(claim.to_owned());
        self
    }

    /// With keys from an identity provider, waits briefly for a fetch when the request's
    /// token names a `kid` not held yet (see [`JwksKeys::wait_for`]); at once otherwise.
    pub(crate) async fn await_token_key(&self, request: &UpgradeRequest) {
        if let VerificationKeys::Jwks(jwks) = &self.keys
            && let Some(token) = self.find_token(request)
            && let Ok(jsonwebtoken::Header { kid: Some(kid), .. }) =
                jsonwebtoken::decode_header(token)
        {
            jwks.wait_for(&kid).await;
        }
    }

    /// Finds the token in the request and verifies it.
    pub fn verify_request(&self, request: &UpgradeRequest) -> Result<Verified, TokenError> {
        let token = self.find_token(request).ok_or(TokenError::Missing)?;
        self.verify(token)
    }

    /// Verifies one token (signature, algorithm, `exp`, `nbf`, `iss`, `aud`) and returns the
    /// claims collected from it.
    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let provider_keys;
        let key = match &self.keys {
            VerificationKeys::File(key) => key,
            VerificationKeys::Jwks(jwks) => {
                provider_keys = jwks.current();
                let header = jsonwebtoken::decode_header(token)?;
                provider_keys
                    .select(&header)
                    .ok_or(TokenError::UnknownKey)?
            }
        };
        if self.forward_claims.is_empty() && self.subject_claim.is_none() {
            // Nothing to collect: the claims are checked but not kept.
            jsonwebtoken::decode::<IgnoredAny>(token, key, &self.validation)?;
            return Ok(Verified::default());
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation)?;
        let mut claims = data.claims;
        Ok(Verified {
            claim_headers: self.claim_headers(&claims),
            subject: self
                .subject_claim
                .as_ref()
                .and_then(|claim| match claims.remove(claim) {
                    Some(Value::String(subject)) => Some(subject),
                    _ => None,
                }),
        })
    }

    /// False while the provider's keys have never been fetched: no token can pass yet.
    pub(crate) fn has_keys(&self) -> bool {
        match &self.keys {
            VerificationKeys::File(_) => true,
            VerificationKeys::Jwks(jwks) => jwks.has_keys(),
        }
    }

    /// The provider's keys, when tokens are checked with them.
    pub(crate) fn provider_keys(&self) -> Option<&Arc<JwksKeys>> {
        match &self.keys {
            VerificationKeys::File(_) => None,
            VerificationKeys::Jwks(jwks) => Some(jwks),
        }
    }

    fn find_token<'a>(&self, request: &'a UpgradeRequest) -> Option<&'a str> {
        self.sources.iter().find_map(|source| match source {
            TokenSource::Header => request.header("authorization").and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            }),
            TokenSource::Query => request.query_parameter(&self.query_parameter),
            TokenSource::Subprotocol => {
                offered_token_protocol(request)?.strip_prefix(SUBPROTOCOL_PREFIX)
            }
        })
    }

    /// Headers forwarded upstream for the configured claims present in `claims`.
    fn claim_headers(&self, claims: &Map<String, Value>) -> Vec<(String, String)> {
        self.forward_claims
            .iter()
            .filter_map(|forwarded| {
                let value = header_value(claims.get(&forwarded.claim)?)?;
                Some((forwarded.header.clone(), value))
            })
            .collect()
    }

    /// The query parameter a token is read from, when the query is a token source.
    pub fn token_query_parameter(&self) -> Option<&str> {
        self.sources
            .contains(&TokenSource::Query)
            .then_some(self.query_parameter.as_str())
    }
}

/// The client's first `bearer.<token>` subprotocol entry: where a subprotocol token is read.
///
/// When the upstream selects no subprotocol, the client is told this entry was selected:
/// browsers fail a handshake that selects none of the subprotocols they offered, and the
/// upstream never sees the entry to select it.
pub fn offered_token_protocol(request: &UpgradeRequest) -> Option<&str> {
    request
        .list("sec-websocket-protocol")
        .find(|entry| entry.starts_with(SUBPROTOCOL_PREFIX))
}

fn read_key_file(path: &Path, family: KeyFamily) -> anyhow::Result<DecodingKey> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("auth.jwt.keyFile: reading {}", path.display()))?;
    decoding_key(family, &bytes).with_context(|| {
        format!(
            "auth.jwt.keyFile: {} is not a {family:?} key",
            path.display()
        )
    })
}

/// `previous`'s provider keys when they come from `source`: a reload that keeps the JWKS
/// settings neither refetches nor drops them. Any other source starts over.
fn provider_keys(
    source: KeySource,
    previous: Option<&JwtVerifier>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Arc<JwksKeys>> {
    if let Some(VerificationKeys::Jwks(running)) = previous.map(|verifier| &verifier.keys)
        && *running.source() == source
    {
        return Ok(running.clone());
    }
    Ok(Arc::new(JwksKeys::start(source, metrics.clone())?))
}

fn decoding_key(family: KeyFamily, bytes: &[u8]) -> anyhow::Result<DecodingKey> {
    Ok(match family {
        KeyFamily::Hmac => {
            // A PEM key as an HMAC secret is the classic algorithm-confusion setup: refuse it.
            anyhow::ensure!(
                !bytes.starts_with(b"-----BEGIN"),
                "a PEM key cannot be an HMAC secret"
            );
            anyhow::ensure!(!bytes.is_empty(), "the HMAC secret is empty");
            DecodingKey::from_secret(bytes)
        }
        KeyFamily::Rsa => DecodingKey::from_rsa_pem(bytes)?,
        KeyFamily::Ec => DecodingKey::from_ec_pem(bytes)?,
    })
}

fn algorithm(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::HS384 => Algorithm::HS384,
        JwtAlgorithm::HS512 => Algorithm::HS512,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
    }
}

/// Strings as they are, numbers and booleans as text, string arrays comma-joined; values
/// that could break a header line are dropped.
fn header_value(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?
            .join(","),
        _ => return None,
    };
    text.bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
        .then_some(text)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"a-long-enough-hmac-secret-for-tests";

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn hmac_verifier(edit: impl FnOnce(&mut JwtConfig)) -> (JwtVerifier, tempfile::NamedTempFile) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(SECRET).unwrap();
        let mut config = JwtConfig {
            issuer: Some("https://issuer.test".into()),
            audiences: vec!["chat".into()],
            algorithms: vec![JwtAlgorithm::HS256],
            key_file: Some(file.path().to_owned()),
            jwks: None,
            token_from: vec![
                TokenSource::Header,
                TokenSource::Query,
                TokenSource::Subprotocol,
            ],
            query_parameter: "access_token".into(),
            forward_claims: vec![ForwardedClaim {
                claim: "sub".into(),
                header: "X-User".into(),
            }],
            subject_claim: "sub".into(),
            leeway: Duration::ZERO,
        };
        edit(&mut config);
        (
            JwtVerifier::load(&config, None, &Arc::default()).unwrap(),
            file,
        )
    }

    fn sign(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn good_claims() -> serde_json::Value {
        json!({"sub": "alice", "iss": "https://issuer.test", "aud": "chat", "exp": now() + 60})
    }

    #[test]
    fn valid_token_yields_claim_headers() {
        let (verifier, _key) = hmac_verifier(|_| {});
        assert_eq!(
            verifier.verify(&sign(good_claims())).unwrap().claim_headers,
            [("X-User".to_owned(), "alice".to_owned())]
        );
    }

    #[test]
    fn without_forwarded_claims_a_valid_token_yields_no_headers() {
        let (verifier, _key) = hmac_verifier(|config| config.forward_claims.clear());
        assert_eq!(
            verifier.verify(&sign(good_claims())).unwrap(),
            Verified::default()
        );
    }

    #[test]
    fn the_subject_comes_from_the_configured_claim_when_collected() {
        let (verifier, _key) = hmac_verifier(|config| config.forward_claims.clear());
        let mut claims = good_claims();
        claims["user_id"] = json!("u-7");
        let token = sign(claims);
        assert_eq!(verifier.verify(&token).unwrap().subject, None);
        let by_sub = verifier.collecting_subject("sub");
        assert_eq!(
            by_sub.verify(&token).unwrap().subject.as_deref(),
            Some("alice")
        );
        let by_user_id = by_sub.collecting_subject("user_id");
        assert_eq!(
            by_user_id.verify(&token).unwrap().subject.as_deref(),
            Some("u-7")
        );
        // Only a string names a subject.
        let mut numeric = good_claims();
        numeric["user_id"] = json!(7);
        assert_eq!(by_user_id.verify(&sign(numeric)).unwrap().subject, None);
    }

    /// Checked the same whether the claims are collected for forwarding or not.
    #[test]
    fn expiry_issuer_audience_and_nbf_are_checked() {
        let (collecting, _key) = hmac_verifier(|_| {});
        let (checking_only, _key) = hmac_verifier(|config| config.forward_claims.clear());
        let mut expired = good_claims();
        expired["exp"] = json!(now() - 10);
        let mut wrong_issuer = good_claims();
        wrong_issuer["iss"] = json!("https://evil.test");
        let mut wrong_audience = good_claims();
        wrong_audience["aud"] = json!("billing");
        let mut not_yet = good_claims();
        not_yet["nbf"] = json!(now() + 30);
        let mut no_exp = good_claims();
        no_exp.as_object_mut().unwrap().remove("exp");
        for claims in [expired, wrong_issuer, wrong_audience, not_yet, no_exp] {
            for verifier in [&collecting, &checking_only] {
                assert!(verifier.verify(&sign(claims.clone())).is_err(), "{claims}");
            }
        }
    }

    #[test]
    fn alg_none_and_bad_signatures_are_refused() {
        let (verifier, _key) = hmac_verifier(|_| {});
        let signed = sign(good_claims());
        let payload = signed.split('.').nth(1).unwrap();
        // {"alg":"none","typ":"JWT"}
        let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(verifier.verify(&unsigned).is_err());
        let tampered = format!("{}x", &signed[..signed.len() - 1]);
        assert!(verifier.verify(&tampered).is_err());
    }

    #[test]
    fn pem_key_cannot_be_an_hmac_secret() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n")
            .unwrap();
        let config = JwtConfig {
            issuer: None,
            audiences: vec![],
            algorithms: vec![JwtAlgorithm::HS256],
            key_file: Some(file.path().to_owned()),
            jwks: None,
            token_from: vec![TokenSource::Header],
            query_parameter: "access_token".into(),
            forward_claims: vec![],
            subject_claim: "sub".into(),
            leeway: Duration::ZERO,
        };
        let err = JwtVerifier::load(&config, None, &Arc::default()).unwrap_err();
        assert!(format!("{err:#}").contains("auth.jwt.keyFile"), "{err:#}");
    }

    #[test]
    fn tokens_are_found_in_each_source_in_order() {
        let (verifier, _key) = hmac_verifier(|config| {
            config.token_from = vec![
                TokenSource::Subprotocol,
                TokenSource::Query,
                TokenSource::Header,
            ];
        });
        let request = |extra: &str, query: &str| {
            UpgradeRequest::parse(format!(
                "GET /{query} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
            ).as_bytes()).unwrap()
        };
        assert_eq!(
            verifier.find_token(&request("Authorization: Bearer h\r\n", "")),
            Some("h")
        );
        assert_eq!(
            verifier.find_token(&request("", "?access_token=q")),
            Some("q")
        );
        assert_eq!(
            verifier.find_token(&request(
                "Sec-WebSocket-Protocol: chat, bearer.s\r\nAuthorization: Bearer h\r\n",
                "?access_token=q"
            )),
            Some("s")
        );
        assert!(matches!(
            verifier.verify_request(&request("", "")),
            Err(TokenError::Missing)
        ));
    }

    #[test]
    fn the_offered_token_entry_is_found_among_other_protocols() {
        let request = |protocols: &str| {
            UpgradeRequest::parse(format!(
                "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{protocols}\r\n"
            ).as_bytes()).unwrap()
        };
        assert_eq!(
            offered_token_protocol(&request("Sec-WebSocket-Protocol: bearer.abc\r\n")),
            Some("bearer.abc")
        );
        assert_eq!(
            offered_token_protocol(&request(
                "Sec-WebSocket-Protocol: x.app.v1, bearer.abc, bearer.def\r\n"
            )),
            Some("bearer.abc")
        );
        assert_eq!(
            offered_token_protocol(&request("Sec-WebSocket-Protocol: x.app.v1\r\n")),
            None
        );
        assert_eq!(offered_token_protocol(&request("")), None);
    }

    #[test]
    fn claim_values_that_could_break_headers_are_dropped() {
        assert_eq!(header_value(&json!(["a", "b"])).as_deref(), Some("a,b"));
        assert_eq!(header_value(&json!(42)).as_deref(), Some("42"));
        assert_eq!(header_value(&json!("evil\r\nX-Admin: 1")), None);
        assert_eq!(header_value(&json!({"nested": 1})), None);
    }
}
