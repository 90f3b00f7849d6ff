//! The wire: WebSocket frames and handshakes, permessage-deflate, UTF-8, the PROXY header,
//! TLS and TCP. Parsing and encoding only; no policy decides anything here, and nothing here
//! depends on the rest of the crate.

pub mod deflate;
pub mod forwarded;
pub mod frame;
pub mod handshake;
pub mod proxy_protocol;
pub mod refusal;
pub mod socket_options;
pub mod tls;
pub mod transport;
pub mod utf8;
