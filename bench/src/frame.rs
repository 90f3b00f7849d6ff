//! Just enough RFC 6455 framing for fixed-size benchmark messages.
//!
//! The load generator and the echo upstream share one core with each other, so they
//! frame by hand over a reused buffer: no allocation per message, and every complete
//! frame already in the buffer is handled before the next read.

use std::io;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncRead, AsyncReadExt as _};

pub const OPCODE_TEXT: u8 = 0x1;
pub const OPCODE_BINARY: u8 = 0x2;
pub const OPCODE_CLOSE: u8 = 0x8;
pub const OPCODE_PING: u8 = 0x9;
pub const OPCODE_PONG: u8 = 0xA;

/// Frames larger than this are refused; the benchmark never sends more than a few KiB.
const MAX_PAYLOAD: usize = 16 << 20;
const INITIAL_CAPACITY: usize = 16 << 10;

/// One complete frame, its payload already unmasked.
pub struct Frame<'a> {
    pub opcode: u8,
    pub payload: &'a [u8],
}

/// Appends a FIN frame to `out`; `mask` is required from clients and absent from servers.
pub fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    out.push(0x80 | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        len @ 0..=125 => out.push(mask_bit | len as u8),
        len @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            let start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[start..], key, 0);
        }
        None => out.extend_from_slice(payload),
    }
}

/// XORs `bytes` with the masking key; `offset` is the position of `bytes[0]` in the payload.
pub fn apply_mask(bytes: &mut [u8], key: [u8; 4], offset: usize) {
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte ^= key[(offset + index) % 4];
    }
}

/// Bytes read from one socket, from which complete frames are taken in place.
pub struct FrameBuf {
    buf: Vec<u8>,
    /// Start of the bytes not yet handed out as frames.
    start: usize,
}

impl FrameBuf {
    /// A buffer that begins with `leftover`, bytes that arrived behind a handshake head.
    pub fn with_leftover(leftover: &[u8]) -> Self {
        let mut buf = Vec::with_capacity(INITIAL_CAPACITY.max(leftover.len()));
        buf.extend_from_slice(leftover);
        Self { buf, start: 0 }
    }

    /// Reads once more from `reader`; `Ok(0)` means the peer closed.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, reader: &mut R) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.capacity() - self.buf.len() < INITIAL_CAPACITY / 4 {
            self.buf.reserve(INITIAL_CAPACITY);
        }
        reader.read_buf(&mut self.buf).await
    }

    /// Takes the next complete frame out of the buffer, or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> anyhow::Result<Option<Frame<'_>>> {
        let pending = &self.buf[self.start..];
        let Some(header) = parse_header(pending)? else {
            return Ok(None);
        };
        let total = header.len + header.payload_len;
        if pending.len() < total {
            self.buf.reserve(total - pending.len());
            return Ok(None);
        }
        let payload_start = self.start + header.len;
        let payload = &mut self.buf[payload_start..payload_start + header.payload_len];
        if let Some(key) = header.mask {
            apply_mask(payload, key, 0);
        }
        self.start += total;
        Ok(Some(Frame {
            opcode: header.opcode,
            payload,
        }))
    }

    /// Reads until a data frame arrives and returns its payload; pings and pongs are
    /// skipped (the benchmark never stays silent long enough to owe a pong), a close fails.
    pub async fn read_data<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> anyhow::Result<&[u8]> {
        loop {
            // The header is inspected by value, so that `fill` may borrow the buffer below.
            match self.complete_frame_opcode()? {
                Some(OPCODE_BINARY | OPCODE_TEXT) => {
                    let frame = self.next_frame()?.expect("a complete frame was just found");
                    return Ok(frame.payload);
                }
                Some(OPCODE_CLOSE) => bail!("the peer sent a close frame"),
                Some(_) => {
                    self.next_frame()?;
                    continue;
                }
                None => {}
            }
            if self.fill(reader).await.context("reading a frame")? == 0 {
                bail!("connection closed by the peer");
            }
        }
    }

    /// Reads until a close frame arrives, skipping everything else.
    pub async fn read_close<R: AsyncRead + Unpin>(&mut self, reader: &mut R) -> anyhow::Result<()> {
        loop {
            while let Some(frame) = self.next_frame()? {
                if frame.opcode == OPCODE_CLOSE {
                    return Ok(());
                }
            }
            if self.fill(reader).await.context("awaiting a close frame")? == 0 {
                bail!("connection closed by the peer without a close frame");
            }
        }
    }

    fn complete_frame_opcode(&self) -> anyhow::Result<Option<u8>> {
        let pending = &self.buf[self.start..];
        Ok(parse_header(pending)?
            .filter(|header| pending.len() >= header.len + header.payload_len)
            .map(|header| header.opcode))
    }
}

