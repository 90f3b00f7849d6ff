//! Token buckets: per connection for messages, and a per-IP table for new connections whose
//! size stays bounded by the addresses seen within one refill period.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use wsfleet_config::Rate;

/// `burst` tokens, refilled at `perSecond`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: f64::from(rate.burst),
            updated: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// True once the bucket has refilled completely: it then says nothing a fresh one would not.
    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut probe = *self;
        probe.refill(rate, now);
        probe.tokens >= f64::from(rate.burst)
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * f64::from(rate.per_second)).min(f64::from(rate.burst));
        self.updated = now;
    }
}

/// New-connection buckets per client address; IPv6 clients count per /64, the block a single
/// host is usually given, so that walking through its addresses buys nothing.
///
/// Full buckets are dropped whenever the table has doubled since the last sweep, so its size
/// follows the number of addresses that connected within one refill period, not all ever seen.
#[derive(Debug, Default)]
pub(crate) struct PerIpRate {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    buckets: HashMap<IpAddr, TokenBucket>,
    sweep_at_len: usize,
}

/// The table is never swept below this size: a sweep costs a pass over every entry.
const MIN_SWEEP_LEN: usize = 1024;

impl PerIpRate {
    /// Takes a token for `ip`; false means the address is over its rate.
    pub fn try_admit(&self, ip: IpAddr, rate: Rate, now: Instant) -> bool {
        let key = rate_key(ip);
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if table.buckets.len() >= table.sweep_at_len.max(MIN_SWEEP_LEN) {
            table.buckets.retain(|_, bucket| !bucket.is_full(rate, now));
            table.sweep_at_len = table.buckets.len() * 2;
        }
        table
            .buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::full(rate, now))
            .try_take(rate, now)
    }

    /// Addresses currently tracked.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .buckets
            .len()
    }
}

/// The address a bucket belongs to: IPv4 as is, IPv6 cut to its /64.
pub(crate) fn rate_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(network.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;

    const RATE: Rate = Rate {
        per_second: 10,
        burst: 20,
    };

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::full(RATE, start);
        assert!((0..20).all(|_| bucket.try_take(RATE, start)));
        assert!(!bucket.try_take(RATE, start));
        let later = start + Duration::from_millis(100);
        assert!(bucket.try_take(RATE, later));
        assert!(!bucket.try_take(RATE, later));
    }

    #[test]
    fn each_address_has_its_own_bucket() {
        let table = PerIpRate::default();
        let now = Instant::now();
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        assert!((0..20).all(|_| table.try_admit(a, RATE, now)));
        assert!(!table.try_admit(a, RATE, now));
        assert!(table.try_admit(b, RATE, now));
    }

    #[test]
    fn ipv6_addresses_share_their_64() {
        let table = PerIpRate::default();
        let now = Instant::now();
        let rate = Rate {
            per_second: 1,
            burst: 2,
        };
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(table.try_admit(ip("2001:db8:1:2::1"), rate, now));
        assert!(table.try_admit(ip("2001:db8:1:2::ffff"), rate, now));
        assert!(!table.try_admit(ip("2001:db8:1:2:abcd::9"), rate, now));
        assert!(table.try_admit(ip("2001:db8:1:3::1"), rate, now));
    }

    #[test]
    fn table_of_refilled_addresses_is_pruned() {
        let table = PerIpRate::default();
        let start = Instant::now();
        for n in 0..5000u32 {
            table.try_admit(IpAddr::V4(Ipv4Addr::from(n)), RATE, start);
        }
        assert!(table.tracked() >= 4000, "recent addresses are kept");
        // Two seconds later every bucket has refilled; new addresses trigger sweeps.
        let later = start + Duration::from_secs(2);
        for n in 0..5000u32 {
            table.try_admit(IpAddr::V4(Ipv4Addr::from(1_000_000 + n)), RATE, later);
        }
        assert!(
            table.tracked() < 9000,
            "refilled buckets must be dropped, tracked {}",
            table.tracked()
        );
        // Steady churn of one-off addresses stays bounded.
        for round in 0..20u32 {
            let now = later + Duration::from_secs(2 * u64::from(round + 1));
            for n in 0..5000u32 {
                table.try_admit(
                    IpAddr::V4(Ipv4Addr::from(2_000_000 + round * 5000 + n)),
                    RATE,
                    now,
                );
            }
        }
        assert!(table.tracked() <= 20_000, "tracked {}", table.tracked());
    }
}
