//! Reading and awaiting a WebSocketService's status conditions.

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::kubectl::Kubectl;
use crate::poll::{DEADLINE, eventually};

/// The condition of `type_` in `object.status.conditions`, if present.
pub fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|condition| condition["type"] == type_)
}

/// What a condition should say; `reason: None` accepts any reason.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub type_: &'a str,
    pub status: &'a str,
    pub reason: Option<&'a str>,
}

impl<'a> Expected<'a> {
    pub fn new(type_: &'a str, status: &'a str) -> Self {
        Self {
            type_,
            status,
            reason: None,
        }
    }

    pub fn because(self, reason: &'a str) -> Self {
        Self {
            reason: Some(reason),
            ..self
        }
    }

    fn check(&self, object: &Value) -> Result<()> {
        let found = condition(object, self.type_)
            .with_context(|| format!("no {} condition yet", self.type_))?;
        ensure!(
            found["status"] == self.status
                && self.reason.is_none_or(|reason| found["reason"] == reason),
            "wanted {} {} {:?}, found {found}",
            self.type_,
            self.status,
            self.reason
        );
        Ok(())
    }
}

/// Waits until WebSocketService `name` has observed its latest generation and shows every
/// one of `expected`; returns the object as last read.
pub fn await_conditions(kubectl: &Kubectl, name: &str, expected: &[Expected]) -> Result<Value> {
    eventually(
        &format!("WebSocketService {name} to show {expected:?}"),
        DEADLINE,
        || {
            let object = kubectl.get("wss", name)?;
            let generation = &object["metadata"]["generation"];
            ensure!(
                object["status"]["observedGeneration"] == *generation,
                "status.observedGeneration {} != metadata.generation {generation}; status {}",
                object["status"]["observedGeneration"],
                object["status"]
            );
            for wanted in expected {
                wanted.check(&object)?;
            }
            Ok(object)
        },
    )
}
