//! Follows the frames of one direction of a relayed connection: counts messages, enforces the
//! size and rate limits, checks text when asked to (`validation.utf8`), and drops the client's
//! answers to the gateway's own heartbeats.
//!
//! Bytes are processed in place in the relay's read buffer: the output is the input minus the
//! frames the gateway swallows, minus an incomplete header (or control frame) at the end, which
//! is held back until the rest arrives. Payloads of data frames pass on untouched; those of
//! compressed messages are also inflated, from a copy, to be measured (see [`crate::wire::deflate`]).

use std::time::Instant;

use crate::policy::rate::TokenBucket;
use crate::wire::deflate::{InflateError, Inflation};
use crate::wire::frame::{
    FrameHeader, MAX_CONTROL_FRAME, MAX_CONTROL_PAYLOAD, MAX_PAYLOAD_LEN, Opcode, apply_mask,
    parse_header,
};
use crate::wire::utf8::{InvalidUtf8, Utf8Check};
use wsfleet_config::Rate;

/// The close code reported for a close frame that carries none (RFC 6455 section 7.1.5).
pub(crate) const NO_STATUS_CODE: u16 = 1005;

/// Payload of the gateway's heartbeat pings; a client pong carrying it is not forwarded.
pub const HEARTBEAT_PAYLOAD: &[u8] = b"wsfleet-heartbeat";

/// Room reserved in front of every read for bytes held back from the previous one.
pub const CARRY_ROOM: usize = MAX_CONTROL_FRAME;

/// Which peer wrote the bytes: clients must mask their frames, upstreams must not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Client,
    Upstream,
}

/// Why a stream of frames has to be stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A message larger than `limits.maxMessageBytes`, on the wire or once inflated.
    TooBig,
    /// A compressed message that does not inflate.
    BadCompressedData,
    /// A text message that is not UTF-8 (`validation.utf8`).
    InvalidUtf8,
    /// More messages, pings and pongs than `limits.messagesPerConnection` allows.
    RateExceeded,
    /// Frames that break RFC 6455.
    Protocol(&'static str),
}

impl From<InvalidUtf8> for Violation {
    fn from(_: InvalidUtf8) -> Self {
        Self::InvalidUtf8
    }
}

impl From<InflateError> for Violation {
    fn from(error: InflateError) -> Self {
        match error {
            InflateError::TooBig => Self::TooBig,
            InflateError::Corrupt => Self::BadCompressedData,
        }
    }
}

/// The result of processing one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Processed {
    /// Bytes at the front of the buffer to forward.
    pub forward: usize,
    /// Set when the frame after the forwarded bytes broke a rule; nothing more may be forwarded.
    pub violation: Option<Violation>,
}

/// Frame state for one direction.
#[derive(Debug)]
pub struct Tracker {
    source: Source,
    max_message_bytes: u64,
    message_rate: Option<(Rate, TokenBucket)>,
    /// Payload bytes of the current data frame still to pass.
    payload_left: u64,
    in_message: bool,
    message_bytes: u64,
    carry: [u8; MAX_CONTROL_FRAME],
    carry_len: u8,
    /// Complete messages seen since the counter was last taken.
    messages: u64,
    close_seen: bool,
    /// The code of the close frame that passed (1005 when it had none); `None` before, or when
    /// it passed unread while discarding.
    close_code: Option<u16>,
    /// Set when the gateway closes: nothing after the current frame is forwarded.
    stopping: bool,
    /// Past a stop or a limit: frames are followed only to notice the peer's close frame, and
    /// nothing is forwarded or checked.
    discarding: bool,
    /// Set when a violation cut a frame that was partly forwarded already.
    cut_mid_frame: bool,
    /// `Some(context_takeover)` when permessage-deflate was negotiated.
    deflate: Option<bool>,
    /// Created at the first compressed message (most connections never send one), and kept
    /// between messages only while the sender's window is needed.
    inflation: Option<Box<Inflation>>,
    /// Text messages are checked for UTF-8 (`validation.utf8`).
    check_utf8: bool,
    /// The check of the text message under way, when `check_utf8`.
    text: Option<Utf8Check>,
    /// The current data frame's masking key, where its payload has come to modulo 4, and
    /// whether it ends its message: what checking its text needs.
    frame_mask: Option<[u8; 4]>,
    mask_offset: usize,
    frame_fin: bool,
}

