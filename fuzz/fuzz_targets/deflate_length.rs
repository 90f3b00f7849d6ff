//! The inflated-length counter of compressed messages against zlib (flate2 over zlib-rs, a port
//! of zlib): arbitrary bytes compressed at an arbitrary level and cut into arbitrary pieces
//! count to their own length; arbitrary bytes taken as a raw DEFLATE stream count to what zlib
//! inflates them to, end where zlib's stream ends, are corrupt exactly when zlib says so, and
//! too big exactly when zlib inflates more than the limit before any error.
#![no_main]

use std::cell::RefCell;

use arbitrary::Arbitrary;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use libfuzzer_sys::fuzz_target;
use wsfleet_fuzz::{ReadSizes, chunks, split_input};
use wsfleet_gateway::wire::deflate::InflateError;
use wsfleet_gateway::wire::deflate::length::{InflatedLength, Progress};

/// The limit of streams taken as they are: past the 32 KiB window, so distances reach into
/// output that has wrapped, while a bomb costs zlib little to inflate.
const LIMIT: u64 = 64 * 1024;

/// How the target takes its bytes.
#[derive(Debug, Arbitrary)]
struct DeflateSetup {
    /// `Some((level, sync_flush))`: the bytes are data to compress at `level % 10`, ending in a
    /// sync flush as permessage-deflate does or in a final block; `None`: they are a stream.
    compress: Option<(u8, bool)>,
    /// How the stream is cut into the counter's pieces.
    read_sizes: ReadSizes,
}

fuzz_target!(|input: &[u8]| {
    let Some((setup, bytes)) = split_input::<DeflateSetup>(input) else {
        return;
    };
    match setup.compress {
        Some((level, sync_flush)) => {
            let stream = compress(bytes, u32::from(level % 10), sync_flush);
            let counted = count(&chunks(&stream, &setup.read_sizes), u64::MAX);
            assert_eq!(counted, Ok((bytes.len() as u64, !sync_flush)));
        }
        None => {
            let counted = count(&chunks(bytes, &setup.read_sizes), LIMIT);
            assert_eq!(counted, zlib(bytes), "the counter and zlib disagree");
        }
    }
});

/// The inflated length and whether the final block ended, or why the stream is refused.
type Outcome = Result<(u64, bool), InflateError>;

fn count(pieces: &[&[u8]], limit: u64) -> Outcome {
    let mut counter = InflatedLength::new();
    let mut inflated = 0;
    let mut ended = false;
    for piece in pieces {
        ended = counter.count(piece, &mut inflated, limit)? == Progress::StreamEnded;
    }
    Ok((inflated, ended))
}

thread_local! {
    /// zlib's state is hundreds of kilobytes: kept from one run to the next, and reset.
    static DECOMPRESS: RefCell<(Decompress, Vec<u8>)> =
        RefCell::new((Decompress::new(false), vec![0; 64 * 1024]));
    static COMPRESS: RefCell<Vec<Compress>> = RefCell::new(
        (0..10)
            .map(|level| Compress::new(Compression::new(level), false))
            .collect(),
    );
}

/// What zlib inflates `stream` to (a raw stream, 32 KiB window, no preset dictionary) as far as
/// [`LIMIT`]: zlib counts its output before an error too, so more than the limit is too big
/// whatever follows.
fn zlib(stream: &[u8]) -> Outcome {
    DECOMPRESS.with_borrow_mut(|(decoder, output)| {
        decoder.reset(false);
        loop {
            let (read, written) = (decoder.total_in(), decoder.total_out());
            let result =
                decoder.decompress(&stream[read as usize..], output, FlushDecompress::None);
            if decoder.total_out() > LIMIT {
                return Err(InflateError::TooBig);
            }
            let status = result.map_err(|_| InflateError::Corrupt)?;
            if status == Status::StreamEnd {
                return Ok((decoder.total_out(), true));
            }
            if decoder.total_in() == read && decoder.total_out() == written {
                return Ok((decoder.total_out(), false));
            }
        }
    })
}

fn compress(data: &[u8], level: u32, sync_flush: bool) -> Vec<u8> {
    let flush = if sync_flush {
        FlushCompress::Sync
    } else {
        FlushCompress::Finish
    };
    COMPRESS.with_borrow_mut(|compressors| {
        let compress = &mut compressors[level as usize];
        compress.reset();
        let mut out = Vec::new();
        loop {
            out.reserve(data.len() + 1024);
            let read = compress.total_in() as usize;
            let status = compress
                .compress_vec(&data[read..], &mut out, flush)
                .unwrap();
            let all_in = compress.total_in() as usize == data.len();
            match flush {
                FlushCompress::Finish if status == Status::StreamEnd => return out,
                FlushCompress::Sync if all_in && out.len() < out.capacity() => return out,
                _ => {}
            }
        }
    })
}
