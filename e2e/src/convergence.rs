//! Many small WebSocketServices at once, as the fault tests write them, and the check that the
//! operator carried every one through: Ready at its latest generation with exactly the children
//! its spec asks for, none missing, none extra, and no status claiming more than is true.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use wsfleet_config::GatewayConfig;

use crate::children::expected_children;
use crate::conditions::condition;
use crate::kubectl::Kubectl;
use crate::poll::{eventually, give_up};

/// Every kind the operator may create, as `kubectl get` takes a list of kinds.
const CHILD_KINDS: &str =
    "configmaps,deployments,services,poddisruptionbudgets,secrets,horizontalpodautoscalers";
/// The label selector of every child of the operator.
pub const MANAGED: &str = "app.kubernetes.io/managed-by=wsfleet-operator";

/// One small WebSocketService: plain ws to an upstream URL (nothing else to create first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmallFleet {
    pub name: String,
    pub replicas: u32,
    pub max_connections: u32,
}

impl SmallFleet {
    /// `name` with one replica and the smallest spec.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            replicas: 1,
            max_connections: 100,
        }
    }

    /// The same fleet with another replica count and connection limit: a spec change.
    pub fn changed(&self) -> Self {
        Self {
            replicas: self.replicas + 1,
            max_connections: self.max_connections + 1,
            ..self.clone()
        }
    }

    pub fn manifest(&self) -> String {
        format!(
            "apiVersion: wsfleet.io/v1alpha1
kind: WebSocketService
metadata:
  name: {}
spec:
  upstream: {{url: 'ws://backend.example:8080/'}}
  replicas: {}
  limits: {{maxConnections: {}}}
",
            self.name, self.replicas, self.max_connections
        )
    }
}

/// `fleets`, as many as `count`, named `PREFIX-N`.
pub fn small_fleets(prefix: &str, count: usize) -> Vec<SmallFleet> {
    (0..count)
        .map(|index| SmallFleet::new(&format!("{prefix}-{index}")))
        .collect()
}

/// Waits until every one of `fleets` (with exactly this spec) is converged; gives up at once
/// if a status claims Ready at its generation while its children do not match its spec, or if
/// a child exists that no fleet should have.
pub fn await_converged(kubectl: &Kubectl, fleets: &[SmallFleet], deadline: Duration) -> Result<()> {
    eventually(
        &format!("{} fleets Ready with exactly their children", fleets.len()),
        deadline,
        || survey(kubectl, fleets),
    )
}

/// How far one fleet has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// How many of its children exist.
    pub children: usize,
    /// Ready at its generation with exactly the children its spec asks for.
    pub converged: bool,
}

/// How far each of `fleets` has come, by name.
pub fn progress(kubectl: &Kubectl, fleets: &[SmallFleet]) -> Result<BTreeMap<String, Progress>> {
    let (objects, children) = read_all(kubectl)?;
    Ok(fleets
        .iter()
        .map(|fleet| {
            let of_fleet = children.get(&fleet.name);
            let converged = objects.get(&fleet.name).is_some_and(|object| {
                claims_ready(object) && mismatch(fleet, object, of_fleet).is_none()
            });
            let progress = Progress {
                children: of_fleet.map_or(0, Vec::len),
                converged,
            };
            (fleet.name.clone(), progress)
        })
        .collect())
}

/// How many children one of the small fleets has.
pub fn children_per_fleet() -> usize {
    expected_children("any", None, false).len()
}

type Children = BTreeMap<String, Vec<Value>>;

