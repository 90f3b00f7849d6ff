//! The names of the metric families every gateway exposes. Beyond the gateway, the operator's
//! autoscalers, the chart's dashboards and alerts, and users' queries read them: a rename is a
//! breaking change to all of them.

/// Access log lines dropped because the writer fell behind.
pub const ACCESS_LOG_DROPPED_TOTAL: &str = "wsfleet_gateway_access_log_dropped_total";
/// Client connections being relayed: what the operator's HPA and KEDA scale on.
pub const ACTIVE_CONNECTIONS: &str = "wsfleet_gateway_active_connections";
/// Frame bytes relayed, by direction.
pub const BYTES_TOTAL: &str = "wsfleet_gateway_bytes_total";
/// Expiry of the served certificate.
pub const CERTIFICATE_NOT_AFTER_SECONDS: &str = "wsfleet_gateway_certificate_not_after_seconds";
/// Closes by code and by who closed first.
pub const CLOSES_TOTAL: &str = "wsfleet_gateway_closes_total";
/// From accept to close.
pub const CONNECTION_DURATION_SECONDS: &str = "wsfleet_gateway_connection_duration_seconds";
/// From accept to the client's 101 answer.
pub const HANDSHAKE_DURATION_SECONDS: &str = "wsfleet_gateway_handshake_duration_seconds";
/// Each step of a successful handshake, by step: where a slow handshake spent its time.
pub const HANDSHAKE_STEP_DURATION_SECONDS: &str = "wsfleet_gateway_handshake_step_duration_seconds";
/// Client upgrade requests by outcome.
pub const HANDSHAKES_TOTAL: &str = "wsfleet_gateway_handshakes_total";
/// Fetches of the identity provider's JWK set, by outcome.
pub const JWKS_FETCHES_TOTAL: &str = "wsfleet_gateway_jwks_fetches_total";
/// Age of the provider keys in use.
pub const JWKS_KEY_AGE_SECONDS: &str = "wsfleet_gateway_jwks_key_age_seconds";
/// Usable keys in the last JWK set fetched.
pub const JWKS_KEYS: &str = "wsfleet_gateway_jwks_keys";
/// Messages relayed, by direction.
pub const MESSAGES_TOTAL: &str = "wsfleet_gateway_messages_total";
/// Refused handshakes by reason.
pub const REFUSALS_TOTAL: &str = "wsfleet_gateway_refusals_total";
/// Reloads of the config and the files it names, by outcome.
pub const RELOADS_TOTAL: &str = "wsfleet_gateway_reloads_total";
/// The upstream's connect and upgrade.
pub const UPSTREAM_CONNECT_DURATION_SECONDS: &str =
    "wsfleet_gateway_upstream_connect_duration_seconds";
/// Failed upstream handshakes, by kind.
pub const UPSTREAM_ERRORS_TOTAL: &str = "wsfleet_gateway_upstream_errors_total";
