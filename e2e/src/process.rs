//! Child processes owned by the harness.
//!
//! Each child runs in its own process group so that stopping it also stops anything it
//! forked, writes stdout and stderr to a log file, and is killed when its handle drops.
//! As a backstop for a test binary that dies without running destructors, children get
//! `PR_SET_PDEATHSIG`; the kernel ties that signal to the *thread* that forked, so every
//! child is forked by one keeper thread that lives as long as the process.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::prctl;
use nix::sys::signal::{SigSet, Signal, killpg};
use nix::unistd::Pid;

/// How much of a log is shown when a process fails or a test panics.
const LOG_TAIL_BYTES: u64 = 4096;

/// A running child process, killed with its whole process group on drop.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
}

impl ManagedProcess {
    /// Starts `command` with stdout and stderr appended to `log_path`.
    pub fn spawn(name: &str, mut command: Command, log_path: &Path) -> Result<Self> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("opening log file {}", log_path.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        // The pre-exec hook is unsafe because it runs between fork and exec; prctl is
        // async-signal-safe and touches no memory of the parent.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(|| Ok(prctl::set_pdeathsig(Signal::SIGKILL)?));
        }
        let child = spawn_on_keeper_thread(command)
            .with_context(|| format!("starting {name} (log {})", log_path.display()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log_path: log_path.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The exit status if the process has ended, without waiting.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Fails with the log tail if the process has already exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.exit_status() {
            None => Ok(()),
            Some(status) => anyhow::bail!(
                "{} exited with {status}; log tail:\n{}",
                self.name,
                self.log_tail()
            ),
        }
    }

    /// Sends SIGTERM to the group and waits up to `grace` before killing it.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exit_status() {
                self.signal(Signal::SIGKILL);
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        None
    }

    /// Kills the whole process group at once and reaps the child.
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// The last few kilobytes of the process's log.
    pub fn log_tail(&self) -> String {
        read_tail(&self.log_path, LOG_TAIL_BYTES)
            .unwrap_or_else(|err| format!("(cannot read {}: {err})", self.log_path.display()))
    }

    /// Sends `signal` to the process and everything it forked.
    pub fn signal(&self, signal: Signal) {
        // The child is its group's leader, so its pid is the group id. A group that is already
        // gone yields ESRCH, which is fine.
        let _ = killpg(pid_of(&self.child), signal);
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of {} ({}) ---\n{}",
                self.name,
                self.log_path.display(),
                self.log_tail()
            );
        }
        self.kill();
    }
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Forks `command` from the keeper thread, which never exits (see the module docs).
fn spawn_on_keeper_thread(command: Command) -> io::Result<Child> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("process-keeper".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("spawning the process keeper thread");
        Mutex::new(requests)
    });
    let (reply, answer) = mpsc::channel();
    keeper
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send((command, reply))
        .map_err(|_| io::Error::other("process keeper thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("process keeper thread is gone"))?
}

fn read_tail(path: &Path, max_bytes: u64) -> io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Blocks SIGINT and SIGTERM for this thread and the threads it starts afterwards, so that
/// [`wait_for_signal`] receives them instead of the process dying without cleanup.
pub fn block_termination_signals() -> Result<SigSet> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().context("blocking SIGINT and SIGTERM")?;
    Ok(set)
}

/// Waits for one of the signals blocked by [`block_termination_signals`].
pub fn wait_for_signal(set: &SigSet) -> Result<Signal> {
    set.wait().context("waiting for a signal")
}

/// Runs `cleanup` when the process exits normally. Statics are never dropped, so this is how
/// the processes and directories a shared static owns are cleaned up.
pub fn at_exit(cleanup: extern "C" fn()) {
    // A foreign call, so unsafe to the compiler; it only registers a plain function.
    #[allow(unsafe_code)]
    unsafe {
        libc::atexit(cleanup);
    }
}

/// The pid of `child` as the signal calls take it.
fn pid_of(child: &Child) -> Pid {
    // Linux pids are at most 2^22.
    Pid::from_raw(child.id() as i32)
}

/// Peak resident memory of a live process in KiB (`VmHWM` in /proc/PID/status).
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmHWM")
}

/// The resident memory of process `pid` now, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS")
}

/// A `kB` field of `/proc/PID/status`.
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// User plus system CPU time of every thread of process `pid` so far (fields 14 and 15 of
/// /proc/PID/stat, in the USER_HZ ticks of 1/100 s that Linux fixes for user space).
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name may hold spaces; the numbered fields resume after its last ')'.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|field| {
            field
                .parse::<u64>()
                .with_context(|| format!("{path}: {field:?}"))
        })
        .sum::<Result<u64>>()?;
    Ok(Duration::from_millis(ticks * 10))
}

#[cfg(test)]
mod tests {
    use nix::sys::signal::raise;

    use super::*;

    /// Whether `pid` is still a process that has not exited (a zombie counts as gone).
    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| Some(stat.rsplit_once(')')?.1.split_whitespace().next()? != "Z"))
            .unwrap_or(false)
    }

    #[test]
    fn terminating_a_process_stops_what_it_forked() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sh.log");
        let mut command = Command::new("sh");
        command.args(["-c", "sleep 60 & echo $!; wait"]);
        let mut process = ManagedProcess::spawn("sh", command, &log).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let forked = loop {
            if let Ok(pid) = std::fs::read_to_string(&log).unwrap().trim().parse::<i32>() {
                break pid;
            }
            assert!(Instant::now() < deadline, "sh printed no pid");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(process.ensure_running().is_ok());
        assert!(alive(forked));
        assert!(process.terminate(Duration::from_secs(5)).is_some());
        while alive(forked) {
            assert!(
                Instant::now() < deadline,
                "the forked sleep outlived its group"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(process.ensure_running().is_err());
    }

    #[test]
    fn a_blocked_termination_signal_is_waited_for() {
        let set = block_termination_signals().unwrap();
        raise(Signal::SIGTERM).unwrap();
        assert_eq!(wait_for_signal(&set).unwrap(), Signal::SIGTERM);
    }

    #[test]
    fn cpu_time_and_memory_of_this_process_are_read() {
        let pid = std::process::id();
        let spent = cpu_time(pid).unwrap();
        let busy_until = Instant::now() + Duration::from_millis(50);
        while Instant::now() < busy_until {
            std::hint::black_box(0);
        }
        assert!(cpu_time(pid).unwrap() >= spent);
        let resident = rss_kib(pid).unwrap();
        assert!(resident > 0);
        assert!(peak_rss_kib(pid).unwrap() >= resident);
    }
}
