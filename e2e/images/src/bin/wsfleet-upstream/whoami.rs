//! The answer to a `whoami` message: which pod answered, which peer it saw, and the headers the
//! gateway forwarded. Built once per connection, at the upgrade, since none of it changes.

use std::io;
use std::net::IpAddr;

use bytes::Bytes;
use hyper::Request;
use serde_json::{Map, Value, json};

/// The message that asks for the answer.
pub const QUESTION: &[u8] = b"whoami";

/// The request headers the answer reports, lower-cased; an absent one is reported as null.
const REPORTED_HEADERS: [&str; 4] = [
    "x-user-id",
    "x-forwarded-for",
    "origin",
    "sec-websocket-protocol",
];

/// The JSON answer for a connection from `peer` (the TCP peer: the gateway pod that forwarded
/// it) upgraded by `request`. "path" is the request target, query included.
pub fn answer<B>(pod: &str, peer: IpAddr, request: &Request<B>) -> Bytes {
    let mut headers: Map<String, Value> = REPORTED_HEADERS
        .iter()
        .map(|&name| (name.to_owned(), header_value(request, name)))
        .collect();
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| request.uri().path(), |target| target.as_str());
    headers.insert("path".to_owned(), Value::from(path));
    let answer = json!({ "pod": pod, "peer": peer.to_string(), "headers": headers });
    Bytes::from(answer.to_string())
}

/// A header's value; repeated headers are joined with ", " as HTTP allows.
fn header_value<B>(request: &Request<B>, name: &str) -> Value {
    let values: Vec<String> = request
        .headers()
        .get_all(name)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect();
    if values.is_empty() {
        Value::Null
    } else {
        Value::from(values.join(", "))
    }
}

/// The kernel's host name: in a pod, the pod's name unless the spec overrides it.
pub fn hostname() -> io::Result<String> {
    Ok(nix::unistd::gethostname()?.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_pod_peer_headers_and_path() {
        let request = Request::get("/chat/room?user=1")
            .header("X-User-Id", "alice")
            .header("x-forwarded-for", "10.1.0.7")
            .header("x-forwarded-for", "10.2.0.9")
            .header("Origin", "https://app.example")
            .header("Authorization", "Bearer secret")
            .body(())
            .unwrap();
        let answer: Value =
            serde_json::from_slice(&answer("echo-0", "10.244.0.5".parse().unwrap(), &request))
                .unwrap();
        assert_eq!(
            answer,
            json!({
                "pod": "echo-0",
                "peer": "10.244.0.5",
                "headers": {
                    "x-user-id": "alice",
                    "x-forwarded-for": "10.1.0.7, 10.2.0.9",
                    "origin": "https://app.example",
                    "sec-websocket-protocol": null,
                    "path": "/chat/room?user=1",
                },
            })
        );
    }
}
