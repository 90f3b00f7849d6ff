//! The access log (`accessLog`): one JSON line on stdout per relayed connection when it ends,
//! and one per refused handshake, for log pipelines such as Loki or Elasticsearch.
//!
//! Lines carry `"type":"access"`; the tracing logs go to stderr. A line is built once, when
//! its connection ends, from counters the relay keeps anyway. Connections never wait on
//! stdout: lines go through a bounded queue to one writer task, and a line that finds the
//! queue full is dropped and counted in `wsfleet_gateway_access_log_dropped_total`, so a slow
//! log reader costs lines, not latency.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt as _, BufWriter};
use tokio::sync::{mpsc, oneshot};

use crate::relay::outcome::Outcome;
use crate::telemetry::metrics::Metrics;
use crate::wire::refusal::Refusal;
use wsfleet_config::AccessLogConfig;

/// Lines waiting for the writer; beyond this many, new lines are dropped.
const QUEUE_LINES: usize = 8192;
/// The writer's buffer: lines leave in writes of up to this size, and at least when idle.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;
/// How long the shutdown waits for queued lines to be written.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// A relayed connection, as its line tells it.
#[derive(Debug)]
pub(crate) struct ConnectionRecord<'a> {
    /// The client the admission used (after the PROXY header and trusted `X-Forwarded-For`).
    pub client: IpAddr,
    /// The verified token's subject, when the config collects it.
    pub subject: Option<&'a str>,
    /// The request path, without the query (which may carry a token).
    pub path: &'a str,
    /// From accept to close.
    pub duration: Duration,
    pub outcome: &'a Outcome,
}

/// A refused handshake, as far as it got.
#[derive(Debug)]
pub(crate) struct RefusalRecord<'a> {
    pub client: IpAddr,
    /// `None` when the refusal came before a request was read.
    pub path: Option<&'a str>,
    pub refusal: Refusal,
}

/// The queue to the writer task, and what is decided before a line is built.
#[derive(Debug)]
pub(crate) struct AccessLog {
    lines: mpsc::Sender<Entry>,
    /// Connections that ended with the log on, for sampling.
    ended: AtomicU64,
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
enum Entry {
    Line(String),
    /// Answered once every line queued before it is written and flushed.
    Flush(oneshot::Sender<()>),
}

impl AccessLog {
    /// Starts the writer task on stdout.
    pub fn to_stdout(metrics: Arc<Metrics>) -> Self {
        Self::to_writer(tokio::io::stdout(), metrics)
    }

    /// Starts the writer task on `out`.
    pub fn to_writer(out: impl AsyncWrite + Unpin + Send + 'static, metrics: Arc<Metrics>) -> Self {
        let (lines, queued) = mpsc::channel(QUEUE_LINES);
        tokio::spawn(write_lines(queued, out));
        Self {
            lines,
            ended: AtomicU64::new(0),
            metrics,
        }
    }

    /// Logs a relayed connection, when the log is on and the sample takes it.
    pub fn connection(&self, config: &AccessLogConfig, record: &ConnectionRecord<'_>) {
        if !config.enabled {
            return;
        }
        // One in `sampleOneIn`, counted in the order connections end.
        let ended = self.ended.fetch_add(1, Relaxed);
        if ended.is_multiple_of(u64::from(config.sample_one_in)) {
            self.send(render_connection(SystemTime::now(), record));
        }
    }

    /// Logs a refused handshake, when the log and its refusals are on.
    pub fn refusal(&self, config: &AccessLogConfig, record: &RefusalRecord<'_>) {
        if config.enabled && config.refusals {
            self.send(render_refusal(SystemTime::now(), record));
        }
    }

    /// Waits (a bounded time) until the lines queued so far are written: at shutdown.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        let flushed = async {
            if self.lines.send(Entry::Flush(done)).await.is_ok() {
                let _ = written.await;
            }
        };
        let _ = tokio::time::timeout(FINAL_FLUSH_TIMEOUT, flushed).await;
    }

    fn send(&self, line: String) {
        if self.lines.try_send(Entry::Line(line)).is_err() {
            self.metrics.access_log_dropped();
        }
    }
}