/// Every WebSocketService by name, and every child of the operator by the instance it is for.
fn read_all(kubectl: &Kubectl) -> Result<(BTreeMap<String, Value>, Children)> {
    let objects = kubectl
        .run(&["get", "wss", "-o", "json"])
        .and_then(|text| Ok(serde_json::from_str::<Value>(&text)?))
        .context("listing WebSocketServices")?;
    let objects = objects["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|object| (name_of(object).to_owned(), object.clone()))
        .collect();
    let mut children = Children::new();
    for child in kubectl.list(CHILD_KINDS, MANAGED)? {
        let instance = child["metadata"]["labels"]["app.kubernetes.io/instance"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        children.entry(instance).or_default().push(child);
    }
    Ok((objects, children))
}

fn survey(kubectl: &Kubectl, fleets: &[SmallFleet]) -> Result<()> {
    let (objects, mut children) = read_all(kubectl)?;
    let mut waiting = Vec::new();
    for fleet in fleets {
        let of_fleet = children.remove(&fleet.name);
        let object = objects
            .get(&fleet.name)
            .with_context(|| format!("{} does not exist yet", fleet.name))?;
        // Until the last spec has landed, the children may rightly hold a later one than this
        // read of the object shows; after, they only move towards it.
        if spec_of(object) != *fleet {
            waiting.push(format!("{}: spec not written yet", fleet.name));
            continue;
        }
        let wrong = mismatch(fleet, object, of_fleet.as_ref());
        match (claims_ready(object), wrong) {
            (true, Some(wrong)) => {
                return Err(give_up(anyhow::anyhow!(
                    "{} is Ready at generation {} but {wrong}",
                    fleet.name,
                    object["metadata"]["generation"]
                )));
            }
            (true, None) => {}
            (false, wrong) => waiting.push(format!(
                "{}: not Ready at its generation ({})",
                fleet.name,
                wrong.unwrap_or_else(|| "children match".to_owned())
            )),
        }
    }
    if let Some((instance, strays)) = children.into_iter().next() {
        let names: Vec<String> = strays.iter().map(kind_and_name).collect();
        return Err(give_up(anyhow::anyhow!(
            "children of no expected fleet {instance:?}: {names:?}"
        )));
    }
    ensure!(
        waiting.is_empty(),
        "{} not converged, e.g. {:?}",
        waiting.len(),
        &waiting[..waiting.len().min(3)]
    );
    Ok(())
}

/// Whether the status says Ready for the object's latest generation.
fn claims_ready(object: &Value) -> bool {
    object["status"]["observedGeneration"] == object["metadata"]["generation"]
        && condition(object, "Ready").is_some_and(|ready| ready["status"] == "True")
}

/// What about the children does not match `fleet`, if anything. An extra child is a duplicate
/// and fails the check outright.
fn mismatch(fleet: &SmallFleet, object: &Value, children: Option<&Vec<Value>>) -> Option<String> {
    let children = children.map(Vec::as_slice).unwrap_or_default();
    let have: BTreeSet<String> = children.iter().map(kind_and_name).collect();
    let want: BTreeSet<String> = expected_children(&fleet.name, None, false)
        .into_iter()
        .map(|child| format!("{}/{}", child.kind, child.name))
        .collect();
    if have != want {
        return Some(format!("children {have:?}, want {want:?}"));
    }
    let uid = &object["metadata"]["uid"];
    for child in children {
        let owner = child["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|owner| owner["controller"] == true);
        if owner.is_none_or(|owner| owner["uid"] != *uid) {
            return Some(format!("{} is not controlled by it", kind_and_name(child)));
        }
        match child_matches(fleet, child) {
            Ok(()) => {}
            Err(err) => return Some(format!("{}: {err:#}", kind_and_name(child))),
        }
    }
    None
}

fn child_matches(fleet: &SmallFleet, child: &Value) -> Result<()> {
    match child["kind"].as_str() {
        Some("Deployment") => ensure!(
            child["spec"]["replicas"] == fleet.replicas,
            "spec.replicas {}, want {}",
            child["spec"]["replicas"],
            fleet.replicas
        ),
        Some("ConfigMap") => {
            let text = child["data"]["gateway.yaml"]
                .as_str()
                .context("no gateway.yaml")?;
            let config = GatewayConfig::from_yaml(text)?;
            ensure!(
                config.limits.max_connections == fleet.max_connections,
                "maxConnections {}, want {}",
                config.limits.max_connections,
                fleet.max_connections
            );
        }
        Some(_) => {}
        None => bail!("no kind"),
    }
    Ok(())
}

fn spec_of(object: &Value) -> SmallFleet {
    let number = |value: &Value| value.as_u64().unwrap_or_default() as u32;
    SmallFleet {
        name: name_of(object).to_owned(),
        replicas: number(&object["spec"]["replicas"]),
        max_connections: number(&object["spec"]["limits"]["maxConnections"]),
    }
}

fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn kind_and_name(object: &Value) -> String {
    format!(
        "{}/{}",
        object["kind"].as_str().unwrap_or_default().to_lowercase(),
        name_of(object)
    )
}
