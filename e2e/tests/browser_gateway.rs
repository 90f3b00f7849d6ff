//! A real headless Chromium talks through a real `wsfleet-gateway` process, no Kubernetes:
//! wss:// with a certificate from a test CA that only the browser's NSS database trusts, the
//! JWT carried as a `bearer.<token>` subprotocol, the page's Origin allowed, and
//! permessage-deflate negotiated end to end with a Python `websockets` echo upstream that
//! selects no subprotocol (scripts/install-test-deps installs chromium, certutil and websockets).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use serde_json::json;
use wsfleet_config::GatewayConfig;
use wsfleet_e2e::binaries::wsfleet_binary;
use wsfleet_e2e::browser::{Browser, BrowserRun};
use wsfleet_e2e::fixtures::generate_rsa_key;
use wsfleet_e2e::net::{free_port, http_status};
use wsfleet_e2e::poll::give_up;
use wsfleet_e2e::process::ManagedProcess;
use wsfleet_e2e::test_ca::CertificateAuthority;
use wsfleet_e2e::wire::sign_token;
use wsfleet_e2e::{DEADLINE, eventually};

/// The name the certificate carries; the browser resolves it to 127.0.0.1 by host rule, as a
/// test in a cluster would point a Service's name at its ClusterIP.
const SERVER_NAME: &str = "chat-prod.browser-test.svc";
const ISSUER: &str = "https://auth.example.com";
const AUDIENCE: &str = "chat";

/// An echo server that negotiates permessage-deflate and selects no subprotocol; it prints
/// its port, then one line per connection naming what was negotiated.
const ECHO_UPSTREAM: &str = r#"
import asyncio
from websockets.asyncio.server import serve

async def echo(ws):
    names = ",".join(ext.name for ext in ws.protocol.extensions) or "none"
    print(f"connection extensions={names} subprotocol={ws.subprotocol}", flush=True)
    async for message in ws:
        await ws.send(message)

async def main():
    async with serve(echo, "127.0.0.1", 0, compression="deflate") as server:
        print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
        await server.serve_forever()

asyncio.run(main())
"#;

#[test]
fn chromium_talks_through_the_gateway_with_a_subprotocol_token_and_compression() -> Result<()> {
    let work = tempfile::Builder::new()
        .prefix("wsfleet-browser-gateway-")
        .tempdir()?;
    let (upstream, upstream_port) = start_echo_upstream(work.path())?;
    let browser = Browser::start()?;
    let ca = CertificateAuthority::new("wsfleet-browser-test-ca")?;
    let jwt_keys = generate_rsa_key(work.path())?;
    let config = gateway_config(
        work.path(),
        &ca,
        &jwt_keys.public_pem,
        upstream_port,
        &browser.origin(),
    )?;
    let _gateway = start_gateway(work.path(), &config)?;

    let token = sign_token(
        &std::fs::read(&jwt_keys.private_pem)?,
        ISSUER,
        AUDIENCE,
        "browser-user",
    )?;
    let bearer = format!("bearer.{token}");
    // The long message is repetitive so that compression shrinks it a lot.
    let long: String = "wsfleet relays this line as it is. "
        .repeat(600)
        .chars()
        .take(20_000)
        .collect();
    let messages = vec!["hello from chromium".to_owned(), long, "bye".to_owned()];
    let run = BrowserRun {
        url: format!(
            "wss://{SERVER_NAME}:{}{}",
            config.listen.address.port(),
            config.listen.path
        ),
        protocols: vec![bearer.clone(), "x.app.v1".to_owned()],
        messages: messages.clone(),
        trusted_ca_pem: Some(ca.cert_pem()),
        host_rules: vec![(SERVER_NAME.to_owned(), IpAddr::V4(Ipv4Addr::LOCALHOST))],
    };
    let report = browser.run(&run)?;

    assert_eq!(
        report.error, None,
        "the page reported a failure: {report:?}"
    );
    // The upstream selected none of the offered subprotocols; the gateway answers the token
    // entry, since a browser fails a handshake that selects none of its offers.
    assert!(
        report.protocol == bearer,
        "protocol {:?}, expected the bearer entry",
        report.protocol
    );
    assert!(
        report.extensions.contains("permessage-deflate"),
        "extensions {:?}",
        report.extensions
    );
    assert_eq!(
        report.replies, messages,
        "the echoes differ from what was sent"
    );
    assert_eq!(report.close_code, Some(1000));
    assert_eq!(report.was_clean, Some(true));

    // The compression was negotiated with the upstream itself, through the gateway.
    let upstream_saw = std::fs::read_to_string(upstream.log_path())?;
    assert!(
        upstream_saw.contains("connection extensions=permessage-deflate subprotocol=None"),
        "the upstream saw: {upstream_saw}"
    );

    // The CA in the browser's NSS database is what made the certificate acceptable.
    let untrusting = browser.run(&BrowserRun {
        trusted_ca_pem: None,
        ..run
    })?;
    assert!(
        untrusting.error.is_some() && untrusting.close_code == Some(1006),
        "a browser without the CA connected anyway: {untrusting:?}"
    );
    Ok(())
}

