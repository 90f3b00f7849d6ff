//! The wsfleet demo, end to end on this machine: a local control plane, the operator, the
//! production example, then a real gateway process running the config and certificate the
//! operator rendered, with a client exchanging messages through it over wss://.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use wsfleet_e2e::binaries::wsfleet_binary;
use wsfleet_e2e::fixtures::{create_backend_service, create_jwt_secret, example_path};
use wsfleet_e2e::inspect::secret_value;
use wsfleet_e2e::net::{free_port, http_get, http_status};
use wsfleet_e2e::poll::give_up;
use wsfleet_e2e::process::ManagedProcess;
use wsfleet_e2e::wire::{ClientSettings, exchange, sign_token, start_echo_upstream};
use wsfleet_e2e::{
    ControlPlane, DEADLINE, Expected, Kubectl, Operator, await_conditions, eventually,
};
use wsfleet_gateway::config::GatewayConfig;

const NAMESPACE: &str = "demo";
const NAME: &str = "chat-prod";

fn say(text: &str) {
    println!("\n== {text}");
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let work = tempfile::Builder::new().prefix("wsfleet-demo-").tempdir()?;

    say("starting a local control plane (etcd, kube-apiserver, controllers, scheduler, kwok)");
    let control_plane = ControlPlane::start()?;
    control_plane.install_crd()?;
    let admin = control_plane.kubectl();
    admin.run(&["create", "namespace", NAMESPACE])?;
    let kubectl = admin.in_namespace(NAMESPACE);

    say("starting wsfleet-operator");
    let _operator = Operator::start(&control_plane, NAMESPACE, "demo", work.path())?;

    say("applying examples/production.yaml with the Service and JWT Secret it expects");
    create_backend_service(&kubectl, NAMESPACE)?;
    let jwt_keys = create_jwt_secret(&kubectl, work.path())?;
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
    print!(
        "{}",
        kubectl.run(&[
            "get",
            "configmap,secret,deployment,service,hpa,pdb,pods",
            "-l",
            &format!("app.kubernetes.io/instance={NAME}")
        ])?
    );

    say("running wsfleet-gateway locally with the rendered ConfigMap and the issued certificate");
    let upstream = runtime.block_on(start_echo_upstream())?;
    println!("echo upstream on {upstream}");
    let (config, ca_pem) = localize_gateway_config(&kubectl, work.path(), upstream)?;
    let gateway = wsfleet_binary("wsfleet-gateway", "wsfleet-gateway")?;
    let config_path = work.path().join("gateway.yaml");
    let mut command = Command::new(gateway);
    command.arg("--config").arg(&config_path);
    let mut gateway =
        ManagedProcess::spawn("wsfleet-gateway", command, &work.path().join("gateway.log"))?;
    let metrics_port = config.metrics.address.port();
    eventually("the gateway's /readyz", DEADLINE, || {
        gateway.ensure_running().map_err(give_up)?;
        let status = http_status(metrics_port, "/readyz")?;
        ensure!(status == 200, "/readyz answered {status}");
        Ok(())
    })?;
    println!(
        "gateway listening on wss://{} (metrics on {})",
        config.listen.address, config.metrics.address
    );

    say("a client exchanges messages through the gateway over wss://, trusting only ca.crt");
    let private_pem = std::fs::read(&jwt_keys.private_pem)?;
    let token = sign_token(
        &private_pem,
        "https://auth.example.com",
        "chat",
        "demo-user",
    )?;
    let settings = ClientSettings {
        address: config.listen.address,
        server_name: "chat.example.com",
        path: &config.listen.path,
        ca_pem: &ca_pem,
        origin: "https://chat.example.com",
        token: &token,
    };
    let messages = ["hello", "how are you?", "bye"];
    let replies = runtime.block_on(exchange(&settings, &messages))?;
    for (sent, received) in messages.iter().zip(&replies) {
        println!("client sent {sent:?}, received {received:?}");
    }
    ensure!(
        replies
            .iter()
            .zip(messages)
            .all(|(reply, sent)| reply.ends_with(sent)),
        "the replies do not echo what was sent"
    );

    say("the gateway's metrics");
    let metrics = http_get(metrics_port, "/metrics")?;
    for line in metrics.lines().filter(|line| {
        line.starts_with("wsfleet_gateway_messages_total")
            || line.starts_with("wsfleet_gateway_handshakes_total")
    }) {
        println!("{line}");
    }

    say("done; stopping the gateway, the operator and the control plane");
    gateway.terminate(std::time::Duration::from_secs(10));
    Ok(())
}

/// The rendered gateway.yaml with the pod's file paths and addresses replaced by files in
/// `dir` (holding the Secrets' contents) and loopback ports, forwarding to `upstream`.
/// Returns the config written to `dir/gateway.yaml` and the CA certificate to trust.
fn localize_gateway_config(
    kubectl: &Kubectl,
    dir: &Path,
    upstream: std::net::SocketAddr,
) -> Result<(GatewayConfig, String)> {
    let configmap = kubectl.get("configmap", &format!("{NAME}-gateway"))?;
    let rendered = configmap["data"]["gateway.yaml"]
        .as_str()
        .context("ConfigMap has no gateway.yaml")?;
    println!("rendered gateway.yaml:\n{rendered}");
    let mut config = GatewayConfig::from_yaml(rendered)?;

    let secret = format!("{NAME}-tls");
    let ca_pem = secret_value(kubectl, &secret, "ca.crt")?;
    let tls = config.tls.as_mut().context("the example has TLS")?;
    tls.cert_file = dir.join("tls.crt");
    tls.key_file = dir.join("tls.key");
    std::fs::write(&tls.cert_file, secret_value(kubectl, &secret, "tls.crt")?)?;
    std::fs::write(&tls.key_file, secret_value(kubectl, &secret, "tls.key")?)?;
    let jwt = config
        .auth
        .jwt
        .as_mut()
        .context("the example has JWT auth")?;
    jwt.key_file = dir.join("public.pem");
    std::fs::write(
        &jwt.key_file,
        secret_value(kubectl, "chat-jwt", "public.pem")?,
    )?;

    config.listen.address = format!("127.0.0.1:{}", free_port()?).parse()?;
    config.metrics.address = format!("127.0.0.1:{}", free_port()?).parse()?;
    let path = config
        .upstream
        .url
        .splitn(4, '/')
        .nth(3)
        .map(|path| format!("/{path}"))
        .unwrap_or_default();
    config.upstream.url = format!("ws://{upstream}{path}");
    config.validate()?;
    std::fs::write(dir.join("gateway.yaml"), serde_yaml::to_string(&config)?)?;
    Ok((config, ca_pem))
}
