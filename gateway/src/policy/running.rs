//! The running policy: a validated config with everything derived from it (JWT keys, upstream
//! target, TLS roots). A reload builds a new one and swaps it in whole, once it can serve
//! (see [`crate::policy::staged`]).

use std::sync::Arc;

use crate::policy::jwks::JwksKeys;
use crate::policy::jwt::JwtVerifier;
use crate::telemetry::metrics::Metrics;
use crate::upstream::target::UpstreamTarget;
use wsfleet_config::GatewayConfig;

/// What every new connection is checked and routed by.
#[derive(Debug)]
pub(crate) struct Policy {
    pub config: GatewayConfig,
    pub jwt: Option<JwtVerifier>,
    pub upstream: UpstreamTarget,
}

impl Policy {
    /// Loads the files the config names; any problem leaves the caller's old policy in place.
    /// Keys fetched from an identity provider carry over from `previous` when its source is
    /// unchanged.
    pub fn build(
        config: GatewayConfig,
        previous: Option<&Policy>,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let previous_jwt = previous.and_then(|policy| policy.jwt.as_ref());
        // The subject is collected only for what needs it: decoding the claims costs.
        let needs_subject =
            config.limits.connections_per_subject.is_some() || config.access_log.enabled;
        let jwt = config
            .auth
            .jwt
            .as_ref()
            .map(|jwt| {
                let verifier = JwtVerifier::load(jwt, previous_jwt, metrics)?;
                Ok::<_, anyhow::Error>(if needs_subject {
                    verifier.collecting_subject(&jwt.subject_claim)
                } else {
                    verifier
                })
            })
            .transpose()?;
        let upstream = UpstreamTarget::from_config(&config.upstream, config.tcp)?;
        Ok(Self {
            config,
            jwt,
            upstream,
        })
    }

    /// The identity provider's keys this policy checks tokens with, if any.
    pub fn provider_keys(&self) -> Option<&Arc<JwksKeys>> {
        self.jwt.as_ref().and_then(JwtVerifier::provider_keys)
    }

    /// The client path beyond `listen.path`, or `None` when the path is outside it.
    pub fn path_suffix<'a>(&self, path: &'a str) -> Option<&'a str> {
        let prefix = self.config.listen.path.trim_end_matches('/');
        let rest = path.strip_prefix(prefix)?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_whole_segments() {
        let mut config = GatewayConfig::for_upstream("ws://127.0.0.1:1/");
        config.listen.path = "/ws".into();
        let policy = Policy::build(config, None, &Arc::default()).unwrap();
        assert_eq!(policy.path_suffix("/ws"), Some(""));
        assert_eq!(policy.path_suffix("/ws/room/1"), Some("/room/1"));
        assert_eq!(policy.path_suffix("/wsx"), None);
        assert_eq!(policy.path_suffix("/other"), None);

        let root = Policy::build(
            GatewayConfig::for_upstream("ws://127.0.0.1:1/"),
            None,
            &Arc::default(),
        )
        .unwrap();
        assert_eq!(root.path_suffix("/anything"), Some("/anything"));
        assert_eq!(root.path_suffix("/"), Some("/"));
    }
}
