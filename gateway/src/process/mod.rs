//! The process: the accept loop and the life of each connection, the admin endpoint, reloads
//! of watched files, the drain on SIGTERM, and the access log.

pub(crate) mod accept_backoff;
pub(crate) mod access_log;
pub(crate) mod admin;
pub(crate) mod connection;
pub(crate) mod drain;
pub(crate) mod reload;
pub mod server;
pub(crate) mod watched;
