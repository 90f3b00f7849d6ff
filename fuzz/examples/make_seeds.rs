//! Writes the committed seed corpora under `fuzz/seeds/<target>/` from the inputs of the
//! gateway's unit tests: `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds`.
//! Deterministic, so a rerun changes nothing unless this file does.

use std::path::Path;
use std::time::Duration;

use arbitrary::Unstructured;
use wsfleet_fuzz::{
    HS256_HEADER, HeadSetup, JwtKey, JwtMode, JwtSetup, ReadSizes, TrackerSetup, sign, sign_hs256,
    upgrade_request,
};
use wsfleet_config::{
    Compression, ForwardedClaim, GatewayConfig, JwtAlgorithm, JwtConfig, Rate, TlsConfig,
    TokenSource,
};
use wsfleet_gateway::wire::frame::{ControlFrame, MAX_PAYLOAD_LEN, apply_mask};
use wsfleet_gateway::relay::tracker::HEARTBEAT_PAYLOAD;

/// handshake.rs's test request.
const UPGRADE: &str = "GET /ws/room?access_token=abc&x=1 HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, bearer.t0k\r\n\r\n";
const ANSWER: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";
const KEY: Option<[u8; 4]> = Some([7, 1, 9, 3]);
/// 2100-01-01: tokens in the seeds stay unexpired.
const FAR_EXP: u64 = 4_102_444_800;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    for (name, bytes) in handshake_seeds() {
        write("handshake", &name, &bytes);
    }
    for (name, setup, bytes) in head_seeds() {
        write(
            "head_reader",
            &name,
            &encoded(&setup.encode(), &setup, &bytes),
        );
    }
    for (name, setup, bytes) in tracker_seeds() {
        write("tracker", &name, &encoded(&setup.encode(), &setup, &bytes));
    }
    for (name, text) in config_seeds() {
        write("config", &name, text.as_bytes());
    }
    for (name, setup, bytes) in jwt_seeds() {
        write("jwt", &name, &encoded(&setup.encode(), &setup, &bytes));
    }
    for (name, bytes) in proxy_header_seeds() {
        write("proxy_header", name, &bytes);
    }
}

/// `setup` then `bytes`, checked to read back as `setup` the way the targets read it.
fn encoded<'a, T>(prefix: &[u8], setup: &T, bytes: &[u8]) -> Vec<u8>
where
    T: arbitrary::Arbitrary<'a> + PartialEq + std::fmt::Debug,
{
    let mut input = prefix.to_vec();
    input.extend_from_slice(bytes);
    let leaked: &'a [u8] = Box::leak(input.clone().into_boxed_slice());
    let mut u = Unstructured::new(leaked);
    let decoded = T::arbitrary(&mut u).unwrap();
    assert_eq!(&decoded, setup, "the seed's setup does not read back");
    assert_eq!(u.take_rest(), bytes);
    input
}

fn handshake_seeds() -> Vec<(String, Vec<u8>)> {
    let mut many_headers = String::from("GET / HTTP/1.1\r\n");
    for n in 0..100 {
        many_headers.push_str(&format!("X-{n}: y\r\n"));
    }
    many_headers.push_str("\r\n");
    let seeds = [
        ("upgrade", UPGRADE.to_owned()),
        ("plain-get", "GET / HTTP/1.1\r\nHost: gw\r\n\r\n".to_owned()),
        ("post", UPGRADE.replacen("GET", "POST", 1)),
        (
            "version-8",
            UPGRADE.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
        ),
        (
            "short-key",
            UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25j"),
        ),
        (
            "lower-case-headers",
            UPGRADE
                .to_ascii_lowercase()
                .replacen("get", "GET", 1)
                .replacen("http/1.1", "HTTP/1.1", 1),
        ),
        ("too-many-headers", many_headers),
        (
            "token-sources",
            upgrade_request(
                "/ws?x=1&access_token=q&access_token=r",
                "Sec-WebSocket-Protocol: x.app.v1, bearer.abc, bearer.def\r\nAuthorization: Bearer h\r\nOrigin: https://chat.example.com\r\nX-Forwarded-For: 10.0.0.1, 192.0.2.7\r\n",
            ),
        ),
        ("answer-101", ANSWER.to_owned()),
        (
            "answer-101-minimal",
            "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: abc=\r\n\r\n".to_owned(),
        ),
        ("answer-403", "HTTP/1.1 403 Forbidden\r\n\r\n".to_owned()),
    ];
    seeds
        .into_iter()
        .map(|(name, text)| (name.to_owned(), text.into_bytes()))
        .collect()
}

