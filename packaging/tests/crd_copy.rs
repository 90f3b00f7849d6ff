//! Helm installs CRDs only from the chart's own crds/ folder, so it carries a copy of the
//! generated CRD; this fails when the copy is stale.

use wsfleet_packaging::repo_root;

#[test]
fn chart_crds_are_identical_to_the_generated_crds() {
    let generated = repo_root().join("crds");
    let chart = repo_root().join("charts/wsfleet/crds");
    let mut names: Vec<_> = std::fs::read_dir(&generated)
        .expect("crds/ exists")
        .map(|entry| entry.expect("readable crds/ entry").file_name())
        .collect();
    names.sort();
    assert!(!names.is_empty(), "crds/ holds no CRD");

    for name in &names {
        let source = std::fs::read_to_string(generated.join(name)).expect("readable CRD");
        assert!(
            source.contains("kind: CustomResourceDefinition"),
            "crds/{} is not a CRD",
            name.to_string_lossy()
        );
        let copy = std::fs::read_to_string(chart.join(name)).unwrap_or_default();
        assert!(
            source == copy,
            "charts/wsfleet/crds/{} differs from crds/{0}; run: cp crds/*.yaml charts/wsfleet/crds/",
            name.to_string_lossy()
        );
    }
    let chart_count = std::fs::read_dir(&chart)
        .expect("charts/wsfleet/crds/ exists")
        .count();
    assert_eq!(
        chart_count,
        names.len(),
        "charts/wsfleet/crds/ holds a CRD that crds/ does not"
    );
}
