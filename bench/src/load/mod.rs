//! The load generator: four ways of loading one target, each bounded in time.
//!
//! Everything runs on one thread (a current-thread runtime inside a `LocalSet`), so that
//! the generator stays on the core it is pinned to and shares counters without atomics.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use hdrhistogram::Histogram;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::task::{JoinHandle, spawn_local};
use tokio::time::{sleep, sleep_until, timeout};

use crate::client::{self, Conn, TlsClient};
use crate::frame::{self, FrameBuf};
use crate::handshake::Endpoint;
use crate::procstat;

mod upgrades;

pub use upgrades::{handshakes, storm};

/// How long one reply, one handshake or one write may take before it counts as an error.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one storm client may take to upgrade: long enough to see SYN retransmissions
/// (1 s, then 3 s) as latency rather than as errors.
const STORM_TIMEOUT: Duration = Duration::from_secs(15);
/// Budget for opening all connections of a run.
const OPEN_TIMEOUT: Duration = Duration::from_secs(180);
/// Connections opened at once while setting up a run: below the gateway's cap of 32 handshakes
/// in progress per client address, which refuses the rest with 429.
const OPEN_CONCURRENCY: usize = 16;
/// The paced writer stamps each message with its send time in the first bytes.
const STAMP_BYTES: usize = 8;
/// Masking key of every client frame (any value is valid; a fixed one keeps frames reusable).
const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x8e];

/// What is loaded and how long it is measured.
#[derive(Debug, Clone)]
pub struct Target {
    pub endpoint: Endpoint,
    /// Sent as `Authorization: Bearer ...` on every upgrade.
    pub bearer: Option<String>,
    /// TLS for a `wss://` target.
    pub tls: Option<TlsClient>,
    /// Process whose CPU time and memory are charged to the target (none for direct).
    pub pid: Option<u32>,
}

/// Warm-up before the measured window, then the window itself.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub warmup: Duration,
    pub measure: Duration,
}

/// Closed loop: each connection sends one message and waits for its echo.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Throughput {
    pub round_trips_per_sec: f64,
    /// Proxy CPU per message forwarded in either direction (two per round trip).
    pub cpu_us_per_message: Option<f64>,
    pub errors: u64,
}

/// Open loop at a fixed aggregate rate: latency of each round trip.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Latency {
    pub offered_per_sec: f64,
    pub achieved_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub cpu_us_per_message: Option<f64>,
    pub errors: u64,
}

/// Memory held by the proxy for connections that send nothing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Idle {
    pub connections: usize,
    pub rss_before: Option<u64>,
    pub rss_after: Option<u64>,
    pub bytes_per_connection: Option<f64>,
    pub open_secs: f64,
}

/// A connection storm: many clients upgrading at once, as after a drain elsewhere.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Storm {
    pub clients: usize,
    /// Connections started per second; `None`: as fast as the load generator can.
    pub offered_per_sec: Option<f64>,
    pub upgraded: u64,
    /// Upgrades completed per second, from the first connect to the last 101.
    pub per_sec: f64,
    /// Time from a client's connect to its 101.
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub cpu_us_per_handshake: Option<f64>,
    /// Upgrades per second of proxy CPU time: the rate one core could sustain.
    pub per_cpu_sec: Option<f64>,
    /// Connections the machine's listen queues turned away during the storm.
    pub listen_overflows: u64,
    /// Clients that did not upgrade, by cause (`ConnectionReset`, `answered 503`, ...).
    pub failures: std::collections::BTreeMap<String, u64>,
}

impl Storm {
    /// Clients that did not upgrade.
    pub fn errors(&self) -> u64 {
        self.failures.values().sum()
    }
}

/// Connection set-up: upgrade, close handshake, repeat.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Handshakes {
    pub per_sec: f64,
    pub cpu_us_per_handshake: Option<f64>,
    /// Handshakes per second of proxy CPU time: the rate one core could sustain.
    pub per_cpu_sec: Option<f64>,
    /// Share of the measured handshakes whose TLS session was resumed.
    pub resumed_share: Option<f64>,
    pub errors: u64,
}

