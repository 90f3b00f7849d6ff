//! What a proxy process costs, read from /proc.

use std::fs;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// `/proc/PID/stat` counts CPU time in USER_HZ ticks, which Linux fixes at 100 per second
/// for every architecture's user-space ABI.
const TICKS_PER_SECOND: u64 = 100;

/// User plus system CPU time of every thread of `pid` so far.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .with_context(|| format!("{path}: no ')' after the command name"))?
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat(5); `fields[0]` is field 3 (state).
    let ticks = |index: usize| -> anyhow::Result<u64> {
        fields
            .get(index)
            .with_context(|| format!("{path}: field {} missing", index + 3))?
            .parse()
            .with_context(|| format!("{path}: field {} is not a number", index + 3))
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_millis(total * 1000 / TICKS_PER_SECOND))
}

/// Resident set size of `pid` in bytes (`VmRSS` of /proc/PID/status).
pub fn resident_bytes(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let Some(line) = status.lines().find(|line| line.starts_with("VmRSS:")) else {
        bail!("{path} has no VmRSS line");
    };
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{path}: unreadable {line:?}"))?;
    Ok(kib * 1024)
}

/// Number of file descriptors `pid` holds open: two per proxied connection.
pub fn open_fds(pid: u32) -> anyhow::Result<usize> {
    let path = format!("/proc/{pid}/fd");
    Ok(fs::read_dir(&path)
        .with_context(|| format!("listing {path}"))?
        .count())
}

/// The kernel's count of connections a full listen queue turned away (`ListenOverflows` in
/// /proc/net/netstat), over every listener of the machine: such a client waits a SYN
/// retransmission, a second or more, before it is accepted.
pub fn listen_overflows() -> anyhow::Result<u64> {
    let path = "/proc/net/netstat";
    let netstat = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // Pairs of lines: `TcpExt: name name ...` then `TcpExt: value value ...`.
    let mut lines = netstat.lines().filter(|line| line.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        bail!("{path} has no TcpExt lines");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ListenOverflows")
        .with_context(|| format!("{path} has no ListenOverflows counter"))?
        .1
        .parse()
        .with_context(|| format!("{path}: unreadable ListenOverflows"))
}

/// The first child of `pid`, e.g. the worker under an nginx master.
pub fn first_child(pid: u32) -> anyhow::Result<Option<u32>> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let children = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    children
        .split_whitespace()
        .next()
        .map(str::parse)
        .transpose()
        .with_context(|| format!("{path}: {children:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_cpu_time_memory_and_descriptors() {
        let pid = std::process::id();
        let spin_until = std::time::Instant::now() + Duration::from_millis(50);
        while std::time::Instant::now() < spin_until {
            std::hint::black_box(0u64);
        }
        assert!(cpu_time(pid).unwrap() > Duration::ZERO);
        assert!(resident_bytes(pid).unwrap() > 1 << 20);
        let before = open_fds(pid).unwrap();
        let file = fs::File::open("/proc/self/stat").unwrap();
        assert_eq!(open_fds(pid).unwrap(), before + 1);
        drop(file);
    }

    #[test]
    fn listen_overflows_are_readable() {
        listen_overflows().unwrap();
    }

    #[test]
    fn a_missing_process_is_an_error_naming_the_path() {
        let err = cpu_time(u32::MAX).unwrap_err();
        assert!(
            format!("{err:#}").contains("/proc/4294967295/stat"),
            "{err:#}"
        );
    }
}
