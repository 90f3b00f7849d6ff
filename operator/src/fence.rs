//! The write fence: only a replica whose leadership has not lapsed may change the cluster.
//!
//! Leadership lapses at a deadline the lease extends after each renewal, counted from when the
//! renewal was *sent*, and shorter than the lease duration other replicas wait for. A replica
//! that was paused (SIGSTOP, a stalled VM, a blocked network) resumes with timers and sockets
//! becoming ready in any order, so the controller may run a step before the lease notices the
//! deadline passed. The fence checks the clock on every mutating request instead, so such a
//! step fails before it reaches the apiserver.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request};
use tower::{Layer, Service};

/// When this replica's leadership lapses; shared by the lease and the controller's client.
#[derive(Clone, Debug, Default)]
pub struct Fence {
    open_until: Arc<Mutex<Option<Instant>>>,
}

impl Fence {
    /// Whether writes may go out now.
    pub fn is_open(&self) -> bool {
        self.open_until()
            .is_some_and(|until| Instant::now() < until)
    }

    /// The instant leadership lapses, if it was ever held.
    pub fn open_until(&self) -> Option<Instant> {
        *self.open_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps writes allowed until `until` (never moves the deadline back).
    pub fn extend_to(&self, until: Instant) {
        let mut open_until = self.open_until.lock().unwrap_or_else(|p| p.into_inner());
        if open_until.is_none_or(|current| current < until) {
            *open_until = Some(until);
        }
    }

    /// Stops writes at once, as when the lease is found held by another replica.
    pub fn close(&self) {
        *self.open_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// The error a fenced request fails with; it never reaches the apiserver.
#[derive(Debug, thiserror::Error)]
#[error("not sent: this replica's leadership has lapsed")]
pub struct LeadershipLapsed;

/// A tower layer for the kube client: mutating requests pass only while the fence is open.
#[derive(Clone, Debug)]
pub struct FenceLayer(pub Fence);

impl<S> Layer<S> for FenceLayer {
    type Service = Fenced<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Fenced {
            inner,
            fence: self.0.clone(),
        }
    }
}

/// See [`FenceLayer`].
#[derive(Clone, Debug)]
pub struct Fenced<S> {
    inner: S,
    fence: Fence,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> Service<Request<B>> for Fenced<S>
where
    S: Service<Request<B>>,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if is_mutating(request.method()) && !self.fence.is_open() {
            return Box::pin(std::future::ready(Err(LeadershipLapsed.into())));
        }
        let response = self.inner.call(request);
        Box::pin(async move { response.await.map_err(Into::into) })
    }
}

fn is_mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_fence_opens_until_its_deadline_and_never_moves_back() {
        let fence = Fence::default();
        assert!(!fence.is_open(), "a replica that never led may not write");
        let later = Instant::now() + Duration::from_secs(60);
        fence.extend_to(later);
        assert!(fence.is_open());
        fence.extend_to(Instant::now());
        assert_eq!(fence.open_until(), Some(later));
        fence.close();
        assert!(!fence.is_open());
        fence.extend_to(Instant::now() - Duration::from_millis(1));
        assert!(
            !fence.is_open(),
            "a deadline in the past keeps the fence shut"
        );
    }

    #[tokio::test]
    async fn a_lapsed_fence_refuses_writes_but_lets_reads_through() {
        let fence = Fence::default();
        let inner = tower::service_fn(|_: Request<()>| async { Ok::<_, BoxError>("sent") });
        let mut service = FenceLayer(fence.clone()).layer(inner);
        let request = |method: Method| Request::builder().method(method).body(()).unwrap();

        assert_eq!(service.call(request(Method::GET)).await.unwrap(), "sent");
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            let refused = service.call(request(method.clone())).await.unwrap_err();
            assert!(
                refused.downcast_ref::<LeadershipLapsed>().is_some(),
                "{method} went out: {refused}"
            );
        }
        fence.extend_to(Instant::now() + Duration::from_secs(60));
        assert_eq!(service.call(request(Method::PATCH)).await.unwrap(), "sent");
    }
}