fn head_seeds() -> Vec<(String, HeadSetup, Vec<u8>)> {
    let setup = |max_bytes: u16, read_sizes: ReadSizes| HeadSetup {
        max_bytes,
        read_sizes,
    };
    let mut with_frame = UPGRADE.as_bytes().to_vec();
    with_frame.extend_from_slice(&[0x81, 0x80]);
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(1100));
    vec![
        (
            "upgrade-one-read".into(),
            setup(4096, [0; 8]),
            with_frame.clone(),
        ),
        (
            "upgrade-small-reads".into(),
            setup(4096, [1, 2, 3, 5, 8, 13, 21, 34]),
            with_frame,
        ),
        ("too-large".into(), setup(1024, [200; 8]), huge.into_bytes()),
        (
            "closed-early".into(),
            setup(4096, [3; 8]),
            b"GET / HT".to_vec(),
        ),
        (
            "limit-at-the-blank-line".into(),
            setup(ANSWER.len() as u16, [1; 8]),
            ANSWER.as_bytes().to_vec(),
        ),
    ]
}

/// A frame as tracker.rs's tests build it (payload under 126 bytes).
fn frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut bytes = vec![
        first,
        payload.len() as u8 | if mask.is_some() { 0x80 } else { 0 },
    ];
    let mut body = payload.to_vec();
    if let Some(key) = mask {
        bytes.extend_from_slice(&key);
        apply_mask(&mut body, key, 0);
    }
    bytes.extend_from_slice(&body);
    bytes
}

