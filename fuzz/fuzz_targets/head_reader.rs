//! The incremental head reader (`handshake::read_head`) over arbitrary bytes arriving in
//! arbitrary reads: it must find the same head whatever the reads, and respect its limit.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};
use wsfleet_fuzz::{HeadSetup, chunks, split_input};
use wsfleet_gateway::wire::handshake::{HeadError, read_head};

fuzz_target!(|input: &[u8]| {
    let Some((setup, bytes)) = split_input::<HeadSetup>(input) else {
        return;
    };
    let max = usize::from(setup.max_bytes);
    let mut stream = Reads {
        reads: chunks(bytes, &setup.read_sizes),
        at: 0,
    };
    let mut reading = std::pin::pin!(read_head(&mut stream, max));
    let mut cx = Context::from_waker(Waker::noop());
    // The stream is always ready, so the reader finishes without waiting.
    let Poll::Ready(result) = reading.as_mut().poll(&mut cx) else {
        panic!("read_head waited on a stream that is always ready");
    };

    let end = bytes
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 4);
    match (result, end) {
        (Ok(head), Some(end)) if end <= max => {
            assert_eq!(head.head, &bytes[..end]);
            assert!(
                bytes[end..].starts_with(&head.rest),
                "bytes after the head are lost or changed"
            );
            assert!(end + head.rest.len() <= max + 1, "read past the limit");
        }
        (Err(HeadError::TooLarge(limit)), _) if bytes.len() > max => {
            assert_eq!(limit, max);
            assert!(end.is_none_or(|end| end > max));
        }
        (Err(HeadError::Closed), None) if bytes.len() <= max => {}
        (result, end) => panic!(
            "{:?} for {} bytes, head end {end:?}, limit {max}",
            result.map(|head| (head.head.len(), head.rest.len())),
            bytes.len()
        ),
    }
});

/// A stream that hands out the given reads, cut further when the reader offers less room.
struct Reads<'a> {
    reads: Vec<&'a [u8]>,
    at: usize,
}

impl AsyncRead for Reads<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let at = self.at;
        if let Some(read) = self.reads.get_mut(at) {
            let take = read.len().min(buf.remaining());
            buf.put_slice(&read[..take]);
            *read = &read[take..];
            if read.is_empty() {
                self.at += 1;
            }
        }
        Poll::Ready(Ok(()))
    }
}
