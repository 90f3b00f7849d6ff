//! The frame tracker over arbitrary bytes cut into arbitrary reads, fed the way the relay
//! feeds it (held-back bytes restored in front of each read; after a violation, only while the
//! tracker is discarding). Checks what `Processed` promises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsfleet_fuzz::{TrackerSetup, chunks, new_tracker, split_input};
use wsfleet_gateway::relay::tracker::{CARRY_ROOM, Tracker, Violation};

fuzz_target!(|input: &[u8]| {
    let Some((setup, bytes)) = split_input::<TrackerSetup>(input) else {
        return;
    };
    let reads = chunks(bytes, &setup.read_sizes);
    let chunked = relay(&setup, &reads);

    // Without a rate (which reads the clock) or a stop (which depends on where reads end),
    // the result must not depend on how the bytes were cut.
    if setup.message_rate.is_none() && setup.stop_before_read.is_none() && reads.len() > 1 {
        let whole = relay(&setup, &[bytes]);
        assert_eq!(chunked, whole, "the cut into reads changed the result");
    }
});

/// What a direction of the relay ends up with.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    forwarded: Vec<u8>,
    violation: Option<Violation>,
    /// Tracker state at the end; `None` after a protocol violation (framing is lost).
    state: Option<(bool, u64, bool)>,
}

fn relay(setup: &TrackerSetup, reads: &[&[u8]]) -> Outcome {
    let mut tracker = new_tracker(setup.source(), setup.max_message_bytes.into(), setup.rate());
    let input_len: usize = reads.iter().map(|read| read.len()).sum();
    let mut forwarded = Vec::new();
    let mut violation = None;
    let mut messages = 0u64;
    let mut close_seen = false;
    let mut buf = Vec::new();
    for (index, read) in reads.iter().enumerate() {
        if setup.stop_before_read == Some(index as u8) {
            tracker.stop_at_next_frame();
        }
        if violation.is_some() && !tracker.discarding() {
            // The relay stops reading this direction (a protocol violation).
            break;
        }
        let discarding = tracker.discarding();
        let processed = process(&mut tracker, &mut buf, read);
        assert!(
            processed.forward <= buf.len(),
            "forwards more than it was given"
        );
        if discarding {
            assert_eq!(processed.forward, 0, "forwarded while discarding");
        }
        if violation.is_some() {
            assert_eq!(processed.forward, 0, "forwarded after a violation");
            assert_eq!(processed.violation, None, "a second violation");
        }
        forwarded.extend_from_slice(&buf[..processed.forward]);
        if processed.violation.is_some() {
            violation = processed.violation;
        }
        // Once seen, a close stays seen.
        assert!(!close_seen || tracker.close_seen());
        close_seen = tracker.close_seen();
        messages += tracker.take_messages();
    }
    assert!(forwarded.len() <= input_len, "forwards more than it read");
    assert!(
        is_subsequence(&forwarded, reads),
        "forwarded bytes that were not read, or reordered them"
    );
    // Every message ends with a frame of at least a 2-byte header.
    assert!(
        messages <= input_len as u64 / 2,
        "more messages than frames"
    );
    let state = match violation {
        Some(Violation::Protocol(_)) => None,
        _ => Some((tracker.close_seen(), messages, tracker.at_frame_boundary())),
    };
    Outcome {
        forwarded,
        violation,
        state,
    }
}

/// One read the way the relay does it: restores held-back bytes in front of `read` and
/// processes both; `buf` holds the bytes to forward at its front afterwards.
fn process(
    tracker: &mut Tracker,
    buf: &mut Vec<u8>,
    read: &[u8],
) -> wsfleet_gateway::relay::tracker::Processed {
    let mut room = vec![0u8; CARRY_ROOM + read.len()];
    let start = tracker.restore_carry(&mut room[..CARRY_ROOM]);
    room[CARRY_ROOM..].copy_from_slice(read);
    let processed = tracker.process(&mut room[start..]);
    buf.clear();
    buf.extend_from_slice(&room[start..]);
    processed
}

/// True when `output` is `reads` (concatenated) with some bytes left out.
fn is_subsequence(output: &[u8], reads: &[&[u8]]) -> bool {
    let mut wanted = output.iter().peekable();
    for byte in reads.iter().flat_map(|read| read.iter()) {
        if wanted.peek() == Some(&byte) {
            wanted.next();
        }
    }
    wanted.peek().is_none()
}
