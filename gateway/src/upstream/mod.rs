//! The upstream: where it is (its resolved addresses) and the handshake that opens a
//! connection to it for each client.

pub mod addresses;
pub mod target;
