//! permessage-deflate (RFC 7692) as far as `limits.maxMessageBytes` needs it: what the
//! upstream's answer negotiated, and how large each compressed message is once inflated.
//! Messages are not inflated: [`length`] counts what they inflate to from the DEFLATE bit
//! stream alone (`huffman` decodes its codes, `bits` buffers its bits), and the frames pass on
//! as they came.

mod bits;
mod huffman;
pub mod length;

use std::cell::RefCell;

use crate::wire::frame::apply_mask;
use length::{InflatedLength, Progress};

/// Ends every compressed message, but the sender leaves it off the wire (RFC 7692 7.2.2).
const MESSAGE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Compressed input is unmasked in pieces of this size.
const PIECE_LEN: usize = 4 * 1024;

thread_local! {
    /// One piece of unmasked input: per thread, not per connection.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; PIECE_LEN].into_boxed_slice());
}

/// What the upstream's answer negotiated: whether each side keeps its LZ77 window from one
/// message to the next, so that a message may refer back into the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Negotiated {
    pub client_context_takeover: bool,
    pub server_context_takeover: bool,
}

impl Negotiated {
    /// permessage-deflate as the upstream's `Sec-WebSocket-Extensions` answer accepted it;
    /// `None` when it did not. Window sizes need no attention: counting allows distances up to
    /// the largest window (32 KiB), which any smaller one stays within.
    pub fn from_answer(extensions: Option<&str>) -> Option<Self> {
        let accepted = extensions?.split(',').find(|extension| {
            let name = extension.split(';').next().unwrap_or_default();
            name.trim().eq_ignore_ascii_case("permessage-deflate")
        })?;
        let has = |wanted: &str| {
            accepted.split(';').skip(1).any(|parameter| {
                let name = parameter.split('=').next().unwrap_or_default();
                name.trim().eq_ignore_ascii_case(wanted)
            })
        };
        Some(Self {
            client_context_takeover: !has("client_no_context_takeover"),
            server_context_takeover: !has("server_no_context_takeover"),
        })
    }
}

/// Why a compressed message is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates to more than the limit.
    TooBig,
    /// Its compressed data is not valid DEFLATE.
    Corrupt,
}

/// Measures the compressed messages of one direction, fed frame by frame as the bytes pass.
/// Between messages it is about a hundred bytes (the counter's place in the stream and how much
/// history a distance may reach); during a block with dynamic codes it holds those codes, under
/// 1 KB. Create it at the first compressed message, and drop it between messages once
/// [`Inflation::disposable`].
#[derive(Debug)]
pub(crate) struct Inflation {
    context_takeover: bool,
    /// Where the DEFLATE stream is: it goes on from message to message under context takeover.
    length: InflatedLength,
    /// The current message is compressed.
    compressed: bool,
    /// Inflated bytes of the current message.
    inflated: u64,
    /// The current message's DEFLATE stream has ended (a final block): the rest is ignored.
    stream_ended: bool,
    mask: Option<[u8; 4]>,
    /// Payload bytes of the current frame seen so far, for unmasking.
    offset: usize,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// The current frame ends the message.
    fin: bool,
}

impl Inflation {
    /// `context_takeover`: the sender keeps its window from one message to the next.
    pub fn new(context_takeover: bool) -> Self {
        Self {
            context_takeover,
            length: InflatedLength::new(),
            compressed: false,
            inflated: 0,
            stream_ended: false,
            mask: None,
            offset: 0,
            remaining: 0,
            fin: false,
        }
    }

    /// A data frame's header. `first`: it starts a message, and its RSV1 bit says whether the
    /// message is compressed.
    pub fn frame(
        &mut self,
        first: bool,
        rsv1: bool,
        mask: Option<[u8; 4]>,
        payload_len: u64,
        fin: bool,
        limit: u64,
    ) -> Result<(), InflateError> {
        if first {
            self.compressed = rsv1;
            self.inflated = 0;
            // A new stream: the sender starts afresh, or its last stream ended.
            if rsv1 && (!self.context_takeover || self.stream_ended) {
                self.length = InflatedLength::new();
                self.stream_ended = false;
            }
        }
        if !self.compressed {
            return Ok(());
        }
        self.mask = mask;
        self.offset = 0;
        self.remaining = payload_len;
        self.fin = fin;
        if payload_len == 0 && fin {
            return self.end_message(limit);
        }
        Ok(())
    }

