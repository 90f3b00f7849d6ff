//! Stories 2 and 3: the production example on real pods, and a client on the host that talks
//! to it through the Service over wss:// with a JWT; bad tokens and origins are refused there.

use anyhow::{Context, Result, ensure};
use wsfleet_e2e::fleet::{await_ready_pods, pods_of};
use wsfleet_e2e::inspect::table_row;

use crate::setup::{Fleet, NAME, block_on};

#[test]
fn the_production_example_serves_clients_through_its_service() -> Result<()> {
    let fleet = Fleet::production("serving")?;
    let kubectl = fleet.kubectl();
    await_ready_pods(kubectl, NAME, 2)?;

    let row = table_row(kubectl, "wss", NAME)?;
    ensure!(row["READY"] == "True", "kubectl get wss: {row:?}");
    ensure!(row["REPLICAS"] == "2", "kubectl get wss: {row:?}");
    let expected_endpoint = format!("wss://{NAME}.{}.svc/ws", fleet.namespace.name());
    ensure!(
        row["ENDPOINT"] == expected_endpoint,
        "kubectl get wss: {row:?}"
    );
    ensure!(
        row["CERT-EXPIRES"].starts_with("20"),
        "kubectl get wss: {row:?}"
    );

    // The pods run as the operator wrote them: uid 65532, read-only root, no capabilities.
    for pod in pods_of(kubectl, NAME)? {
        let container = &pod["spec"]["containers"][0]["securityContext"];
        ensure!(
            container["readOnlyRootFilesystem"] == true
                && container["capabilities"]["drop"][0] == "ALL",
            "security context {container}"
        );
        let status = &pod["status"]["containerStatuses"][0];
        ensure!(
            status["ready"] == true && status["restartCount"] == 0,
            "{status}"
        );
    }

    let endpoint = fleet.endpoint()?;
    let token = fleet.token("ada")?;
    block_on(async {
        let mut session = endpoint.connect(&token).await?;
        for text in ["hello", "how are you?", &"x".repeat(10_000)] {
            let reply = session.round_trip(text).await?;
            ensure!(reply == text, "sent {} bytes, got {reply:.40}", text.len());
        }
        // The upstream sees the forwarded claim and the gateway pod's address.
        let identity = session.whoami().await?;
        ensure!(identity["headers"]["x-user-id"] == "ada", "{identity}");
        let peer = identity["peer"].as_str().context("no peer")?;
        let pods = wsfleet_e2e::fleet::gateway_pods(kubectl, NAME)?;
        ensure!(
            pods.contains_key(peer),
            "forwarded by {peer}, not a gateway pod: {pods:?}"
        );
        session.close().await?;

        let status = endpoint.refusal("not-a-token", &endpoint.origin).await?;
        ensure!(status == 401, "a bad token got {status}");
        let status = endpoint.refusal(&token, "https://evil.example.com").await?;
        ensure!(status == 403, "a wrong Origin got {status}");
        Ok(())
    })
}
