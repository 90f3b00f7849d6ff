//! A stand-in for "the world outside the machine", made by the test itself: a network namespace
//! linked to the host by a veth pair, holding a documentation address (RFC 5737) with a TCP
//! listener that counts connections. Removed with everything in it on drop.
//!
//! The namespace is held by a process of its own (`unshare --net`), never named under
//! /run/netns: `ip netns add` would bind-mount /run/netns over itself the first time, which
//! hides the namespaces containerd mounted there before, so that the pods using them could
//! never be deleted (containerd's unmount misses them and the removal fails with EBUSY).

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use nix::sched::{CloneFlags, setns};

use crate::command::run;
use crate::poll::{DEADLINE, eventually, give_up};

/// The outside host's address, from TEST-NET-3.
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const HOST_SIDE_IP: &str = "203.0.113.1/24";
const HOST_LINK: &str = "wsfleet-out0";
const INNER_LINK: &str = "wsfleet-out1";
pub const PORT: u16 = 80;

pub struct OutsideHost {
    accepted: Arc<AtomicUsize>,
    /// Holds the namespace; killed on drop.
    holder: Child,
}

impl OutsideHost {
    pub fn start() -> Result<Self> {
        remove_link();
        let mut holder = Command::new("unshare")
            .args(["--net", "sleep", "infinity"])
            .stdin(Stdio::null())
            .spawn()
            .context("starting the outside namespace's holder (unshare)")?;
        let made = link_and_listen(&mut holder);
        match made {
            Ok(accepted) => Ok(Self { accepted, holder }),
            Err(err) => {
                stop(&mut holder);
                Err(err)
            }
        }
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
        stop(&mut self.holder);
    }
}

/// The holder's network namespace, once `unshare` has made it.
fn await_namespace(holder: &mut Child) -> Result<String> {
    let path = format!("/proc/{}/ns/net", holder.id());
    let host = std::fs::read_link("/proc/self/ns/net").context("reading the host's namespace")?;
    eventually("the outside namespace to exist", DEADLINE, || {
        if let Some(status) = holder.try_wait()? {
            return Err(give_up(anyhow::anyhow!("unshare exited: {status}")));
        }
        ensure!(
            std::fs::read_link(&path)? != host,
            "still in the host's namespace"
        );
        Ok(())
    })?;
    Ok(path)
}

fn link_and_listen(holder: &mut Child) -> Result<Arc<AtomicUsize>> {
    let namespace = await_namespace(holder)?;
    run(
        "ip",
        &[
            "link", "add", HOST_LINK, "type", "veth", "peer", "name", INNER_LINK,
        ],
    )?;
    run(
        "ip",
        &["link", "set", INNER_LINK, "netns", &holder.id().to_string()],
    )?;
    run("ip", &["addr", "add", HOST_SIDE_IP, "dev", HOST_LINK])?;
    run("ip", &["link", "set", HOST_LINK, "up"])?;
    let net = format!("--net={namespace}");
    let inside = |args: &[&str]| {
        let mut full = vec![net.as_str(), "ip"];
        full.extend_from_slice(args);
        run("nsenter", &full)
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
    let listener = listen_inside(namespace)?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    Ok(accepted)
}

/// Stops the holder and removes the host's end of the pair (which takes the other end along;
/// the namespace goes once the listener, which still refers to it, is gone too).
fn stop(holder: &mut Child) {
    let _ = holder.kill();
    let _ = holder.wait();
    remove_link();
}

fn remove_link() {
    let _ = run("ip", &["link", "delete", HOST_LINK]);
}

/// Binds the listener from a thread that entered the namespace; a socket stays in the
/// namespace it was made in, whichever thread uses it later.
fn listen_inside(namespace: String) -> Result<TcpListener> {
    std::thread::spawn(move || -> Result<TcpListener> {
        let namespace = File::open(&namespace).context("opening the outside namespace")?;
        // Changes only this thread's namespace.
        setns(&namespace, CloneFlags::CLONE_NEWNET).context("entering the outside namespace")?;
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
