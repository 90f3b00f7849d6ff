//! The process: `--worker-threads` (the size of the runtime's thread pool, and the
//! single-thread runtime that keeps every connection on the main thread), and its text log.

mod common;

use std::process::Command;

use common::*;

/// Threads of the gateway process named like the runtime's workers. The upstream is an IP
/// address, so no blocking thread (named alike) is started to resolve it.
fn worker_threads(gateway: &Gateway) -> usize {
    std::fs::read_dir(format!("/proc/{}/task", gateway.child.id()))
        .unwrap()
        .filter(|task| {
            let comm = std::fs::read_to_string(task.as_ref().unwrap().path().join("comm"));
            comm.is_ok_and(|name| name.trim() == "gateway-worker")
        })
        .count()
}

async fn start(adjust: impl FnOnce(&mut Command)) -> (EchoUpstream, Gateway) {
    let upstream = EchoUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start_command(dir, &upstream.url("/"), "", adjust).await;
    (upstream, gateway)
}

#[tokio::test]
async fn one_thread_serves_everything_from_the_main_thread() {
    let (_upstream, gateway) = start(|command| {
        command.env("WSFLEET_GATEWAY_WORKER_THREADS", "1");
    })
    .await;
    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    assert_eq!(
        round_trip(&mut client, "on one thread").await,
        "on one thread"
    );
    assert_eq!(
        worker_threads(&gateway),
        0,
        "no worker pool beside the main thread"
    );
}

#[tokio::test]
async fn the_flag_sizes_the_worker_pool() {
    let (_upstream, gateway) = start(|command| {
        command.args(["--worker-threads", "3"]);
    })
    .await;
    let (mut client, _) = connect(&gateway.url("/"), &[]).await.unwrap();
    assert_eq!(round_trip(&mut client, "pooled").await, "pooled");
    assert_eq!(worker_threads(&gateway), 3);
}

#[test]
fn zero_threads_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_wsfleet-gateway"))
        .args(["--config", "unused.yaml", "--worker-threads", "0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--worker-threads"), "{stderr}");
}

#[test]
fn text_logs_to_a_pipe_carry_no_colour_escapes() {
    let output = Command::new(env!("CARGO_BIN_EXE_wsfleet-gateway"))
        .args([
            "--config",
            "/nonexistent/gateway.yaml",
            "--log-format",
            "text",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid config"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}
