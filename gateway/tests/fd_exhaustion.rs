//! Out of file descriptors: the accept loop backs off and logs now and then instead of once per
//! attempt, and serves clients again once descriptors are free.

mod common;

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::time::Duration;

use common::*;
use tokio::net::TcpStream;

/// The gateway's open-file limit: its own descriptors (runtime, listeners, watcher) and a few
/// dozen connections.
const FILE_LIMIT: u64 = 64;

fn accept_failures(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("accept failed"))
        .count()
}

#[tokio::test]
async fn accept_backs_off_while_out_of_file_descriptors() {
    let upstream = EchoUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let log_file = std::fs::File::create(&log).unwrap();
    // Sockets that never finish their handshake stay open for a minute; the trusted proxy
    // lifts the cap on pending handshakes per address, so they all hold a descriptor.
    let config = "auth:\n  trustedProxies: [127.0.0.1/32]\nlimits:\n  handshakeTimeout: 60s\n";
    let gateway = Gateway::start_command(dir, &upstream.url("/"), config, |command| {
        command.stderr(log_file);
        // SAFETY: setrlimit is async-signal-safe, and nothing else runs in the child.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: FILE_LIMIT,
                    rlim_max: FILE_LIMIT,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    })
    .await;

    let mut idle = Vec::new();
    for _ in 0..FILE_LIMIT {
        idle.push(TcpStream::connect(gateway.address).await.unwrap());
    }
    eventually("an accept to fail", || async { accept_failures(&log) > 0 }).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failures = accept_failures(&log);
    assert!(
        failures < 10,
        "{failures} 'accept failed' lines in about 3 seconds"
    );

    drop(idle);
    let (mut client, _) = within(
        "a client served once descriptors are free",
        connect(&gateway.url("/"), &[]),
    )
    .await
    .unwrap();
    assert_eq!(round_trip(&mut client, "back").await, "back");
}
