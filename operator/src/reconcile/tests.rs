//! The reconcile driver against a mocked apiserver: each scenario says what the caches hold and
//! how the apiserver answers, then checks the requests the reconcile sent and what it returned.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Client;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

use super::fixtures::{context_with, stores_holding, stores_without_add_ons};
use super::*;
use crate::build::fixtures::{example, owner};
use crate::context::Context;
use crate::names::FIELD_MANAGER;
use crate::stores::Stores;

#[test]
fn retries_back_off_exponentially_up_to_a_cap() {
    let delays: Vec<u64> = (1..=9).map(|n| retry_delay(n).as_secs()).collect();
    assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128, 256, 300]);
    assert_eq!(retry_delay(u32::MAX), RETRY_MAX);
}

/// One request the reconcile sent.
#[derive(Debug, Clone)]
struct Sent {
    method: String,
    path: String,
    body: Value,
}

impl Sent {
    fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// How the mocked apiserver answers a request: `Some((code, body))`, or `None` for the default
/// (writes succeed and return what was sent, reads find nothing).
type Answer = dyn Fn(&Sent) -> Option<(u16, Value)> + Send + Sync;

/// The outcome of one reconcile: what it returned, and every request it sent.
struct Run {
    result: Result<Action, Error>,
    sent: Vec<Sent>,
}

impl Run {
    fn lines(&self) -> Vec<String> {
        self.sent.iter().map(Sent::line).collect()
    }

    /// Requests other than Events, which are the recorder's business.
    fn writes(&self) -> Vec<String> {
        self.sent
            .iter()
            .filter(|sent| sent.method != "GET" && !sent.path.contains("/events"))
            .map(Sent::line)
            .collect()
    }

    fn events(&self) -> Vec<(String, String)> {
        self.sent
            .iter()
            .filter(|sent| sent.path.contains("/events"))
            .map(|sent| {
                let field = |name: &str| sent.body[name].as_str().unwrap_or_default().to_owned();
                (field("type"), field("reason"))
            })
            .collect()
    }

    /// The body of the request whose line ends with `path_end`.
    fn body(&self, path_end: &str) -> &Value {
        &self
            .sent
            .iter()
            .find(|sent| sent.path.ends_with(path_end))
            .unwrap_or_else(|| panic!("no request to {path_end} in {:?}", self.lines()))
            .body
    }

    fn condition(&self, type_: &str) -> Value {
        let conditions = self.body("/status")["status"]["conditions"].clone();
        conditions
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == type_)
            .cloned()
            .unwrap_or_else(|| panic!("no {type_} condition in {conditions}"))
    }
}

fn status_body(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
           "reason": reason, "code": code, "message": format!("mocked {reason}")})
}

/// Reconciles `wss` once over caches holding `cached`, against an apiserver that answers with
/// `answer`.
async fn reconcile_once(
    wss: WebSocketService,
    cached: &[Value],
    answer: impl Fn(&Sent) -> Option<(u16, Value)> + Send + Sync + 'static,
) -> Run {
    let apiserver = Apiserver::answering(&wss, answer);
    let ctx = Arc::new(context_with(
        apiserver.client.clone(),
        stores_holding(cached),
    ));
    apiserver.reconcile(wss, &ctx).await
}

/// A mocked apiserver that logs every request.
struct Apiserver {
    client: Client,
    sent: Arc<Mutex<Vec<Sent>>>,
}

