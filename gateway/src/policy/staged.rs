//! A reloaded policy that waits for the first keys of its new JWKS source while the previous
//! policy keeps serving. Every pod of a fleet reloads the same ConfigMap at the same moment:
//! swapped in at once, a policy whose source does not answer (a typo in the URL, a wrong CA)
//! would make every pod unready together and empty the fleet's Service.

use std::sync::Arc;

use crate::policy::jwks::JwksKeys;
use crate::policy::running::Policy;

/// Where a freshly built policy goes.
pub(crate) enum Staged {
    /// It can serve now: swap it in.
    Ready(Policy),
    /// It waits for its keys; the previous policy serves meanwhile.
    Waiting(StagedPolicy),
}

/// What a wait on a staged policy's source came to.
pub(crate) enum Progress {
    /// The keys are there: the policy can be swapped in.
    Ready,
    /// The source's first failed fetch since the policy was staged, with its error. Later
    /// failures are not reported: the source keeps being retried with its backoff, and one
    /// report per reload is enough.
    Failed(String),
}

/// A policy whose new JWKS source has not answered yet.
pub(crate) struct StagedPolicy {
    policy: Policy,
    keys: Arc<JwksKeys>,
    failure_reported: bool,
}

impl Staged {
    /// Stages `policy` when it takes keys from a source that `current` does not use and that
    /// has not answered yet; a source carried over from `current` is what serves now, so
    /// waiting for it would change nothing.
    pub fn new(policy: Policy, current: &Policy) -> Self {
        let new_keys = policy
            .provider_keys()
            .filter(|keys| !keys.has_keys())
            .filter(|keys| {
                current
                    .provider_keys()
                    .is_none_or(|running| !Arc::ptr_eq(keys, running))
            })
            .cloned();
        match new_keys {
            None => Self::Ready(policy),
            Some(keys) => Self::Waiting(StagedPolicy {
                policy,
                keys,
                failure_reported: false,
            }),
        }
    }
}

impl StagedPolicy {
    /// Waits until the keys are there, or until the source's first fetch fails.
    pub async fn progress(&mut self) -> Progress {
        loop {
            match self.keys.first_keys().await {
                Ok(()) => return Progress::Ready,
                Err(error) if !self.failure_reported => {
                    self.failure_reported = true;
                    return Progress::Failed(error);
                }
                Err(_) => {}
            }
        }
    }

    pub fn into_policy(self) -> Policy {
        self.policy
    }
}
