//! Story: the dashboard and the alerts the chart ships, asked of a real Prometheus that scrapes
//! a running fleet the way the chart's ServiceMonitors tell the Prometheus Operator to. Every
//! panel query, template variable and alert expression (without its threshold) must return
//! series: one that returns nothing names a metric or a label that does not exist.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use wsfleet_e2e::fleet::await_ready_pods;
use wsfleet_e2e::monitoring::{
    alert_rules, dashboard, dashboard_queries, label_values, legend_text, panels,
    render_monitoring, rules_file, scrape_jobs, substitute_variables, without_threshold,
};
use wsfleet_e2e::panels::{Line, Panel, render_png};
use wsfleet_e2e::poll::{eventually, give_up};
use wsfleet_e2e::prometheus::{Prometheus, Sample};

use crate::setup::{Fleet, NAME, block_on, cluster, ensure_talked_whole};

/// Scrape and rule evaluation interval: short, so a rate has two samples within seconds.
const INTERVAL: Duration = Duration::from_secs(2);
/// What Grafana's `$__rate_interval` stands for here.
const RATE_INTERVAL: &str = "1m";
/// How long one query may take to show series once the traffic behind it happened.
const QUERY_DEADLINE: Duration = Duration::from_secs(90);
/// Points each pictured line needs: half a minute of scrapes, so the picture shows a change.
const PICTURE_POINTS: usize = 15;
/// A fleet the operator cannot serve: its upstream Service does not exist.
const BROKEN: &str = "no-upstream";
/// Why the operator fails to reconcile [`BROKEN`].
const BROKEN_REASON: &str = "UpstreamServiceNotFound";
/// The alert that [`BROKEN`] raises (pending: it needs 15 minutes to fire).
const EXPECTED_ALERT: &str = "WsfleetOperatorReconcileErrors";

