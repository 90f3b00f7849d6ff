//! Every PromQL expression the chart ships (alert rules and dashboard panels), rendered by the
//! real helm with every feature on, parses as PromQL. A typo in a query would otherwise only
//! show up as an alert that never fires or an empty panel.

use std::process::Command;

use serde_json::Value;
use wsfleet_e2e::binaries::control_plane_bin_dir;
use wsfleet_packaging::repo_root;

fn rendered_all_features() -> Vec<Value> {
    let helm = control_plane_bin_dir()
        .expect("control-plane bin dir")
        .join("helm");
    let chart = repo_root().join("charts/wsfleet");
    let values = chart.join("ci/all-features-values.yaml");
    let output = Command::new(&helm)
        .args([
            "template",
            "wsfleet",
            chart.to_str().unwrap(),
            "-f",
            values.to_str().unwrap(),
        ])
        .output()
        .unwrap_or_else(|err| panic!("running {}: {err}", helm.display()));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .split("\n---")
        .map(|doc| serde_yaml::from_str::<Value>(doc).expect("rendered YAML parses"))
        .filter(|object| !object.is_null())
        .collect()
}

/// Grafana replaces its variables before sending a query; do the same with plausible values.
fn substitute_dashboard_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$namespace", "chat")
        .replace("$fleet", "chat")
}

#[test]
fn every_alert_and_panel_query_parses() {
    let objects = rendered_all_features();
    let mut queries = Vec::new();
    for object in &objects {
        if object["kind"] == "PrometheusRule" {
            for group in object["spec"]["groups"].as_array().unwrap() {
                for rule in group["rules"].as_array().unwrap() {
                    queries.push((
                        rule["alert"].as_str().unwrap().to_string(),
                        rule["expr"].as_str().unwrap().to_string(),
                    ));
                }
            }
        }
        if object["kind"] == "ConfigMap" && object["data"]["wsfleet.json"].is_string() {
            let board: Value =
                serde_json::from_str(object["data"]["wsfleet.json"].as_str().unwrap()).unwrap();
            for panel in board["panels"].as_array().unwrap() {
                for target in panel["targets"].as_array().into_iter().flatten() {
                    queries.push((
                        format!("panel {:?}", panel["title"].as_str().unwrap()),
                        substitute_dashboard_variables(target["expr"].as_str().unwrap()),
                    ));
                }
            }
        }
    }
    assert!(queries.len() > 15, "found only {} queries", queries.len());

    let failures: Vec<String> = queries
        .iter()
        .filter_map(|(name, expr)| {
            promql_parser::parser::parse(expr)
                .err()
                .map(|err| format!("{name}: {err}\n    {expr}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "queries that do not parse:\n{}",
        failures.join("\n")
    );
}