fn tracker_seeds() -> Vec<(String, TrackerSetup, Vec<u8>)> {
    let setup = |from_client: bool, max_message_bytes: u32, read_sizes: ReadSizes| TrackerSetup {
        from_client,
        max_message_bytes,
        message_rate: None,
        stop_before_read: None,
        read_sizes,
    };
    let client = |max, sizes| setup(true, max, sizes);
    let upstream = |max, sizes| setup(false, max, sizes);
    let concat = |frames: &[Vec<u8>]| frames.concat();

    let mixed = concat(&[
        frame(0x81, b"hello", KEY),
        frame(0x02, b"part one", KEY),
        frame(0x89, b"client ping", KEY),
        frame(0x80, b"part two", KEY),
        frame(0xC1, b"compressed", KEY),
    ]);
    let heartbeat = concat(&[
        frame(0x8A, HEARTBEAT_PAYLOAD, KEY),
        frame(0x8A, b"app pong", KEY),
        frame(0x81, b"after", KEY),
    ]);
    let fragments = concat(&[
        frame(0x02, &[0; 100], None),
        frame(0x00, &[0; 100], None),
        frame(0x80, &[0; 100], None),
    ]);
    let close_after_violation = concat(&[
        frame(0x82, &[0; 120], KEY),
        frame(0x81, b"more", KEY),
        frame(0x88, &1000u16.to_be_bytes(), KEY),
    ]);
    let pings = concat(&[
        frame(0x89, b"ping", KEY),
        frame(0x8A, b"pong", KEY),
        frame(0x89, b"flood", KEY),
        frame(0x88, &1000u16.to_be_bytes(), KEY),
    ]);
    let mut top_bit = vec![0x82, 0xFF];
    top_bit.extend_from_slice(&(1u64 << 63).to_be_bytes());
    top_bit.extend_from_slice(&[7, 1, 9, 3]);
    let mut largest = vec![0x82, 127];
    largest.extend_from_slice(&MAX_PAYLOAD_LEN.to_be_bytes());
    let mut long = vec![0x82, 126, 0x10, 0x00];
    long.extend(std::iter::repeat_n(7u8, 600));
    long.extend(frame(0x81, b"next", None));

    let mut rate = client(1 << 20, [4; 8]);
    rate.message_rate = Some((1, 2));
    let mut stopping = client(1 << 20, [5; 8]);
    stopping.stop_before_read = Some(1);
    vec![
        (
            "mixed-client".into(),
            client(1 << 20, [1, 2, 3, 5, 8, 13, 0, 0]),
            mixed.clone(),
        ),
        (
            "mixed-client-one-read".into(),
            client(1 << 20, [0; 8]),
            mixed,
        ),
        (
            "heartbeat-pong".into(),
            client(1 << 20, [5; 8]),
            heartbeat.clone(),
        ),
        (
            "heartbeat-pong-upstream".into(),
            upstream(1 << 20, [3; 8]),
            { frame(0x8A, HEARTBEAT_PAYLOAD, None) },
        ),
        (
            "fragments-too-big".into(),
            upstream(250, [64; 8]),
            fragments,
        ),
        (
            "close-after-violation".into(),
            client(125, [7; 8]),
            close_after_violation.clone(),
        ),
        ("close-after-stop".into(), stopping, close_after_violation),
        ("rate".into(), rate, pings),
        (
            "protocol-unmasked".into(),
            client(1 << 20, [0; 8]),
            frame(0x81, b"unmasked", None),
        ),
        (
            "protocol-masked-upstream".into(),
            upstream(1 << 20, [0; 8]),
            frame(0x81, b"masked", KEY),
        ),
        (
            "protocol-continuation".into(),
            upstream(1 << 20, [0; 8]),
            frame(0x80, b"lone", None),
        ),
        (
            "protocol-reserved".into(),
            upstream(1 << 20, [0; 8]),
            frame(0x83, b"reserved", None),
        ),
        (
            "protocol-fragmented-ping".into(),
            upstream(1 << 20, [0; 8]),
            frame(0x09, b"ping", None),
        ),
        ("length-top-bit".into(), client(1 << 20, [3; 8]), top_bit),
        ("length-largest".into(), upstream(1 << 20, [0; 8]), largest),
        (
            "long-payload".into(),
            upstream(1 << 20, [200, 1, 0, 0, 0, 0, 0, 0]),
            long,
        ),
        (
            "gateway-close".into(),
            upstream(1 << 20, [2; 8]),
            ControlFrame::close(4000, "bye", None).as_bytes().to_vec(),
        ),
    ]
}

