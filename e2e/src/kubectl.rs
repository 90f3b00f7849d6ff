//! kubectl, run exactly as a user would, against the harness's kubeconfig.

use std::io::{BufRead, BufReader, Lines, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::poll::{DEADLINE, eventually};

/// The result of one kubectl invocation, successful or not.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Stdout of a successful run, or an error carrying the command and its stderr.
    fn into_stdout(self, args: &[&str]) -> Result<String> {
        if self.success {
            Ok(self.stdout)
        } else {
            bail!(
                "kubectl {} failed: {}{}",
                args.join(" "),
                self.stderr.trim(),
                self.stdout.trim()
            )
        }
    }
}

/// A kubectl bound to one kubeconfig and, optionally, one namespace.
#[derive(Debug, Clone)]
pub struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    namespace: Option<String>,
}

impl Kubectl {
    pub fn new(binary: &Path, kubeconfig: &Path) -> Self {
        Self {
            binary: binary.to_owned(),
            kubeconfig: kubeconfig.to_owned(),
            namespace: None,
        }
    }

    /// The same kubectl, with `--namespace` on every call.
    pub fn in_namespace(&self, namespace: &str) -> Self {
        Self {
            namespace: Some(namespace.to_owned()),
            ..self.clone()
        }
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        if let Some(namespace) = &self.namespace {
            command.arg("--namespace").arg(namespace);
        }
        command.args(args);
        command
    }

    /// The names of `kind` matching `selector` as `kubectl get --watch` reports them, the
    /// existing ones first, then each change as it happens; ends when dropped.
    pub fn watch_names(&self, kind: &str, selector: &str) -> Result<Watch> {
        self.watch(kind, selector, "name")
    }

    /// Like [`Kubectl::watch_names`], with each object printed as `-o output` says (a
    /// `jsonpath=` output must end its template with a newline to make one line per object).
    pub fn watch(&self, kind: &str, selector: &str, output: &str) -> Result<Watch> {
        let mut child = self
            .command(&["get", kind, "-l", selector, "--watch", "-o", output])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let stdout = child.stdout.take().context("kubectl stdout was piped")?;
        Ok(Watch {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// Runs kubectl with `args` (and `stdin` piped in, if given), whatever the outcome.
    pub fn outcome(&self, args: &[&str], stdin: Option<&str>) -> Result<Outcome> {
        let mut command = self.command(args);
        command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin was piped");
            pipe.write_all(input.as_bytes())
                .context("writing kubectl stdin")?;
        }
        let output = child.wait_with_output().context("waiting for kubectl")?;
        Ok(Outcome {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// Runs kubectl and returns its stdout, failing with stderr if it fails.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        self.outcome(args, None)?.into_stdout(args)
    }

    /// `kubectl apply -f -` of a manifest given as text.
    pub fn apply(&self, manifest: &str) -> Result<String> {
        let args = ["apply", "-f", "-"];
        self.outcome(&args, Some(manifest))?.into_stdout(&args)
    }

    /// `kubectl create -f -` of a manifest given as text.
    pub fn create(&self, manifest: &str) -> Result<String> {
        let args = ["create", "-f", "-"];
        self.outcome(&args, Some(manifest))?.into_stdout(&args)
    }

    /// `kubectl get KIND NAME -o json`.
    pub fn get(&self, kind: &str, name: &str) -> Result<Value> {
        let text = self.run(&["get", kind, name, "-o", "json"])?;
        serde_json::from_str(&text).with_context(|| format!("parsing {kind}/{name} as JSON"))
    }

    /// Like [`Kubectl::get`], but `None` when the object does not exist.
    pub fn try_get(&self, kind: &str, name: &str) -> Result<Option<Value>> {
        let args = ["get", kind, name, "-o", "json", "--ignore-not-found"];
        let text = self.outcome(&args, None)?.into_stdout(&args)?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        let value = serde_json::from_str(&text)
            .with_context(|| format!("parsing {kind}/{name} as JSON"))?;
        Ok(Some(value))
    }

    /// The items of `kubectl get KIND -l SELECTOR -o json`.
    pub fn list(&self, kind: &str, selector: &str) -> Result<Vec<Value>> {
        let text = self.run(&["get", kind, "-l", selector, "-o", "json"])?;
        let list: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {kind} list"))?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// `kubectl get --raw PATH`.
    pub fn raw(&self, path: &str) -> Result<String> {
        self.run(&["get", "--raw", path])
    }

    /// Applies every CRD in `dir` (server-side: some are too large for the last-applied
    /// annotation) and waits until the CRD `established` is served.
    pub fn install_crds(&self, dir: &Path, established: &str) -> Result<()> {
        self.run(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &dir.display().to_string(),
        ])?;
        // Not `kubectl wait`: it fails at once while a new CRD has no conditions yet.
        eventually(&format!("CRD {established} Established"), DEADLINE, || {
            let crd = self.get("crd", established)?;
            let served = crd["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Established" && c["status"] == "True");
            anyhow::ensure!(served, "conditions: {}", crd["status"]["conditions"]);
            Ok(())
        })
    }
}

/// A running `kubectl get --watch`: an iterator over the lines it prints.
pub struct Watch {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Iterator for Watch {
    type Item = std::io::Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        self.lines.next()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
