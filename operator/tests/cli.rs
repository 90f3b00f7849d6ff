//! The operator binary as a process: what its log looks like where it is read.

use std::process::Command;

#[test]
fn text_logs_to_a_pipe_carry_no_colour_escapes() {
    let output = Command::new(env!("CARGO_BIN_EXE_wsfleet-operator"))
        .args([
            "run",
            "--log-format",
            "text",
            "--metrics-address",
            "127.0.0.1:0",
        ])
        // No configuration anywhere: the operator stops at once, with one error line.
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env("HOME", "/nonexistent")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("wsfleet-operator stopped"), "{stdout}");
    assert!(!stdout.contains('\u{1b}'), "{stdout:?}");
}