/// Shared by the tasks of one run.
#[derive(Default)]
struct Tally {
    stop: Cell<bool>,
    done: Cell<u64>,
    errors: Cell<u64>,
    /// Handshakes that resumed a TLS session.
    resumed: Cell<u64>,
}

impl Tally {
    fn add_done(&self) {
        self.done.set(self.done.get() + 1);
    }
    fn add_error(&self) {
        self.errors.set(self.errors.get() + 1);
    }
}

/// Samples the target's CPU time and the work done at the edges of the measured window.
struct WindowMeter {
    pid: Option<u32>,
    cpu: Option<Duration>,
    done: u64,
    at: Instant,
}

impl WindowMeter {
    fn start(pid: Option<u32>, tally: &Tally) -> anyhow::Result<Self> {
        Ok(Self {
            pid,
            cpu: pid.map(procstat::cpu_time).transpose()?,
            done: tally.done.get(),
            at: Instant::now(),
        })
    }

    /// Work per second in the window, and CPU microseconds per `units_per_done` units of work.
    fn finish(
        &self,
        tally: &Tally,
        units_per_done: f64,
    ) -> anyhow::Result<(f64, f64, Option<f64>)> {
        let done = (tally.done.get() - self.done) as f64;
        let secs = self.at.elapsed().as_secs_f64();
        let cpu_us = match (self.pid, self.cpu) {
            (Some(pid), Some(before)) if done > 0.0 => {
                let spent = procstat::cpu_time(pid)? - before;
                Some(spent.as_secs_f64() * 1e6 / (done * units_per_done))
            }
            _ => None,
        };
        Ok((done / secs, done, cpu_us))
    }
}

/// Closed loop over `connections` connections of `size`-byte messages.
pub async fn throughput(
    target: &Target,
    connections: usize,
    size: usize,
    window: Window,
) -> anyhow::Result<Throughput> {
    let streams = open_all(target, connections).await?;
    let tally = Rc::new(Tally::default());
    let message: Rc<[u8]> = client_frame(&vec![0xAB; size]).into();
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|(stream, frames)| {
            spawn_local(closed_loop(stream, frames, message.clone(), tally.clone()))
        })
        .collect();
    sleep(window.warmup).await;
    let meter = WindowMeter::start(target.pid, &tally)?;
    sleep(window.measure).await;
    let (rate, _, cpu_us) = meter.finish(&tally, 2.0)?;
    stop_and_join(&tally, tasks).await;
    Ok(Throughput {
        round_trips_per_sec: rate,
        cpu_us_per_message: cpu_us,
        errors: tally.errors.get(),
    })
}

async fn closed_loop(mut stream: Conn, mut frames: FrameBuf, message: Rc<[u8]>, tally: Rc<Tally>) {
    while !tally.stop.get() {
        let round_trip = async {
            stream.write_all(&message).await?;
            frames.read_data(&mut stream).await.map(drop)
        };
        match timeout(OPERATION_TIMEOUT, round_trip).await {
            Ok(Ok(())) => tally.add_done(),
            _ => return tally.add_error(),
        }
    }
}

