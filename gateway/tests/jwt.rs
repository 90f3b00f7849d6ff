//! JWT admission through a real gateway: each key family, each token source, claims
//! forwarded as headers, and the classic attacks refused.

mod common;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const RSA_PRIVATE: &str = include_str!("fixtures/jwt-rsa.key");
const RSA_PUBLIC: &str = include_str!("fixtures/jwt-rsa.pub");
const HMAC_SECRET: &[u8] = b"hmac-secret-used-only-by-these-tests";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> serde_json::Value {
    json!({"sub": "alice", "tenant": "t-42", "iss": "https://id.test", "aud": "chat", "exp": now() + 300})
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

/// A gateway checking tokens with `algorithms`, the key written to `key_file`.
async fn gateway_with_key(
    upstream: &EchoUpstream,
    algorithms: &str,
    key: &[u8],
    token_from: &str,
) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("key");
    std::fs::write(&key_path, key).unwrap();
    let extra = jwt_config(algorithms, &key_path, token_from);
    Gateway::start_in(dir, &upstream.url("/"), &extra).await
}

fn jwt_config(algorithms: &str, key_path: &Path, token_from: &str) -> String {
    format!(
        "auth:\n  jwt:\n    issuer: https://id.test\n    audiences: [chat]\n    algorithms: [{algorithms}]\n    keyFile: {}\n    tokenFrom: [{token_from}]\n    leeway: 0s\n    forwardClaims:\n      - {{claim: sub, header: X-User}}\n      - {{claim: tenant, header: X-Tenant}}\n",
        key_path.display()
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn hs256_tokens_and_their_failures() {
    let upstream = EchoUpstream::start().await;
    let gateway = gateway_with_key(&upstream, "HS256", HMAC_SECRET, "Header").await;
    let key = EncodingKey::from_secret(HMAC_SECRET);

    let good = sign(Algorithm::HS256, &key, &claims());
    let (mut client, _) = connect(
        &gateway.url("/"),
        &[("Authorization", &bearer(&good)), ("X-User", "mallory")],
    )
    .await
    .unwrap();
    assert_eq!(round_trip(&mut client, "hi").await, "hi");
    let seen = upstream.records.requests().last().cloned().unwrap();
    assert_eq!(
        seen.header("x-user"),
        Some("alice"),
        "the claim, not the client's copy"
    );
    assert_eq!(seen.header("x-tenant"), Some("t-42"));
    assert_eq!(
        seen.headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("x-user"))
            .count(),
        1
    );

    let mut expired = claims();
    expired["exp"] = json!(now() - 60);
    let mut wrong_audience = claims();
    wrong_audience["aud"] = json!("billing");
    let mut wrong_issuer = claims();
    wrong_issuer["iss"] = json!("https://evil.test");
    let mut not_yet = claims();
    not_yet["nbf"] = json!(now() + 600);
    for bad in [expired, wrong_audience, wrong_issuer, not_yet] {
        let token = sign(Algorithm::HS256, &key, &bad);
        assert_eq!(
            refused_status(&gateway.url("/"), &[("Authorization", &bearer(&token))]).await,
            401,
            "{bad}"
        );
    }
    let other_key = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-entirely"),
        &claims(),
    );
    assert_eq!(
        refused_status(&gateway.url("/"), &[("Authorization", &bearer(&other_key))]).await,
        401
    );

    // alg "none" with the payload of a good token.
    let payload = good.split('.').nth(1).unwrap();
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    assert_eq!(
        refused_status(&gateway.url("/"), &[("Authorization", &bearer(&unsigned))]).await,
        401
    );
    assert_eq!(
        gateway
            .metric("wsfleet_gateway_refusals_total{reason=\"token_invalid\"}")
            .await,
        6.0
    );
}

#[tokio::test]
async fn rs256_tokens_and_algorithm_confusion() {
    let upstream = EchoUpstream::start().await;
    let gateway =
        gateway_with_key(&upstream, "RS256, PS256", RSA_PUBLIC.as_bytes(), "Header").await;
    let private = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
    for alg in [Algorithm::RS256, Algorithm::PS256] {
        let good = sign(alg, &private, &claims());
        let connected = connect(&gateway.url("/"), &[("Authorization", &bearer(&good))]).await;
        assert!(connected.is_ok(), "{alg:?}");
    }
    let not_accepted = sign(Algorithm::RS384, &private, &claims());
    let header = bearer(&not_accepted);
    let status = refused_status(&gateway.url("/"), &[("Authorization", &header)]).await;
    assert_eq!(status, 401, "RS384 is not among the accepted algorithms");

    // HS256 "signed" with the public key as the HMAC secret must not pass.
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
        &claims(),
    );
    assert_eq!(
        refused_status(&gateway.url("/"), &[("Authorization", &bearer(&confused))]).await,
        401
    );
}

