//! What a real node changes on the host, recorded before it starts and put back after it stops.
//!
//! The record is a file in the node's fixed state directory, written before anything is
//! changed, so that a run that was killed half-way is undone by the next one before it starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::command::run;

/// Kernel settings that kubelet, kube-proxy or the CNI bridge plugin may change.
pub const WATCHED_SYSCTLS: [&str; 8] = [
    "kernel/panic",
    "kernel/panic_on_oops",
    "vm/overcommit_memory",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
];

/// Directories outside the state directory that the node's components create.
pub const OUTSIDE_PATHS: [&str; 6] = [
    "/var/lib/kubelet",
    "/var/log/containers",
    "/run/containerd",
    "/var/lib/cni",
    "/run/netns",
    "/var/log/pods",
];

/// The host as it was before the node started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    pub sysctls: BTreeMap<String, String>,
    /// Which of [`OUTSIDE_PATHS`] existed.
    pub existing_paths: Vec<String>,
    /// The nftables tables (`family name`) that existed; kubelet and kube-proxy make others.
    pub nft_tables: Vec<String>,
}

impl HostRecord {
    /// Reads the current state of the host.
    pub fn capture() -> Result<Self> {
        let mut sysctls = BTreeMap::new();
        for key in WATCHED_SYSCTLS {
            if let Some(value) = read_sysctl(key)? {
                sysctls.insert(key.to_owned(), value);
            }
        }
        let existing_paths = OUTSIDE_PATHS
            .iter()
            .filter(|path| Path::new(path).exists())
            .map(|path| (*path).to_owned())
            .collect();
        Ok(Self {
            sysctls,
            existing_paths,
            nft_tables: nft_tables()?,
        })
    }

    pub fn save(&self, file: &Path) -> Result<()> {
        let record = json!({
            "sysctls": self.sysctls,
            "existing_paths": self.existing_paths,
            "nft_tables": self.nft_tables,
        });
        std::fs::write(file, serde_json::to_vec_pretty(&record)?)
            .with_context(|| format!("writing {}", file.display()))
    }

    pub fn load(file: &Path) -> Result<Option<Self>> {
        let text = match std::fs::read(file) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err).with_context(|| format!("reading {}", file.display())),
        };
        let record: Value =
            serde_json::from_slice(&text).with_context(|| format!("parsing {}", file.display()))?;
        let sysctls = record["sysctls"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_owned())))
            .collect();
        let strings = |key: &str| -> Vec<String> {
            record[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        };
        Ok(Some(Self {
            sysctls,
            existing_paths: strings("existing_paths"),
            nft_tables: strings("nft_tables"),
        }))
    }

    /// Puts every recorded sysctl back and removes the outside directories that did not exist.
    pub fn restore(&self) -> Result<()> {
        let mut failures = Vec::new();
        for (key, value) in &self.sysctls {
            if read_sysctl(key)?.as_deref() != Some(value.as_str())
                && let Err(err) = write_sysctl(key, value)
            {
                failures.push(format!("{err:#}"));
            }
        }
        for table in nft_tables()? {
            let result = if self.nft_tables.contains(&table) {
                remove_kubelet_chains(&table)
            } else {
                run_nft(&format!("delete table {table}"))
            };
            if let Err(err) = result {
                failures.push(format!("{err:#}"));
            }
        }
        for path in OUTSIDE_PATHS {
            if !self.existing_paths.iter().any(|existing| existing == path)
                && Path::new(path).exists()
                && let Err(err) = std::fs::remove_dir_all(path)
            {
                failures.push(format!("removing {path}: {err}"));
            }
        }
        if !failures.is_empty() {
            bail!("restoring the host: {}", failures.join("; "));
        }
        Ok(())
    }
}

/// The nftables tables, as `family name` (iptables-nft keeps its rules in them too).
fn nft_tables() -> Result<Vec<String>> {
    Ok(run("nft", &["list", "tables"])?
        .lines()
        .filter_map(|line| line.strip_prefix("table "))
        .map(str::to_owned)
        .collect())
}

