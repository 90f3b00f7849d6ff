//! RFC 6455 frame headers: parsing what peers send and encoding the few frames the gateway
//! writes itself (heartbeat pings and close frames). Payloads are never touched here.

/// Longest possible frame header: 2 bytes, 8 bytes of extended length, 4 bytes of mask.
pub(crate) const MAX_HEADER_LEN: usize = 14;
/// Longest control frame payload (RFC 6455 section 5.5).
pub(crate) const MAX_CONTROL_PAYLOAD: usize = 125;
/// Longest complete control frame.
pub(crate) const MAX_CONTROL_FRAME: usize = MAX_HEADER_LEN + MAX_CONTROL_PAYLOAD;
/// Longest payload a frame may declare: the top bit of the 64-bit length must be 0 (RFC 6455
/// section 5.2).
pub const MAX_PAYLOAD_LEN: u64 = u64::MAX >> 1;

/// Frame opcodes the gateway distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
    /// Reserved opcodes; the relay refuses them as a protocol error.
    Reserved(u8),
}

impl Opcode {
    fn from_bits(bits: u8) -> Self {
        match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            other => Self::Reserved(other),
        }
    }

    /// Close, ping and pong: never fragmented, at most 125 bytes.
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub fin: bool,
    /// The RSV1 bit: set on frames compressed with permessage-deflate.
    pub rsv1: bool,
    pub opcode: Opcode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
    /// Bytes the header itself occupies on the wire.
    pub header_len: usize,
}

/// Parses a frame header from the start of `bytes`; `None` means more bytes are needed.
pub(crate) fn parse_header(bytes: &[u8]) -> Option<FrameHeader> {
    let [first, second, ..] = *bytes else {
        return None;
    };
    let masked = second & 0x80 != 0;
    let (payload_len, length_bytes) = match second & 0x7F {
        126 => (
            u64::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?)),
            2,
        ),
        127 => (u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?), 8),
        short => (u64::from(short), 0),
    };
    let mask_at = 2 + length_bytes;
    let mask = if masked {
        Some(bytes.get(mask_at..mask_at + 4)?.try_into().ok()?)
    } else {
        None
    };
    Some(FrameHeader {
        fin: first & 0x80 != 0,
        rsv1: first & 0x40 != 0,
        opcode: Opcode::from_bits(first & 0x0F),
        mask,
        payload_len,
        header_len: mask_at + if masked { 4 } else { 0 },
    })
}

/// XORs `payload` with `mask`, starting `offset` bytes into the masked payload.
pub fn apply_mask(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    // Eight bytes at a time: text checked under `validation.utf8` is unmasked whole.
    let key: [u8; 4] = std::array::from_fn(|index| mask[(offset + index) % 4]);
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut words = payload.chunks_exact_mut(8);
    for chunk in &mut words {
        let masked = u64::from_ne_bytes((&*chunk).try_into().expect("eight bytes")) ^ word;
        chunk.copy_from_slice(&masked.to_ne_bytes());
    }
    // Whole words cover a multiple of four bytes, so the key lines up again.
    for (index, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= key[index % 4];
    }
}

/// A control frame the gateway writes on its own, kept inline (no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlFrame {
    bytes: [u8; MAX_CONTROL_FRAME],
    len: u8,
}

impl ControlFrame {
    /// A ping carrying `payload` (at most 125 bytes).
    pub fn ping(payload: &[u8], mask: Option<[u8; 4]>) -> Self {
        Self::encode(0x9, &[payload], mask)
    }

