//! Relays frames between a client and its upstream after the handshake.
//!
//! Both directions run in one hand-written future. Each read lands in a per-thread buffer,
//! the frame tracker checks it in place, and the bytes go straight to the other side; only
//! bytes the other side cannot take yet are copied to a heap buffer, and while that buffer is
//! non-empty the direction stops reading, so a slow reader slows its writer instead of growing
//! memory. An idle connection holds no buffer at all.
//!
//! Close frames the gateway sends itself (limits, heartbeat timeout, drain, upstream failure)
//! wait for a frame boundary, then the connection lingers briefly for the peers' replies.
//!
//! Each lane is polled with a waker of its own, and the timer and the drain turn share a third,
//! so a message polls only the lane it arrived on (see [`crate::relay::wakes`]).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use rustls::crypto::SecureRandom;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::relay::tracker::{CARRY_ROOM, HEARTBEAT_PAYLOAD, Source, Tracker, Violation};
use crate::relay::wakes::{PartWakers, Parts};
use crate::telemetry::metrics::{ClosedBy, Direction, Metrics, UpstreamError};
use crate::wire::deflate::Negotiated;
use crate::wire::frame::ControlFrame;
use crate::wire::transport::Transport;
use wsfleet_config::{HeartbeatConfig, Rate};

/// Largest single read; a TLS record carries at most 16 KiB too.
const READ_SIZE: usize = 16 * 1024;
/// How long peers get to answer the gateway's close frame before the sockets are dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(3);
/// Most a client may still send after the gateway's close frame while the gateway waits for
/// its close frame; beyond it the gateway ends its side of the connection without waiting.
const CLOSE_DISCARD_LIMIT: usize = 64 * 1024;

/// The relay's parts, each polled with its own waker.
mod part {
    pub const INBOUND: usize = 0;
    pub const OUTBOUND: usize = 1;
    /// The timer and the drain turn: both fire rarely, so they share a waker.
    pub const TIMERS: usize = 2;
    pub const COUNT: usize = 3;
}

/// Close codes the gateway sends, and one it only reports (RFC 6455 section 7.4.1).
pub(crate) mod close_code {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Reported, never sent: a connection cut without a close frame.
    pub const ABNORMAL: u16 = 1006;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
}

thread_local! {
    static READ_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; CARRY_ROOM + READ_SIZE]);
}

/// Limits and heartbeat for one relayed connection, fixed when it starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RelaySettings {
    pub max_message_bytes: u64,
    pub message_rate: Option<Rate>,
    pub heartbeat: Option<HeartbeatConfig>,
    /// permessage-deflate as the upstream accepted it.
    pub deflate: Option<Negotiated>,
    /// Text messages from the client must be UTF-8 (`validation.utf8`).
    pub validate_utf8: bool,
}

/// Why a relayed connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Both sides closed their streams.
    Closed,
    /// The client vanished without a close frame.
    ClientGone,
    /// The upstream failed or vanished without a close frame; the client got 1011.
    UpstreamFailed,
    /// A frame broke a limit or the protocol.
    Violation(Violation),
    /// The client stopped answering heartbeats.
    HeartbeatTimeout,
    /// The gateway closed the connection while draining.
    Drained,
}

impl Ending {
    /// The `ending` field of the access log.
    pub fn label(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::ClientGone => "client_gone",
            Self::UpstreamFailed => "upstream_failed",
            Self::Violation(Violation::TooBig) => "message_too_big",
            Self::Violation(Violation::BadCompressedData) => "invalid_compressed_data",
            Self::Violation(Violation::InvalidUtf8) => "invalid_utf8",
            Self::Violation(Violation::RateExceeded) => "message_rate_exceeded",
            Self::Violation(Violation::Protocol(_)) => "protocol_error",
            Self::HeartbeatTimeout => "heartbeat_timeout",
            Self::Drained => "drained",
        }
    }
}

/// What one direction of a connection carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Traffic {
    pub messages: u64,
    /// Frames with their headers, as forwarded.
    pub bytes: u64,
}

/// How a relayed connection ended, and what it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub ending: Ending,
    /// The code of the first close (`None`: unreadable).
    pub close_code: Option<u16>,
    /// Who closed first.
    pub closed_by: ClosedBy,
    pub client_to_upstream: Traffic,
    pub upstream_to_client: Traffic,
}

