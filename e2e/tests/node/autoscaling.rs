//! Stories: autoscaling with the tools platform teams run, all real and on the real node.
//!
//! 1. Live connections through KEDA: `spec.autoscaling.keda` makes the operator write a
//!    ScaledObject; KEDA's operator queries a real Prometheus (scraping the gateways as the
//!    chart's ServiceMonitor says), its metrics adapter serves the value through the
//!    aggregation layer, and kube-controller-manager's HPA controller scales the Deployment.
//! 2. Live connections through the operator's own HPA: its Pods metric served on
//!    `custom.metrics.k8s.io` by the rule the docs ship for prometheus-adapter, evaluated against
//!    the real Prometheus, through the sample adapter of `custom-metrics-apiserver`.
//! 3. CPU and memory utilization through metrics-server, with the operator's own HPA.
//! 4. `kubectl scale` through the scale subresource: it sets the count without an autoscaler,
//!    and is accepted but has no effect while an HPA owns the count.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use wsfleet_e2e::custom_metrics::{AdapterRule, CustomMetricsAdapter};
use wsfleet_e2e::fleet::{await_ready_pods, gateway_pods};
use wsfleet_e2e::inspect::table_row;
use wsfleet_e2e::keda::Keda;
use wsfleet_e2e::metrics_server::MetricsServer;
use wsfleet_e2e::monitoring::{render_monitoring, scrape_jobs};
use wsfleet_e2e::node::network::NODE_IP;
use wsfleet_e2e::poll::{eventually, give_up};
use wsfleet_e2e::prometheus::Prometheus;
use wsfleet_e2e::wire::{Ending, Talk};
use wsfleet_e2e::{Kubectl, condition};

use crate::setup::{Fleet, NAME, cluster, with_room_for_load};

/// The HPA KEDA makes for the ScaledObject `<name>-gateway`.
const KEDA_HPA: &str = "keda-hpa-chat-prod-gateway";
/// The operator's own HPA.
const OWN_HPA: &str = "chat-prod-gateway";
const DEPLOYMENT: &str = "chat-prod-gateway";
/// Scrape interval of the test's Prometheus.
const SCRAPE: Duration = Duration::from_secs(2);
/// The story's numbers: 180 connections over a target of 50 a pod make ceil(3.6) = 4 pods.
const CONNECTIONS: usize = 180;
const TARGET_PER_POD: i64 = 50;
const MAX_REPLICAS: usize = 4;
/// Connections opened once the fleet has scaled up, to land on every pod: the ones on pods
/// that scale-down removes must be drained with 1001.
const SPREAD: usize = 24;
const STABILIZATION_SECONDS: i64 = 20;
/// The operator's scale-down policy period (one pod per minute), plus a margin.
const SCALE_DOWN_PERIOD: Duration = Duration::from_secs(65);
/// Scale-up: metrics pipeline (scrape, KEDA, HPA sync 5 s) plus four pods starting.
const SCALE_UP_DEADLINE: Duration = Duration::from_secs(240);
/// Scale-down: the window, then one pod a minute (the operator's policy): 4 -> 1 takes two
/// minutes after the window.
const SCALE_DOWN_DEADLINE: Duration = Duration::from_secs(420);

/// metrics-server, started once for this test binary's stories.
fn metrics_server() -> Result<&'static Mutex<MetricsServer>> {
    static SERVER: OnceLock<Result<Mutex<MetricsServer>, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            MetricsServer::start(cluster().control_plane(), NODE_IP)
                .map(Mutex::new)
                .map_err(|err| format!("{err:#}"))
        })
        .as_ref()
        .map_err(|err| anyhow::anyhow!("{err}"))
}

fn spec_of(kubectl: &Kubectl, kind: &str, name: &str) -> Result<Value> {
    Ok(kubectl.get(kind, name)?["spec"].clone())
}

/// The Deployment's desired count and its Ready pods.
fn deployment_counts(kubectl: &Kubectl) -> Result<(i64, i64)> {
    let deployment = kubectl.get("deployment", DEPLOYMENT)?;
    Ok((
        deployment["spec"]["replicas"].as_i64().unwrap_or(1),
        deployment["status"]["readyReplicas"].as_i64().unwrap_or(0),
    ))
}

