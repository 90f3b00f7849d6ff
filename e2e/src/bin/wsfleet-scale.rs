//! The scale run (not part of the test command): N WebSocketServices (default 1,000) in one
//! namespace, one operator. Reports the time until every child exists and until every
//! object is Ready, the time from each object's appearance to its last child's (p50, p99),
//! the apiserver writes per object (from apiserver_request_total), the writes and the operator's
//! CPU time during a quiet interval afterwards, its CPU time while converging and its peak
//! resident memory. With `--real-node` the gateways are real pods on a real node (see
//! `wsfleet_scale/real_node.rs`).
//!
//! `cargo run --release -p wsfleet-e2e --bin wsfleet-scale -- [--real-node] [COUNT]` (`--help`)

#![forbid(unsafe_code)]

#[path = "wsfleet_scale/args.rs"]
mod args;
#[path = "wsfleet_scale/cluster.rs"]
mod cluster;
#[path = "wsfleet_scale/real_node.rs"]
mod real_node;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use wsfleet_e2e::apiserver_metrics::{difference, write_counts};
use wsfleet_e2e::poll::give_up;
use wsfleet_e2e::process::{cpu_time, peak_rss_kib};
use wsfleet_e2e::{Kubectl, Operator, eventually};

use crate::args::Args;
use crate::cluster::Cluster;
use crate::real_node::GatewayPodsReady;

const NAMESPACE: &str = "scale";

/// Long enough for 1,000 objects on a loaded 2-core machine.
const CONVERGENCE_DEADLINE: Duration = Duration::from_secs(3600);

/// How long writes are counted once everything is Ready, to show that the fleet is idle.
const QUIET_INTERVAL: Duration = Duration::from_secs(30);

/// Resources only the operator writes: its children and the status. Controllers write
/// Deployment status, ReplicaSets, Pods and most Events; those are listed, not counted.
/// The label every child carries.
const MANAGED: &str = "app.kubernetes.io/managed-by=wsfleet-operator";
const CHILD_KINDS: [&str; 4] = [
    "configmaps",
    "deployments",
    "services",
    "poddisruptionbudgets",
];

/// The operator's count of reconciles run.
const RECONCILES: &str = "wsfleet_operator_reconciles_total";

const OPERATOR_RESOURCES: [&str; 7] = [
    "configmaps",
    "secrets",
    "services",
    "deployments",
    "poddisruptionbudgets",
    "horizontalpodautoscalers",
    "websocketservices/status",
];

fn manifest(count: usize, gateway_spec: &str) -> String {
    let mut text = String::new();
    for index in 0..count {
        // One replica each keeps the fake pods (and the scheduler's work) at one per object.
        let _ = write!(
            text,
            "apiVersion: wsfleet.io/v1alpha1\nkind: WebSocketService\nmetadata:\n  name: ws-{index:04}\nspec:\n  upstream: {{service: chat-backend, port: 8080}}\n  replicas: 1\n{gateway_spec}---\n"
        );
    }
    text
}

fn count(kubectl: &Kubectl, kind: &str) -> Result<usize> {
    let names = kubectl.run(&["get", kind, "-l", MANAGED, "-o", "name"])?;
    Ok(names.lines().count())
}

/// When `kubectl get --watch` first showed each object, keyed by the WebSocketService it
/// belongs to (children are `<name>` or `<name>-gateway`).
type FirstSeen = Arc<Mutex<HashMap<String, Instant>>>;

/// Records in the background when each `kind` matching `selector` first appears. The watch
/// ends with the apiserver.
fn record_first_seen(kubectl: &Kubectl, kind: &str, selector: &str) -> Result<FirstSeen> {
    let seen = FirstSeen::default();
    let watch = kubectl.watch_names(kind, selector)?;
    let record = seen.clone();
    std::thread::spawn(move || {
        for line in watch.map_while(Result::ok) {
            let name = line.rsplit('/').next().unwrap_or_default();
            let owner = name.strip_suffix("-gateway").unwrap_or(name).to_owned();
            let now = Instant::now();
            record
                .lock()
                .expect("first-seen lock")
                .entry(owner)
                .or_insert(now);
        }
    });
    Ok(seen)
}