#[tokio::test]
async fn es256_tokens() {
    let upstream = EchoUpstream::start().await;
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let gateway = gateway_with_key(
        &upstream,
        "ES256",
        pair.public_key_pem().as_bytes(),
        "Header",
    )
    .await;
    let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let good = sign(Algorithm::ES256, &key, &claims());
    assert!(
        connect(&gateway.url("/"), &[("Authorization", &bearer(&good))])
            .await
            .is_ok()
    );
    let stranger = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let forged = sign(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(stranger.serialize_pem().as_bytes()).unwrap(),
        &claims(),
    );
    assert_eq!(
        refused_status(&gateway.url("/"), &[("Authorization", &bearer(&forged))]).await,
        401
    );
}

#[tokio::test]
async fn tokens_from_query_and_subprotocol() {
    let upstream = EchoUpstream::start().await;
    let gateway = gateway_with_key(&upstream, "HS256", HMAC_SECRET, "Query, Subprotocol").await;
    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(HMAC_SECRET),
        &claims(),
    );

    let (mut client, _) = connect(&gateway.url(&format!("/?access_token={token}")), &[])
        .await
        .unwrap();
    assert_eq!(round_trip(&mut client, "query").await, "query");

    let offer = format!("chat, bearer.{token}");
    let (mut client, response) = connect(&gateway.url("/"), &[("Sec-WebSocket-Protocol", &offer)])
        .await
        .unwrap();
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "chat"
    );
    assert_eq!(round_trip(&mut client, "subprotocol").await, "subprotocol");
    let seen = upstream.records.requests().last().cloned().unwrap();
    assert_eq!(
        seen.header("sec-websocket-protocol"),
        Some("chat"),
        "the token entry is removed"
    );

    // Offered alone, the token entry is what the client is told was selected (browsers
    // insist on an answer); the upstream is offered nothing.
    let alone = format!("bearer.{token}");
    let (mut client, response) = connect(&gateway.url("/"), &[("Sec-WebSocket-Protocol", &alone)])
        .await
        .unwrap();
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        alone.as_str()
    );
    assert_eq!(round_trip(&mut client, "token only").await, "token only");
    let seen = upstream.records.requests().last().cloned().unwrap();
    assert_eq!(seen.header("sec-websocket-protocol"), None);

    // The header is not a configured source here.
    assert_eq!(
        refused_status(&gateway.url("/"), &[("Authorization", &bearer(&token))]).await,
        401
    );
}

/// A browser's offer: its token entry beside the application's protocol, which the upstream
/// does not select. The client, like Chromium, fails a handshake that selects nothing.
#[tokio::test]
async fn the_token_entry_is_selected_when_the_upstream_selects_none() {
    let upstream = EchoUpstream::start().await;
    let gateway = gateway_with_key(&upstream, "HS256", HMAC_SECRET, "Subprotocol").await;
    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(HMAC_SECRET),
        &claims(),
    );
    let token_entry = format!("bearer.{token}");
    let offer = format!("{token_entry}, x.app.v1");
    let (mut client, response) = connect(&gateway.url("/"), &[("Sec-WebSocket-Protocol", &offer)])
        .await
        .expect("a handshake that selects the offered token entry");
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        token_entry.as_str()
    );
    assert_eq!(round_trip(&mut client, "browser").await, "browser");
    let seen = upstream.records.requests().last().cloned().unwrap();
    assert_eq!(seen.header("sec-websocket-protocol"), Some("x.app.v1"));
}

/// The token's query parameter stays with the gateway, like the subprotocol token entry; the
/// other parameters reach the upstream in their order.
#[tokio::test]
async fn the_token_query_parameter_does_not_reach_the_upstream() {
    let upstream = EchoUpstream::start().await;
    let gateway = gateway_with_key(&upstream, "HS256", HMAC_SECRET, "Query").await;
    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(HMAC_SECRET),
        &claims(),
    );
    let (mut client, _) = connect(
        &gateway.url(&format!("/?room=7&access_token={token}&lang=en")),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(round_trip(&mut client, "query").await, "query");
    let seen = upstream.records.requests().last().cloned().unwrap();
    assert_eq!(seen.uri, "/?room=7&lang=en");
}

