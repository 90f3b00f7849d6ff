//! One direction of the relay: reads from its source into a per-thread buffer, has the frame
//! tracker check the bytes in place, and writes them to its destination, keeping on the heap
//! only what the destination cannot take yet. It also sends the gateway's own pings and closes
//! at frame boundaries.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll, ready};

use rustls::crypto::SecureRandom;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::relay::outcome::Traffic;
use crate::relay::tracker::{CARRY_ROOM, HEARTBEAT_PAYLOAD, Source, Tracker, Violation};
use crate::telemetry::metrics::Direction;
use crate::wire::frame::ControlFrame;
use crate::wire::transport::Transport;

/// Largest single read; a TLS record carries at most 16 KiB too.
const READ_SIZE: usize = 16 * 1024;
/// Most a client may still send after the gateway's close frame while the gateway waits for
/// its close frame; beyond it the gateway ends its side of the connection without waiting.
const CLOSE_DISCARD_LIMIT: usize = 64 * 1024;

thread_local! {
    static READ_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; CARRY_ROOM + READ_SIZE]);
}

/// A masking key for frames the gateway sends upstream. RFC 6455 section 5.3 asks for a
/// strong source of entropy: the operating system's CSPRNG, through ring's `SystemRandom` in
/// the rustls provider the gateway links for TLS already.
fn mask_key() -> [u8; 4] {
    static SECURE_RANDOM: LazyLock<&'static dyn SecureRandom> =
        LazyLock::new(|| rustls::crypto::ring::default_provider().secure_random);
    let mut key = [0; 4];
    SECURE_RANDOM
        .fill(&mut key)
        .expect("the operating system's random source failed: no masking key for a frame");
    key
}

/// A frame of the gateway's own, encoded only when it goes out (it is rare; the encoded form
/// is ten times larger).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GatewayFrame {
    Ping,
    Close { code: u16, reason: &'static str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Reading, checking and forwarding frames.
    Forward,
    /// Past the gateway's close: reading and dropping until the source ends.
    Discard,
    /// The source ended; once the destination is flushed and shut, the lane is finished.
    Ended,
}

/// Something the relay must react to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LaneEvent {
    /// The source's close frame passed, with its code (`None`: it passed unread after a
    /// violation).
    CloseSeen {
        code: Option<u16>,
    },
    /// The source ended (EOF or error); `close_seen` tells whether it said goodbye first.
    SourceClosed {
        close_seen: bool,
    },
    /// The destination cannot be written.
    DestinationFailed,
    Violation(Violation),
}

/// One direction of the relay.
#[derive(Debug)]
pub(super) struct Lane {
    pub(super) tracker: Tracker,
    pub(super) direction: Direction,
    /// Handshake leftovers, processed before the first read.
    pub(super) early: Vec<u8>,
    /// Checked bytes the destination has not taken yet; empty (no allocation) when keeping up.
    pub(super) pending: Vec<u8>,
    pub(super) written: usize,
    pub(super) needs_flush: bool,
    /// A frame of the gateway's own, sent at the next frame boundary.
    pub(super) control: Option<GatewayFrame>,
    pub(super) mode: Mode,
    pub(super) destination_shut: bool,
    /// Keeps the destination open: the client until its close frame has come the other way,
    /// the upstream until it has ended its stream.
    pub(super) shutdown_held: bool,
    /// Bytes read and dropped in [`Mode::Discard`].
    pub(super) discarded: usize,
    /// Bytes forwarded since the counters were last flushed.
    pub(super) bytes: u64,
    /// Everything flushed so far, for the connection's access log line.
    pub(super) relayed: Traffic,
    /// Set on every read; the heartbeat takes it.
    pub(super) activity: bool,
}

impl Lane {
    pub(super) fn new(tracker: Tracker, direction: Direction, early: Vec<u8>) -> Self {
        Self {
            tracker,
            direction,
            early,
            pending: Vec::new(),
            written: 0,
            needs_flush: false,
            control: None,
            mode: Mode::Forward,
            destination_shut: false,
            shutdown_held: false,
            discarded: 0,
            bytes: 0,
            relayed: Traffic::default(),
            activity: false,
        }
    }

    pub(super) fn stop(&mut self) {
        if self.mode == Mode::Forward {
            self.tracker.stop_at_next_frame();
        }
    }

    /// The source's close frame has been passed on, and nothing is left to write.
    pub(super) fn close_delivered(&self) -> bool {
        self.tracker.close_seen()
            && self.pending.is_empty()
            && !self.needs_flush
            && self.control.is_none()
    }

    /// Ends the lane after the closing handshake: nothing more is read. A plain TCP destination
    /// needs no shutdown, as closing the socket sends the same FIN; TLS still sends close_notify.
    /// True when this ended the lane and its destination is still to be shut.
    pub(super) fn end_after_close(&mut self, destination: &Transport) -> bool {
        let was_ended = std::mem::replace(&mut self.mode, Mode::Ended) == Mode::Ended;
        if matches!(destination, Transport::Plain(_)) {
            self.destination_shut = true;
        }
        !was_ended && !self.destination_shut
    }

    /// True once waiting for this source's close frame is over: it came, the source ended, or
    /// the source sent more than [`CLOSE_DISCARD_LIMIT`] without it. ([`CLOSE_LINGER`] bounds
    /// the wait in time.)
    pub(super) fn close_wait_over(&self) -> bool {
        self.tracker.close_seen()
            || self.mode == Mode::Ended
            || self.discarded > CLOSE_DISCARD_LIMIT
    }

    pub(super) fn is_finished(&self) -> bool {
        self.mode == Mode::Ended
            && self.destination_shut
            && self.pending.is_empty()
            && !self.needs_flush
    }

