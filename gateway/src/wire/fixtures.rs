//! Requests and addresses for the unit tests of the modules that read a handshake.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::wire::handshake::UpgradeRequest;

/// An upgrade request with `headers` (each line ending in CRLF) added.
pub(crate) fn request(headers: &str) -> UpgradeRequest {
    UpgradeRequest::parse(
        format!(
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
        )
        .as_bytes(),
    )
    .unwrap()
}

/// Networks from their text.
pub(crate) fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|net| net.parse().unwrap()).collect()
}

/// An address from its text.
pub(crate) fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}
