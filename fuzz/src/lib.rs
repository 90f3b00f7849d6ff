//! What the fuzz targets share with the seed generator (`examples/make_seeds.rs`): the layout
//! of each target's input, and the gateway objects built the same way for every run.
//!
//! Each input starts with a fixed-size setup read through [`arbitrary`] and ends with the bytes
//! under test, taken as they are. The setups have an `encode` so the seed generator can write
//! inputs that decode to the cases the unit tests use.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use wsfleet_config::{ForwardedClaim, JwtAlgorithm, JwtConfig, Rate, TokenSource};
use wsfleet_gateway::policy::jwt::JwtVerifier;
use wsfleet_gateway::relay::tracker::{Source, Tracker};

/// The one place the fuzz targets build a tracker, so a change to `Tracker::new` is a
/// one-line change here.
pub fn new_tracker(source: Source, max_message_bytes: u64, message_rate: Option<Rate>) -> Tracker {
    Tracker::new(source, max_message_bytes, message_rate)
}

/// Splits `input` into its setup and the bytes under test (a short input reads as zeros).
pub fn split_input<'a, T: Arbitrary<'a>>(input: &'a [u8]) -> Option<(T, &'a [u8])> {
    let mut u = Unstructured::new(input);
    let setup = T::arbitrary(&mut u).ok()?;
    Some((setup, u.take_rest()))
}

/// Lengths of successive reads, used in turn; 0 reads everything that is left.
pub type ReadSizes = [u8; 8];

/// Cuts `bytes` into reads of the given sizes, cycling through them.
pub fn chunks<'a>(bytes: &'a [u8], sizes: &ReadSizes) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let take = match usize::from(*size) {
            0 => rest.len(),
            size => size.min(rest.len()),
        };
        let (chunk, tail) = rest.split_at(take);
        out.push(chunk);
        rest = tail;
    }
    out
}

/// How the frame tracker target feeds its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
pub struct TrackerSetup {
    pub from_client: bool,
    pub max_message_bytes: u32,
    /// `(perSecond, burst)` of `limits.messagesPerConnection`.
    pub message_rate: Option<(u8, u8)>,
    /// Calls `stop_at_next_frame` before this read (as the relay does when draining).
    pub stop_before_read: Option<u8>,
    pub read_sizes: ReadSizes,
}

impl TrackerSetup {
    pub fn source(&self) -> Source {
        if self.from_client {
            Source::Client
        } else {
            Source::Upstream
        }
    }

    pub fn rate(&self) -> Option<Rate> {
        self.message_rate.map(|(per_second, burst)| Rate {
            per_second: per_second.into(),
            burst: burst.into(),
        })
    }

    /// The bytes that [`split_input`] reads back as this setup.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![u8::from(self.from_client)];
        out.extend_from_slice(&self.max_message_bytes.to_le_bytes());
        encode_option(&mut out, self.message_rate.map(|(a, b)| vec![a, b]));
        encode_option(&mut out, self.stop_before_read.map(|read| vec![read]));
        out.extend_from_slice(&self.read_sizes);
        out
    }
}

/// How the head reader target feeds its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
pub struct HeadSetup {
    /// `limits.maxHeaderBytes`.
    pub max_bytes: u16,
    pub read_sizes: ReadSizes,
}

impl HeadSetup {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.max_bytes.to_le_bytes().to_vec();
        out.extend_from_slice(&self.read_sizes);
        out
    }
}

/// What the JWT target does with its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum JwtMode {
    /// The bytes are a token.
    Token,
    /// The bytes are `header JSON \0 claims JSON` (or only claims), signed with the test
    /// secret so that the claim checks run.
    SignedClaims,
    /// The bytes are `query \0 Sec-WebSocket-Protocol \0 Authorization` of an upgrade request.
    Request,
}

/// Which verifier the JWT target uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum JwtKey {
    /// HMAC, forwarding claims as headers.
    HmacForwarding,
    /// HMAC, checking claims without collecting them.
    HmacCheckOnly,
    /// RSA public key of the gateway's test fixtures.
    Rsa,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub struct JwtSetup {
    pub mode: JwtMode,
    pub key: JwtKey,
}

impl JwtSetup {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = encode_variant(self.mode as u32, 3);
        out.extend(encode_variant(self.key as u32, 3));
        out
    }
}

