//! How many bytes a DEFLATE stream (RFC 1951) inflates to, without inflating it.
//!
//! A back-reference adds its length whatever the bytes it copies, so the inflated length
//! follows from the bit stream alone: block headers, stored lengths, the Huffman codes and the
//! length and distance symbols. No window and no output are kept, only the decoding state and,
//! while a block with dynamic codes is read, its codes (under 1 KB, boxed). Data is refused
//! where zlib refuses it, including a distance reaching before the start of the stream.

use super::InflateError;
use super::bits::{BitBuffer, low_mask};
use super::huffman::{Code, Completeness, Decoded};

/// The largest distance DEFLATE can express, and zlib's largest window.
const WINDOW: u16 = 32 * 1024;
/// Literal/length symbols a dynamic block may define (RFC 1951 3.2.7: HLIT).
const MAX_LITERAL_CODES: usize = 286;
/// Distance symbols a dynamic block may define (HDIST).
const MAX_DISTANCE_CODES: usize = 30;
/// The order in which a dynamic block lists the code length code's lengths.
const CODE_LENGTH_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];
/// Base lengths of length symbols 257..=285, and their extra bits (RFC 1951 3.2.5).
const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
/// Base distances of distance symbols 0..=29, and their extra bits.
const DISTANCE_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DISTANCE_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// The literal/length and distance codes of a block.
#[derive(Debug)]
struct Codes {
    /// Symbols 286 and 287 have codes only in the fixed code, and are invalid there.
    literal: Code<288>,
    /// Likewise symbols 30 and 31.
    distance: Code<32>,
}

/// The codes of blocks with fixed Huffman codes (RFC 1951 3.2.6): shared, built at compile time.
static FIXED: Codes = {
    let mut literal = [8u8; 288];
    let mut symbol = 144;
    while symbol < 288 {
        literal[symbol] = match symbol {
            144..=255 => 9,
            256..=279 => 7,
            _ => 8,
        };
        symbol += 1;
    }
    let (Ok(literal), Ok(distance)) = (
        Code::new(&literal, Completeness::Required),
        Code::new(&[5; 32], Completeness::Required),
    ) else {
        panic!("the fixed codes are complete");
    };
    Codes { literal, distance }
};

/// A dynamic block's header while it is read: the code length code, then the lengths it codes.
#[derive(Debug)]
struct Header {
    literals: u16,
    distances: u16,
    /// Lengths of the code length code given (HCLEN + 4).
    code_length_codes: u8,
    /// Lengths read so far (of the code length code, then of the literal and distance codes).
    have: u16,
    code_length_lengths: [u8; 19],
    code_length_code: Option<Code<19>>,
    lengths: [u8; MAX_LITERAL_CODES + MAX_DISTANCE_CODES],
}

/// Where in the stream the next bits belong.
#[derive(Debug)]
enum Stage {
    /// BFINAL and BTYPE.
    BlockHeader,
    /// A stored block's LEN and NLEN, after the bits up to the byte boundary.
    StoredLengths,
    /// A stored block's bytes.
    Stored { left: u16 },
    /// HLIT, HDIST and HCLEN.
    DynamicSizes,
    /// The lengths of the code length code.
    CodeLengthCodes(Box<Header>),
    /// The lengths of the literal/length and distance codes.
    CodeLengths(Box<Header>),
    /// The symbols of a block with fixed codes.
    FixedSymbols,
    /// The symbols of a block with dynamic codes.
    DynamicSymbols(Box<Codes>),
    /// After the final block: the rest of the input is not DEFLATE data.
    Ended,
}

/// How far a call to [`InflatedLength::count`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// All the input is counted; the stream goes on in the next input.
    NeedsInput,
    /// The final block ended: the rest of the input, and any that follows, is ignored.
    StreamEnded,
}

/// Counts the inflated bytes of one raw DEFLATE stream fed in pieces of any size.
#[derive(Debug)]
pub struct InflatedLength {
    bits: BitBuffer,
    stage: Stage,
    /// The current block is the final one.
    final_block: bool,
    /// Bytes a distance may reach back: the stream's output so far, at most the window.
    history: u16,
}

