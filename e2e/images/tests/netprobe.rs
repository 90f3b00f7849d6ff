//! wsfleet-netprobe as a real process: its one-line verdicts and exit codes.

use std::net::TcpListener;
use std::process::Command;

/// Runs the probe; returns its exit code and stdout.
fn probe(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wsfleet-netprobe"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    (output.status.code().unwrap(), stdout.trim_end().to_owned())
}

#[test]
fn connect_reports_connected_or_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().to_string();
    assert_eq!(probe(&["connect", &open]), (0, "connected".to_owned()));

    drop(listener);
    let (code, verdict) = probe(&["connect", &open, "--timeout", "1s"]);
    assert_eq!(code, 1);
    assert!(verdict.starts_with("unreachable: "), "{verdict}");
    assert!(verdict.contains("refused"), "{verdict}");
}

#[test]
fn resolve_reports_addresses_or_unresolved() {
    let (code, verdict) = probe(&["resolve", "localhost"]);
    assert_eq!(code, 0);
    assert!(
        verdict.split(' ').any(|address| address == "127.0.0.1"),
        "{verdict}"
    );

    // .invalid never resolves (RFC 2606).
    let (code, verdict) = probe(&["resolve", "wsfleet.invalid"]);
    assert_eq!(code, 1);
    assert!(verdict.starts_with("unresolved: "), "{verdict}");
}

#[test]
fn resolv_conf_prints_the_file() {
    let (code, text) = probe(&["resolv-conf"]);
    assert_eq!(code, 0);
    assert_eq!(
        text,
        std::fs::read_to_string("/etc/resolv.conf")
            .unwrap()
            .trim_end()
    );
}