impl Tracker {
    pub fn new(source: Source, max_message_bytes: u64, message_rate: Option<Rate>) -> Self {
        Self {
            source,
            max_message_bytes,
            message_rate: message_rate.map(|rate| (rate, TokenBucket::full(rate, Instant::now()))),
            payload_left: 0,
            in_message: false,
            message_bytes: 0,
            carry: [0; MAX_CONTROL_FRAME],
            carry_len: 0,
            messages: 0,
            close_seen: false,
            close_code: None,
            stopping: false,
            discarding: false,
            cut_mid_frame: false,
            deflate: None,
            inflation: None,
            check_utf8: false,
            text: None,
            frame_mask: None,
            mask_offset: 0,
            frame_fin: false,
        }
    }

    /// Checks that text messages are UTF-8 (RFC 6455 section 8.1), incrementally, so a
    /// character may straddle reads and frames.
    pub fn with_utf8_check(mut self) -> Self {
        self.check_utf8 = true;
        self
    }

    /// Measures compressed messages by their inflated size; `context_takeover`: the source
    /// keeps its compression window from one message to the next.
    pub fn with_deflate(mut self, context_takeover: bool) -> Self {
        self.deflate = Some(context_takeover);
        self
    }

    /// Which peer writes the bytes this tracker follows.
    pub fn source(&self) -> Source {
        self.source
    }

    /// True between frames, where the gateway may insert a control frame of its own.
    pub fn at_frame_boundary(&self) -> bool {
        self.payload_left == 0
    }

    /// True when a violation cut a frame that was partly forwarded: the destination waits for
    /// the rest, so no frame of the gateway's may follow.
    pub fn cut_mid_frame(&self) -> bool {
        self.cut_mid_frame
    }

    /// True once a close frame has passed in this direction.
    pub fn close_seen(&self) -> bool {
        self.close_seen
    }

    /// The status code of the close frame that passed in this direction, 1005 for one
    /// without a code; `None` if none passed, or one passed unread after a violation.
    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    /// Messages completed since the last call.
    pub fn take_messages(&mut self) -> u64 {
        std::mem::take(&mut self.messages)
    }

    /// Forwards the rest of the current frame, then nothing more.
    pub fn stop_at_next_frame(&mut self) {
        self.stopping = true;
    }

    /// True once stopping has reached a frame boundary.
    pub fn stopped(&self) -> bool {
        self.stopping && (self.discarding || self.payload_left == 0)
    }

    /// True once frames are only followed, not forwarded (see [`Tracker::process`]): after a
    /// size or rate violation, or once stopped.
    pub fn discarding(&self) -> bool {
        self.discarding || self.stopped()
    }

    /// Copies held-back bytes to the end of `room`; returns where they start. The next
    /// [`Tracker::process`] must start there.
    pub fn restore_carry(&self, room: &mut [u8]) -> usize {
        let len = usize::from(self.carry_len);
        let start = room.len() - len;
        room[start..].copy_from_slice(&self.carry[..len]);
        start
    }

