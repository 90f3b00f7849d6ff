//! What a real node adds to the scale run: gateway pods small enough for 100 to fit on this
//! machine, the time until every one of them is Ready, and one WebSocket through each fleet's
//! Service (its ClusterIP, through kube-proxy) to the echo upstream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use wsfleet_e2e::Kubectl;
use wsfleet_e2e::fleet::{gateway_pods, plain_endpoint};
use wsfleet_e2e::node::RealCluster;
use wsfleet_e2e::poll::eventually;
use wsfleet_e2e::process::{block_termination_signals, wait_for_signal};

/// Each object's gateway requests: the defaults (cpu 100m, memory 64Mi) would fit 20 pods on
/// 2 cores, not 100. Requests only, so an idle gateway is not throttled or killed.
pub const GATEWAY_SPEC: &str = "  resources: {requests: {cpu: 5m, memory: 16Mi}}\n";

/// The label every gateway pod carries.
const GATEWAY_PODS: &str = "app.kubernetes.io/name=wsfleet-gateway";

/// The fleets check no tokens; the client sends this one and the gateway ignores it.
const NO_TOKEN: &str = "";

/// How long one fleet's check may take: a connection that hangs counts as a failure.
const CHECK_DEADLINE: Duration = Duration::from_secs(10);

/// Starts the real node, restored at exit, and on SIGINT or SIGTERM exits so that it is.
pub fn start() -> Result<&'static RealCluster> {
    // Blocked before any other thread starts, so that only the waiter below receives them.
    let signals = block_termination_signals()?;
    std::thread::spawn(move || {
        if let Ok(signal) = wait_for_signal(&signals) {
            eprintln!("{signal}: stopping the real node and restoring the host");
            std::process::exit(130);
        }
    });
    RealCluster::try_shared()
}

/// When `count` gateway pods were first Ready at once, recorded in the background from
/// before the objects exist: a poll once the objects are Ready would only bound it.
pub struct GatewayPodsReady {
    all_ready: Arc<Mutex<Option<Instant>>>,
}

impl GatewayPodsReady {
    pub fn watch(kubectl: &Kubectl, count: usize) -> Result<Self> {
        let watch = kubectl.watch(
            "pods",
            GATEWAY_PODS,
            r#"jsonpath={.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}"#,
        )?;
        let all_ready = Arc::new(Mutex::new(None));
        let record = Arc::clone(&all_ready);
        std::thread::spawn(move || {
            let mut ready = HashMap::new();
            for line in watch.map_while(Result::ok) {
                let (pod, status) = line.split_once(' ').unwrap_or((&line, ""));
                ready.insert(pod.to_owned(), status == "True");
                if ready.values().filter(|ready| **ready).count() >= count {
                    *record.lock().expect("pods-ready lock") = Some(Instant::now());
                    return;
                }
            }
        });
        Ok(Self { all_ready })
    }

    /// How long after `started` every gateway pod was Ready, once they are.
    pub fn await_all(&self, started: Instant, deadline: Duration) -> Result<Duration> {
        eventually("every gateway pod Ready", deadline, || {
            let all_ready = self
                .all_ready
                .lock()
                .expect("pods-ready lock")
                .context("not all Ready yet")?;
            Ok(all_ready.saturating_duration_since(started))
        })
    }
}

/// Opens one WebSocket through each fleet in the namespace; returns how many fleets there
/// were and why each failing one failed.
fn check_every_fleet(kubectl: &Kubectl, namespace: &str) -> Result<(usize, Vec<String>)> {
    let names = kubectl.run(&["get", "wss", "-o", "jsonpath={.items[*].metadata.name}"])?;
    let names: Vec<&str> = names.split_whitespace().collect();
    let runtime = tokio::runtime::Runtime::new().context("starting a tokio runtime")?;
    let failures = names
        .iter()
        .filter_map(|name| {
            let checked = runtime.block_on(async {
                tokio::time::timeout(CHECK_DEADLINE, echo_through(kubectl, namespace, name))
                    .await
                    .with_context(|| format!("no answer within {CHECK_DEADLINE:?}"))?
            });
            checked.err().map(|err| format!("{name}: {err:#}"))
        })
        .collect();
    Ok((names.len(), failures))
}

/// One connection through fleet `name`'s Service: a message echoed whole, by the upstream,
/// through one of the fleet's own gateway pods.
async fn echo_through(kubectl: &Kubectl, namespace: &str, name: &str) -> Result<()> {
    let endpoint = plain_endpoint(kubectl, namespace, name)?;
    let mut session = endpoint.connect(NO_TOKEN).await?;
    let reply = session.round_trip(name).await?;
    ensure!(reply == name, "sent {name:?}, the echo was {reply:?}");
    let gateway = session.gateway_ip().await?;
    let pods = gateway_pods(kubectl, name)?;
    ensure!(
        pods.contains_key(&gateway),
        "carried by {gateway}, not one of the fleet's gateway pods {pods:?}"
    );
    session.close().await
}

/// Prints the real node's figures; fails if any fleet did not serve.
pub fn report(
    kubectl: &Kubectl,
    namespace: &str,
    pods_ready: &GatewayPodsReady,
    started: Instant,
    deadline: Duration,
) -> Result<()> {
    let all_pods_ready = pods_ready.await_all(started, deadline)?;
    let checking = Instant::now();
    let (fleets, failures) = check_every_fleet(kubectl, namespace)?;
    println!(
        "every gateway pod Ready: {all_pods_ready:.1?}\nfleets that echoed a WebSocket message through their Service: {} of {fleets} ({} failed, checked in {:.1?})",
        fleets - failures.len(),
        failures.len(),
        checking.elapsed()
    );
    for failure in &failures {
        println!("  {failure}");
    }
    ensure!(
        failures.is_empty(),
        "{} fleets did not serve",
        failures.len()
    );
    Ok(())
}
