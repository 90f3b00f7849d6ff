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

mod records;

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::ConnectionState;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub(crate) use self::records::Session;
use self::records::{
    OnOpen, Plaintext, Reached, close_notify, encode, encrypt, invalid_data, process,
};

/// Largest read: the largest record (TLS 1.2, 16 KiB of plaintext with 2 KiB of expansion
/// and its header).
const SCRATCH_SIZE: usize = 0x4000 + 2048 + 5;
/// Most kept between reads: rustls joins a handshake message of up to 64 KiB across
/// records, and a record may follow it.
const MAX_KEPT: usize = 0x1_0000 + SCRATCH_SIZE;
/// Least a read asks the socket for once the handshake is done, however little the reader
/// has room for: a record's header and a useful part of its body.
const MIN_READ: usize = 4096;
/// Most plaintext encrypted per write: what the socket takes of it at once, the rest is kept.
const MAX_WRITE: usize = 0x4000 * 4;

/// A TLS session towards a client.
pub(crate) type ServerTlsStream = TlsStream<UnbufferedServerConnection>;
/// A TLS session towards an upstream.
pub(crate) type ClientTlsStream = TlsStream<UnbufferedClientConnection>;

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

    /// Reads the socket once (at most `read_limit` bytes) and processes every complete
    /// record. Plaintext goes to `reader` as far as it has room, the rest is kept.
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
            let mut read = ReadBuf::new(&mut scratch[..read_limit.min(SCRATCH_SIZE)]);
            ready!(Pin::new(&mut *tcp).poll_read(cx, &mut read))?;
            let arrived = read.filled().len();
            if arrived == 0 {
                buffers.peer_closed = true;
            }
            // New bytes join those kept from earlier reads where they are, so a record that
            // arrives in many pieces is not copied again for each piece.
            let mut received = std::mem::take(&mut buffers.received);
            let joined = !received.is_empty();
            if joined {
                if received.len() + arrived > MAX_KEPT {
                    return Poll::Ready(Err(invalid_data("TLS message larger than 64 KiB")));
                }
                received.extend_from_slice(&scratch[..arrived]);
            }
            let input = if joined {
                &mut received[..]
            } else {
                &mut scratch[..arrived]
            };
            let mut sink = Plaintext {
                reader,
                unread: &mut buffers.unread,
            };
            let processed = process(
                session,
                input,
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
            buffers.received = if joined && used == 0 {
                received
            } else {
                input[used..].to_vec()
            };
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
        // Asked only when an alert is queued: rustls then hands it out before it looks at the
        // (here empty) input, whose place a half-joined handshake message may still hold.
        if !session.wants_write() {
            return;
        }
        if let Ok(ConnectionState::EncodeTlsData(mut encoder)) = session.process(&mut []).state {
            let _ = encode(&mut encoder, &mut self.unsent);
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
                Some(&mut |mut traffic, unsent| close_notify(&mut traffic, unsent)),
            )?;
        }
        ready!(this.buffers.poll_send(&this.tcp, cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
