//! The cost of `validation.utf8` per text message: the client lane's frame tracker over the
//! same masked frames with and without the check, in one run, so both see the same machine.
//!
//! `cargo bench -p wsfleet-gateway --bench utf8_check`

use std::hint::black_box;
use std::time::{Duration, Instant};

use wsfleet_gateway::relay::tracker::{CARRY_ROOM, Source, Tracker};

/// Bytes per read, as the relay reads.
const READ_SIZE: usize = 16 * 1024;
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// One masked, final text frame carrying `payload`.
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x81];
    match payload.len() {
        len @ 0..126 => frame.push(0x80 | len as u8),
        len => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        }
    }
    frame.extend_from_slice(&KEY);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    frame
}

/// Text like a JSON chat message, and the same with two, three and four byte characters.
const SAMPLES: [(&str, &str); 2] = [
    ("ascii", r#"{"room":"lobby","text":"hello there"},"#),
    ("mixed", r#"{"room":"lobby","text":"é 日本 𝄞"},"#),
];

/// Reads of [`READ_SIZE`] (or one frame, if larger) holding whole frames of `size` bytes of
/// `sample` repeated.
fn reads(sample: &str, size: usize) -> (Vec<Vec<u8>>, u64) {
    let mut text = String::with_capacity(size);
    for c in sample.chars().cycle() {
        if text.len() + c.len_utf8() > size {
            break;
        }
        text.push(c);
    }
    let frame = text_frame(text.as_bytes());
    let per_read = (READ_SIZE / frame.len()).max(1);
    let read: Vec<u8> = std::iter::repeat_n(frame, per_read).flatten().collect();
    let mut buf = vec![0; CARRY_ROOM];
    buf.extend(read);
    (vec![buf; 64], (64 * per_read) as u64)
}

/// Time per message to process `reads` `rounds` times.
fn per_message(reads: &mut [Vec<u8>], messages: u64, rounds: u32, check: bool) -> Duration {
    let mut tracker = Tracker::new(Source::Client, 1 << 20, None);
    if check {
        tracker = tracker.with_utf8_check();
    }
    let started = Instant::now();
    for _ in 0..rounds {
        for read in reads.iter_mut() {
            let processed = tracker.process(black_box(&mut read[CARRY_ROOM..]));
            black_box(processed);
        }
    }
    let took = started.elapsed();
    assert_eq!(tracker.take_messages(), messages * u64::from(rounds));
    took / u32::try_from(messages * u64::from(rounds)).unwrap()
}

fn main() {
    println!("text  | message bytes | unchecked ns/msg | checked ns/msg | ratio");
    for (kind, sample) in SAMPLES {
        for size in [32, 256, 1024, 4096, 16384] {
            measure(kind, sample, size);
        }
    }
}

/// Prints one row: the best of five alternating runs with and without the check.
fn measure(kind: &str, sample: &str, size: usize) {
    let (mut reads, messages) = reads(sample, size);
    let rounds = u32::try_from((200_000 / messages).max(20)).unwrap();
    // Warm up, then alternate so that drift in the machine's speed hits both alike.
    per_message(&mut reads, messages, rounds, true);
    let (mut unchecked, mut checked) = (Duration::MAX, Duration::MAX);
    for _ in 0..5 {
        unchecked = unchecked.min(per_message(&mut reads, messages, rounds, false));
        checked = checked.min(per_message(&mut reads, messages, rounds, true));
    }
    println!(
        "{kind} | {size:>13} | {:>16.1} | {:>14.1} | {:>5.2}",
        unchecked.as_nanos() as f64,
        checked.as_nanos() as f64,
        checked.as_secs_f64() / unchecked.as_secs_f64()
    );
}
