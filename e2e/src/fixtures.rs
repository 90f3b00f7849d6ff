//! The objects the examples expect to exist beside them (each example's header comment
//! says which): the chat-backend Service, the chat-jwt Secret, a user-managed TLS Secret.

use std::path::Path;

use anyhow::{Context, Result};

use crate::command::run;

use crate::kubectl::Kubectl;
use crate::test_ca::CertificateAuthority;

/// The Service the examples send traffic to: `chat-backend`, port 8080.
pub fn backend_service_manifest(namespace: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: chat-backend
  namespace: {namespace}
spec:
  selector:
    app: chat-backend
  ports:
  - name: ws
    port: 8080
    targetPort: 8080
"
    )
}

/// Creates the chat-backend Service in `namespace`.
pub fn create_backend_service(kubectl: &Kubectl, namespace: &str) -> Result<()> {
    kubectl
        .apply(&backend_service_manifest(namespace))
        .context("creating Service chat-backend")?;
    Ok(())
}

/// An RSA key pair written as PEM files by openssl (ring cannot generate RSA keys).
pub struct RsaKeyFiles {
    pub private_pem: std::path::PathBuf,
    pub public_pem: std::path::PathBuf,
}

/// Generates an RSA key pair in `dir`.
pub fn generate_rsa_key(dir: &Path) -> Result<RsaKeyFiles> {
    let keys = RsaKeyFiles {
        private_pem: dir.join("jwt-private.pem"),
        public_pem: dir.join("jwt-public.pem"),
    };
    run_openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &keys.private_pem.display().to_string(),
    ])?;
    run_openssl(&[
        "pkey",
        "-in",
        &keys.private_pem.display().to_string(),
        "-pubout",
        "-out",
        &keys.public_pem.display().to_string(),
    ])?;
    Ok(keys)
}

fn run_openssl(args: &[&str]) -> Result<()> {
    run("openssl", args)
        .map(drop)
        .context("openssl (apt-get install openssl)")
}

/// Creates Secret `chat-jwt` whose key `public.pem` verifies client tokens; returns the key files.
pub fn create_jwt_secret(kubectl: &Kubectl, dir: &Path) -> Result<RsaKeyFiles> {
    let keys = generate_rsa_key(dir)?;
    kubectl
        .run(&[
            "create",
            "secret",
            "generic",
            "chat-jwt",
            &format!("--from-file=public.pem={}", keys.public_pem.display()),
        ])
        .context("creating Secret chat-jwt")?;
    Ok(keys)
}

/// Creates a kubernetes.io/tls Secret `name` for `dns_names`, signed by a fresh CA whose
/// PEM is returned.
pub fn create_user_tls_secret(
    kubectl: &Kubectl,
    dir: &Path,
    name: &str,
    dns_names: &[&str],
) -> Result<String> {
    let ca = CertificateAuthority::new("user-managed-ca")?;
    let serving = ca.issue_serving(dns_names)?;
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &serving.cert_pem)?;
    std::fs::write(&key, &serving.key_pem)?;
    kubectl
        .run(&[
            "create",
            "secret",
            "tls",
            name,
            &format!("--cert={}", cert.display()),
            &format!("--key={}", key.display()),
        ])
        .with_context(|| format!("creating TLS Secret {name}"))?;
    Ok(ca.cert_pem())
}

/// The path of `examples/FILE`, as kubectl's `-f` wants it.
pub fn example_path(file: &str) -> String {
    crate::binaries::workspace_root()
        .join("examples")
        .join(file)
        .display()
        .to_string()
}