impl Apiserver {
    /// Answers with `answer`; a status write returns `wss` with that status.
    fn answering(
        wss: &WebSocketService,
        answer: impl Fn(&Sent) -> Option<(u16, Value)> + Send + Sync + 'static,
    ) -> Self {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let log = sent.clone();
        let answer: Arc<Answer> = Arc::new(answer);
        let stored = serde_json::to_value(wss).unwrap();
        let apiserver = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let (log, answer, mut stored) = (log.clone(), answer.clone(), stored.clone());
            async move {
                let method = request.method().to_string();
                let path = request.uri().path().to_owned();
                let bytes = request.into_body().collect_bytes().await?;
                let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let request = Sent { method, path, body };
                log.lock().unwrap().push(request.clone());
                let (code, body) =
                    answer(&request).unwrap_or_else(|| match request.method.as_str() {
                        "GET" => (404, status_body(404, "NotFound")),
                        "POST" => (201, request.body.clone()),
                        "PATCH" if request.path.ends_with("/status") => {
                            stored["status"] = request.body["status"].clone();
                            (200, stored)
                        }
                        _ => (200, request.body.clone()),
                    });
                let response = http::Response::builder()
                    .status(code)
                    .body(kube::client::Body::from(body.to_string().into_bytes()))
                    .unwrap();
                Ok::<_, kube::Error>(response)
            }
        });
        Self {
            client: Client::new(apiserver, "team-a"),
            sent,
        }
    }

    /// Reconciles `wss` once with `ctx`; the run holds the requests of this reconcile only.
    async fn reconcile(&self, wss: WebSocketService, ctx: &Arc<Context>) -> Run {
        self.sent.lock().unwrap().clear();
        let result = reconcile(Arc::new(DeserializeGuard(Ok(wss))), ctx.clone()).await;
        let sent = self.sent.lock().unwrap().clone();
        Run { result, sent }
    }
}

/// `wss` as stored after `run` wrote its status.
fn with_status_of(mut wss: WebSocketService, run: &Run) -> WebSocketService {
    wss.status = serde_json::from_value(run.body("/status")["status"].clone()).unwrap();
    wss
}

/// The upstream Service every example names.
fn backend() -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "chat-backend", "namespace": "team-a"}})
}

const NS: &str = "/namespaces/team-a";

#[tokio::test]
async fn each_objects_repeated_event_counts_on_its_first_across_many_objects() {
    let wss = example("minimal.yaml");
    let apiserver = Apiserver::answering(&wss, |_| None);
    let ctx = context_with(apiserver.client.clone(), stores_holding(&[]));
    let named = |n: usize| {
        let mut wss = wss.clone();
        wss.metadata.name = Some(format!("chat-{n}"));
        wss
    };
    for _round in 0..2 {
        for n in 0..100 {
            let note = "the upstream refused".to_owned();
            ctx.publish(&named(n), EventType::Warning, "UpstreamRefused", note)
                .await;
        }
    }
    let methods: Vec<String> = apiserver
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|sent| sent.method.clone())
        .collect();
    assert_eq!(methods.len(), 200);
    assert!(methods[..100].iter().all(|m| m == "POST"), "{methods:?}");
    assert!(
        methods[100..].iter().all(|m| m == "PATCH"),
        "every repeat is a count on its object's first Event: {methods:?}"
    );
}

#[tokio::test]
async fn a_new_fleet_gets_every_child_then_its_status() {
    let run = reconcile_once(example("minimal.yaml"), &[backend()], |_| None).await;
    assert_eq!(
        run.result.as_ref().unwrap(),
        &Action::requeue(Duration::from_secs(3600))
    );
    assert_eq!(
        run.lines(),
        [
            format!("PATCH /api/v1{NS}/configmaps/chat-gateway"),
            format!("PATCH /apis/apps/v1{NS}/deployments/chat-gateway"),
            format!("PATCH /api/v1{NS}/services/chat"),
            format!("PATCH /apis/policy/v1{NS}/poddisruptionbudgets/chat-gateway"),
            format!("PATCH /apis/wsfleet.io/v1alpha1{NS}/websocketservices/chat/status"),
        ],
        "no reads: the children come from the caches"
    );
    let ready = run.condition("Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("DeploymentProgressing")),
        "{ready}"
    );
}

#[tokio::test]
async fn a_fleet_at_steady_state_sends_nothing() {
    let wss = example("minimal.yaml");
    let first = reconcile_once(wss.clone(), &[backend()], |_| None).await;
    // The caches now hold what the first reconcile applied, and the object its status.
    let cached = caches_after(&first, None);
    let stored = with_status_of(wss, &first);

    let second = reconcile_once(stored, &cached, |_| None).await;
    assert!(second.result.is_ok(), "{:?}", second.result);
    assert_eq!(second.lines(), Vec::<String>::new());
}

