//! HTTP/1.1 heads of the WebSocket opening handshake, parsed with httparse.

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::wire::refusal::Refusal;
use wsfleet_config::path;

/// Headers beyond this count are refused like an oversized head.
const MAX_HEADERS: usize = 96;

/// A complete head and whatever the peer sent after it (the first frames, possibly).
#[derive(Debug)]
pub struct Head {
    pub head: Vec<u8>,
    pub rest: Vec<u8>,
}

/// Why no head could be read.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("head larger than {0} bytes")]
    TooLarge(usize),
    #[error("connection closed before the head was complete")]
    Closed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads up to the blank line ending an HTTP head, at most `max_bytes` of it.
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    max_bytes: usize,
) -> Result<Head, HeadError> {
    let mut buf = Vec::new();
    let mut searched: usize = 0;
    loop {
        buf.reserve(1024);
        // One byte beyond the limit is enough to know the head is too large.
        let allowed = (max_bytes + 1 - buf.len()) as u64;
        let read = (&mut *stream).take(allowed).read_buf(&mut buf).await?;
        if read == 0 {
            return Err(HeadError::Closed);
        }
        let from = searched.saturating_sub(3);
        // A vectorised search: byte by byte, it was 4 % of a handshake's instructions.
        if let Some(at) = memchr::memmem::find(&buf[from..], b"\r\n\r\n") {
            let end = from + at + 4;
            if end > max_bytes {
                return Err(HeadError::TooLarge(max_bytes));
            }
            let rest = buf.split_off(end);
            return Ok(Head { head: buf, rest });
        }
        if buf.len() > max_bytes {
            return Err(HeadError::TooLarge(max_bytes));
        }
        searched = buf.len();
    }
}

/// A client's upgrade request, owned so the head buffer can go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    pub path: String,
    pub query: Option<String>,
    /// Header names as sent; values that are not UTF-8 are refused.
    pub headers: Vec<(String, String)>,
}

impl UpgradeRequest {
    /// Parses a request head and checks that it asks for a WebSocket upgrade.
    pub fn parse(head: &[u8]) -> Result<Self, Refusal> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut slots);
        match request.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(Refusal::HeadersTooLarge),
            _ => return Err(Refusal::BadRequest),
        }
        if request.method != Some("GET") || request.version != Some(1) {
            return Err(Refusal::BadRequest);
        }
        let target = request.path.ok_or(Refusal::BadRequest)?;
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query.to_owned())),
            None => (target, None),
        };
        let headers = request
            .headers
            .iter()
            .map(|header| {
                let value = std::str::from_utf8(header.value).map_err(|_| Refusal::BadRequest)?;
                Ok((header.name.to_owned(), value.to_owned()))
            })
            .collect::<Result<Vec<_>, Refusal>>()?;
        let parsed = Self {
            path: path.to_owned(),
            query,
            headers,
        };
        // A bad key is the client's fault: caught here, it is not left to the upstream to
        // refuse and be counted as an upstream failure.
        let upgrade = parsed.has_token("upgrade", "websocket")
            && parsed.has_token("connection", "upgrade")
            && parsed
                .header_sent_once("sec-websocket-key")
                .is_some_and(is_websocket_key);
        if !upgrade {
            return Err(Refusal::BadRequest);
        }
        if parsed.header("sec-websocket-version") != Some("13") {
            return Err(Refusal::UnsupportedVersion);
        }
        // Refused here, so that route matching and forwarding only ever see a path that
        // every upstream reads the same way.
        if !path::is_unambiguous(&parsed.path) {
            return Err(Refusal::UnsafePath);
        }
        Ok(parsed)
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim())
    }

    /// The value of a header that occurs exactly once, by case-insensitive name.
    fn header_sent_once(&self, name: &str) -> Option<&str> {
        let mut values = self
            .headers
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name));
        let (_, value) = values.next()?;
        values.next().is_none().then_some(value.trim())
    }

    /// Every comma-separated entry of every occurrence of a header.
    pub fn list<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(key, _)| key.eq_ignore_ascii_case(name))
            .flat_map(|(_, value)| value.split(','))
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.list(name)
            .any(|entry| entry.eq_ignore_ascii_case(token))
    }

    /// The `&`-separated parts of the query, as sent and in order.
    pub fn query_pairs(&self) -> impl Iterator<Item = &str> {
        self.query
            .as_deref()
            .into_iter()
            .flat_map(|query| query.split('&'))
    }

    /// The value of a query parameter, as sent (tokens are URL-safe already).
    pub fn query_parameter(&self, name: &str) -> Option<&str> {
        self.query_pairs()
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }
}

