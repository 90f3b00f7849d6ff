//! Canonical Huffman codes (RFC 1951 3.2.2), kept as puff keeps them (zlib's
//! contrib/puff/puff.c): how many codes each length has, and the symbols in code order. That is
//! a few hundred bytes where a lookup table would take kilobytes, and decoding walks the code
//! one bit at a time. Which sets of lengths are refused follows zlib's `inflate_table`.

/// The longest code DEFLATE allows.
pub(crate) const MAX_LEN: usize = 15;

/// A canonical code over up to `N` symbols.
#[derive(Debug, Clone)]
pub(crate) struct Code<const N: usize> {
    /// How many symbols have a code of each length; `count[0]` is unused.
    count: [u16; MAX_LEN + 1],
    /// The symbols that have a code, shortest code first and by symbol within a length.
    symbols: [u16; N],
    /// The longest code's length; 0 when no symbol has a code.
    max_len: u8,
}

/// Whether a code may leave some bit patterns unused, as zlib decides for each kind of code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Completeness {
    /// Every pattern must be a code (the code length code); no symbol at all is accepted too.
    Required,
    /// As above, except that a code whose codes are all 1 bit long may leave one out (the
    /// literal/length and distance codes, so that a single distance code is possible).
    SingleBitMayBeMissing,
}

/// The lengths make no prefix code: some patterns would be two codes (over-subscribed), or too
/// many patterns are left unused (incomplete where [`Completeness`] forbids it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidLengths;

/// What the next bits of the stream are in a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A symbol whose code is `len` bits long.
    Symbol { symbol: u16, len: u32 },
    /// The bits begin no code: the data is corrupt.
    Invalid,
    /// More bits are needed to tell.
    Short,
}

impl<const N: usize> Code<N> {
    /// The code for `lengths` (one per symbol, 0 for a symbol without a code).
    pub const fn new(lengths: &[u8], completeness: Completeness) -> Result<Self, InvalidLengths> {
        let mut count = [0u16; MAX_LEN + 1];
        let mut symbol = 0;
        while symbol < lengths.len() {
            count[lengths[symbol] as usize] += 1;
            symbol += 1;
        }
        let mut max_len = MAX_LEN;
        while max_len > 0 && count[max_len] == 0 {
            max_len -= 1;
        }
        // Patterns left unused at each length: negative means over-subscribed.
        let mut left: i32 = 1;
        let mut len = 1;
        while len <= MAX_LEN {
            left = (left << 1) - count[len] as i32;
            if left < 0 {
                return Err(InvalidLengths);
            }
            len += 1;
        }
        let incomplete_allowed = match completeness {
            Completeness::Required => max_len == 0,
            Completeness::SingleBitMayBeMissing => max_len <= 1,
        };
        if left > 0 && !incomplete_allowed {
            return Err(InvalidLengths);
        }
        // Where the symbols of each length start in `symbols`.
        let mut offsets = [0u16; MAX_LEN + 1];
        let mut len = 1;
        while len < MAX_LEN {
            offsets[len + 1] = offsets[len] + count[len];
            len += 1;
        }
        let mut symbols = [0u16; N];
        let mut symbol = 0;
        while symbol < lengths.len() {
            let len = lengths[symbol] as usize;
            if len != 0 {
                symbols[offsets[len] as usize] = symbol as u16;
                offsets[len] += 1;
            }
            symbol += 1;
        }
        count[0] = 0;
        Ok(Self {
            count,
            symbols,
            max_len: max_len as u8,
        })
    }

    /// True when no symbol has a code.
    pub fn is_empty(&self) -> bool {
        self.max_len == 0
    }

    /// The symbol whose code starts `bits` (next bit lowest), of which `available` are there.
    /// Codes are stored most significant bit first, so the walk takes one bit at a time.
    #[inline]
    pub fn decode(&self, bits: u64, available: u32) -> Decoded {
        // The `len`-bit prefix read so far, and the first code and first index of that length.
        let mut code: i32 = 0;
        let mut first: i32 = 0;
        let mut index: i32 = 0;
        // An empty or one-bit incomplete code is corrupt after one bit, as in zlib.
        let last = u32::from(self.max_len.max(1));
        let mut len = 1;
        while len <= last {
            if len > available {
                return Decoded::Short;
            }
            code |= ((bits >> (len - 1)) & 1) as i32;
            let count = i32::from(self.count[len as usize]);
            if code - first < count {
                let symbol = self.symbols[(index + code - first) as usize];
                return Decoded::Symbol { symbol, len };
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
            len += 1;
        }
        Decoded::Invalid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `code` (`len` bits, most significant first as RFC 1951 writes codes) as stream bits.
    fn stream_bits(code: u32, len: u32) -> u64 {
        u64::from(code.reverse_bits() >> (32 - len))
    }

    #[test]
    fn decodes_the_example_of_rfc_1951() {
        // RFC 1951 3.2.2: lengths (3, 3, 3, 3, 3, 2, 4, 4) for A..H.
        let code = Code::<8>::new(&[3, 3, 3, 3, 3, 2, 4, 4], Completeness::Required).unwrap();
        let expected = [
            (0, 0b010, 3),
            (1, 0b011, 3),
            (4, 0b110, 3),
            (5, 0b00, 2),
            (6, 0b1110, 4),
            (7, 0b1111, 4),
        ];
        for (symbol, bits, len) in expected {
            assert_eq!(
                code.decode(stream_bits(bits, len), len),
                Decoded::Symbol { symbol, len }
            );
            assert_eq!(code.decode(stream_bits(bits, len), len - 1), Decoded::Short);
        }
    }

    #[test]
    fn refuses_what_zlib_refuses() {
        use Completeness::*;
        let over_subscribed = [1, 1, 1];
        let incomplete = [2, 2, 2];
        let one_of_one_bit = [0, 1, 0];
        for completeness in [Required, SingleBitMayBeMissing] {
            assert!(Code::<3>::new(&over_subscribed, completeness).is_err());
            assert!(Code::<3>::new(&incomplete, completeness).is_err());
            assert!(Code::<3>::new(&[0, 0, 0], completeness).unwrap().is_empty());
        }
        assert!(Code::<3>::new(&one_of_one_bit, Required).is_err());
        let single = Code::<3>::new(&one_of_one_bit, SingleBitMayBeMissing).unwrap();
        assert_eq!(single.decode(0, 1), Decoded::Symbol { symbol: 1, len: 1 });
        assert_eq!(single.decode(1, 1), Decoded::Invalid);
        let empty = Code::<3>::new(&[0, 0, 0], SingleBitMayBeMissing).unwrap();
        assert_eq!(empty.decode(0, 0), Decoded::Short);
        assert_eq!(empty.decode(0, 1), Decoded::Invalid);
    }
}