impl Default for InflatedLength {
    fn default() -> Self {
        Self::new()
    }
}

impl InflatedLength {
    /// The start of a stream.
    pub const fn new() -> Self {
        Self {
            bits: BitBuffer::new(),
            stage: Stage::BlockHeader,
            final_block: false,
            history: 0,
        }
    }

    /// Counts the bytes that `input`, the next piece of the stream, inflates to into
    /// `inflated`, and stops with [`InflateError::TooBig`] as soon as that passes `limit`
    /// (within one back-reference, at most 258 bytes). After an error the stream must not be
    /// fed again.
    pub fn count(
        &mut self,
        mut input: &[u8],
        inflated: &mut u64,
        limit: u64,
    ) -> Result<Progress, InflateError> {
        let mut output = Output {
            inflated,
            limit,
            history: &mut self.history,
        };
        loop {
            input = self.bits.refill(input);
            let stage = std::mem::replace(&mut self.stage, Stage::BlockHeader);
            let (stage, advanced) = match stage {
                Stage::Ended => {
                    self.stage = Stage::Ended;
                    return Ok(Progress::StreamEnded);
                }
                Stage::BlockHeader => match self.bits.peek(3) {
                    None => (stage, false),
                    Some(header) => {
                        self.bits.consume(3);
                        self.final_block = header & 1 == 1;
                        let stage = match header >> 1 {
                            0 => Stage::StoredLengths,
                            1 => Stage::FixedSymbols,
                            2 => Stage::DynamicSizes,
                            _ => return Err(InflateError::Corrupt),
                        };
                        (stage, true)
                    }
                },
                Stage::StoredLengths => {
                    self.bits.align_to_byte();
                    match self.bits.peek(32) {
                        None => (stage, false),
                        Some(lengths) => {
                            self.bits.consume(32);
                            let (len, complement) = (lengths as u16, (lengths >> 16) as u16);
                            if len != !complement {
                                return Err(InflateError::Corrupt);
                            }
                            let stored = Stage::Stored { left: len };
                            (block_end_or(self.final_block, stored, len == 0), true)
                        }
                    }
                }
                Stage::Stored { left } => {
                    let from_bits = self.bits.skip_bytes(left.into()) as u16;
                    let from_input = input.len().min(usize::from(left - from_bits));
                    input = &input[from_input..];
                    let copied = from_bits + from_input as u16;
                    output.add(copied)?;
                    let left = left - copied;
                    let stored = Stage::Stored { left };
                    (
                        block_end_or(self.final_block, stored, left == 0),
                        copied > 0,
                    )
                }
                Stage::DynamicSizes => match self.bits.peek(14) {
                    None => (stage, false),
                    Some(sizes) => {
                        self.bits.consume(14);
                        let literals = (sizes & 0x1f) as u16 + 257;
                        let distances = ((sizes >> 5) & 0x1f) as u16 + 1;
                        if usize::from(literals) > MAX_LITERAL_CODES
                            || usize::from(distances) > MAX_DISTANCE_CODES
                        {
                            return Err(InflateError::Corrupt);
                        }
                        let header = Box::new(Header {
                            literals,
                            distances,
                            code_length_codes: (sizes >> 10) as u8 + 4,
                            have: 0,
                            code_length_lengths: [0; 19],
                            code_length_code: None,
                            lengths: [0; MAX_LITERAL_CODES + MAX_DISTANCE_CODES],
                        });
                        (Stage::CodeLengthCodes(header), true)
                    }
                },
                Stage::CodeLengthCodes(mut header) => {
                    match read_code_length_code(&mut self.bits, &mut header)? {
                        true => (Stage::CodeLengths(header), true),
                        false => (Stage::CodeLengthCodes(header), false),
                    }
                }
                Stage::CodeLengths(mut header) => {
                    match read_code_lengths(&mut self.bits, &mut header)? {
                        Some(codes) => (Stage::DynamicSymbols(codes), true),
                        None => (Stage::CodeLengths(header), false),
                    }
                }
                Stage::FixedSymbols => {
                    match count_symbols(&mut self.bits, &FIXED, &mut input, &mut output)? {
                        true => (
                            block_end_or(self.final_block, Stage::FixedSymbols, true),
                            true,
                        ),
                        false => (Stage::FixedSymbols, false),
                    }
                }
                Stage::DynamicSymbols(codes) => {
                    match count_symbols(&mut self.bits, &codes, &mut input, &mut output)? {
                        true => (
                            block_end_or(self.final_block, Stage::BlockHeader, true),
                            true,
                        ),
                        false => (Stage::DynamicSymbols(codes), false),
                    }
                }
            };
            self.stage = stage;
            // A step waits only for bits that are not there: all the input is in the buffer.
            if !advanced && input.is_empty() {
                return Ok(Progress::NeedsInput);
            }
        }
    }
}

