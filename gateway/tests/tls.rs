//! TLS towards clients (with certificate reloads laid out the way Kubernetes mounts Secrets)
//! and towards a wss:// upstream.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use futures::StreamExt as _;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// A test certificate authority.
struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Authority {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `localhost`: (certificate PEM, key PEM).
    fn leaf(&self) -> (String, String) {
        self.leaf_with(CertificateParams::new(vec!["localhost".to_owned()]).unwrap())
    }

    /// A leaf for `localhost` that expires at midnight UTC of the day given.
    fn leaf_expiring(&self, year: i32, month: u8, day: u8) -> (String, String) {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(year, month, day);
        self.leaf_with(params)
    }

    fn leaf_with(&self, params: CertificateParams) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap())
            .unwrap();
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    }
}

fn server_config(cert_pem: &str, key_pem: &str) -> Arc<rustls::ServerConfig> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap(),
    )
}

/// Writes a Secret volume the way the kubelet does: files in a timestamped directory, reached
/// through the `..data` symlink, which is swapped atomically on update.
fn publish_secret(dir: &Path, generation: u32, cert_pem: &str, key_pem: &str) {
    let version = format!("..gen_{generation}");
    std::fs::create_dir_all(dir.join(&version)).unwrap();
    std::fs::write(dir.join(&version).join("tls.crt"), cert_pem).unwrap();
    std::fs::write(dir.join(&version).join("tls.key"), key_pem).unwrap();
    let _ = std::fs::remove_file(dir.join("..data_tmp"));
    symlink(&version, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        if std::fs::symlink_metadata(dir.join(file)).is_err() {
            symlink(Path::new("..data").join(file), dir.join(file)).unwrap();
        }
    }
}