/// Writes queued lines, flushing whenever the queue runs empty.
async fn write_lines(mut queued: mpsc::Receiver<Entry>, out: impl AsyncWrite + Unpin) {
    let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, out);
    while let Some(first) = queued.recv().await {
        let mut next = Some(first);
        while let Some(entry) = next {
            match entry {
                Entry::Line(line) => {
                    if out.write_all(line.as_bytes()).await.is_err() {
                        return;
                    }
                }
                Entry::Flush(done) => {
                    let _ = out.flush().await;
                    let _ = done.send(());
                }
            }
            next = queued.try_recv().ok();
        }
        if out.flush().await.is_err() {
            return;
        }
    }
}

/// Fields every line starts with.
#[derive(Serialize)]
struct Common {
    #[serde(rename = "type")]
    kind: &'static str,
    event: &'static str,
    /// RFC 3339, UTC, milliseconds.
    time: String,
    client: IpAddr,
}

impl Common {
    fn new(event: &'static str, time: SystemTime, client: IpAddr) -> Self {
        Self {
            kind: "access",
            event,
            time: humantime::format_rfc3339_millis(time).to_string(),
            client,
        }
    }
}

#[derive(Serialize)]
struct ConnectionLine<'a> {
    #[serde(flatten)]
    common: Common,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    path: &'a str,
    duration_ms: u64,
    bytes_client_to_upstream: u64,
    messages_client_to_upstream: u64,
    bytes_upstream_to_client: u64,
    messages_upstream_to_client: u64,
    /// `null`: the first close frame had no readable code.
    close_code: Option<u16>,
    closed_by: &'static str,
    ending: &'static str,
}

#[derive(Serialize)]
struct RefusalLine<'a> {
    #[serde(flatten)]
    common: Common,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    reason: &'static str,
    status: u16,
}

/// One line, newline included.
fn line(fields: &impl Serialize) -> String {
    let mut line = serde_json::to_string(fields).expect("access log lines always serialize");
    line.push('\n');
    line
}

fn render_connection(time: SystemTime, record: &ConnectionRecord<'_>) -> String {
    let outcome = record.outcome;
    line(&ConnectionLine {
        common: Common::new("connection", time, record.client),
        subject: record.subject,
        path: record.path,
        duration_ms: u64::try_from(record.duration.as_millis()).unwrap_or(u64::MAX),
        bytes_client_to_upstream: outcome.client_to_upstream.bytes,
        messages_client_to_upstream: outcome.client_to_upstream.messages,
        bytes_upstream_to_client: outcome.upstream_to_client.bytes,
        messages_upstream_to_client: outcome.upstream_to_client.messages,
        close_code: outcome.close_code,
        closed_by: outcome.closed_by.label(),
        ending: outcome.ending.label(),
    })
}

