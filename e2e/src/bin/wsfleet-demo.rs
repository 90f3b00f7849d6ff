//! The wsfleet demo, end to end on this machine with real pods: a local control plane and a
//! real node, `helm install` of the chart, the production example in front of a small chat
//! room, and two clients on the host that reach the room through the fleet's Service, each
//! carried by a different gateway pod.

#![forbid(unsafe_code)]

use anyhow::{Context, Result, bail};
use wsfleet_e2e::fixtures::{create_jwt_secret, example_path};
use wsfleet_e2e::fleet::{deploy_upstream, endpoint, gateway_pods, install_chart};
use wsfleet_e2e::node::RealCluster;
use wsfleet_e2e::node::network::CLIENT_ADDRESSES;
use wsfleet_e2e::wire::{Endpoint, Session, sign_token};
use wsfleet_e2e::{Expected, await_conditions};

const NAMESPACE: &str = "demo";
const NAME: &str = "chat-prod";

fn say(text: &str) {
    println!("\n== {text}");
}

fn main() -> Result<()> {
    let work = tempfile::Builder::new().prefix("wsfleet-demo-").tempdir()?;
    say("starting a control plane and a real node (kubelet, containerd, kube-proxy, CoreDNS)");
    let cluster = RealCluster::start()?;
    run(&cluster, work.path())?;
    say("done; stopping everything and restoring the host");
    Ok(())
}

fn run(cluster: &RealCluster, work: &std::path::Path) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let admin = cluster.kubectl();

    say("helm install wsfleet charts/wsfleet");
    install_chart(cluster)?;
    print!(
        "{}",
        admin.run(&["get", "pods", "-n", "wsfleet-system", "-o", "wide"])?
    );

    say("a chat room behind Service chat-backend, the JWT Secret, and examples/production.yaml");
    admin.run(&["create", "namespace", NAMESPACE])?;
    let kubectl = admin.in_namespace(NAMESPACE);
    deploy_upstream(&kubectl, NAMESPACE, "chat")?;
    let keys = create_jwt_secret(&kubectl, work)?;
    print!(
        "{}",
        kubectl.run(&["apply", "-f", &example_path("production.yaml")])?
    );
    await_conditions(
        &kubectl,
        NAME,
        &[
            Expected::new("Ready", "True"),
            Expected::new("CertificateReady", "True"),
        ],
    )?;
    print!("{}", kubectl.run(&["get", "wss"])?);
    print!("{}", kubectl.run(&["get", "pods", "-o", "wide"])?);

    say("two clients connect over wss:// to the Service, trusting only the operator's ca.crt");
    let service = endpoint(&kubectl, NAMESPACE, NAME, &format!("{NAME}-tls"))?;
    let pods = gateway_pods(&kubectl, NAME)?;
    let private_pem = std::fs::read(&keys.private_pem)?;
    let (alice, bob) = runtime.block_on(async {
        // The Service keeps each client address on one pod (ClientIP affinity): try addresses
        // until two clients are carried by different pods.
        let mut first: Option<(Session, String)> = None;
        for source in CLIENT_ADDRESSES {
            let client = Endpoint {
                source: Some(source.into()),
                ..service.clone()
            };
            let user = if first.is_none() { "alice" } else { "bob" };
            let token = sign_token(&private_pem, "https://auth.example.com", "chat", user)?;
            let mut session = client.connect(&token).await?;
            let gateway = session.gateway_ip().await?;
            let pod = pods.get(&gateway).cloned().unwrap_or(gateway);
            match &first {
                Some((_, first_pod)) if *first_pod == pod => session.close().await?,
                Some(_) => {
                    println!("bob   from {source} is carried by gateway pod {pod}");
                    let (alice, _) = first.take().context("alice is connected")?;
                    return Ok((alice, session));
                }
                None => {
                    println!("alice from {source} is carried by gateway pod {pod}");
                    first = Some((session, pod));
                }
            }
        }
        bail!("every client address landed on the same gateway pod")
    })?;

    say("they talk through the room, which names the gateway pod each message came in through");
    runtime.block_on(async {
        let mut people = [("alice", alice), ("bob", bob)];
        for (speaker, text) in [(0, "hi bob, this is alice"), (1, "hello alice!")] {
            people[speaker].1.send(text).await?;
            println!("{} says {text:?}", people[speaker].0);
            for (name, session) in &mut people {
                let heard: serde_json::Value = serde_json::from_str(&session.next_text().await?)?;
                let via = heard["from"].as_str().unwrap_or_default();
                let pod = pods.get(via).map_or(via, String::as_str);
                println!(
                    "  {name} hears {} (it came in through {pod})",
                    heard["text"]
                );
            }
        }
        for (_, session) in people {
            session.close().await?;
        }
        anyhow::Ok(())
    })?;
    Ok(())
}
