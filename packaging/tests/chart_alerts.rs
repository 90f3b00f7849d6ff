//! The chart's alerting rules as Prometheus reads them: `promtool check rules` on the
//! PrometheusRule's groups rendered by the real helm, and `promtool test rules` on the unit
//! tests in charts/wsfleet/tests/alerts/, which show each alert firing on the series that
//! should raise it and resolving once they recover. promtool comes with Debian's `prometheus`
//! (scripts/install-test-deps).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;
use wsfleet_e2e::monitoring::{alert_rules, render_monitoring, rules_file};
use wsfleet_packaging::repo_root;

fn alert_tests_dir() -> PathBuf {
    repo_root().join("charts/wsfleet/tests/alerts")
}

fn alert_test_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(alert_tests_dir())
        .expect("reading charts/wsfleet/tests/alerts")
        .map(|entry| entry.expect("listing alert tests").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no alert tests found");
    files
}

/// A directory of its own holding the rendered rules as `rules.yaml` (the name the alert
/// tests load) and a copy of each alert test; removed on drop.
struct Workdir(PathBuf);

impl Workdir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wsfleet-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a work directory");
        let objects = render_monitoring().expect("helm template of the chart");
        std::fs::write(dir.join("rules.yaml"), rules_file(&objects).unwrap())
            .expect("writing rules.yaml");
        Self(dir)
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn promtool(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("promtool")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|err| {
            panic!("running promtool (scripts/install-test-deps installs prometheus): {err}")
        });
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool {} failed:\n{printed}",
        args.join(" ")
    );
    printed
}

#[test]
fn promtool_accepts_the_rendered_rules() {
    let work = Workdir::new("rules-check");
    let printed = promtool(&work.0, &["check", "rules", "rules.yaml"]);
    let objects = render_monitoring().unwrap();
    let count = alert_rules(&objects).len();
    assert!(
        printed.contains(&format!("SUCCESS: {count} rules found")),
        "{printed}"
    );
}

#[test]
fn every_alert_fires_and_resolves_in_its_unit_tests() {
    let work = Workdir::new("alert-tests");
    let mut names = Vec::new();
    for file in alert_test_files() {
        let name = file.file_name().unwrap().to_str().unwrap().to_owned();
        std::fs::copy(&file, work.0.join(&name)).expect("copying an alert test");
        names.push(name);
    }
    let mut args = vec!["test", "rules"];
    args.extend(names.iter().map(String::as_str));
    promtool(&work.0, &args);
}

/// Each alert has a case where it fires and a case where it is quiet, so a rule that can never
/// fire (or never stop) cannot hide behind tests of the other alerts.
#[test]
fn every_alert_has_a_firing_and_a_quiet_case() {
    // alert -> (fires somewhere, quiet somewhere)
    let mut seen: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for file in alert_test_files() {
        let tests: Value = serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for test in tests["tests"].as_sequence().unwrap() {
            for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
                let alert = case["alertname"].as_str().unwrap().to_owned();
                let fires = case["exp_alerts"]
                    .as_sequence()
                    .is_some_and(|alerts| !alerts.is_empty());
                let entry = seen.entry(alert).or_default();
                entry.0 |= fires;
                entry.1 |= !fires;
            }
        }
    }
    let objects = render_monitoring().unwrap();
    let missing: Vec<String> = alert_rules(&objects)
        .into_iter()
        .filter(|rule| seen.get(&rule.alert) != Some(&(true, true)))
        .map(|rule| format!("{} {:?}", rule.alert, seen.get(&rule.alert)))
        .collect();
    assert!(
        missing.is_empty(),
        "alerts without a firing and a quiet unit test (fires, quiet): {missing:?}"
    );
}
