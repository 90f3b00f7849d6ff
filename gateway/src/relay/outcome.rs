//! How a relayed connection ends: the close codes the gateway sends, why it ended, and what
//! each direction carried, for the metrics and the access log.

use crate::relay::tracker::Violation;
use crate::telemetry::metrics::ClosedBy;

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

pub(crate) fn violation_reason(violation: Violation) -> &'static str {
    match violation {
        Violation::TooBig => "message too big",
        Violation::BadCompressedData => "invalid compressed data",
        Violation::InvalidUtf8 => "text message not UTF-8",
        Violation::RateExceeded => "message rate exceeded",
        Violation::Protocol(reason) => reason,
    }
}
