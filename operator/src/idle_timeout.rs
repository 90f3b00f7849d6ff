//! The idle timeout that the fleet's Service annotations declare to a cloud load balancer, and
//! whether the gateway's heartbeat keeps a quiet WebSocket inside it. A load balancer cuts a
//! connection idle for longer without a close frame; the heartbeat's ping is the traffic that
//! prevents it, so the longest quiet gap it leaves (the interval, plus the one tick a ping may
//! come late) must be shorter. Pure: the reconcile turns the verdict into the
//! `HeartbeatWithinIdleTimeout` condition.

use std::collections::BTreeMap;
use std::time::Duration;

use wsfleet_config::{HEARTBEAT_TICK, duration_text};

use crate::conditions::{HEARTBEAT_WITHIN_IDLE_TIMEOUT, Observed};

/// AWS (in-tree controller, Classic ELB): whole seconds.
const AWS_CONNECTION_IDLE_TIMEOUT: &str =
    "service.beta.kubernetes.io/aws-load-balancer-connection-idle-timeout";
/// AWS Load Balancer Controller (NLB): one annotation per listener, `<PROTOCOL>-<port>`, whose
/// value is a list of `key=value` listener attributes.
const AWS_LISTENER_ATTRIBUTES_PREFIX: &str =
    "service.beta.kubernetes.io/aws-load-balancer-listener-attributes.";
const AWS_TCP_IDLE_TIMEOUT_ATTRIBUTE: &str = "tcp.idle_timeout.seconds";
/// Azure: whole minutes.
const AZURE_TCP_IDLE_TIMEOUT: &str =
    "service.beta.kubernetes.io/azure-load-balancer-tcp-idle-timeout";

/// An idle timeout found in one annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Declared {
    annotation: String,
    timeout: Duration,
}

/// What the annotations say, when they name an idle timeout at all.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    /// The shortest of the declared timeouts.
    Shortest(Declared),
    /// An idle-timeout annotation whose value is not a whole number.
    Unreadable { annotation: String, value: String },
}

/// The condition for a fleet whose Service carries `annotations` and whose gateways ping a
/// quiet client after `heartbeat_interval`; `None` when no annotation declares an idle timeout.
pub fn heartbeat_condition(
    annotations: Option<&BTreeMap<String, String>>,
    heartbeat_interval: Duration,
) -> Option<Observed> {
    let heartbeat = duration_text::format(heartbeat_interval);
    Some(match find(annotations?)? {
        Found::Unreadable { annotation, value } => Observed::new(
            HEARTBEAT_WITHIN_IDLE_TIMEOUT,
            false,
            "IdleTimeoutUnreadable",
            format!(
                "service.annotations[{annotation}] is {value:?}, not a whole number; \
                 the load balancer's idle timeout is unknown, so heartbeat.interval \
                 {heartbeat} cannot be checked against it"
            ),
        ),
        Found::Shortest(Declared {
            annotation,
            timeout,
        }) => {
            let tick = duration_text::format(HEARTBEAT_TICK);
            let below = duration_text::format(timeout.saturating_sub(HEARTBEAT_TICK));
            let limit = duration_text::format(timeout);
            // A ping comes up to one tick after the interval, so the interval must leave that.
            if heartbeat_interval + HEARTBEAT_TICK < timeout {
                Observed::new(
                    HEARTBEAT_WITHIN_IDLE_TIMEOUT,
                    true,
                    "HeartbeatShorter",
                    format!(
                        "heartbeat.interval {heartbeat}, plus up to {tick} before the ping \
                         goes out, is shorter than the {limit} idle timeout of \
                         service.annotations[{annotation}]"
                    ),
                )
            } else {
                Observed::new(
                    HEARTBEAT_WITHIN_IDLE_TIMEOUT,
                    false,
                    "HeartbeatExceedsIdleTimeout",
                    format!(
                        "heartbeat.interval {heartbeat}, plus up to {tick} before the ping \
                         goes out, is not shorter than the {limit} idle timeout of \
                         service.annotations[{annotation}]: the load balancer will cut quiet \
                         connections without a close frame; set heartbeat.interval below \
                         {below}"
                    ),
                )
            }
        }
    })
}

/// The shortest idle timeout declared, or the first unreadable declaration.
fn find(annotations: &BTreeMap<String, String>) -> Option<Found> {
    let mut shortest: Option<Declared> = None;
    for (annotation, value) in annotations {
        let Some(declared) = declared_by(annotation, value) else {
            continue;
        };
        let Some(timeout) = declared else {
            return Some(Found::Unreadable {
                annotation: annotation.clone(),
                value: value.clone(),
            });
        };
        if shortest.as_ref().is_none_or(|s| timeout < s.timeout) {
            shortest = Some(Declared {
                annotation: annotation.clone(),
                timeout,
            });
        }
    }
    shortest.map(Found::Shortest)
}

