//! The files a reload depends on, so that events for their neighbours (a log written beside
//! the config, an editor's swap file) do not trigger reloads.
//!
//! Directories are watched, not files: Kubernetes updates mounted ConfigMaps and Secrets by
//! swapping a `..data` symlink, which a watch on the file itself misses after the first swap.
//! An event matters when it names one of the files, or that `..data` link.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use wsfleet_config::GatewayConfig;

/// The link Kubernetes swaps to update every file of a mounted volume at once.
const KUBERNETES_DATA_LINK: &str = "..data";

/// The watched files, shared between the watcher's thread and the reload task.
#[derive(Debug, Clone, Default)]
pub(crate) struct WatchedFiles {
    /// Each file as `directory.join(name)`, the form the watcher reports events in.
    files: Arc<Mutex<BTreeSet<PathBuf>>>,
}

impl WatchedFiles {
    /// True when `event` may have changed an input. A rescan request (events were lost) may
    /// have hidden any change.
    pub fn matters(&self, event: &notify::Event) -> bool {
        if event.kind.is_access() {
            // Reads (the gateway's own among them) change nothing.
            return false;
        }
        let files = self
            .files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        event.need_rescan()
            || event.paths.iter().any(|path| {
                files.contains(path) || path.file_name() == Some(OsStr::new(KUBERNETES_DATA_LINK))
            })
    }

    /// Adds every file `config` names (and the config itself); returns their directories.
    pub fn add(&self, config_path: &Path, config: &GatewayConfig) -> BTreeSet<PathBuf> {
        let mut named: Vec<&Path> = vec![config_path];
        if let Some(tls) = &config.tls {
            named.extend([tls.cert_file.as_path(), tls.key_file.as_path()]);
        }
        if let Some(jwt) = &config.auth.jwt {
            named.extend(jwt.key_file.as_deref());
            named.extend(jwt.jwks.as_ref().and_then(|jwks| jwks.ca_file.as_deref()));
        }
        if let Some(ca) = &config.upstream.ca_file {
            named.push(ca);
        }
        let mut files = self
            .files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut directories = BTreeSet::new();
        for file in named {
            let directory = match file.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
                _ => PathBuf::from("."),
            };
            if let Some(name) = file.file_name() {
                files.insert(directory.join(name));
            }
            directories.insert(directory);
        }
        directories
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, DataChange, EventKind, ModifyKind, RenameMode};

    use super::*;

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        paths.iter().fold(notify::Event::new(kind), |event, path| {
            event.add_path(path.into())
        })
    }

    fn watched() -> WatchedFiles {
        let mut config = GatewayConfig::for_upstream("wss://backend:9000/");
        config.tls = Some(wsfleet_config::TlsConfig {
            cert_file: "/tls/tls.crt".into(),
            key_file: "/tls/tls.key".into(),
        });
        let watched = WatchedFiles::default();
        let directories = watched.add(Path::new("gateway.yaml"), &config);
        assert_eq!(
            directories,
            BTreeSet::from([PathBuf::from("."), PathBuf::from("/tls")])
        );
        watched
    }

    #[test]
    fn only_the_named_files_and_the_data_link_matter() {
        let watched = watched();
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert!(watched.matters(&event(write, &["./gateway.yaml"])));
        assert!(watched.matters(&event(write, &["/tls/tls.key"])));
        assert!(!watched.matters(&event(write, &["./gateway.log"])));
        assert!(!watched.matters(&event(write, &["/tls/other"])));
        let swap = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(watched.matters(&event(swap, &["/tls/..data_tmp", "/tls/..data"])));
        assert!(watched.matters(&event(swap, &["./gateway.new", "./gateway.yaml"])));
        let create = EventKind::Create(CreateKind::File);
        assert!(!watched.matters(&event(create, &["./gateway.new"])));
    }

    #[test]
    fn reads_do_not_matter_and_lost_events_do() {
        let watched = watched();
        let read = EventKind::Access(notify::event::AccessKind::Any);
        assert!(!watched.matters(&event(read, &["./gateway.yaml"])));
        let rescan = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert!(watched.matters(&rescan));
    }
}
