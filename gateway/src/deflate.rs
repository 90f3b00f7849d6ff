//! permessage-deflate (RFC 7692) as far as `limits.maxMessageBytes` needs it: what the
//! upstream's answer negotiated, and how large each compressed message is once inflated.
//! Messages are inflated only to be measured: the output is counted and dropped, and the
//! frames pass on as they came.

use std::cell::RefCell;

use flate2::{Decompress, FlushDecompress, Status};

use crate::frame::apply_mask;

/// Ends every compressed message, but the sender leaves it off the wire (RFC 7692 7.2.2).
const MESSAGE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Compressed input is unmasked in pieces of this size.
const PIECE_LEN: usize = 4 * 1024;
/// Inflated output lands here and is dropped.
const OUTPUT_LEN: usize = 16 * 1024;

thread_local! {
    /// One piece of unmasked input, then the output: per thread, not per connection.
    static SCRATCH: RefCell<Box<[u8]>> =
        RefCell::new(vec![0; PIECE_LEN + OUTPUT_LEN].into_boxed_slice());
}

/// What the upstream's answer negotiated: whether each side keeps its LZ77 window from one
/// message to the next, so that the decoder must keep it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub client_context_takeover: bool,
    pub server_context_takeover: bool,
}

impl Negotiated {
    /// permessage-deflate as the upstream's `Sec-WebSocket-Extensions` answer accepted it;
    /// `None` when it did not. Window sizes need no attention: a decoder with the largest
    /// window (32 KiB) decodes any smaller one.
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
/// It holds a decoder of about 44 KB: create it at the first compressed message, and drop it
/// between messages once [`Inflation::disposable`].
#[derive(Debug)]
pub struct Inflation {
    context_takeover: bool,
    decoder: Decompress,
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
            // Raw DEFLATE (no zlib header) with the largest window.
            decoder: Decompress::new(false),
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
            self.stream_ended = false;
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
        SCRATCH.with_borrow_mut(|scratch| {
            let (piece, output) = scratch.split_at_mut(PIECE_LEN);
            for chunk in bytes.chunks(PIECE_LEN) {
                // A copy: the frame itself passes on as it came.
                let piece = &mut piece[..chunk.len()];
                piece.copy_from_slice(chunk);
                if let Some(mask) = self.mask {
                    apply_mask(piece, mask, self.offset);
                }
                self.offset += chunk.len();
                self.inflate(piece, output, limit)?;
            }
            Ok(())
        })?;
        self.remaining -= bytes.len() as u64;
        if self.remaining == 0 && self.fin {
            return self.end_message(limit);
        }
        Ok(())
    }

    fn end_message(&mut self, limit: u64) -> Result<(), InflateError> {
        SCRATCH.with_borrow_mut(|scratch| {
            self.inflate(&MESSAGE_TAIL, &mut scratch[PIECE_LEN..], limit)
        })?;
        self.compressed = false;
        Ok(())
    }

    /// Inflates `input` into `output` as often as it takes, counting and dropping the output;
    /// stops as soon as the message is too big.
    fn inflate(
        &mut self,
        mut input: &[u8],
        output: &mut [u8],
        limit: u64,
    ) -> Result<(), InflateError> {
        if self.stream_ended {
            return Ok(());
        }
        let decoder = &mut self.decoder;
        loop {
            let (in_before, out_before) = (decoder.total_in(), decoder.total_out());
            let status = decoder
                .decompress(input, output, FlushDecompress::None)
                .map_err(|_| InflateError::Corrupt)?;
            let consumed = (decoder.total_in() - in_before) as usize;
            let produced = decoder.total_out() - out_before;
            input = &input[consumed..];
            self.inflated += produced;
            if self.inflated > limit {
                return Err(InflateError::TooBig);
            }
            if status == Status::StreamEnd {
                self.stream_ended = true;
                return Ok(());
            }
            // Output may still be pending with no input left (and need not fill `output`):
            // done only once a call makes no progress.
            if consumed == 0 && produced == 0 {
                return Ok(());
            }
        }
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

    /// Messages larger than the 32 KiB window, so that the decoder's output wraps around it.
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
        // Stopped within one scratch buffer of the limit, not after 10 MB.
        assert!(inflation.inflated <= 65_536 + OUTPUT_LEN as u64);
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
        assert_eq!(inflation.decoder.total_in(), 0, "nothing inflated");
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
