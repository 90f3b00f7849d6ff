//! What rustls's unbuffered connection asks for, state by state, in one loop: complete
//! records in, plaintext out, and the records this side has to send appended to a buffer.

use std::io;
use std::ops::DerefMut;

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedConnectionCommon,
    UnbufferedStatus, WriteTraffic,
};
use tokio::io::ReadBuf;

/// Encrypts into the records to send, once the session is open.
pub(super) type OnOpen<'a, Data> =
    &'a mut dyn FnMut(WriteTraffic<'_, Data>, &mut Vec<u8>) -> io::Result<()>;

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

/// Where processing the received bytes stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reached {
    /// The handshake needs more bytes from the peer.
    HandshakeBlocked,
    /// Application data may flow; every complete record has been used.
    Open,
    /// Both sides have sent close_notify.
    Closed,
}

/// Where decrypted application data goes.
pub(super) struct Plaintext<'r, 'b, 'u> {
    pub(super) reader: Option<&'r mut ReadBuf<'b>>,
    pub(super) unread: &'u mut Vec<u8>,
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
pub(super) fn process<S: Session>(
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
                encode(&mut encoder, unsent)?;
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
pub(super) fn encrypt<Data>(
    traffic: &mut WriteTraffic<'_, Data>,
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<()> {
    // Each record of up to 16 KiB adds its header, content type and tag (22 bytes with
    // TLS 1.3's AES-GCM): room for that saves asking twice on the common path.
    let room = plaintext.len() + 64 * (plaintext.len() / 0x4000 + 1);
    append(out, room, |out| {
        traffic.encrypt(plaintext, out).map_err(encrypt_needs_room)
    })
}

/// Appends the close_notify alert to `out`.
pub(super) fn close_notify<Data>(
    traffic: &mut WriteTraffic<'_, Data>,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    append(out, 64, |out| {
        traffic.queue_close_notify(out).map_err(encrypt_needs_room)
    })
}

/// Appends a handshake record or an alert that rustls has prepared to `out`.
pub(super) fn encode<Data>(
    encoder: &mut EncodeTlsData<'_, Data>,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    append(out, 256, |out| {
        encoder.encode(out).map_err(|err| match err {
            EncodeError::InsufficientSize(size) => Some(size.required_size),
            EncodeError::AlreadyEncoded => None,
        })
    })
}

/// The room an encryption asked for, or `None` when no room would do.
fn encrypt_needs_room(err: EncryptError) -> Option<usize> {
    match err {
        EncryptError::InsufficientSize(size) => Some(size.required_size),
        EncryptError::EncryptExhausted => None,
    }
}

pub(super) fn invalid_data(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}