/// Starts the Python echo upstream; returns it and its port.
fn start_echo_upstream(dir: &Path) -> Result<(ManagedProcess, u16)> {
    let mut command = Command::new("python3");
    command.args(["-u", "-c", ECHO_UPSTREAM]);
    let mut upstream = ManagedProcess::spawn("echo-upstream", command, &dir.join("upstream.log"))?;
    let port = eventually("the echo upstream's port", DEADLINE, || {
        upstream.ensure_running().map_err(give_up)?;
        let log = std::fs::read_to_string(upstream.log_path())?;
        log.lines()
            .find_map(|line| line.strip_prefix("listening "))
            .context("not listening yet")?
            .trim()
            .parse::<u16>()
            .context("the upstream's port")
    })?;
    Ok((upstream, port))
}

/// Writes the gateway's certificate, key and `gateway.yaml` into `dir`: TLS for
/// [`SERVER_NAME`], RS256 tokens from the subprotocol only, `origin` allowed, compression
/// passed through to the upstream on `upstream_port`.
fn gateway_config(
    dir: &Path,
    ca: &CertificateAuthority,
    jwt_public_pem: &Path,
    upstream_port: u16,
    origin: &str,
) -> Result<GatewayConfig> {
    let serving = ca.issue_serving(&[SERVER_NAME])?;
    let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_file, &serving.cert_pem)?;
    std::fs::write(&key_file, &serving.key_pem)?;
    // JSON strings are YAML strings: paths and the origin need no further quoting.
    let yaml = format!(
        "listen:
  address: 127.0.0.1:{listen_port}
  path: /ws
metrics:
  address: 127.0.0.1:{metrics_port}
tls:
  certFile: {cert_file}
  keyFile: {key_file}
upstream:
  url: ws://127.0.0.1:{upstream_port}/
auth:
  jwt:
    issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    algorithms: [RS256]
    keyFile: {key}
    tokenFrom: [Subprotocol]
  allowedOrigins: [{origin}]
compression: Passthrough
",
        listen_port = free_port()?,
        metrics_port = free_port()?,
        cert_file = json!(cert_file),
        key_file = json!(key_file),
        key = json!(jwt_public_pem),
        origin = json!(origin),
    );
    let config = GatewayConfig::from_yaml(&yaml).context("the test's gateway config")?;
    std::fs::write(dir.join("gateway.yaml"), &yaml)?;
    Ok(config)
}

/// Starts `wsfleet-gateway` on `dir/gateway.yaml` and waits until it is ready.
fn start_gateway(dir: &Path, config: &GatewayConfig) -> Result<ManagedProcess> {
    let mut command = Command::new(wsfleet_binary("wsfleet-gateway", "wsfleet-gateway")?);
    command.arg("--config").arg(dir.join("gateway.yaml"));
    let mut gateway = ManagedProcess::spawn("wsfleet-gateway", command, &dir.join("gateway.log"))?;
    let metrics: SocketAddr = config.metrics.address;
    eventually("the gateway's /readyz", DEADLINE, || {
        gateway.ensure_running().map_err(give_up)?;
        let status = http_status(metrics.port(), "/readyz")?;
        ensure!(status == 200, "/readyz answered {status}");
        Ok(())
    })?;
    Ok(gateway)
}
