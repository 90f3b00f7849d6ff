//! What the chart ships for monitoring, as `helm template` renders it: the PrometheusRule's
//! rule groups (a Prometheus rules file), the ServiceMonitors (turned into the scrape jobs the
//! Prometheus Operator would generate from them) and the Grafana dashboard's queries.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::binaries::{control_plane_bin_dir, workspace_root};
use crate::command::run;
use crate::fleet::OPERATOR_NAMESPACE;

/// The release name `install_chart` uses, so rendered job names match the installed chart.
pub const RELEASE: &str = "wsfleet";

/// Every optional monitoring part of the chart on, thresholds at their defaults.
pub const MONITORING_VALUES: [&str; 5] = [
    "metrics.serviceMonitor.enabled=true",
    "metrics.prometheusRule.enabled=true",
    "metrics.prometheusRule.resourceAlerts=true",
    "kubeStateMetrics.customResourceState=true",
    "dashboard.enabled=true",
];

/// `helm template` of charts/wsfleet as release [`RELEASE`] in [`OPERATOR_NAMESPACE`], with
/// `--set` for each of `values`: every rendered object.
pub fn render_chart(values: &[&str]) -> Result<Vec<Value>> {
    let helm = control_plane_bin_dir()?.join("helm");
    let chart = workspace_root()
        .join("charts/wsfleet")
        .display()
        .to_string();
    let mut args = vec![
        "template",
        RELEASE,
        chart.as_str(),
        "--namespace",
        OPERATOR_NAMESPACE,
    ];
    for value in values {
        args.extend(["--set", value]);
    }
    let rendered = run(helm, &args)?;
    let mut objects = Vec::new();
    for document in rendered.split("\n---") {
        let object: Value = serde_yaml::from_str(document)
            .with_context(|| format!("parsing a rendered document:\n{document}"))?;
        if !object.is_null() {
            objects.push(object);
        }
    }
    Ok(objects)
}

fn of_kind<'a>(objects: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    objects.iter().filter(move |object| object["kind"] == kind)
}

/// The chart with [`MONITORING_VALUES`], rendered.
pub fn render_monitoring() -> Result<Vec<Value>> {
    render_chart(&MONITORING_VALUES)
}

/// The PrometheusRule's `spec.groups` as a Prometheus rules file (YAML).
pub fn rules_file(objects: &[Value]) -> Result<String> {
    let rule = of_kind(objects, "PrometheusRule")
        .next()
        .context("the chart rendered no PrometheusRule")?;
    Ok(serde_yaml::to_string(
        &json!({"groups": rule["spec"]["groups"]}),
    )?)
}

/// One alerting rule: its name and expression.
#[derive(Debug, Clone)]
pub struct AlertRule {
    pub alert: String,
    pub expr: String,
}

