//! The floor: a relay that only moves bytes, driven by io_uring, so that it spends the least
//! CPU any proxy can spend per message on top of the kernel's TCP work.
//!
//! It parses nothing (the upgrade request and every frame pass through as bytes), keeps no
//! state but one buffer per direction, and submits all its sends and receives in one system
//! call per batch of completions instead of one per operation. Whatever CPU per message it
//! still needs is the kernel's share of every proxy's figure, which no proxy can remove. It
//! joins the stream and storm scenarios. Its upstream connect blocks, which on loopback costs
//! no more than a non-blocking one (the kernel completes the handshake within the call), and
//! its buffers are not sized for idle connections.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::Context as _;
use io_uring::{IoUring, cqueue, opcode, squeue, types};

/// Bytes one receive may take: a TLS record's worth, as the gateway reads.
const BUFFER_SIZE: usize = 16 * 1024;
/// Submission queue entries; twice this many completions fit before the kernel must wait.
const RING_ENTRIES: u32 = 4096;
/// `user_data` of the listener's multishot accept.
const ACCEPT: u64 = u64::MAX;

/// One proxied connection: the client, its upstream, and a lane for each direction.
struct Pair {
    client: TcpStream,
    upstream: TcpStream,
    /// Client to upstream, then upstream to client.
    lanes: [Lane; 2],
}

struct Lane {
    /// The kernel writes into it while a receive is in flight: it never moves or shrinks.
    buffer: Box<[u8]>,
    received: usize,
    sent: usize,
    /// The source ended or a side failed; no operation of this lane is in flight.
    done: bool,
}

impl Pair {
    /// The lane's source and destination.
    fn ends(&self, lane: usize) -> (&TcpStream, &TcpStream) {
        if lane == 0 {
            (&self.client, &self.upstream)
        } else {
            (&self.upstream, &self.client)
        }
    }
}

/// Which operation a completion belongs to: pair slot, lane, and receive or send.
fn tag(slot: usize, lane: usize, send: bool) -> u64 {
    ((slot as u64) << 2) | ((lane as u64) << 1) | u64::from(send)
}

fn untag(data: u64) -> (usize, usize, bool) {
    (
        (data >> 2) as usize,
        ((data >> 1) & 1) as usize,
        data & 1 == 1,
    )
}

/// The ring [`serve`] runs on. Set it up before the listener is bound, so that a kernel without
/// io_uring fails the start instead of accepting connections it cannot serve. The thread that
/// creates it is the only one that may submit to it.
pub fn ring() -> anyhow::Result<IoUring> {
    IoUring::builder()
        // One thread submits, and completions are reaped only when it asks: the cheapest mode.
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(RING_ENTRIES)
        .context("setting up io_uring (needs Linux 6.1 or later with io_uring enabled)")
}

/// Relays every connection `listener` accepts to `upstream` until the process is killed.
pub fn serve(mut ring: IoUring, listener: TcpListener, upstream: SocketAddr) -> anyhow::Result<()> {
    let mut floor = Floor {
        pairs: Vec::new(),
        free: Vec::new(),
        upstream,
    };
    let accept = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
        .build()
        .user_data(ACCEPT);
    push(&mut ring, &accept)?;
    let mut completions = Vec::new();
    loop {
        ring.submit_and_wait(1)
            .context("waiting for io_uring completions")?;
        completions.extend(
            ring.completion()
                .map(|entry| (entry.user_data(), entry.result(), entry.flags())),
        );
        for (data, result, flags) in completions.drain(..) {
            if data == ACCEPT {
                if result >= 0 {
                    // SAFETY: a successful accept completion carries a new descriptor we own.
                    #[allow(unsafe_code)]
                    let client = TcpStream::from(unsafe { OwnedFd::from_raw_fd(result) });
                    floor.open(&mut ring, client)?;
                }
                if !cqueue::more(flags) {
                    // The kernel ended the multishot accept (for example on an error): rearm.
                    push(&mut ring, &accept)?;
                }
            } else {
                floor.complete(&mut ring, data, result)?;
            }
        }
    }
}

struct Floor {
    /// Slots stay put while any of their operations is in flight.
    pairs: Vec<Option<Pair>>,
    free: Vec<usize>,
    upstream: SocketAddr,
}

