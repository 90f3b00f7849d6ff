//! Where the harness finds the programs it runs: the control plane built from Go modules
//! by `e2e/controlplane/build.sh` (cached under ~/.cache/wsfleet), and wsfleet's own
//! binaries from the cargo target directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

/// The programs `build.sh` must have produced.
const CONTROL_PLANE_PROGRAMS: [&str; 6] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
];

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
    DIR.get_or_init(|| locate_control_plane().map_err(|err| format!("{err:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn locate_control_plane() -> Result<PathBuf> {
    let dir = match std::env::var_os("WSFLEET_CONTROLPLANE_BIN") {
        Some(dir) => PathBuf::from(dir),
        None => run_build_script()?,
    };
    for program in CONTROL_PLANE_PROGRAMS {
        let path = dir.join(program);
        if !path.is_file() {
            bail!("control-plane program {} is missing", path.display());
        }
    }
    Ok(dir)
}

fn run_build_script() -> Result<PathBuf> {
    let script = workspace_root().join("e2e/controlplane/build.sh");
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

/// A wsfleet binary (`wsfleet-operator`, `wsfleet-gateway`) from the target directory this
/// program was built into. Fails if it is missing or older than its crate's sources, so a
/// test never silently runs yesterday's build.
pub fn wsfleet_binary(name: &str, crate_dirs: &[&str]) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    let binary = exe
        .ancestors()
        .skip(1)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!(
                "{name} is not built next to {}; run `cargo build --bins`",
                exe.display()
            )
        })?;
    let built = modified(&binary)?;
    let root = workspace_root();
    for dir in crate_dirs {
        if let Some(newer) = newest_file(&root.join(dir))?.filter(|(time, _)| *time > built) {
            bail!(
                "{} is older than {}; run `cargo build --bins`",
                binary.display(),
                newer.1.display()
            );
        }
    }
    Ok(binary)
}

fn modified(path: &Path) -> Result<SystemTime> {
    path.metadata()
        .and_then(|meta| meta.modified())
        .with_context(|| format!("reading the modification time of {}", path.display()))
}

/// The most recently modified file under `dir`, if any.
fn newest_file(dir: &Path) -> Result<Option<(SystemTime, PathBuf)>> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let time = modified(&path)?;
            if newest.as_ref().is_none_or(|(best, _)| time > *best) {
                newest = Some((time, path));
            }
        }
    }
    Ok(newest)
}
