//! The status step: the status and the Events a user reads in `kubectl describe`, written only
//! when they change.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::desired::{KEDA_NOT_INSTALLED, Outcome};
use super::serving_certificate::{CERT_MANAGER_NOT_INSTALLED, CERTIFICATE_NOT_READY};
use crate::conditions::{self, DEGRADED, READY};
use crate::context::Context;
use crate::crd::{WebSocketService, WebSocketServiceStatus};
use crate::error::{Error, InvalidSpec};
use crate::idle_timeout::heartbeat_condition;
use crate::lean::Lean;
use crate::names::FIELD_MANAGER;
use crate::plan::Plan;
use crate::status::{
    Observation, Problem, awaiting_deployment_controller, invalid_status, reconciled_status,
};

/// Even with nothing to wait for, each object is looked at again this often.
const RESYNC: Duration = Duration::from_secs(3600);
/// How often a fleet waiting on another controller looks again: for KEDA's or cert-manager's
/// CRD, or for cert-manager to issue (their objects are watched only when their CRDs were
/// served at the operator's start).
const RECHECK: Duration = Duration::from_secs(30);
/// Problems that no watch ends.
const RECHECKED: [&str; 3] = [
    KEDA_NOT_INSTALLED,
    CERT_MANAGER_NOT_INSTALLED,
    CERTIFICATE_NOT_READY,
];

/// Reports a reconciled fleet; returns when to look at it again.
pub async fn report(
    wss: &WebSocketService,
    ctx: &Context,
    plan: &Plan,
    outcome: &Outcome,
    deployment: &Deployment,
    now: Timestamp,
) -> Result<Action, Error> {
    let problems = outcome.all_problems();
    let mut requeue = RESYNC.min(outcome.renew_in.unwrap_or(RESYNC));
    if problems.iter().any(|p| RECHECKED.contains(&p.reason)) {
        requeue = requeue.min(RECHECK);
    }
    let hold = &ctx.stores.observation_hold;
    let fleet = ObjectRef::new(&wss.name_any()).within(&plan.names.namespace);
    let working = hold.controller_working();
    if problems.is_empty()
        && let Some(wait) = awaiting_deployment_controller(deployment, now, working)
    {
        // The Deployment's status update wakes this object again; the requeue is only the
        // fallback. Held past the grace, it is also woken when the controller stops working.
        if working {
            hold.hold(fleet);
        }
        return Ok(Action::requeue(wait.min(requeue)));
    }
    hold.release(&fleet);
    let previous = wss.status.clone().unwrap_or_default();
    announce_problems(wss, ctx, &previous, &problems).await;
    let observation = Observation {
        names: &plan.names,
        endpoint: plan
            .names
            .endpoint(plan.tls.is_some(), &wss.spec.listen.path),
        problems: &problems,
        certificate: outcome.certificate.as_ref(),
        deployment: Some(deployment),
        heartbeat: plan.gateway_config.heartbeat.and_then(|heartbeat| {
            heartbeat_condition(wss.spec.service.annotations.as_ref(), heartbeat.interval)
        }),
    };
    let status = reconciled_status(&previous, &observation, wss.metadata.generation, &Time(now));
    write_status(wss, ctx, &previous, status).await?;
    Ok(Action::requeue(requeue))
}

/// Records why the spec cannot be acted on, and waits for the user to change it.
pub async fn reject(
    wss: &WebSocketService,
    ctx: &Context,
    invalid: &InvalidSpec,
    now: Timestamp,
) -> Result<Action, Error> {
    ctx.metrics.error("InvalidSpec");
    let previous = &wss.status.clone().unwrap_or_default();
    let names = crate::names::ChildNames::of(wss);
    let status = invalid_status(
        previous,
        &names,
        invalid,
        wss.metadata.generation,
        &Time(now),
    );
    if status.conditions != previous.conditions {
        ctx.publish(wss, EventType::Warning, "InvalidSpec", invalid.to_string())
            .await;
    }
    write_status(wss, ctx, previous, status).await?;
    Ok(Action::await_change())
}

/// One Warning Event per problem when it first appears, not on every reconcile.
async fn announce_problems(
    wss: &WebSocketService,
    ctx: &Context,
    previous: &WebSocketServiceStatus,
    problems: &[Problem],
) {
    let already = conditions::find(&previous.conditions, DEGRADED)
        .filter(|c| c.status == "True")
        .map(|c| c.message.as_str())
        .unwrap_or_default();
    for problem in problems {
        ctx.metrics.error(problem.reason);
        if !already.contains(&problem.message) {
            ctx.publish(
                wss,
                EventType::Warning,
                problem.reason,
                problem.message.clone(),
            )
            .await;
        }
    }
}

/// A Normal Event when the fleet becomes Ready, a Warning when it stops being Ready, so that
/// `kubectl describe` tells the fleet's story and not only its problems.
async fn announce_readiness(
    wss: &WebSocketService,
    ctx: &Context,
    previous: &WebSocketServiceStatus,
    status: &WebSocketServiceStatus,
) {
    let was_ready =
        conditions::find(&previous.conditions, READY).is_some_and(|c| c.status == "True");
    let Some(ready) = conditions::find(&status.conditions, READY) else {
        return;
    };
    let event_type = match (was_ready, ready.status == "True") {
        (false, true) => EventType::Normal,
        (true, false) => EventType::Warning,
        _ => return,
    };
    ctx.publish(wss, event_type, &ready.reason, ready.message.clone())
        .await;
}

/// Writes `status` unless it equals what is stored.
async fn write_status(
    wss: &WebSocketService,
    ctx: &Context,
    previous: &WebSocketServiceStatus,
    status: WebSocketServiceStatus,
) -> Result<(), Error> {
    if wss.status.is_some() && &status == previous {
        return Ok(());
    }
    announce_readiness(wss, ctx, previous, &status).await;
    let namespace = wss.namespace().unwrap_or_default();
    let name = wss.name_any();
    // The answer goes unread; decoded lean, its managed fields cost nothing.
    let api: Api<Lean<WebSocketService>> = ctx.api(&namespace);
    let patch = json!({
        "apiVersion": WebSocketService::api_version(&()),
        "kind": WebSocketService::kind(&()),
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube(
        "apply",
        "WebSocketService status",
        &namespace,
        &name,
    ))?;
    Ok(())
}
