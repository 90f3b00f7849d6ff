//! Small loopback networking helpers.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result};

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// The whole response (status line, headers, body) to a plain-HTTP GET on a loopback port.
fn http_response(port: u16, path: &str) -> Result<String> {
    http_exchange(
        port,
        &format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"),
    )
}

/// Sends `request` to a loopback port and reads the whole response.
fn http_exchange(port: u16, request: &str) -> Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// The status code of a plain-HTTP POST of `body` on a loopback port.
pub fn http_post(port: u16, path: &str, content_type: &str, body: &str) -> Result<u16> {
    status_of(&http_exchange(
        port,
        &format!(
            "POST {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )?)
}

/// The body of a plain-HTTP GET on a loopback port.
pub fn http_get(port: u16, path: &str) -> Result<String> {
    let response = http_response(port, path)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or(response))
}

/// The status code of a plain-HTTP GET on a loopback port.
pub fn http_status(port: u16, path: &str) -> Result<u16> {
    status_of(&http_response(port, path)?)
}

fn status_of(response: &str) -> Result<u16> {
    let status = response
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("no status line in {response:?}"))?;
    status
        .parse()
        .with_context(|| format!("status {status:?} is not a number"))
}