/// The HMAC secret of the JWT target's verifiers (the one of the gateway's jwt.rs tests).
pub const HMAC_SECRET: &[u8] = b"a-long-enough-hmac-secret-for-tests";
/// The public key of the gateway's RSA test fixture.
pub const RSA_PUBLIC_PEM: &[u8] = include_bytes!("../../gateway/tests/fixtures/jwt-rsa.pub");
/// The issuer and audience every verifier requires.
pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "chat";
pub const QUERY_PARAMETER: &str = "access_token";
/// Claims forwarded by the forwarding verifiers, as `(claim, header)`.
pub const FORWARDED_CLAIMS: [(&str, &str); 3] = [
    ("sub", "X-User"),
    ("roles", "X-Roles"),
    ("tenant", "X-Tenant"),
];

/// The verifier for `key`, built once per process.
pub fn verifier(key: JwtKey) -> &'static JwtVerifier {
    static VERIFIERS: OnceLock<[JwtVerifier; 3]> = OnceLock::new();
    let verifiers = VERIFIERS.get_or_init(|| {
        [
            load_verifier(HMAC_SECRET, &[JwtAlgorithm::HS256], true),
            load_verifier(HMAC_SECRET, &[JwtAlgorithm::HS256], false),
            load_verifier(
                RSA_PUBLIC_PEM,
                &[JwtAlgorithm::RS256, JwtAlgorithm::PS256],
                true,
            ),
        ]
    });
    &verifiers[key as usize]
}

/// Builds a verifier through `JwtVerifier::load`, the gateway's only way in: the key goes
/// through a file that is removed again at once.
fn load_verifier(key: &[u8], algorithms: &[JwtAlgorithm], forward: bool) -> JwtVerifier {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let key_file: PathBuf =
        std::env::temp_dir().join(format!("wsfleet-fuzz-{}-{n}.key", std::process::id()));
    std::fs::write(&key_file, key).expect("writing the fuzz key file");
    let config = JwtConfig {
        issuer: Some(ISSUER.into()),
        audiences: vec![AUDIENCE.into()],
        algorithms: algorithms.to_vec(),
        key_file: Some(key_file.clone()),
        jwks: None,
        token_from: vec![
            TokenSource::Subprotocol,
            TokenSource::Query,
            TokenSource::Header,
        ],
        query_parameter: QUERY_PARAMETER.into(),
        forward_claims: if forward {
            FORWARDED_CLAIMS
                .iter()
                .map(|(claim, header)| ForwardedClaim {
                    claim: (*claim).into(),
                    header: (*header).into(),
                })
                .collect()
        } else {
            Vec::new()
        },
        subject_claim: "sub".into(),
        leeway: Duration::ZERO,
    };
    let verifier = JwtVerifier::load(&config, None, &Default::default());
    let _ = std::fs::remove_file(&key_file);
    verifier.expect("the fuzz verifier's config is valid")
}

/// A token over `header` and `claims` (raw JSON bytes), HS256-signed with [`HMAC_SECRET`]
/// whatever the header says.
pub fn sign_hs256(header: &[u8], claims: &[u8]) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(HMAC_SECRET);
    sign(header, claims, &key, jsonwebtoken::Algorithm::HS256)
}

/// A token over `header` and `claims` (raw JSON bytes), signed with `key` and `algorithm`.
pub fn sign(
    header: &[u8],
    claims: &[u8],
    key: &jsonwebtoken::EncodingKey,
    algorithm: jsonwebtoken::Algorithm,
) -> String {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let message = format!("{}.{}", engine.encode(header), engine.encode(claims));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, algorithm)
        .expect("signing with a valid key does not fail");
    format!("{message}.{signature}")
}

/// The header the JWT target signs with when the input names none.
pub const HS256_HEADER: &[u8] = br#"{"alg":"HS256","typ":"JWT"}"#;

/// An upgrade request with the given extra header lines and request target.
pub fn upgrade_request(target: &str, extra_headers: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    )
}

fn encode_option(out: &mut Vec<u8>, value: Option<Vec<u8>>) {
    match value {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            out.extend(bytes);
        }
    }
}

/// The `u32` that `arbitrary`'s derived enums read as variant `index` of `count`.
fn encode_variant(index: u32, count: u32) -> Vec<u8> {
    let value = ((u64::from(index) << 32).div_ceil(u64::from(count))) as u32;
    value.to_le_bytes().to_vec()
}
