//! The Argo CD health check for WebSocketService, run by a real Lua 5.1 interpreter (Argo CD
//! embeds gopher-lua, a Lua 5.1) against the fixtures listed in health_test.yaml, the layout
//! Argo CD uses for the checks it bundles.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::Value;
use wsfleet_packaging::repo_root;

#[derive(Deserialize)]
struct HealthTests {
    tests: Vec<HealthTest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthTest {
    health_status: HealthStatus,
    input_path: PathBuf,
}

#[derive(Debug, PartialEq, Deserialize)]
struct HealthStatus {
    status: String,
    message: String,
}

fn check_dir() -> PathBuf {
    repo_root().join("argocd/resource_customizations/wsfleet.io/WebSocketService")
}

#[test]
fn health_check_classifies_every_fixture() {
    let dir = check_dir();
    let script = std::fs::read_to_string(dir.join("health.lua")).expect("health.lua");
    let cases: HealthTests = serde_yaml::from_str(
        &std::fs::read_to_string(dir.join("health_test.yaml")).expect("health_test.yaml"),
    )
    .expect("health_test.yaml parses");
    assert!(
        cases.tests.len() >= 6,
        "too few fixtures to cover every outcome"
    );

    let mut failures = Vec::new();
    for case in &cases.tests {
        let actual = run_health_check(&script, &dir.join(&case.input_path));
        if actual != case.health_status {
            failures.push(format!(
                "{}: expected {:?}, got {:?}",
                case.input_path.display(),
                case.health_status,
                actual
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_fixture_is_listed() {
    let dir = check_dir();
    let listed = std::fs::read_to_string(dir.join("health_test.yaml")).expect("health_test.yaml");
    for entry in std::fs::read_dir(dir.join("testdata")).expect("testdata/") {
        let name = entry.expect("testdata entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            listed.contains(&format!("testdata/{name}")),
            "testdata/{name} has no expectation in health_test.yaml"
        );
    }
}

/// Runs the check the way Argo CD does: the object as the global `obj`, the script's return
/// value as the health.
fn run_health_check(script: &str, fixture: &Path) -> HealthStatus {
    let object: Value = serde_yaml::from_str(
        &std::fs::read_to_string(fixture)
            .unwrap_or_else(|err| panic!("reading {}: {err}", fixture.display())),
    )
    .unwrap_or_else(|err| panic!("parsing {}: {err}", fixture.display()));
    let program = format!(
        "obj = {}\nlocal hs = (function()\n{script}\nend)()\nio.write(hs.status, '\\n', hs.message)\n",
        lua_literal(&object)
    );

    let lua = std::env::var("WSFLEET_LUA").unwrap_or_else(|_| "lua5.1".into());
    let mut child = Command::new(&lua)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| {
            panic!("starting {lua}: {err} (scripts/install-test-deps installs lua5.1)")
        });
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(program.as_bytes())
        .expect("writing the program to lua");
    let output = child.wait_with_output().expect("waiting for lua");
    assert!(
        output.status.success(),
        "lua failed on {}: {}",
        fixture.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("lua printed UTF-8");
    let (status, message) = stdout.split_once('\n').expect("status and message lines");
    HealthStatus {
        status: status.to_string(),
        message: message.to_string(),
    }
}

/// The Lua table constructor for a JSON value; null becomes nil as in Argo CD's conversion.
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua_literal).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|(key, value)| format!("[{}] = {}", lua_string(key), lua_literal(value)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

/// A double-quoted Lua string; bytes outside printable ASCII become decimal escapes.
fn lua_string(text: &str) -> String {
    let mut out = String::from("\"");
    for byte in text.bytes() {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(byte as char),
            other => out.push_str(&format!("\\{other:03}")),
        }
    }
    out.push('"');
    out
}

#[test]
fn lua_literals_round_trip_through_the_interpreter() {
    let object: Value =
        serde_json::json!({"a": "quote \" back\\slash\nnewline é", "n": [1, 2.5, true]});
    let program = format!(
        "local o = {}\nio.write(o.a, '|', o.n[1] + o.n[2], '|', tostring(o.n[3]))",
        lua_literal(&object)
    );
    let lua = std::env::var("WSFLEET_LUA").unwrap_or_else(|_| "lua5.1".into());
    let output = Command::new(&lua)
        .args(["-e", &program])
        .output()
        .unwrap_or_else(|err| panic!("starting {lua}: {err}"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "quote \" back\\slash\nnewline é|3.5|true"
    );
}

#[test]
fn docs_carry_the_tested_script_in_the_argocd_cm_snippet() {
    let script = std::fs::read_to_string(check_dir().join("health.lua")).expect("health.lua");
    let docs = std::fs::read_to_string(repo_root().join("docs/argocd.md")).expect("docs/argocd.md");
    let key = "resource.customizations.health.wsfleet.io_WebSocketService: |\n";
    let start = docs
        .find(key)
        .expect("docs/argocd.md has the argocd-cm key")
        + key.len();
    let block_end = docs[start..]
        .find("```")
        .expect("the snippet's code block ends")
        + start;
    let embedded: String = docs[start..block_end]
        .lines()
        .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
        .collect();
    assert!(
        embedded == script,
        "docs/argocd.md embeds a different health.lua; re-indent the script by four spaces into the snippet"
    );
}