#[tokio::test]
async fn children_found_up_to_date_are_remembered_for_the_fleet_version() {
    let wss = example("minimal.yaml");
    let first = reconcile_once(wss.clone(), &[backend()], |_| None).await;
    let cached = caches_after(&first, Some("7"));
    let stored = with_status_of(wss.clone(), &first);
    let apiserver = Apiserver::answering(&stored, |_| None);
    let ctx = Arc::new(context_with(
        apiserver.client.clone(),
        stores_holding(&cached),
    ));
    let second = apiserver.reconcile(stored, &ctx).await;
    assert_eq!(second.lines(), Vec::<String>::new());
    let fleet = FleetVersion::of(&wss).unwrap();
    let config_map = ctx.stores.config_maps.get("team-a", "chat-gateway").await;
    let config_map = config_map.unwrap().expect("cached");
    assert!(
        ctx.stores
            .config_maps
            .verified
            .holds(&fleet, config_map.as_ref())
    );
    let deployment = ctx.stores.deployments.get("team-a", "chat-gateway").await;
    let deployment = deployment.unwrap().expect("cached");
    assert!(
        ctx.stores
            .deployments
            .verified
            .holds(&fleet, deployment.as_ref())
    );
}

/// What the caches hold once the watches delivered the children `run` applied (stored at
/// `resource_version`, if given), beside the upstream Service.
fn caches_after(run: &Run, resource_version: Option<&str>) -> Vec<Value> {
    let mut cached: Vec<Value> = run
        .sent
        .iter()
        .filter(|sent| sent.method == "PATCH" && !sent.path.ends_with("/status"))
        .map(|sent| {
            let mut stored = sent.body.clone();
            if let Some(version) = resource_version {
                stored["metadata"]["resourceVersion"] = json!(version);
            }
            stored
        })
        .collect();
    cached.push(backend());
    cached
}

/// A first reconcile of the minimal example whose caches, kept in the returned context, the
/// watches have not filled yet.
async fn first_reconcile_with_shared_caches() -> (WebSocketService, Apiserver, Arc<Context>, Run) {
    let wss = example("minimal.yaml");
    let apiserver = Apiserver::answering(&wss, |_| None);
    let ctx = Arc::new(context_with(
        apiserver.client.clone(),
        stores_holding(&[backend()]),
    ));
    let first = apiserver.reconcile(wss.clone(), &ctx).await;
    (wss, apiserver, ctx, first)
}

/// The apiserver's answer to the operator's apply of a Deployment: a generation the Deployment
/// controller has yet to observe, applied by the operator just now.
fn unobserved_deployment(sent: &Sent) -> Option<(u16, Value)> {
    if sent.method != "PATCH" || !sent.path.contains("/deployments/") {
        return None;
    }
    let mut deployment = sent.body.clone();
    deployment["metadata"]["generation"] = json!(1);
    deployment["metadata"]["managedFields"] = json!([{
        "manager": FIELD_MANAGER, "operation": "Apply",
        "time": Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    }]);
    Some((200, deployment))
}

#[tokio::test]
async fn a_status_waits_past_the_grace_only_for_a_deployment_controller_at_work() {
    let wss = example("minimal.yaml");
    let fleet = ObjectRef::new("chat").within("team-a");
    let apiserver = Apiserver::answering(&wss, unobserved_deployment);
    let ctx = Arc::new(context_with(
        apiserver.client.clone(),
        stores_holding(&[backend()]),
    ));
    let hold = ctx.stores.observation_hold.clone();

    // A controller not seen working: the status waits out the grace, on the requeue alone.
    let idle = apiserver.reconcile(wss.clone(), &ctx).await;
    assert!(idle.result.is_ok(), "{:?}", idle.result);
    assert_eq!(idle.writes().len(), 4, "children only: {:?}", idle.writes());
    assert!(!hold.holds(&fleet));

    // One that observed another fleet's Deployment just now: held until it stops.
    let mut other = idle.body("/deployments/chat-gateway").clone();
    other["metadata"]["generation"] = json!(1);
    other["status"] = json!({"observedGeneration": 1});
    hold.saw(&serde_json::from_value(other).unwrap());
    let working = apiserver.reconcile(wss.clone(), &ctx).await;
    assert!(working.result.is_ok(), "{:?}", working.result);
    assert_eq!(working.writes(), Vec::<String>::new());
    assert!(hold.holds(&fleet));

    // Its Deployment observed: the status is written and the fleet let go.
    let mut cached = caches_after(&idle, Some("8"));
    for child in &mut cached {
        if child["kind"] == "Deployment" {
            child["metadata"]["generation"] = json!(1);
            child["status"] = json!({"observedGeneration": 1});
        }
    }
    let observed_ctx = Arc::new(context_with(
        apiserver.client.clone(),
        Stores {
            observation_hold: hold.clone(),
            ..stores_holding(&cached)
        },
    ));
    let observed = apiserver.reconcile(wss, &observed_ctx).await;
    assert!(observed.result.is_ok(), "{:?}", observed.result);
    assert!(
        observed
            .writes()
            .iter()
            .any(|write| write.ends_with("/status")),
        "{:?}",
        observed.writes()
    );
    assert!(!hold.holds(&fleet));
}

