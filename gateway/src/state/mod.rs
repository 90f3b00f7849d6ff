//! The state every connection and background task shares, in one place: the modules that use
//! it depend on this one, never the reverse. It owns the count of admitted connections and the
//! drain ([`drain`]), and the access log's writer ([`access_log`]).

pub(crate) mod access_log;
pub(crate) mod drain;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use arc_swap::ArcSwap;
use rustls::ServerConfig;

use crate::policy::live_counts::LiveCounts;
use crate::policy::pending::PendingHandshakes;
use crate::policy::rate::PerIpRate;
use crate::policy::running::Policy;
use crate::state::access_log::AccessLog;
use crate::state::drain::Drain;
use crate::telemetry::metrics::{HandshakeOutcome, Metrics};
use crate::wire::refusal::Refusal;
use crate::wire::tls::ReloadingCertificate;

/// State every connection and background task shares.
pub(crate) struct Shared {
    pub policy: ArcSwap<Policy>,
    pub metrics: Arc<Metrics>,
    pub per_ip: PerIpRate,
    pub pending_handshakes: PendingHandshakes,
    pub per_subject: LiveCounts<Box<str>>,
    pub drain: Arc<Drain>,
    /// The TLS every client connection begins with, when `tls` is configured.
    pub tls: Option<Arc<ServerConfig>>,
    pub certificate: Option<Arc<ReloadingCertificate>>,
    pub access_log: AccessLog,
    /// False until the listener is bound, and again once draining starts.
    pub ready: AtomicBool,
    /// `tcp.listenBacklog` of the config in use: a reload sends a change, and the accept loop
    /// applies it to the open listener.
    pub listen_backlog: tokio::sync::watch::Sender<u32>,
}

impl Shared {
    /// Counts a refusal under its reason and the handshake under its outcome.
    pub fn count_refusal(&self, refusal: Refusal) {
        self.metrics.refusal(refusal);
        self.metrics.handshake(if refusal.is_upstream_failure() {
            HandshakeOutcome::UpstreamFailed
        } else {
            HandshakeOutcome::Refused
        });
    }

    /// Exports the notAfter of the certificate `certificate` serves now.
    pub fn served_certificate_changed(&self, certificate: &ReloadingCertificate) {
        let not_after = certificate.not_after();
        if not_after.is_none() {
            tracing::warn!("cannot read the served certificate's notAfter; its metric is removed");
        }
        self.metrics.certificate_served(not_after);
    }
}
