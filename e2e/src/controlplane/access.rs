//! How clients reach the control plane and what it records of them: kubeconfigs with tokens,
//! and the audit log of writes.

use super::*;

pub(super) const AUDIT_LOG: &str = "audit.log";

/// Writes are logged with who made them; reads are not logged at all.
pub(super) const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
";

/// One write the apiserver answered, from its audit log.
#[derive(Debug, Clone)]
pub struct AuditedWrite {
    /// RFC 3339 in UTC with microseconds: strings of one shape compare as times do.
    pub at: String,
    /// When the apiserver answered, in the same form: a write may take effect until then.
    pub answered: String,
    /// The HTTP status it was answered with.
    pub code: u64,
    pub verb: String,
    pub namespace: String,
    pub resource: String,
    pub name: String,
}

pub(super) fn render_kubeconfig(server: &str, ca_file: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: wsfleet-e2e
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: admin
  user:
    token: {token}
contexts:
- name: wsfleet-e2e
  context:
    cluster: wsfleet-e2e
    user: admin
current-context: wsfleet-e2e
",
        ca = ca_file.display()
    )
}

pub(super) fn random_token() -> Result<String> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}