#[tokio::test]
async fn a_reconcile_before_the_watches_deliver_its_own_applies_writes_nothing_again() {
    let (wss, apiserver, ctx, first) = first_reconcile_with_shared_caches().await;
    assert_eq!(first.writes().len(), 5, "{:?}", first.writes());
    // Woken again (a child's event arrived) while the caches still hold none of the children.
    let second = apiserver.reconcile(with_status_of(wss, &first), &ctx).await;
    assert!(second.result.is_ok(), "{:?}", second.result);
    assert_eq!(second.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn a_child_an_admission_webhook_changed_on_the_way_in_is_not_applied_again() {
    let wss = example("minimal.yaml");
    // The apiserver stores the ConfigMap as a mutating webhook left it: not quite as sent.
    let apiserver = Apiserver::answering(&wss, |sent| {
        (sent.method == "PATCH" && sent.path.ends_with("/configmaps/chat-gateway")).then(|| {
            let mut stored = sent.body.clone();
            stored["metadata"]["resourceVersion"] = json!("7");
            stored["data"]["gateway.yaml"] = json!("rewritten: by a webhook\n");
            (200, stored)
        })
    });
    let ctx = Arc::new(context_with(
        apiserver.client.clone(),
        stores_holding(&[backend()]),
    ));
    let first = apiserver.reconcile(wss.clone(), &ctx).await;
    assert!(
        first
            .writes()
            .iter()
            .any(|w| w.ends_with("/configmaps/chat-gateway"))
    );
    let second = apiserver.reconcile(with_status_of(wss, &first), &ctx).await;
    assert!(second.result.is_ok(), "{:?}", second.result);
    assert_eq!(second.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn a_child_deleted_right_after_its_create_is_created_again() {
    let (wss, apiserver, ctx, first) = first_reconcile_with_shared_caches().await;
    // The budget's watch delivers its create and then its deletion; the cache shows none.
    let budget: PodDisruptionBudget =
        serde_json::from_value(first.body("/poddisruptionbudgets/chat-gateway").clone()).unwrap();
    ctx.stores.budgets.unseen.saw(&Event::Apply(budget.clone()));
    ctx.stores.budgets.unseen.saw(&Event::Delete(budget));
    let second = apiserver.reconcile(with_status_of(wss, &first), &ctx).await;
    assert_eq!(
        second.writes(),
        [format!(
            "PATCH /apis/policy/v1{NS}/poddisruptionbudgets/chat-gateway"
        )]
    );
}

#[tokio::test]
async fn a_conflict_fails_the_reconcile_naming_the_object_and_writes_no_status() {
    let run = reconcile_once(example("minimal.yaml"), &[backend()], |sent| {
        sent.path
            .ends_with("/deployments/chat-gateway")
            .then(|| (409, status_body(409, "Conflict")))
    })
    .await;
    let error = run.result.as_ref().unwrap_err();
    assert_eq!(error.reason(), "ApplyFailed");
    assert!(
        error
            .to_string()
            .starts_with("apply Deployment team-a/chat-gateway"),
        "{error}"
    );
    assert!(
        !run.lines().iter().any(|line| line.ends_with("/status")),
        "{:?}",
        run.lines()
    );
}

#[tokio::test]
async fn a_missing_secret_degrades_the_fleet_and_is_announced() {
    let run = reconcile_once(example("production.yaml"), &[backend()], |_| None).await;
    assert!(run.result.is_ok(), "{:?}", run.result);
    let degraded = run.condition("Degraded");
    assert_eq!(degraded["status"], "True", "{degraded}");
    assert_eq!(degraded["reason"], "JwtSecretNotFound", "{degraded}");
    assert!(
        degraded["message"]
            .as_str()
            .unwrap()
            .contains("JWT key Secret team-a/chat-jwt does not exist"),
        "{degraded}"
    );
    let events = run.events();
    assert!(
        events.contains(&("Warning".to_owned(), "JwtSecretNotFound".to_owned())),
        "{events:?}"
    );
    // The certificate is issued all the same: the Secret is created, never applied.
    assert!(
        events.contains(&("Normal".to_owned(), "CertificateIssued".to_owned())),
        "{events:?}"
    );
    assert_eq!(
        run.writes()[0],
        format!("POST /api/v1{NS}/secrets"),
        "{:?}",
        run.writes()
    );
}

#[tokio::test]
async fn an_apiserver_error_on_a_read_fails_the_reconcile_before_any_write() {
    let run = reconcile_once(example("production.yaml"), &[backend()], |sent| {
        (sent.method == "GET").then(|| (500, status_body(500, "InternalError")))
    })
    .await;
    let error = run.result.as_ref().unwrap_err();
    assert_eq!(error.reason(), "ReadFailed");
    assert!(
        error.to_string().starts_with("get Secret team-a/"),
        "{error}"
    );
    assert_eq!(run.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn a_secret_another_fleet_created_first_is_left_to_it() {
    let wss = example("production.yaml");
    let rival = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "chat-prod-tls", "namespace": "team-a",
                     "ownerReferences": [{"apiVersion": "wsfleet.io/v1alpha1",
                        "kind": "WebSocketService", "name": "chat-canary", "uid": "uid-2",
                        "controller": true}]},
    });
    let creates = Arc::new(Mutex::new(0));
    let run = reconcile_once(wss, &[backend()], move |sent| {
        let tls_secret = sent.path.ends_with("/secrets/chat-prod-tls");
        let mut creates = creates.lock().unwrap();
        match sent.method.as_str() {
            // The rival's create landed between this reconcile's read and its create.
            "GET" if tls_secret && *creates > 0 => Some((200, rival.clone())),
            "POST" if sent.path.ends_with("/secrets") => {
                *creates += 1;
                Some((409, status_body(409, "AlreadyExists")))
            }
            _ => None,
        }
    })
    .await;
    assert!(run.result.is_ok(), "{:?}", run.result);
    let ready = run.condition("Ready");
    assert_eq!(ready["reason"], "SecretOwnedByAnother", "{ready}");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("WebSocketService team-a/chat-canary"),
        "{ready}"
    );
    let secret_writes: Vec<_> = run
        .writes()
        .into_iter()
        .filter(|line| line.contains("/secrets"))
        .collect();
    assert_eq!(
        secret_writes,
        [format!("POST /api/v1{NS}/secrets")],
        "nothing overwritten"
    );
    assert!(
        !run.events()
            .iter()
            .any(|(_, reason)| reason == "CertificateIssued"),
        "{:?}",
        run.events()
    );
}

#[tokio::test]
async fn switching_to_keda_deletes_the_operators_autoscaler_first() {
    let wss = example("keda.yaml");
    let reference = serde_json::to_value(owner(&wss)).unwrap();
    let autoscaler = |uid: &str| {
        let mut reference = reference.clone();
        reference["uid"] = json!(uid);
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
               "metadata": {"name": "chat-keda-gateway", "namespace": "team-a",
                            "ownerReferences": [reference]},
               "spec": {"maxReplicas": 2, "scaleTargetRef": {"kind": "Deployment", "name": "x"}}})
    };
    let ours = reconcile_once(wss.clone(), &[backend(), autoscaler("uid-1")], |_| None).await;
    assert!(ours.result.is_ok(), "{:?}", ours.result);
    let writes = ours.writes();
    let position = |end: &str| writes.iter().position(|line| line.ends_with(end));
    let deleted = position("/horizontalpodautoscalers/chat-keda-gateway");
    let scaled = position("/scaledobjects/chat-keda-gateway");
    assert!(
        deleted.is_some() && deleted < scaled,
        "the HPA goes before the ScaledObject comes: {writes:?}"
    );
    assert!(writes[deleted.unwrap()].starts_with("DELETE "));

    // An HPA of that name that this fleet does not control is left alone.
    let theirs = reconcile_once(wss, &[backend(), autoscaler("uid-9")], |_| None).await;
    assert!(
        !theirs
            .writes()
            .iter()
            .any(|line| line.starts_with("DELETE")),
        "{:?}",
        theirs.writes()
    );
}

