//! Reloads on changes to the config and the files it names (see [`crate::process::watched`] for which
//! events count). Every such change re-reads everything; unchanged inputs are ignored. A
//! policy with a new JWKS source is swapped in once that source answers ([`crate::policy::staged`]);
//! a later change supersedes it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use crate::policy::running::Policy;
use crate::policy::staged::{Progress, Staged, StagedPolicy};
use crate::process::watched::WatchedFiles;
use crate::state::Shared;
use crate::telemetry::metrics::ReloadKind;
use wsfleet_config::GatewayConfig;

/// Editors and the kubelet write in several steps; events this close together are one change.
const SETTLE: Duration = Duration::from_millis(100);

/// The files a policy is built from, to tell a real change from a repeated event.
#[derive(Debug, PartialEq, Eq)]
struct Inputs {
    config: String,
    jwt_key: Option<Vec<u8>>,
    jwks_ca: Option<Vec<u8>>,
    ca: Option<Vec<u8>>,
}

impl Inputs {
    /// Reads the config once, so that the text compared and the config built are the same.
    fn read(config_path: &Path) -> anyhow::Result<(Self, GatewayConfig)> {
        let text = std::fs::read_to_string(config_path)
            .with_context(|| format!("reading gateway config {}", config_path.display()))?;
        let config = GatewayConfig::from_yaml(&text)
            .with_context(|| format!("invalid gateway config {}", config_path.display()))?;
        let read = |path: Option<&Path>| path.map(std::fs::read).transpose();
        let jwt = config.auth.jwt.as_ref();
        let inputs = Self {
            config: text,
            jwt_key: read(jwt.and_then(|jwt| jwt.key_file.as_deref()))
                .context("auth.jwt.keyFile")?,
            jwks_ca: read(
                jwt.and_then(|jwt| jwt.jwks.as_ref())
                    .and_then(|jwks| jwks.ca_file.as_deref()),
            )
            .context("auth.jwt.jwks.caFile")?,
            ca: read(config.upstream.ca_file.as_deref()).context("upstream.caFile")?,
        };
        Ok((inputs, config))
    }

    /// [`Inputs::read`] on a blocking thread: a slow file system must not stall the
    /// connections that share the reload task's worker.
    async fn read_off_runtime(config_path: &Path) -> anyhow::Result<(Self, GatewayConfig)> {
        let config_path = config_path.to_owned();
        tokio::task::spawn_blocking(move || Self::read(&config_path))
            .await
            .context("the config reading thread failed")?
    }
}

/// Starts watching; the watcher lives in the reload task for the life of the process.
pub(crate) fn watch(shared: Arc<Shared>, config_path: PathBuf) -> anyhow::Result<()> {
    let (events, mut changes) = mpsc::channel::<()>(1);
    let files = WatchedFiles::default();
    let mut watcher = notify::recommended_watcher({
        let files = files.clone();
        move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|event| files.matters(&event)) {
                // A full channel already holds a pending reload.
                let _ = events.try_send(());
            }
        }
    })
    .context("starting the file watcher")?;
    // Read in place: this runs at startup, before any connection could be stalled, and no
    // blocking thread is started for it.
    let (inputs, config) = Inputs::read(&config_path)?;
    let mut watched = BTreeSet::new();
    watch_files(&mut watcher, &files, &mut watched, &config_path, &config)?;

    let mut reloader = Reloader {
        shared,
        config_path,
        inputs,
        files,
        watched,
        last_error: None,
        staged: None,
    };
    tokio::spawn(async move {
        loop {
            // One task for both, so that a staged policy and a newer change never race to
            // be swapped in.
            tokio::select! {
                change = changes.recv() => {
                    if change.is_none() {
                        return;
                    }
                    tokio::time::sleep(SETTLE).await;
                    while changes.try_recv().is_ok() {}
                    reloader.reload_config(&mut watcher).await;
                    reloader.reload_certificate().await;
                }
                progress = reloader.staged_progress() => reloader.staged_progressed(progress),
            }
        }
    });
    Ok(())
}

struct Reloader {
    shared: Arc<Shared>,
    config_path: PathBuf,
    inputs: Inputs,
    files: WatchedFiles,
    /// Directories under watch.
    watched: BTreeSet<PathBuf>,
    /// The last refusal, so that events from unrelated files do not repeat it.
    last_error: Option<String>,
    /// The policy of the last change, while it waits for its new JWKS source.
    staged: Option<StagedPolicy>,
}