/// `stage` while the block goes on; once it `ended`, the next block or the stream's end.
fn block_end_or(final_block: bool, stage: Stage, ended: bool) -> Stage {
    match (ended, final_block) {
        (false, _) => stage,
        (true, false) => Stage::BlockHeader,
        (true, true) => Stage::Ended,
    }
}

/// Where the counted bytes go.
struct Output<'a> {
    inflated: &'a mut u64,
    limit: u64,
    history: &'a mut u16,
}

impl Output<'_> {
    #[inline]
    fn add(&mut self, len: u16) -> Result<(), InflateError> {
        *self.inflated += u64::from(len);
        *self.history = self.history.saturating_add(len).min(WINDOW);
        if *self.inflated > self.limit {
            return Err(InflateError::TooBig);
        }
        Ok(())
    }
}

/// Reads the code length code's lengths, 3 bits each; true once it is built.
fn read_code_length_code(bits: &mut BitBuffer, header: &mut Header) -> Result<bool, InflateError> {
    while header.have < header.code_length_codes.into() {
        let Some(len) = bits.peek(3) else {
            return Ok(false);
        };
        bits.consume(3);
        header.code_length_lengths[CODE_LENGTH_ORDER[usize::from(header.have)]] = len as u8;
        header.have += 1;
    }
    let code = Code::new(&header.code_length_lengths, Completeness::Required)
        .map_err(|_| InflateError::Corrupt)?;
    header.code_length_code = Some(code);
    header.have = 0;
    Ok(true)
}

/// Reads the literal/length and distance code lengths; their codes once all are read.
fn read_code_lengths(
    bits: &mut BitBuffer,
    header: &mut Header,
) -> Result<Option<Box<Codes>>, InflateError> {
    let Some(code) = &header.code_length_code else {
        unreachable!("the code length code is read first");
    };
    let total = header.literals + header.distances;
    while header.have < total {
        let (symbol, len) = if code.is_empty() {
            // zlib decodes every bit as length 0 with no code length code at all; the missing
            // end-of-block code then refuses the block.
            match bits.len() {
                0 => return Ok(None),
                _ => (0, 1),
            }
        } else {
            match code.decode(bits.bits(), bits.len()) {
                Decoded::Symbol { symbol, len } => (symbol, len),
                Decoded::Short => return Ok(None),
                Decoded::Invalid => unreachable!("the code length code is complete"),
            }
        };
        let (extra, base, repeated) = match symbol {
            0..=15 => {
                bits.consume(len);
                header.lengths[usize::from(header.have)] = symbol as u8;
                header.have += 1;
                continue;
            }
            16 => (2, 3, None),
            17 => (3, 3, Some(0)),
            _ => (7, 11, Some(0)),
        };
        let Some(repeat) = bits.peek(len + extra) else {
            return Ok(None);
        };
        bits.consume(len + extra);
        let repeated = match repeated {
            Some(zero) => zero,
            None if header.have == 0 => return Err(InflateError::Corrupt),
            None => header.lengths[usize::from(header.have) - 1],
        };
        let times = base + (repeat >> len) as u16;
        if header.have + times > total {
            return Err(InflateError::Corrupt);
        }
        let start = usize::from(header.have);
        header.lengths[start..start + usize::from(times)].fill(repeated);
        header.have += times;
    }
    let (literal_lengths, distance_lengths) =
        header.lengths[..usize::from(total)].split_at(usize::from(header.literals));
    if literal_lengths[256] == 0 {
        return Err(InflateError::Corrupt);
    }
    let literal = Code::new(literal_lengths, Completeness::SingleBitMayBeMissing);
    let distance = Code::new(distance_lengths, Completeness::SingleBitMayBeMissing);
    match (literal, distance) {
        (Ok(literal), Ok(distance)) => Ok(Some(Box::new(Codes { literal, distance }))),
        _ => Err(InflateError::Corrupt),
    }
}

