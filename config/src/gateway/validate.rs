//! Loading, rendering and the rules: each section's validation, naming the field and the value.

use super::*;

impl GatewayConfig {
    /// A config with defaults everywhere, forwarding to `upstream_url`.
    pub fn for_upstream(upstream_url: impl Into<String>) -> Self {
        Self {
            listen: ListenConfig::default(),
            metrics: MetricsConfig::default(),
            tls: None,
            upstream: UpstreamConfig {
                url: upstream_url.into(),
                connect_timeout: default_connect_timeout(),
                handshake_timeout: default_upstream_handshake_timeout(),
                ca_file: None,
            },
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            heartbeat: default_heartbeat(),
            compression: Compression::default(),
            validation: ValidationConfig::default(),
            drain: DrainConfig::default(),
            tcp: TcpConfig::default(),
            access_log: AccessLogConfig::default(),
        }
    }

    /// Parses YAML and validates the result.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_yaml::from_str(text).map_err(|err| {
            let field = err
                .location()
                .map(|at| format!("line {} column {}", at.line(), at.column()))
                .unwrap_or_else(|| "config".to_owned());
            ConfigError::new(field, err.to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a YAML file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading gateway config {}", path.display()))?;
        Self::from_yaml(&text).with_context(|| format!("invalid gateway config {}", path.display()))
    }

    /// Renders the config as YAML, the form the operator writes into a ConfigMap.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("gateway config always serializes")
    }

    /// Checks what the types alone cannot; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.listen.path.starts_with('/') {
            return Err(ConfigError::new(
                "listen.path",
                format!("must start with '/', got {:?}", self.listen.path),
            ));
        }
        // Requests with such a path are refused, so this one could never match.
        if !crate::path::is_unambiguous(&self.listen.path) {
            return Err(ConfigError::new(
                "listen.path",
                format!(
                    "must not hold '.' or '..' segments, '%2f', '%5c' or '\\', got {:?}",
                    self.listen.path
                ),
            ));
        }
        if let Some(proxy_protocol) = &self.listen.proxy_protocol {
            if proxy_protocol.trusted_proxies.is_empty() {
                return Err(ConfigError::new(
                    "listen.proxyProtocol.trustedProxies",
                    "must name at least one network: the load balancers that send the header",
                ));
            }
            positive(
                "listen.proxyProtocol.headerTimeout",
                proxy_protocol.header_timeout,
            )?;
        }
        if self.listen.address == self.metrics.address {
            return Err(ConfigError::new(
                "metrics.address",
                format!("must differ from listen.address {}", self.listen.address),
            ));
        }
        self.upstream.validate()?;
        if let Some(jwt) = &self.auth.jwt {
            jwt.validate()?;
        }
        for (index, origin) in self.auth.allowed_origins.iter().enumerate() {
            if origin.is_empty() || origin.ends_with('/') {
                return Err(ConfigError::new(
                    format!("auth.allowedOrigins[{index}]"),
                    format!(
                        "must be scheme://host[:port] without a trailing slash, got {origin:?}"
                    ),
                ));
            }
        }
        self.limits.validate()?;
        if self.limits.connections_per_subject.is_some() && self.auth.jwt.is_none() {
            return Err(ConfigError::new(
                "limits.connectionsPerSubject",
                "needs auth.jwt: the subject is a claim of a verified token",
            ));
        }
        if self.validation.utf8 && self.compression != Compression::Disabled {
            return Err(ConfigError::new(
                "validation.utf8",
                "needs compression: Disabled; the gateway measures compressed messages \
                 without inflating them, so it cannot check their text",
            ));
        }
        for (index, name) in self.validation.allowed_subprotocols.iter().enumerate() {
            if !is_token(name) || name.starts_with(crate::TOKEN_SUBPROTOCOL_PREFIX) {
                return Err(ConfigError::new(
                    format!("validation.allowedSubprotocols[{index}]"),
                    format!(
                        "must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~) not starting with 'bearer.', got {name:?}"
                    ),
                ));
            }
        }
        if let Some(heartbeat) = &self.heartbeat {
            positive("heartbeat.interval", heartbeat.interval)?;
            positive("heartbeat.timeout", heartbeat.timeout)?;
        }
        self.tcp.validate()?;
        if self.access_log.sample_one_in == 0 {
            return Err(ConfigError::new(
                "accessLog.sampleOneIn",
                "must be at least 1 (1: every connection)",
            ));
        }
        Ok(())
    }
}