fn render_refusal(time: SystemTime, record: &RefusalRecord<'_>) -> String {
    line(&RefusalLine {
        common: Common::new("refusal", time, record.client),
        path: record.path,
        reason: record.refusal.reason(),
        status: record.refusal.status().0,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::relay::outcome::{Ending, Traffic};
    use crate::telemetry::metrics::ClosedBy;

    fn at_epoch_plus(millis: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(millis)
    }

    fn parsed(line: &str) -> Value {
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        serde_json::from_str(line).unwrap()
    }

    fn outcome() -> Outcome {
        Outcome {
            ending: Ending::Closed,
            close_code: Some(4001),
            closed_by: ClosedBy::Upstream,
            client_to_upstream: Traffic {
                messages: 3,
                bytes: 42,
            },
            upstream_to_client: Traffic {
                messages: 2,
                bytes: 30,
            },
        }
    }

    #[test]
    fn a_connection_line_escapes_what_the_client_chose() {
        let outcome = outcome();
        let line = render_connection(
            at_epoch_plus(1_500),
            &ConnectionRecord {
                client: "2001:db8::7".parse().unwrap(),
                subject: Some("al\"ice\n{\"type\":\"forged\"}"),
                path: "/rooms/\"1\"\\x",
                duration: Duration::from_millis(2_345),
                outcome: &outcome,
            },
        );
        assert_eq!(
            parsed(&line),
            json!({
                "type": "access", "event": "connection", "time": "1970-01-01T00:00:01.500Z",
                "client": "2001:db8::7", "subject": "al\"ice\n{\"type\":\"forged\"}",
                "path": "/rooms/\"1\"\\x", "duration_ms": 2345,
                "bytes_client_to_upstream": 42, "messages_client_to_upstream": 3,
                "bytes_upstream_to_client": 30, "messages_upstream_to_client": 2,
                "close_code": 4001, "closed_by": "upstream", "ending": "closed",
            })
        );
    }

    #[test]
    fn a_connection_without_subject_or_close_code() {
        let outcome = Outcome {
            ending: Ending::HeartbeatTimeout,
            close_code: None,
            closed_by: ClosedBy::Gateway,
            ..outcome()
        };
        let line = parsed(&render_connection(
            at_epoch_plus(0),
            &ConnectionRecord {
                client: "192.0.2.1".parse().unwrap(),
                subject: None,
                path: "/",
                duration: Duration::ZERO,
                outcome: &outcome,
            },
        ));
        assert_eq!(line.get("subject"), None);
        assert_eq!(line["close_code"], Value::Null);
        assert_eq!(line["closed_by"], "gateway");
        assert_eq!(line["ending"], "heartbeat_timeout");
    }

    #[test]
    fn a_refusal_line_names_reason_and_status() {
        let line = parsed(&render_refusal(
            at_epoch_plus(0),
            &RefusalRecord {
                client: "192.0.2.9".parse().unwrap(),
                path: Some("/ws"),
                refusal: Refusal::SubjectLimited,
            },
        ));
        assert_eq!(
            line,
            json!({"type": "access", "event": "refusal", "time": "1970-01-01T00:00:00.000Z",
                   "client": "192.0.2.9", "path": "/ws", "reason": "subject_limited", "status": 429})
        );
        let before_the_request = parsed(&render_refusal(
            at_epoch_plus(0),
            &RefusalRecord {
                client: "192.0.2.9".parse().unwrap(),
                path: None,
                refusal: Refusal::ProxyHeaderTimeout,
            },
        ));
        assert_eq!(before_the_request.get("path"), None);
        assert_eq!(before_the_request["status"], 408);
    }

    /// The writer is fed through a pipe that is not read: the queue fills, and the lines
    /// beyond it are dropped and counted instead of waiting.
    #[tokio::test]
    async fn a_full_queue_drops_and_counts_lines() {
        let (writer, _unread) = tokio::io::duplex(64);
        let metrics = Arc::new(Metrics::default());
        let log = AccessLog::to_writer(writer, metrics.clone());
        let config = AccessLogConfig {
            enabled: true,
            ..AccessLogConfig::default()
        };
        let record = RefusalRecord {
            client: "192.0.2.9".parse().unwrap(),
            path: None,
            refusal: Refusal::BadRequest,
        };
        for _ in 0..QUEUE_LINES + 100 {
            log.refusal(&config, &record);
        }
        assert!(
            metrics.render().lines().any(|line| line
                .starts_with("wsfleet_gateway_access_log_dropped_total ")
                && line != "wsfleet_gateway_access_log_dropped_total 0"),
            "{}",
            metrics.render()
        );
    }

    #[tokio::test]
    async fn one_in_n_connections_is_logged_and_refusals_may_be_left_out() {
        let (writer, mut reader) = tokio::io::duplex(1 << 20);
        let log = AccessLog::to_writer(writer, Arc::new(Metrics::default()));
        let config = AccessLogConfig {
            enabled: true,
            sample_one_in: 3,
            refusals: false,
        };
        let outcome = outcome();
        for user in 0..7 {
            let subject = format!("user-{user}");
            let record = ConnectionRecord {
                client: "192.0.2.1".parse().unwrap(),
                subject: Some(&subject),
                path: "/",
                duration: Duration::ZERO,
                outcome: &outcome,
            };
            log.connection(&config, &record);
            log.refusal(
                &config,
                &RefusalRecord {
                    client: "192.0.2.1".parse().unwrap(),
                    path: None,
                    refusal: Refusal::BadRequest,
                },
            );
        }
        log.flush().await;
        drop(log);
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut reader, &mut text)
            .await
            .unwrap();
        let subjects: Vec<String> = text
            .lines()
            .map(|line| {
                parsed(&format!("{line}\n"))["subject"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(subjects, ["user-0", "user-3", "user-6"]);
    }
}
