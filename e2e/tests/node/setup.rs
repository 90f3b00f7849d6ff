//! What the real-node tests start from: the chart installed once, and a fleet of the
//! production example in a namespace of the test's own, with an echo upstream pod behind it.

use std::future::Future;
use std::sync::OnceLock;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use wsfleet_e2e::fixtures::{RsaKeyFiles, create_jwt_secret, example_path};
use wsfleet_e2e::fleet::{deploy_upstream, endpoint, install_chart, pods_of};
use wsfleet_e2e::inspect::secret_value;
use wsfleet_e2e::node::RealCluster;
use wsfleet_e2e::wire::{Endpoint, Swarm, Talk, sign_token};
use wsfleet_e2e::{DEADLINE, Expected, Kubectl, TestNamespace, await_conditions, eventually};

/// The production example's name and TLS Secret.
pub const NAME: &str = "chat-prod";
pub const TLS_SECRET: &str = "chat-prod-tls";

pub fn cluster() -> &'static RealCluster {
    RealCluster::shared()
}

/// The chart's operator, installed on first use and left running for every test.
pub fn operator() -> Result<()> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| install_chart(cluster()).map_err(|err| format!("{err:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Runs `future` on a runtime of its own; tests are plain functions.
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Runtime::new()
        .expect("starting a tokio runtime")
        .block_on(future)
}

/// Lets one test client open hundreds of connections: every one of them comes from the host's
/// address, which the example's per-address rate (10 a second, bursts of 20) would refuse.
pub fn with_room_for_load(manifest: &mut Value) {
    manifest["spec"]["limits"]["connectionsPerIP"] =
        serde_json::json!({"perSecond": 1000, "burst": 1000});
}

/// Certificates that renew 20 s after each issuance.
pub fn with_quick_renewal(manifest: &mut Value) {
    manifest["spec"]["tls"]["duration"] = serde_json::json!("60s");
    manifest["spec"]["tls"]["renewBefore"] = serde_json::json!("40s");
}

/// A fleet's certificate as issued (its Secret's `tls.crt`) and as served to a handshake.
pub struct Certificates {
    issued: String,
    served: Vec<u8>,
}

/// A production-example fleet, Ready, with an echo upstream, in namespace `namespace`.
pub struct Fleet {
    pub namespace: TestNamespace,
    keys: RsaKeyFiles,
}

impl Fleet {
    /// examples/production.yaml as it is.
    pub fn production(namespace: &str) -> Result<Self> {
        Self::create(namespace, |_| {})
    }

    /// examples/production.yaml with `change` applied to its manifest, and gateway pods that
    /// ask for little CPU: the tests share the node's two cores, and the example's requests
    /// would leave fleets of parallel tests Pending.
    pub fn production_with(namespace: &str, change: impl FnOnce(&mut Value)) -> Result<Self> {
        Self::create(namespace, |manifest| {
            manifest["spec"]["resources"]["requests"]["cpu"] = serde_json::json!("20m");
            change(manifest);
        })
    }

    fn create(namespace: &str, change: impl FnOnce(&mut Value)) -> Result<Self> {
        Self::create_then(namespace, change, |_| Ok(()))
    }

    /// Like [`Fleet::production_with`], with `meanwhile` run once the fleet is applied and
    /// before it must be Ready: where another controller's part is played.
    pub fn production_then(
        namespace: &str,
        change: impl FnOnce(&mut Value),
        meanwhile: impl FnOnce(&Kubectl) -> Result<()>,
    ) -> Result<Self> {
        Self::create_then(
            namespace,
            |manifest| {
                manifest["spec"]["resources"]["requests"]["cpu"] = serde_json::json!("20m");
                change(manifest);
            },
            meanwhile,
        )
    }

    fn create_then(
        namespace: &str,
        change: impl FnOnce(&mut Value),
        meanwhile: impl FnOnce(&Kubectl) -> Result<()>,
    ) -> Result<Self> {
        operator()?;
        let namespace = TestNamespace::create_on(cluster().control_plane(), namespace)?;
        let kubectl = namespace.kubectl();
        deploy_upstream(kubectl, namespace.name(), "echo")?;
        let keys = create_jwt_secret(kubectl, namespace.dir())?;
        let mut manifest: Value = serde_yaml::from_str(
            &std::fs::read_to_string(example_path("production.yaml"))
                .context("reading examples/production.yaml")?,
        )?;
        change(&mut manifest);
        kubectl.apply(&serde_yaml::to_string(&manifest)?)?;
        meanwhile(kubectl)?;
        await_conditions(
            kubectl,
            NAME,
            &[
                Expected::new("Ready", "True"),
                Expected::new("CertificateReady", "True"),
            ],
        )?;
        Ok(Self { namespace, keys })
    }

    pub fn kubectl(&self) -> &Kubectl {
        self.namespace.kubectl()
    }

    /// A valid token for `subject`, as the example's identity provider would sign it.
    pub fn token(&self, subject: &str) -> Result<String> {
        let private_pem = std::fs::read(&self.keys.private_pem)?;
        sign_token(&private_pem, "https://auth.example.com", "chat", subject)
    }

    /// How a client on the host reaches the fleet: the Service's ClusterIP.
    pub fn endpoint(&self) -> Result<Endpoint> {
        endpoint(self.kubectl(), self.namespace.name(), NAME, TLS_SECRET)
    }

    /// The certificate issued and the one a new handshake gets, now.
    pub fn certificates(&self) -> Result<Certificates> {
        let served = block_on(self.endpoint()?.connect(&self.token("ada")?))?.certificate;
        let issued = secret_value(self.kubectl(), TLS_SECRET, "tls.crt")?;
        Ok(Certificates { issued, served })
    }

    /// Waits for the operator to renew the certificate of `before`, then for new handshakes to
    /// get the renewed one.
    pub fn await_renewal(&self, before: &Certificates) -> Result<()> {
        eventually("the operator to renew the certificate", DEADLINE, || {
            let issued = secret_value(self.kubectl(), TLS_SECRET, "tls.crt")?;
            ensure!(issued != before.issued, "tls.crt unchanged");
            Ok(())
        })?;
        let (endpoint, token) = (self.endpoint()?, self.token("ada")?);
        eventually(
            "new handshakes to get the renewed certificate",
            DEADLINE,
            || {
                let session = block_on(endpoint.connect(&token))?;
                ensure!(
                    session.certificate != before.served,
                    "the gateway still presents the earlier certificate"
                );
                Ok(())
            },
        )
    }

    /// `kubectl patch wss chat-prod --type merge -p PATCH`.
    pub fn patch(&self, patch: &str) -> Result<()> {
        self.kubectl()
            .run(&["patch", "wss", NAME, "--type", "merge", "-p", patch])?;
        Ok(())
    }

    /// Each gateway pod's UID and restart count, to show a change left the pods alone.
    pub fn pod_lives(&self) -> Result<Vec<(String, u64)>> {
        let pods = pods_of(self.kubectl(), NAME)?;
        let mut lives: Vec<(String, u64)> = pods
            .iter()
            .map(|pod| {
                let restarts = pod["status"]["containerStatuses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|status| status["restartCount"].as_u64())
                    .sum();
                (
                    pod["metadata"]["uid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    restarts,
                )
            })
            .collect();
        lives.sort();
        Ok(lives)
    }
}

/// Connections that keep talking to a fleet through its Service while a test changes it.
pub struct Load {
    runtime: tokio::runtime::Runtime,
    swarm: Swarm,
}

impl Fleet {
    /// Opens `count` connections with a valid token, each sending a message every 300 ms.
    pub fn open_load(&self, count: usize) -> Result<Load> {
        self.open_load_every(count, Duration::from_millis(300))
    }

    /// Opens `count` connections with a valid token, each sending a message every `interval`.
    pub fn open_load_every(&self, count: usize, interval: Duration) -> Result<Load> {
        let runtime = tokio::runtime::Runtime::new()?;
        let (endpoint, token) = (self.endpoint()?, self.token("ada")?);
        let swarm = runtime.block_on(Swarm::open(&endpoint, &token, count, interval))?;
        Ok(Load { runtime, swarm })
    }
}

impl Load {
    /// How many connections the servers have ended so far.
    pub fn ended(&self) -> usize {
        self.swarm.ended()
    }

    /// How many echoes the connections have received so far.
    pub fn echoed(&self) -> u64 {
        self.swarm.echoed()
    }

    /// Closes what is still open; returns what every connection saw.
    pub fn finish(self) -> Result<Vec<Talk>> {
        self.runtime.block_on(self.swarm.finish())
    }

    /// Fails unless every connection stayed open and talked throughout, every message came
    /// back in order, and the gateway pods are still the ones in `lives` (none replaced or
    /// restarted).
    pub fn ensure_undisturbed(self, fleet: &Fleet, lives: &[(String, u64)]) -> Result<()> {
        let talks = self.finish()?;
        let ended: Vec<_> = talks
            .iter()
            .filter_map(|talk| talk.ending.as_ref())
            .collect();
        ensure!(ended.is_empty(), "connections ended: {ended:?}");
        ensure_talked_whole(&talks)?;
        ensure!(
            fleet.pod_lives()? == lives,
            "the gateway pods were replaced or restarted"
        );
        Ok(())
    }
}

/// Fails unless every connection exchanged messages, and every message it sent came back, in
/// order.
pub fn ensure_talked_whole(talks: &[Talk]) -> Result<()> {
    ensure!(
        talks.iter().all(|talk| talk.echoed > 0),
        "some connections exchanged nothing"
    );
    if let Some(talk) = talks.iter().find(|talk| talk.misordered.is_some()) {
        anyhow::bail!("a connection's messages went astray: {talk:?}");
    }
    let unanswered: u64 = talks.iter().map(Talk::unanswered).sum();
    ensure!(
        unanswered == 0,
        "{unanswered} messages never came back over {} open connections",
        talks.len()
    );
    Ok(())
}
