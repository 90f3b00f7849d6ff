//! `custom.metrics.k8s.io` for the operator's own HPA, served the way prometheus-adapter would
//! serve it. prometheus-adapter itself cannot be fetched here (its module is refused by the
//! proxy), so two real parts stand in for it:
//! - the sample adapter of `sigs.k8s.io/custom-metrics-apiserver` (the library
//!   prometheus-adapter is built on; built by e2e/addons/build.sh), a process on the host
//!   registered through the aggregation layer, which serves whatever values are written to it;
//! - [`AdapterRule`], the rule `docs/prometheus-adapter-rules.yaml` ships, evaluated against a
//!   real Prometheus as prometheus-adapter evaluates it, whose results are written to the
//!   sample adapter.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tempfile::TempDir;

use crate::aggregation::{Extension, Registration, serving_args, write_tls_dir};
use crate::binaries::addons_bin_dir;
use crate::controlplane::ControlPlane;
use crate::net::{free_port, http_post};
use crate::process::ManagedProcess;
use crate::prometheus::Prometheus;

const NAMESPACE: &str = "custom-metrics";
const SERVICE: &str = "custom-metrics-apiserver";
const GROUP: &str = "custom.metrics.k8s.io";
/// Both versions the HPA controller may discover.
const VERSIONS: [&str; 2] = ["v1beta2", "v1beta1"];
/// Where the sample adapter takes values: fixed in its code, on every address.
const WRITE_PORT: u16 = 8080;

/// The sample adapter, registered for [`GROUP`]; stopped and unregistered on drop.
pub struct CustomMetricsAdapter {
    registrations: Vec<Registration>,
    process: ManagedProcess,
    _dir: TempDir,
}

impl CustomMetricsAdapter {
    /// Starts the adapter listening on `address` (the node's) and waits until its APIServices
    /// are Available.
    pub fn start(control_plane: &ControlPlane, address: Ipv4Addr) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("wsfleet-custom-metrics-")
            .tempdir()
            .context("creating the custom metrics adapter's directory")?;
        let port = free_port()?;
        let mut extensions: Vec<Extension> = VERSIONS
            .iter()
            .map(|version| Extension {
                group: GROUP,
                version,
                namespace: NAMESPACE,
                service: SERVICE,
                address,
                port,
                ca_pem: "",
            })
            .collect();
        let tls = dir.path().join("tls");
        let mut names = extensions[0].service_names();
        names.push(address.to_string());
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let ca_pem = write_tls_dir(&tls, &names)?;
        let kubeconfig = control_plane.kubeconfig();
        let mut command = Command::new(addons_bin_dir()?.join("custom-metrics-adapter"));
        command
            .arg(format!("--lister-kubeconfig={}", kubeconfig.display()))
            .args(serving_args(kubeconfig, address, port, &tls))
            .arg("--v=1");
        let mut process = ManagedProcess::spawn(SERVICE, command, &dir.path().join("log"))
            .context("starting the custom metrics adapter")?;
        let kubectl = control_plane.kubectl();
        let mut registrations = Vec::new();
        for extension in &mut extensions {
            extension.ca_pem = &ca_pem;
            registrations.push(Registration::new(&kubectl, extension));
            extension
                .register(&kubectl, || process.ensure_running())
                .with_context(|| process.log_tail())?;
        }
        Ok(Self {
            registrations,
            process,
            _dir: dir,
        })
    }

    /// Fails with the log tail if the adapter has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.process.ensure_running()
    }

    /// Sets the custom metric `metric` of pod `namespace/pod` to `value`.
    pub fn write_pod_metric(
        &self,
        namespace: &str,
        pod: &str,
        metric: &str,
        value: f64,
    ) -> Result<()> {
        // A Quantity in milli-units keeps fractions exact.
        let quantity = format!("\"{}m\"", (value * 1000.0).round() as i64);
        let status = http_post(
            WRITE_PORT,
            &format!("/write-metrics/namespaces/{namespace}/pods/{pod}/{metric}"),
            "application/json",
            &quantity,
        )?;
        ensure!(
            (200..300).contains(&status),
            "writing {metric}={value} for {namespace}/{pod}: HTTP {status}"
        );
        Ok(())
    }
}

