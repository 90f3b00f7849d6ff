//! The TLS stream against tokio-rustls as the peer, over real loopback sockets.

use rustls::HandshakeKind;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;

/// A self-signed certificate for `localhost`, served and trusted.
struct Pki {
    server: Arc<ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl Pki {
    fn new() -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert = CertificateDer::from(cert.der().to_vec());
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.clone()],
                PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self {
            server: Arc::new(server),
            client: Arc::new(client),
        }
    }

    /// A buffered client connected through `path` to a session accepted here.
    async fn connect(
        &self,
        path: Path,
    ) -> (tokio_rustls::client::TlsStream<TcpStream>, ServerTlsStream) {
        let (client, server) = tcp_pair(path).await;
        tokio::join!(
            async {
                TlsConnector::from(self.client.clone())
                    .connect(localhost(), client)
                    .await
                    .unwrap()
            },
            async {
                ServerTlsStream::accept(server, self.server.clone())
                    .await
                    .unwrap()
            },
        )
    }

    /// How accepting a TLS session on `tcp` fails.
    async fn refused(&self, tcp: TcpStream) -> io::ErrorKind {
        match ServerTlsStream::accept(tcp, self.server.clone()).await {
            Ok(_) => panic!("the handshake succeeded"),
            Err(err) => err.kind(),
        }
    }

    /// A session connected here through `path` to a buffered server.
    async fn connect_upstream(
        &self,
        path: Path,
    ) -> (ClientTlsStream, tokio_rustls::server::TlsStream<TcpStream>) {
        let (client, server) = tcp_pair(path).await;
        tokio::join!(
            async {
                ClientTlsStream::connect(client, self.client.clone(), localhost())
                    .await
                    .unwrap()
            },
            async {
                TlsAcceptor::from(self.server.clone())
                    .accept(server)
                    .await
                    .unwrap()
            },
        )
    }
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

/// A connected (client, server) pair of TCP streams.
async fn tcp_pair(path: Path) -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(
        async {
            match path {
                Path::Direct => TcpStream::connect(address).await.unwrap(),
                Path::ByteByByte => dribbling_proxy(address).await,
            }
        },
        async { listener.accept().await.unwrap().0 },
    );
    (client, server)
}

#[derive(Clone, Copy)]
enum Path {
    Direct,
    /// Every byte, either way, in a write of its own.
    ByteByByte,
}

/// A TCP connection to `server` through a relay that passes bytes one at a time, so
/// that every record arrives in pieces.
async fn dribbling_proxy(server: std::net::SocketAddr) -> TcpStream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (near, _) = listener.accept().await.unwrap();
    let far = TcpStream::connect(server).await.unwrap();
    near.set_nodelay(true).unwrap();
    far.set_nodelay(true).unwrap();
    let (near_read, near_write) = near.into_split();
    let (far_read, far_write) = far.into_split();
    tokio::spawn(dribble(near_read, far_write));
    tokio::spawn(dribble(far_read, near_write));
    client
}

