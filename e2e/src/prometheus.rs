//! A real Prometheus (Debian's `prometheus`, installed by scripts/install-test-deps) as a
//! process on the host: its own data directory, a loopback port, the scrape jobs and rules it is
//! given, and a small client of its HTTP API.
//!
//! Debian builds Prometheus without Kubernetes service discovery, so a thread of the harness
//! plays that part: every scrape interval it lists the cluster's EndpointSlices
//! ([`crate::discovery`]) into each job's file_sd file, which Prometheus watches.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::discovery::{endpointslice_targets, namespace_of};
use crate::kubectl::Kubectl;
use crate::monitoring::ScrapeJob;
use crate::net::{free_port, http_get};
use crate::poll::{DEADLINE, eventually, give_up};
use crate::process::ManagedProcess;

/// The program, from PATH.
const PROGRAM: &str = "prometheus";

/// A Prometheus process, stopped (and its data removed) on drop.
pub struct Prometheus {
    process: ManagedProcess,
    port: u16,
    discovery: Discovery,
    // Declared after the process, so the process is gone before its data directory goes.
    _dir: TempDir,
}

/// One series of an instant query's result: its labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: serde_json::Map<String, Value>,
    pub value: String,
}

/// One series of a range query: its labels and its (Unix seconds, value) points.
pub struct RangeSeries {
    pub labels: serde_json::Map<String, Value>,
    pub points: Vec<(f64, f64)>,
}

impl Prometheus {
    /// Starts Prometheus with `jobs`, their targets discovered in the cluster `kubectl` talks
    /// to, evaluating `rules` (a rules file's YAML, or none) every `interval`, and waits until
    /// it is ready.
    pub fn start(
        jobs: &[ScrapeJob],
        kubectl: &Kubectl,
        rules: Option<&str>,
        interval: Duration,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("wsfleet-prometheus-")
            .tempdir()
            .context("creating Prometheus' directory")?;
        let mut scrape_configs = Vec::new();
        let mut target_files = Vec::new();
        for (index, job) in jobs.iter().enumerate() {
            let file = dir.path().join(format!("targets-{index}.json"));
            let mut config = job.config.clone();
            config["file_sd_configs"] = json!([{
                "files": [file.display().to_string()],
                "refresh_interval": format!("{}s", interval.as_secs().max(1)),
            }]);
            scrape_configs.push(config);
            target_files.push((file, job.namespaces.clone()));
        }
        let discovery = Discovery::start(kubectl.clone(), target_files, interval)?;
        let interval = format!("{}s", interval.as_secs().max(1));
        let mut config = json!({
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": scrape_configs,
        });
        if let Some(rules) = rules {
            let file = dir.path().join("rules.yaml");
            std::fs::write(&file, rules).context("writing the rules file")?;
            config["rule_files"] = json!([file.display().to_string()]);
        }
        let config_file = dir.path().join("prometheus.yaml");
        std::fs::write(&config_file, serde_yaml::to_string(&config)?)
            .context("writing prometheus.yaml")?;
        let port = free_port()?;
        let mut command = std::process::Command::new(PROGRAM);
        command
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--storage.tsdb.retention.time=1h")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        let process = ManagedProcess::spawn("prometheus", command, &dir.path().join("log"))
            .context("starting prometheus (scripts/install-test-deps installs it)")?;
        let mut prometheus = Self {
            process,
            port,
            discovery,
            _dir: dir,
        };
        eventually("Prometheus to be ready", DEADLINE, || {
            prometheus.process.ensure_running().map_err(give_up)?;
            let body = http_get(port, "/-/ready")?;
            ensure!(body.contains("Ready"), "/-/ready says {body:?}");
            Ok(())
        })?;
        Ok(prometheus)
    }