/// True for the base64 form of 16 bytes (RFC 6455 section 4.1): 22 digits and `==`, the last
/// digit carrying only the final 2 bits, so its low 4 bits are zero as canonical base64 wants.
fn is_websocket_key(key: &str) -> bool {
    let Some((digits, padding)) = key.as_bytes().split_at_checked(22) else {
        return false;
    };
    padding == b"=="
        && digits
            .iter()
            .all(|&digit| digit.is_ascii_alphanumeric() || digit == b'+' || digit == b'/')
        && b"AQgw".contains(&digits[21])
}

/// The parts of an upstream's answer that the client must see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeAnswer {
    pub accept: String,
    pub protocol: Option<String>,
    pub extensions: Option<String>,
}

/// Why an upstream's answer is not a usable upgrade.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("malformed response head")]
    Malformed,
    #[error("answered status {0} instead of 101")]
    Status(u16),
    #[error("101 answer without Sec-WebSocket-Accept")]
    NoAccept,
}

impl UpgradeAnswer {
    /// Parses the upstream's response head.
    pub fn parse(head: &[u8]) -> Result<Self, AnswerError> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut slots);
        match response.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err(AnswerError::Malformed),
        }
        let status = response.code.ok_or(AnswerError::Malformed)?;
        if status != 101 {
            return Err(AnswerError::Status(status));
        }
        let find = |name: &str| {
            response
                .headers
                .iter()
                .find(|header| header.name.eq_ignore_ascii_case(name))
                .and_then(|header| std::str::from_utf8(header.value).ok())
                .map(|value| value.trim().to_owned())
        };
        Ok(Self {
            accept: find("sec-websocket-accept").ok_or(AnswerError::NoAccept)?,
            protocol: find("sec-websocket-protocol"),
            extensions: find("sec-websocket-extensions"),
        })
    }

    /// The 101 response relayed to the client.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(256);
        out.push_str(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        );
        push_header(&mut out, "Sec-WebSocket-Accept", &self.accept);
        if let Some(protocol) = &self.protocol {
            push_header(&mut out, "Sec-WebSocket-Protocol", protocol);
        }
        if let Some(extensions) = &self.extensions {
            push_header(&mut out, "Sec-WebSocket-Extensions", extensions);
        }
        out.push_str("\r\n");
        out
    }
}

