//! The process: the accept loop and the life of each connection, the admin endpoint, reloads
//! of watched files, the drain on SIGTERM, and the access log.

pub mod accept_backoff;
pub mod access_log;
pub mod admin;
pub mod connection;
pub mod drain;
pub mod reload;
pub mod server;
pub mod watched;