    /// Prometheus' HTTP address on loopback, for clients on the host (such as KEDA's operator).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Fails with the log tail if Prometheus has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.process.ensure_running()
    }

    /// Why the last round of target discovery failed, if it did.
    pub fn discovery_error(&self) -> Option<String> {
        self.discovery.last_error()
    }

    /// The result of the instant query `expr`.
    pub fn query(&self, expr: &str) -> Result<Vec<Sample>> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(expr)))?;
        ensure!(
            data["resultType"] == "vector",
            "{expr} returned a {}, not a vector",
            data["resultType"]
        );
        Ok(data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|series| Sample {
                labels: series["metric"].as_object().cloned().unwrap_or_default(),
                value: series["value"][1].as_str().unwrap_or_default().to_owned(),
            })
            .collect())
    }

    /// The range query `expr` from `start` to `end` (Unix seconds), a point every `step`.
    pub fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> Result<Vec<RangeSeries>> {
        let data = self.api(&format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={}",
            encode(expr),
            step.as_secs_f64()
        ))?;
        ensure!(
            data["resultType"] == "matrix",
            "{expr} returned a {}, not a matrix",
            data["resultType"]
        );
        Ok(data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|series| RangeSeries {
                labels: series["metric"].as_object().cloned().unwrap_or_default(),
                points: series["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|point| {
                        let value = point[1].as_str()?.parse().ok()?;
                        Some((point[0].as_f64()?, value))
                    })
                    .collect(),
            })
            .collect())
    }

    /// `/api/v1/targets`' active targets.
    pub fn active_targets(&self) -> Result<Vec<Value>> {
        Ok(self.api("/api/v1/targets?state=active")?["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// `/api/v1/rules`' groups, each with its rules' health and last error.
    pub fn rule_groups(&self) -> Result<Vec<Value>> {
        Ok(self.api("/api/v1/rules")?["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Prometheus' resident memory in bytes, from /proc.
    pub fn resident_bytes(&self) -> Result<u64> {
        Ok(crate::process::rss_kib(self.process.pid())? * 1024)
    }

    fn api(&self, path: &str) -> Result<Value> {
        let body = http_get(self.port, path)?;
        let answer: Value = serde_json::from_str(&body)
            .with_context(|| format!("GET {path}: not JSON: {body:.200}"))?;
        if answer["status"] != "success" {
            bail!(
                "GET {path}: {} {}",
                answer["errorType"].as_str().unwrap_or("?"),
                answer["error"].as_str().unwrap_or("?")
            );
        }
        Ok(answer["data"].clone())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.process.terminate(Duration::from_secs(5));
        self.discovery.stop();
    }
}

/// The thread that writes each job's targets file, until stopped.
struct Discovery {
    stop: Arc<AtomicBool>,
    last_error: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Discovery {
    /// Writes every file once (so Prometheus starts with targets), then keeps them current.
    fn start(
        kubectl: Kubectl,
        files: Vec<(PathBuf, Option<Vec<String>>)>,
        interval: Duration,
    ) -> Result<Self> {
        write_targets(&kubectl, &files)?;
        let stop = Arc::new(AtomicBool::new(false));
        let last_error = Arc::new(Mutex::new(None));
        let thread = std::thread::Builder::new()
            .name("prometheus-discovery".into())
            .spawn({
                let (stop, last_error) = (stop.clone(), last_error.clone());
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(interval);
                        let outcome = write_targets(&kubectl, &files).err();
                        *last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                            outcome.map(|err| format!("{err:#}"));
                    }
                }
            })
            .context("starting the discovery thread")?;
        Ok(Self {
            stop,
            last_error,
            thread: Some(thread),
        })
    }

    fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Each job's target groups in its namespaces, written whole (a rename) for Prometheus to read.
fn write_targets(kubectl: &Kubectl, files: &[(PathBuf, Option<Vec<String>>)]) -> Result<()> {
    let groups = endpointslice_targets(kubectl)?;
    for (file, namespaces) in files {
        let selected: Vec<&Value> = groups
            .iter()
            .filter(|group| {
                namespaces
                    .as_ref()
                    .is_none_or(|names| names.iter().any(|name| name == namespace_of(group)))
            })
            .collect();
        let partial = file.with_extension("json.new");
        std::fs::write(&partial, serde_json::to_string(&selected)?)
            .with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, file)
            .with_context(|| format!("renaming {}", partial.display()))?;
    }
    Ok(())
}

/// Percent-encodes `text` for a URL's query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            super::encode(r#"sum(m{a=~"x.*"}[1m])"#),
            "sum%28m%7Ba%3D~%22x.%2A%22%7D%5B1m%5D%29"
        );
    }
}