/// Open loop at `rate` messages per second spread evenly over the connections.
pub async fn latency(
    target: &Target,
    connections: usize,
    size: usize,
    rate: f64,
    window: Window,
) -> anyhow::Result<Latency> {
    ensure!(
        size >= STAMP_BYTES,
        "messages must hold at least {STAMP_BYTES} bytes, got {size}"
    );
    ensure!(rate > 0.0, "the paced rate must be positive, got {rate}");
    let streams = open_all(target, connections).await?;
    let tally = Rc::new(Tally::default());
    let recording = Rc::new(Cell::new(false));
    let histogram = Rc::new(RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram bounds")?,
    ));
    let epoch = Instant::now();
    let interval = Duration::from_secs_f64(connections as f64 / rate);
    let template = client_frame(&vec![0xAB; size]);
    // The payload, whose first bytes carry the stamp, ends the frame.
    let stamp_at = template.len() - size;
    let mut writers = Vec::with_capacity(connections);
    let mut readers = Vec::with_capacity(connections);
    for (index, (stream, frames)) in streams.into_iter().enumerate() {
        let (read_half, write_half) = stream.split();
        let first_send = epoch + interval.mul_f64(index as f64 / connections as f64);
        let schedule = Schedule {
            first_send,
            interval,
            epoch,
        };
        writers.push(spawn_local(paced_writer(
            write_half,
            template.clone(),
            stamp_at,
            schedule,
            tally.clone(),
        )));
        let recorder = Recorder {
            epoch,
            recording: recording.clone(),
            histogram: histogram.clone(),
        };
        readers.push(spawn_local(stamp_reader(
            read_half,
            frames,
            recorder,
            tally.clone(),
        )));
    }
    sleep(window.warmup).await;
    recording.set(true);
    let meter = WindowMeter::start(target.pid, &tally)?;
    sleep(window.measure).await;
    recording.set(false);
    let (achieved, _, cpu_us) = meter.finish(&tally, 2.0)?;
    stop_and_join(&tally, writers).await;
    // Readers may wait on replies that will never come once writers stopped. Their halves
    // are dropped here, before the caller waits for the proxy to let go: a TLS stream's
    // write half alone does not close it.
    readers.iter().for_each(JoinHandle::abort);
    for reader in readers {
        let _ = reader.await;
    }
    let histogram = histogram.borrow();
    let at = |quantile: f64| histogram.value_at_quantile(quantile) as f64;
    Ok(Latency {
        offered_per_sec: rate,
        achieved_per_sec: achieved,
        p50_us: at(0.50),
        p99_us: at(0.99),
        p999_us: at(0.999),
        max_us: histogram.max() as f64,
        cpu_us_per_message: cpu_us,
        errors: tally.errors.get(),
    })
}

struct Schedule {
    first_send: Instant,
    interval: Duration,
    epoch: Instant,
}

/// Sends on schedule whether or not replies came back, stamping the real send time so that
/// the timer's own lateness is not charged to the target.
async fn paced_writer<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut frame: Vec<u8>,
    stamp_at: usize,
    schedule: Schedule,
    tally: Rc<Tally>,
) {
    let mut next = schedule.first_send;
    while !tally.stop.get() {
        sleep_until(next.into()).await;
        next += schedule.interval;
        let sent_ns = schedule.epoch.elapsed().as_nanos() as u64;
        let mut stamp = sent_ns.to_le_bytes();
        frame::apply_mask(&mut stamp, MASK, 0);
        frame[stamp_at..stamp_at + STAMP_BYTES].copy_from_slice(&stamp);
        if !matches!(
            timeout(OPERATION_TIMEOUT, writer.write_all(&frame)).await,
            Ok(Ok(()))
        ) {
            return tally.add_error();
        }
    }
}

struct Recorder {
    epoch: Instant,
    recording: Rc<Cell<bool>>,
    histogram: Rc<RefCell<Histogram<u64>>>,
}

async fn stamp_reader<R: AsyncRead + Unpin>(
    mut reader: R,
    mut frames: FrameBuf,
    recorder: Recorder,
    tally: Rc<Tally>,
) {
    loop {
        let payload = match frames.read_data(&mut reader).await {
            Ok(payload) => payload,
            // Once the writers stop, their half-closed sockets end the replies.
            Err(_) if tally.stop.get() => return,
            Err(_) => return tally.add_error(),
        };
        let Some(stamp) = payload.first_chunk::<STAMP_BYTES>() else {
            return tally.add_error();
        };
        let sent_ns = u64::from_le_bytes(*stamp);
        if recorder.recording.get() {
            let now_ns = recorder.epoch.elapsed().as_nanos() as u64;
            let micros = now_ns.saturating_sub(sent_ns) / 1000;
            recorder
                .histogram
                .borrow_mut()
                .saturating_record(micros.max(1));
            tally.add_done();
        }
    }
}