    /// Processes `buf` in place; the bytes to forward end up at its front.
    ///
    /// After a stop or a size or rate violation the frames that follow are still followed,
    /// forwarding nothing, so that the peer's close frame is noticed and the closing handshake
    /// can complete. After a protocol violation the framing cannot be trusted: nothing more.
    pub fn process(&mut self, buf: &mut [u8]) -> Processed {
        self.carry_len = 0;
        let len = buf.len();
        let mut read = 0;
        let mut write = 0;
        let mut violation = None;
        // Where the current data frame's header went, when it went in this call.
        let mut frame_start = None;
        while read < len {
            if self.payload_left > 0 {
                let take =
                    (len - read).min(usize::try_from(self.payload_left).unwrap_or(usize::MAX));
                if !self.discarding {
                    let frame_done = take as u64 == self.payload_left;
                    match self.check_payload(&buf[read..read + take], frame_done) {
                        Ok(()) => {
                            move_front(buf, read, take, write);
                            write += take;
                        }
                        Err(refused) => {
                            violation = Some(refused);
                            self.discarding = true;
                            // Dropped whole if none of it went out in an earlier read.
                            match frame_start {
                                Some(start) => write = start,
                                None => self.cut_mid_frame = true,
                            }
                        }
                    }
                }
                read += take;
                self.payload_left -= take as u64;
                continue;
            }
            if self.stopping {
                self.discarding = true;
            }
            let Some(header) = parse_header(&buf[read..]) else {
                self.hold_back(&buf[read..]);
                break;
            };
            if self.discarding {
                self.close_seen |= header.opcode == Opcode::Close;
                read += header.header_len;
                self.payload_left = header.payload_len;
                continue;
            }
            if let Err(violation) = self.check_header(
                header.mask.is_some(),
                header.opcode,
                header.fin,
                header.payload_len,
            ) {
                return Processed {
                    forward: write,
                    violation: Some(violation),
                };
            }
            if header.opcode.is_control() {
                let frame_len = header.header_len + header.payload_len as usize;
                if len - read < frame_len {
                    self.hold_back(&buf[read..]);
                    break;
                }
                // Counted once the frame is whole, so a held-back frame is not counted twice.
                if header.opcode != Opcode::Close
                    && let Err(refused) = self.take_message_token()
                {
                    violation = Some(refused);
                    self.discard_frame(header.payload_len);
                    read += header.header_len;
                    continue;
                }
                let frame = &mut buf[read..read + frame_len];
                let swallow = self.inspect_control(
                    header.opcode,
                    header.mask,
                    &mut frame[header.header_len..],
                );
                if !swallow {
                    move_front(buf, read, frame_len, write);
                    write += frame_len;
                }
                read += frame_len;
                continue;
            }
            if let Err(refused) = self.account_data(&header) {
                violation = Some(refused);
                self.discard_frame(header.payload_len);
                read += header.header_len;
                continue;
            }
            frame_start = Some(write);
            move_front(buf, read, header.header_len, write);
            read += header.header_len;
            write += header.header_len;
            self.payload_left = header.payload_len;
        }
        Processed {
            forward: write,
            violation,
        }
    }

    /// Measures payload bytes of a data frame when its message is compressed, and checks
    /// them when it is text to be checked; `frame_done`: they end the frame.
    fn check_payload(&mut self, payload: &[u8], frame_done: bool) -> Result<(), Violation> {
        if let Some(inflation) = &mut self.inflation {
            inflation.payload(payload, self.max_message_bytes)?;
            self.release_inflation();
        }
        if let Some(text) = &mut self.text {
            // Unmasked through a small copy: the frame itself passes on as it came.
            let mut plain = [0u8; 1024];
            for piece in payload.chunks(plain.len()) {
                let plain = &mut plain[..piece.len()];
                plain.copy_from_slice(piece);
                if let Some(key) = self.frame_mask {
                    apply_mask(plain, key, self.mask_offset);
                }
                self.mask_offset = (self.mask_offset + piece.len()) % 4;
                text.feed(plain)?;
            }
            if frame_done && self.frame_fin {
                self.finish_text()?;
            }
        }
        Ok(())
    }

    /// The text message under way has ended: a character left unfinished is invalid.
    fn finish_text(&mut self) -> Result<(), InvalidUtf8> {
        self.text.take().map_or(Ok(()), |mut text| text.finish())
    }

    /// Frees the decoder between messages once nothing in it is needed.
    fn release_inflation(&mut self) {
        if self
            .inflation
            .as_ref()
            .is_some_and(|inflation| inflation.disposable())
        {
            self.inflation = None;
        }
    }

    /// Skips the payload of a refused frame and discards from then on.
    fn discard_frame(&mut self, payload_len: u64) {
        self.discarding = true;
        self.payload_left = payload_len;
    }

    fn hold_back(&mut self, tail: &[u8]) {
        self.carry[..tail.len()].copy_from_slice(tail);
        self.carry_len = tail.len() as u8;
    }