    pub(super) fn pump(
        &mut self,
        cx: &mut Context<'_>,
        source: &mut Transport,
        destination: &mut Transport,
    ) -> Poll<LaneEvent> {
        loop {
            if self.destination_shut && self.mode == Mode::Ended {
                return Poll::Pending;
            }
            if self.mode == Mode::Forward && self.tracker.stopped() {
                self.mode = Mode::Discard;
            }
            if let Err(event) = ready!(self.poll_drain(cx, destination)) {
                return Poll::Ready(event);
            }
            if (self.mode != Mode::Forward || self.tracker.at_frame_boundary())
                && let Some(frame) = self.control.take()
            {
                // Frames towards the upstream are masked: there the gateway is the client.
                let mask = (self.tracker.source() == Source::Client).then(mask_key);
                let encoded = match frame {
                    GatewayFrame::Ping => ControlFrame::ping(HEARTBEAT_PAYLOAD, mask),
                    GatewayFrame::Close { code, reason } => ControlFrame::close(code, reason, mask),
                };
                self.pending.extend_from_slice(encoded.as_bytes());
                continue;
            }
            if self.mode != Mode::Forward && !self.destination_shut && !self.shutdown_held {
                // The other side learns of the end; errors mean it is gone already.
                let _ = ready!(Pin::new(&mut *destination).poll_shutdown(cx));
                self.destination_shut = true;
                continue;
            }
            if self.mode == Mode::Ended {
                // Nothing left to read; the relay releases the held destination.
                return Poll::Pending;
            }
            if let Some(event) = ready!(self.poll_read_and_forward(cx, source, destination)) {
                return Poll::Ready(event);
            }
        }
    }

    /// Writes pending bytes and flushes; `Err` when the destination failed.
    fn poll_drain(
        &mut self,
        cx: &mut Context<'_>,
        destination: &mut Transport,
    ) -> Poll<Result<(), LaneEvent>> {
        while self.written < self.pending.len() {
            match ready!(Pin::new(&mut *destination).poll_write(cx, &self.pending[self.written..]))
            {
                Ok(written) if written > 0 => {
                    self.written += written;
                    self.needs_flush = true;
                }
                _ => return Poll::Ready(Err(self.destination_failed())),
            }
        }
        if !self.pending.is_empty() {
            // Give the memory back: a connection that caught up holds no buffer.
            self.pending = Vec::new();
            self.written = 0;
        }
        if self.needs_flush {
            if ready!(Pin::new(&mut *destination).poll_flush(cx)).is_err() {
                return Poll::Ready(Err(self.destination_failed()));
            }
            self.needs_flush = false;
        }
        Poll::Ready(Ok(()))
    }

    fn destination_failed(&mut self) -> LaneEvent {
        self.pending = Vec::new();
        self.written = 0;
        self.needs_flush = false;
        self.destination_shut = true;
        self.control = None;
        if self.mode == Mode::Forward {
            self.mode = Mode::Discard;
        }
        LaneEvent::DestinationFailed
    }

    /// Reads once, checks the frames and writes what the destination takes at once.
    fn poll_read_and_forward(
        &mut self,
        cx: &mut Context<'_>,
        source: &mut Transport,
        destination: &mut Transport,
    ) -> Poll<Option<LaneEvent>> {
        READ_BUFFER.with_borrow_mut(|buf| {
            let start = self.tracker.restore_carry(&mut buf[..CARRY_ROOM]);
            let read = if self.early.is_empty() {
                let mut read_buf = ReadBuf::new(&mut buf[CARRY_ROOM..]);
                match Pin::new(&mut *source).poll_read(cx, &mut read_buf) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) => read_buf.filled().len(),
                    Poll::Ready(Err(_)) => 0,
                }
            } else {
                let take = self.early.len().min(READ_SIZE);
                buf[CARRY_ROOM..CARRY_ROOM + take].copy_from_slice(&self.early[..take]);
                self.early.drain(..take);
                if self.early.is_empty() {
                    self.early = Vec::new();
                }
                take
            };
            if read == 0 {
                let was_forwarding = self.mode == Mode::Forward;
                self.mode = Mode::Ended;
                return Poll::Ready(was_forwarding.then_some(LaneEvent::SourceClosed {
                    close_seen: self.tracker.close_seen(),
                }));
            }
            self.activity = true;
            if self.mode == Mode::Discard {
                if self.tracker.discarding() {
                    // Followed only to notice the peer's close frame; nothing is forwarded.
                    self.tracker.process(&mut buf[start..CARRY_ROOM + read]);
                }
                self.discarded = self.discarded.saturating_add(read);
                return Poll::Ready(None);
            }
            let closed = self.tracker.close_seen();
            let processed = self.tracker.process(&mut buf[start..CARRY_ROOM + read]);
            let output = &buf[start..start + processed.forward];
            // Once per connection at most: the source's close frame went out in this read.
            let close_seen = (!closed && self.tracker.close_seen()).then(|| LaneEvent::CloseSeen {
                code: self.tracker.close_code(),
            });
            // Only what is passed on counts: not a refused frame, nor what is swallowed.
            self.bytes += output.len() as u64;
            let mut written = 0;
            while written < output.len() {
                match Pin::new(&mut *destination).poll_write(cx, &output[written..]) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        written += n;
                        self.needs_flush = true;
                    }
                    Poll::Pending => break,
                    Poll::Ready(_) => return Poll::Ready(Some(self.destination_failed())),
                }
            }
            self.pending.extend_from_slice(&output[written..]);
            if let Some(violation) = processed.violation {
                self.mode = Mode::Discard;
                return Poll::Ready(Some(LaneEvent::Violation(violation)));
            }
            Poll::Ready(close_seen)
        })
    }
}
