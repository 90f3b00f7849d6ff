//! Where the harness finds the programs it runs: the control plane built from Go modules
//! by `e2e/controlplane/build.sh` and the autoscaling add-ons by `e2e/addons/build.sh` (both
//! cached under ~/.cache/wsfleet), and wsfleet's own binaries from the cargo target directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result, bail};

/// The programs `build.sh` must have produced.
const CONTROL_PLANE_PROGRAMS: [&str; 11] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "kubelet",
    "kube-proxy",
    "coredns",
    "helm",
    "crane",
];

/// The programs `e2e/addons/build.sh` must have produced.
const ADDON_PROGRAMS: [&str; 3] = ["keda-operator", "keda-adapter", "metrics-server"];

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent directory")
        .to_owned()
}

/// The directory holding the control-plane programs: `$WSFLEET_CONTROLPLANE_BIN`, or
/// whatever `build.sh` prints (a warm cache answers at once; a cold build takes minutes).
pub fn control_plane_bin_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        locate(
            "WSFLEET_CONTROLPLANE_BIN",
            "e2e/controlplane/build.sh",
            &CONTROL_PLANE_PROGRAMS,
        )
        .map_err(|err| format!("{err:#}"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// The directory `env` names, or the one `script` builds and prints; every one of `programs`
/// must be in it.
fn locate(env: &str, script: &str, programs: &[&str]) -> Result<PathBuf> {
    let dir = match std::env::var_os(env) {
        Some(dir) => PathBuf::from(dir),
        None => run_build_script(script)?,
    };
    for program in programs {
        let path = dir.join(program);
        if !path.is_file() {
            bail!("{} is missing (from {env} or {script})", path.display());
        }
    }
    Ok(dir)
}

/// The directory holding the autoscaling add-ons (KEDA's operator and metrics adapter, its
/// CRDs under `keda-crds/`, and metrics-server): `$WSFLEET_ADDONS_BIN`, or whatever
/// `e2e/addons/build.sh` prints (a warm cache answers at once; a cold build takes long).
pub fn addons_bin_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        locate("WSFLEET_ADDONS_BIN", "e2e/addons/build.sh", &ADDON_PROGRAMS)
            .map_err(|err| format!("{err:#}"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

fn run_build_script(relative: &str) -> Result<PathBuf> {
    let script = workspace_root().join(relative);
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!("{} failed with {}", script.display(), output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = stdout
        .lines()
        .last()
        .with_context(|| format!("{} printed no directory", script.display()))?;
    Ok(PathBuf::from(dir.trim()))
}

/// A wsfleet binary (`wsfleet-operator`, `wsfleet-gateway`) of `package`, built first with
/// `cargo build` (once per process; cargo's own fingerprints make it a no-op when fresh) into
/// the target directory and profile this program was built with, so a test never runs a
/// stale build.
pub fn wsfleet_binary(package: &str, name: &str) -> Result<PathBuf> {
    static BUILT: Mutex<BTreeMap<String, Result<PathBuf, String>>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    built
        .entry(name.to_owned())
        .or_insert_with(|| build_with_cargo(package, name).map_err(|err| format!("{err:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_with_cargo(package: &str, name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    let profile_dir = exe
        .ancestors()
        .skip(1)
        .find(|dir| dir.file_name().is_some_and(|name| name != "deps"))
        .context("locating the target directory")?;
    let target_dir = profile_dir
        .parent()
        .context("locating the target directory")?;
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .map(|name| if name == "debug" { "dev" } else { name })
        .context("naming the cargo profile")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "--package",
            package,
            "--bin",
            name,
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .with_context(|| format!("running cargo build for {name}"))?;
    if !status.success() {
        bail!("cargo build --package {package} --bin {name} failed with {status}");
    }
    let binary = profile_dir.join(name);
    if !binary.is_file() {
        bail!("cargo built {name} but {} is missing", binary.display());
    }
    Ok(binary)
}
