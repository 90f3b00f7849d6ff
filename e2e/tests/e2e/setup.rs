//! What several tests start from: a namespace with the CRD and an operator, and the
//! production example Ready in one.

use anyhow::Result;
use wsfleet_e2e::children::{Child, expected_children};
use wsfleet_e2e::fixtures::{create_backend_service, create_jwt_secret, example_path};
use wsfleet_e2e::{Expected, Operator, TestNamespace, await_conditions};

/// A namespace with the CRD installed and an operator watching it.
pub fn prepared(name: &str) -> Result<(TestNamespace, Operator)> {
    let namespace = TestNamespace::create(name)?;
    namespace.control_plane().install_crd()?;
    let operator = namespace.start_operator("operator-0")?;
    Ok((namespace, operator))
}

/// The production example Ready, not Degraded and with its certificate issued, in a new
/// namespace `name` under an operator that runs as long as the returned handle; also returns
/// the children the operator created for it.
pub fn ready_production_fleet(name: &str) -> Result<(TestNamespace, Operator, Vec<Child>)> {
    let (namespace, operator) = prepared(name)?;
    let kubectl = namespace.kubectl();
    create_backend_service(kubectl, namespace.name())?;
    create_jwt_secret(kubectl, namespace.dir())?;
    kubectl.run(&["apply", "-f", &example_path("production.yaml")])?;
    await_conditions(
        kubectl,
        "chat-prod",
        &[
            Expected::new("Ready", "True"),
            Expected::new("Degraded", "False"),
            Expected::new("CertificateReady", "True"),
        ],
    )?;
    let children = expected_children("chat-prod", Some("chat-prod-tls"), true);
    for child in &children {
        kubectl.get(child.kind, &child.name)?;
    }
    Ok((namespace, operator, children))
}
