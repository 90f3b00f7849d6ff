//! A user who keeps applying manifests through an outage, each until the apiserver takes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow, bail};
use wsfleet_e2e::{DEADLINE, Kubectl, eventually};

/// The thread applying; see the module docs.
pub struct Writer {
    thread: JoinHandle<Result<()>>,
    applied: Arc<AtomicUsize>,
}

impl Writer {
    /// Applies `manifests` in order on a thread of its own.
    pub fn start(kubectl: Kubectl, manifests: Vec<String>) -> Self {
        let applied = Arc::new(AtomicUsize::new(0));
        let counter = applied.clone();
        let thread = std::thread::spawn(move || {
            for (index, manifest) in manifests.iter().enumerate() {
                eventually(&format!("write {index} to be taken"), DEADLINE, || {
                    apply(&kubectl, manifest)
                })?;
                counter.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        });
        Self { thread, applied }
    }

    /// How many manifests the apiserver has taken so far.
    pub fn applied(&self) -> usize {
        self.applied.load(Ordering::SeqCst)
    }

    /// Waits until every manifest is applied.
    pub fn finish(self) -> Result<()> {
        self.thread
            .join()
            .map_err(|_| anyhow!("the writer panicked"))?
            .context("the writer")
    }
}

/// One `kubectl apply`, bounded so that a stalled apiserver fails it instead of hanging it.
fn apply(kubectl: &Kubectl, manifest: &str) -> Result<()> {
    let args = ["apply", "--request-timeout=5s", "-f", "-"];
    let outcome = kubectl.outcome(&args, Some(manifest))?;
    if !outcome.success {
        bail!("kubectl apply failed: {}", outcome.stderr.trim());
    }
    Ok(())
}