/// A gateway with `limits.connectionsPerSubject: 3`.
async fn subject_limited_gateway(upstream: &EchoUpstream) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("key");
    std::fs::write(&key_path, HMAC_SECRET).unwrap();
    let extra = format!(
        "{}limits:\n  connectionsPerSubject: 3\n",
        jwt_config("HS256", &key_path, "Header")
    );
    Gateway::start_in(dir, &upstream.url("/"), &extra).await
}

fn token_of(subject: Option<&str>) -> String {
    let mut claims = claims();
    if let Some(subject) = subject {
        claims["sub"] = json!(subject);
    } else {
        claims.as_object_mut().unwrap().remove("sub");
    }
    bearer(&sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(HMAC_SECRET),
        &claims,
    ))
}

#[tokio::test]
async fn connections_per_subject_are_limited() {
    let upstream = EchoUpstream::start().await;
    let gateway = subject_limited_gateway(&upstream).await;
    let alice = token_of(Some("alice"));
    let mut tabs = Vec::new();
    for _ in 0..3 {
        let (client, _) = connect(&gateway.url("/"), &[("Authorization", &alice)])
            .await
            .unwrap();
        tabs.push(client);
    }
    assert_eq!(
        refused_status(&gateway.url("/"), &[("Authorization", &alice)]).await,
        429
    );
    let refused = "wsfleet_gateway_refusals_total{reason=\"subject_limited\"}";
    assert_eq!(gateway.metric(refused).await, 1.0);

    let bob = token_of(Some("bob"));
    let (mut bobs, _) = connect(&gateway.url("/"), &[("Authorization", &bob)])
        .await
        .unwrap();
    assert_eq!(round_trip(&mut bobs, "bob").await, "bob");

    // One of alice's tabs closes: once the gateway has let it go, she gets in again.
    let mut closing = tabs.pop().unwrap();
    closing.close(None).await.unwrap();
    next_close(&mut closing).await;
    eventually("alice's closed tab to leave the gateway", || async {
        gateway.metric("wsfleet_gateway_active_connections").await == 3.0
    })
    .await;
    let (mut again, _) = connect(&gateway.url("/"), &[("Authorization", &alice)])
        .await
        .unwrap();
    assert_eq!(round_trip(&mut again, "back").await, "back");
    assert_eq!(gateway.metric(refused).await, 1.0);
}

/// The limit cannot count a token that names no subject, so such a token is refused.
#[tokio::test]
async fn without_a_subject_claim_the_limited_gateway_refuses_the_token() {
    let upstream = EchoUpstream::start().await;
    let gateway = subject_limited_gateway(&upstream).await;
    assert_eq!(
        refused_status(&gateway.url("/"), &[("Authorization", &token_of(None))]).await,
        401
    );
    assert_eq!(
        gateway
            .metric("wsfleet_gateway_refusals_total{reason=\"token_invalid\"}")
            .await,
        1.0
    );
}

/// A lowered limit cuts no connection: it holds new handshakes back until the user is under it.
#[tokio::test]
async fn a_reloaded_subject_limit_applies_to_new_handshakes() {
    let upstream = EchoUpstream::start().await;
    let gateway = subject_limited_gateway(&upstream).await;
    let alice = token_of(Some("alice"));
    let mut tabs = Vec::new();
    for _ in 0..3 {
        let (client, _) = connect(&gateway.url("/"), &[("Authorization", &alice)])
            .await
            .unwrap();
        tabs.push(client);
    }

    let key_path = gateway.dir.path().join("key");
    let extra = format!(
        "{}limits:\n  connectionsPerSubject: 2\n",
        jwt_config("HS256", &key_path, "Header")
    );
    gateway.rewrite_config(&upstream.url("/"), &extra);
    gateway
        .wait_metric(
            "wsfleet_gateway_reloads_total{kind=\"config\",outcome=\"success\"}",
            1.0,
        )
        .await;
    for (n, tab) in tabs.iter_mut().enumerate() {
        let text = format!("still {n}");
        assert_eq!(round_trip(tab, &text).await, text);
    }
    assert_eq!(
        refused_status(&gateway.url("/"), &[("Authorization", &alice)]).await,
        429
    );
    for mut closing in tabs.drain(1..) {
        closing.close(None).await.unwrap();
        next_close(&mut closing).await;
    }
    eventually("two of alice's tabs to leave the gateway", || async {
        gateway.metric("wsfleet_gateway_active_connections").await == 1.0
    })
    .await;
    // One open, limit two: one more gets in, and the next does not.
    let (mut second, _) = connect(&gateway.url("/"), &[("Authorization", &alice)])
        .await
        .unwrap();
    assert_eq!(round_trip(&mut second, "two").await, "two");
    assert_eq!(
        refused_status(&gateway.url("/"), &[("Authorization", &alice)]).await,
        429
    );
}
