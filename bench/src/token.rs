//! The JWT every benchmark client presents; only the gateway checks it, the other targets
//! forward the same request bytes untouched.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

/// Claims the gateway's benchmark config requires.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub exp: u64,
}

impl BenchClaims {
    /// Claims valid for `lifetime` from now.
    pub fn valid_for(lifetime: Duration) -> anyhow::Result<Self> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("system clock before 1970")?;
        Ok(Self {
            iss: "wsfleet-bench".into(),
            aud: "wsfleet-bench".into(),
            sub: "load-generator".into(),
            exp: (now + lifetime).as_secs(),
        })
    }

    /// The claims signed with HS256 under `secret`.
    pub fn sign_hs256(&self, secret: &[u8]) -> anyhow::Result<String> {
        encode(
            &Header::new(Algorithm::HS256),
            self,
            &EncodingKey::from_secret(secret),
        )
        .context("signing the benchmark JWT")
    }
}