    fn check_header(
        &self,
        masked: bool,
        opcode: Opcode,
        fin: bool,
        payload_len: u64,
    ) -> Result<(), Violation> {
        match (self.source, masked) {
            (Source::Client, false) => return Err(Violation::Protocol("client frame not masked")),
            (Source::Upstream, true) => return Err(Violation::Protocol("upstream frame masked")),
            _ => {}
        }
        if let Opcode::Reserved(_) = opcode {
            return Err(Violation::Protocol("reserved opcode"));
        }
        // Checked before any size limit: such a length is malformed, not merely too big.
        if payload_len > MAX_PAYLOAD_LEN {
            return Err(Violation::Protocol("frame length with its top bit set"));
        }
        if opcode.is_control() && (!fin || payload_len > MAX_CONTROL_PAYLOAD as u64) {
            return Err(Violation::Protocol("fragmented or oversized control frame"));
        }
        Ok(())
    }

    /// Notes a close frame; returns true for a client pong answering the gateway's heartbeat.
    fn inspect_control(
        &mut self,
        opcode: Opcode,
        mask: Option<[u8; 4]>,
        payload: &mut [u8],
    ) -> bool {
        match opcode {
            Opcode::Close => {
                self.close_seen = true;
                self.close_code = Some(match payload {
                    [high, low, ..] => {
                        let mut code = [*high, *low];
                        if let Some(key) = mask {
                            apply_mask(&mut code, key, 0);
                        }
                        u16::from_be_bytes(code)
                    }
                    _ => NO_STATUS_CODE,
                });
                false
            }
            Opcode::Pong
                if self.source == Source::Client && payload.len() == HEARTBEAT_PAYLOAD.len() =>
            {
                // Unmask a copy: the frame itself may still be forwarded as it came.
                let mut plain = [0u8; MAX_CONTROL_PAYLOAD];
                let plain = &mut plain[..payload.len()];
                plain.copy_from_slice(payload);
                if let Some(key) = mask {
                    apply_mask(plain, key, 0);
                }
                plain == HEARTBEAT_PAYLOAD
            }
            _ => false,
        }
    }

    /// Charges a message, ping or pong to `limits.messagesPerConnection`: control frames cost
    /// the peers as much work as messages, so a ping flood must not bypass the rate.
    fn take_message_token(&mut self) -> Result<(), Violation> {
        if let Some((rate, bucket)) = &mut self.message_rate
            && !bucket.try_take(*rate, Instant::now())
        {
            return Err(Violation::RateExceeded);
        }
        Ok(())
    }

    fn account_data(&mut self, header: &FrameHeader) -> Result<(), Violation> {
        let FrameHeader {
            opcode,
            fin,
            payload_len,
            ..
        } = *header;
        let first = matches!(opcode, Opcode::Text | Opcode::Binary);
        match (opcode, self.in_message) {
            (Opcode::Continuation, false) => {
                return Err(Violation::Protocol("continuation without a message"));
            }
            (Opcode::Text | Opcode::Binary, true) => {
                return Err(Violation::Protocol("new message inside a fragmented one"));
            }
            (Opcode::Text | Opcode::Binary, false) => {
                self.take_message_token()?;
                self.in_message = true;
                self.message_bytes = 0;
                if self.check_utf8 && opcode == Opcode::Text {
                    self.text = Some(Utf8Check::default());
                }
            }
            _ => {}
        }
        self.frame_mask = header.mask;
        self.mask_offset = 0;
        self.frame_fin = fin;
        if fin && payload_len == 0 {
            // No payload will come to end the message's text.
            self.finish_text()?;
        }
        // The wire size counts for compressed messages too: data that inflates to little is
        // still work for the upstream.
        self.message_bytes = self.message_bytes.saturating_add(payload_len);
        if self.message_bytes > self.max_message_bytes {
            return Err(Violation::TooBig);
        }
        if first && header.rsv1 && self.inflation.is_none() {
            // RFC 6455 section 5.2: a reserved bit no extension gave a meaning. Passed on, a
            // compressed message would escape the size limit.
            let Some(context_takeover) = self.deflate else {
                return Err(Violation::Protocol("RSV1 set without permessage-deflate"));
            };
            self.inflation = Some(Box::new(Inflation::new(context_takeover)));
        }
        if let Some(inflation) = &mut self.inflation {
            inflation.frame(
                first,
                header.rsv1,
                header.mask,
                payload_len,
                fin,
                self.max_message_bytes,
            )?;
            self.release_inflation();
        }
        if fin {
            self.in_message = false;
            self.messages += 1;
        }
        Ok(())
    }
}