/// Appends one `name: value` header line to a head being written.
pub(crate) fn push_header(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str(": ");
    out.push_str(value);
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &str = "GET /ws/room?access_token=abc&x=1 HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, bearer.t0k\r\n\r\n";

    #[test]
    fn parses_an_upgrade() {
        let request = UpgradeRequest::parse(UPGRADE.as_bytes()).unwrap();
        assert_eq!(request.path, "/ws/room");
        assert_eq!(request.query_parameter("access_token"), Some("abc"));
        assert_eq!(request.query_parameter("missing"), None);
        assert_eq!(request.header("HOST"), Some("gw"));
        assert_eq!(
            request.list("sec-websocket-protocol").collect::<Vec<_>>(),
            ["chat", "bearer.t0k"]
        );
    }

    #[test]
    fn plain_requests_are_bad_requests() {
        let plain = "GET / HTTP/1.1\r\nHost: gw\r\n\r\n";
        assert_eq!(
            UpgradeRequest::parse(plain.as_bytes()),
            Err(Refusal::BadRequest)
        );
        let post = UPGRADE.replacen("GET", "POST", 1);
        assert_eq!(
            UpgradeRequest::parse(post.as_bytes()),
            Err(Refusal::BadRequest)
        );
    }

    #[test]
    fn keys_that_are_not_16_bytes_of_base64_are_bad_requests() {
        const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        for bad in [
            "Sec-WebSocket-Key: k\r\n",
            // 15 and 17 bytes.
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j\r\n",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZSE=\r\n",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ!!\r\n",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZ$==\r\n",
            // Non-zero bits after the 16th byte.
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==\r\n",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        ] {
            let request = UPGRADE.replace(KEY, bad);
            assert_eq!(
                UpgradeRequest::parse(request.as_bytes()),
                Err(Refusal::BadRequest),
                "{bad}"
            );
        }
        let other_key = UPGRADE.replace(KEY, "sec-websocket-key: AAAAAAAAAAAAAAAAAAAAAA==\r\n");
        assert!(UpgradeRequest::parse(other_key.as_bytes()).is_ok());
    }

    #[test]
    fn other_websocket_versions_are_426() {
        let old = UPGRADE.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
        assert_eq!(
            UpgradeRequest::parse(old.as_bytes()),
            Err(Refusal::UnsupportedVersion)
        );
        assert!(
            Refusal::UnsupportedVersion
                .response()
                .contains("Sec-WebSocket-Version: 13\r\n")
        );
    }

    #[test]
    fn paths_with_dot_segments_are_unsafe_and_their_query_is_not_judged() {
        let traversal = UPGRADE.replacen("/ws/room?", "/ws/%2e%2E/admin?", 1);
        assert_eq!(
            UpgradeRequest::parse(traversal.as_bytes()),
            Err(Refusal::UnsafePath)
        );
        let dots_in_query = UPGRADE.replacen("x=1", "next=/../a", 1);
        assert!(UpgradeRequest::parse(dots_in_query.as_bytes()).is_ok());
    }

    #[tokio::test]
    async fn a_head_split_across_reads_ends_at_its_blank_line() {
        let mut input = UPGRADE.as_bytes().to_vec();
        input.push(0x81);
        // Every split point, the ones inside the closing "\r\n\r\n" among them.
        for split in 1..input.len() {
            let (first, second) = input.split_at(split);
            let head = read_head(&mut first.chain(second), 4096).await.unwrap();
            assert_eq!(head.head, UPGRADE.as_bytes(), "split at {split}");
            // What came with the head's last read, and no more.
            let rest: &[u8] = if split < UPGRADE.len() { &[0x81] } else { &[] };
            assert_eq!(head.rest, rest, "split at {split}");
        }
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut head = String::from("GET / HTTP/1.1\r\n");
        for n in 0..200 {
            head.push_str(&format!("X-{n}: y\r\n"));
        }
        head.push_str("\r\n");
        assert_eq!(
            UpgradeRequest::parse(head.as_bytes()),
            Err(Refusal::HeadersTooLarge)
        );
    }

    #[tokio::test]
    async fn head_reading_keeps_early_bytes_and_caps_size() {
        let mut input = UPGRADE.as_bytes().to_vec();
        input.extend_from_slice(&[0x81, 0x80]);
        let head = read_head(&mut input.as_slice(), 4096).await.unwrap();
        assert_eq!(head.head, UPGRADE.as_bytes());
        assert_eq!(head.rest, [0x81, 0x80]);

        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(5000));
        assert!(matches!(
            read_head(&mut huge.as_bytes(), 4096).await,
            Err(HeadError::TooLarge(4096))
        ));
        assert!(matches!(
            read_head(&mut &b"GET / HT"[..], 4096).await,
            Err(HeadError::Closed)
        ));
    }

    #[test]
    fn upstream_answer_is_relayed_with_protocol_and_extensions() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: abc=\r\nSec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n";
        let answer = UpgradeAnswer::parse(head).unwrap();
        assert_eq!(answer.protocol.as_deref(), Some("chat"));
        let rendered = answer.render();
        assert!(rendered.contains("Sec-WebSocket-Accept: abc=\r\n"));
        assert!(rendered.contains("Sec-WebSocket-Extensions: permessage-deflate\r\n"));
        assert!(matches!(
            UpgradeAnswer::parse(b"HTTP/1.1 403 Forbidden\r\n\r\n"),
            Err(AnswerError::Status(403))
        ));
    }
}