/// Counts a block's literals and back-references; true at the end of the block, false when
/// the input ran out. Each symbol is taken whole, with its distance and their extra bits.
#[inline]
fn count_symbols(
    bits: &mut BitBuffer,
    codes: &Codes,
    input: &mut &[u8],
    output: &mut Output,
) -> Result<bool, InflateError> {
    loop {
        *input = bits.refill(input);
        let (stream, available) = (bits.bits(), bits.len());
        let (symbol, mut used) = match codes.literal.decode(stream, available) {
            Decoded::Symbol { symbol, len } => (usize::from(symbol), len),
            Decoded::Short => return Ok(false),
            Decoded::Invalid => return Err(InflateError::Corrupt),
        };
        let length = match symbol {
            0..=255 => {
                bits.consume(used);
                output.add(1)?;
                continue;
            }
            256 => {
                bits.consume(used);
                return Ok(true);
            }
            257..=285 => {
                let extra = u32::from(LENGTH_EXTRA[symbol - 257]);
                if used + extra > available {
                    return Ok(false);
                }
                let length =
                    LENGTH_BASE[symbol - 257] + ((stream >> used) & low_mask(extra)) as u16;
                used += extra;
                length
            }
            _ => return Err(InflateError::Corrupt),
        };
        let symbol = match codes.distance.decode(stream >> used, available - used) {
            Decoded::Symbol { symbol, len } => {
                used += len;
                usize::from(symbol)
            }
            Decoded::Short => return Ok(false),
            Decoded::Invalid => return Err(InflateError::Corrupt),
        };
        if symbol >= MAX_DISTANCE_CODES {
            return Err(InflateError::Corrupt);
        }
        let extra = u32::from(DISTANCE_EXTRA[symbol]);
        if used + extra > available {
            return Ok(false);
        }
        let distance = DISTANCE_BASE[symbol] + ((stream >> used) & low_mask(extra)) as u16;
        if distance > *output.history {
            return Err(InflateError::Corrupt);
        }
        bits.consume(used + extra);
        output.add(length)?;
    }
}

#[cfg(test)]
mod tests {
    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

    use super::*;

    /// What zlib makes of `stream`: the bytes it inflates to and whether it ended, or an error.
    fn zlib(stream: &[u8]) -> Result<(u64, bool), ()> {
        let mut decoder = Decompress::new(false);
        let mut output = vec![0; 64 * 1024];
        let mut input = stream;
        loop {
            let (read, written) = (decoder.total_in(), decoder.total_out());
            let status = decoder
                .decompress(input, &mut output, FlushDecompress::None)
                .map_err(|_| ())?;
            input = &input[(decoder.total_in() - read) as usize..];
            if status == Status::StreamEnd {
                return Ok((decoder.total_out(), true));
            }
            if decoder.total_in() == read && decoder.total_out() == written {
                return Ok((decoder.total_out(), false));
            }
        }
    }

    /// What the counter makes of `pieces`, fed one after another, without a limit.
    fn counted(pieces: &[&[u8]]) -> Result<(u64, bool), InflateError> {
        let mut counter = InflatedLength::new();
        let mut inflated = 0;
        let mut ended = false;
        for piece in pieces {
            ended = counter.count(piece, &mut inflated, u64::MAX)? == Progress::StreamEnded;
        }
        Ok((inflated, ended))
    }

