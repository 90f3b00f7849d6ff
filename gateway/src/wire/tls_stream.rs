//! TLS on either end of a relayed connection (as the server towards clients, as the client
//! towards a `wss://` upstream), driven through rustls's unbuffered API so that a connection
//! holds no buffer while it waits.
//!
//! rustls's buffered connection keeps a record buffer of at least 4 KiB from its first read
//! to its last, whether or not anything arrives; with thousands of silent connections that
//! was half of what each `wss://` connection held. Here every read of the socket goes into one
//! buffer per thread and is decrypted there. A connection keeps only what is in flight: the
//! bytes of a record that has not fully arrived, plaintext its reader has not taken, and
//! records the socket has not taken. Each is empty, without an allocation, once it has gone.

use std::cell::RefCell;
use std::io;
use std::ops::DerefMut;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::pki_types::ServerName;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedConnectionCommon, UnbufferedStatus,
    WriteTraffic,
};
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// rustls joins a handshake message of up to 64 KiB across records; the largest record
/// (TLS 1.2, 16 KiB of plaintext with 2 KiB of expansion and its header) may follow it.
const SCRATCH_SIZE: usize = 0x1_0000 + 0x4000 + 2048 + 5;
/// Least a read asks the socket for once the handshake is done, however little the reader
/// has room for: a record's header and a useful part of its body.
const MIN_READ: usize = 4096;
/// Most plaintext encrypted per write: what the socket takes of it at once, the rest is kept.
const MAX_WRITE: usize = 0x4000 * 4;