/// The relay future; resolves with the [`Outcome`] when both sides are closed or the close
/// linger ends.
pub(crate) struct Relay {
    client: Transport,
    upstream: Transport,
    /// Client to upstream.
    inbound: Lane,
    /// Upstream to client.
    outbound: Lane,
    heartbeat: Option<Heartbeat>,
    /// Heartbeat deadlines, then the close linger.
    timer: Option<Pin<Box<Sleep>>>,
    /// Resolves when the gateway drains and this connection's turn to close comes; gone then.
    drain_turn: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    wakers: PartWakers<{ part::COUNT }>,
    ending: Option<Ending>,
    /// Who closed first and with which code (`None`: unreadable), counted when the relay ends.
    first_close: Option<(Option<u16>, ClosedBy)>,
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
struct Heartbeat {
    config: HeartbeatConfig,
    pinged: bool,
}

impl Relay {
    /// `client_early` and `upstream_early` are bytes each side sent right after its handshake;
    /// when `drain_turn` resolves, both sides are closed with 1001.
    pub fn new(
        client: Transport,
        upstream: Transport,
        client_early: Vec<u8>,
        upstream_early: Vec<u8>,
        settings: RelaySettings,
        drain_turn: impl Future<Output = ()> + Send + 'static,
        metrics: Arc<Metrics>,
    ) -> Self {
        let lane = |source, direction, early, context_takeover: Option<bool>| {
            let tracker = Tracker::new(source, settings.max_message_bytes, settings.message_rate);
            let tracker = match context_takeover {
                Some(keep) => tracker.with_deflate(keep),
                None => tracker,
            };
            Lane {
                tracker: if settings.validate_utf8 && source == Source::Client {
                    tracker.with_utf8_check()
                } else {
                    tracker
                },
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
        };
        let heartbeat = settings.heartbeat.map(|config| Heartbeat {
            config,
            pinged: false,
        });
        // Over TCP each lane reads one socket and writes the other, so the lanes never wait on
        // the same socket in the same direction. TLS may write while reading (alerts), so
        // there the lanes share their wake-ups.
        let plain = matches!(
            (&client, &upstream),
            (Transport::Plain(_), Transport::Plain(_))
        );
        let lanes = Parts::one(part::INBOUND).with(Parts::one(part::OUTBOUND));
        let lane_marks = |lane| if plain { Parts::one(lane) } else { lanes };
        let wakers = PartWakers::new([
            lane_marks(part::INBOUND),
            lane_marks(part::OUTBOUND),
            Parts::one(part::TIMERS),
        ]);
        Self {
            client,
            upstream,
            inbound: lane(
                Source::Client,
                Direction::ClientToUpstream,
                client_early,
                settings
                    .deflate
                    .map(|deflate| deflate.client_context_takeover),
            ),
            outbound: lane(
                Source::Upstream,
                Direction::UpstreamToClient,
                upstream_early,
                settings
                    .deflate
                    .map(|deflate| deflate.server_context_takeover),
            ),
            timer: heartbeat
                .as_ref()
                .map(|beat| Box::pin(tokio::time::sleep(beat.config.interval))),
            heartbeat,
            drain_turn: Some(Box::pin(drain_turn)),
            wakers,
            ending: None,
            first_close: None,
            metrics,
        }
    }

    /// Closes both sides with 1001 once this connection's drain turn has come.
    fn poll_drain_turn(&mut self) {
        let Some(turn) = self.drain_turn.as_mut() else {
            return;
        };
        let waker = self.wakers.waker(part::TIMERS);
        if turn
            .as_mut()
            .poll(&mut Context::from_waker(waker))
            .is_ready()
        {
            self.drain_turn = None;
            self.begin_close(
                Ending::Drained,
                Some(close_code::GOING_AWAY),
                Some(close_code::GOING_AWAY),
                "gateway shutting down",
            );
        }
    }

    /// Sends close frames (at the next frame boundary) and stops forwarding.
    fn begin_close(
        &mut self,
        ending: Ending,
        to_client: Option<u16>,
        to_upstream: Option<u16>,
        reason: &'static str,
    ) {
        if self.ending.is_some() {
            return;
        }
        self.ending = Some(ending);
        let (code, by) = match ending {
            Ending::ClientGone => (Some(close_code::ABNORMAL), ClosedBy::Client),
            Ending::UpstreamFailed => (Some(close_code::ABNORMAL), ClosedBy::Upstream),
            _ => (to_client.or(to_upstream), ClosedBy::Gateway),
        };
        self.note_close(code, by);
        self.outbound.control = to_client.map(|code| GatewayFrame::Close { code, reason });
        self.inbound.control = to_upstream.map(|code| GatewayFrame::Close { code, reason });
        // The client ends the closing handshake with its close frame; a TCP end before that
        // makes browsers report an unclean close.
        self.outbound.shutdown_held = to_client.is_some();
        self.inbound.stop();
        self.outbound.stop();
        self.start_linger();
    }

    /// Gives the peers [`CLOSE_LINGER`] to finish; the heartbeat has no more to do.
    fn start_linger(&mut self) {
        if self.heartbeat.take().is_some() || self.timer.is_none() {
            self.timer = Some(Box::pin(tokio::time::sleep(CLOSE_LINGER)));
        }
    }

    /// Remembers the first close of the connection; later ones answer it.
    fn note_close(&mut self, code: Option<u16>, by: ClosedBy) {
        self.first_close.get_or_insert((code, by));
    }

    fn on_inbound(&mut self, event: LaneEvent) {
        match event {
            LaneEvent::CloseSeen { code } => self.note_close(code, ClosedBy::Client),
            // A side that said goodbye and ended: the other gets a moment to do the same.
            LaneEvent::SourceClosed { close_seen: true } => self.start_linger(),
            LaneEvent::SourceClosed { close_seen: false } => self.client_gone(),
            LaneEvent::DestinationFailed => self.upstream_failed(),
            LaneEvent::Violation(violation) => {
                let to_client = match violation {
                    Violation::TooBig => close_code::MESSAGE_TOO_BIG,
                    Violation::BadCompressedData | Violation::InvalidUtf8 => {
                        close_code::INVALID_PAYLOAD
                    }
                    Violation::RateExceeded => close_code::POLICY_VIOLATION,
                    Violation::Protocol(_) => close_code::PROTOCOL_ERROR,
                };
                // An upstream left inside a frame cannot take a close frame: it only sees the end.
                let to_upstream =
                    (!self.inbound.tracker.cut_mid_frame()).then_some(close_code::GOING_AWAY);
                self.begin_close(
                    Ending::Violation(violation),
                    Some(to_client),
                    to_upstream,
                    violation_reason(violation),
                );
                if let Violation::Protocol(_) = violation {
                    // Past broken framing the client's close frame cannot be recognised.
                    self.outbound.shutdown_held = false;
                }
            }
        }
    }

    fn on_outbound(&mut self, event: LaneEvent) {
        match event {
            LaneEvent::CloseSeen { code } => self.note_close(code, ClosedBy::Upstream),
            LaneEvent::SourceClosed { close_seen: true } => self.start_linger(),
            LaneEvent::SourceClosed { close_seen: false } => self.upstream_failed(),
            LaneEvent::DestinationFailed => self.client_gone(),
            LaneEvent::Violation(violation) => {
                let (to_client, to_upstream) = match violation {
                    Violation::TooBig => (close_code::MESSAGE_TOO_BIG, close_code::MESSAGE_TOO_BIG),
                    Violation::RateExceeded => {
                        (close_code::POLICY_VIOLATION, close_code::POLICY_VIOLATION)
                    }
                    // The upstream broke the protocol: for the client, an internal error.
                    // (Its text is not checked: `validation.utf8` guards the upstream.)
                    Violation::BadCompressedData | Violation::InvalidUtf8 => {
                        (close_code::INTERNAL_ERROR, close_code::INVALID_PAYLOAD)
                    }
                    Violation::Protocol(_) => {
                        (close_code::INTERNAL_ERROR, close_code::PROTOCOL_ERROR)
                    }
                };
                if matches!(
                    violation,
                    Violation::BadCompressedData | Violation::InvalidUtf8 | Violation::Protocol(_)
                ) {
                    self.metrics.upstream_error(UpstreamError::Relay);
                }
                // A client left inside a frame cannot take a close frame: it only sees the end.
                let to_client = (!self.outbound.tracker.cut_mid_frame()).then_some(to_client);
                self.begin_close(
                    Ending::Violation(violation),
                    to_client,
                    Some(to_upstream),
                    violation_reason(violation),
                );
            }
        }
    }

    /// The client vanished without a close frame: the upstream hears 1001.
    fn client_gone(&mut self) {
        self.begin_close(
            Ending::ClientGone,
            None,
            Some(close_code::GOING_AWAY),
            "client went away",
        );
    }

    /// The upstream broke or vanished without a close frame: the client hears 1011.
    fn upstream_failed(&mut self) {
        self.metrics.upstream_error(UpstreamError::Relay);
        self.begin_close(
            Ending::UpstreamFailed,
            Some(close_code::INTERNAL_ERROR),
            None,
            "upstream failed",
        );
    }

    /// Drives the heartbeat; `Ready` when the close linger has run out.
    fn poll_timer(&mut self) -> Poll<()> {
        let waker = self.wakers.waker(part::TIMERS);
        let cx = &mut Context::from_waker(waker);
        let Some(timer) = self.timer.as_mut() else {
            return Poll::Pending;
        };
        ready!(timer.as_mut().poll(cx));
        let Some(heartbeat) = self.heartbeat.as_mut() else {
            return Poll::Ready(());
        };
        let next = if std::mem::take(&mut self.inbound.activity) {
            heartbeat.pinged = false;
            heartbeat.config.interval
        } else if !heartbeat.pinged {
            heartbeat.pinged = true;
            if self.outbound.control.is_none() {
                self.outbound.control = Some(GatewayFrame::Ping);
            }
            heartbeat.config.timeout
        } else {
            // 1001: as far as the gateway can tell, the client has gone away.
            self.begin_close(
                Ending::HeartbeatTimeout,
                Some(close_code::GOING_AWAY),
                Some(close_code::GOING_AWAY),
                "heartbeat timeout",
            );
            return self.poll_timer();
        };
        if let Some(timer) = self.timer.as_mut() {
            timer.as_mut().reset(Instant::now() + next);
            // Registers the waker for the new deadline.
            let _ = timer.as_mut().poll(cx);
        }
        Poll::Pending
    }

    /// Both close frames have been delivered and one peer has ended its stream: neither peer
    /// may send anything more (RFC 6455 section 5.5.1), so there is nothing left to wait for,
    /// such as the other peer's end of stream.
    fn closing_handshake_done(&self) -> bool {
        (self.inbound.mode == Mode::Ended || self.outbound.mode == Mode::Ended)
            && self.inbound.close_delivered()
            && self.outbound.close_delivered()
    }

    fn flush_counters(&mut self) {
        for lane in [&mut self.inbound, &mut self.outbound] {
            let messages = lane.tracker.take_messages();
            let bytes = std::mem::take(&mut lane.bytes);
            self.metrics.relayed(lane.direction, messages, bytes);
            lane.relayed.messages += messages;
            lane.relayed.bytes += bytes;
        }
    }

    /// The end: the last counters, and how the connection was closed.
    fn finish(&mut self) -> Poll<Outcome> {
        self.flush_counters();
        // Every way to the end passes a close frame or `begin_close`; `other` if not.
        let (close_code, closed_by) = self.first_close.unwrap_or((None, ClosedBy::Gateway));
        self.metrics.closed(close_code, closed_by);
        Poll::Ready(Outcome {
            ending: self.ending.unwrap_or(Ending::Closed),
            close_code,
            closed_by,
            client_to_upstream: self.inbound.relayed,
            upstream_to_client: self.outbound.relayed,
        })
    }
}

impl Future for Relay {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let this = self.get_mut();
        let mut woken = this.wakers.take_woken(cx.waker());
        // The drain turn and the timer fire rarely, and may give either lane work to do.
        if woken.contains(part::TIMERS) {
            woken = Parts::ALL;
            this.poll_drain_turn();
            if this.poll_timer().is_ready() {
                return this.finish();
            }
        }
        loop {
            let mut progressed = false;
            if woken.contains(part::INBOUND)
                && let Poll::Ready(event) = this.inbound.pump(
                    &mut Context::from_waker(this.wakers.waker(part::INBOUND)),
                    &mut this.client,
                    &mut this.upstream,
                )
            {
                this.on_inbound(event);
                progressed = true;
            }
            if woken.contains(part::OUTBOUND)
                && let Poll::Ready(event) = this.outbound.pump(
                    &mut Context::from_waker(this.wakers.waker(part::OUTBOUND)),
                    &mut this.upstream,
                    &mut this.client,
                )
            {
                this.on_outbound(event);
                progressed = true;
            }
            if this.outbound.shutdown_held && this.inbound.close_wait_over() {
                this.outbound.shutdown_held = false;
                progressed = true;
            }
            if this.closing_handshake_done() {
                // A lane this ends may still owe its TLS destination a close_notify, and no
                // socket will wake it for that: go round once more.
                let inbound_owes = this.inbound.end_after_close(&this.upstream);
                let outbound_owes = this.outbound.end_after_close(&this.client);
                progressed |= inbound_owes || outbound_owes;
            }
            if this.inbound.is_finished() && this.outbound.is_finished() {
                return this.finish();
            }
            if !progressed {
                break;
            }
            // The event may have given the other lane work, or started a close whose linger
            // timer needs a first poll.
            woken = Parts::ALL;
            if this.poll_timer().is_ready() {
                return this.finish();
            }
        }
        this.flush_counters();
        Poll::Pending
    }
}

fn violation_reason(violation: Violation) -> &'static str {
    match violation {
        Violation::TooBig => "message too big",
        Violation::BadCompressedData => "invalid compressed data",
        Violation::InvalidUtf8 => "text message not UTF-8",
        Violation::RateExceeded => "message rate exceeded",
        Violation::Protocol(reason) => reason,
    }
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
enum GatewayFrame {
    Ping,
    Close { code: u16, reason: &'static str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Reading, checking and forwarding frames.
    Forward,
    /// Past the gateway's close: reading and dropping until the source ends.
    Discard,
    /// The source ended; once the destination is flushed and shut, the lane is finished.
    Ended,
}

/// Something the relay must react to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LaneEvent {
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
struct Lane {
    tracker: Tracker,
    direction: Direction,
    /// Handshake leftovers, processed before the first read.
    early: Vec<u8>,
    /// Checked bytes the destination has not taken yet; empty (no allocation) when keeping up.
    pending: Vec<u8>,
    written: usize,
    needs_flush: bool,
    /// A frame of the gateway's own, sent at the next frame boundary.
    control: Option<GatewayFrame>,
    mode: Mode,
    destination_shut: bool,
    /// Keeps the destination open until the peer's close frame has come the other way.
    shutdown_held: bool,
    /// Bytes read and dropped in [`Mode::Discard`].
    discarded: usize,
    /// Bytes forwarded since the counters were last flushed.
    bytes: u64,
    /// Everything flushed so far, for the connection's access log line.
    relayed: Traffic,
    /// Set on every read; the heartbeat takes it.
    activity: bool,
}

impl Lane {
    fn stop(&mut self) {
        if self.mode == Mode::Forward {
            self.tracker.stop_at_next_frame();
        }
    }