/// Opens `count` connections, holds them while memory settles, and reads the target's RSS.
pub async fn idle(target: &Target, count: usize, settle: Duration) -> anyhow::Result<Idle> {
    let rss = || target.pid.map(procstat::resident_bytes).transpose();
    let rss_before = rss()?;
    let started = Instant::now();
    let streams = open_all(target, count).await?;
    let open_secs = started.elapsed().as_secs_f64();
    sleep(settle).await;
    let rss_after = rss()?;
    drop(streams);
    let bytes_per_connection = match (rss_before, rss_after) {
        (Some(before), Some(after)) => Some((after as f64 - before as f64) / count as f64),
        _ => None,
    };
    Ok(Idle {
        connections: count,
        rss_before,
        rss_after,
        bytes_per_connection,
        open_secs,
    })
}

/// Opens `count` upgraded connections, `OPEN_CONCURRENCY` at a time; any failure fails the run.
async fn open_all(target: &Target, count: usize) -> anyhow::Result<Vec<(Conn, FrameBuf)>> {
    ensure!(
        count <= MAX_SOURCES,
        "at most {MAX_SOURCES} connections, got {count}"
    );
    let opened = Rc::new(RefCell::new(Vec::with_capacity(count)));
    let next = Rc::new(Cell::new(0usize));
    let openers: Vec<_> = (0..OPEN_CONCURRENCY.min(count))
        .map(|_| {
            let (target, opened, next) = (target.clone(), opened.clone(), next.clone());
            spawn_local(async move {
                while next.get() < count {
                    let index = next.get();
                    next.set(index + 1);
                    let upgraded = timeout(
                        OPERATION_TIMEOUT,
                        client::connect(
                            &target.endpoint,
                            target.tls.as_ref(),
                            Some(source_address(OPEN_SOURCES, index)),
                            target.bearer.as_deref(),
                        ),
                    )
                    .await
                    .context("upgrade timed out")??;
                    opened.borrow_mut().push((upgraded.conn, upgraded.frames));
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let all = async {
        for opener in openers {
            opener.await.context("opener task")??;
        }
        anyhow::Ok(())
    };
    match timeout(OPEN_TIMEOUT, all).await {
        Ok(Ok(())) => Ok(opened.take()),
        Ok(Err(err)) => Err(err.context(format!(
            "opening {count} connections to {} ({} open)",
            target.endpoint.addr,
            opened.borrow().len()
        ))),
        Err(_) => bail!(
            "opening {count} connections to {} took over {OPEN_TIMEOUT:?} ({} open)",
            target.endpoint.addr,
            opened.borrow().len()
        ),
    }
}

/// Source addresses of storm clients: 127.1.0.1 onwards.
const STORM_SOURCES: Ipv4Addr = Ipv4Addr::new(127, 1, 0, 1);
/// Source addresses of the connections a run opens and holds: 127.2.0.1 onwards.
const OPEN_SOURCES: Ipv4Addr = Ipv4Addr::new(127, 2, 0, 1);
/// Clients per range of source addresses.
const MAX_SOURCES: usize = 65_000;

/// The `index`th address from `first`: every client of a run has an address of its own, as
/// clients after a real drain do, so that the gateway's per-address limits (at most 32
/// handshakes in progress per address) see many clients rather than one.
fn source_address(first: Ipv4Addr, index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(first) + index as u32))
}

/// A masked client frame holding `payload`.
fn client_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    frame::encode(&mut out, frame::OPCODE_BINARY, payload, Some(MASK));
    out
}

/// Tells the loops to stop and waits for them; each finishes its current operation, which
/// is itself bounded by `OPERATION_TIMEOUT`.
async fn stop_and_join(tally: &Tally, tasks: Vec<JoinHandle<()>>) {
    tally.stop.set(true);
    for task in tasks {
        // A task can only fail by panicking, which the runtime already reported.
        let _ = task.await;
    }
}