/// Encrypts into the records to send, once the session is open.
type OnOpen<'a, Data> = &'a mut dyn FnMut(WriteTraffic<'_, Data>, &mut Vec<u8>) -> io::Result<()>;

/// A TLS session towards a client.
pub(crate) type ServerTlsStream = TlsStream<UnbufferedServerConnection>;
/// A TLS session towards an upstream.
pub(crate) type ClientTlsStream = TlsStream<UnbufferedClientConnection>;

/// Either side of an unbuffered rustls connection.
pub(crate) trait Session: DerefMut<Target = UnbufferedConnectionCommon<Self::Data>> {
    type Data;

    fn process<'c, 'i>(
        &'c mut self,
        received: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl Session for UnbufferedServerConnection {
    type Data = ServerConnectionData;

    fn process<'c, 'i>(
        &'c mut self,
        received: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(received)
    }
}

impl Session for UnbufferedClientConnection {
    type Data = ClientConnectionData;

    fn process<'c, 'i>(
        &'c mut self,
        received: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(received)
    }
}

thread_local! {
    /// Ciphertext as read, decrypted in place: shared by every connection on the thread.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_SIZE]);
    /// Records as encrypted, before the socket takes them: only what it does not take is
    /// copied to the connection.
    static SEALED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A TLS session over a TCP connection.
pub(crate) struct TlsStream<S> {
    tcp: TcpStream,
    session: S,
    buffers: Buffers,
}

/// What a session holds between reads and writes; each is empty when nothing is in flight.
#[derive(Default)]
struct Buffers {
    /// Received bytes that rustls has yet to use up: a record not complete yet (or, in the
    /// handshake, a message that spans records).
    received: Vec<u8>,
    /// Plaintext decrypted beyond the room the reader gave, from `unread_from` on.
    unread: Vec<u8>,
    unread_from: usize,
    /// Records for the peer that the socket has not taken yet, from `unsent_from` on.
    unsent: Vec<u8>,
    unsent_from: usize,
    /// The peer sent close_notify, or ended the TCP stream.
    peer_closed: bool,
    /// This side queued its close_notify: nothing more is written.
    close_queued: bool,
}

impl<S> std::fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("tcp", &self.tcp)
            .field("received", &self.buffers.received.len())
            .field(
                "unread",
                &(self.buffers.unread.len() - self.buffers.unread_from),
            )
            .field(
                "unsent",
                &(self.buffers.unsent.len() - self.buffers.unsent_from),
            )
            .finish_non_exhaustive()
    }
}

/// Where processing the received bytes stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reached {
    /// The handshake needs more bytes from the peer.
    HandshakeBlocked,
    /// Application data may flow; every complete record has been used.
    Open,
    /// Both sides have sent close_notify.
    Closed,
}

impl ServerTlsStream {
    /// Runs the TLS handshake on `tcp` as the server. Application data that arrived with the
    /// client's last handshake flight is kept for the first read.
    pub(crate) async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<Self> {
        let session = UnbufferedServerConnection::new(config).map_err(invalid_data)?;
        Self::handshake(tcp, session).await
    }
}

impl ClientTlsStream {
    /// Runs the TLS handshake on `tcp` as the client of `name`.
    pub(crate) async fn connect(
        tcp: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<Self> {
        let session = UnbufferedClientConnection::new(config, name).map_err(invalid_data)?;
        Self::handshake(tcp, session).await
    }
}

impl<S: Session> TlsStream<S> {
    async fn handshake(tcp: TcpStream, mut session: S) -> io::Result<Self> {
        let mut buffers = Buffers::default();
        // A client speaks first: this encodes its hello.
        buffers.process_kept(&mut session, None)?;
        let mut stream = Self {
            tcp,
            session,
            buffers,
        };
        std::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
        Ok(stream)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            // The peer answers only once it has this side's flight.
            ready!(self.buffers.poll_send(&self.tcp, cx))?;
            if !self.session.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            match ready!(self.poll_receive(cx, SCRATCH_SIZE, None))? {
                Reached::HandshakeBlocked | Reached::Open => {}
                Reached::Closed => return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
            }
            if self.buffers.peer_closed && self.session.is_handshaking() {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Reads the socket once (up to `read_limit` bytes past what is kept) and processes every
    /// complete record. Plaintext goes to `reader` as far as it has room, the rest is kept.
    fn poll_receive(
        &mut self,
        cx: &mut Context<'_>,
        read_limit: usize,
        reader: Option<&mut ReadBuf<'_>>,
    ) -> Poll<io::Result<Reached>> {
        SCRATCH.with_borrow_mut(|scratch| {
            let Self {
                tcp,
                session,
                buffers,
            } = self;
            let kept = buffers.received.len();
            let end = scratch.len().min(kept + read_limit);
            if kept == end {
                return Poll::Ready(Err(invalid_data("TLS message larger than 64 KiB")));
            }
            let mut read = ReadBuf::new(&mut scratch[kept..end]);
            ready!(Pin::new(&mut *tcp).poll_read(cx, &mut read))?;
            let arrived = read.filled().len();
            if arrived == 0 {
                buffers.peer_closed = true;
            }
            scratch[..kept].copy_from_slice(&buffers.received);
            let filled = kept + arrived;
            let mut sink = Plaintext {
                reader,
                unread: &mut buffers.unread,
            };
            let processed = process(
                session,
                &mut scratch[..filled],
                &mut buffers.unsent,
                &mut sink,
                &mut buffers.peer_closed,
                None,
            );
            let (used, reached) = match processed {
                Ok(done) => done,
                Err(err) => {
                    buffers.queue_alert(session);
                    // Best effort: the peer learns why, if the socket takes it now.
                    let _ = buffers.poll_send(tcp, cx);
                    return Poll::Ready(Err(err));
                }
            };
            buffers.received = scratch[used..filled].to_vec();
            Poll::Ready(Ok(reached))
        })
    }
}

impl Buffers {
    /// Writes unsent records; ready once the socket took them all.
    fn poll_send(&mut self, tcp: &TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.unsent_from < self.unsent.len() {
            ready!(tcp.poll_write_ready(cx))?;
            self.unsent_from += try_send(tcp, &self.unsent[self.unsent_from..])?;
        }
        if !self.unsent.is_empty() {
            self.unsent = Vec::new();
            self.unsent_from = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes plaintext kept from an earlier read into `reader`.
    fn take_unread(&mut self, reader: &mut ReadBuf<'_>) {
        let take = reader.remaining().min(self.unread.len() - self.unread_from);
        reader.put_slice(&self.unread[self.unread_from..self.unread_from + take]);
        self.unread_from += take;
        if self.unread_from == self.unread.len() {
            self.unread = Vec::new();
            self.unread_from = 0;
        }
    }

    fn has_unread(&self) -> bool {
        self.unread_from < self.unread.len()
    }

    /// After a failure, encodes the alert rustls prepared for the peer, if any.
    fn queue_alert<S: Session>(&mut self, session: &mut S) {
        if let Ok(ConnectionState::EncodeTlsData(mut encoder)) = session.process(&mut []).state {
            let _ = append(&mut self.unsent, 256, |out| {
                encoder.encode(out).map_err(|err| match err {
                    EncodeError::InsufficientSize(size) => Some(size.required_size),
                    EncodeError::AlreadyEncoded => None,
                })
            });
        }
    }

    /// Processes the bytes kept from earlier reads (none, or a record not complete yet),
    /// which lets the session queue what it has to send, and runs `on_open` on the open
    /// session to encrypt into `unsent`.
    fn process_kept<S: Session>(
        &mut self,
        session: &mut S,
        on_open: Option<OnOpen<'_, S::Data>>,
    ) -> io::Result<Reached> {
        let mut received = std::mem::take(&mut self.received);
        let mut sink = Plaintext {
            reader: None,
            unread: &mut self.unread,
        };
        let (used, reached) = process(
            session,
            &mut received,
            &mut self.unsent,
            &mut sink,
            &mut self.peer_closed,
            on_open,
        )?;
        received.drain(..used);
        self.received = received;
        Ok(reached)
    }
}

/// Where decrypted application data goes.
struct Plaintext<'r, 'b, 'u> {
    reader: Option<&'r mut ReadBuf<'b>>,
    unread: &'u mut Vec<u8>,
}

impl Plaintext<'_, '_, '_> {
    fn put(&mut self, payload: &[u8]) {
        let direct = match &mut self.reader {
            Some(reader) if self.unread.is_empty() => {
                let take = reader.remaining().min(payload.len());
                reader.put_slice(&payload[..take]);
                take
            }
            _ => 0,
        };
        self.unread.extend_from_slice(&payload[direct..]);
    }
}

/// Processes the complete records in `received`: plaintext to `plaintext`, handshake records
/// and alerts appended to `unsent`, and, once the session is open, `on_open` to encrypt.
/// Returns how many bytes of `received` are used up, and where it stopped.
fn process<S: Session>(
    session: &mut S,
    received: &mut [u8],
    unsent: &mut Vec<u8>,
    plaintext: &mut Plaintext<'_, '_, '_>,
    peer_closed: &mut bool,
    mut on_open: Option<OnOpen<'_, S::Data>>,
) -> io::Result<(usize, Reached)> {
    let mut used = 0;
    loop {
        let status = session.process(&mut received[used..]);
        let mut discard = status.discard;
        let reached = match status.state.map_err(invalid_data)? {
            ConnectionState::ReadTraffic(mut records) => {
                while let Some(record) = records.next_record() {
                    let record = record.map_err(invalid_data)?;
                    discard += record.discard;
                    plaintext.put(record.payload);
                }
                None
            }
            ConnectionState::EncodeTlsData(mut encoder) => {
                append(unsent, 256, |out| {
                    encoder.encode(out).map_err(|err| match err {
                        EncodeError::InsufficientSize(size) => Some(size.required_size),
                        EncodeError::AlreadyEncoded => None,
                    })
                })?;
                None
            }
            // Sent in order before anything encrypted later, by whoever writes next.
            ConnectionState::TransmitTlsData(transmit) => {
                transmit.done();
                None
            }
            ConnectionState::BlockedHandshake => Some(Reached::HandshakeBlocked),
            ConnectionState::WriteTraffic(traffic) => {
                if let Some(on_open) = on_open.take() {
                    on_open(traffic, unsent)?;
                }
                Some(Reached::Open)
            }
            // Writing may go on after the peer's close_notify.
            ConnectionState::PeerClosed => {
                *peer_closed = true;
                None
            }
            ConnectionState::Closed => {
                *peer_closed = true;
                Some(Reached::Closed)
            }
            // Early data is not enabled, and no other state is known.
            other => return Err(invalid_data(format!("unexpected TLS state {other:?}"))),
        };
        used += discard;
        if let Some(reached) = reached {
            return Ok((used, reached));
        }
    }
}

/// Appends what `encode` writes to `out`, with `room` to begin with and then the size
/// `encode` asks for (`Err(Some(size))`).
fn append(
    out: &mut Vec<u8>,
    mut room: usize,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> io::Result<()> {
    let start = out.len();
    loop {
        out.resize(start + room, 0);
        match encode(&mut out[start..]) {
            Ok(written) => {
                out.truncate(start + written);
                return Ok(());
            }
            Err(Some(required)) if required > room => room = required,
            Err(_) => {
                out.truncate(start);
                return Err(invalid_data("cannot encode a TLS record"));
            }
        }
    }
}

/// Encrypts `plaintext` into records appended to `out`.
fn encrypt<Data>(
    traffic: &mut WriteTraffic<'_, Data>,
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<()> {
    // Each record of up to 16 KiB adds its header, content type and tag (22 bytes with
    // TLS 1.3's AES-GCM): room for that saves asking twice on the common path.
    let room = plaintext.len() + 64 * (plaintext.len() / 0x4000 + 1);
    append(out, room, |out| {
        traffic.encrypt(plaintext, out).map_err(|err| match err {
            EncryptError::InsufficientSize(size) => Some(size.required_size),
            EncryptError::EncryptExhausted => None,
        })
    })
}

/// Writes as much of `bytes` as the socket takes without waiting.
fn try_send(tcp: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < bytes.len() {
        match tcp.try_write(&bytes[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => sent += written,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) => return Err(err),
        }
    }
    Ok(sent)
}

fn invalid_data(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

impl<S: Session + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.buffers.has_unread() {
                this.buffers.take_unread(buf);
                return Poll::Ready(Ok(()));
            }
            if this.buffers.peer_closed {
                return Poll::Ready(Ok(()));
            }
            // Records rustls queued while reading (a key update's answer) go out as soon as
            // the socket takes them; a full socket does not hold up reading.
            if let Poll::Ready(Err(err)) = this.buffers.poll_send(&this.tcp, cx) {
                return Poll::Ready(Err(err));
            }
            let before = buf.filled().len();
            let limit = buf
                .remaining()
                .saturating_sub(this.buffers.received.len())
                .max(MIN_READ);
            ready!(this.poll_receive(cx, limit, Some(buf)))?;
            if buf.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: Session + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // At most one write's records wait for the socket.
        ready!(this.buffers.poll_send(&this.tcp, cx))?;
        if this.buffers.close_queued {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let take = data.len().min(MAX_WRITE);
        let tcp = &this.tcp;
        let reached = this.buffers.process_kept(
            &mut this.session,
            Some(&mut |mut traffic, unsent| {
                SEALED.with_borrow_mut(|sealed| {
                    sealed.clear();
                    encrypt(&mut traffic, &data[..take], sealed)?;
                    // Straight to the socket unless records queued earlier must go first.
                    let sent = if unsent.is_empty() {
                        try_send(tcp, sealed)?
                    } else {
                        0
                    };
                    unsent.extend_from_slice(&sealed[sent..]);
                    Ok(())
                })
            }),
        )?;
        if reached != Reached::Open {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        // Taken: what the socket does not take now goes out on the next write or flush.
        if let Poll::Ready(Err(err)) = this.buffers.poll_send(&this.tcp, cx) {
            return Poll::Ready(Err(err));
        }
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.buffers.poll_send(&this.tcp, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.buffers.close_queued {
            this.buffers.close_queued = true;
            // A session that can no longer send has nothing to say goodbye with.
            this.buffers.process_kept(
                &mut this.session,
                Some(&mut |mut traffic, unsent| {
                    append(unsent, 64, |out| {
                        traffic.queue_close_notify(out).map_err(|err| match err {
                            EncryptError::InsufficientSize(size) => Some(size.required_size),
                            EncryptError::EncryptExhausted => None,
                        })
                    })
                }),
            )?;
        }
        ready!(this.buffers.poll_send(&this.tcp, cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let accepted = ServerTlsStream::accept(tcp, pki.server.clone()).await;
        assert_eq!(
            accepted.map(|_| ()).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        // The first bytes of a handshake record, then the end.
        client.write_all(&[0x16, 0x03, 0x01, 0x02]).await.unwrap();
        client.shutdown().await.unwrap();
        let accepted = ServerTlsStream::accept(tcp, pki.server.clone()).await;
        assert_eq!(
            accepted.map(|_| ()).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
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
}