/// A TLS WebSocket connection; also returns the certificate the gateway presented.
async fn connect_tls(
    gateway: &Gateway,
    config: Arc<rustls::ClientConfig>,
) -> (WebSocketStream<TlsStream<TcpStream>>, Vec<u8>) {
    let tcp = TcpStream::connect(gateway.address).await.unwrap();
    let tls = TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (client, _) = tokio_tungstenite::client_async(gateway.url("/"), tls)
        .await
        .unwrap();
    (client, presented)
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// A gateway serving `cert_pem` from a Secret-like directory, which it also returns.
async fn start_tls_gateway(
    upstream_url: &str,
    cert_pem: &str,
    key_pem: &str,
) -> (Gateway, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let tls_dir = dir.path().join("tls");
    publish_secret(&tls_dir, 1, cert_pem, key_pem);
    let extra = format!(
        "tls:\n  certFile: {}\n  keyFile: {}\n",
        tls_dir.join("tls.crt").display(),
        tls_dir.join("tls.key").display()
    );
    let gateway = Gateway::start_in(dir, upstream_url, &extra).await;
    (gateway, tls_dir)
}

#[tokio::test]
async fn certificates_reload_under_live_connections() {
    let authority = Authority::new();
    let upstream = EchoUpstream::start().await;
    let (first_cert, first_key) = authority.leaf();
    let (gateway, tls_dir) = start_tls_gateway(&upstream.url("/"), &first_cert, &first_key).await;
    // A fresh client config per connection: a resumed session would report the old chain.

    let (mut live, presented) = connect_tls(&gateway, authority.client_config()).await;
    assert_eq!(presented, der(&first_cert));
    assert_eq!(round_trip(&mut live, "before").await, "before");

    let (second_cert, second_key) = authority.leaf();
    publish_secret(&tls_dir, 2, &second_cert, &second_key);
    gateway
        .wait_metric(
            "wsfleet_gateway_reloads_total{kind=\"certificate\",outcome=\"success\"}",
            1.0,
        )
        .await;
    let (mut fresh, presented) = connect_tls(&gateway, authority.client_config()).await;
    assert_eq!(
        presented,
        der(&second_cert),
        "new handshakes see the new certificate"
    );
    assert_eq!(round_trip(&mut fresh, "new").await, "new");
    assert_eq!(
        round_trip(&mut live, "after").await,
        "after",
        "the old connection still works"
    );

    // A certificate with someone else's key is refused; the previous pair stays.
    let (third_cert, _) = authority.leaf();
    publish_secret(&tls_dir, 3, &third_cert, &second_key);
    gateway
        .wait_metric(
            "wsfleet_gateway_reloads_total{kind=\"certificate\",outcome=\"failure\"}",
            1.0,
        )
        .await;
    let (_, presented) = connect_tls(&gateway, authority.client_config()).await;
    assert_eq!(presented, der(&second_cert));
    assert_eq!(round_trip(&mut live, "still").await, "still");
}

#[tokio::test]
async fn the_served_certificates_expiry_is_exported_and_follows_reloads() {
    const NOT_AFTER: &str = "wsfleet_gateway_certificate_not_after_seconds";
    let authority = Authority::new();
    let upstream = EchoUpstream::start().await;
    // 2030-01-02T00:00:00Z.
    let (first_cert, first_key) = authority.leaf_expiring(2030, 1, 2);
    let (gateway, tls_dir) = start_tls_gateway(&upstream.url("/"), &first_cert, &first_key).await;
    assert_eq!(gateway.metric(NOT_AFTER).await, 1_893_542_400.0);

    // 2031-03-04T00:00:00Z, once reloaded.
    let (second_cert, second_key) = authority.leaf_expiring(2031, 3, 4);
    publish_secret(&tls_dir, 2, &second_cert, &second_key);
    gateway
        .wait_metric(
            "wsfleet_gateway_reloads_total{kind=\"certificate\",outcome=\"success\"}",
            1.0,
        )
        .await;
    assert_eq!(gateway.metric(NOT_AFTER).await, 1_930_348_800.0);
    let (_, presented) = connect_tls(&gateway, authority.client_config()).await;
    assert_eq!(
        presented,
        der(&second_cert),
        "the exported one is the one served"
    );

    // A refused pair changes nothing: the previous certificate is still served.
    let (third_cert, _) = authority.leaf_expiring(2032, 1, 1);
    publish_secret(&tls_dir, 3, &third_cert, &second_key);
    gateway
        .wait_metric(
            "wsfleet_gateway_reloads_total{kind=\"certificate\",outcome=\"failure\"}",
            1.0,
        )
        .await;
    assert_eq!(gateway.metric(NOT_AFTER).await, 1_930_348_800.0);

    // Without TLS there is no such series.
    let plain = Gateway::start(&upstream.url("/"), "").await;
    let (_, body) = http_get(plain.metrics_address, "/metrics").await.unwrap();
    assert!(!body.contains(NOT_AFTER), "{body}");
}

#[tokio::test]
async fn a_closing_handshake_ends_the_tls_session_cleanly() {
    let authority = Authority::new();
    let upstream = EchoUpstream::start().await;
    let (cert, key) = authority.leaf();
    let (gateway, _tls_dir) = start_tls_gateway(&upstream.url("/"), &cert, &key).await;
    let (mut client, _) = connect_tls(&gateway, authority.client_config()).await;
    assert_eq!(round_trip(&mut client, "bye soon").await, "bye soon");
    client.close(None).await.unwrap();
    // The upstream answers the close and ends its stream; the gateway then ends the client's
    // TLS session with close_notify, which a bare TCP FIN would not be.
    loop {
        match within("the end of the connection", client.next()).await {
            Some(Ok(Message::Close(_))) => {}
            None => break,
            other => panic!("expected the close answer, then a clean end: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_client_that_ends_its_stream_after_its_close_gets_close_notify() {
    // An upstream that answers the close only once the client's end has reached it, and
    // then keeps its connection open until the test ends.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_url = format!("ws://{}/", listener.local_addr().unwrap());
    let (release, held) = tokio::sync::oneshot::channel::<()>();
    let upstream = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let tcp = ws.get_mut();
        let mut received = Vec::new();
        tcp.read_to_end(&mut received).await.unwrap();
        assert_eq!(received[0], 0x88, "the client's close frame comes first");
        // An empty close frame, unmasked as from a server.
        tcp.write_all(&[0x88, 0x00]).await.unwrap();
        let _ = held.await;
    });
    let authority = Authority::new();
    let (cert, key) = authority.leaf();
    let (gateway, _tls_dir) = start_tls_gateway(&upstream_url, &cert, &key).await;
    let (mut client, _) = connect_tls(&gateway, authority.client_config()).await;
    client.close(None).await.unwrap();
    // The client ends its stream (close_notify, then FIN) before the close answer arrives.
    client.get_mut().shutdown().await.unwrap();
    // Both close frames have passed and the client has ended: the closing handshake is done,
    // so the gateway ends the client's TLS session with close_notify at once. Had it waited
    // for the upstream instead, its close linger would end with a bare TCP close.
    loop {
        match within("the end of the connection", client.next()).await {
            // The upstream's empty close, not one of the gateway's own.
            Some(Ok(Message::Close(None))) => {}
            None => break,
            other => panic!("expected the upstream's close answer, then a clean end: {other:?}"),
        }
    }
    drop(release);
    upstream.await.expect("the upstream saw the client's close");
}

#[tokio::test]
async fn mismatched_pair_is_refused_at_start() {
    let authority = Authority::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = authority.leaf();
    let (_, other_key) = authority.leaf();
    std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), other_key).unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {{address: 127.0.0.1:{}}}\nmetrics: {{address: 127.0.0.1:{}}}\nupstream: {{url: ws://127.0.0.1:1/}}\ntls:\n  certFile: {}\n  keyFile: {}\n",
            free_port(),
            free_port(),
            dir.path().join("tls.crt").display(),
            dir.path().join("tls.key").display()
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wsfleet-gateway"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not match"), "{stderr}");
}