#[test]
fn every_dashboard_and_alert_query_returns_series_from_a_running_fleet() -> Result<()> {
    let started = Instant::now();
    let fleet = Fleet::production_with("metrics", |_| {})?;
    let kubectl = fleet.kubectl();
    let namespace = fleet.namespace.name().to_owned();
    await_ready_pods(kubectl, NAME, 2)?;
    // Reconcile errors exist only once a reconcile fails: a fleet without its upstream.
    kubectl.apply(&format!(
        "apiVersion: wsfleet.io/v1alpha1
kind: WebSocketService
metadata: {{name: {BROKEN}}}
spec:
  replicas: 0
  upstream: {{service: no-such-backend, port: 8080}}
"
    ))?;

    let objects = render_monitoring()?;
    let jobs = scrape_jobs(&objects, INTERVAL)?;
    let mut prometheus = Prometheus::start(
        &jobs,
        &cluster().kubectl(),
        Some(&rules_file(&objects)?),
        INTERVAL,
    )?;

    let scraping_since = unix_now();
    // Traffic: connections that talk, and one refused handshake.
    let lives = fleet.pod_lives()?;
    let load = fleet.open_load_every(3, Duration::from_millis(200))?;
    let endpoint = fleet.endpoint()?;
    let status = block_on(endpoint.refusal("not-a-token", &endpoint.origin))?;
    ensure!(status == 401, "a bad token got {status}");

    eventually(
        "Prometheus to scrape both operators and both gateways",
        QUERY_DEADLINE,
        || {
            prometheus.ensure_running().map_err(give_up)?;
            let operators = prometheus.query(r#"up{job="wsfleet-metrics"} == 1"#)?;
            let gateways = prometheus.query(&format!(
                r#"up{{namespace="{namespace}", service="{NAME}"}} == 1"#
            ))?;
            ensure!(
                operators.len() == 2 && gateways.len() == 2,
                "{} operators and {} gateways up; targets: {}; discovery error: {:?}",
                operators.len(),
                gateways.len(),
                describe_targets(&prometheus),
                prometheus.discovery_error()
            );
            Ok(())
        },
    )?;
    let refused_expr = format!(
        r#"sum(wsfleet_gateway_refusals_total{{namespace="{namespace}", reason="token_invalid"}}) > 0"#
    );
    eventually(
        "the refusal and the connections in the metrics",
        QUERY_DEADLINE,
        || {
            let refused = prometheus.query(&refused_expr)?;
            let open = prometheus.query(&format!(
                r#"sum(wsfleet_gateway_active_connections{{namespace="{namespace}"}}) >= 3"#
            ))?;
            ensure!(
                !refused.is_empty() && !open.is_empty(),
                "refused {refused:?}, open {open:?}"
            );
            Ok(())
        },
    )?;

    // The broken fleet failed before Prometheus looked; one more failure makes a rate of it.
    let errors_expr =
        format!(r#"sum(wsfleet_operator_reconcile_errors_total{{reason="{BROKEN_REASON}"}})"#);
    let before = eventually(
        "the broken fleet's reconcile errors",
        QUERY_DEADLINE,
        || {
            let samples = prometheus.query(&errors_expr)?;
            let value = samples.first().context("no series")?.value.parse::<f64>()?;
            Ok(value)
        },
    )?;
    kubectl.run(&[
        "patch",
        "wss",
        BROKEN,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"upstream":{"port":8081}}}"#,
    ])?;
    eventually("one more reconcile error", QUERY_DEADLINE, || {
        let samples = prometheus.query(&errors_expr)?;
        let value = samples.first().context("no series")?.value.parse::<f64>()?;
        ensure!(value > before, "still {value}");
        Ok(())
    })?;

    let mut checked = Vec::new();
    let board = dashboard(&objects)?;
    let variables = [("namespace", namespace.as_str()), ("fleet", NAME)];
    for query in dashboard_queries(&board) {
        let expr = substitute_variables(&query.expr, RATE_INTERVAL, &variables);
        let (expr, needed_labels) = match label_values(&expr) {
            Some((selector, label)) => (selector.to_owned(), vec![label.to_owned()]),
            None => (expr.clone(), query.legend_labels.clone()),
        };
        let samples = eventually(&format!("{}: {expr}", query.source), QUERY_DEADLINE, || {
            let samples = prometheus.query(&expr)?;
            ensure!(!samples.is_empty(), "no series");
            Ok(samples)
        })?;
        for sample in &samples {
            for label in &needed_labels {
                ensure!(
                    sample.labels.contains_key(label),
                    "{}: {expr} returns {:?} without label {label}",
                    query.source,
                    sample.labels
                );
            }
        }
        checked.push(format!("{} ({} series)", query.source, samples.len()));
    }
    // The template variables offer this fleet.
    let offered = prometheus.query("wsfleet_gateway_active_connections")?;
    ensure!(
        offered
            .iter()
            .any(
                |s| s.labels.get("namespace").and_then(|v| v.as_str()) == Some(&namespace)
                    && s.labels.get("service").and_then(|v| v.as_str()) == Some(NAME)
            ),
        "the dashboard's variables would not offer {namespace}/{NAME}: {offered:?}"
    );

    let mut skipped = Vec::new();
    for rule in alert_rules(&objects) {
        let expr = without_threshold(&rule.expr);
        // kube-state-metrics cannot be built here (see README.md, Tests): these read its
        // custom resource state metrics, which only promtool's unit tests exercise.
        if expr.contains("kube_websocketservice_") {
            skipped.push(format!("{}: {expr}", rule.alert));
            continue;
        }
        let samples = eventually(
            &format!("alert {}: {expr}", rule.alert),
            QUERY_DEADLINE,
            || {
                let samples = prometheus.query(&expr)?;
                ensure!(!samples.is_empty(), "no series");
                Ok(samples)
            },
        )?;
        checked.push(format!("alert {} ({} series)", rule.alert, samples.len()));
    }

    // Prometheus evaluates every rule without error, and neither the operator nor this fleet
    // raises an alert but the one the broken fleet asks for.
    eventually(
        "every rule evaluated, and no unexpected alert",
        QUERY_DEADLINE,
        || {
            let mut unhealthy = Vec::new();
            for group in prometheus.rule_groups()? {
                for rule in group["rules"].as_array().into_iter().flatten() {
                    if rule["health"] != "ok" {
                        unhealthy.push(format!(
                            "{} {} {}",
                            rule["name"], rule["health"], rule["lastError"]
                        ));
                    }
                }
            }
            ensure!(
                unhealthy.is_empty(),
                "rules not evaluated cleanly: {unhealthy:?}"
            );
            // Fleets of stories running beside this one are theirs to judge.
            let active: BTreeSet<String> = prometheus
                .query("ALERTS")?
                .iter()
                .filter(|alert| {
                    [namespace.as_str(), ""].contains(&label(alert, "namespace").as_str())
                })
                .map(|alert| label(alert, "alertname"))
                .collect();
            ensure!(
                active.iter().all(|name| name == EXPECTED_ALERT),
                "alerts pending or firing: {active:?}"
            );
            Ok(())
        },
    )?;
    eventually(
        &format!("the broken fleet to raise {EXPECTED_ALERT}"),
        QUERY_DEADLINE,
        || {
            let alerts = prometheus.query(&format!(
                r#"ALERTS{{alertname="{EXPECTED_ALERT}", reason="{BROKEN_REASON}"}}"#
            ))?;
            ensure!(
                !alerts.is_empty(),
                "not pending; the rule says {:?}",
                alert_state(&prometheus, EXPECTED_ALERT)
            );
            Ok(())
        },
    )?;

    // Traffic that changes while the picture's range fills: connections that talk and close,
    // and more refusals.
    let more = fleet.open_load_every(12, Duration::from_millis(500))?;
    for _ in 0..3 {
        let status = block_on(endpoint.refusal("not-a-token", &endpoint.origin))?;
        ensure!(status == 401, "a bad token got {status}");
    }
    eventually("the picture's connections to talk", QUERY_DEADLINE, || {
        ensure!(more.echoed() >= 24, "{} echoes", more.echoed());
        Ok(())
    })?;
    ensure_talked_whole(&more.finish()?).context("the connections opened for the picture")?;
    let closes_expr = format!(
        r#"sum(wsfleet_gateway_closes_total{{namespace="{namespace}", by="client"}}) >= 12"#
    );
    eventually("their closes in the metrics", QUERY_DEADLINE, || {
        ensure!(!prometheus.query(&closes_expr)?.is_empty(), "not yet");
        Ok(())
    })?;
    let picture = draw_panels(&prometheus, &board, &variables, scraping_since)?;
    let resident = prometheus.resident_bytes()?;
    load.ensure_undisturbed(&fleet, &lives)
        .context("the connections behind the metrics")?;
    eprintln!(
        "checked against a real Prometheus:\n  {}\nskipped (no kube-state-metrics):\n  {}\n\
         Prometheus resident memory {} MiB; story took {:.1}s; the panels: {}",
        checked.join("\n  "),
        skipped.join("\n  "),
        resident / (1024 * 1024),
        started.elapsed().as_secs_f64(),
        picture.display()
    );
    Ok(())
}