    /// The counter and zlib agree on `stream` and on its prefixes (every one of a short
    /// stream): same length, same end, and an error at the same byte.
    fn assert_agrees_with_zlib(stream: &[u8], case: &str) {
        let step = stream.len() / 500 + 1;
        for end in (0..=stream.len()).rev().step_by(step) {
            let ours = counted(&[&stream[..end]]).map_err(|_| ());
            assert_eq!(ours, zlib(&stream[..end]), "{case}: first {end} bytes");
        }
    }

    fn compress(data: &[u8], level: u32, flush: FlushCompress) -> Vec<u8> {
        compress_more(
            &mut Compress::new(Compression::new(level), false),
            data,
            flush,
        )
    }

    /// The next part of `compress`'s stream: `data`, then a flush.
    fn compress_more(compress: &mut Compress, data: &[u8], flush: FlushCompress) -> Vec<u8> {
        let start = compress.total_in();
        let mut out = Vec::new();
        loop {
            out.reserve(64 * 1024);
            let consumed = (compress.total_in() - start) as usize;
            let status = compress
                .compress_vec(&data[consumed..], &mut out, flush)
                .unwrap();
            let all_in = (compress.total_in() - start) as usize == data.len();
            let done = match flush {
                FlushCompress::Finish => status == Status::StreamEnd,
                _ => out.len() < out.capacity(),
            };
            if all_in && done {
                return out;
            }
        }
    }