/// A Prometheus of the test's own that scrapes the gateways as the chart's ServiceMonitor tells
/// the Prometheus Operator to, so the series carry the labels users get.
fn scraping_prometheus() -> Result<Prometheus> {
    Prometheus::start(
        &scrape_jobs(&render_monitoring()?, SCRAPE)?,
        &cluster().kubectl(),
        None,
        SCRAPE,
    )
}

/// Waits until the Deployment has [`MAX_REPLICAS`] Ready pods. `each_poll` runs first at every
/// poll (checking the tools still run, playing their part) and says what it saw.
fn await_scaled_up(
    kubectl: &Kubectl,
    hpa: &str,
    mut each_poll: impl FnMut() -> Result<String>,
) -> Result<()> {
    eventually(
        &format!("{MAX_REPLICAS} Ready gateway pods"),
        SCALE_UP_DEADLINE,
        || {
            let seen = each_poll()?;
            let (desired, ready) = deployment_counts(kubectl)?;
            ensure!(
                ready == MAX_REPLICAS as i64,
                "Deployment {desired} desired, {ready} Ready; {seen}HPA status {}",
                kubectl.get("hpa", hpa)?["status"]
            );
            Ok(())
        },
    )
}

#[test]
fn keda_scales_the_fleet_on_live_connections_and_scale_down_drains_with_1001() -> Result<()> {
    let control_plane = cluster().control_plane();
    let started = Instant::now();
    let mut keda = Keda::start(control_plane, NODE_IP)?;
    eprintln!("KEDA up in {:.1}s", started.elapsed().as_secs_f64());
    let mut prometheus = scraping_prometheus()?;
    let server = prometheus.url();
    let fleet = Fleet::production_with("autoscale-keda", |manifest| {
        with_room_for_load(manifest);
        // Every new connection may land on any pod, so that all pods hold clients.
        manifest["spec"]["sessionAffinity"] = json!({"type": "None"});
        manifest["spec"]["drain"] = json!({"gracePeriodSeconds": 5});
        manifest["spec"]["autoscaling"] = json!({
            "minReplicas": 1,
            "maxReplicas": MAX_REPLICAS,
            "targetConnectionsPerPod": TARGET_PER_POD,
            "scaleDownStabilizationSeconds": STABILIZATION_SECONDS,
            "keda": {"prometheus": {"serverAddress": server}},
        });
    })?;
    let kubectl = fleet.kubectl();
    let namespace = fleet.namespace.name().to_owned();
    await_ready_pods(kubectl, NAME, 1)?;

    // What the operator wrote, and what KEDA made of it.
    let scaled_object = spec_of(kubectl, "scaledobject", DEPLOYMENT)?;
    let trigger = &scaled_object["triggers"][0];
    ensure!(
        trigger["type"] == "prometheus"
            && trigger["metricType"] == "AverageValue"
            && trigger["metadata"]["threshold"].as_str()
                == Some(TARGET_PER_POD.to_string().as_str())
            && trigger["metadata"]["query"]
                == format!(
                    r#"sum(wsfleet_gateway_active_connections{{namespace="{namespace}",service="{NAME}"}})"#
                ),
        "ScaledObject: {scaled_object}"
    );
    ensure!(
        kubectl.try_get("hpa", OWN_HPA)?.is_none(),
        "the operator's own HPA exists beside KEDA's"
    );
    eventually(
        "KEDA's HPA and ScaledObject Ready",
        Duration::from_secs(120),
        || {
            keda.ensure_running().map_err(give_up)?;
            let object = kubectl.get("scaledobject", DEPLOYMENT)?;
            let ready = condition(&object, "Ready").cloned();
            ensure!(
                ready.as_ref().is_some_and(|c| c["status"] == "True"),
                "ScaledObject Ready: {ready:?}"
            );
            let hpa = kubectl.get("hpa", KEDA_HPA)?;
            ensure!(
                hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
                    == STABILIZATION_SECONDS,
                "KEDA's HPA behavior: {}",
                hpa["spec"]["behavior"]
            );
            Ok(())
        },
    )
    .map_err(|err| err.context(keda.log_tails()))?;

    // 180 connections, all on the one pod there is.
    let load = fleet.open_load_every(CONNECTIONS, Duration::from_secs(2))?;
    let opened = Instant::now();
    await_scaled_up(kubectl, KEDA_HPA, || {
        keda.ensure_running().map_err(give_up)?;
        prometheus.ensure_running().map_err(give_up)?;
        Ok(String::new())
    })
    .map_err(|err| err.context(keda.log_tails()))?;
    let scale_up = opened.elapsed();
    eprintln!(
        "180th connection -> {MAX_REPLICAS} Ready pods: {:.1}s",
        scale_up.as_secs_f64()
    );
    ensure!(load.ended() == 0, "connections ended while scaling up");

    // What a user sees: the fleet's column and the HPA KEDA made.
    eventually(
        "kubectl get wss to show 4 ready",
        Duration::from_secs(60),
        || {
            let row = table_row(kubectl, "wss", NAME)?;
            ensure!(row["REPLICAS"] == MAX_REPLICAS.to_string(), "{row:?}");
            Ok(())
        },
    )?;
    eprintln!("{}", kubectl.run(&["get", "wss", NAME])?);
    let described = kubectl.run(&["describe", "hpa", KEDA_HPA])?;
    eprintln!("{described}");
    ensure!(
        described.contains("ScalingActive")
            && described.contains("SuccessfulRescale")
            && described.contains(&format!("Deployment/{DEPLOYMENT}")),
        "kubectl describe hpa {KEDA_HPA}:\n{described}"
    );

    // Clients on every pod. The load then holds for a scale-down period: the HPA counts a
    // period's net change against the one-pod-a-minute policy, so closing within a minute of
    // the scale-up would let it drop 4 -> 1 at once. The count must hold at 4 meanwhile.
    let spread = fleet.open_load_every(SPREAD, Duration::from_secs(1))?;
    let survivors_before = gateway_pods(kubectl, NAME)?;
    let scaled_up = opened + scale_up;
    while scaled_up.elapsed() < SCALE_DOWN_PERIOD {
        let (desired, _) = deployment_counts(kubectl)?;
        ensure!(
            desired == MAX_REPLICAS as i64,
            "the count moved to {desired} under steady load"
        );
        std::thread::sleep(Duration::from_secs(3));
    }
    // Then the 180 go: the total falls to 24, a single pod's worth.
    let talks = load.finish()?;
    let closed = Instant::now();
    ensure!(
        talks.iter().all(|talk| talk.ending.is_none()),
        "some of the 180 connections ended before they were closed"
    );
    eventually("one gateway pod left", SCALE_DOWN_DEADLINE, || {
        keda.ensure_running().map_err(give_up)?;
        let (desired, ready) = deployment_counts(kubectl)?;
        let pods = gateway_pods(kubectl, NAME)?;
        let all = wsfleet_e2e::fleet::pods_of(kubectl, NAME)?.len();
        ensure!(
            desired == 1 && ready == 1 && pods.len() == 1 && all == 1,
            "Deployment {desired} desired, {ready} Ready, {all} pods:\n{}",
            wsfleet_e2e::fleet::describe_pods(kubectl, NAME)?
        );
        Ok(())
    })
    .map_err(|err| err.context(keda.log_tails()).context(cluster().log_tails()))?;
    let scale_down = closed.elapsed();
    eprintln!(
        "close -> 1 pod: {:.1}s (stabilization {STABILIZATION_SECONDS}s, then one pod a minute)",
        scale_down.as_secs_f64()
    );
    let survivor = gateway_pods(kubectl, NAME)?
        .into_keys()
        .next()
        .context("no gateway pod left")?;
    let talks = spread.finish()?;
    check_drained(&talks, &survivor, &survivors_before)?;

    let (operator_mib, adapter_mib) = keda.resident_mib()?;
    eprintln!(
        "memory: keda-operator {operator_mib:.0} MiB, keda-adapter {adapter_mib:.0} MiB, prometheus {:.0} MiB",
        prometheus.resident_bytes()? as f64 / (1024.0 * 1024.0)
    );
    // While KEDA still runs to remove its finalizer from the ScaledObject, which the fleet's
    // foreground deletion waits for.
    kubectl.run(&[
        "delete",
        "wss",
        NAME,
        "--cascade=foreground",
        "--timeout=120s",
    ])?;
    Ok(())
}

