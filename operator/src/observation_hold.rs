//! The fleets whose status waits for the Deployment controller, and whether it is working.
//!
//! A fleet's status is held back while the Deployment controller has yet to observe the
//! operator's latest apply of its Deployment ([`crate::status::awaiting_deployment_controller`]):
//! written earlier, it would report the previous generation's progress and be superseded at
//! once. A fixed grace bounds the wait, so that a controller manager that is down cannot keep
//! the status from being written. After a burst of new fleets, though, the controller manager
//! works through its backlog at its own request rate for minutes: 1,000 fleets kept it busy
//! for three. A grace of seconds then expired for most fleets, and each wrote a status that
//! its Deployment's observation superseded within the same burst, with a reconcile for each.
//!
//! So the wait lasts as long as the controller visibly works: it observed one of the
//! operator's Deployments within the grace. When it stops for that long, every held fleet is
//! woken at once and writes its status.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;
use tokio::time::Instant;

use crate::crd::WebSocketService;

/// How long the Deployment controller may go without observing any of the operator's
/// Deployments before it counts as stopped, and how long a fleet's status waits for it when
/// it was not seen working.
pub const OBSERVATION_GRACE: Duration = Duration::from_secs(10);
/// How often a stop is looked for while fleets are held.
const STOP_CHECK: Duration = Duration::from_secs(5);

/// A fleet as the controller's queue names it.
pub type Fleet = ObjectRef<DeserializeGuard<WebSocketService>>;

/// Shared by the Deployment watch, which reports observations, and the reconciles, which hold
/// and release fleets.
#[derive(Clone, Default)]
pub struct ObservationHold {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    last_observation: Mutex<Option<Instant>>,
    held: Mutex<HashSet<Fleet>>,
}

impl ObservationHold {
    /// Notes a Deployment event: one whose status has caught up with its generation shows the
    /// Deployment controller at work.
    pub fn saw(&self, deployment: &Deployment) {
        let observed = deployment
            .status
            .as_ref()
            .and_then(|status| status.observed_generation);
        if observed.is_some() && observed >= deployment.metadata.generation {
            *self
                .inner
                .last_observation
                .lock()
                .expect("observation lock") = Some(Instant::now());
        }
    }

    /// Whether the Deployment controller observed one of the operator's Deployments within
    /// the grace.
    pub fn controller_working(&self) -> bool {
        self.inner
            .last_observation
            .lock()
            .expect("observation lock")
            .is_some_and(|last| last.elapsed() < OBSERVATION_GRACE)
    }

    /// Holds `fleet`'s status back, while the controller works, until its Deployment's
    /// observation wakes it or the controller stops. (Within the grace a fleet needs no
    /// holding: its requeue at the grace's end comes soon enough.)
    pub fn hold(&self, fleet: Fleet) {
        self.inner.held.lock().expect("hold lock").insert(fleet);
    }

    /// `fleet`'s status no longer waits.
    pub fn release(&self, fleet: &Fleet) {
        self.inner.held.lock().expect("hold lock").remove(fleet);
    }

    #[cfg(test)]
    pub fn holds(&self, fleet: &Fleet) -> bool {
        self.inner.held.lock().expect("hold lock").contains(fleet)
    }

    /// The held fleets, each once, whenever the Deployment controller stops working: their
    /// reconciles then find it stopped and write the status.
    pub fn stopped(&self) -> impl Stream<Item = Fleet> + Send + 'static {
        stream::unfold(self.clone(), |hold| async move {
            loop {
                tokio::time::sleep(STOP_CHECK).await;
                if !hold.controller_working() {
                    let released = std::mem::take(&mut *hold.inner.held.lock().expect("hold lock"));
                    if !released.is_empty() {
                        return Some((released, hold));
                    }
                }
            }
        })
        .flat_map(stream::iter)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn fleet(name: &str) -> Fleet {
        ObjectRef::new(name).within("team-a")
    }

    fn deployment(generation: i64, observed: Option<i64>) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(generation),
                ..ObjectMeta::default()
            },
            status: Some(DeploymentStatus {
                observed_generation: observed,
                ..DeploymentStatus::default()
            }),
            ..Deployment::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_an_observed_generation_shows_the_controller_working() {
        let hold = ObservationHold::default();
        assert!(!hold.controller_working(), "never seen");
        hold.saw(&deployment(2, Some(1)));
        hold.saw(&deployment(2, None));
        assert!(
            !hold.controller_working(),
            "an unobserved apply is the operator's own"
        );
        hold.saw(&deployment(2, Some(2)));
        assert!(hold.controller_working());
        tokio::time::advance(OBSERVATION_GRACE).await;
        assert!(!hold.controller_working(), "not seen for the whole grace");
    }

    #[tokio::test(start_paused = true)]
    async fn held_fleets_are_woken_once_when_the_controller_stops_and_not_before() {
        let hold = ObservationHold::default();
        hold.hold(fleet("chat"));
        hold.hold(fleet("feed"));
        hold.hold(fleet("games"));
        hold.release(&fleet("feed"));
        let mut stopped = Box::pin(hold.stopped());

        // A minute of a busy controller: an observation every 3 s keeps every fleet held.
        let busy = async {
            for _ in 0..20 {
                hold.saw(&deployment(1, Some(1)));
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
        };
        tokio::select! {
            woken = stopped.next() => panic!("woken while the controller works: {woken:?}"),
            () = busy => {}
        }

        let started = Instant::now();
        let mut woken = vec![
            stopped.next().await.unwrap().name,
            stopped.next().await.unwrap().name,
        ];
        woken.sort();
        assert_eq!(woken, ["chat", "games"], "the released fleet stays asleep");
        assert!(started.elapsed() <= OBSERVATION_GRACE + STOP_CHECK);
        assert!(
            tokio::time::timeout(Duration::from_secs(60), stopped.next())
                .await
                .is_err(),
            "each held fleet is woken once"
        );
    }
}