#[tokio::test]
async fn keda_that_is_not_installed_degrades_the_fleet_and_is_looked_at_again_soon() {
    let run = reconcile_once(example("keda.yaml"), &[backend()], |sent| {
        // A type that is not served answers a bare 404.
        (sent.path.contains("/scaledobjects/")).then(|| (404, json!("404 page not found")))
    })
    .await;
    assert_eq!(
        run.result.as_ref().unwrap(),
        &Action::requeue(Duration::from_secs(30))
    );
    let ready = run.condition("Ready");
    assert_eq!(ready["reason"], "KedaNotInstalled", "{ready}");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("scaledobjects.keda.sh"),
        "{ready}"
    );
    assert!(
        run.lines()
            .iter()
            .any(|line| line.ends_with("/poddisruptionbudgets/chat-keda-gateway")),
        "the children after it are still applied: {:?}",
        run.lines()
    );
}

#[tokio::test]
async fn without_add_ons_a_fleet_that_uses_none_asks_for_none() {
    let wss = example("minimal.yaml");
    let apiserver = Apiserver::answering(&wss, |_| None);
    let ctx = Arc::new(context_with(
        apiserver.client.clone(),
        stores_without_add_ons(&[backend()]),
    ));
    let run = apiserver.reconcile(wss, &ctx).await;
    assert!(run.result.is_ok(), "{:?}", run.result);
    assert!(
        !run.lines().iter().any(|line| line.starts_with("GET")),
        "no ScaledObject or Certificate can exist: {:?}",
        run.lines()
    );
}

