//! The one place that decides how each refused upgrade is answered and counted.

/// Why a client's upgrade request was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `listen.proxyProtocol` is on and the peer is not one of its `trustedProxies`.
    ProxyUntrusted,
    /// `listen.proxyProtocol` is on and the connection did not start with a PROXY header.
    ProxyHeaderMissing,
    /// The PROXY header broke the specification.
    ProxyHeaderInvalid,
    /// The PROXY header did not arrive within `listen.proxyProtocol.headerTimeout`.
    ProxyHeaderTimeout,
    /// The request head did not arrive within `limits.handshakeTimeout`.
    HandshakeTimeout,
    /// The client address already has `limits.pendingHandshakesPerIP` handshakes in progress.
    TooManyPendingHandshakes,
    /// The request head exceeded `limits.maxHeaderBytes`.
    HeadersTooLarge,
    /// Not an HTTP/1.1 WebSocket upgrade.
    BadRequest,
    /// A WebSocket version other than 13.
    UnsupportedVersion,
    /// A path with dot segments or encoded separators (see [`wsfleet_config::path`]).
    UnsafePath,
    /// The path is outside `listen.path`.
    NotFound,
    /// The client address is denied or not allowed.
    IpDenied,
    /// The `Origin` header is not in `auth.allowedOrigins`.
    OriginDenied,
    /// No subprotocol offered is in `validation.allowedSubprotocols`.
    SubprotocolDenied,
    /// No token where `auth.jwt.tokenFrom` looks.
    TokenMissing,
    /// The token failed signature, expiry, issuer or audience checks.
    TokenInvalid,
    /// The client address exceeded `limits.connectionsPerIP`.
    RateLimited,
    /// The token's subject already holds `limits.connectionsPerSubject` connections.
    SubjectLimited,
    /// `limits.maxConnections` are already open.
    TooManyConnections,
    /// The gateway is draining before shutdown.
    Draining,
    /// The upstream could not be reached or refused the upgrade.
    UpstreamUnavailable,
    /// The upstream did not connect or answer in time.
    UpstreamTimeout,
}

impl Refusal {
    /// Every refusal, in metric order.
    pub const ALL: [Self; 22] = [
        Self::ProxyUntrusted,
        Self::ProxyHeaderMissing,
        Self::ProxyHeaderInvalid,
        Self::ProxyHeaderTimeout,
        Self::HandshakeTimeout,
        Self::TooManyPendingHandshakes,
        Self::HeadersTooLarge,
        Self::BadRequest,
        Self::UnsupportedVersion,
        Self::UnsafePath,
        Self::NotFound,
        Self::IpDenied,
        Self::OriginDenied,
        Self::SubprotocolDenied,
        Self::TokenMissing,
        Self::TokenInvalid,
        Self::RateLimited,
        Self::SubjectLimited,
        Self::TooManyConnections,
        Self::Draining,
        Self::UpstreamUnavailable,
        Self::UpstreamTimeout,
    ];

    /// The HTTP status answered to the client.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Self::HandshakeTimeout | Self::ProxyHeaderTimeout => (408, "Request Timeout"),
            Self::HeadersTooLarge => (431, "Request Header Fields Too Large"),
            Self::BadRequest
            | Self::UnsafePath
            | Self::SubprotocolDenied
            | Self::ProxyHeaderMissing
            | Self::ProxyHeaderInvalid => (400, "Bad Request"),
            Self::UnsupportedVersion => (426, "Upgrade Required"),
            Self::NotFound => (404, "Not Found"),
            Self::ProxyUntrusted | Self::IpDenied | Self::OriginDenied => (403, "Forbidden"),
            Self::TokenMissing | Self::TokenInvalid => (401, "Unauthorized"),
            Self::RateLimited | Self::SubjectLimited | Self::TooManyPendingHandshakes => {
                (429, "Too Many Requests")
            }
            Self::TooManyConnections | Self::Draining => (503, "Service Unavailable"),
            Self::UpstreamUnavailable => (502, "Bad Gateway"),
            Self::UpstreamTimeout => (504, "Gateway Timeout"),
        }
    }

    /// The `reason` label of `wsfleet_gateway_refusals_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::ProxyUntrusted => "proxy_untrusted",
            Self::ProxyHeaderMissing => "proxy_header_missing",
            Self::ProxyHeaderInvalid => "proxy_header_invalid",
            Self::ProxyHeaderTimeout => "proxy_header_timeout",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::TooManyPendingHandshakes => "pending_handshakes",
            Self::HeadersTooLarge => "headers_too_large",
            Self::BadRequest => "bad_request",
            Self::UnsupportedVersion => "unsupported_version",
            Self::UnsafePath => "unsafe_path",
            Self::NotFound => "not_found",
            Self::IpDenied => "ip_denied",
            Self::OriginDenied => "origin_denied",
            Self::SubprotocolDenied => "subprotocol_denied",
            Self::TokenMissing => "token_missing",
            Self::TokenInvalid => "token_invalid",
            Self::RateLimited => "rate_limited",
            Self::SubjectLimited => "subject_limited",
            Self::TooManyConnections => "max_connections",
            Self::Draining => "draining",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
        }
    }

    /// True when the upstream, not the client, caused the refusal.
    pub fn is_upstream_failure(self) -> bool {
        matches!(self, Self::UpstreamUnavailable | Self::UpstreamTimeout)
    }

    /// The complete HTTP response.
    pub fn response(self) -> String {
        let (code, text) = self.status();
        let extra = match self {
            Self::TokenMissing | Self::TokenInvalid => "WWW-Authenticate: Bearer\r\n",
            // RFC 6455 section 4.4: name the version the gateway speaks.
            Self::UnsupportedVersion => "Sec-WebSocket-Version: 13\r\n",
            _ => "",
        };
        let body = format!("{text}: {}\n", self.reason());
        format!(
            "HTTP/1.1 {code} {text}\r\n{extra}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_order_matches_the_enum() {
        for (index, refusal) in Refusal::ALL.into_iter().enumerate() {
            assert_eq!(refusal as usize, index);
        }
    }

    #[test]
    fn responses_carry_status_and_length() {
        let response = Refusal::RateLimited.response();
        assert!(response.starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
        assert!(
            Refusal::SubjectLimited
                .response()
                .starts_with("HTTP/1.1 429 Too Many Requests\r\n")
        );
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(
            Refusal::TokenInvalid
                .response()
                .contains("WWW-Authenticate: Bearer")
        );
    }
}