/// Per object, the time from its own appearance to its last child's, in seconds, sorted.
fn children_latencies(objects: &FirstSeen, children: &[FirstSeen]) -> Vec<f64> {
    let objects = objects.lock().expect("first-seen lock");
    let children: Vec<_> = children
        .iter()
        .map(|kind| kind.lock().expect("first-seen lock"))
        .collect();
    let mut latencies: Vec<f64> = objects
        .iter()
        .filter_map(|(name, created)| {
            let last_child = children
                .iter()
                .map(|kind| kind.get(name).copied())
                .collect::<Option<Vec<Instant>>>()?
                .into_iter()
                .max()?;
            Some(last_child.saturating_duration_since(*created).as_secs_f64())
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    latencies
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(index - 1).copied().unwrap_or(f64::NAN)
}

fn ready_count(kubectl: &Kubectl) -> Result<usize> {
    let statuses = kubectl.run(&[
        "get",
        "wss",
        "-o",
        r#"jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
    ])?;
    Ok(statuses.lines().filter(|status| *status == "True").count())
}

fn operator_writes(writes: &BTreeMap<String, u64>) -> u64 {
    writes
        .iter()
        .filter(|(key, _)| {
            let resource = key.split(' ').next().unwrap_or_default();
            OPERATOR_RESOURCES.contains(&resource)
        })
        .map(|(_, count)| count)
        .sum()
}

/// Events in the namespace counted by "component reason" (repeats counted by `count`).
fn events_by_source(kubectl: &Kubectl) -> Result<BTreeMap<String, u64>> {
    let list: serde_json::Value =
        serde_json::from_str(&kubectl.run(&["get", "events", "-o", "json"])?)?;
    let mut counts = BTreeMap::new();
    for event in list["items"].as_array().into_iter().flatten() {
        let component = event["reportingComponent"]
            .as_str()
            .filter(|component| !component.is_empty())
            .or_else(|| event["source"]["component"].as_str())
            .unwrap_or("?");
        let key = format!("{component} {}", event["reason"].as_str().unwrap_or("?"));
        *counts.entry(key).or_insert(0) += event["count"].as_u64().unwrap_or(1);
    }
    Ok(counts)
}

fn main() -> Result<()> {
    let Some(args) = Args::from_command_line()? else {
        return Ok(());
    };
    let count_wanted = args.count;
    let cluster = Cluster::start(args.real_node)?;
    let control_plane = cluster.control_plane();
    control_plane.install_crd()?;
    let admin = control_plane.kubectl();
    admin.run(&["create", "namespace", NAMESPACE])?;
    let kubectl = admin.in_namespace(NAMESPACE);
    cluster.create_upstream(&kubectl, NAMESPACE)?;
    let work = tempfile::tempdir()?;
    let mut operator = Operator::start(control_plane, NAMESPACE, "scale", work.path())?;
    operator.await_leadership()?;

    let objects_seen = record_first_seen(&kubectl, "wss", "")?;
    let children_seen = CHILD_KINDS
        .iter()
        .map(|kind| record_first_seen(&kubectl, kind, MANAGED))
        .collect::<Result<Vec<_>>>()?;
    let cpu_before = cpu_time(operator.pid())?;
    let reconciles_before = operator.metric(RECONCILES)?;
    let pods_ready = args
        .real_node
        .then(|| GatewayPodsReady::watch(&kubectl, count_wanted))
        .transpose()?;
    let before = write_counts(&admin)?;
    let started = Instant::now();
    kubectl.create(&manifest(count_wanted, cluster.gateway_spec()))?;
    let created = started.elapsed();
    println!("created {count_wanted} WebSocketServices in {created:.1?}");

    let all_children = eventually("every child to exist", CONVERGENCE_DEADLINE, || {
        operator.ensure_running().map_err(give_up)?;
        for kind in CHILD_KINDS {
            let found = count(&kubectl, kind)?;
            ensure!(found >= count_wanted, "{found} {kind}");
        }
        Ok(started.elapsed())
    })?;
    println!("every child exists after {all_children:.1?}");
    let all_ready = eventually("every WebSocketService Ready", CONVERGENCE_DEADLINE, || {
        operator.ensure_running().map_err(give_up)?;
        let ready = ready_count(&kubectl)?;
        ensure!(ready >= count_wanted, "{ready} Ready");
        Ok(started.elapsed())
    })?;
    println!("every WebSocketService Ready after {all_ready:.1?}");
    let converged = write_counts(&admin)?;
    let cpu_converging = cpu_time(operator.pid())?.saturating_sub(cpu_before);
    let reconciles = operator.metric(RECONCILES)? - reconciles_before;
    let latencies = children_latencies(&objects_seen, &children_seen);
    std::thread::sleep(QUIET_INTERVAL);
    let quiet = write_counts(&admin)?;
    let cpu_idle = cpu_time(operator.pid())?.saturating_sub(cpu_before + cpu_converging);
    let peak_rss = peak_rss_kib(operator.pid())?;
    let events = events_by_source(&kubectl)?;

    let converging = difference(&before, &converged);
    let idle = difference(&converged, &quiet);
    println!("\napiserver writes while converging, by resource and verb:");
    for (key, writes) in &converging {
        println!("  {key:<50} {writes:>8}");
    }
    println!("\nEvents in the namespace, by reporting component and reason:");
    for (source, count) in &events {
        println!("  {source:<50} {count:>8}");
    }
    let operator_total = operator_writes(&converging);
    println!(
        "\nobjects: {count_wanted}\ntime to create them (kubectl create): {created:.1?}\nevery child exists: {all_children:.1?}\nevery object Ready: {all_ready:.1?}\noperator writes (children and status): {operator_total} = {:.2} per object\nobject to its last child ({} objects timed): p50 {:.2} s, p99 {:.2} s\noperator CPU while converging: {cpu_converging:.2?} = {:.2} ms per object\noperator reconciles while converging: {reconciles} = {:.2} per object\nall writes during {QUIET_INTERVAL:?} idle afterwards: {:?}\noperator CPU during that idle interval: {cpu_idle:.2?}\noperator peak RSS: {:.1} MiB",
        operator_total as f64 / count_wanted as f64,
        latencies.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        cpu_converging.as_secs_f64() * 1000.0 / count_wanted as f64,
        reconciles / count_wanted as f64,
        idle,
        peak_rss as f64 / 1024.0
    );
    if let Some(pods_ready) = &pods_ready {
        real_node::report(
            &kubectl,
            NAMESPACE,
            pods_ready,
            started,
            CONVERGENCE_DEADLINE,
        )?;
    }
    Ok(())
}