#[tokio::test]
async fn wss_upstream_with_its_own_authority() {
    let authority = Authority::new();
    let (cert, key) = authority.leaf();
    let upstream = EchoUpstream::start_with(Some(server_config(&cert, &key))).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.crt"), &authority.pem).unwrap();
    let extra = format!("  caFile: {}\n", dir.path().join("ca.crt").display());
    let url = format!("wss://localhost:{}/secure", upstream.address.port());
    // `extra` continues the upstream section the harness writes last.
    let gateway = Gateway::start_in(dir, &url, &extra).await;
    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    assert_eq!(round_trip(&mut client, "over tls").await, "over tls");
    assert_eq!(upstream.records.requests()[0].uri, "/secure");

    // Without the authority the upstream's certificate is not trusted: 502.
    let untrusting = Gateway::start(&url, "").await;
    assert_eq!(refused_status(&untrusting.url("/"), &[]).await, 502);
}

/// A message through the gateway from `openssl s_client`: an independent TLS implementation,
/// in TLS 1.2 and in TLS 1.3 (the installed openssl speaks both).
#[tokio::test]
async fn openssl_clients_upgrade_and_relay_over_tls_1_2_and_1_3() {
    use tokio::process::Command;

    let authority = Authority::new();
    let upstream = EchoUpstream::start().await;
    // OpenSSL takes a leaf whose subject equals its issuer's for self-signed: name it.
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let (cert, key) = authority.leaf_with(params);
    let (gateway, tls_dir) = start_tls_gateway(&upstream.url("/"), &cert, &key).await;
    let ca_file = tls_dir.parent().unwrap().join("ca.pem");
    std::fs::write(&ca_file, &authority.pem).unwrap();
    for version in ["-tls1_2", "-tls1_3"] {
        let mut openssl = Command::new("openssl")
            .args(["s_client", "-quiet", "-ign_eof", "-verify_return_error"])
            .args(["-connect", &gateway.address.to_string()])
            .args(["-servername", "localhost", "-verify_hostname", "localhost"])
            .arg("-CAfile")
            .arg(&ca_file)
            .arg(version)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("openssl (scripts/install-test-deps installs it)");
        let mut stdin = openssl.stdin.take().unwrap();
        let mut stdout = openssl.stdout.take().unwrap();
        // The upgrade, then a masked text frame "hi" right behind it.
        let mut sent = upgrade_head("/", "").into_bytes();
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        sent.extend_from_slice(&[0x81, 0x82]);
        sent.extend_from_slice(&mask);
        sent.extend(b"hi".iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        stdin.write_all(&sent).await.unwrap();
        stdin.flush().await.unwrap();
        let echo: &[u8] = &[0x81, 0x02, b'h', b'i'];
        let mut received = Vec::new();
        within(&format!("openssl {version}: the 101 and the echo"), async {
            while !received.ends_with(echo) {
                let mut chunk = [0; 1024];
                let read = stdout.read(&mut chunk).await.unwrap();
                assert!(read > 0, "openssl {version} ended: {received:?}");
                received.extend_from_slice(&chunk[..read]);
            }
        })
        .await;
        let text = String::from_utf8_lossy(&received);
        assert!(
            text.starts_with("HTTP/1.1 101"),
            "openssl {version}: {text}"
        );
    }
}