#[tokio::test]
async fn once_a_term_wrote_an_unwatched_kind_a_fleet_that_dropped_it_has_it_deleted() {
    let keda = example("keda.yaml");
    let reference = serde_json::to_value(owner(&keda)).unwrap();
    let scaled_object = json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "chat-keda-gateway", "namespace": "team-a",
                     "ownerReferences": [reference]},
        "spec": {"scaleTargetRef": {"name": "chat-keda-gateway"}, "triggers": []}});
    let apiserver = Apiserver::answering(&keda, move |sent| {
        (sent.method == "GET" && sent.path.ends_with("/scaledobjects/chat-keda-gateway"))
            .then(|| (200, scaled_object.clone()))
    });
    let ctx = Arc::new(context_with(
        apiserver.client.clone(),
        stores_without_add_ons(&[backend()]),
    ));
    let mut without_keda = keda.clone();
    if let Some(autoscaling) = &mut without_keda.spec.autoscaling {
        autoscaling.keda = None;
    }
    let before = apiserver.reconcile(without_keda.clone(), &ctx).await;
    assert!(
        !before
            .lines()
            .iter()
            .any(|line| line.contains("/scaledobjects/")),
        "before this term wrote one, none is looked for: {:?}",
        before.lines()
    );

    let with_keda = apiserver.reconcile(keda, &ctx).await;
    assert!(with_keda.result.is_ok(), "{:?}", with_keda.result);
    let dropped = apiserver.reconcile(without_keda, &ctx).await;
    assert!(
        dropped.writes().contains(&format!(
            "DELETE /apis/keda.sh/v1alpha1{NS}/scaledobjects/chat-keda-gateway"
        )),
        "{:?}",
        dropped.lines()
    );
}
