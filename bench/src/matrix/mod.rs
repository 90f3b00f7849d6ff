//! The runner: starts every target, runs each scenario against each target in turn, round
//! after round, so that drift on the shared machine shows up as spread rather than bias.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};

use rustls::pki_types::CertificateDer;

use crate::certs::{self, KeyKind};
use crate::client::TlsClient;
use crate::handshake::Endpoint;
use crate::load::{self, Window};
use crate::proxies::{GATEWAY_FILES, Launch, Layout, Running, ServingCertificate};
use crate::report::{Goal, Metric, Sample};
use crate::token::BenchClaims;

mod measures;
mod tls_round;

pub use measures::metrics;
use measures::*;
use tls_round::*;

/// How long a proxy may take to release the previous run's connections.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// One message-stream shape: connections, message size, and the paced rate for latency.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct StreamShape {
    pub connections: usize,
    pub size: usize,
    pub paced_rate: f64,
}

impl StreamShape {
    fn label(&self) -> String {
        let size = if self.size.is_multiple_of(1024) {
            format!("{} KiB", self.size / 1024)
        } else {
            format!("{} B", self.size)
        };
        format!("{} x {size}", self.connections)
    }
}

/// One connection storm: this many clients, started at once or at a paced rate.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct StormShape {
    pub clients: usize,
    /// Connections started per second; `None`: as fast as the load generator can.
    pub rate: Option<f64>,
}

impl StormShape {
    fn label(&self) -> String {
        match self.rate {
            None => format!("storm {} at once", self.clients),
            Some(rate) => format!("storm {} at {rate}/s", self.clients),
        }
    }
}

/// What to run, and how often.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub rounds: usize,
    pub warmup: Duration,
    pub measure: Duration,
    pub shapes: Vec<StreamShape>,
    pub idle_connections: usize,
    pub idle_settle: Duration,
    pub handshake_concurrency: usize,
    pub storms: Vec<StormShape>,
    /// Keys of the certificates the TLS scenario serves.
    pub tls_keys: Vec<KeyKind>,
    /// Messages of the TLS scenario's paced stream.
    pub tls_shape: StreamShape,
    pub scenarios: Vec<ScenarioKind>,
    pub targets: Vec<TargetKind>,
    pub base_port: u16,
    pub proxy_core: usize,
    pub load_core: usize,
    pub gateway: PathBuf,
}

/// The parts of a round, run in this order whichever order they are named in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScenarioKind {
    /// Throughput and latency for every stream shape.
    Streams,
    /// Memory per idle connection (restarts each proxy first).
    Idle,
    /// Connection set-up rate and CPU per handshake.
    Handshakes,
    /// Many clients upgrading at once: rate, time to upgrade, CPU per handshake.
    Storm,
    /// `wss://` terminated by each proxy: idle memory, full and resumed handshakes, CPU per
    /// message, for every certificate key type.
    Tls,
}

impl Plan {
    fn runs(&self, scenario: ScenarioKind) -> bool {
        self.scenarios.contains(&scenario)
    }

    /// The storms measured: none unless the storm scenario runs.
    fn storm_shapes(&self) -> &[StormShape] {
        if self.runs(ScenarioKind::Storm) {
            &self.storms
        } else {
            &[]
        }
    }

    /// The stream shapes measured: none unless the streams scenario runs.
    fn stream_shapes(&self) -> &[StreamShape] {
        if self.runs(ScenarioKind::Streams) {
            &self.shapes
        } else {
            &[]
        }
    }
}

/// The things compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// The echo upstream itself, with no proxy.
    Direct,
    /// A byte relay that does nothing else (stream and storm scenarios only).
    Floor,
    Nginx,
    Haproxy,
    Gateway,
}

impl TargetKind {
    /// The floor relay's buffers make its idle memory meaningless, and it speaks no TLS; it
    /// shows the least CPU per message and per upgrade.
    fn takes_part(self, scenario: ScenarioKind) -> bool {
        self != TargetKind::Floor || matches!(scenario, ScenarioKind::Streams | ScenarioKind::Storm)
    }

    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Direct => "direct",
            TargetKind::Floor => "floor",
            TargetKind::Nginx => "nginx",
            TargetKind::Haproxy => "haproxy",
            TargetKind::Gateway => "gateway",
        }
    }
}

/// A target and, unless it is the echo upstream itself, the proxy process in front of it.
struct Subject {
    kind: TargetKind,
    endpoint: Endpoint,
    proxy: Option<Running>,
    /// Descriptors the proxy holds with no client connected.
    idle_fds: usize,
}

impl Subject {
    fn load_target(&self, bearer: &str) -> load::Target {
        load::Target {
            endpoint: self.endpoint.clone(),
            bearer: Some(bearer.to_owned()),
            tls: None,
            pid: self.proxy.as_ref().map(|proxy| proxy.measured_pid),
        }
    }

