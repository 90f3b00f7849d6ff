//! The pod sandbox's pause process: it holds the pod's namespaces open, reaps the orphans a
//! shared PID namespace hands to its PID 1, and exits 0 on SIGTERM or SIGINT.
//!
//! The signals are blocked and taken with sigwait instead of caught by handlers: the kernel
//! drops a signal that PID 1 neither handles nor blocks, but always queues a blocked one. The
//! same code runs unchanged when the process is not PID 1.

use std::io;
use std::process::ExitCode;
use std::ptr;

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
fn pause() -> io::Result<()> {
    let signals = block_signals(&[libc::SIGCHLD, libc::SIGTERM, libc::SIGINT])?;
    // A child that exited before the mask was in place raised a SIGCHLD nobody waited for.
    reap_exited_children();
    loop {
        match wait_for_signal(&signals)? {
            libc::SIGCHLD => reap_exited_children(),
            _ => return Ok(()),
        }
    }
}

fn block_signals(signals: &[libc::c_int]) -> io::Result<libc::sigset_t> {
    // SAFETY: the set is initialised by sigemptyset before use; pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
        match libc::pthread_sigmask(libc::SIG_BLOCK, &set, ptr::null_mut()) {
            0 => Ok(set),
            error => Err(io::Error::from_raw_os_error(error)),
        }
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> io::Result<libc::c_int> {
    let mut signal = 0;
    // SAFETY: both pointers are valid for the duration of the call.
    match unsafe { libc::sigwait(set, &mut signal) } {
        0 => Ok(signal),
        error => Err(io::Error::from_raw_os_error(error)),
    }
}

/// Collects every child that has exited; SIGCHLDs coalesce, so one signal may stand for many.
fn reap_exited_children() {
    // waitpid returns 0 while the remaining children still run and -1 (ECHILD) when none remain.
    // SAFETY: a null status pointer is allowed.
    while unsafe { libc::waitpid(-1, ptr::null_mut(), libc::WNOHANG) } > 0 {}
}
