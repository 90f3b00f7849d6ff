//! A TCP relay on 127.0.0.1 in front of one address that a test can switch into a black hole:
//! it then forwards no byte in either direction on existing connections and accepts new ones
//! without ever connecting them through, as a network partition that drops packets looks to
//! both ends. Restored, it forwards again what was held, as TCP retransmits after a partition
//! heals. One process's traffic is cut this way without touching the host firewall.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};

use anyhow::{Context, Result};

/// The relay; it stops accepting when dropped (connections end when their peers close).
pub struct Blackhole {
    address: SocketAddr,
    gate: Arc<Gate>,
}

/// Whether bytes may pass, and whether the relay is being dropped.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default, Clone, Copy)]
struct GateState {
    blocked: bool,
    closing: bool,
}

impl Gate {
    fn set(&self, change: impl FnOnce(&mut GateState)) {
        change(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_all();
    }

    /// Waits while the relay is a black hole; returns whether it is closing.
    fn pass(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = self
            .changed
            .wait_while(state, |state| state.blocked && !state.closing)
            .unwrap_or_else(|p| p.into_inner());
        state.closing
    }
}

impl Blackhole {
    /// Listens on 127.0.0.1:0 and forwards every connection to `target`.
    pub fn start(target: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the relay")?;
        let address = listener.local_addr()?;
        let gate = Arc::new(Gate::default());
        let accepting = gate.clone();
        std::thread::Builder::new()
            .name("blackhole-accept".into())
            .spawn(move || accept(&listener, target, &accepting))
            .context("starting the relay thread")?;
        Ok(Self { address, gate })
    }

    /// `https://127.0.0.1:PORT` of the relay.
    pub fn url(&self) -> String {
        format!("https://{}", self.address)
    }

    /// Stops every byte from passing, until [`Blackhole::restore`].
    pub fn swallow(&self) {
        self.gate.set(|state| state.blocked = true);
    }

    /// Lets bytes pass again, those held included.
    pub fn restore(&self) {
        self.gate.set(|state| state.blocked = false);
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.gate.set(|state| state.closing = true);
        // Wakes the accepting thread, which then sees that the relay is closing.
        let _ = TcpStream::connect(self.address);
    }
}

fn accept(listener: &TcpListener, target: SocketAddr, gate: &Arc<Gate>) {
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let connection = gate.clone();
        // A new connection through a black hole is accepted here and never connected through.
        std::thread::spawn(move || {
            let gate = connection;
            if gate.pass() {
                return;
            }
            if let Ok(server) = TcpStream::connect(target) {
                relay(client, server, gate);
            }
        });
        if gate.state.lock().unwrap_or_else(|p| p.into_inner()).closing {
            return;
        }
    }
}

/// Pumps both directions until either side closes.
fn relay(client: TcpStream, server: TcpStream, gate: Arc<Gate>) {
    let (Ok(client_reader), Ok(server_reader)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let upstream_gate = gate.clone();
    std::thread::spawn(move || pump(client_reader, server, &upstream_gate));
    pump(server_reader, client, &gate);
}

/// Copies `from` to `to`; a chunk read while the gate is shut waits there, so nothing passes.
fn pump(mut from: TcpStream, mut to: TcpStream, gate: &Gate) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let read = from.read(&mut buffer).unwrap_or(0);
        // An end of stream is a packet too: it waits like data.
        let closing = gate.pass();
        if read == 0 || closing || to.write_all(&buffer[..read]).is_err() {
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
            return;
        }
    }
}