async fn dribble(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
) {
    let mut byte = [0];
    while from.read(&mut byte).await.unwrap_or(0) == 1 {
        if to.write_all(&byte).await.is_err() {
            return;
        }
        tokio::task::yield_now().await;
    }
    let _ = to.shutdown().await;
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn assert_holds_nothing<S>(stream: &TlsStream<S>) {
    let buffers = &stream.buffers;
    assert_eq!(
        (
            buffers.received.capacity(),
            buffers.unread.capacity(),
            buffers.unsent.capacity()
        ),
        (0, 0, 0),
        "a session with nothing in flight holds no buffer"
    );
}

#[tokio::test]
async fn records_that_arrive_in_pieces_are_read_whole() {
    let pki = Pki::new();
    let (mut client, mut server) = pki.connect(Path::ByteByByte).await;
    let sent = [pattern(1, 1), pattern(5_000, 2), pattern(40_000, 3)].concat();
    client.write_all(&sent).await.unwrap();
    client.flush().await.unwrap();
    let mut received = vec![0; sent.len()];
    server.read_exact(&mut received).await.unwrap();
    assert!(received == sent, "the plaintext differs from what was sent");
    assert_holds_nothing(&server);
}

#[tokio::test]
async fn a_session_between_messages_holds_no_buffer() {
    let pki = Pki::new();
    let (mut client, mut server) = pki.connect(Path::Direct).await;
    // The client's first write reaches the server before the server's tickets were read.
    client.write_all(b"ping").await.unwrap();
    let mut ping = [0; 4];
    server.read_exact(&mut ping).await.unwrap();
    server.write_all(b"pong").await.unwrap();
    server.flush().await.unwrap();
    let mut pong = [0; 4];
    client.read_exact(&mut pong).await.unwrap();
    assert_eq!((&ping, &pong), (b"ping", b"pong"));
    assert_holds_nothing(&server);
}

#[tokio::test]
async fn a_reader_with_little_room_gets_the_rest_on_its_next_reads() {
    let pki = Pki::new();
    let (mut client, mut server) = pki.connect(Path::Direct).await;
    let sent = pattern(20_000, 4);
    client.write_all(&sent).await.unwrap();
    let mut received = Vec::new();
    let mut small = [0; 7];
    while received.len() < sent.len() {
        let read = server.read(&mut small).await.unwrap();
        assert!(read > 0, "the stream ended early");
        received.extend_from_slice(&small[..read]);
    }
    assert!(received == sent, "the plaintext differs from what was sent");
    assert_holds_nothing(&server);
}

#[tokio::test]
async fn large_transfers_wait_for_a_slow_peer_and_arrive_whole() {
    let pki = Pki::new();
    let (client, server) = pki.connect(Path::Direct).await;
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut server_read, mut server_write) = tokio::io::split(server);
    let down = pattern(4 << 20, 5);
    let up = pattern(3 << 20, 6);
    // Both write everything before either reads, so both sockets fill and writes wait.
    let ((), (), down_received, up_received) = tokio::join!(
        async {
            server_write.write_all(&down).await.unwrap();
            server_write.flush().await.unwrap();
        },
        async {
            client_write.write_all(&up).await.unwrap();
            client_write.flush().await.unwrap();
        },
        async {
            let mut received = vec![0; down.len()];
            client_read.read_exact(&mut received).await.unwrap();
            received
        },
        async {
            let mut received = vec![0; up.len()];
            server_read.read_exact(&mut received).await.unwrap();
            received
        },
    );
    assert!(down_received == down, "the bytes towards the client differ");
    assert!(up_received == up, "the bytes from the client differ");
}

#[tokio::test]
async fn a_key_update_from_the_client_is_followed() {
    let pki = Pki::new();
    let (mut client, mut server) = pki.connect(Path::Direct).await;
    for round in 0..3u8 {
        client.get_mut().1.refresh_traffic_keys().unwrap();
        let message = pattern(3_000, round);
        client.write_all(&message).await.unwrap();
        client.flush().await.unwrap();
        let mut received = vec![0; message.len()];
        server.read_exact(&mut received).await.unwrap();
        server.write_all(&received).await.unwrap();
        server.flush().await.unwrap();
        let mut echoed = vec![0; message.len()];
        client.read_exact(&mut echoed).await.unwrap();
        assert!(echoed == message, "round {round}: the echo differs");
    }
}

#[tokio::test]
async fn a_second_connection_resumes_the_session() {
    let pki = Pki::new();
    for expected in [HandshakeKind::Full, HandshakeKind::Resumed] {
        let (mut client, mut server) = pki.connect(Path::Direct).await;
        // Reading the echo reads the tickets sent before it.
        client.write_all(b"hello").await.unwrap();
        let mut hello = [0; 5];
        server.read_exact(&mut hello).await.unwrap();
        server.write_all(&hello).await.unwrap();
        server.flush().await.unwrap();
        client.read_exact(&mut hello).await.unwrap();
        assert_eq!(client.get_ref().1.handshake_kind(), Some(expected));
        assert_eq!(server.session.handshake_kind(), Some(expected));
    }
}