/// Moves `len` bytes at `from` to `to` (never after `from`). Until the gateway swallows a
/// frame the two are equal, and most reads move nothing.
fn move_front(buf: &mut [u8], from: usize, len: usize, to: usize) {
    if from != to {
        buf.copy_within(from..from + len, to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::ControlFrame;

    fn frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        assert!(payload.len() < 126);
        let mut bytes = vec![
            first,
            payload.len() as u8 | if mask.is_some() { 0x80 } else { 0 },
        ];
        let mut body = payload.to_vec();
        if let Some(key) = mask {
            bytes.extend_from_slice(&key);
            apply_mask(&mut body, key, 0);
        }
        bytes.extend_from_slice(&body);
        bytes
    }

    /// Feeds `input` in chunks of `chunk` bytes the way the relay does; returns what is forwarded.
    fn relay(tracker: &mut Tracker, input: &[u8], chunk: usize) -> (Vec<u8>, Option<Violation>) {
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            let mut buf = vec![0u8; CARRY_ROOM + piece.len()];
            let start = tracker.restore_carry(&mut buf[..CARRY_ROOM]);
            buf[CARRY_ROOM..].copy_from_slice(piece);
            let processed = tracker.process(&mut buf[start..]);
            out.extend_from_slice(&buf[start..start + processed.forward]);
            if processed.violation.is_some() {
                return (out, processed.violation);
            }
        }
        (out, None)
    }

    const KEY: Option<[u8; 4]> = Some([7, 1, 9, 3]);

    /// `text` compressed as a permessage-deflate message (its empty-block tail left off).
    fn deflated(text: &[u8]) -> Vec<u8> {
        use flate2::{Compress, Compression, FlushCompress};
        let mut out = Vec::with_capacity(text.len() / 100 + 1024);
        Compress::new(Compression::default(), false)
            .compress_vec(text, &mut out, FlushCompress::Sync)
            .unwrap();
        assert!(out.len() < out.capacity(), "all compressed");
        out.truncate(out.len() - 4);
        out
    }

    /// A frame of any payload length (the helper above takes short ones).
    fn long_frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut bytes = vec![first, 126 | if mask.is_some() { 0x80 } else { 0 }];
        bytes.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        let mut body = payload.to_vec();
        if let Some(key) = mask {
            bytes.extend_from_slice(&key);
            apply_mask(&mut body, key, 0);
        }
        bytes.extend(body);
        bytes
    }

    #[test]
    fn a_compressed_message_is_limited_by_its_inflated_size() {
        let bomb = long_frame(0xC2, &deflated(&vec![0; 10_000_000]), KEY);
        assert!(bomb.len() < 65_536);
        // Refused whole when it came in one read; cut, past its header, when it did not.
        for (chunk, cut) in [(bomb.len(), false), (4, true)] {
            let mut tracker = Tracker::new(Source::Client, 65_536, None).with_deflate(true);
            let (out, violation) = relay(&mut tracker, &bomb, chunk);
            assert_eq!(violation, Some(Violation::TooBig), "chunk {chunk}");
            assert_eq!(tracker.cut_mid_frame(), cut, "chunk {chunk}");
            assert_eq!(out.is_empty(), !cut, "chunk {chunk}");
        }
        // The same bytes under a limit they fit: the inflated size of each message counts.
        let small = frame(0xC1, &deflated(&[b'x'; 60_000]), KEY);
        let mut input = small.clone();
        input.extend(&small);
        let mut tracker = Tracker::new(Source::Client, 65_536, None).with_deflate(true);
        assert_eq!(relay(&mut tracker, &input, 5), (input, None));
        let mut tracker = Tracker::new(Source::Client, 50_000, None).with_deflate(true);
        assert_eq!(relay(&mut tracker, &small, 100).1, Some(Violation::TooBig));
    }

    #[test]
    fn the_decoder_lives_only_while_the_window_is_needed() {
        let plain = frame(0x81, b"plain", KEY);
        let compressed = frame(0xC1, &deflated(b"compressed"), KEY);
        for context_takeover in [true, false] {
            let mut tracker =
                Tracker::new(Source::Client, 1 << 20, None).with_deflate(context_takeover);
            relay(&mut tracker, &plain, 100);
            assert!(tracker.inflation.is_none(), "no compressed message yet");
            relay(&mut tracker, &compressed, 3);
            assert_eq!(tracker.inflation.is_some(), context_takeover);
        }
    }

    #[test]
    fn compressed_data_that_does_not_inflate_is_refused() {
        let mut tracker = Tracker::new(Source::Upstream, 1 << 20, None).with_deflate(true);
        let (out, violation) = relay(&mut tracker, &frame(0xC1, &[0xff; 20], None), 100);
        assert_eq!(
            (out.len(), violation),
            (0, Some(Violation::BadCompressedData))
        );
    }

    #[test]
    fn rsv1_without_permessage_deflate_is_a_protocol_error() {
        let mut tracker = Tracker::new(Source::Client, 1 << 20, None);
        let (out, violation) = relay(&mut tracker, &frame(0xC1, &deflated(b"hi"), KEY), 100);
        assert_eq!(
            (out.len(), violation),
            (
                0,
                Some(Violation::Protocol("RSV1 set without permessage-deflate"))
            )
        );
    }

    #[test]
    fn frames_pass_unchanged_in_any_chunking() {
        let mut input = frame(0x81, b"hello", KEY);
        input.extend(frame(0x02, b"part one", KEY));
        input.extend(frame(0x89, b"client ping", KEY));
        input.extend(frame(0x80, b"part two", KEY));
        input.extend(frame(0xC1, &deflated(b"compressed"), KEY));
        for chunk in 1..=input.len() {
            let mut tracker = Tracker::new(Source::Client, 1 << 20, None).with_deflate(true);
            let (out, violation) = relay(&mut tracker, &input, chunk);
            assert_eq!(violation, None);
            assert_eq!(out, input, "chunk size {chunk}");
            assert_eq!(tracker.take_messages(), 3);
            assert!(tracker.at_frame_boundary());
        }
    }

    #[test]
    fn text_split_inside_characters_across_frames_and_reads_is_utf8() {
        let text = "é日本𝄞".as_bytes();
        // The first frame ends inside 日, the second inside 𝄞; a ping sits between them.
        let mut input = frame(0x01, &text[..3], KEY);
        input.extend(frame(0x89, b"ping", KEY));
        input.extend(frame(0x00, &text[3..9], KEY));
        input.extend(frame(0x80, &text[9..], KEY));
        input.extend(frame(0x81, b"", KEY));
        input.extend(frame(0x82, b"\xff binary is not text", KEY));
        for chunk in 1..=input.len() {
            let mut tracker = Tracker::new(Source::Client, 1 << 20, None).with_utf8_check();
            let (out, violation) = relay(&mut tracker, &input, chunk);
            assert_eq!(violation, None, "chunk size {chunk}");
            assert_eq!(out, input, "chunk size {chunk}");
            assert_eq!(tracker.take_messages(), 3);
        }
    }

    #[test]
    fn text_that_is_not_utf8_is_refused_when_checked() {
        let valid = frame(0x81, b"fine", KEY);
        let cases: [(&str, Vec<u8>); 4] = [
            ("an invalid byte", frame(0x81, b"bad \xC0\xAF", KEY)),
            (
                "a message ending inside a character",
                frame(0x81, b"cut \xE6\x97", KEY),
            ),
            ("a character cut by an empty final frame", {
                let mut cut = frame(0x01, b"\xF0\x9D", KEY);
                cut.extend(frame(0x80, b"", KEY));
                cut
            }),
            ("a surrogate across frames", {
                let mut surrogate = frame(0x01, b"\xED", KEY);
                surrogate.extend(frame(0x80, b"\xA0\x80", KEY));
                surrogate
            }),
        ];
        for (case, bad) in cases {
            let mut input = valid.clone();
            input.extend(&bad);
            for chunk in [1, 3, input.len()] {
                let mut tracker = Tracker::new(Source::Client, 1 << 20, None).with_utf8_check();
                let (out, violation) = relay(&mut tracker, &input, chunk);
                assert_eq!(violation, Some(Violation::InvalidUtf8), "{case}, {chunk}");
                assert!(out.starts_with(&valid), "{case}: the valid message passes");
                assert!(
                    out.len() < input.len(),
                    "{case}: the invalid frame does not"
                );
            }
            let mut unchecked = Tracker::new(Source::Client, 1 << 20, None);
            assert_eq!(relay(&mut unchecked, &input, input.len()), (input, None));
        }
    }

    #[test]
    fn heartbeat_pongs_from_clients_are_swallowed() {
        let mut input = frame(0x8A, HEARTBEAT_PAYLOAD, KEY);
        input.extend(frame(0x8A, b"app pong", KEY));
        input.extend(frame(0x81, b"after", KEY));
        for chunk in [1, 5, input.len()] {
            let mut tracker = Tracker::new(Source::Client, 1 << 20, None);
            let (out, _) = relay(&mut tracker, &input, chunk);
            let mut expected = frame(0x8A, b"app pong", KEY);
            expected.extend(frame(0x81, b"after", KEY));
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn upstream_pongs_pass_even_with_the_heartbeat_payload() {
        let input = frame(0x8A, HEARTBEAT_PAYLOAD, None);
        let mut tracker = Tracker::new(Source::Upstream, 1 << 20, None);
        assert_eq!(relay(&mut tracker, &input, 3).0, input);
    }

    #[test]
    fn oversized_message_is_stopped_across_fragments() {
        let mut input = frame(0x02, &[0; 100], None);
        input.extend(frame(0x00, &[0; 100], None));
        input.extend(frame(0x80, &[0; 100], None));
        let mut tracker = Tracker::new(Source::Upstream, 250, None);
        let (out, violation) = relay(&mut tracker, &input, 64);
        assert_eq!(violation, Some(Violation::TooBig));
        assert_eq!(out.len(), 204, "only the first two frames pass");
    }

    #[test]
    fn the_peers_close_is_noticed_after_a_violation_or_a_stop() {
        let mut input = frame(0x82, &[0; 120], KEY);
        input.extend(frame(0x81, b"more", KEY));
        input.extend(frame(0x88, &1000u16.to_be_bytes(), KEY));
        for chunk in [1, 7, input.len()] {
            let mut tracker = Tracker::new(Source::Client, 100, None);
            let (out, violation) = relay(&mut tracker, &input, chunk);
            assert_eq!((out.len(), violation), (0, Some(Violation::TooBig)));
            // The relay feeds the rest of the bytes after the violation too.
            let mut tracker = Tracker::new(Source::Client, 100, None);
            let mut forwarded = 0;
            for piece in input.chunks(chunk) {
                forwarded += relay(&mut tracker, piece, piece.len()).0.len();
            }
            assert_eq!(forwarded, 0);
            assert!(tracker.close_seen(), "chunk size {chunk}");
        }

        let mut tracker = Tracker::new(Source::Client, 1 << 20, None);
        tracker.stop_at_next_frame();
        let (out, violation) = relay(&mut tracker, &input, 5);
        assert_eq!((out.len(), violation), (0, None));
        assert!(tracker.stopped() && tracker.close_seen());
    }

    #[test]
    fn message_rate_counts_messages_not_fragments() {
        let rate = Rate {
            per_second: 1,
            burst: 2,
        };
        let mut tracker = Tracker::new(Source::Client, 1 << 20, Some(rate));
        let mut input = frame(0x01, b"a", KEY);
        input.extend(frame(0x80, b"b", KEY));
        input.extend(frame(0x81, b"c", KEY));
        let (_, violation) = relay(&mut tracker, &input, 4);
        assert_eq!(violation, None);
        let (out, violation) = relay(&mut tracker, &frame(0x81, b"d", KEY), 100);
        assert_eq!((out.len(), violation), (0, Some(Violation::RateExceeded)));
    }

    #[test]
    fn pings_and_pongs_count_toward_the_message_rate_but_close_does_not() {
        let rate = Rate {
            per_second: 1,
            burst: 2,
        };
        // Byte by byte too: a control frame held back across reads is charged once.
        for chunk in [1, 100] {
            let mut tracker = Tracker::new(Source::Client, 1 << 20, Some(rate));
            let mut input = frame(0x89, b"ping", KEY);
            input.extend(frame(0x8A, b"pong", KEY));
            let (out, violation) = relay(&mut tracker, &input, chunk);
            assert_eq!((out, violation), (input, None));
            let (out, violation) = relay(&mut tracker, &frame(0x89, b"flood", KEY), chunk);
            assert_eq!((out.len(), violation), (0, Some(Violation::RateExceeded)));
        }
        let mut tracker = Tracker::new(Source::Client, 1 << 20, Some(rate));
        let mut input = frame(0x81, b"a", KEY);
        input.extend(frame(0x81, b"b", KEY));
        input.extend(frame(0x88, &1000u16.to_be_bytes(), KEY));
        let (out, violation) = relay(&mut tracker, &input, 100);
        assert_eq!(
            (out, violation),
            (input, None),
            "a close frame is never refused"
        );
    }

    #[test]
    fn protocol_errors_are_reported() {
        let cases: [(Source, Vec<u8>); 5] = [
            (Source::Client, frame(0x81, b"unmasked", None)),
            (Source::Upstream, frame(0x81, b"masked", KEY)),
            (Source::Upstream, frame(0x80, b"lone continuation", None)),
            (Source::Upstream, frame(0x83, b"reserved", None)),
            (Source::Upstream, frame(0x09, b"fragmented ping", None)),
        ];
        for (source, input) in cases {
            let mut tracker = Tracker::new(source, 1 << 20, None);
            let (_, violation) = relay(&mut tracker, &input, 100);
            assert!(
                matches!(violation, Some(Violation::Protocol(_))),
                "{input:?}"
            );
        }
    }

    /// A 64-bit length of 2^63 or more breaks the framing, whatever the size limit says.
    #[test]
    fn a_length_with_its_top_bit_set_is_a_protocol_error() {
        for (source, mask) in [(Source::Client, KEY), (Source::Upstream, None)] {
            for length in [1u64 << 63, u64::MAX] {
                let mut input = vec![0x82, 127 | if mask.is_some() { 0x80 } else { 0 }];
                input.extend_from_slice(&length.to_be_bytes());
                input.extend(mask.into_iter().flatten());
                let mut tracker = Tracker::new(source, 1 << 20, None);
                let (out, violation) = relay(&mut tracker, &input, 100);
                assert!(out.is_empty());
                assert_eq!(
                    violation,
                    Some(Violation::Protocol("frame length with its top bit set")),
                    "{source:?} {length}"
                );
            }
        }
        // The largest legal length is only too big.
        let mut input = vec![0x82, 127];
        input.extend_from_slice(&MAX_PAYLOAD_LEN.to_be_bytes());
        let mut tracker = Tracker::new(Source::Upstream, 1 << 20, None);
        assert_eq!(relay(&mut tracker, &input, 100).1, Some(Violation::TooBig));
    }

    #[test]
    fn close_frames_are_noted() {
        let close = ControlFrame::close(4000, "bye", None);
        let mut tracker = Tracker::new(Source::Upstream, 1 << 20, None);
        let (out, _) = relay(&mut tracker, close.as_bytes(), 2);
        assert_eq!(out, close.as_bytes());
        assert!(tracker.close_seen());
        assert_eq!(tracker.close_code(), Some(4000));
    }

    #[test]
    fn close_codes_are_read_unmasked_and_default_to_1005() {
        let masked = ControlFrame::close(1000, "bye", KEY);
        let mut tracker = Tracker::new(Source::Client, 1 << 20, None);
        assert_eq!(tracker.close_code(), None);
        relay(&mut tracker, masked.as_bytes(), 1);
        assert_eq!(tracker.close_code(), Some(1000));
        let mut tracker = Tracker::new(Source::Upstream, 1 << 20, None);
        relay(&mut tracker, &[0x88, 0x00], 1);
        assert_eq!(tracker.close_code(), Some(NO_STATUS_CODE));
    }

    #[test]
    fn long_payloads_stream_without_holding_back() {
        let mut input = vec![0x82, 126, 0x10, 0x00];
        input.extend(std::iter::repeat_n(7u8, 4096));
        let mut tracker = Tracker::new(Source::Upstream, 1 << 20, None);
        let mut buf = vec![0u8; CARRY_ROOM + 1000];
        let start = tracker.restore_carry(&mut buf[..CARRY_ROOM]);
        buf[CARRY_ROOM..].copy_from_slice(&input[..1000]);
        let processed = tracker.process(&mut buf[start..]);
        assert_eq!(processed.forward, 1000);
        assert!(!tracker.at_frame_boundary());
    }
}
