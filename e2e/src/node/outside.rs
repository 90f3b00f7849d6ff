//! A stand-in for "the world outside the machine", made by the test itself: a network namespace
//! linked to the host by a veth pair, holding a documentation address (RFC 5737) with a TCP
//! listener that counts connections. Removed with everything in it on drop.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::command::run;

/// The outside host's address, from TEST-NET-3.
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const HOST_SIDE_IP: &str = "203.0.113.1/24";
const NAMESPACE: &str = "wsfleet-outside";
const HOST_LINK: &str = "wsfleet-out0";
const INNER_LINK: &str = "wsfleet-out1";
pub const PORT: u16 = 80;

pub struct OutsideHost {
    accepted: Arc<AtomicUsize>,
}

impl OutsideHost {
    pub fn start() -> Result<Self> {
        remove();
        run("ip", &["netns", "add", NAMESPACE])?;
        let made = Self::link_and_listen();
        if made.is_err() {
            remove();
        }
        made
    }

    fn link_and_listen() -> Result<Self> {
        run(
            "ip",
            &[
                "link", "add", HOST_LINK, "type", "veth", "peer", "name", INNER_LINK,
            ],
        )?;
        run("ip", &["link", "set", INNER_LINK, "netns", NAMESPACE])?;
        run("ip", &["addr", "add", HOST_SIDE_IP, "dev", HOST_LINK])?;
        run("ip", &["link", "set", HOST_LINK, "up"])?;
        let inside = |args: &[&str]| {
            let mut full = vec!["netns", "exec", NAMESPACE, "ip"];
            full.extend_from_slice(args);
            run("ip", &full)
        };
        inside(&[
            "addr",
            "add",
            &format!("{OUTSIDE_IP}/24"),
            "dev",
            INNER_LINK,
        ])?;
        inside(&["link", "set", INNER_LINK, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        // Replies to any sender go back through the host, as they would from a real network.
        inside(&["route", "add", "default", "via", "203.0.113.1"])?;
        let listener = listen_inside()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Ok(Self { accepted })
    }

    /// Connections the listener has accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn address(&self) -> SocketAddr {
        SocketAddr::new(OUTSIDE_IP.into(), PORT)
    }
}

impl Drop for OutsideHost {
    fn drop(&mut self) {
        remove();
    }
}

/// Deleting the namespace deletes its end of the pair, and with it the host's end.
fn remove() {
    let _ = run("ip", &["netns", "delete", NAMESPACE]);
    let _ = run("ip", &["link", "delete", HOST_LINK]);
}

/// Binds the listener from a thread that entered the namespace; a socket stays in the
/// namespace it was made in, whichever thread uses it later.
fn listen_inside() -> Result<TcpListener> {
    std::thread::spawn(|| -> Result<TcpListener> {
        let namespace = File::open(format!("/run/netns/{NAMESPACE}"))
            .context("opening the outside namespace")?;
        // SAFETY: setns on a valid namespace descriptor; it changes only this thread.
        let entered = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } == 0;
        ensure!(
            entered,
            "entering {NAMESPACE}: {}",
            std::io::Error::last_os_error()
        );
        let listener = TcpListener::bind((OUTSIDE_IP, PORT))
            .with_context(|| format!("listening on {OUTSIDE_IP}:{PORT}"))?;
        Ok(listener)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
}

/// Whether a TCP connection from the host to the outside host succeeds within `timeout`.
pub fn reachable_from_host(address: SocketAddr, timeout: Duration) -> bool {
    std::net::TcpStream::connect_timeout(&address, timeout).is_ok()
}