fn run_nft(command: &str) -> Result<()> {
    run("nft", &command.split(' ').collect::<Vec<_>>()).map(drop)
}

/// The chains kubelet adds to tables that were there before (kube-proxy's go with
/// `kube-proxy --cleanup`): its canary everywhere, the hint, and the localnet firewall.
fn remove_kubelet_chains(table: &str) -> Result<()> {
    let listing = run("nft", &["list", "table", table])?;
    if listing.contains("jump KUBE-FIREWALL") {
        for hook in ["INPUT", "OUTPUT"] {
            let chain = run("nft", &["-a", "list", "chain", table, hook]).unwrap_or_default();
            for line in chain
                .lines()
                .filter(|line| line.contains("jump KUBE-FIREWALL"))
            {
                if let Some(handle) = line.rsplit("# handle ").next() {
                    run_nft(&format!(
                        "delete rule {table} {hook} handle {}",
                        handle.trim()
                    ))?;
                }
            }
        }
    }
    for chain in ["KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT"] {
        if listing.contains(&format!("chain {chain} ")) {
            run_nft(&format!("flush chain {table} {chain}"))?;
            run_nft(&format!("delete chain {table} {chain}"))?;
        }
    }
    Ok(())
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key)
}

/// The value of `key` (`net/ipv4/ip_forward`), or `None` where this kernel lacks it.
pub fn read_sysctl(key: &str) -> Result<Option<String>> {
    match std::fs::read_to_string(sysctl_path(key)) {
        Ok(value) => Ok(Some(value.trim().to_owned())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading sysctl {key}")),
    }
}

fn write_sysctl(key: &str, value: &str) -> Result<()> {
    std::fs::write(sysctl_path(key), value).with_context(|| format!("setting sysctl {key}={value}"))
}

/// Mount points at or below any of `roots`, newest first (mountinfo lists them in the order
/// they were made): a mount made over a directory hides older mounts below it, so those can
/// only go after it.
pub fn mounts_below(roots: &[&Path]) -> Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|mount| roots.iter().any(|root| mount.starts_with(root)))
        .collect();
    mounts.reverse();
    Ok(mounts)
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape_mount_path(field: &str) -> PathBuf {
    let mut path = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        path.push_str(&rest[..at]);
        let code = rest
            .get(at + 1..at + 4)
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match code {
            Some(byte) => {
                path.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                path.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    path.push_str(rest);
    PathBuf::from(path)
}

/// Unmounts everything at or below `roots`, newest first, except mounts at `keep`.
pub fn unmount_below(roots: &[&Path], keep: &[String]) -> Result<()> {
    let kept = |mount: &PathBuf| keep.iter().any(|kept| mount == Path::new(kept));
    for mount in mounts_below(roots)?.iter().filter(|mount| !kept(mount)) {
        // Lazy: a mount a dying process still holds goes as soon as it lets go. Failures are
        // judged by what is left below: a path listed twice (a shared bind mount and its
        // peer) goes with its first unmount.
        let _ = run("umount", &["--lazy", &mount.display().to_string()]);
    }
    let left: Vec<String> = mounts_below(roots)?
        .iter()
        .filter(|mount| !kept(mount))
        .map(|mount| mount.display().to_string())
        .collect();
    if !left.is_empty() {
        bail!("still mounted: {}", left.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_with_escapes_are_read_back() {
        assert_eq!(
            unescape_mount_path(r"/run/netns/a\040b\134c"),
            PathBuf::from(r"/run/netns/a b\c")
        );
    }

    #[test]
    fn a_record_survives_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let record = HostRecord {
            sysctls: BTreeMap::from([("kernel/panic".to_owned(), "1".to_owned())]),
            existing_paths: vec!["/run/netns".to_owned()],
            nft_tables: vec!["ip filter".to_owned()],
        };
        let file = dir.path().join("host.json");
        record.save(&file).unwrap();
        assert_eq!(HostRecord::load(&file).unwrap(), Some(record));
        assert_eq!(HostRecord::load(&dir.path().join("none")).unwrap(), None);
    }
}
