//! The wire: WebSocket frames and handshakes, permessage-deflate, UTF-8, the PROXY header,
//! TLS and TCP. Parsing and encoding only; no policy decides anything here, and nothing here
//! depends on the rest of the crate.

pub mod deflate;
#[cfg(test)]
pub(crate) mod fixtures;
pub(crate) mod forwarded;
pub mod frame;
pub mod handshake;
pub mod proxy_protocol;
pub mod refusal;
pub(crate) mod socket_options;
pub(crate) mod tls;
pub(crate) mod tls_stream;
pub(crate) mod transport;
pub(crate) mod utf8;
