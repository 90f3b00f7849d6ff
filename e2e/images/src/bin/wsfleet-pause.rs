//! The pod sandbox's pause process: it holds the pod's namespaces open, reaps the orphans a
//! shared PID namespace hands to its PID 1, and exits 0 on SIGTERM or SIGINT.
//!
//! The signals are blocked and taken with sigwait instead of caught by handlers: the kernel
//! drops a signal that PID 1 neither handles nor blocks, but always queues a blocked one. The
//! same code runs unchanged when the process is not PID 1.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

fn main() -> ExitCode {
    match pause() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wsfleet-pause: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Reaps children until SIGTERM or SIGINT arrives.
fn pause() -> nix::Result<()> {
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(signal);
    }
    signals.thread_block()?;
    // A child that exited before the mask was in place raised a SIGCHLD nobody waited for.
    reap_exited_children();
    loop {
        match signals.wait()? {
            Signal::SIGCHLD => reap_exited_children(),
            _ => return Ok(()),
        }
    }
}

/// Collects every child that has exited; SIGCHLDs coalesce, so one signal may stand for many.
fn reap_exited_children() {
    // waitpid answers StillAlive while the remaining children still run and fails (ECHILD) when
    // none remain.
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}