/// Every alerting rule of the PrometheusRule.
pub fn alert_rules(objects: &[Value]) -> Vec<AlertRule> {
    of_kind(objects, "PrometheusRule")
        .flat_map(|rule| {
            rule["spec"]["groups"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .map(|rule| AlertRule {
            alert: rule["alert"].as_str().unwrap_or_default().to_owned(),
            expr: rule["expr"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// One query of the Grafana dashboard: a panel target, or a template variable's
/// `label_values(SELECTOR, LABEL)` (kept as written: [`DashboardQuery::expr`] is raw).
#[derive(Debug, Clone)]
pub struct DashboardQuery {
    /// "panel \"Title\" A" or "variable namespace".
    pub source: String,
    pub expr: String,
    /// Labels the legend shows (`{{label}}` in `legendFormat`): the result must carry them.
    pub legend_labels: Vec<String>,
}

/// The dashboard JSON the chart ships in its ConfigMap.
pub fn dashboard(objects: &[Value]) -> Result<Value> {
    let config_map = of_kind(objects, "ConfigMap")
        .find(|object| object["data"]["wsfleet.json"].is_string())
        .context("the chart rendered no dashboard ConfigMap")?;
    serde_json::from_str(
        config_map["data"]["wsfleet.json"]
            .as_str()
            .unwrap_or_default(),
    )
    .context("parsing the dashboard JSON")
}

/// Every panel of the dashboard, those inside collapsed rows too (they sit in the row's own
/// `panels`).
pub fn panels(board: &Value) -> impl Iterator<Item = &Value> {
    let top = board["panels"].as_array().into_iter().flatten();
    let nested = top
        .clone()
        .flat_map(|panel| panel["panels"].as_array().into_iter().flatten());
    top.chain(nested)
}

/// Every query of the dashboard: template variables first, then each panel's targets.
pub fn dashboard_queries(board: &Value) -> Vec<DashboardQuery> {
    let mut queries = Vec::new();
    for variable in board["templating"]["list"].as_array().into_iter().flatten() {
        if variable["type"] == "query" {
            let expr = variable["query"]["query"]
                .as_str()
                .or_else(|| variable["query"].as_str())
                .unwrap_or_default();
            queries.push(DashboardQuery {
                source: format!("variable {}", variable["name"].as_str().unwrap_or("?")),
                expr: expr.to_owned(),
                legend_labels: Vec::new(),
            });
        }
    }
    for panel in panels(board) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            queries.push(DashboardQuery {
                source: format!(
                    "panel {:?} {}",
                    panel["title"].as_str().unwrap_or("?"),
                    target["refId"].as_str().unwrap_or("?")
                ),
                expr: target["expr"].as_str().unwrap_or_default().to_owned(),
                legend_labels: legend_labels(legend),
            });
        }
    }
    queries
}

/// The label names in a Grafana legend format such as `{{namespace}}/{{service}}`.
fn legend_labels(format: &str) -> Vec<String> {
    format
        .split("{{")
        .skip(1)
        .filter_map(|rest| rest.split_once("}}"))
        .map(|(label, _)| label.trim().to_owned())
        .collect()
}

/// A template variable's `label_values(SELECTOR, LABEL)` split into its selector and label.
pub fn label_values(expr: &str) -> Option<(&str, &str)> {
    let inner = expr
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some((selector.trim(), label.trim()))
}

/// Replaces Grafana's variables the way Grafana does before it sends a query: `$__rate_interval`
/// by `rate_interval`, and every other `$name` (or `${name}`) by the value given for it.
pub fn substitute_variables(expr: &str, rate_interval: &str, values: &[(&str, &str)]) -> String {
    let mut expr = expr
        .replace("${__rate_interval}", rate_interval)
        .replace("$__rate_interval", rate_interval);
    for (name, value) in values {
        expr = expr
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    expr
}

/// What an alert's expression selects before its threshold: `absent(X)` becomes `X`, and a
/// comparison with a number at the top level (`X > 5`, `(X - time()) < 604800`) becomes `X`.
/// With thresholds that healthy test traffic does not cross, this is what must return series
/// for the alert to be able to fire at all.
pub fn without_threshold(expr: &str) -> String {
    let mut expr = expr.trim().to_owned();
    loop {
        if let Some(inner) = expr
            .strip_prefix("absent(")
            .and_then(|rest| rest.strip_suffix(')'))
            .filter(|inner| top_level(inner).is_some())
        {
            expr = inner.trim().to_owned();
            continue;
        }
        match top_level_comparison(&expr) {
            Some(at) => expr = expr[..at].trim().to_owned(),
            None => return expr,
        }
    }
}

/// Byte offsets of the characters of `expr` outside parentheses, braces, brackets and
/// strings; `None` when the brackets do not balance.
fn top_level(expr: &str) -> Option<Vec<usize>> {
    let mut depth = 0i32;
    let mut quote = None;
    let mut outside = Vec::new();
    let mut chars = expr.char_indices();
    while let Some((at, c)) = chars.next() {
        match (quote, c) {
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '(' | '{' | '[') => depth += 1,
            (None, ')' | '}' | ']') => {
                depth -= 1;
                if depth < 0 {
                    return None;
                }
            }
            (None, _) if depth == 0 => outside.push(at),
            (None, _) => {}
        }
    }
    (depth == 0 && quote.is_none()).then_some(outside)
}

/// Where the last top-level `OP NUMBER` starts, OP being a comparison.
fn top_level_comparison(expr: &str) -> Option<usize> {
    let outside = top_level(expr)?;
    for op in ["==", "!=", ">=", "<=", ">", "<"] {
        for &at in outside.iter().rev() {
            if !expr[at..].starts_with(op) {
                continue;
            }
            let rest = expr[at + op.len()..].trim();
            let rest = rest.strip_prefix("bool").map_or(rest, str::trim);
            if rest.parse::<f64>().is_ok() {
                return Some(at);
            }
        }
    }
    None
}

/// A scrape job made from one ServiceMonitor endpoint: Prometheus' `scrape_configs` entry
/// without its service discovery, and the namespaces that discovery looks in.
#[derive(Debug, Clone)]
pub struct ScrapeJob {
    pub config: Value,
    /// `None`: every namespace.
    pub namespaces: Option<Vec<String>>,
}

/// A panel target's `legendFormat` filled in as Grafana does: `{{label}}` becomes the series'
/// value of that label (empty if it has none).
pub fn legend_text(format: &str, labels: &serde_json::Map<String, Value>) -> String {
    let mut text = String::new();
    let mut rest = format;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}") else {
            break;
        };
        text.push_str(&rest[..start]);
        let name = rest[start + 2..start + end].trim();
        text.push_str(labels.get(name).and_then(Value::as_str).unwrap_or_default());
        rest = &rest[start + end + 2..];
    }
    text.push_str(rest);
    text
}

/// The scrape jobs the Prometheus Operator generates from the chart's ServiceMonitors, every
/// `interval`: its relabelling that keeps the selected Services' port, and sets `namespace`,
/// `service`, `pod`, `container`, `job` (the Service's name) and `endpoint`, over the meta
/// labels of Kubernetes service discovery's `endpointslice` role.
pub fn scrape_jobs(objects: &[Value], interval: Duration) -> Result<Vec<ScrapeJob>> {
    let interval = format!("{}s", interval.as_secs().max(1));
    let mut jobs = Vec::new();
    for monitor in of_kind(objects, "ServiceMonitor") {
        let name = monitor["metadata"]["name"].as_str().unwrap_or_default();
        let own_namespace = monitor["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default();
        let spec = &monitor["spec"];
        ensure!(
            spec["selector"]["matchExpressions"].is_null(),
            "ServiceMonitor {name}: matchExpressions are not translated"
        );
        let selector = &spec["namespaceSelector"];
        let namespaces = if selector["any"] == true {
            None
        } else {
            Some(match selector["matchNames"].as_array() {
                Some(names) => names
                    .iter()
                    .filter_map(|name| name.as_str().map(str::to_owned))
                    .collect(),
                None => vec![own_namespace.to_owned()],
            })
        };
        let mut keep = Vec::new();
        for (label, value) in spec["selector"]["matchLabels"]
            .as_object()
            .into_iter()
            .flatten()
        {
            let label = sanitize(label);
            keep.push(json!({
                "action": "keep",
                "source_labels": [
                    format!("__meta_kubernetes_service_label_{label}"),
                    format!("__meta_kubernetes_service_labelpresent_{label}"),
                ],
                "regex": format!("({});true", value.as_str().unwrap_or_default()),
            }));
        }
        for (index, endpoint) in spec["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let port = endpoint["port"].as_str().with_context(|| {
                format!("ServiceMonitor {name}: only named ports are translated")
            })?;
            let mut relabel = keep.clone();
            relabel.extend([
                keep_equal("__meta_kubernetes_endpointslice_port_name", port),
                copy("__meta_kubernetes_namespace", "namespace"),
                copy("__meta_kubernetes_service_name", "service"),
                copy("__meta_kubernetes_pod_name", "pod"),
                copy("__meta_kubernetes_pod_container_name", "container"),
                copy("__meta_kubernetes_service_name", "job"),
                json!({"target_label": "endpoint", "replacement": port}),
            ]);
            jobs.push(ScrapeJob {
                config: json!({
                    "job_name": format!("serviceMonitor/{own_namespace}/{name}/{index}"),
                    "scrape_interval": &interval,
                    "scrape_timeout": &interval,
                    "metrics_path": endpoint["path"].as_str().unwrap_or("/metrics"),
                    "relabel_configs": relabel,
                }),
                namespaces: namespaces.clone(),
            });
        }
    }
    ensure!(!jobs.is_empty(), "the chart rendered no ServiceMonitor");
    Ok(jobs)
}

fn keep_equal(source: &str, value: &str) -> Value {
    json!({"action": "keep", "source_labels": [source], "regex": value})
}

fn copy(source: &str, target: &str) -> Value {
    json!({"source_labels": [source], "target_label": target})
}

/// A Kubernetes label name as Prometheus' service discovery spells it in a meta label.
pub fn sanitize(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_legend_format_takes_the_series_labels() {
        let labels = serde_json::from_str(r#"{"service": "chat", "code": "1001"}"#).unwrap();
        assert_eq!(
            legend_text("{{service}} {{code}} by {{ by }}", &labels),
            "chat 1001 by "
        );
        assert_eq!(legend_text("p99 {{unclosed", &labels), "p99 {{unclosed");
    }

    #[test]
    fn thresholds_and_absent_are_stripped() {
        assert_eq!(
            without_threshold(r#"absent(up{job="x"} == 1)"#),
            r#"up{job="x"}"#
        );
        assert_eq!(
            without_threshold("sum(wsfleet_operator_leader) < 1"),
            "sum(wsfleet_operator_leader)"
        );
        assert_eq!(
            without_threshold("(kube_x - time()) < 864000"),
            "(kube_x - time())"
        );
        assert_eq!(
            without_threshold(r#"sum by (a) (rate(m{l=">"}[5m])) > 0.5"#),
            r#"sum by (a) (rate(m{l=">"}[5m]))"#
        );
        assert_eq!(without_threshold("a > b"), "a > b");
    }

    #[test]
    fn grafana_variables_and_legends() {
        assert_eq!(
            substitute_variables(
                r#"rate(m{namespace=~"$namespace"}[$__rate_interval])"#,
                "1m",
                &[("namespace", "ns")]
            ),
            r#"rate(m{namespace=~"ns"}[1m])"#
        );
        assert_eq!(
            legend_labels("{{namespace}}/{{ service }} x"),
            ["namespace", "service"]
        );
        assert_eq!(
            label_values(r#"label_values(m{namespace=~"$namespace"}, service)"#),
            Some((r#"m{namespace=~"$namespace"}"#, "service"))
        );
    }
}
