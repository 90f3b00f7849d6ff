//! Every value in charts/wsfleet/values.yaml has a row in the chart README's values table.

use serde_json::Value;
use wsfleet_packaging::repo_root;

/// Dotted paths of the leaves of `value`; an empty map or a list is a leaf.
fn leaf_paths(prefix: &str, value: &Value, out: &mut Vec<String>) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                leaf_paths(&path, child, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn readme_documents_every_value() {
    let chart = repo_root().join("charts/wsfleet");
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart.join("values.yaml")).unwrap()).unwrap();
    let readme = std::fs::read_to_string(chart.join("README.md")).unwrap();
    let mut paths = Vec::new();
    leaf_paths("", &values, &mut paths);
    assert!(
        paths.len() > 20,
        "values.yaml parsed to too few values: {paths:?}"
    );

    // A free-form block such as `resources` is documented by its own row.
    let documented = |path: &str| {
        let mut candidate = path;
        loop {
            if readme.contains(&format!("\n| `{candidate}` |")) {
                return true;
            }
            match candidate.rsplit_once('.') {
                Some((parent, _)) => candidate = parent,
                None => return false,
            }
        }
    };
    let missing: Vec<&String> = paths.iter().filter(|path| !documented(path)).collect();
    assert!(
        missing.is_empty(),
        "charts/wsfleet/README.md does not document {missing:?}"
    );
}
