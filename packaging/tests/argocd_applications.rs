//! The Argo CD Application examples parse and point at folders of this repository that hold
//! what they claim: the chart, and WebSocketService manifests.

use serde_json::Value;
use wsfleet_packaging::repo_root;

fn application(file: &str) -> Value {
    let path = repo_root().join("argocd/applications").join(file);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let app: Value = serde_yaml::from_str(&text).unwrap_or_else(|err| panic!("{file}: {err}"));
    assert_eq!(app["apiVersion"], "argoproj.io/v1alpha1", "{file}");
    assert_eq!(app["kind"], "Application", "{file}");
    app
}

#[test]
fn operator_application_installs_the_chart_with_server_side_apply() {
    let app = application("wsfleet-operator.yaml");
    let source = &app["spec"]["source"];
    let chart = repo_root().join(source["path"].as_str().unwrap());
    assert!(
        chart.join("Chart.yaml").is_file(),
        "{} is not a chart",
        chart.display()
    );
    assert!(source["helm"]["valuesObject"].is_object());
    let options = app["spec"]["syncPolicy"]["syncOptions"].to_string();
    assert!(options.contains("ServerSideApply=true"), "{options}");
}

#[test]
fn examples_application_syncs_websocketservices_and_ignores_scaled_replicas() {
    let app = application("wsfleet-examples.yaml");
    let dir = repo_root().join(app["spec"]["source"]["path"].as_str().unwrap());
    let mut manifests = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let object: Value =
                serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            assert_eq!(object["kind"], "WebSocketService", "{}", path.display());
            manifests += 1;
        }
    }
    assert!(manifests > 0, "{} holds no manifests", dir.display());
    assert_eq!(
        app["spec"]["ignoreDifferences"][0],
        serde_json::json!({"group": "wsfleet.io", "kind": "WebSocketService", "jsonPointers": ["/spec/replicas"]})
    );
}
