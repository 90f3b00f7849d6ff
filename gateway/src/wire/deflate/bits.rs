//! The bits of a DEFLATE stream as they arrive in pieces, least significant bit of each byte
//! first (RFC 1951 3.1.1). A decoding step peeks at what it needs and consumes it only once the
//! whole step is there, so a step cut by the end of a piece simply runs again with more bits.

/// Bits taken from the input but not yet consumed; bit 0 is the next one.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct BitBuffer {
    bits: u64,
    len: u32,
}

/// After a refill the buffer holds at least this many bits unless the input ran out, enough for
/// the longest step (a length, its distance and both their extra bits: 48 bits). It never
/// holds more than 63, so that whole bytes always fit.
pub(crate) const REFILLED: u32 = 56;

impl BitBuffer {
    /// An empty buffer.
    pub const fn new() -> Self {
        Self { bits: 0, len: 0 }
    }

    /// Moves whole bytes from the front of `input` into the buffer while they fit; returns the
    /// rest of `input`.
    #[inline]
    pub fn refill<'a>(&mut self, input: &'a [u8]) -> &'a [u8] {
        if let Some(word) = input.first_chunk::<8>() {
            // Eight bytes at once: as many whole bytes as fit in the 64 bits.
            let take = (63 - self.len) / 8;
            let word = u64::from_le_bytes(*word);
            if take > 0 {
                let mask = u64::MAX >> (64 - take * 8);
                self.bits |= (word & mask) << self.len;
                self.len += take * 8;
            }
            return &input[take as usize..];
        }
        let mut rest = input;
        while self.len < REFILLED
            && let Some((&byte, tail)) = rest.split_first()
        {
            self.bits |= u64::from(byte) << self.len;
            self.len += 8;
            rest = tail;
        }
        rest
    }

    /// The bits held, the next one lowest.
    #[inline]
    pub fn bits(&self) -> u64 {
        self.bits
    }

    /// How many bits are held.
    #[inline]
    pub fn len(&self) -> u32 {
        self.len
    }

    /// The next `count` bits (at most 32), or `None` while fewer are held.
    #[inline]
    pub fn peek(&self, count: u32) -> Option<u32> {
        (count <= self.len).then(|| (self.bits & low_mask(count)) as u32)
    }

    /// Drops the next `count` bits, which must be held.
    #[inline]
    pub fn consume(&mut self, count: u32) {
        debug_assert!(count <= self.len);
        self.bits = self.bits.checked_shr(count).unwrap_or(0);
        self.len -= count;
    }

    /// Drops the rest of the byte the next bit belongs to, as a stored block does.
    pub fn align_to_byte(&mut self) {
        self.consume(self.len % 8);
    }

    /// Drops up to `max` whole bytes (the buffer is byte-aligned); returns how many.
    pub fn skip_bytes(&mut self, max: u32) -> u32 {
        let bytes = (self.len / 8).min(max);
        self.consume(bytes * 8);
        bytes
    }
}

/// The lowest `count` bits set (`count` at most 63).
#[inline]
pub(crate) fn low_mask(count: u32) -> u64 {
    (1u64 << count) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_come_least_significant_first_across_refills() {
        let input: Vec<u8> = (0..20).map(|n| n * 13).collect();
        for first in [0, 1, 3, 8, 9, 20] {
            let mut buffer = BitBuffer::default();
            let rest = buffer.refill(&input[..first]);
            assert!(rest.is_empty() || buffer.len() >= REFILLED);
            let mut rest = [rest, &input[first..]].concat();
            let mut out = Vec::new();
            while out.len() < input.len() {
                rest = buffer.refill(&rest).to_vec();
                // Odd-sized pieces: bytes are rebuilt from 3-bit and 5-bit reads.
                let low = buffer.peek(3).unwrap();
                buffer.consume(3);
                let high = buffer.peek(5).unwrap();
                buffer.consume(5);
                out.push((low | high << 3) as u8);
            }
            assert_eq!(out, input, "first piece {first}");
            assert_eq!(buffer.peek(1), None);
        }
    }

    #[test]
    fn aligning_drops_the_partial_byte_and_whole_bytes_skip() {
        let mut buffer = BitBuffer::default();
        assert!(buffer.refill(&[0xff, 0x12, 0x34, 0x56]).is_empty());
        buffer.consume(3);
        buffer.align_to_byte();
        assert_eq!(buffer.len(), 24);
        assert_eq!(buffer.skip_bytes(2), 2);
        assert_eq!(buffer.peek(8), Some(0x56));
        assert_eq!(buffer.skip_bytes(5), 1);
        assert_eq!(buffer.len(), 0);
    }
}