    /// Waits for the proxy, then the echo upstream, to drop the previous run's connections.
    fn settle(&self, upstream: &Upstream) -> anyhow::Result<()> {
        if let Some(proxy) = &self.proxy {
            await_release(proxy, self.idle_fds)?;
        }
        await_release(&upstream.process, upstream.idle_fds)
    }
}

/// The echo upstream every target forwards to.
struct Upstream {
    process: Running,
    /// Descriptors it holds with no connection open.
    idle_fds: usize,
}

/// Waits for `process` to hold no more than `idle_fds` descriptors. The echo upstream matters
/// as much as the proxy: it shares the load generator's core, so 9,000 connections it is
/// still closing would slow the start of the next run (of a storm above all).
fn await_release(process: &Running, idle_fds: usize) -> anyhow::Result<()> {
    if !process.await_fds_at_most(idle_fds, DRAIN_TIMEOUT)? {
        eprintln!(
            "warning: {} still holds connections {DRAIN_TIMEOUT:?} after a run",
            process.name()
        );
    }
    Ok(())
}

/// Starts everything, runs the whole plan, and returns every sample taken.
pub async fn run(plan: &Plan, dir: PathBuf) -> anyhow::Result<Vec<Sample>> {
    let port = |offset: u16| SocketAddr::from(([127, 0, 0, 1], plan.base_port + offset));
    let layout = Layout {
        dir,
        echo: port(0),
        proxy_core: plan.proxy_core,
        load_core: plan.load_core,
    };
    let claims = BenchClaims::valid_for(Duration::from_secs(24 * 3600))?;
    let secret = b"wsfleet-bench HS256 secret, 32+ bytes long";
    let key_file = layout.write(
        &format!("{GATEWAY_FILES}/jwt.key"),
        std::str::from_utf8(secret)?,
    )?;
    let bearer = claims.sign_hs256(secret)?;

    let bench_exe = std::env::current_exe().context("locating the benchmark binary")?;
    let echo = layout.echo(&bench_exe).start()?;
    let upstream = &Upstream {
        idle_fds: crate::procstat::open_fds(echo.measured_pid)?,
        process: echo,
    };
    let mut subjects = Vec::new();
    for &kind in &plan.targets {
        let launch: Option<Launch> = match kind {
            TargetKind::Direct => None,
            TargetKind::Floor => Some(layout.floor(&bench_exe, port(5))),
            TargetKind::Nginx => Some(layout.nginx(port(1), None)?),
            TargetKind::Haproxy => Some(layout.haproxy(port(2), None)?),
            TargetKind::Gateway => {
                if !plan.gateway.exists() {
                    bail!(
                        "no gateway binary at {}; build it (cargo build --release -p wsfleet-gateway) \
                         or leave gateway out of --targets",
                        plan.gateway.display()
                    );
                }
                Some(layout.gateway(&plan.gateway, port(3), port(4), &key_file, &claims, None)?)
            }
        };
        let addr = launch
            .as_ref()
            .map_or(layout.echo, |launch| launch.ready_addr);
        let proxy = launch.map(|launch| launch.start()).transpose()?;
        let idle_fds = match &proxy {
            Some(proxy) => crate::procstat::open_fds(proxy.measured_pid)?,
            None => 0,
        };
        subjects.push(Subject {
            kind,
            endpoint: Endpoint::parse(&format!("ws://{addr}/"))?,
            proxy,
            idle_fds,
        });
    }

    let window = Window {
        warmup: plan.warmup,
        measure: plan.measure,
    };
    let mut served = Vec::new();
    if plan.runs(ScenarioKind::Tls) {
        for &key in &plan.tls_keys {
            served.push((key, certs::generate(&layout.dir.join("tls"), key)?));
        }
    }
    let connection_metrics = ConnectionMetrics::of(plan);
    let mut samples = Vec::new();
    for round in 1..=plan.rounds {
        for shape in plan.stream_shapes() {
            let m = StreamMetrics::of(shape);
            for subject in &subjects {
                let target = subject.load_target(&bearer);
                let closed =
                    load::throughput(&target, shape.connections, shape.size, window).await?;
                subject.settle(upstream)?;
                let paced = load::latency(
                    &target,
                    shape.connections,
                    shape.size,
                    shape.paced_rate,
                    window,
                )
                .await?;
                subject.settle(upstream)?;
                progress(
                    round,
                    subject.kind,
                    &shape.label(),
                    &format!("{closed:?} {paced:?}"),
                );
                let mut record = |metric: &Metric, value: Option<f64>| {
                    if let Some(value) = value {
                        samples.push(Sample::new(round, subject.kind, &metric.name, value));
                    }
                };
                record(&m.round_trips, Some(closed.round_trips_per_sec));
                record(&m.p50, Some(paced.p50_us));
                record(&m.p99, Some(paced.p99_us));
                record(&m.p999, Some(paced.p999_us));
                record(&m.cpu_paced, paced.cpu_us_per_message);
                record(&m.cpu_closed, closed.cpu_us_per_message);
                let errors = closed.errors + paced.errors;
                if errors > 0 {
                    samples.push(Sample::errors(round, subject.kind, errors));
                }
                if paced.achieved_per_sec < 0.95 * paced.offered_per_sec {
                    eprintln!(
                        "warning: {} reached only {:.0} of {:.0} msg/s; its latency is that of an overloaded target",
                        subject.kind.name(),
                        paced.achieved_per_sec,
                        paced.offered_per_sec
                    );
                }
            }
        }
        for subject in subjects.iter_mut().filter(|subject| {
            plan.runs(ScenarioKind::Idle) && subject.kind.takes_part(ScenarioKind::Idle)
        }) {
            // Memory is charged against a fresh process, so no earlier run's allocations are reused.
            let Some(proxy) = subject.proxy.as_mut() else {
                continue;
            };
            proxy.restart()?;
            subject.idle_fds = crate::procstat::open_fds(proxy.measured_pid)?;
            let target = subject.load_target(&bearer);
            let idle = load::idle(&target, plan.idle_connections, plan.idle_settle).await?;
            progress(round, subject.kind, "idle", &format!("{idle:?}"));
            subject.settle(upstream)?;
            if let Some(bytes) = idle.bytes_per_connection {
                samples.push(Sample::new(
                    round,
                    subject.kind,
                    &connection_metrics.idle_bytes.name,
                    bytes,
                ));
            }
        }
        for subject in subjects.iter().filter(|subject| {
            plan.runs(ScenarioKind::Handshakes) && subject.kind.takes_part(ScenarioKind::Handshakes)
        }) {
            let target = subject.load_target(&bearer);
            let result = load::handshakes(&target, plan.handshake_concurrency, window).await?;
            progress(round, subject.kind, "handshakes", &format!("{result:?}"));
            subject.settle(upstream)?;
            samples.push(Sample::new(
                round,
                subject.kind,
                &connection_metrics.handshakes.name,
                result.per_sec,
            ));
            if let Some(cpu) = result.cpu_us_per_handshake {
                samples.push(Sample::new(
                    round,
                    subject.kind,
                    &connection_metrics.cpu_per_handshake.name,
                    cpu,
                ));
            }
            if result.errors > 0 {
                samples.push(Sample::errors(round, subject.kind, result.errors));
            }
        }
        for shape in plan.storm_shapes() {
            let m = StormMetrics::of(shape);
            for subject in subjects
                .iter()
                .filter(|subject| subject.kind.takes_part(ScenarioKind::Storm))
            {
                let target = subject.load_target(&bearer);
                let storm = load::storm(&target, shape.clients, shape.rate).await?;
                progress(round, subject.kind, &shape.label(), &format!("{storm:?}"));
                subject.settle(upstream)?;
                let mut record = |metric: &Metric, value: Option<f64>| {
                    if let Some(value) = value {
                        samples.push(Sample::new(round, subject.kind, &metric.name, value));
                    }
                };
                record(&m.per_sec, Some(storm.per_sec));
                record(&m.per_cpu_sec, storm.per_cpu_sec);
                record(&m.p50, Some(storm.p50_us / 1000.0));
                record(&m.p99, Some(storm.p99_us / 1000.0));
                record(&m.p999, Some(storm.p999_us / 1000.0));
                record(&m.cpu, storm.cpu_us_per_handshake);
                record(&m.overflows, Some(storm.listen_overflows as f64));
                if storm.errors() > 0 {
                    samples.push(Sample::errors(round, subject.kind, storm.errors()));
                }
                for (cause, &count) in &storm.failures {
                    samples.push(Sample::failures(round, subject.kind, cause, count));
                }
            }
        }
        if plan.runs(ScenarioKind::Tls) {
            for (index, (key, certificate)) in served.iter().enumerate() {
                let tls = TlsRound {
                    plan,
                    layout: &layout,
                    key: *key,
                    certificate,
                    // Ports after the plain targets' (+0 to +5): +10 to +14 for the first key, ...
                    ports_from: 10 + 10 * index as u16,
                    key_file: &key_file,
                    claims: &claims,
                    bearer: &bearer,
                    window,
                    upstream,
                };
                tls.run(round, &mut samples).await?;
            }
        }
    }
    Ok(samples)
}

fn progress(round: usize, kind: TargetKind, scenario: &str, detail: &str) {
    eprintln!("round {round} {:<8} {scenario}: {detail}", kind.name());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_joins_the_stream_and_storm_scenarios_only() {
        let joined: Vec<ScenarioKind> = [
            ScenarioKind::Streams,
            ScenarioKind::Idle,
            ScenarioKind::Handshakes,
            ScenarioKind::Storm,
            ScenarioKind::Tls,
        ]
        .into_iter()
        .filter(|&scenario| TargetKind::Floor.takes_part(scenario))
        .collect();
        assert_eq!(joined, [ScenarioKind::Streams, ScenarioKind::Storm]);
    }
}
