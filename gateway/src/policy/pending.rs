//! Handshakes not yet upgraded, counted per client address, so that one address holding many
//! idle or slow sockets (slowloris) cannot starve everyone else until `limits.handshakeTimeout`.

use std::net::IpAddr;

use crate::policy::live_counts::{LiveCount, LiveCounts};
use crate::policy::rate::rate_key;

/// Most handshakes one client address may have in progress at once. Generous for browsers,
/// which open a handful of sockets per host at most; fixed, not configurable.
pub const MAX_PENDING_HANDSHAKES_PER_IP: u32 = 32;

/// Pending handshakes per TCP peer address (IPv6 per /64, as for `limits.connectionsPerIP`).
/// Only addresses with a handshake in progress are held, so the table stays small.
#[derive(Debug, Default)]
pub(crate) struct PendingHandshakes {
    counts: LiveCounts<IpAddr>,
}

/// One handshake in progress; dropping it ends its count.
pub(crate) type PendingHandshake = LiveCount<IpAddr>;

impl PendingHandshakes {
    /// Counts a handshake from `peer` until the returned guard drops; `None` when the address
    /// already has [`MAX_PENDING_HANDSHAKES_PER_IP`] in progress.
    pub fn try_begin(&self, peer: IpAddr) -> Option<PendingHandshake> {
        self.counts
            .try_open(rate_key(peer), MAX_PENDING_HANDSHAKES_PER_IP)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn each_address_is_capped_and_released() {
        let pending = PendingHandshakes::default();
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let mut held: Vec<_> = (0..MAX_PENDING_HANDSHAKES_PER_IP)
            .map(|_| pending.try_begin(a).expect("under the cap"))
            .collect();
        assert!(pending.try_begin(a).is_none());
        assert!(
            pending.try_begin(b).is_some(),
            "other addresses are unaffected"
        );
        held.pop();
        assert!(
            pending.try_begin(a).is_some(),
            "a finished handshake frees its place"
        );
        // That addresses without handshakes are forgotten is live_counts' own test.
        drop(held);
    }
}