/// Every connection on a removed pod ended with 1001 and none was cut without a close frame;
/// those on the surviving pod are still open.
fn check_drained(
    talks: &[Talk],
    survivor: &str,
    pods: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    let mut drained = 0;
    for talk in talks {
        ensure!(
            pods.contains_key(&talk.gateway),
            "a connection went to {}, not a gateway pod",
            talk.gateway
        );
        match (&talk.ending, talk.gateway == survivor) {
            (None, true) => {}
            (Some((Ending::Closed(1001), _)), false) => drained += 1,
            (ending, on_survivor) => {
                anyhow::bail!(
                    "a connection on {} (survivor: {on_survivor}) ended {ending:?}",
                    talk.gateway
                )
            }
        }
    }
    ensure!(
        drained > 0,
        "no connection was on a removed pod: {:?}",
        talks.iter().map(|t| &t.gateway).collect::<Vec<_>>()
    );
    eprintln!(
        "scale-down drained {drained} of {} connections with 1001; {} stayed on the surviving pod",
        talks.len(),
        talks.len() - drained
    );
    Ok(())
}

#[test]
fn the_operators_hpa_scales_on_connections_served_as_a_custom_metric() -> Result<()> {
    let control_plane = cluster().control_plane();
    let mut adapter = CustomMetricsAdapter::start(control_plane, NODE_IP)?;
    let rules =
        AdapterRule::parse_all(include_str!("../../../docs/prometheus-adapter-rules.yaml"))?;
    let rule = rules.first().context("the docs ship no rule")?;
    let mut prometheus = scraping_prometheus()?;
    let fleet = Fleet::production_with("autoscale-custom", |manifest| {
        with_room_for_load(manifest);
        manifest["spec"]["sessionAffinity"] = json!({"type": "None"});
        manifest["spec"]["autoscaling"] = json!({
            "minReplicas": 1,
            "maxReplicas": MAX_REPLICAS,
            "targetConnectionsPerPod": TARGET_PER_POD,
        });
    })?;
    let kubectl = fleet.kubectl();
    let namespace = fleet.namespace.name().to_owned();
    await_ready_pods(kubectl, NAME, 1)?;

    // The operator's HPA asks for exactly the metric the rule serves.
    let hpa = spec_of(kubectl, "hpa", OWN_HPA)?;
    let pods_metric = hpa["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|metric| metric["type"] == "Pods")
        .with_context(|| format!("no Pods metric in {hpa}"))?;
    ensure!(
        pods_metric["pods"]["metric"]["name"] == rule.metric()
            && pods_metric["pods"]["target"]["averageValue"].as_str()
                == Some(TARGET_PER_POD.to_string().as_str()),
        "the HPA's Pods metric {pods_metric} is not the rule's {}",
        rule.metric()
    );

    let load = fleet.open_load_every(CONNECTIONS, Duration::from_secs(2))?;
    let opened = Instant::now();
    let mut served = Vec::new();
    await_scaled_up(kubectl, OWN_HPA, || {
        adapter.ensure_running().map_err(give_up)?;
        prometheus.ensure_running().map_err(give_up)?;
        // prometheus-adapter's part: the rule's query for the fleet's pods, answered now.
        let pods = gateway_pods(kubectl, NAME)?;
        let names: Vec<&str> = pods.values().map(String::as_str).collect();
        served = rule.serve_pods(&prometheus, &adapter, &namespace, &names)?;
        Ok(format!("served {served:?}; "))
    })?;
    eprintln!(
        "180th connection -> {MAX_REPLICAS} Ready pods through custom.metrics.k8s.io: {:.1}s \
         (served per pod: {served:?})",
        opened.elapsed().as_secs_f64()
    );

    // What the HPA reads, and what a user sees of it.
    let listed: Value = serde_json::from_str(&kubectl.raw(&format!(
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{namespace}/pods/*/{}",
        rule.metric()
    ))?)?;
    ensure!(
        listed["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty()),
        "custom.metrics.k8s.io lists no values: {listed}"
    );
    let described = kubectl.run(&["describe", "hpa", OWN_HPA])?;
    eprintln!("{described}");
    ensure!(
        described.contains("SuccessfulRescale")
            && described.contains(&format!("\"{}\" on pods", rule.metric())),
        "kubectl describe hpa {OWN_HPA}:\n{described}"
    );
    let talks = load.finish()?;
    ensure!(
        talks.iter().all(|talk| talk.ending.is_none()),
        "connections ended while the fleet scaled up"
    );
    Ok(())
}

#[test]
fn cpu_and_memory_targets_read_real_pod_metrics_and_kubectl_scale_is_ignored_under_an_hpa()
-> Result<()> {
    let started = Instant::now();
    let server = metrics_server()?;
    eprintln!(
        "metrics-server serving in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let fleet = Fleet::production_with("autoscale-resources", |manifest| {
        manifest["spec"]["autoscaling"] = json!({
            "minReplicas": 1,
            "maxReplicas": 2,
            "targetCPUUtilization": 80,
            "targetMemoryUtilization": 90,
        });
    })?;
    let kubectl = fleet.kubectl();
    await_ready_pods(kubectl, NAME, 1)?;
    let hpa = eventually(
        "the HPA to scale on current CPU and memory",
        Duration::from_secs(180),
        || {
            let hpa = kubectl.get("hpa", OWN_HPA)?;
            let active = condition(&hpa, "ScalingActive").cloned();
            ensure!(
                active.as_ref().is_some_and(|c| c["status"] == "True"),
                "ScalingActive: {active:?}"
            );
            let current: Vec<(String, i64)> = hpa["status"]["currentMetrics"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|metric| {
                    let resource = &metric["resource"];
                    Some((
                        resource["name"].as_str()?.to_owned(),
                        resource["current"]["averageUtilization"].as_i64()?,
                    ))
                })
                .collect();
            ensure!(
                current.iter().any(|(name, _)| name == "cpu")
                    && current.iter().any(|(name, _)| name == "memory"),
                "current metrics: {}",
                hpa["status"]["currentMetrics"]
            );
            Ok(hpa)
        },
    )?;
    eprintln!("HPA current metrics: {}", hpa["status"]["currentMetrics"]);
    eprintln!("{}", kubectl.run(&["describe", "hpa", OWN_HPA])?);

    // Under an HPA: the scale subresource takes the write (it sets spec.replicas), the operator
    // leaves the Deployment's count to the HPA.
    let (before, _) = deployment_counts(kubectl)?;
    let scaled = kubectl.run(&["scale", &format!("wss/{NAME}"), "--replicas=3"])?;
    ensure!(scaled.contains("scaled"), "kubectl scale said {scaled}");
    ensure!(
        spec_of(kubectl, "wss", NAME)?["replicas"] == 3,
        "spec.replicas was not written"
    );
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(20) {
        let (desired, _) = deployment_counts(kubectl)?;
        ensure!(
            desired == before && desired <= 2,
            "the Deployment went from {before} to {desired} replicas under the HPA"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!("kubectl scale under an HPA: spec.replicas=3 stored, the Deployment kept {before}");
    let server = server.lock().unwrap_or_else(|p| p.into_inner());
    eprintln!("memory: metrics-server {:.0} MiB", server.resident_mib()?);
    Ok(())
}

#[test]
fn kubectl_scale_sets_the_count_of_a_fleet_without_autoscaling() -> Result<()> {
    let fleet = Fleet::production_with("autoscale-off", |manifest| {
        manifest["spec"]
            .as_object_mut()
            .expect("spec is an object")
            .remove("autoscaling");
        manifest["spec"]["replicas"] = json!(1);
    })?;
    let kubectl = fleet.kubectl();
    await_ready_pods(kubectl, NAME, 1)?;
    let scale = kubectl.get("wss", NAME)?;
    ensure!(scale["spec"]["replicas"] == 1, "{}", scale["spec"]);
    let scaled = kubectl.run(&["scale", &format!("wss/{NAME}"), "--replicas=3"])?;
    ensure!(scaled.contains("scaled"), "kubectl scale said {scaled}");
    await_ready_pods(kubectl, NAME, 3)?;
    eventually(
        "kubectl get wss to show 3 ready",
        Duration::from_secs(60),
        || {
            let row = table_row(kubectl, "wss", NAME)?;
            ensure!(row["REPLICAS"] == "3", "{row:?}");
            Ok(())
        },
    )?;
    // The scale subresource reads what it wrote and the selector of the pods.
    let subresource: Value = serde_json::from_str(&kubectl.raw(&format!(
        "/apis/wsfleet.io/v1alpha1/namespaces/{}/websocketservices/{NAME}/scale",
        fleet.namespace.name()
    ))?)?;
    ensure!(
        subresource["spec"]["replicas"] == 3 && subresource["status"]["replicas"] == 3,
        "scale subresource: {subresource}"
    );
    ensure!(
        subresource["status"]["selector"]
            .as_str()
            .is_some_and(|selector| selector.contains("app.kubernetes.io/instance=chat-prod")),
        "scale subresource selector: {subresource}"
    );
    Ok(())
}
