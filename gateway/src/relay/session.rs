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
//! Each lane is polled with a waker of its own, and the timers and the drain turn share a
//! third, so a message polls only the lane it arrived on (see [`crate::relay::wakes`]). The
//! heartbeat holds no timer: the coarse [`HeartbeatClock`] wakes the third waker when its
//! deadline comes, and a message costs it nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;

use crate::relay::heartbeat_clock::HeartbeatClock;
use crate::relay::lane::{GatewayFrame, Lane, LaneEvent, Mode};
use crate::relay::outcome::{Ending, Outcome, close_code, violation_reason};
use crate::relay::tracker::{Source, Tracker, Violation};
use crate::relay::wakes::{PartWakers, Parts};
use crate::telemetry::metrics::{ClosedBy, Direction, Metrics, UpstreamError};
use crate::wire::deflate::Negotiated;
use crate::wire::transport::Transport;
use wsfleet_config::{HeartbeatConfig, Rate};

/// How long peers get to answer the gateway's close frame before the sockets are dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(3);

/// The relay's parts, each polled with its own waker.
mod part {
    pub const INBOUND: usize = 0;
    pub const OUTBOUND: usize = 1;
    /// The heartbeat, the close linger and the drain turn: all fire rarely, so they share a
    /// waker.
    pub const TIMERS: usize = 2;
    pub const COUNT: usize = 3;
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
    /// The close linger, once closing.
    linger: Option<Pin<Box<Sleep>>>,
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
    /// The [`HeartbeatClock`] tick at which the heartbeat looks at the client next.
    due: u64,
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
            let tracker = if settings.validate_utf8 && source == Source::Client {
                tracker.with_utf8_check()
            } else {
                tracker
            };
            Lane::new(tracker, direction, early)
        };
        let heartbeat = settings.heartbeat.map(|config| Heartbeat {
            config,
            pinged: false,
            due: HeartbeatClock::global().tick_after(config.interval),
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
        if let Some(heartbeat) = &heartbeat {
            HeartbeatClock::global().wake_at(heartbeat.due, wakers.waker(part::TIMERS));
        }
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
            heartbeat,
            linger: None,
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
        // Towards the upstream the gateway is the client, and RFC 6455 (section 7.1.1) has the
        // server end the TCP connection first, so that the server holds the TIME_WAIT: closed
        // connections then take none of the gateway's local ports towards that upstream
        // address, of which there are about 28,000. The linger bounds the wait for an upstream
        // that does not. (A client's own close passes as the client made it, its end included.)
        self.inbound.shutdown_held = to_upstream.is_some();
        self.inbound.stop();
        self.outbound.stop();
        self.start_linger();
    }

    /// Gives the peers [`CLOSE_LINGER`] to finish; the heartbeat has no more to do.
    fn start_linger(&mut self) {
        self.heartbeat = None;
        if self.linger.is_none() {
            self.linger = Some(Box::pin(tokio::time::sleep(CLOSE_LINGER)));
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
        if let Some(linger) = self.linger.as_mut() {
            return linger.as_mut().poll(&mut Context::from_waker(waker));
        }
        let Some(heartbeat) = self.heartbeat.as_mut() else {
            return Poll::Pending;
        };
        let clock = HeartbeatClock::global();
        if clock.now() < heartbeat.due {
            return Poll::Pending;
        }
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
        heartbeat.due = clock.tick_after(next);
        clock.wake_at(heartbeat.due, waker);
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
            if this.inbound.shutdown_held && this.outbound.mode == Mode::Ended {
                this.inbound.shutdown_held = false;
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