impl Floor {
    fn open(&mut self, ring: &mut IoUring, client: TcpStream) -> anyhow::Result<()> {
        let upstream = match TcpStream::connect(self.upstream) {
            Ok(upstream) => upstream,
            Err(err) => {
                eprintln!("floor: connecting to {}: {err}", self.upstream);
                return Ok(());
            }
        };
        client.set_nodelay(true)?;
        upstream.set_nodelay(true)?;
        let lane = || Lane {
            buffer: vec![0; BUFFER_SIZE].into_boxed_slice(),
            received: 0,
            sent: 0,
            done: false,
        };
        let pair = Pair {
            client,
            upstream,
            lanes: [lane(), lane()],
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.pairs[slot] = Some(pair);
                slot
            }
            None => {
                self.pairs.push(Some(pair));
                self.pairs.len() - 1
            }
        };
        for lane in 0..2 {
            self.receive(ring, slot, lane)?;
        }
        Ok(())
    }

    /// Sends what the last receive brought, or receives again once it is all sent.
    fn complete(&mut self, ring: &mut IoUring, data: u64, result: i32) -> anyhow::Result<()> {
        let (slot, lane, was_send) = untag(data);
        let Some(pair) = self.pairs[slot].as_mut() else {
            return Ok(());
        };
        let Ok(moved @ 1..) = usize::try_from(result) else {
            // End of stream or an error: pass the end on, and free the pair once both ended.
            pair.lanes[lane].done = true;
            let _ = pair.ends(lane).1.shutdown(Shutdown::Write);
            if pair.lanes.iter().all(|lane| lane.done) {
                self.pairs[slot] = None;
                self.free.push(slot);
            }
            return Ok(());
        };
        let destination = pair.ends(lane).1.as_raw_fd();
        let state = &mut pair.lanes[lane];
        if was_send {
            state.sent += moved;
        } else {
            state.received = moved;
            state.sent = 0;
        }
        if state.sent < state.received {
            let unsent = &state.buffer[state.sent..state.received];
            // SAFETY: the buffer lives in the pair, which stays in its slot until this lane is
            // done, and the lane has no other operation in flight.
            let send =
                opcode::Send::new(types::Fd(destination), unsent.as_ptr(), unsent.len() as u32)
                    .build()
                    .user_data(tag(slot, lane, true));
            push(ring, &send)
        } else {
            self.receive(ring, slot, lane)
        }
    }

    fn receive(&mut self, ring: &mut IoUring, slot: usize, lane: usize) -> anyhow::Result<()> {
        let Some(pair) = self.pairs[slot].as_mut() else {
            return Ok(());
        };
        let source = pair.ends(lane).0.as_raw_fd();
        let buffer = &mut pair.lanes[lane].buffer;
        // SAFETY: as for sends; the receive is this lane's only operation in flight.
        let receive =
            opcode::Recv::new(types::Fd(source), buffer.as_mut_ptr(), buffer.len() as u32)
                .build()
                .user_data(tag(slot, lane, false));
        push(ring, &receive)
    }
}

/// Queues one operation, submitting the queue first if it is full.
#[allow(unsafe_code)] // io_uring cannot check the lifetime of the buffers an entry points to.
fn push(ring: &mut IoUring, entry: &squeue::Entry) -> anyhow::Result<()> {
    loop {
        // SAFETY: every buffer an entry points to outlives the operation (see the callers).
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        ring.submit().context("submitting to io_uring")?;
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    #[test]
    fn tags_round_trip() {
        for (slot, lane, send) in [(0, 0, false), (7, 1, true), (1 << 40, 1, false)] {
            assert_eq!(untag(tag(slot, lane, send)), (slot, lane, send));
        }
    }

    /// Bytes go through both ways unchanged, and an end of stream reaches the other side.
    #[test]
    fn relays_bytes_and_passes_the_end_on() {
        let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let floor_addr = listener.local_addr().unwrap();
        // Fails here, not as a hang below, where io_uring is not available.
        drop(ring().unwrap());
        std::thread::spawn(move || serve(ring().unwrap(), listener, upstream_addr));

        let mut client = TcpStream::connect(floor_addr).unwrap();
        let (mut server, _) = upstream.accept().unwrap();
        let large: Vec<u8> = (0..3 * BUFFER_SIZE).map(|i| (i % 251) as u8).collect();
        client.write_all(&large).unwrap();
        let mut arrived = vec![0; large.len()];
        server.read_exact(&mut arrived).unwrap();
        assert_eq!(arrived, large);

        server.write_all(b"reply").unwrap();
        server.shutdown(Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).unwrap();
        assert_eq!(reply, b"reply");
    }
}
