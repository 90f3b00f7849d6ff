//! A real headless Chromium opening a WebSocket, reporting what the browser saw.
//!
//! [`Browser`] serves a page on `http://127.0.0.1:<port>` whose script opens the socket, sends
//! the messages one at a time (each after the previous echo), closes with 1000 and POSTs a
//! JSON report back to the same server; [`Browser::run`] starts Chromium on that page and
//! waits for the report. Chromium trusts a test CA through an NSS database in a throwaway
//! `$HOME` (never `--ignore-certificate-errors`), and `--host-resolver-rules` points DNS
//! names such as a Service's at chosen addresses. Tools: `chromium` and `certutil`
//! (scripts/install-test-deps).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::command::run;
use crate::poll::{eventually, give_up};
use crate::process::ManagedProcess;

/// How long the page waits for the socket's whole conversation before reporting what it has.
const PAGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Beyond the page's own budget: Chromium's start on a loaded machine.
const STARTUP_ALLOWANCE: Duration = Duration::from_secs(60);
/// Budget for one request to the page server (Chromium may open sockets it never uses).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REQUEST_BYTES: usize = 16 << 20;

/// One WebSocket conversation for the browser to hold.
#[derive(Clone, Debug, Default)]
pub struct BrowserRun {
    /// `ws://` or `wss://` URL the page opens.
    pub url: String,
    /// Offered in `Sec-WebSocket-Protocol`, in this order.
    pub protocols: Vec<String>,
    /// Text messages sent in order, each after the echo of the one before.
    pub messages: Vec<String>,
    /// A CA certificate (PEM) Chromium trusts besides its own roots.
    pub trusted_ca_pem: Option<String>,
    /// DNS names resolved to these addresses instead of asking DNS.
    pub host_rules: Vec<(String, IpAddr)>,
}

/// What the page saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrowserReport {
    /// `WebSocket.protocol` after open: the subprotocol the server selected, or empty.
    pub protocol: String,
    /// `WebSocket.extensions` after open, such as `permessage-deflate; ...`.
    pub extensions: String,
    /// Text messages received, in order.
    pub replies: Vec<String>,
    /// The close event's `code`; absent if the socket never closed.
    pub close_code: Option<u16>,
    /// The close event's `wasClean`.
    pub was_clean: Option<bool>,
    /// Why the conversation did not finish as planned.
    pub error: Option<String>,
}

/// The page server; each [`Browser::run`] starts a fresh Chromium against it.
pub struct Browser {
    port: u16,
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    next_run: AtomicU64,
    pages: Mutex<HashMap<u64, String>>,
    reports: Mutex<HashMap<u64, Value>>,
    stopping: AtomicBool,
}

impl Browser {
    /// Starts the page server on a free loopback port.
    pub fn start() -> Result<Self> {
        let listener =
            TcpListener::bind("127.0.0.1:0").context("binding the browser's page server")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::default());
        let server = std::thread::Builder::new()
            .name("browser-pages".into())
            .spawn({
                let shared = shared.clone();
                move || serve(listener, shared)
            })?;
        Ok(Self {
            port,
            shared,
            server: Some(server),
        })
    }

    /// The `Origin` the page's WebSocket handshakes carry.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs Chromium on a page holding `run`'s conversation and returns the page's report.
    /// An `Err` means no report arrived; a failed conversation is a report with `error`.
    pub fn run(&self, run: &BrowserRun) -> Result<BrowserReport> {
        let id = self.shared.next_run.fetch_add(1, Ordering::Relaxed);
        self.shared
            .pages
            .lock()
            .unwrap()
            .insert(id, render_page(run, &format!("/result/{id}"))?);
        let report = self.run_chromium(run, id);
        self.shared.pages.lock().unwrap().remove(&id);
        BrowserReport::from_json(&report?)
    }

    fn run_chromium(&self, run: &BrowserRun, id: u64) -> Result<Value> {
        let work = tempfile::Builder::new()
            .prefix("wsfleet-browser-")
            .tempdir()?;
        let home = work.path().join("home");
        if let Some(ca_pem) = &run.trusted_ca_pem {
            trust_ca(&home, ca_pem)?;
        } else {
            std::fs::create_dir_all(&home)?;
        }
        let mut command = Command::new("chromium");
        command
            .env("HOME", &home)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                // Console messages and network errors land in the log shown on failure.
                "--enable-logging=stderr",
            ])
            .arg(format!(
                "--user-data-dir={}",
                work.path().join("profile").display()
            ));
        if !run.host_rules.is_empty() {
            command.arg(format!(
                "--host-resolver-rules={}",
                host_resolver_rules(&run.host_rules)
            ));
        }
        command.arg(format!("http://127.0.0.1:{}/run/{id}", self.port));
        let mut chromium =
            ManagedProcess::spawn("chromium", command, &work.path().join("chromium.log"))
                .context("starting chromium (scripts/install-test-deps installs it)")?;
        let report = eventually(
            "the browser's report",
            PAGE_TIMEOUT + STARTUP_ALLOWANCE,
            || {
                if let Some(report) = self.shared.reports.lock().unwrap().remove(&id) {
                    return Ok(report);
                }
                chromium.ensure_running().map_err(give_up)?;
                bail!("no report yet")
            },
        );
        report.map_err(|err| err.context(format!("chromium log tail:\n{}", chromium.log_tail())))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