    /// The source's close frame has been passed on, and nothing is left to write.
    fn close_delivered(&self) -> bool {
        self.tracker.close_seen()
            && self.pending.is_empty()
            && !self.needs_flush
            && self.control.is_none()
    }

    /// Ends the lane after the closing handshake: nothing more is read. A plain TCP destination
    /// needs no shutdown, as closing the socket sends the same FIN; TLS still sends close_notify.
    /// True when this ended the lane and its destination is still to be shut.
    fn end_after_close(&mut self, destination: &Transport) -> bool {
        let was_ended = std::mem::replace(&mut self.mode, Mode::Ended) == Mode::Ended;
        if matches!(destination, Transport::Plain(_)) {
            self.destination_shut = true;
        }
        !was_ended && !self.destination_shut
    }

    /// True once waiting for this source's close frame is over: it came, the source ended, or
    /// the source sent more than [`CLOSE_DISCARD_LIMIT`] without it. ([`CLOSE_LINGER`] bounds
    /// the wait in time.)
    fn close_wait_over(&self) -> bool {
        self.tracker.close_seen()
            || self.mode == Mode::Ended
            || self.discarded > CLOSE_DISCARD_LIMIT
    }

    fn is_finished(&self) -> bool {
        self.mode == Mode::Ended
            && self.destination_shut
            && self.pending.is_empty()
            && !self.needs_flush
    }

    fn pump(
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