    /// True between messages when nothing need be kept for the next: the sender starts afresh
    /// (no context takeover), or the last stream ended with a final block.
    pub fn disposable(&self) -> bool {
        !self.compressed && (!self.context_takeover || self.stream_ended)
    }

    /// The next payload bytes of the current data frame, still masked if the frame is.
    pub fn payload(&mut self, bytes: &[u8], limit: u64) -> Result<(), InflateError> {
        if !self.compressed {
            return Ok(());
        }
        match self.mask {
            None => self.inflate(bytes, limit)?,
            Some(mask) => SCRATCH.with_borrow_mut(|scratch| {
                for chunk in bytes.chunks(PIECE_LEN) {
                    // A copy: the frame itself passes on as it came.
                    let piece = &mut scratch[..chunk.len()];
                    piece.copy_from_slice(chunk);
                    apply_mask(piece, mask, self.offset);
                    self.offset += chunk.len();
                    self.inflate(piece, limit)?;
                }
                Ok(())
            })?,
        }
        self.remaining -= bytes.len() as u64;
        if self.remaining == 0 && self.fin {
            return self.end_message(limit);
        }
        Ok(())
    }

    fn end_message(&mut self, limit: u64) -> Result<(), InflateError> {
        self.inflate(&MESSAGE_TAIL, limit)?;
        self.compressed = false;
        Ok(())
    }

