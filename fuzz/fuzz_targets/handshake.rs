//! The opening handshake's heads: a client's upgrade request and an upstream's 101 answer,
//! and the accessors the admission, JWT and upstream code read them with.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsfleet_gateway::wire::handshake::{UpgradeAnswer, UpgradeRequest};
use wsfleet_gateway::policy::jwt::{SUBPROTOCOL_PREFIX, offered_token_protocol};

fuzz_target!(|head: &[u8]| {
    if let Ok(request) = UpgradeRequest::parse(head) {
        check_request(&request);
    }
    if let Ok(answer) = UpgradeAnswer::parse(head) {
        check_answer(&answer);
    }
});

fn check_request(request: &UpgradeRequest) {
    assert!(!request.path.contains('?'), "the query stays in the path");
    assert_eq!(request.header("sec-websocket-version"), Some("13"));
    for (name, value) in &request.headers {
        // The first occurrence wins, by case-insensitive name, trimmed.
        let first = request
            .headers
            .iter()
            .find(|(other, _)| other.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim());
        assert_eq!(request.header(name), first);
        assert_eq!(request.header(&name.to_ascii_uppercase()), first);
        for entry in request.list(name) {
            assert!(!entry.is_empty() && !entry.contains(','));
            assert_eq!(entry, entry.trim());
        }
        assert!(!value.contains(['\r', '\n']), "a header value spans lines");
    }
    let pairs: Vec<&str> = request.query_pairs().collect();
    match &request.query {
        None => assert!(pairs.is_empty()),
        Some(query) => assert_eq!(&pairs.join("&"), query),
    }
    for pair in &pairs {
        if let Some((key, _)) = pair.split_once('=') {
            let first = pairs
                .iter()
                .filter_map(|pair| pair.split_once('='))
                .find(|(other, _)| other == &key)
                .map(|(_, value)| value);
            assert_eq!(request.query_parameter(key), first);
        }
    }
    if let Some(entry) = offered_token_protocol(request) {
        assert!(entry.starts_with(SUBPROTOCOL_PREFIX));
        assert!(request.list("sec-websocket-protocol").any(|e| e == entry));
    }
}

fn check_answer(answer: &UpgradeAnswer) {
    // What the client is sent must read back as what the upstream said.
    let rendered = answer.render();
    match UpgradeAnswer::parse(rendered.as_bytes()) {
        Ok(again) => assert_eq!(&again, answer, "rendered: {rendered:?}"),
        Err(err) => panic!("the relayed 101 does not parse ({err}): {rendered:?}"),
    }
}