    /// A close frame with a status code and a short reason (truncated to fit 125 bytes).
    pub fn close(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Self {
        let reason = &reason.as_bytes()[..reason.len().min(MAX_CONTROL_PAYLOAD - 2)];
        Self::encode(0x8, &[&code.to_be_bytes(), reason], mask)
    }

    fn encode(opcode: u8, parts: &[&[u8]], mask: Option<[u8; 4]>) -> Self {
        let payload_len: usize = parts.iter().map(|part| part.len()).sum();
        debug_assert!(payload_len <= MAX_CONTROL_PAYLOAD);
        let mut bytes = [0u8; MAX_CONTROL_FRAME];
        bytes[0] = 0x80 | opcode;
        bytes[1] = payload_len as u8 | if mask.is_some() { 0x80 } else { 0 };
        let mut at = 2;
        if let Some(key) = mask {
            bytes[2..6].copy_from_slice(&key);
            at = 6;
        }
        let payload_start = at;
        for part in parts {
            bytes[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        if let Some(key) = mask {
            apply_mask(&mut bytes[payload_start..at], key, 0);
        }
        Self {
            bytes,
            len: at as u8,
        }
    }

    /// The frame as it goes on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Reads the status code of a close frame payload (already unmasked); `None` if it has none.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(payload.get(..2)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_unmasked_header() {
        let header = parse_header(&[0x81, 5, b'h']).unwrap();
        assert!(header.fin && !header.rsv1);
        assert_eq!(header.opcode, Opcode::Text);
        assert_eq!((header.payload_len, header.header_len), (5, 2));
        assert_eq!(header.mask, None);
    }

    #[test]
    fn extended_lengths_and_mask() {
        let header = parse_header(&[0x42, 0x80 | 126, 0x01, 0x00, 1, 2, 3, 4]).unwrap();
        assert!(!header.fin && header.rsv1);
        assert_eq!(header.opcode, Opcode::Binary);
        assert_eq!(header.payload_len, 256);
        assert_eq!(header.mask, Some([1, 2, 3, 4]));
        assert_eq!(header.header_len, 8);

        let mut long = vec![0x80, 127];
        long.extend_from_slice(&(1u64 << 33).to_be_bytes());
        let header = parse_header(&long).unwrap();
        assert_eq!(header.opcode, Opcode::Continuation);
        assert_eq!((header.payload_len, header.header_len), (1 << 33, 10));
    }

    #[test]
    fn incomplete_headers_ask_for_more() {
        assert_eq!(parse_header(&[]), None);
        assert_eq!(parse_header(&[0x81]), None);
        assert_eq!(parse_header(&[0x82, 126, 0x01]), None);
        assert_eq!(parse_header(&[0x82, 0x80 | 5, 1, 2, 3]), None);
        assert_eq!(parse_header(&[0x82, 127, 0, 0, 0, 0, 0, 0, 1]), None);
    }

    #[test]
    fn reserved_opcodes_are_reported() {
        assert_eq!(
            parse_header(&[0x83, 0]).unwrap().opcode,
            Opcode::Reserved(3)
        );
        assert!(Opcode::Pong.is_control() && !Opcode::Continuation.is_control());
    }

    #[test]
    fn masked_close_frame_round_trips() {
        let frame = ControlFrame::close(1009, "message too big", Some([9, 8, 7, 6]));
        let bytes = frame.as_bytes();
        let header = parse_header(bytes).unwrap();
        assert_eq!(header.opcode, Opcode::Close);
        let mut payload = bytes[header.header_len..].to_vec();
        assert_eq!(payload.len() as u64, header.payload_len);
        apply_mask(&mut payload, header.mask.unwrap(), 0);
        assert_eq!(close_code(&payload), Some(1009));
        assert_eq!(&payload[2..], b"message too big");
    }

    #[test]
    fn mask_offset_continues_the_key() {
        let key = [1, 2, 3, 4];
        let mut whole = *b"abcdefg";
        apply_mask(&mut whole, key, 0);
        let mut split = *b"abcdefg";
        let (head, tail) = split.split_at_mut(3);
        apply_mask(head, key, 0);
        apply_mask(tail, key, 3);
        assert_eq!(whole, split);
    }

    #[test]
    fn word_at_a_time_masking_matches_the_byte_rule() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let plain: Vec<u8> = (0..=255).collect();
        for offset in 0..8 {
            for len in [0, 1, 7, 8, 9, 31, 256] {
                let mut masked = plain[..len].to_vec();
                apply_mask(&mut masked, key, offset);
                let expected: Vec<u8> = (0..len)
                    .map(|index| plain[index] ^ key[(offset + index) % 4])
                    .collect();
                assert_eq!(masked, expected, "offset {offset}, length {len}");
            }
        }
    }

    #[test]
    fn long_close_reason_is_truncated() {
        let frame = ControlFrame::close(1000, &"x".repeat(300), None);
        assert_eq!(frame.as_bytes().len(), 2 + MAX_CONTROL_PAYLOAD);
    }
}