    /// Counts what `input` inflates to; stops as soon as the message is too big.
    fn inflate(&mut self, input: &[u8], limit: u64) -> Result<(), InflateError> {
        if self.stream_ended {
            return Ok(());
        }
        if self.length.count(input, &mut self.inflated, limit)? == Progress::StreamEnded {
            self.stream_ended = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use flate2::{Compress, Compression, FlushCompress};

    use super::*;

    /// Compresses messages as a permessage-deflate sender does: one stream, each message
    /// ending in a sync flush whose tail is left off.
    struct Sender {
        compress: Compress,
        context_takeover: bool,
    }

    impl Sender {
        fn new(context_takeover: bool) -> Self {
            Self {
                compress: Compress::new(Compression::default(), false),
                context_takeover,
            }
        }

        fn message(&mut self, text: &[u8]) -> Vec<u8> {
            if !self.context_takeover {
                self.compress.reset();
            }
            let mut out = Vec::with_capacity(text.len() + 64);
            self.compress
                .compress_vec(text, &mut out, FlushCompress::Sync)
                .unwrap();
            while out.len() == out.capacity() {
                out.reserve(1024);
                self.compress
                    .compress_vec(&[], &mut out, FlushCompress::Sync)
                    .unwrap();
            }
            assert!(out.ends_with(&MESSAGE_TAIL));
            out.truncate(out.len() - MESSAGE_TAIL.len());
            out
        }
    }

    /// Feeds one message as a single frame, masked, in pieces of `chunk` bytes.
    fn feed(
        inflation: &mut Inflation,
        compressed: &[u8],
        chunk: usize,
        limit: u64,
    ) -> Result<u64, InflateError> {
        let mask = [3, 1, 4, 1];
        let mut masked = compressed.to_vec();
        apply_mask(&mut masked, mask, 0);
        inflation.frame(true, true, Some(mask), masked.len() as u64, true, limit)?;
        let mut inflated = 0;
        for piece in masked.chunks(chunk.max(1)) {
            inflation.payload(piece, limit)?;
            inflated = inflation.inflated;
        }
        Ok(inflated)
    }

    #[test]
    fn counts_the_inflated_size_in_any_chunking() {
        let text = b"wsfleet inflates only to count. ".repeat(500);
        let compressed = Sender::new(true).message(&text);
        assert!(compressed.len() < text.len() / 20);
        for chunk in [1, 7, 4096, compressed.len()] {
            let mut inflation = Inflation::new(true);
            let inflated = feed(&mut inflation, &compressed, chunk, 1 << 20).unwrap();
            assert_eq!(inflated, text.len() as u64, "chunk {chunk}");
        }
    }

    /// Messages larger than the 32 KiB window, so that distances reach back across messages
    /// into a full window.
    #[test]
    fn counts_exactly_message_after_message() {
        let text = b"wsfleet compresses nothing itself; ".repeat(1200);
        let mut sender = Sender::new(true);
        let mut inflation = Inflation::new(true);
        for n in 0..5 {
            let message = [format!("{n}").as_bytes(), &text[..39_999]].concat();
            let compressed = sender.message(&message);
            for chunk in [compressed.len(), 3] {
                let mut fresh = Sender::new(true);
                let mut alone = Inflation::new(true);
                let counted = feed(&mut alone, &fresh.message(&message), chunk, 1 << 20);
                assert_eq!(counted, Ok(40_000));
            }
            assert_eq!(
                feed(&mut inflation, &compressed, 1000, 1 << 20),
                Ok(40_000),
                "message {n}"
            );
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let compressed = Sender::new(true).message(&vec![b'a'; 10_000_000]);
        assert!(compressed.len() < 20_000);
        let mut inflation = Inflation::new(true);
        assert_eq!(
            feed(&mut inflation, &compressed, 16 * 1024, 65_536),
            Err(InflateError::TooBig)
        );
        // Stopped within one back-reference of the limit, not after 10 MB.
        assert!(inflation.inflated <= 65_536 + 258);
    }

    #[test]
    fn the_window_is_kept_with_context_takeover_only() {
        let text = b"the same words again and again; ".repeat(100);
        for context_takeover in [true, false] {
            let mut sender = Sender::new(context_takeover);
            let mut inflation = Inflation::new(context_takeover);
            for _ in 0..3 {
                let compressed = sender.message(&text);
                assert_eq!(
                    feed(&mut inflation, &compressed, 100, 1 << 20),
                    Ok(text.len() as u64)
                );
                assert_eq!(inflation.disposable(), !context_takeover);
            }
        }
        // Each message counts alone: three of 3200 bytes pass a limit of 4000.
        let mut sender = Sender::new(true);
        let mut inflation = Inflation::new(true);
        for _ in 0..3 {
            assert!(feed(&mut inflation, &sender.message(&text), 50, 4000).is_ok());
        }
    }

    #[test]
    fn garbage_is_corrupt_and_plain_messages_are_not_inflated() {
        let mut inflation = Inflation::new(true);
        assert_eq!(
            feed(&mut inflation, &[0xff; 64], 64, 1 << 20),
            Err(InflateError::Corrupt)
        );
        let mut inflation = Inflation::new(true);
        inflation.frame(true, false, None, 64, true, 100).unwrap();
        inflation.payload(&[0xff; 64], 100).unwrap();
        assert_eq!(inflation.inflated, 0, "nothing inflated");
    }

    #[test]
    fn fragments_and_an_empty_final_frame_make_one_message() {
        let text = b"fragmented and compressed; ".repeat(200);
        let compressed = Sender::new(true).message(&text);
        let (first, second) = compressed.split_at(compressed.len() / 2);
        let mut inflation = Inflation::new(true);
        inflation
            .frame(true, true, None, first.len() as u64, false, 1 << 20)
            .unwrap();
        inflation.payload(first, 1 << 20).unwrap();
        inflation
            .frame(false, false, None, second.len() as u64, false, 1 << 20)
            .unwrap();
        inflation.payload(second, 1 << 20).unwrap();
        inflation
            .frame(false, false, None, 0, true, 1 << 20)
            .unwrap();
        assert_eq!(inflation.inflated, text.len() as u64);
        assert!(!inflation.compressed);
    }

    #[test]
    fn negotiation_is_read_from_the_answer() {
        assert_eq!(Negotiated::from_answer(None), None);
        assert_eq!(Negotiated::from_answer(Some("x-other; a=1")), None);
        assert_eq!(
            Negotiated::from_answer(Some(
                "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
            )),
            Some(Negotiated {
                client_context_takeover: true,
                server_context_takeover: true
            })
        );
        assert_eq!(
            Negotiated::from_answer(Some(
                "x-other, Permessage-Deflate;client_no_context_takeover ; server_no_context_takeover"
            )),
            Some(Negotiated {
                client_context_takeover: false,
                server_context_takeover: false
            })
        );
    }
}