    /// Deterministic pseudo-random numbers (xorshift64).
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound as u64) as usize
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    /// Inputs that make stored, fixed and dynamic blocks, short and long distances, windows
    /// that wrap and stored blocks of the largest size.
    fn samples() -> Vec<(String, Vec<u8>)> {
        let mut random = Random(0x5eed);
        let chat: Vec<u8> = (0..400)
            .flat_map(|n| {
                format!(
                    r#"{{"type":"message","room":"r{}","user":"u{}","text":"hello {}","ts":{}}}"#,
                    n % 7,
                    n % 13,
                    n * 31 % 1000,
                    1_700_000_000 + n * 17
                )
                .into_bytes()
            })
            .collect();
        let mut mixed = Vec::new();
        while mixed.len() < 100_000 {
            let run = random.below(300);
            if random.below(2) == 0 {
                mixed.extend(random.bytes(run));
            } else {
                let start = mixed.len().saturating_sub(random.below(40_000) + 1);
                let end = (start + run).min(mixed.len());
                mixed.extend_from_within(start..end);
            }
        }
        vec![
            ("empty".into(), Vec::new()),
            ("one byte".into(), vec![42]),
            ("short text".into(), b"hello, wsfleet".to_vec()),
            ("random 1000".into(), random.bytes(1000)),
            ("random 70000".into(), random.bytes(70_000)),
            ("chat json 1 KB".into(), chat[..1024].to_vec()),
            ("chat json".into(), chat),
            ("zeros 100000".into(), vec![0; 100_000]),
            ("pattern".into(), b"abcabcabd".repeat(5000)),
            ("mixed".into(), mixed),
        ]
    }

    #[test]
    fn counts_what_zlib_inflates_at_every_level() {
        for (name, data) in samples() {
            for level in 0..=9 {
                for (flush, ends) in [(FlushCompress::Finish, true), (FlushCompress::Sync, false)] {
                    let stream = compress(&data, level, flush);
                    let case = format!("{name}, level {level}, {flush:?}");
                    assert_eq!(counted(&[&stream]), Ok((data.len() as u64, ends)), "{case}");
                    assert_eq!(zlib(&stream), Ok((data.len() as u64, ends)), "{case}");
                }
            }
        }
    }

    #[test]
    fn any_cut_into_pieces_counts_the_same() {
        for (name, data) in samples() {
            for level in [0, 1, 6, 9] {
                let stream = compress(&data, level, FlushCompress::Finish);
                let expected = Ok((data.len() as u64, true));
                if stream.len() < 400 {
                    for cut in 0..=stream.len() {
                        let (head, tail) = stream.split_at(cut);
                        assert_eq!(counted(&[head, tail]), expected, "{name} {level} cut {cut}");
                    }
                }
                for piece in [1, 2, 3, 7, 64, 1000] {
                    let pieces: Vec<&[u8]> = stream.chunks(piece).collect();
                    assert_eq!(
                        counted(&pieces),
                        expected,
                        "{name} {level} pieces of {piece}"
                    );
                }
            }
        }
    }

    /// One compressor for all messages, a sync flush after each and its tail left off, as a
    /// permessage-deflate sender with context takeover does.
    #[test]
    fn messages_refer_back_into_earlier_ones_with_context_takeover() {
        let mut random = Random(7);
        let mut compress = Compress::new(Compression::default(), false);
        let mut counter = InflatedLength::new();
        let mut messages = Vec::new();
        for n in 0..200 {
            let len = [1, 50, 1000, 40_000, 2][n % 5];
            let text: Vec<u8> = (0..len).map(|_| b"wsfleet "[random.below(8)]).collect();
            let mut wire = Vec::with_capacity(len + 1024);
            compress
                .compress_vec(&text, &mut wire, FlushCompress::Sync)
                .unwrap();
            assert!(wire.ends_with(&[0, 0, 0xff, 0xff]));
            let mut inflated = 0;
            // The tail is added back at the end of the message, as the receiver does.
            let body = &wire[..wire.len() - 4];
            for piece in [
                &body[..body.len() / 2],
                &body[body.len() / 2..],
                &wire[wire.len() - 4..],
            ] {
                let progress = counter.count(piece, &mut inflated, u64::MAX);
                assert_eq!(progress, Ok(Progress::NeedsInput), "message {n}");
            }
            assert_eq!(inflated, len as u64, "message {n}");
            assert!(counter.bits.len() == 0 && matches!(counter.stage, Stage::BlockHeader));
            messages.push(wire);
        }
        // Alone, a later message reaches before the start of its stream: zlib refuses it too.
        let alone = &messages[6];
        assert_eq!(counted(&[alone]), Err(InflateError::Corrupt));
        assert_eq!(zlib(alone), Err(()));
        assert_agrees_with_zlib(&messages.concat()[..20_000], "messages in one stream");
    }

    #[test]
    fn a_bomb_is_cut_at_the_limit() {
        let bomb = compress(&vec![0; 10_000_000], 9, FlushCompress::Finish);
        assert!(bomb.len() < 20_000);
        let mut counter = InflatedLength::new();
        let mut inflated = 0;
        assert_eq!(
            counter.count(&bomb, &mut inflated, 65_536),
            Err(InflateError::TooBig)
        );
        assert!((65_537..=65_536 + 258).contains(&inflated), "{inflated}");
    }

    /// Random damage to real streams: the counter refuses, counts and ends as zlib does.
    #[test]
    fn damaged_streams_are_refused_as_zlib_refuses_them() {
        let mut random = Random(99);
        let streams: Vec<Vec<u8>> = samples()
            .iter()
            .filter(|(_, data)| data.len() < 5000 && !data.is_empty())
            .flat_map(|(_, data)| {
                [1, 6, 9].map(|level| compress(data, level, FlushCompress::Finish))
            })
            .collect();
        for round in 0..3000 {
            let mut stream = streams[round % streams.len()].clone();
            for _ in 0..=random.below(3) {
                let at = random.below(stream.len());
                match random.below(3) {
                    0 => stream[at] ^= 1 << random.below(8),
                    1 => stream[at] = random.next() as u8,
                    _ => stream.truncate(at + 1),
                }
            }
            let ours = counted(&[&stream]).map_err(|_| ());
            assert_eq!(ours, zlib(&stream), "round {round}: {stream:02x?}");
        }
    }

    /// Writes a DEFLATE stream bit by bit.
    #[derive(Default)]
    struct Bits {
        bytes: Vec<u8>,
        len: usize,
    }

    impl Bits {
        /// `count` bits of `value`, least significant first (header fields, extra bits).
        fn field(mut self, value: u32, count: u32) -> Self {
            for bit in 0..count {
                if self.len.is_multiple_of(8) {
                    self.bytes.push(0);
                }
                let bit = value.checked_shr(bit).unwrap_or(0) & 1;
                *self.bytes.last_mut().unwrap() |= (bit as u8) << (self.len % 8);
                self.len += 1;
            }
            self
        }

        /// A Huffman code of `count` bits, most significant first.
        fn code(self, code: u32, count: u32) -> Self {
            self.field(code.reverse_bits() >> (32 - count), count)
        }

        fn block(self, last: bool, kind: u32) -> Self {
            self.field(last.into(), 1).field(kind, 2)
        }

        /// A final dynamic block's header giving these code lengths, each written through a
        /// code length code in which the lengths 0 to 15 have 4-bit codes.
        fn dynamic(self, literals: &[u8], distances: &[u8]) -> Self {
            let mut bits = self
                .block(true, 2)
                .field(literals.len() as u32 - 257, 5)
                .field(distances.len() as u32 - 1, 5)
                .field(15, 4);
            for symbol in CODE_LENGTH_ORDER {
                bits = bits.field(if symbol < 16 { 4 } else { 0 }, 3);
            }
            for &len in literals.iter().chain(distances) {
                bits = bits.code(len.into(), 4);
            }
            bits
        }

        fn bytes(self) -> Vec<u8> {
            self.bytes
        }
    }

    /// Literal/length code lengths with end-of-block and `with` set.
    fn literals(with: &[(usize, u8)]) -> Vec<u8> {
        let mut lengths = vec![0; 257];
        for &(symbol, len) in with {
            if symbol >= lengths.len() {
                lengths.resize(symbol + 1, 0);
            }
            lengths[symbol] = len;
        }
        lengths
    }

    #[test]
    fn corrupt_data_is_refused_where_zlib_refuses_it() {
        let fixed = || Bits::default().block(true, 1);
        // Fixed codes: literal 'a' is 0x30 + 0x61 in 8 bits, length 3 is 1 in 7 bits.
        let literal_a = |bits: Bits| bits.code(0x30 + 0x61, 8);
        let length_3 = |bits: Bits| bits.code(1, 7);
        // A dynamic block's header whose code length code has two 1-bit codes: length 0 (code
        // 0) and `second` (code 1).
        let with_code_length_code = |second: usize| {
            let given = CODE_LENGTH_ORDER
                .iter()
                .position(|&s| s == second)
                .unwrap()
                .max(3);
            let mut bits = Bits::default()
                .block(true, 2)
                .field(0, 5)
                .field(0, 5)
                .field(given as u32 + 1 - 4, 4);
            for &symbol in &CODE_LENGTH_ORDER[..=given] {
                bits = bits.field(u32::from(symbol == 0 || symbol == second), 3);
            }
            bits
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("block type 3", Bits::default().block(true, 3).bytes()),
            (
                "stored LEN and NLEN that do not match",
                [
                    Bits::default().block(true, 0).bytes(),
                    vec![5, 0, 0xfb, 0xff, 1, 2, 3],
                ]
                .concat(),
            ),
            (
                "too many literal/length codes",
                Bits::default()
                    .block(true, 2)
                    .field(30, 5)
                    .field(0, 5)
                    .field(0, 4)
                    .bytes(),
            ),
            (
                "too many distance codes",
                Bits::default()
                    .block(true, 2)
                    .field(0, 5)
                    .field(30, 5)
                    .field(0, 4)
                    .bytes(),
            ),
            (
                "an over-subscribed code length code",
                Bits::default()
                    .block(true, 2)
                    .field(0, 14)
                    .field(1, 3)
                    .field(1, 3)
                    .field(1, 3)
                    .field(0, 3)
                    .bytes(),
            ),
            (
                "an incomplete code length code",
                Bits::default()
                    .block(true, 2)
                    .field(0, 14)
                    .field(1, 3)
                    .field(0, 9)
                    .bytes(),
            ),
            (
                "no code length code at all",
                Bits::default()
                    .block(true, 2)
                    .field(0, 14)
                    .field(0, 12)
                    .field(0, 300)
                    .bytes(),
            ),
            (
                "a repeat with no previous length",
                with_code_length_code(16).code(1, 1).field(0, 2).bytes(),
            ),
            (
                "a repeat past the last length",
                with_code_length_code(18)
                    .code(1, 1)
                    .field(127, 7)
                    .code(1, 1)
                    .field(127, 7)
                    .bytes(),
            ),
            (
                "no end-of-block code",
                with_code_length_code(18)
                    .code(1, 1)
                    .field(127, 7)
                    .code(1, 1)
                    .field(109, 7)
                    .bytes(),
            ),
            (
                "an over-subscribed literal/length code",
                Bits::default()
                    .dynamic(&literals(&[(0, 1), (1, 1), (256, 1)]), &[1])
                    .bytes(),
            ),
            (
                "an incomplete literal/length code",
                Bits::default()
                    .dynamic(&literals(&[(65, 2), (256, 2)]), &[1])
                    .bytes(),
            ),
            (
                "an over-subscribed distance code",
                Bits::default()
                    .dynamic(&literals(&[(256, 1)]), &[1, 1, 1])
                    .bytes(),
            ),
            (
                "an incomplete distance code",
                Bits::default()
                    .dynamic(&literals(&[(256, 1)]), &[2, 2, 2])
                    .bytes(),
            ),
            (
                "a missing code in a one-bit literal/length code",
                Bits::default()
                    .dynamic(&literals(&[(256, 1)]), &[1])
                    .code(1, 1)
                    .bytes(),
            ),
            (
                "a distance with no distance code",
                Bits::default()
                    .dynamic(&literals(&[(97, 2), (256, 2), (257, 1)]), &[0])
                    .code(0b10, 2)
                    .code(0, 1)
                    .code(0, 1)
                    .bytes(),
            ),
            (
                "a missing code in a one-bit distance code",
                Bits::default()
                    .dynamic(&literals(&[(97, 2), (256, 2), (257, 1)]), &[1])
                    .code(0b10, 2)
                    .code(0, 1)
                    .code(1, 1)
                    .bytes(),
            ),
            ("literal/length symbol 286", fixed().code(0xc6, 8).bytes()),
            ("literal/length symbol 287", fixed().code(0xc7, 8).bytes()),
            (
                "distance symbol 30",
                length_3(literal_a(fixed())).code(30, 5).bytes(),
            ),
            (
                "distance symbol 31",
                length_3(literal_a(fixed())).code(31, 5).bytes(),
            ),
            (
                "a distance before the start",
                length_3(literal_a(fixed())).code(1, 5).bytes(),
            ),
            (
                "a distance with no history",
                length_3(fixed()).code(0, 5).bytes(),
            ),
        ];
        for (case, stream) in cases {
            assert_eq!(counted(&[&stream]), Err(InflateError::Corrupt), "{case}");
            assert_agrees_with_zlib(&stream, case);
        }
        // The same shapes, valid: a distance of exactly the history, a single distance code.
        let valid: Vec<(&str, Vec<u8>, u64)> = vec![
            (
                "a distance of exactly the history",
                length_3(literal_a(fixed())).code(0, 5).code(0, 7).bytes(),
                4,
            ),
            (
                "a one-bit distance code",
                Bits::default()
                    .dynamic(&literals(&[(97, 2), (256, 2), (257, 1)]), &[1])
                    .code(0b10, 2)
                    .code(0, 1)
                    .code(0, 1)
                    .code(0b11, 2)
                    .bytes(),
                4,
            ),
            (
                "an empty stored block, then a fixed one",
                [
                    Bits::default().block(false, 0).bytes(),
                    vec![0, 0, 0xff, 0xff],
                    literal_a(fixed()).code(0, 7).bytes(),
                ]
                .concat(),
                1,
            ),
        ];
        for (case, stream, len) in valid {
            assert_eq!(counted(&[&stream]), Ok((len, true)), "{case}");
            assert_agrees_with_zlib(&stream, case);
        }
    }

    /// Between messages the counter is a few words; a dynamic block's codes are boxed.
    #[test]
    fn the_state_is_small() {
        assert!(
            size_of::<InflatedLength>() <= 40,
            "{}",
            size_of::<InflatedLength>()
        );
        assert!(size_of::<Codes>() < 1024, "{}", size_of::<Codes>());
        assert!(size_of::<Header>() < 512, "{}", size_of::<Header>());
    }
}