impl AccessLogConfig {
    pub(super) fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            sample_one_in: default_sample_one_in(),
            refusals: default_log_refusals(),
        }
    }
}

impl TcpConfig {
    pub(super) fn is_default(&self) -> bool {
        *self == Self::default()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(keepalive) = &self.keepalive {
            // Linux takes whole seconds, from 1 to 32767.
            for (field, value) in [
                ("tcp.keepalive.idle", keepalive.idle),
                ("tcp.keepalive.interval", keepalive.interval),
            ] {
                if value.subsec_nanos() != 0 || !(1..=32767).contains(&value.as_secs()) {
                    return Err(ConfigError::new(
                        field,
                        format!(
                            "must be whole seconds from 1s to 32767s, got {}",
                            duration_text::format(value)
                        ),
                    ));
                }
            }
            if !(1..=127).contains(&keepalive.count) {
                return Err(ConfigError::new(
                    "tcp.keepalive.count",
                    format!("must be between 1 and 127, got {}", keepalive.count),
                ));
            }
        }
        if !(1..=MAX_LISTEN_BACKLOG).contains(&self.listen_backlog) {
            return Err(ConfigError::new(
                "tcp.listenBacklog",
                format!(
                    "must be between 1 and {MAX_LISTEN_BACKLOG}, got {}",
                    self.listen_backlog
                ),
            ));
        }
        for (field, bytes) in [
            ("tcp.sendBufferBytes", self.send_buffer_bytes),
            ("tcp.receiveBufferBytes", self.receive_buffer_bytes),
        ] {
            if let Some(bytes) = bytes
                && !(4096..=(64 << 20)).contains(&bytes)
            {
                return Err(ConfigError::new(
                    field,
                    format!("must be between 4096 and 67108864, got {bytes}"),
                ));
            }
        }
        Ok(())
    }
}

impl UpstreamConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let rest = self
            .url
            .strip_prefix("ws://")
            .or_else(|| self.url.strip_prefix("wss://"))
            .ok_or_else(|| {
                ConfigError::new(
                    "upstream.url",
                    format!("scheme must be ws:// or wss://, got {:?}", self.url),
                )
            })?;
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if authority.is_empty() {
            return Err(ConfigError::new(
                "upstream.url",
                format!("has no host: {:?}", self.url),
            ));
        }
        positive("upstream.connectTimeout", self.connect_timeout)?;
        positive("upstream.handshakeTimeout", self.handshake_timeout)
    }
}