/// `None`: the annotation declares no idle timeout; `Some(None)`: it does, unreadably.
fn declared_by(annotation: &str, value: &str) -> Option<Option<Duration>> {
    let whole = |text: &str| text.trim().parse::<u64>().ok();
    match annotation {
        AWS_CONNECTION_IDLE_TIMEOUT => Some(whole(value).map(Duration::from_secs)),
        AZURE_TCP_IDLE_TIMEOUT => {
            Some(whole(value).map(|minutes| Duration::from_secs(minutes * 60)))
        }
        _ if annotation.starts_with(AWS_LISTENER_ATTRIBUTES_PREFIX) => {
            let seconds = value.split(',').find_map(|pair| {
                let (key, seconds) = pair.split_once('=')?;
                (key.trim() == AWS_TCP_IDLE_TIMEOUT_ATTRIBUTE).then_some(seconds)
            })?;
            Some(whole(seconds).map(Duration::from_secs))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn verdict(pairs: &[(&str, &str)], heartbeat_secs: u64) -> Option<(bool, String, String)> {
        heartbeat_condition(
            Some(&annotations(pairs)),
            Duration::from_secs(heartbeat_secs),
        )
        .map(|observed| (observed.status, observed.reason, observed.message))
    }

    #[test]
    fn no_idle_timeout_annotation_means_no_condition() {
        assert_eq!(heartbeat_condition(None, Duration::from_secs(30)), None);
        let unrelated = [(
            "service.beta.kubernetes.io/aws-load-balancer-type",
            "external",
        )];
        assert_eq!(verdict(&unrelated, 30), None);
        // A listener attribute other than the idle timeout declares nothing.
        let other_attribute = [(
            "service.beta.kubernetes.io/aws-load-balancer-listener-attributes.TCP-443",
            "tcp.something_else=1",
        )];
        assert_eq!(verdict(&other_attribute, 30), None);
    }

    #[test]
    fn a_heartbeat_shorter_than_the_timeout_is_fine() {
        let (ok, reason, message) = verdict(&[(AWS_CONNECTION_IDLE_TIMEOUT, "60")], 30).unwrap();
        assert!(ok);
        assert_eq!(reason, "HeartbeatShorter");
        assert!(
            message.contains(
                "30s, plus up to 1s before the ping goes out, is shorter than the 1m idle timeout"
            ),
            "{message}"
        );
    }

    #[test]
    fn a_heartbeat_as_long_as_the_timeout_is_refused_by_the_condition() {
        let (ok, reason, message) = verdict(&[(AWS_CONNECTION_IDLE_TIMEOUT, "60")], 60).unwrap();
        assert!(!ok);
        assert_eq!(reason, "HeartbeatExceedsIdleTimeout");
        assert!(
            message.contains(&format!(
                "service.annotations[{AWS_CONNECTION_IDLE_TIMEOUT}]"
            )),
            "{message}"
        );
        assert!(
            message.contains("set heartbeat.interval below 59s"),
            "{message}"
        );
    }

    #[test]
    fn nlb_listener_attributes_and_azure_minutes_are_read() {
        let nlb = [(
            "service.beta.kubernetes.io/aws-load-balancer-listener-attributes.TCP-443",
            "tcp.idle_timeout.seconds=120, other=x",
        )];
        assert!(verdict(&nlb, 90).unwrap().0);
        assert!(verdict(&nlb, 118).unwrap().0);
        // A ping up to a second late leaves 119 s + 1 s of quiet: no longer inside 120 s.
        assert!(!verdict(&nlb, 119).unwrap().0);

        let azure = [(AZURE_TCP_IDLE_TIMEOUT, "4")];
        assert!(verdict(&azure, 238).unwrap().0);
        assert!(!verdict(&azure, 239).unwrap().0);
        let (ok, _, message) = verdict(&azure, 300).unwrap();
        assert!(!ok);
        assert!(message.contains("the 4m idle timeout"), "{message}");
    }

    #[test]
    fn the_shortest_declared_timeout_decides() {
        let both = [
            (AZURE_TCP_IDLE_TIMEOUT, "30"),
            (AWS_CONNECTION_IDLE_TIMEOUT, "45"),
        ];
        let (ok, _, message) = verdict(&both, 50).unwrap();
        assert!(!ok);
        assert!(message.contains(AWS_CONNECTION_IDLE_TIMEOUT), "{message}");
    }

    #[test]
    fn an_unreadable_timeout_is_reported_with_its_annotation() {
        let (ok, reason, message) = verdict(&[(AZURE_TCP_IDLE_TIMEOUT, "4m")], 30).unwrap();
        assert!(!ok);
        assert_eq!(reason, "IdleTimeoutUnreadable");
        assert!(
            message.contains(AZURE_TCP_IDLE_TIMEOUT) && message.contains("\"4m\""),
            "{message}"
        );
    }
}
