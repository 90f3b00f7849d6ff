//! Where the upstream lives. Its name is resolved at most every [`FRESH_FOR`] and the answer
//! is shared by every connection, instead of one DNS lookup (and, in a pod, one query per
//! search domain) for each handshake. New connections take the addresses in turn, so a
//! headless Service spreads them over its pods and each pod address gets its own range of
//! local ports; a connection that an address refuses tries the next one. Once there is an
//! answer, a stale one keeps serving while a background task looks the name up again, so a
//! slow or hanging DNS server delays no handshake.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an answer is used before the name is looked up again: the TTL cluster DNS gives
/// Service names by default.
pub(crate) const FRESH_FOR: Duration = Duration::from_secs(5);

/// How long one lookup may take before it counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves a host and port to addresses; replaceable so that tests can script answers.
pub(crate) type Lookup =
    fn(String, u16) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// The upstream's addresses, resolved when needed and handed out in turn.
#[derive(Debug)]
pub(crate) struct UpstreamAddresses {
    source: Source,
    /// Where the next connection starts in the address list.
    turn: AtomicUsize,
}

#[derive(Debug)]
enum Source {
    /// The URL names an IP address: nothing to resolve.
    Fixed(Arc<[SocketAddr]>),
    Named(Named),
}

#[derive(Debug)]
struct Named {
    name: Arc<Name>,
    /// Held by the connection that makes the first lookup, so that a burst of handshakes at
    /// start causes one lookup, not one each.
    first_lookup: tokio::sync::Mutex<()>,
}

/// What a background refresh shares with the connections.
#[derive(Debug)]
struct Name {
    host: String,
    port: u16,
    lookup: Lookup,
    answer: Mutex<Option<Answer>>,
    refreshing: AtomicBool,
}

#[derive(Debug, Clone)]
struct Answer {
    addresses: Arc<[SocketAddr]>,
    /// The last lookup, successful or not; the next one is due [`FRESH_FOR`] later.
    checked: Instant,
}

/// The addresses one new connection tries, in order.
#[derive(Debug)]
pub(crate) struct Candidates {
    addresses: Arc<[SocketAddr]>,
    first: usize,
}

impl Candidates {
    /// How many addresses there are to try; never zero.
    pub fn count(&self) -> usize {
        self.addresses.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        let count = self.addresses.len();
        (0..count).map(move |offset| self.addresses[(self.first + offset) % count])
    }
}

impl UpstreamAddresses {
    pub fn new(host: &str, port: u16) -> Self {
        Self::with_lookup(host, port, system_lookup)
    }

    pub fn with_lookup(host: &str, port: u16, lookup: Lookup) -> Self {
        let source = match host.parse::<IpAddr>() {
            Ok(ip) => Source::Fixed(Arc::new([SocketAddr::new(ip, port)])),
            Err(_) => Source::Named(Named {
                name: Arc::new(Name {
                    host: host.to_owned(),
                    port,
                    lookup,
                    answer: Mutex::new(None),
                    refreshing: AtomicBool::new(false),
                }),
                first_lookup: tokio::sync::Mutex::new(()),
            }),
        };
        Self {
            source,
            turn: AtomicUsize::new(0),
        }
    }

    /// The addresses for one new connection, starting with the next one in turn.
    pub async fn for_connection(&self) -> io::Result<Candidates> {
        let addresses = match &self.source {
            Source::Fixed(addresses) => addresses.clone(),
            Source::Named(named) => named.current().await?,
        };
        Ok(Candidates {
            first: self.turn.fetch_add(1, Ordering::Relaxed) % addresses.len(),
            addresses,
        })
    }
}

impl Named {
    async fn current(&self) -> io::Result<Arc<[SocketAddr]>> {
        if let Some(answer) = self.name.known() {
            if answer.checked.elapsed() >= FRESH_FOR
                && !self.name.refreshing.swap(true, Ordering::AcqRel)
            {
                let name = self.name.clone();
                tokio::spawn(async move {
                    // A failure is logged and keeps the old answer: nothing more to do here.
                    let _ = name.look_up().await;
                    name.refreshing.store(false, Ordering::Release);
                });
            }
            return Ok(answer.addresses);
        }
        // Nothing known yet: one connection looks the name up, the others wait for it.
        let _turn = self.first_lookup.lock().await;
        match self.name.known() {
            Some(answer) => Ok(answer.addresses),
            None => self.name.look_up().await,
        }
    }
}

