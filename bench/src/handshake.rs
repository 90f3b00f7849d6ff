//! The HTTP/1.1 upgrade, from both ends: the load generator's request and the echo
//! upstream's answer.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd as _;

use anyhow::{Context as _, bail, ensure};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tungstenite::handshake::{client::generate_key, derive_accept_key};

use crate::frame::FrameBuf;

/// Largest request or response head either side accepts.
const MAX_HEAD_BYTES: usize = 16 << 10;

/// Where the load generator connects: `ws://host:port/path` or `wss://host:port/path`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `wss://`: TLS before the upgrade.
    pub tls: bool,
    /// `host:port` as written in the URL, sent as the `Host` header.
    pub authority: String,
    pub path: String,
}

impl Endpoint {
    /// Parses `ws://127.0.0.1:8080/path` (or `wss://`); only literal socket addresses, since
    /// everything is local.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let (tls, rest) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
            (Some(rest), _) => (false, rest),
            (None, Some(rest)) => (true, rest),
            (None, None) => bail!("URL {url:?} must start with ws:// or wss://"),
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        let addr = authority.parse().with_context(|| {
            format!("URL {url:?}: {authority:?} is not an IP address with a port")
        })?;
        Ok(Self {
            addr,
            tls,
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// The server answered an upgrade request with a status other than 101.
#[derive(Debug)]
pub struct NotUpgraded {
    pub addr: SocketAddr,
    pub status: u16,
    pub reason: String,
}

impl std::fmt::Display for NotUpgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            addr,
            status,
            reason,
        } = self;
        write!(f, "upgrade via {addr} answered {status} {reason}")
    }
}

impl std::error::Error for NotUpgraded {}

/// Opens a TCP connection to the endpoint, from `source` if given (any address of
/// 127.0.0.0/8 is local, so a storm can come from as many addresses as it has clients).
pub async fn dial(endpoint: &Endpoint, source: Option<IpAddr>) -> anyhow::Result<TcpStream> {
    let stream = match source {
        None => TcpStream::connect(endpoint.addr).await,
        Some(source) => {
            let socket = if source.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            leave_the_port_to_connect(&socket)?;
            socket
                .bind(SocketAddr::new(source, 0))
                .with_context(|| format!("binding a client socket to {source}"))?;
            socket.connect(endpoint.addr).await
        }
    };
    let stream = stream.with_context(|| format!("connecting to {}", endpoint.addr))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sets `IP_BIND_ADDRESS_NO_PORT`, so that binding a source address leaves choosing the port to
/// `connect`. A port chosen by `bind` is closed to every other outgoing connection until its
/// socket is gone, TIME_WAIT included, and the generator holds the TIME_WAIT of every client
/// it closes: after a few storms of 9,000, the proxies found no free port for their own
/// connections to the echo upstream and answered 502. A port chosen by `connect` is shared by
/// connections to other destinations. (Neither std, tokio nor rustix sets this option.)
fn leave_the_port_to_connect(socket: &TcpSocket) -> std::io::Result<()> {
    let enable: libc::c_int = 1;
    // SAFETY: the descriptor is the live socket borrowed here, and the option value is a
    // `c_int` whose size is passed with it.
    #[allow(unsafe_code)]
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const enable).cast(),
            std::mem::size_of_val(&enable) as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sends the upgrade request over `stream` and checks the 101 that answers it.
pub async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    endpoint: &Endpoint,
    bearer: Option<&str>,
) -> anyhow::Result<(S, FrameBuf)> {
    let key = generate_key();
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
        endpoint.path, endpoint.authority
    );
    if let Some(token) = bearer {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;

    let (head, leftover) = read_head(&mut stream).await?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    response
        .parse(&head)
        .context("parsing the upgrade response")?;
    let status = response.code.unwrap_or_default();
    if status != 101 {
        return Err(NotUpgraded {
            addr: endpoint.addr,
            status,
            reason: response.reason.unwrap_or_default().to_owned(),
        }
        .into());
    }
    let accept = header(response.headers, "sec-websocket-accept")
        .context("101 response lacks Sec-WebSocket-Accept")?;
    ensure!(
        accept == derive_accept_key(key.as_bytes()).as_bytes(),
        "Sec-WebSocket-Accept does not match the key sent"
    );
    Ok((stream, FrameBuf::with_leftover(&leftover)))
}

/// Answers a client's upgrade request with 101.
pub async fn accept(stream: &mut TcpStream) -> anyhow::Result<FrameBuf> {
    let (head, leftover) = read_head(stream).await?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    request
        .parse(&head)
        .context("parsing the upgrade request")?;
    let key = header(request.headers, "sec-websocket-key")
        .context("upgrade request lacks Sec-WebSocket-Key")?;
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key)
    );
    stream.write_all(response.as_bytes()).await?;
    Ok(FrameBuf::with_leftover(&leftover))
}

fn header<'a>(headers: &[httparse::Header<'a>], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case(name))
        .map(|header| header.value)
}

/// Reads up to the blank line; returns the head and whatever arrived after it.
async fn read_head<R: AsyncRead + Unpin>(reader: &mut R) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let leftover = buf.split_off(end + 4);
            return Ok((buf, leftover));
        }
        if buf.len() >= MAX_HEAD_BYTES {
            bail!("handshake head exceeds {MAX_HEAD_BYTES} bytes");
        }
        buf.reserve(1024);
        if reader
            .read_buf(&mut buf)
            .await
            .context("reading a handshake head")?
            == 0
        {
            bail!("connection closed during the handshake");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_bound_to_a_source_address_takes_its_port_when_it_connects() {
        let socket = TcpSocket::new_v4().unwrap();
        leave_the_port_to_connect(&socket).unwrap();
        socket.bind(([127, 1, 0, 1], 0).into()).unwrap();
        assert_eq!(socket.local_addr().unwrap().port(), 0, "bind chose a port");
    }

    #[test]
    fn endpoint_keeps_path_and_authority() {
        let endpoint = Endpoint::parse("ws://127.0.0.1:18403/ws?x=1").unwrap();
        assert_eq!(endpoint.addr, "127.0.0.1:18403".parse().unwrap());
        assert_eq!(endpoint.authority, "127.0.0.1:18403");
        assert_eq!(endpoint.path, "/ws?x=1");
        assert!(!endpoint.tls);
        assert_eq!(Endpoint::parse("ws://127.0.0.1:1").unwrap().path, "/");
        assert!(Endpoint::parse("wss://127.0.0.1:1/").unwrap().tls);
    }

    #[test]
    fn endpoint_refuses_other_schemes_and_host_names() {
        assert!(Endpoint::parse("http://127.0.0.1:1/").is_err());
        let err = Endpoint::parse("ws://localhost:1/").unwrap_err();
        assert!(format!("{err:#}").contains("localhost"), "{err:#}");
    }
}
