//! Artifacts that ship beside the binaries and are derived from the source of truth: the
//! resource reference in docs/reference.md is rendered from the CRD in crds/.
//! The tests of this crate also check the Helm chart and the Argo CD health check.

#![forbid(unsafe_code)]

mod reference;

pub use reference::render_reference;

use std::path::PathBuf;

/// The repository root, so tests and tools find crds/, charts/ and docs/ from any working directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the packaging crate lives one level below the repository root")
        .to_path_buf()
}