impl Drop for CustomMetricsAdapter {
    fn drop(&mut self) {
        for registration in &self.registrations {
            registration.remove();
        }
        self.process.terminate(Duration::from_secs(5));
    }
}

/// One rule of a prometheus-adapter configuration: which series it serves, under what name,
/// and the query that computes the value per object.
#[derive(Debug)]
pub struct AdapterRule {
    series_query: String,
    metrics_query: String,
    metric: String,
}

impl AdapterRule {
    /// The custom rules of a prometheus-adapter `rules` file such as the one the docs ship.
    pub fn parse_all(yaml: &str) -> Result<Vec<Self>> {
        let config: serde_yaml::Value =
            serde_yaml::from_str(yaml).context("parsing prometheus-adapter rules")?;
        let text = |rule: &serde_yaml::Value, path: &[&str]| -> Result<String> {
            let mut value = rule;
            for key in path {
                value = &value[*key];
            }
            value
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("a custom rule without {}", path.join(".")))
        };
        config["rules"]["custom"]
            .as_sequence()
            .context("no rules.custom")?
            .iter()
            .map(|rule| {
                Ok(Self {
                    series_query: text(rule, &["seriesQuery"])?,
                    metrics_query: text(rule, &["metricsQuery"])?,
                    metric: text(rule, &["name", "as"])?,
                })
            })
            .collect()
    }

    /// The metric the rule serves (`name.as`).
    pub fn metric(&self) -> &str {
        &self.metric
    }

    /// The series the rule discovers: the metric name at the head of `seriesQuery`.
    pub fn series(&self) -> &str {
        let end = self
            .series_query
            .find(['{', '['])
            .unwrap_or(self.series_query.len());
        self.series_query[..end].trim()
    }

    /// `metricsQuery` for pods `pods` of `namespace`, templated as prometheus-adapter does for
    /// a pods request: the series, matchers on the namespace and the pod names, and a
    /// grouping by pod.
    pub fn pods_query(&self, namespace: &str, pods: &[&str]) -> String {
        let matchers = format!(r#"namespace="{namespace}",pod=~"{}""#, pods.join("|"));
        self.metrics_query
            .replace("<<.Series>>", self.series())
            .replace("<<.LabelMatchers>>", &matchers)
            .replace("<<.GroupBy>>", "pod")
    }

    /// Evaluates the rule for `pods` against `prometheus` and writes each pod's value to
    /// `adapter`, as one prometheus-adapter request would; returns the values written.
    pub fn serve_pods(
        &self,
        prometheus: &Prometheus,
        adapter: &CustomMetricsAdapter,
        namespace: &str,
        pods: &[&str],
    ) -> Result<Vec<(String, f64)>> {
        let mut written = Vec::new();
        for sample in prometheus.query(&self.pods_query(namespace, pods))? {
            let pod = sample
                .labels
                .get("pod")
                .and_then(|pod| pod.as_str())
                .with_context(|| format!("a sample without a pod label: {:?}", sample.labels))?
                .to_owned();
            let value: f64 = sample
                .value
                .parse()
                .with_context(|| format!("value {:?} of {pod}", sample.value))?;
            adapter.write_pod_metric(namespace, &pod, self.metric(), value)?;
            written.push((pod, value));
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rule_templates_a_pods_query_as_prometheus_adapter_does() {
        let rules =
            AdapterRule::parse_all(include_str!("../../docs/prometheus-adapter-rules.yaml"))
                .unwrap();
        assert_eq!(rules.len(), 1);
        let rule = &rules[0];
        assert_eq!(rule.metric(), "wsfleet_gateway_active_connections");
        assert_eq!(rule.series(), "wsfleet_gateway_active_connections");
        assert_eq!(
            rule.pods_query("chat", &["a", "b"]),
            r#"sum(wsfleet_gateway_active_connections{namespace="chat",pod=~"a|b"}) by (pod)"#
        );
    }
}