impl BrowserReport {
    fn from_json(report: &Value) -> Result<Self> {
        let text = |key: &str| report[key].as_str().map(str::to_owned);
        let replies = match &report["replies"] {
            Value::Array(replies) => replies
                .iter()
                .map(|reply| reply.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .with_context(|| format!("a reply is not text in {report}"))?,
            _ => bail!("no replies in {report}"),
        };
        Ok(Self {
            protocol: text("protocol").unwrap_or_default(),
            extensions: text("extensions").unwrap_or_default(),
            replies,
            close_code: report["code"]
                .as_u64()
                .map(u16::try_from)
                .transpose()
                .with_context(|| format!("close code out of range in {report}"))?,
            was_clean: report["wasClean"].as_bool(),
            error: text("error"),
        })
    }
}

/// Makes Chromium, run with `HOME=home`, trust `ca_pem` for TLS servers.
fn trust_ca(home: &Path, ca_pem: &str) -> Result<()> {
    let nssdb = home.join(".pki/nssdb");
    std::fs::create_dir_all(&nssdb)?;
    let ca_file = home.join("trusted-ca.pem");
    std::fs::write(&ca_file, ca_pem)?;
    let database = format!("sql:{}", nssdb.display());
    certutil(&["-d", &database, "-N", "--empty-password"])?;
    certutil(&[
        "-d",
        &database,
        "-A",
        "-t",
        "C,,",
        "-n",
        "wsfleet-test-ca",
        "-i",
        &ca_file.display().to_string(),
    ])
}

fn certutil(args: &[&str]) -> Result<()> {
    run("certutil", args)
        .map(drop)
        .context("certutil (libnss3-tools; scripts/install-test-deps installs it)")
}

/// `MAP name ip` rules, comma separated, as `--host-resolver-rules` wants them.
fn host_resolver_rules(rules: &[(String, IpAddr)]) -> String {
    rules
        .iter()
        .map(|(name, ip)| match ip {
            IpAddr::V4(ip) => format!("MAP {name} {ip}"),
            IpAddr::V6(ip) => format!("MAP {name} [{ip}]"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The page for `run`, POSTing its report to `result_path`.
fn render_page(run: &BrowserRun, result_path: &str) -> Result<String> {
    let config = serde_json::json!({
        "url": run.url,
        "protocols": run.protocols,
        "messages": run.messages,
        "resultPath": result_path,
        "timeoutMs": PAGE_TIMEOUT.as_millis() as u64,
    });
    Ok(PAGE.replace("CONFIG_JSON", &script_safe_json(&config)?))
}

/// JSON that cannot end the `<script>` element it is embedded in, nor its string literals.
fn script_safe_json(value: &Value) -> Result<String> {
    Ok(serde_json::to_string(value)?
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029"))
}

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>wsfleet browser run</title></head><body>
<script>
"use strict";
const config = CONFIG_JSON;
const report = { protocol: null, extensions: null, replies: [], code: null, wasClean: null, error: null };
let posted = false;
function finish(error) {
  if (posted) return;
  posted = true;
  if (error && !report.error) report.error = error;
  console.log("wsfleet browser report: " + JSON.stringify(report).slice(0, 2000));
  fetch(config.resultPath, { method: "POST", body: JSON.stringify(report) });
}
setTimeout(() => finish("the page gave up after " + config.timeoutMs + " ms"), config.timeoutMs);
let ws;
try {
  ws = new WebSocket(config.url, config.protocols);
} catch (e) {
  finish("new WebSocket failed: " + e);
}
if (ws) {
  let next = 0;
  let closing = false;
  const sendNext = () => {
    if (next < config.messages.length) {
      ws.send(config.messages[next++]);
    } else {
      closing = true;
      ws.close(1000, "done");
    }
  };
  ws.onopen = () => {
    report.protocol = ws.protocol;
    report.extensions = ws.extensions;
    sendNext();
  };
  ws.onmessage = (event) => {
    report.replies.push(typeof event.data === "string" ? event.data : "(binary message)");
    if (!closing) sendNext();
  };
  // The error event carries no detail; the close event that always follows has the code.
  let sawError = false;
  ws.onerror = () => { sawError = true; };
  ws.onclose = (event) => {
    report.code = event.code;
    report.wasClean = event.wasClean;
    if (closing && !sawError) {
      finish(null);
    } else {
      finish((sawError ? "error event, then " : "") + "closed " + (closing ? "" : "before the end ")
        + "with code " + event.code + " reason " + JSON.stringify(event.reason));
    }
  };
}
</script>
</body></html>
"#;

/// Accepts connections until the [`Browser`] is dropped, each on its own thread.
fn serve(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let shared = shared.clone();
        std::thread::spawn(move || {
            let _ = answer(stream, &shared);
        });
    }
}

/// Answers one HTTP/1.1 request: `GET /run/<id>` is the page, `POST /result/<id>` its report.
fn answer(stream: TcpStream, shared: &Shared) -> Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut content_length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim_end().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse()?;
        }
    }
    ensure!(
        content_length <= MAX_REQUEST_BYTES,
        "request body too large"
    );
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;

    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let run_id = |prefix: &str| path.strip_prefix(prefix)?.parse::<u64>().ok();
    let (status, content_type, content) = match method {
        "GET" => {
            match run_id("/run/").and_then(|id| shared.pages.lock().unwrap().get(&id).cloned()) {
                Some(page) => ("200 OK", "text/html; charset=utf-8", page),
                None => ("404 Not Found", "text/plain", "not found\n".to_owned()),
            }
        }
        "POST" => match (run_id("/result/"), serde_json::from_slice::<Value>(&body)) {
            (Some(id), Ok(report)) => {
                shared.reports.lock().unwrap().insert(id, report);
                ("200 OK", "text/plain", "ok\n".to_owned())
            }
            _ => ("400 Bad Request", "text/plain", "bad report\n".to_owned()),
        },
        _ => ("405 Method Not Allowed", "text/plain", String::new()),
    };
    let mut stream = reader.into_inner();
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{content}",
        content.len()
    )?;
    stream.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_json_cannot_close_the_script() {
        let run = BrowserRun {
            url: "wss://a/</script><script>alert(1)</script>".into(),
            messages: vec!["\u{2028}&".into()],
            ..BrowserRun::default()
        };
        let page = render_page(&run, "/result/0").unwrap();
        assert_eq!(page.matches("</script>").count(), 1);
        assert!(page.contains(r"\u003c/script\u003e"));
        assert!(!page.contains('\u{2028}'));
    }

    #[test]
    fn host_rules_bracket_ipv6() {
        let rules = [
            ("a.svc".to_owned(), "10.0.0.1".parse().unwrap()),
            ("b.svc".to_owned(), "fd00::1".parse().unwrap()),
        ];
        assert_eq!(
            host_resolver_rules(&rules),
            "MAP a.svc 10.0.0.1,MAP b.svc [fd00::1]"
        );
    }

    #[test]
    fn report_reads_the_page_json() {
        let report = BrowserReport::from_json(&serde_json::json!({
            "protocol": "bearer.x", "extensions": "permessage-deflate", "replies": ["a"],
            "code": 1000, "wasClean": true, "error": null,
        }))
        .unwrap();
        assert_eq!(report.close_code, Some(1000));
        assert_eq!(report.was_clean, Some(true));
        assert_eq!(report.error, None);
        assert_eq!(report.replies, ["a"]);
    }
}