struct Header {
    opcode: u8,
    mask: Option<[u8; 4]>,
    /// Length of the header itself, mask included.
    len: usize,
    payload_len: usize,
}

fn parse_header(bytes: &[u8]) -> anyhow::Result<Option<Header>> {
    let [first, second, rest @ ..] = bytes else {
        return Ok(None);
    };
    if first & 0x80 == 0 {
        bail!("fragmented frames are not used by this benchmark (opcode {first:#04x})");
    }
    let (payload_len, mut len) = match second & 0x7F {
        126 => match rest {
            [a, b, ..] => (u16::from_be_bytes([*a, *b]) as usize, 4),
            _ => return Ok(None),
        },
        127 => match rest.first_chunk::<8>() {
            Some(eight) => (u64::from_be_bytes(*eight) as usize, 10),
            None => return Ok(None),
        },
        short => (short as usize, 2),
    };
    if payload_len > MAX_PAYLOAD {
        bail!("frame of {payload_len} bytes exceeds the benchmark's {MAX_PAYLOAD}-byte limit");
    }
    let mask = if second & 0x80 != 0 {
        let Some(key) = bytes.get(len..len + 4) else {
            return Ok(None);
        };
        len += 4;
        Some([key[0], key[1], key[2], key[3]])
    } else {
        None
    };
    Ok(Some(Header {
        opcode: first & 0x0F,
        mask,
        len,
        payload_len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut buf = FrameBuf::with_leftover(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = buf.next_frame().unwrap() {
            frames.push((frame.opcode, frame.payload.to_vec()));
        }
        frames
    }

    #[test]
    fn masked_and_unmasked_frames_of_every_length_class_round_trip() {
        for len in [0, 125, 126, 1024, 0xFFFF, 0x1_0000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut wire = Vec::new();
            encode(&mut wire, OPCODE_BINARY, &payload, Some([1, 2, 3, 4]));
            encode(&mut wire, OPCODE_TEXT, &payload, None);
            assert_eq!(
                decode_all(&wire),
                vec![(OPCODE_BINARY, payload.clone()), (OPCODE_TEXT, payload)],
                "payload length {len}"
            );
        }
    }

    #[test]
    fn an_incomplete_frame_waits_for_more_bytes() {
        let mut wire = Vec::new();
        encode(&mut wire, OPCODE_BINARY, &[7; 300], Some([9, 9, 9, 9]));
        for cut in [1, 3, 7, wire.len() - 1] {
            assert!(decode_all(&wire[..cut]).is_empty(), "cut at {cut}");
        }
    }

    #[test]
    fn masking_actually_changes_the_wire_bytes() {
        let mut wire = Vec::new();
        encode(&mut wire, OPCODE_BINARY, b"abcd", Some([1, 1, 1, 1]));
        assert_eq!(&wire[6..], b"`cbe");
    }

    #[test]
    fn fragments_and_oversized_frames_are_refused() {
        let mut fragment = FrameBuf::with_leftover(&[0x02, 0x01, 0x00]);
        assert!(fragment.next_frame().is_err());
        let mut huge = FrameBuf::with_leftover(&[0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert!(huge.next_frame().is_err());
    }
}
