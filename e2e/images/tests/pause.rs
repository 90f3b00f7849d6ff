//! wsfleet-pause as a real process: it reaps the children it is given and exits 0 on SIGTERM.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const DEADLINE: Duration = Duration::from_secs(20);
const PAUSE: &str = env!("CARGO_BIN_EXE_wsfleet-pause");

/// A running wsfleet-pause, killed if a test fails before it exits.
struct Pause(Child);

impl Pause {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Whether the process sits in sigwait, ready for SIGTERM; a SIGTERM sent any earlier
    /// would kill it instead of being taken. (/proc's SigBlk cannot tell: the kernel unblocks
    /// the awaited signals for the length of the wait.)
    fn waits_for_signals(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/wchan", self.pid()))
            .is_ok_and(|wchan| wchan.contains("sigtimedwait"))
    }

    /// The process's children, zombies included, as the kernel lists them.
    fn children(&self) -> String {
        let pid = self.pid();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap()
    }

    fn terminate(&mut self) -> ExitStatus {
        eventually("wsfleet-pause waits for signals", || {
            self.waits_for_signals()
        });
        kill(Pid::from_raw(self.pid() as i32), Signal::SIGTERM).unwrap();
        self.0.wait().unwrap()
    }
}

impl Drop for Pause {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `condition` until it holds, failing the test after DEADLINE.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < DEADLINE,
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exits_zero_on_sigterm() {
    let mut pause = Pause(Command::new(PAUSE).spawn().unwrap());
    assert_eq!(pause.terminate().code(), Some(0));
}

#[test]
fn reaps_the_children_it_inherits() {
    // The shell's background children become wsfleet-pause's own when the shell execs it, the
    // way orphans in a pod's shared PID namespace become its PID 1's.
    let mut pause = Pause(
        Command::new("sh")
            .args(["-c", "sleep 0.2 & sleep 0.4 & exec \"$0\"", PAUSE])
            .spawn()
            .unwrap(),
    );
    // Once it waits for signals it has exec'd, so the children exist, running or as zombies.
    eventually("wsfleet-pause waits for signals", || {
        pause.waits_for_signals()
    });
    eventually("the children have exited and been reaped", || {
        pause.children().trim().is_empty()
    });
    assert_eq!(pause.terminate().code(), Some(0));
}
