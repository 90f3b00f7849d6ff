//! Reloads on file changes. Directories are watched, not files: Kubernetes updates mounted
//! ConfigMaps and Secrets by swapping a `..data` symlink, which a watch on the file itself
//! misses after the first swap. Any event re-reads everything; unchanged inputs are ignored.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use crate::config::GatewayConfig;
use crate::metrics::ReloadKind;
use crate::policy::Policy;
use crate::server::Shared;

/// Editors and the kubelet write in several steps; events this close together are one change.
const SETTLE: Duration = Duration::from_millis(100);

/// The files a policy is built from, to tell a real change from a repeated event.
#[derive(Debug, PartialEq, Eq)]
struct Inputs {
    config: String,
    jwt_key: Option<Vec<u8>>,
    ca: Option<Vec<u8>>,
}

impl Inputs {
    fn read(config_path: &Path) -> anyhow::Result<(Self, GatewayConfig)> {
        let config = GatewayConfig::load(config_path)?;
        let read = |path: Option<&Path>| path.map(std::fs::read).transpose();
        let inputs = Self {
            config: std::fs::read_to_string(config_path)?,
            jwt_key: read(config.auth.jwt.as_ref().map(|jwt| jwt.key_file.as_path()))
                .context("auth.jwt.keyFile")?,
            ca: read(config.upstream.ca_file.as_deref()).context("upstream.caFile")?,
        };
        Ok((inputs, config))
    }
}

/// Starts watching; the watcher lives in the reload task for the life of the process.
pub fn watch(shared: Arc<Shared>, config_path: PathBuf) -> anyhow::Result<()> {
    let (events, mut changes) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reads (the gateway's own among them) change nothing.
        if event.is_ok_and(|event| !event.kind.is_access()) {
            // A full channel already holds a pending reload.
            let _ = events.try_send(());
        }
    })
    .context("starting the file watcher")?;
    let (inputs, config) = Inputs::read(&config_path)?;
    let mut watched = BTreeSet::new();
    watch_directories(&mut watcher, &mut watched, &config_path, &config)?;

    let mut reloader = Reloader {
        shared,
        config_path,
        inputs,
        watched,
        last_error: None,
    };
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            tokio::time::sleep(SETTLE).await;
            while changes.try_recv().is_ok() {}
            reloader.reload_config(&mut watcher);
            reloader.reload_certificate();
        }
    });
    Ok(())
}

struct Reloader {
    shared: Arc<Shared>,
    config_path: PathBuf,
    inputs: Inputs,
    watched: BTreeSet<PathBuf>,
    /// The last refusal, so that events from unrelated files do not repeat it.
    last_error: Option<String>,
}

impl Reloader {
    /// Builds a new policy from changed inputs and swaps it in; on error the old one stays.
    fn reload_config(&mut self, watcher: &mut RecommendedWatcher) {
        let (inputs, config) = match Inputs::read(&self.config_path) {
            Ok(read) => read,
            Err(err) => return self.config_failed(&err),
        };
        if inputs == self.inputs {
            self.last_error = None;
            return;
        }
        let current = self.shared.policy.load();
        let restart_only = [
            (
                "listen.address",
                current.config.listen.address != config.listen.address,
            ),
            (
                "metrics.address",
                current.config.metrics.address != config.metrics.address,
            ),
            ("tls", current.config.tls != config.tls),
        ];
        for (field, changed) in restart_only {
            if changed {
                tracing::warn!(field, "this field takes effect on restart only");
            }
        }
        if let Err(err) = watch_directories(watcher, &mut self.watched, &self.config_path, &config)
        {
            tracing::warn!(error = %format!("{err:#}"), "cannot watch a new directory");
        }
        match Policy::build(config) {
            Ok(policy) => {
                self.shared.policy.store(Arc::new(policy));
                self.inputs = inputs;
                self.last_error = None;
                self.shared.metrics.reload(ReloadKind::Config, true);
                tracing::info!(path = %self.config_path.display(), "config reloaded");
            }
            Err(err) => self.config_failed(&err),
        }
    }

    fn config_failed(&mut self, err: &anyhow::Error) {
        let message = format!("{err:#}");
        if self.last_error.as_ref() == Some(&message) {
            return;
        }
        self.shared.metrics.reload(ReloadKind::Config, false);
        tracing::error!(error = %message, "config reload refused; the previous config stays");
        self.last_error = Some(message);
    }

    fn reload_certificate(&self) {
        let Some(certificate) = &self.shared.certificate else {
            return;
        };
        match certificate.reload() {
            Ok(false) => {}
            Ok(true) => {
                self.shared.metrics.reload(ReloadKind::Certificate, true);
                tracing::info!("certificate reloaded");
            }
            Err(err) => {
                self.shared.metrics.reload(ReloadKind::Certificate, false);
                tracing::error!(error = %format!("{err:#}"), "certificate reload refused; the previous certificate stays");
            }
        }
    }
}

/// Watches the directories of every file the config names (not yet watched).
fn watch_directories(
    watcher: &mut RecommendedWatcher,
    watched: &mut BTreeSet<PathBuf>,
    config_path: &Path,
    config: &GatewayConfig,
) -> anyhow::Result<()> {
    let mut files: Vec<&Path> = vec![config_path];
    if let Some(tls) = &config.tls {
        files.extend([tls.cert_file.as_path(), tls.key_file.as_path()]);
    }
    if let Some(jwt) = &config.auth.jwt {
        files.push(&jwt.key_file);
    }
    if let Some(ca) = &config.upstream.ca_file {
        files.push(ca);
    }
    for file in files {
        let directory = match file.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        if watched.insert(directory.clone()) {
            watcher
                .watch(&directory, RecursiveMode::NonRecursive)
                .with_context(|| format!("watching {}", directory.display()))?;
        }
    }
    Ok(())
}
