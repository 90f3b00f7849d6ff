//! JWT extraction and verification: arbitrary tokens, arbitrary claims signed with the test
//! key (so the claim checks and claim headers run), and tokens carried in upgrade requests.
#![no_main]

use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use wsfleet_fuzz::{
    FORWARDED_CLAIMS, HS256_HEADER, JwtKey, JwtMode, JwtSetup, QUERY_PARAMETER, sign_hs256,
    split_input, upgrade_request, verifier,
};
use wsfleet_gateway::wire::handshake::UpgradeRequest;
use wsfleet_gateway::policy::jwt::{SUBPROTOCOL_PREFIX, TokenError, offered_token_protocol};

fuzz_target!(|input: &[u8]| {
    let Some((setup, bytes)) = split_input::<JwtSetup>(input) else {
        return;
    };
    match setup.mode {
        JwtMode::Token => verify(setup.key, &String::from_utf8_lossy(bytes)),
        JwtMode::SignedClaims => {
            let (header, claims) = match bytes.iter().position(|&b| b == 0) {
                Some(at) => (&bytes[..at], &bytes[at + 1..]),
                None => (HS256_HEADER, bytes),
            };
            verify(setup.key, &sign_hs256(header, claims));
        }
        JwtMode::Request => request(setup.key, bytes),
    }
});

fn verify(key: JwtKey, token: &str) {
    let Ok(verified) = verifier(key).verify(token) else {
        return;
    };
    let headers = verified.claim_headers;
    // Accepted: signed with an algorithm the verifier accepts, and only configured claims
    // come out, as values that cannot break a header line.
    let alg = jsonwebtoken::decode_header(token)
        .expect("an accepted token has a header")
        .alg;
    let accepted: &[Algorithm] = match key {
        JwtKey::HmacForwarding | JwtKey::HmacCheckOnly => &[Algorithm::HS256],
        JwtKey::Rsa => &[Algorithm::RS256, Algorithm::PS256],
    };
    assert!(
        accepted.contains(&alg),
        "accepted a token signed with {alg:?}"
    );
    if key == JwtKey::HmacCheckOnly {
        assert!(headers.is_empty());
    }
    for (name, value) in &headers {
        assert!(FORWARDED_CLAIMS.iter().any(|(_, header)| header == name));
        assert!(
            !value.bytes().any(|b| b != b'\t' && (b < b' ' || b == 0x7f)),
            "claim header {name} carries a control character: {value:?}"
        );
    }
}

fn request(key: JwtKey, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let mut parts = text.splitn(3, '\0');
    let query = parts.next().unwrap_or_default();
    let mut extra = String::new();
    if let Some(protocols) = parts.next().filter(|value| !value.is_empty()) {
        extra.push_str(&format!("Sec-WebSocket-Protocol: {protocols}\r\n"));
    }
    if let Some(authorization) = parts.next().filter(|value| !value.is_empty()) {
        extra.push_str(&format!("Authorization: {authorization}\r\n"));
    }
    let Ok(request) =
        UpgradeRequest::parse(upgrade_request(&format!("/ws?{query}"), &extra).as_bytes())
    else {
        return;
    };
    let verifier = verifier(key);
    assert_eq!(verifier.token_query_parameter(), Some(QUERY_PARAMETER));

    // The verifier's sources in order: subprotocol, query, header.
    let offered = offered_token_protocol(&request);
    if let Some(entry) = offered {
        assert!(entry.starts_with(SUBPROTOCOL_PREFIX));
    }
    let from_query = request.query_parameter(QUERY_PARAMETER);
    let from_header = request.header("authorization").and_then(|value| {
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    let token = offered
        .and_then(|entry| entry.strip_prefix(SUBPROTOCOL_PREFIX))
        .or(from_query)
        .or(from_header);
    match (verifier.verify_request(&request), token) {
        (Err(TokenError::Missing), None) => {}
        (Err(TokenError::Missing), Some(token)) => panic!("token {token:?} was not found"),
        (_, None) => panic!("verified a token from nowhere"),
        (result, Some(token)) => {
            assert_eq!(
                result.is_ok(),
                verifier.verify(token).is_ok(),
                "the request's token is not {token:?}"
            );
            verify(key, token);
        }
    }
}