#[tokio::test]
async fn close_notify_ends_each_direction_on_its_own() {
    let pki = Pki::new();
    let (mut client, mut server) = pki.connect(Path::Direct).await;
    // The client closes its direction; the server reads the end, and may still write.
    client.write_all(b"last words").await.unwrap();
    client.shutdown().await.unwrap();
    let mut received = Vec::new();
    server.read_to_end(&mut received).await.unwrap();
    assert_eq!(received, b"last words");
    server.write_all(b"reply after the end").await.unwrap();
    server.shutdown().await.unwrap();
    // The client's read ends cleanly: its TLS errs on an end without close_notify.
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"reply after the end");
    assert!(
        server.write_all(b"more").await.is_err(),
        "nothing is written after close_notify"
    );
}

#[tokio::test]
async fn a_peer_that_does_not_speak_tls_is_told_so_with_an_alert() {
    let pki = Pki::new();
    let (mut client, tcp) = tcp_pair(Path::Direct).await;
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(pki.refused(tcp).await, io::ErrorKind::InvalidData);
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    assert_eq!(
        answer.first(),
        Some(&0x15),
        "a TLS alert record: {answer:?}"
    );
}

#[tokio::test]
async fn a_client_that_leaves_mid_handshake_ends_the_accept() {
    let pki = Pki::new();
    let (mut client, tcp) = tcp_pair(Path::Direct).await;
    // The first bytes of a handshake record, then the end.
    client.write_all(&[0x16, 0x03, 0x01, 0x02]).await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(pki.refused(tcp).await, io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn as_a_client_records_in_pieces_go_both_ways_whole() {
    let pki = Pki::new();
    let (mut client, mut server) = pki.connect_upstream(Path::ByteByByte).await;
    let up = pattern(20_000, 7);
    client.write_all(&up).await.unwrap();
    client.flush().await.unwrap();
    let mut received = vec![0; up.len()];
    server.read_exact(&mut received).await.unwrap();
    assert!(received == up, "the bytes from the client differ");
    let down = pattern(30_000, 8);
    server.write_all(&down).await.unwrap();
    server.flush().await.unwrap();
    let mut received = vec![0; down.len()];
    client.read_exact(&mut received).await.unwrap();
    assert!(received == down, "the bytes towards the client differ");
    assert_holds_nothing(&client);
}

#[tokio::test]
async fn as_a_client_a_second_connection_resumes_and_closes_cleanly() {
    let pki = Pki::new();
    for expected in [HandshakeKind::Full, HandshakeKind::Resumed] {
        let (mut client, mut server) = pki.connect_upstream(Path::Direct).await;
        // The server's tickets come before its first bytes.
        server.write_all(b"hello").await.unwrap();
        server.flush().await.unwrap();
        let mut hello = [0; 5];
        client.read_exact(&mut hello).await.unwrap();
        assert_eq!(client.session.handshake_kind(), Some(expected));
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "nothing follows the close: {rest:?}");
        server.shutdown().await.unwrap();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "nothing follows the close: {rest:?}");
    }
}

#[tokio::test]
async fn a_handshake_message_beyond_64_kib_is_refused() {
    let pki = Pki::new();
    let (mut client, tcp) = tcp_pair(Path::Direct).await;
    let sender = tokio::spawn(async move {
        // A ClientHello that says it is 16 MiB long, sent as full handshake records.
        let mut body = vec![0x01, 0xff, 0xff, 0xff];
        body.resize(0x4000, 0);
        for _ in 0..8 {
            let mut record = vec![0x16, 0x03, 0x01, 0x40, 0x00];
            record.extend_from_slice(&body);
            if client.write_all(&record).await.is_err() {
                break;
            }
            body = vec![0; 0x4000];
        }
        client
    });
    assert_eq!(pki.refused(tcp).await, io::ErrorKind::InvalidData);
    drop(sender.await.unwrap());
}
