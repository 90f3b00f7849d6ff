//! Handshakes not yet upgraded, counted per client address, so that one address holding many
//! idle or slow sockets (slowloris) cannot starve everyone else until `limits.handshakeTimeout`.

use std::net::IpAddr;

use crate::policy::live_counts::{LiveCount, LiveCounts};
use crate::policy::rate::rate_key;

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
    /// already has `cap` (`limits.pendingHandshakesPerIP`) in progress.
    pub fn try_begin(&self, peer: IpAddr, cap: u32) -> Option<PendingHandshake> {
        self.counts.try_open(rate_key(peer), cap)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const CAP: u32 = 32;

    #[test]
    fn each_address_is_capped_and_released() {
        let pending = PendingHandshakes::default();
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let mut held: Vec<_> = (0..CAP)
            .map(|_| pending.try_begin(a, CAP).expect("under the cap"))
            .collect();
        assert!(pending.try_begin(a, CAP).is_none());
        assert!(
            pending.try_begin(a, CAP + 1).is_some(),
            "a cap raised by a reload applies at once"
        );
        assert!(
            pending.try_begin(b, CAP).is_some(),
            "other addresses are unaffected"
        );
        held.pop();
        held.pop();
        assert!(
            pending.try_begin(a, CAP).is_some(),
            "a finished handshake frees its place"
        );
        // That addresses without handshakes are forgotten is live_counts' own test.
        drop(held);
    }
}
