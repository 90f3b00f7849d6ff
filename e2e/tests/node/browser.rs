//! Story 9: a real browser. Headless Chromium, trusting the operator's ca.crt through its own
//! NSS database, opens wss:// to the fleet's Service with its token as a subprotocol beside an
//! app protocol the upstream does not pick, and permessage-deflate negotiated end to end with
//! the upstream pod.

use anyhow::{Context, Result, ensure};
use serde_json::json;
use wsfleet_e2e::browser::{Browser, BrowserRun};
use wsfleet_e2e::fleet::await_ready_pods;

use crate::setup::{Fleet, NAME};

#[test]
fn a_browser_talks_to_the_upstream_pod_through_the_service() -> Result<()> {
    let browser = Browser::start()?;
    let origin = browser.origin();
    let fleet = Fleet::production_with("browser", |manifest| {
        manifest["spec"]["auth"]["allowedOrigins"] = json!([origin]);
    })?;
    await_ready_pods(fleet.kubectl(), NAME, 2)?;
    let endpoint = fleet.endpoint()?;
    let token = fleet.token("grace")?;
    let token_protocol = format!("bearer.{token}");
    let messages = vec![
        "hello from chromium".to_owned(),
        "compressible ".repeat(1_500),
        "bye".to_owned(),
    ];
    let report = browser.run(&BrowserRun {
        url: format!("wss://{}{}", endpoint.server_name, endpoint.path),
        protocols: vec![token_protocol.clone(), "x.app.v1".to_owned()],
        messages: messages.clone(),
        trusted_ca_pem: endpoint.ca_pem.clone(),
        host_rules: vec![(endpoint.server_name.clone(), endpoint.address.ip())],
    })?;

    ensure!(report.error.is_none(), "the browser failed: {report:?}");
    ensure!(
        report.protocol == token_protocol,
        "the 101 selected {:?}, not the token entry the browser offered",
        report.protocol
    );
    ensure!(
        report.extensions.contains("permessage-deflate"),
        "extensions {:?}",
        report.extensions
    );
    ensure!(report.replies == messages, "replies {:?}", report.replies);
    let code = report.close_code.context("no close event")?;
    ensure!(
        code == 1000 && report.was_clean == Some(true),
        "closed with {code}, {report:?}"
    );
    Ok(())
}