/// PROXY protocol headers as HAProxy and cloud load balancers send them, with the client's
/// first bytes after them, and the refusals of proxy_protocol.rs's tests.
fn proxy_header_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let v2 = |command: u8, family_protocol: u8, body: &[u8]| {
        let mut bytes = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        bytes.extend([0x20 | command, family_protocol]);
        bytes.extend(u16::try_from(body.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(UPGRADE.as_bytes());
        bytes
    };
    let ipv4 = [192, 0, 2, 7, 10, 0, 0, 1, 0xdc, 0x04, 0x01, 0xbb];
    // An AWS NLB's VPC endpoint TLV (type 0xEA, subtype 0x01).
    let aws_tlv = [&ipv4[..], &[0xea, 0, 9, 0x01], b"vpce-0a1"].concat();
    let mut ipv6 = [0u8; 36];
    ipv6[..16].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
    let v1 = |line: &str| [line.as_bytes(), UPGRADE.as_bytes()].concat();
    vec![
        ("v1-tcp4", v1("PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n")),
        (
            "v1-tcp6",
            v1("PROXY TCP6 2001:db8::7 2001:db8::1 65535 443\r\n"),
        ),
        ("v1-unknown", v1("PROXY UNKNOWN\r\n")),
        (
            "v1-bad-port",
            v1("PROXY TCP4 192.0.2.7 10.0.0.1 080 443\r\n"),
        ),
        ("v2-tcp4", v2(0x1, 0x11, &ipv4)),
        ("v2-tcp4-aws-tlv", v2(0x1, 0x11, &aws_tlv)),
        ("v2-tcp6", v2(0x1, 0x21, &ipv6)),
        ("v2-local", v2(0x0, 0x00, &[])),
        ("v2-unix", v2(0x1, 0x31, &[0; 216])),
        ("v2-udp", v2(0x1, 0x12, &ipv4)),
        ("missing", UPGRADE.as_bytes().to_vec()),
    ]
}

fn config_seeds() -> Vec<(String, String)> {
    const MINIMAL: &str = "upstream:\n  url: ws://127.0.0.1:9000/ws\n";
    let mut seeds: Vec<(String, String)> = vec![
        ("minimal".into(), MINIMAL.into()),
        (
            "burst-below-rate".into(),
            format!("{MINIMAL}limits:\n  connectionsPerIP: {{perSecond: 10, burst: 5}}\n"),
        ),
        (
            "mixed-key-families".into(),
            format!("{MINIMAL}auth:\n  jwt: {{algorithms: [HS256, RS256], keyFile: /k}}\n"),
        ),
        ("unknown-field".into(), format!("{MINIMAL}colour: blue\n")),
        (
            "bad-duration".into(),
            format!("{MINIMAL}drain: {{gracePeriod: soon}}\n"),
        ),
        (
            "bad-cidr".into(),
            format!("{MINIMAL}auth: {{ipAllow: [10.0.0.0/33]}}\n"),
        ),
        (
            "compression-off".into(),
            format!("{MINIMAL}compression: Off\n"),
        ),
        (
            "bad-scheme".into(),
            "upstream:\n  url: http://x:1/\n".into(),
        ),
    ];
    // Rendered the way the operator renders its ConfigMap.
    let mut rendered = GatewayConfig::for_upstream("wss://chat.default.svc:8080/ws");
    rendered.limits.messages_per_connection = Some(Rate {
        per_second: 100,
        burst: 200,
    });
    rendered.auth.ip_deny = vec!["10.1.0.0/16".parse().unwrap()];
    rendered.drain.grace_period = Duration::from_secs(90);
    seeds.push(("rendered-limits".into(), rendered.to_yaml()));

    let mut production = GatewayConfig::for_upstream("ws://chat-backend.default.svc:8080/ws");
    production.listen.path = "/ws".into();
    production.tls = Some(TlsConfig {
        cert_file: "/etc/wsfleet/tls/tls.crt".into(),
        key_file: "/etc/wsfleet/tls/tls.key".into(),
    });
    production.auth.jwt = Some(JwtConfig {
        issuer: Some("https://auth.example.com".into()),
        audiences: vec!["chat".into()],
        algorithms: vec![JwtAlgorithm::RS256],
        key_file: Some("/etc/wsfleet/jwt/public.pem".into()),
        jwks: None,
        token_from: vec![
            TokenSource::Header,
            TokenSource::Query,
            TokenSource::Subprotocol,
        ],
        query_parameter: "access_token".into(),
        forward_claims: vec![ForwardedClaim {
            claim: "sub".into(),
            header: "X-User-Id".into(),
        }],
        subject_claim: "sub".into(),
        leeway: Duration::from_millis(1500),
    });
    production.auth.allowed_origins = vec!["https://chat.example.com".into()];
    production.auth.ip_allow = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
    production.auth.ip_deny = vec!["192.0.2.0/24".parse().unwrap()];
    production.auth.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    production.limits.connections_per_ip = Some(Rate {
        per_second: 10,
        burst: 20,
    });
    production.limits.messages_per_connection = Some(Rate {
        per_second: 100,
        burst: 200,
    });
    production.compression = Compression::Disabled;
    production.heartbeat = None;
    seeds.push(("rendered-production".into(), production.to_yaml()));

    // The operator's resources are YAML of the same shape, but not gateway configs.
    seeds.push((
        "example-production-resource".into(),
        include_str!("../../examples/production.yaml").into(),
    ));
    seeds
}

fn jwt_seeds() -> Vec<(String, JwtSetup, Vec<u8>)> {
    let setup = |mode, key| JwtSetup { mode, key };
    let good = format!(
        r#"{{"sub":"alice","iss":"https://issuer.test","aud":"chat","exp":{FAR_EXP},"roles":["admin","dev"],"tenant":42}}"#
    );
    let token = sign_hs256(HS256_HEADER, good.as_bytes());
    let payload = token.split('.').nth(1).unwrap();
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    let tampered = format!("{}x", &token[..token.len() - 1]);
    let rsa_key = jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!(
        "../../gateway/tests/fixtures/jwt-rsa.key"
    ))
    .unwrap();
    let rsa_token = sign(
        br#"{"alg":"RS256","typ":"JWT"}"#,
        good.as_bytes(),
        &rsa_key,
        jsonwebtoken::Algorithm::RS256,
    );
    let with_header = |header: &str, claims: &str| {
        let mut bytes = header.as_bytes().to_vec();
        bytes.push(0);
        bytes.extend_from_slice(claims.as_bytes());
        bytes
    };
    let expired = good.replace(&FAR_EXP.to_string(), "1000");
    let not_yet = good.replace(r#""tenant":42"#, &format!(r#""nbf":{FAR_EXP}"#));
    let evil = good.replace(r#""alice""#, r#""evil\r\nX-Admin: 1""#);
    vec![
        (
            "token-valid".into(),
            setup(JwtMode::Token, JwtKey::HmacForwarding),
            token.clone().into(),
        ),
        (
            "token-check-only".into(),
            setup(JwtMode::Token, JwtKey::HmacCheckOnly),
            token.clone().into(),
        ),
        (
            "token-alg-none".into(),
            setup(JwtMode::Token, JwtKey::HmacForwarding),
            unsigned.into(),
        ),
        (
            "token-tampered".into(),
            setup(JwtMode::Token, JwtKey::HmacForwarding),
            tampered.into(),
        ),
        (
            "token-rsa".into(),
            setup(JwtMode::Token, JwtKey::Rsa),
            rsa_token.clone().into(),
        ),
        (
            "claims-good".into(),
            setup(JwtMode::SignedClaims, JwtKey::HmacForwarding),
            good.clone().into(),
        ),
        (
            "claims-expired".into(),
            setup(JwtMode::SignedClaims, JwtKey::HmacCheckOnly),
            expired.into(),
        ),
        (
            "claims-not-yet".into(),
            setup(JwtMode::SignedClaims, JwtKey::HmacForwarding),
            not_yet.into(),
        ),
        (
            "claims-header-break".into(),
            setup(JwtMode::SignedClaims, JwtKey::HmacForwarding),
            evil.into(),
        ),
        (
            "claims-alg-none-header".into(),
            setup(JwtMode::SignedClaims, JwtKey::HmacForwarding),
            with_header(r#"{"alg":"none","typ":"JWT"}"#, &good),
        ),
        (
            "claims-rsa-header".into(),
            setup(JwtMode::SignedClaims, JwtKey::Rsa),
            with_header(r#"{"alg":"RS256","kid":"k1"}"#, &good),
        ),
        (
            "request-all-sources".into(),
            setup(JwtMode::Request, JwtKey::HmacForwarding),
            format!("x=1&access_token={token}\0chat, bearer.{token}\0Bearer {token}").into(),
        ),
        (
            "request-query".into(),
            setup(JwtMode::Request, JwtKey::HmacCheckOnly),
            format!("access_token={token}").into(),
        ),
        (
            "request-header-rsa".into(),
            setup(JwtMode::Request, JwtKey::Rsa),
            format!("\0x.app.v1\0bearer {rsa_token}").into(),
        ),
    ]
}