impl JwtConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let families: BTreeSet<KeyFamily> =
            self.algorithms.iter().map(|alg| alg.key_family()).collect();
        match families.len() {
            0 => Err(ConfigError::new(
                "auth.jwt.algorithms",
                "must name at least one algorithm",
            )),
            1 => Ok(()),
            _ => Err(ConfigError::new(
                "auth.jwt.algorithms",
                format!(
                    "must share one key type (HMAC, RSA or EC) to rule out algorithm confusion, got {:?}",
                    self.algorithms
                ),
            )),
        }?;
        match (&self.key_file, &self.jwks) {
            (Some(_), None) => {}
            (None, Some(jwks)) => {
                if families.contains(&KeyFamily::Hmac) {
                    return Err(ConfigError::new(
                        "auth.jwt.algorithms",
                        "must be RSA or EC algorithms with jwks: an identity provider publishes \
                         public keys, never HMAC secrets",
                    ));
                }
                jwks.validate(self.issuer.as_deref())?;
            }
            _ => {
                return Err(ConfigError::new(
                    "auth.jwt",
                    "set exactly one of keyFile and jwks",
                ));
            }
        }
        if self.token_from.is_empty() {
            return Err(ConfigError::new(
                "auth.jwt.tokenFrom",
                "must name at least one source",
            ));
        }
        if self.query_parameter.is_empty() {
            return Err(ConfigError::new(
                "auth.jwt.queryParameter",
                "must not be empty",
            ));
        }
        if self.subject_claim.is_empty() {
            return Err(ConfigError::new(
                "auth.jwt.subjectClaim",
                "must not be empty",
            ));
        }
        for (index, forwarded) in self.forward_claims.iter().enumerate() {
            let valid_header = !forwarded.header.is_empty()
                && forwarded
                    .header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !valid_header {
                return Err(ConfigError::new(
                    format!("auth.jwt.forwardClaims[{index}].header"),
                    format!(
                        "must be letters, digits and '-', got {:?}",
                        forwarded.header
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl JwksConfig {
    fn validate(&self, issuer: Option<&str>) -> Result<(), ConfigError> {
        match (&self.url, self.discovery) {
            (Some(url), false) => http_url("auth.jwt.jwks.url", url)?,
            (None, true) => {
                let issuer = issuer.ok_or_else(|| {
                    ConfigError::new(
                        "auth.jwt.issuer",
                        "must be set with jwks.discovery: the provider's keys are found through it",
                    )
                })?;
                http_url("auth.jwt.issuer", issuer)?;
            }
            _ => {
                return Err(ConfigError::new(
                    "auth.jwt.jwks",
                    "set exactly one of url and discovery: true",
                ));
            }
        }
        positive("auth.jwt.jwks.refreshInterval", self.refresh_interval)?;
        positive(
            "auth.jwt.jwks.minRefreshInterval",
            self.min_refresh_interval,
        )?;
        if self.min_refresh_interval > self.refresh_interval {
            return Err(ConfigError::new(
                "auth.jwt.jwks.minRefreshInterval",
                format!(
                    "must not exceed refreshInterval ({}), got {}",
                    duration_text::format(self.refresh_interval),
                    duration_text::format(self.min_refresh_interval)
                ),
            ));
        }
        Ok(())
    }
}

/// Checks that `url` is `http://` or `https://` with a host.
pub(super) fn http_url(field: &str, url: &str) -> Result<(), ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            ConfigError::new(
                field,
                format!("scheme must be http:// or https://, got {url:?}"),
            )
        })?;
    if rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .is_empty()
    {
        return Err(ConfigError::new(field, format!("has no host: {url:?}")));
    }
    Ok(())
}

impl LimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(ConfigError::new(
                "limits.maxConnections",
                "must be at least 1",
            ));
        }
        if let Some(rate) = &self.connections_per_ip {
            rate.validate("limits.connectionsPerIP")?;
        }
        if !(1..=100_000).contains(&self.pending_handshakes_per_ip) {
            return Err(ConfigError::new(
                "limits.pendingHandshakesPerIP",
                format!(
                    "must be between 1 and 100000, got {}",
                    self.pending_handshakes_per_ip
                ),
            ));
        }
        if self.connections_per_subject == Some(0) {
            return Err(ConfigError::new(
                "limits.connectionsPerSubject",
                "must be at least 1",
            ));
        }
        if let Some(rate) = &self.messages_per_connection {
            rate.validate("limits.messagesPerConnection")?;
        }
        if !(125..=(1 << 30)).contains(&self.max_message_bytes) {
            return Err(ConfigError::new(
                "limits.maxMessageBytes",
                format!(
                    "must be between 125 and 1073741824, got {}",
                    self.max_message_bytes
                ),
            ));
        }
        if !(1024..=(1 << 20)).contains(&self.max_header_bytes) {
            return Err(ConfigError::new(
                "limits.maxHeaderBytes",
                format!(
                    "must be between 1024 and 1048576, got {}",
                    self.max_header_bytes
                ),
            ));
        }
        positive("limits.handshakeTimeout", self.handshake_timeout)
    }
}

impl Rate {
    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.per_second == 0 {
            return Err(ConfigError::new(
                format!("{field}.perSecond"),
                "must be at least 1",
            ));
        }
        if self.burst < self.per_second {
            return Err(ConfigError::new(
                format!("{field}.burst"),
                format!(
                    "must be at least perSecond ({}), got {}",
                    self.per_second, self.burst
                ),
            ));
        }
        Ok(())
    }
}

/// An HTTP token (RFC 9110 section 5.6.2), the form of a subprotocol name.
pub(super) fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(super) fn positive(field: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::new(field, "must be longer than 0s"));
    }
    Ok(())
}
