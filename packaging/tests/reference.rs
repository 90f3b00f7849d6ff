//! docs/reference.md is rendered from the CRD; this fails when it is stale.
//! Regenerate with `UPDATE_REFERENCE=1 cargo test -p wsfleet-packaging --test reference`.

use wsfleet_packaging::{render_reference, repo_root};

#[test]
fn reference_matches_the_crd() {
    let crd_path = repo_root().join("crds/websocketservices.yaml");
    let crd = std::fs::read_to_string(&crd_path)
        .unwrap_or_else(|err| panic!("reading {}: {err}", crd_path.display()));
    let rendered = render_reference(&crd).expect("rendering the reference");

    let doc_path = repo_root().join("docs/reference.md");
    if std::env::var_os("UPDATE_REFERENCE").is_some() {
        std::fs::write(&doc_path, &rendered).expect("writing docs/reference.md");
    }
    let committed = std::fs::read_to_string(&doc_path).unwrap_or_default();
    assert!(
        committed == rendered,
        "docs/reference.md is stale; regenerate it with \
         UPDATE_REFERENCE=1 cargo test -p wsfleet-packaging --test reference"
    );
}
