//! Who the client is behind trusted proxies (the `X-Forwarded-For` chain), and what the
//! upstream is told: the forwarded chain and the subprotocols it may see.

use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::wire::handshake::UpgradeRequest;
use wsfleet_config::TOKEN_SUBPROTOCOL_PREFIX;

/// Where a request comes from, as far as the gateway can vouch: the client, then every
/// trusted proxy it passed through, ending with the gateway's peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientChain {
    client: IpAddr,
    /// The trusted proxies after the client, nearest last; empty (and unallocated) for a
    /// client that reached the gateway directly.
    proxies: Vec<IpAddr>,
}

impl ClientChain {
    /// The peer, or the nearest untrusted hop of `X-Forwarded-For` when the peer is a
    /// trusted proxy. Hops before that one are the client's own claims and are dropped.
    pub fn of(peer: IpAddr, request: &UpgradeRequest, trusted_proxies: &[IpNet]) -> Self {
        let peer = canonical(peer);
        let trusted = |ip: &IpAddr| is_trusted_proxy(*ip, trusted_proxies);
        if !trusted(&peer) {
            return Self {
                client: peer,
                proxies: Vec::new(),
            };
        }
        let mut hops: Vec<IpAddr> = request
            .list("x-forwarded-for")
            .filter_map(|hop| hop.parse().ok().map(canonical))
            .collect();
        hops.push(peer);
        // Walk from the nearest hop: each trusted proxy vouches for the one before it.
        let at = hops.iter().rposition(|hop| !trusted(hop)).unwrap_or(0);
        let client = hops[at];
        hops.drain(..=at);
        Self {
            client,
            proxies: hops,
        }
    }

    pub fn client(&self) -> IpAddr {
        self.client
    }

    /// Appends the `X-Forwarded-For` value sent upstream.
    pub fn write_forwarded_for(&self, out: &mut String) {
        // Writing to a String cannot fail.
        let _ = write!(out, "{}", self.client);
        for proxy in &self.proxies {
            let _ = write!(out, ", {proxy}");
        }
    }
}

/// The offered subprotocols the upstream may see and select: never a `bearer.<token>` entry,
/// and only those in `allowed` unless it is empty.
pub(crate) fn forwarded_subprotocols<'a>(
    request: &'a UpgradeRequest,
    allowed: &'a [String],
) -> impl Iterator<Item = &'a str> + 'a {
    request
        .list("sec-websocket-protocol")
        .filter(|entry| !entry.starts_with(TOKEN_SUBPROTOCOL_PREFIX))
        .filter(|entry| allowed.is_empty() || allowed.iter().any(|name| name == entry))
}

/// IPv4 clients of a dual-stack listener arrive as `::ffff:a.b.c.d`; lists name them as IPv4.
/// Whether `ip` is one of `auth.trustedProxies`, IPv4-mapped IPv6 read as IPv4.
pub(crate) fn is_trusted_proxy(ip: IpAddr, trusted_proxies: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted_proxies.iter().any(|net| net.contains(&ip))
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::fixtures::{ip, nets, request};

    fn chain(peer: &str, request: &UpgradeRequest, trusted: &[IpNet]) -> (IpAddr, String) {
        let chain = ClientChain::of(ip(peer), request, trusted);
        let mut forwarded_for = String::new();
        chain.write_forwarded_for(&mut forwarded_for);
        (chain.client(), forwarded_for)
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let spoofed = request("X-Forwarded-For: 1.2.3.4\r\n");
        assert_eq!(
            chain("203.0.113.9", &spoofed, &nets(&["10.0.0.0/8"])),
            (ip("203.0.113.9"), "203.0.113.9".to_owned())
        );
        assert_eq!(
            chain("10.0.0.5", &spoofed, &[]),
            (ip("10.0.0.5"), "10.0.0.5".to_owned())
        );
    }

    #[test]
    fn forwarded_for_is_walked_through_trusted_hops() {
        let trusted = nets(&["10.0.0.0/8"]);
        let spoofed_first = request("X-Forwarded-For: 6.6.6.6, 198.51.100.7, 10.1.1.1\r\n");
        assert_eq!(
            chain("10.0.0.5", &spoofed_first, &trusted),
            (
                ip("198.51.100.7"),
                "198.51.100.7, 10.1.1.1, 10.0.0.5".to_owned()
            )
        );
        let split = request("X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 198.51.100.8\r\n");
        assert_eq!(
            chain("10.0.0.5", &split, &trusted),
            (ip("198.51.100.8"), "198.51.100.8, 10.0.0.5".to_owned())
        );
        let all_trusted = request("X-Forwarded-For: 10.9.9.9, 10.1.1.1\r\n");
        assert_eq!(
            chain("10.0.0.5", &all_trusted, &trusted),
            (ip("10.9.9.9"), "10.9.9.9, 10.1.1.1, 10.0.0.5".to_owned())
        );
        let mapped = request("X-Forwarded-For: 198.51.100.9\r\n");
        assert_eq!(
            chain("::ffff:10.0.0.5", &mapped, &trusted),
            (ip("198.51.100.9"), "198.51.100.9, 10.0.0.5".to_owned()),
            "a dual-stack listener sees IPv4 peers as mapped IPv6"
        );
        let missing = request("");
        assert_eq!(
            chain("10.0.0.5", &missing, &trusted),
            (ip("10.0.0.5"), "10.0.0.5".to_owned())
        );
    }
}
