//! The PROXY protocol header parser (`proxy_protocol::parse`) over arbitrary bytes: it never
//! panics, a header it accepts keeps to the specification's bounds, a full view always gets
//! an answer, and more bytes never change an answer once given (the reader peeks again
//! only while the answer is "incomplete").
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsfleet_gateway::wire::proxy_protocol::{PEEK_BYTES, parse};

fuzz_target!(|bytes: &[u8]| {
    let full = parse(bytes);
    if let Ok(Some(header)) = full {
        if bytes[0] == b'P' {
            assert!(header.length <= 107, "a v1 line of {}", header.length);
            assert!(bytes[..header.length].ends_with(b"\r\n"));
        } else {
            assert!((16..=16 + 65535).contains(&header.length));
        }
    }
    if bytes.len() >= PEEK_BYTES {
        assert_ne!(full, Ok(None), "a full view left undecided");
    }
    for end in 0..bytes.len().min(PEEK_BYTES) {
        let early = parse(&bytes[..end]);
        assert!(
            early == Ok(None) || early == full,
            "{early:?} after {end} bytes, {full:?} after {}",
            bytes.len()
        );
    }
});
