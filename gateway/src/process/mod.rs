//! The process: the accept loop and the life of each connection, the admin endpoint and
//! reloads of watched files.

pub(crate) mod admin;
pub(crate) mod connection;
pub(crate) mod reload;
pub mod server;
pub(crate) mod watched;