/// The panels this picture shows: the ones a person looks at first.
const PICTURED: [&str; 6] = [
    "Active connections",
    "Handshakes/s by outcome",
    "Handshake duration p50 and p99",
    "Messages/s",
    "Refusals/s by reason",
    "Closes/s by code and side",
];

/// Draws the main panels from what Prometheus recorded since `since` into a PNG beside the
/// test's other outputs, and returns its path. Each pictured panel must come to have a line to
/// draw.
fn draw_panels(
    prometheus: &Prometheus,
    board: &serde_json::Value,
    variables: &[(&str, &str)],
    since: f64,
) -> Result<PathBuf> {
    let mut pictured = Vec::new();
    for panel in panels(board) {
        let title = panel["title"].as_str().unwrap_or_default();
        if !PICTURED.contains(&title) {
            continue;
        }
        // A rate has a point once two scrapes fall in its window: the story may reach here
        // within a few scrapes of the first, before a line worth looking at exists.
        let lines = eventually(
            &format!("panel {title:?} to have a line to draw"),
            QUERY_DEADLINE,
            || {
                let mut lines = Vec::new();
                for target in panel["targets"].as_array().into_iter().flatten() {
                    let expr = target["expr"].as_str().unwrap_or_default();
                    let expr = substitute_variables(expr, RATE_INTERVAL, variables);
                    let format = target["legendFormat"].as_str().unwrap_or_default();
                    for series in prometheus.query_range(&expr, since, unix_now(), INTERVAL)? {
                        lines.push(Line {
                            legend: legend_text(format, &series.labels),
                            points: series.points,
                        });
                    }
                }
                ensure!(
                    lines.iter().any(|line| line.points.len() >= PICTURE_POINTS),
                    "no series with {PICTURE_POINTS} points: {:?}",
                    lines
                        .iter()
                        .map(|line| (&line.legend, line.points.len()))
                        .collect::<Vec<_>>()
                );
                Ok(lines)
            },
        )?;
        pictured.push(Panel {
            title: title.to_owned(),
            lines,
        });
    }
    let missing: Vec<&str> = PICTURED
        .iter()
        .filter(|title| !pictured.iter().any(|panel| panel.title == **title))
        .copied()
        .collect();
    ensure!(
        missing.is_empty(),
        "the dashboard has no panels {missing:?}"
    );
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wsfleet-dashboard.png");
    render_png(&pictured, &out)?;
    Ok(out)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

fn label(sample: &Sample, name: &str) -> String {
    sample
        .labels
        .get(name)
        .and_then(|value| value.as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Each active target's job, address, health and last error, for a failure message.
fn describe_targets(prometheus: &Prometheus) -> String {
    match prometheus.active_targets() {
        Ok(targets) => targets
            .iter()
            .map(|target| {
                format!(
                    "{} {} {} {}",
                    target["labels"]["job"],
                    target["scrapeUrl"],
                    target["health"],
                    target["lastError"]
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        Err(err) => format!("(cannot list targets: {err:#})"),
    }
}

/// The rule named `alert` as /api/v1/rules reports it: state, health, last error, alerts.
fn alert_state(prometheus: &Prometheus, alert: &str) -> String {
    let groups = match prometheus.rule_groups() {
        Ok(groups) => groups,
        Err(err) => return format!("(cannot list rules: {err:#})"),
    };
    groups
        .iter()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .find(|rule| rule["name"] == alert)
        .map(|rule| {
            format!(
                "{} {} {} {} alerts {}",
                rule["state"], rule["health"], rule["lastError"], rule["query"], rule["alerts"]
            )
        })
        .unwrap_or_else(|| "no such rule".to_owned())
}