impl Reloader {
    /// Builds a new policy from changed inputs and swaps it in; on error the old one stays.
    async fn reload_config(&mut self, watcher: &mut RecommendedWatcher) {
        let (inputs, config) = match Inputs::read_off_runtime(&self.config_path).await {
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
        if let Err(err) = watch_files(
            watcher,
            &self.files,
            &mut self.watched,
            &self.config_path,
            &config,
        ) {
            tracing::warn!(error = %format!("{err:#}"), "cannot watch a new directory");
        }
        match Policy::build(config, Some(&current), &self.shared.metrics) {
            Ok(policy) => {
                self.inputs = inputs;
                self.last_error = None;
                // A newer policy supersedes a staged one, which stops fetching when dropped.
                self.staged = None;
                match Staged::new(policy, &current) {
                    Staged::Ready(policy) => self.swap_in(policy),
                    Staged::Waiting(staged) => {
                        tracing::info!(
                            path = %self.config_path.display(),
                            "config read; it takes effect once its new JWKS source answers"
                        );
                        self.staged = Some(staged);
                    }
                }
            }
            Err(err) => self.config_failed(&err),
        }
    }

    fn swap_in(&self, policy: Policy) {
        if policy.provider_keys().is_none() {
            // A key age left behind would grow into a stale-keys alert for keys nobody uses.
            self.shared.metrics.jwks_not_in_use();
        }
        let backlog = policy.config.tcp.listen_backlog;
        self.shared.policy.store(Arc::new(policy));
        self.shared
            .listen_backlog
            .send_if_modified(|current| std::mem::replace(current, backlog) != backlog);
        self.shared.metrics.reload(ReloadKind::Config, true);
        tracing::info!(path = %self.config_path.display(), "config reloaded");
    }

    /// What the staged policy's source did; never returns while there is none.
    async fn staged_progress(&mut self) -> Progress {
        match &mut self.staged {
            Some(staged) => staged.progress().await,
            None => std::future::pending().await,
        }
    }

    fn staged_progressed(&mut self, progress: Progress) {
        match progress {
            Progress::Ready => {
                if let Some(staged) = self.staged.take() {
                    self.swap_in(staged.into_policy());
                }
            }
            Progress::Failed(error) => {
                // Counted like a refused config: the new config is not in effect. The source
                // is retried, and the config swapped in when it answers, so that a provider
                // down during the change needs no second change to be picked up.
                self.shared.metrics.reload(ReloadKind::Config, false);
                tracing::error!(
                    error = %error,
                    "config reload waits: its new JWKS source does not answer; the previous config stays, and the source is retried"
                );
            }
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

    async fn reload_certificate(&self) {
        let Some(certificate) = self.shared.certificate.clone() else {
            return;
        };
        // Off the runtime like the config: it reads files.
        let reloaded = tokio::task::spawn_blocking(move || certificate.reload())
            .await
            .context("the certificate reading thread failed")
            .and_then(|reloaded| reloaded);
        match reloaded {
            Ok(false) => {}
            Ok(true) => {
                self.shared.metrics.reload(ReloadKind::Certificate, true);
                if let Some(certificate) = &self.shared.certificate {
                    self.shared.served_certificate_changed(certificate);
                }
                tracing::info!("certificate reloaded");
            }
            Err(err) => {
                self.shared.metrics.reload(ReloadKind::Certificate, false);
                tracing::error!(error = %format!("{err:#}"), "certificate reload refused; the previous certificate stays");
            }
        }
    }
}

/// Adds the files the config names to `files`, and watches their directories (not yet watched).
fn watch_files(
    watcher: &mut RecommendedWatcher,
    files: &WatchedFiles,
    watched: &mut BTreeSet<PathBuf>,
    config_path: &Path,
    config: &GatewayConfig,
) -> anyhow::Result<()> {
    for directory in files.add(config_path, config) {
        if !watched.contains(&directory) {
            watcher
                .watch(&directory, RecursiveMode::NonRecursive)
                .with_context(|| format!("watching {}", directory.display()))?;
            watched.insert(directory);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FIFO yields its content once: reading it twice would wait for a second writer.
    #[test]
    fn a_reload_reads_the_config_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.yaml");
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        let text = "upstream:\n  url: ws://127.0.0.1:9000/\n";
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || std::fs::write(path, text).unwrap())
        };
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(Inputs::read(&path).map(|(inputs, _)| inputs.config));
        });
        let read = result
            .recv_timeout(Duration::from_secs(5))
            .expect("the config was read more than once");
        assert_eq!(read.unwrap(), text);
        writer.join().unwrap();
    }
}
