//! Who may connect: IP lists, Origin and the subprotocols offered (the client's address
//! behind trusted proxies is [`crate::wire::forwarded`]'s).

use std::net::IpAddr;

use crate::wire::forwarded::forwarded_subprotocols;
use crate::wire::handshake::UpgradeRequest;
use crate::wire::refusal::Refusal;
use wsfleet_config::{AuthConfig, ValidationConfig};

/// Applies `ipDeny`, then `ipAllow` (empty: all allowed).
pub(crate) fn check_ip(ip: IpAddr, auth: &AuthConfig) -> Result<(), Refusal> {
    let denied = auth.ip_deny.iter().any(|net| net.contains(&ip));
    let allowed = auth.ip_allow.is_empty() || auth.ip_allow.iter().any(|net| net.contains(&ip));
    if denied || !allowed {
        Err(Refusal::IpDenied)
    } else {
        Ok(())
    }
}

/// Applies `allowedOrigins` (empty: any origin, or none).
pub(crate) fn check_origin(request: &UpgradeRequest, auth: &AuthConfig) -> Result<(), Refusal> {
    if auth.allowed_origins.is_empty() {
        return Ok(());
    }
    match request.header("origin") {
        Some(origin)
            if auth
                .allowed_origins
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin)) =>
        {
            Ok(())
        }
        _ => Err(Refusal::OriginDenied),
    }
}

/// Applies `validation.allowedSubprotocols` (empty: any offer, or none): the client must offer
/// one of them. A client offering none at all is refused too, since the fleet then speaks
/// only the listed protocols.
pub(crate) fn check_subprotocols(
    request: &UpgradeRequest,
    validation: &ValidationConfig,
) -> Result<(), Refusal> {
    let allowed = &validation.allowed_subprotocols;
    if allowed.is_empty() || forwarded_subprotocols(request, allowed).next().is_some() {
        Ok(())
    } else {
        Err(Refusal::SubprotocolDenied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::fixtures::{ip, nets, request};

    #[test]
    fn deny_wins_over_allow() {
        let auth = AuthConfig {
            ip_allow: nets(&["10.0.0.0/8"]),
            ip_deny: nets(&["10.6.0.0/16"]),
            ..AuthConfig::default()
        };
        assert_eq!(check_ip(ip("10.1.2.3"), &auth), Ok(()));
        assert_eq!(check_ip(ip("10.6.2.3"), &auth), Err(Refusal::IpDenied));
        assert_eq!(check_ip(ip("192.0.2.1"), &auth), Err(Refusal::IpDenied));
        assert_eq!(check_ip(ip("192.0.2.1"), &AuthConfig::default()), Ok(()));
    }

    #[test]
    fn an_offer_must_name_an_allowed_subprotocol() {
        let validation = ValidationConfig {
            allowed_subprotocols: vec!["chat.v2".into(), "chat.v1".into()],
            ..ValidationConfig::default()
        };
        let offer = request("Sec-WebSocket-Protocol: x, chat.v1, bearer.t, chat.v2\r\n");
        assert_eq!(check_subprotocols(&offer, &validation), Ok(()));
        assert_eq!(
            forwarded_subprotocols(&offer, &validation.allowed_subprotocols).collect::<Vec<_>>(),
            ["chat.v1", "chat.v2"]
        );
        for refused in [
            "",
            "Sec-WebSocket-Protocol: x, CHAT.V1\r\n",
            "Sec-WebSocket-Protocol: bearer.chat.v1\r\n",
        ] {
            assert_eq!(
                check_subprotocols(&request(refused), &validation),
                Err(Refusal::SubprotocolDenied),
                "{refused}"
            );
        }
        let any = ValidationConfig::default();
        assert_eq!(check_subprotocols(&request(""), &any), Ok(()));
        assert_eq!(
            forwarded_subprotocols(&offer, &any.allowed_subprotocols).collect::<Vec<_>>(),
            ["x", "chat.v1", "chat.v2"]
        );
    }

    #[test]
    fn origins_match_exactly() {
        let auth = AuthConfig {
            allowed_origins: vec!["https://chat.example.com".into()],
            ..AuthConfig::default()
        };
        assert_eq!(
            check_origin(&request("Origin: https://chat.example.com\r\n"), &auth),
            Ok(())
        );
        assert_eq!(
            check_origin(&request("Origin: https://chat.example.com.evil\r\n"), &auth),
            Err(Refusal::OriginDenied)
        );
        assert_eq!(
            check_origin(&request(""), &auth),
            Err(Refusal::OriginDenied)
        );
        assert_eq!(check_origin(&request(""), &AuthConfig::default()), Ok(()));
    }
}
