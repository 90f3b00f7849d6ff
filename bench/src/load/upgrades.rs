//! Loads made of upgrades: the storm (every client at once, or paced) and the handshake loop.

use std::collections::BTreeMap;

use super::*;
use crate::handshake::NotUpgraded;

/// `clients` connections, each from an address of its own in 127.1.0.0/16 (so per-address
/// limits see many clients, as after a real drain), started all at once or at `rate` per
/// second, held until the last one has upgraded, then closed together.
pub async fn storm(target: &Target, clients: usize, rate: Option<f64>) -> anyhow::Result<Storm> {
    ensure!(
        (1..=MAX_SOURCES).contains(&clients),
        "a storm has 1 to {MAX_SOURCES} clients, got {clients}"
    );
    let histogram = Rc::new(RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram bounds")?,
    ));
    let last_upgrade = Rc::new(Cell::new(None::<Instant>));
    let overflows_before = procstat::listen_overflows()?;
    let cpu_before = target.pid.map(procstat::cpu_time).transpose()?;
    let started = Instant::now();
    let mut clients_started = Vec::with_capacity(clients);
    for index in 0..clients {
        if let Some(rate) = rate {
            sleep_until((started + Duration::from_secs_f64(index as f64 / rate)).into()).await;
        }
        let source = source_address(STORM_SOURCES, index);
        let (target, histogram, last_upgrade) =
            (target.clone(), histogram.clone(), last_upgrade.clone());
        clients_started.push(spawn_local(async move {
            let began = Instant::now();
            let upgrade = client::connect(
                &target.endpoint,
                target.tls.as_ref(),
                Some(source),
                target.bearer.as_deref(),
            );
            let connection = match timeout(STORM_TIMEOUT, upgrade).await {
                Err(_elapsed) => return Err(format!("no 101 within {STORM_TIMEOUT:?}")),
                Ok(Err(error)) => return Err(failure_cause(&error)),
                Ok(Ok(connection)) => connection,
            };
            let now = Instant::now();
            let micros = now.duration_since(began).as_micros() as u64;
            histogram.borrow_mut().saturating_record(micros.max(1));
            last_upgrade.set(Some(now));
            Ok(connection)
        }));
    }
    let mut held = Vec::with_capacity(clients);
    let mut failures = BTreeMap::new();
    for client in clients_started {
        match client.await.context("storm client task")? {
            Ok(connection) => held.push(connection),
            Err(cause) => *failures.entry(cause).or_default() += 1,
        }
    }
    let cpu_after = target.pid.map(procstat::cpu_time).transpose()?;
    let overflows = procstat::listen_overflows()? - overflows_before;
    drop(held);
    let histogram = histogram.borrow();
    let upgraded = histogram.len();
    let secs = last_upgrade
        .get()
        .map_or(0.0, |last| last.duration_since(started).as_secs_f64());
    let cpu = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) if upgraded > 0 => Some((after - before).as_secs_f64()),
        _ => None,
    };
    let at = |quantile: f64| histogram.value_at_quantile(quantile) as f64;
    Ok(Storm {
        clients,
        offered_per_sec: rate,
        upgraded,
        per_sec: if secs > 0.0 {
            upgraded as f64 / secs
        } else {
            0.0
        },
        p50_us: at(0.50),
        p99_us: at(0.99),
        p999_us: at(0.999),
        max_us: histogram.max() as f64,
        cpu_us_per_handshake: cpu.map(|cpu| cpu * 1e6 / upgraded as f64),
        per_cpu_sec: cpu
            .filter(|&cpu| cpu > 0.0)
            .map(|cpu| upgraded as f64 / cpu),
        listen_overflows: overflows,
        failures,
    })
}

/// Why a storm client did not upgrade, coarse enough to count: the socket error's kind, the
/// status a proxy answered with, or else the innermost message.
fn failure_cause(error: &anyhow::Error) -> String {
    for cause in error.chain() {
        if let Some(answer) = cause.downcast_ref::<NotUpgraded>() {
            return format!("answered {}", answer.status);
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return format!("{:?}", io.kind());
        }
    }
    error.root_cause().to_string()
}

/// `concurrency` loops that each upgrade, close cleanly, and start over.
pub async fn handshakes(
    target: &Target,
    concurrency: usize,
    window: Window,
) -> anyhow::Result<Handshakes> {
    let tally = Rc::new(Tally::default());
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (mut target, tally) = (target.clone(), tally.clone());
            // Each loop resumes its own sessions, as each real client does.
            target.tls = target.tls.as_ref().map(TlsClient::with_own_sessions);
            spawn_local(async move {
                while !tally.stop.get() {
                    match timeout(OPERATION_TIMEOUT, upgrade_and_close(&target)).await {
                        Ok(Ok(resumed)) => {
                            tally.add_done();
                            if resumed {
                                tally.resumed.set(tally.resumed.get() + 1);
                            }
                        }
                        _ => tally.add_error(),
                    }
                }
            })
        })
        .collect();
    sleep(window.warmup).await;
    let meter = WindowMeter::start(target.pid, &tally)?;
    let resumed_before = tally.resumed.get();
    sleep(window.measure).await;
    let (per_sec, done, cpu_us) = meter.finish(&tally, 1.0)?;
    let resumed = tally.resumed.get() - resumed_before;
    stop_and_join(&tally, tasks).await;
    Ok(Handshakes {
        per_sec,
        cpu_us_per_handshake: cpu_us,
        per_cpu_sec: cpu_us.filter(|&cpu| cpu > 0.0).map(|cpu| 1e6 / cpu),
        resumed_share: (target.tls.is_some() && done > 0.0).then(|| resumed as f64 / done),
        errors: tally.errors.get(),
    })
}

/// One upgrade, closed cleanly; whether its TLS session was resumed.
async fn upgrade_and_close(target: &Target) -> anyhow::Result<bool> {
    let client::Upgraded {
        conn: mut stream,
        mut frames,
        resumed,
    } = client::connect(
        &target.endpoint,
        target.tls.as_ref(),
        None,
        target.bearer.as_deref(),
    )
    .await?;
    let mut close = Vec::with_capacity(16);
    frame::encode(
        &mut close,
        frame::OPCODE_CLOSE,
        &1000u16.to_be_bytes(),
        Some(MASK),
    );
    stream.write_all(&close).await?;
    stream.flush().await?;
    frames.read_close(&mut stream).await?;
    Ok(resumed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_counted_by_its_socket_error_or_answer() {
        let reset = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
            .context("connecting to 127.0.0.1:1");
        assert_eq!(failure_cause(&reset), "ConnectionReset");
        let refused = anyhow::Error::new(NotUpgraded {
            addr: ([127, 0, 0, 1], 1).into(),
            status: 503,
            reason: "Service Unavailable".into(),
        });
        assert_eq!(failure_cause(&refused), "answered 503");
        let closed = anyhow::anyhow!("connection closed during the handshake").context("upgrade");
        assert_eq!(
            failure_cause(&closed),
            "connection closed during the handshake"
        );
    }
}
