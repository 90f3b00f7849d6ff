//! One TLS round: full and resumed handshakes, CPU per message and idle memory, per key.

use super::*;

/// One round of the TLS scenario for one key type: each TLS-terminating proxy is started
/// fresh, measured, and stopped.
pub(super) struct TlsRound<'a> {
    pub(super) plan: &'a Plan,
    pub(super) layout: &'a Layout,
    pub(super) key: KeyKind,
    pub(super) certificate: &'a (ServingCertificate, CertificateDer<'static>),
    pub(super) ports_from: u16,
    pub(super) key_file: &'a Path,
    pub(super) claims: &'a BenchClaims,
    pub(super) bearer: &'a str,
    pub(super) window: Window,
    pub(super) upstream: &'a Upstream,
}

impl TlsRound<'_> {
    pub(super) async fn run(&self, round: usize, samples: &mut Vec<Sample>) -> anyhow::Result<()> {
        let plan = self.plan;
        let port = |offset: u16| {
            SocketAddr::from(([127, 0, 0, 1], plan.base_port + self.ports_from + offset))
        };
        let (files, pinned) = self.certificate;
        let upstream = self.upstream;
        let m = TlsMetrics::of(plan, self.key);
        for &kind in &plan.targets {
            let launch = match kind {
                TargetKind::Nginx => self.layout.nginx(port(1), Some(files))?,
                TargetKind::Haproxy => self.layout.haproxy(port(2), Some(files))?,
                TargetKind::Gateway => self.layout.gateway(
                    &plan.gateway,
                    port(3),
                    port(4),
                    self.key_file,
                    self.claims,
                    Some(files),
                )?,
                TargetKind::Direct | TargetKind::Floor => continue,
            };
            // A fresh process, so that idle memory is charged against nothing reused.
            let proxy = launch.start()?;
            let subject = Subject {
                kind,
                endpoint: Endpoint::parse(&format!("wss://{}/", launch.ready_addr))?,
                idle_fds: crate::procstat::open_fds(proxy.measured_pid)?,
                proxy: Some(proxy),
            };
            let scenario = format!("wss {}", self.key.label());
            let target = |resume: bool| -> anyhow::Result<load::Target> {
                Ok(load::Target {
                    tls: Some(TlsClient::new(pinned.clone(), resume)?),
                    ..subject.load_target(self.bearer)
                })
            };
            let mut record = |metric: &Metric, value: Option<f64>| {
                if let Some(value) = value {
                    samples.push(Sample::new(round, kind, &metric.name, value));
                }
            };

            let idle = load::idle(&target(false)?, plan.idle_connections, plan.idle_settle).await?;
            progress(
                round,
                kind,
                &format!("{scenario} idle"),
                &format!("{idle:?}"),
            );
            subject.settle(upstream)?;
            record(&m.idle_bytes, idle.bytes_per_connection);

            let full =
                load::handshakes(&target(false)?, plan.handshake_concurrency, self.window).await?;
            progress(
                round,
                kind,
                &format!("{scenario} full"),
                &format!("{full:?}"),
            );
            subject.settle(upstream)?;
            record(&m.full_per_sec, Some(full.per_sec));
            record(&m.full_per_cpu_sec, full.per_cpu_sec);
            record(&m.full_cpu, full.cpu_us_per_handshake);

            let resumed =
                load::handshakes(&target(true)?, plan.handshake_concurrency, self.window).await?;
            progress(
                round,
                kind,
                &format!("{scenario} resumed"),
                &format!("{resumed:?}"),
            );
            subject.settle(upstream)?;
            record(&m.resumed_per_sec, Some(resumed.per_sec));
            record(&m.resumed_cpu, resumed.cpu_us_per_handshake);
            record(&m.resumed_share, resumed.resumed_share);

            let shape = plan.tls_shape;
            let paced = load::latency(
                &target(false)?,
                shape.connections,
                shape.size,
                shape.paced_rate,
                self.window,
            )
            .await?;
            progress(
                round,
                kind,
                &format!("{scenario} paced"),
                &format!("{paced:?}"),
            );
            subject.settle(upstream)?;
            record(&m.cpu_per_message, paced.cpu_us_per_message);
            record(&m.p99, Some(paced.p99_us));

            let errors = full.errors + resumed.errors + paced.errors;
            if errors > 0 {
                samples.push(Sample::errors(round, kind, errors));
            }
        }
        Ok(())
    }
}
