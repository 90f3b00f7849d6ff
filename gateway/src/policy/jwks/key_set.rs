//! A JWK set document read as keys: the signing keys that verify one of the configured
//! algorithms, and the choice of key for a token's header.

use std::str::FromStr as _;

use anyhow::Context as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Header};
use serde::Deserialize;

/// The usable keys of one JWK set.
#[derive(Default)]
pub(crate) struct KeySet {
    keys: Vec<SetKey>,
}

struct SetKey {
    kid: Option<String>,
    /// The key's `alg`: when present, the only algorithm it verifies.
    algorithm: Option<Algorithm>,
    key: DecodingKey,
}

impl KeySet {
    /// Parses a JWK set document, keeping the signing keys that verify one of `algorithms`;
    /// other entries (encryption keys, other key types or curves, malformed ones) are
    /// skipped. A set without a usable key is an error, so that it never replaces one.
    pub fn parse(document: &[u8], algorithms: &[Algorithm]) -> anyhow::Result<Self> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document =
            serde_json::from_slice(document).context("not a JWK set (no \"keys\" array)")?;
        let offered = document.keys.len();
        let keys: Vec<SetKey> = document
            .keys
            .into_iter()
            .filter_map(|entry| usable_key(entry, algorithms))
            .collect();
        anyhow::ensure!(
            !keys.is_empty(),
            "none of the {offered} keys verifies {algorithms:?}"
        );
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(super) fn holds(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid.as_deref() == Some(kid))
    }

    /// The key for a token's header: the one with its `kid`; for a token without a `kid`,
    /// the only key of a one-key set (with several, picking one would be a guess). A key
    /// bound to another algorithm than the token's is not used.
    pub fn select(&self, header: &Header) -> Option<&DecodingKey> {
        let key = match &header.kid {
            Some(kid) => self.keys.iter().find(|key| key.kid.as_deref() == Some(kid)),
            None => match self.keys.as_slice() {
                [only] => Some(only),
                _ => None,
            },
        }?;
        key.algorithm
            .is_none_or(|algorithm| algorithm == header.alg)
            .then_some(&key.key)
    }
}

/// One JWK set entry as a key, when it is a signing key for one of `algorithms`.
fn usable_key(entry: serde_json::Value, algorithms: &[Algorithm]) -> Option<SetKey> {
    let jwk: Jwk = serde_json::from_value(entry).ok()?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|usage| *usage != PublicKeyUse::Signature)
    {
        return None;
    }
    let algorithm = match &jwk.common.key_algorithm {
        Some(named) => Some(Algorithm::from_str(&named.to_string()).ok()?),
        None => None,
    };
    let verifies = |algorithm: &Algorithm| {
        use Algorithm::*;
        match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => {
                matches!(algorithm, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
            }
            AlgorithmParameters::EllipticCurve(ec) => matches!(
                (algorithm, &ec.curve),
                (ES256, EllipticCurve::P256) | (ES384, EllipticCurve::P384)
            ),
            _ => false,
        }
    };
    let usable = match &algorithm {
        Some(algorithm) => algorithms.contains(algorithm) && verifies(algorithm),
        None => algorithms.iter().any(verifies),
    };
    if !usable {
        return None;
    }
    Some(SetKey {
        key: DecodingKey::from_jwk(&jwk).ok()?,
        kid: jwk.common.key_id,
        algorithm,
    })
}