impl Name {
    /// Looks the name up and records the answer; a failure keeps the last answer, if any.
    async fn look_up(&self) -> io::Result<Arc<[SocketAddr]>> {
        let looked_up =
            match tokio::time::timeout(LOOKUP_TIMEOUT, (self.lookup)(self.host.clone(), self.port))
                .await
            {
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the lookup timed out",
                )),
                Ok(Ok(found)) if found.is_empty() => {
                    Err(io::Error::other("the name has no addresses"))
                }
                Ok(other) => other,
            };
        let mut answer = self.answer.lock().unwrap_or_else(|p| p.into_inner());
        match (looked_up, answer.as_mut()) {
            (Ok(found), _) => {
                let addresses: Arc<[SocketAddr]> = found.into();
                *answer = Some(Answer {
                    addresses: addresses.clone(),
                    checked: Instant::now(),
                });
                Ok(addresses)
            }
            (Err(err), Some(stale)) => {
                // Keep the last answer rather than fail every connection while DNS is down.
                tracing::warn!(host = %self.host, error = %err,
                    "looking up the upstream failed; keeping its last known addresses");
                stale.checked = Instant::now();
                Ok(stale.addresses.clone())
            }
            (Err(err), None) => Err(io::Error::new(
                err.kind(),
                format!("looking up {}: {err}", self.host),
            )),
        }
    }

    fn known(&self) -> Option<Answer> {
        self.answer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn system_lookup(
    host: String,
    port: u16,
) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>> {
    Box::pin(async move {
        Ok(tokio::net::lookup_host((host.as_str(), port))
            .await?
            .collect())
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn order(candidates: &Candidates) -> Vec<SocketAddr> {
        candidates.iter().collect()
    }

    #[tokio::test]
    async fn an_ip_address_is_used_as_it_is() {
        let addresses = UpstreamAddresses::new("::1", 9000);
        let candidates = addresses.for_connection().await.unwrap();
        assert_eq!(order(&candidates), [addr("[::1]:9000")]);
    }

    #[tokio::test]
    async fn the_system_resolver_answers_for_localhost() {
        let addresses = UpstreamAddresses::new("localhost", 9000);
        let candidates = addresses.for_connection().await.unwrap();
        assert!(
            candidates.iter().all(|found| found.ip().is_loopback()),
            "{candidates:?}"
        );
    }

    static LOOKUPS: AtomicU32 = AtomicU32::new(0);

    /// Answers with three addresses the first time, then fails.
    fn three_then_failing(
        _host: String,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>> {
        let call = LOOKUPS.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if call == 0 {
                Ok((1..=3)
                    .map(|last| SocketAddr::from(([10, 0, 0, last], port)))
                    .collect())
            } else {
                Err(io::Error::other("no DNS"))
            }
        })
    }

    #[tokio::test]
    async fn connections_take_addresses_in_turn_from_one_lookup_and_keep_them_when_dns_fails() {
        let addresses = UpstreamAddresses::with_lookup("backend", 80, three_then_failing);
        let mut firsts = Vec::new();
        for _ in 0..4 {
            let candidates = addresses.for_connection().await.unwrap();
            assert_eq!(candidates.iter().count(), 3);
            firsts.push(candidates.iter().next().unwrap());
        }
        assert_eq!(
            firsts,
            ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.1:80"].map(addr)
        );
        assert_eq!(LOOKUPS.load(Ordering::SeqCst), 1, "one lookup while fresh");

        // Past its freshness the old answer serves at once while the name is looked up again
        // in the background; the failure keeps the old answer, and counts as a fresh check.
        let name = make_stale(&addresses);
        let candidates = addresses.for_connection().await.unwrap();
        assert_eq!(candidates.iter().count(), 3);
        refreshed(name).await;
        assert_eq!(LOOKUPS.load(Ordering::SeqCst), 2);
        let candidates = addresses.for_connection().await.unwrap();
        assert_eq!(candidates.iter().count(), 3);
        assert!(
            !name.refreshing.load(Ordering::Acquire),
            "no second refresh"
        );
        assert_eq!(LOOKUPS.load(Ordering::SeqCst), 2);
    }

    /// Ages the answer past [`FRESH_FOR`]; returns the name for inspection.
    fn make_stale(addresses: &UpstreamAddresses) -> &Name {
        let Source::Named(named) = &addresses.source else {
            unreachable!("a name")
        };
        named.name.answer.lock().unwrap().as_mut().unwrap().checked -= FRESH_FOR;
        &named.name
    }

    /// Lets the background refresh run to its end (its scripted lookups never wait).
    async fn refreshed(name: &Name) {
        for _ in 0..100 {
            if !name.refreshing.load(Ordering::Acquire) {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the refresh did not finish");
    }

    static HANGING_LOOKUPS: AtomicU32 = AtomicU32::new(0);

    /// Answers once, then never again: a DNS server that stopped answering.
    fn one_then_hanging(
        _host: String,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>> {
        let call = HANGING_LOOKUPS.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if call > 0 {
                std::future::pending::<()>().await;
            }
            Ok(vec![SocketAddr::from(([10, 0, 0, 9], port))])
        })
    }

    #[tokio::test]
    async fn a_hanging_lookup_delays_no_connection() {
        let addresses = UpstreamAddresses::with_lookup("backend", 80, one_then_hanging);
        addresses.for_connection().await.unwrap();
        let name = make_stale(&addresses);
        for _ in 0..3 {
            let candidates =
                tokio::time::timeout(Duration::from_secs(1), addresses.for_connection())
                    .await
                    .expect("the stale answer without waiting for DNS")
                    .unwrap();
            assert_eq!(order(&candidates), [addr("10.0.0.9:80")]);
            // The background refresh gets to run, and hangs.
            tokio::task::yield_now().await;
        }
        assert!(name.refreshing.load(Ordering::Acquire));
        assert_eq!(
            HANGING_LOOKUPS.load(Ordering::SeqCst),
            2,
            "one refresh at a time"
        );
    }

    fn no_addresses(
        _host: String,
        _port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    #[tokio::test]
    async fn a_name_without_addresses_is_an_error_naming_it() {
        let addresses = UpstreamAddresses::with_lookup("nowhere", 80, no_addresses);
        let err = addresses.for_connection().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "looking up nowhere: the name has no addresses"
        );
    }
}
