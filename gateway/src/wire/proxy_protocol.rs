//! The PROXY protocol, versions 1 (text) and 2 (binary): a load balancer that relays TCP puts a
//! header naming the client's address before the client's own bytes. Only peers in
//! `listen.proxyProtocol.trustedProxies` may send one, and with the protocol on they must.
//! The specification: <https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt>.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rustix::net::RecvFlags;
use tokio::io::{AsyncReadExt as _, Interest};
use tokio::net::TcpStream;

use crate::wire::forwarded::is_trusted_proxy;
use crate::wire::refusal::Refusal;
use wsfleet_config::ProxyProtocolConfig;

/// A v1 line is at most this long, CRLF included.
const V1_MAX_BYTES: usize = 107;
const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version and command, family and protocol, length.
const V2_FIXED_BYTES: usize = 16;
/// The largest v2 address block: two AF_UNIX paths.
const V2_MAX_ADDRESS_BYTES: usize = 216;
/// What [`read_header`] looks at before deciding: any v1 line, or a v2 header up to its TLVs.
pub const PEEK_BYTES: usize = V2_FIXED_BYTES + V2_MAX_ADDRESS_BYTES;

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client as the proxy saw it; `None` when the proxy speaks for itself (a v2 LOCAL
    /// health check) or names no TCP client (v1 UNKNOWN, v2 UNSPEC or UNIX).
    pub source: Option<SocketAddr>,
    /// The whole header, v2 TLVs included: the bytes before the client's own.
    pub length: usize,
}

/// Why the bytes are not a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The peer sent something else first, such as an HTTP request or a TLS hello.
    #[error("no PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Invalid(&'static str),
}

/// Parses the header at the start of `bytes`; `Ok(None)` while `bytes` could still grow into
/// one. A v2 header is complete once its address block is in: its TLVs are skipped unread.
/// More bytes never change an answer once given, and [`PEEK_BYTES`] always get one.
pub fn parse(bytes: &[u8]) -> Result<Option<ProxyHeader>, HeaderError> {
    match bytes.first() {
        None => Ok(None),
        Some(b'P') => parse_v1(bytes),
        Some(b'\r') => parse_v2(bytes),
        Some(_) => Err(HeaderError::Missing),
    }
}

fn parse_v1(bytes: &[u8]) -> Result<Option<ProxyHeader>, HeaderError> {
    let seen = bytes.len().min(V1_PREFIX.len());
    if bytes[..seen] != V1_PREFIX[..seen] {
        return Err(HeaderError::Missing);
    }
    let window = &bytes[..bytes.len().min(V1_MAX_BYTES)];
    let Some(end) = window.windows(2).position(|pair| pair == b"\r\n") else {
        return if window.len() == V1_MAX_BYTES {
            Err(HeaderError::Invalid("v1 line longer than 107 bytes"))
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&bytes[V1_PREFIX.len()..end])
        .map_err(|_| HeaderError::Invalid("v1 line is not text"))?;
    let length = end + 2;
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Ok(Some(ProxyHeader {
            source: None,
            length,
        }));
    }
    let fields: Vec<&str> = line.split(' ').collect();
    let [protocol, source, destination, source_port, destination_port] = fields[..] else {
        return Err(HeaderError::Invalid("v1 line needs five fields"));
    };
    let ip = match protocol {
        "TCP4" => source.parse::<Ipv4Addr>().map(IpAddr::V4),
        "TCP6" => source.parse::<Ipv6Addr>().map(IpAddr::V6),
        _ => {
            return Err(HeaderError::Invalid(
                "v1 protocol is not TCP4, TCP6 or UNKNOWN",
            ));
        }
    }
    .map_err(|_| HeaderError::Invalid("v1 source address does not match its protocol"))?;
    let destination_ok = match protocol {
        "TCP4" => destination.parse::<Ipv4Addr>().is_ok(),
        _ => destination.parse::<Ipv6Addr>().is_ok(),
    };
    if !destination_ok {
        return Err(HeaderError::Invalid(
            "v1 destination address does not match its protocol",
        ));
    }
    let port = v1_port(source_port)?;
    v1_port(destination_port)?;
    Ok(Some(ProxyHeader {
        source: Some(SocketAddr::new(ip, port)),
        length,
    }))
}

/// A decimal port without sign or leading zeros, as the specification requires.
fn v1_port(text: &str) -> Result<u16, HeaderError> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) {
        return Err(HeaderError::Invalid("v1 port is not a decimal number"));
    }
    text.parse()
        .map_err(|_| HeaderError::Invalid("v1 port is above 65535"))
}

fn parse_v2(bytes: &[u8]) -> Result<Option<ProxyHeader>, HeaderError> {
    let seen = bytes.len().min(V2_SIGNATURE.len());
    if bytes[..seen] != V2_SIGNATURE[..seen] {
        return Err(HeaderError::Missing);
    }
    let Some(fixed) = bytes.get(..V2_FIXED_BYTES) else {
        return Ok(None);
    };
    let (version, command) = (fixed[12] >> 4, fixed[12] & 0x0f);
    let (family, protocol) = (fixed[13] >> 4, fixed[13] & 0x0f);
    let declared = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let length = V2_FIXED_BYTES + declared;
    if version != 2 {
        return Err(HeaderError::Invalid("v2 version is not 2"));
    }
    match command {
        // The proxy's own connection (a health check): its address block means nothing.
        0x0 => {
            return Ok(Some(ProxyHeader {
                source: None,
                length,
            }));
        }
        0x1 => {}
        _ => return Err(HeaderError::Invalid("v2 command is not LOCAL or PROXY")),
    }
    let address_bytes = match family {
        0x0 => 0,
        0x1 => 12,
        0x2 => 36,
        0x3 => V2_MAX_ADDRESS_BYTES,
        _ => return Err(HeaderError::Invalid("v2 address family is unknown")),
    };
    if protocol > 0x2 {
        return Err(HeaderError::Invalid("v2 transport protocol is unknown"));
    }
    if declared < address_bytes {
        return Err(HeaderError::Invalid(
            "v2 length is shorter than its addresses",
        ));
    }
    let Some(addresses) = bytes.get(V2_FIXED_BYTES..V2_FIXED_BYTES + address_bytes) else {
        return Ok(None);
    };
    let source = match (family, protocol) {
        (0x1 | 0x2, 0x1) => {
            let (ip, port_at) = if family == 0x1 {
                let octets: [u8; 4] = addresses[..4].try_into().expect("4 bytes");
                (IpAddr::from(octets), 8)
            } else {
                let octets: [u8; 16] = addresses[..16].try_into().expect("16 bytes");
                (IpAddr::from(octets), 32)
            };
            let port = u16::from_be_bytes([addresses[port_at], addresses[port_at + 1]]);
            Some(SocketAddr::new(ip, port))
        }
        (0x1 | 0x2, _) => {
            return Err(HeaderError::Invalid(
                "v2 relays an IP connection other than TCP",
            ));
        }
        // UNSPEC or UNIX: no client address to use, so the peer's stands.
        _ => None,
    };
    Ok(Some(ProxyHeader { source, length }))
}

/// How reading a header off a connection ended without one.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("the peer closed before its PROXY protocol header ended")]
    Closed,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads the header off `tcp`, leaving the client's own bytes unread for TLS or HTTP: it
/// peeks until a whole header is in view, then consumes exactly that header.
pub(crate) async fn read_header(tcp: &mut TcpStream) -> Result<ProxyHeader, ReadError> {
    let mut view = [0u8; PEEK_BYTES];
    let header = loop {
        tcp.readable().await?;
        // An incomplete header answers WouldBlock, which clears the readiness: the next
        // `readable()` then waits for more bytes instead of peeking the same ones again.
        let peeked = tcp.try_io(Interest::READABLE, || {
            let (_, count) = rustix::net::recv(&*tcp, &mut view[..], RecvFlags::PEEK)?;
            match parse(&view[..count]) {
                Ok(None) if count > 0 => Err(io::ErrorKind::WouldBlock.into()),
                parsed => Ok((count, parsed)),
            }
        });
        match peeked {
            Ok((0, _)) => return Err(ReadError::Closed),
            Ok((_, parsed)) => break parsed?.expect("a complete header"),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            Err(err) => return Err(err.into()),
        }
    };
    let mut left = header.length;
    while left > 0 {
        let chunk = left.min(view.len());
        tcp.read_exact(&mut view[..chunk])
            .await
            .map_err(|err| match err.kind() {
                io::ErrorKind::UnexpectedEof => ReadError::Closed,
                _ => ReadError::Io(err),
            })?;
        left -= chunk;
    }
    Ok(header)
}

/// The client's address on a connection from `peer`: the header's source when the protocol
/// is on, the peer's own otherwise. `Err(None)`: the peer left, nothing to answer.
pub(crate) async fn client_address(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    config: Option<&ProxyProtocolConfig>,
) -> Result<SocketAddr, Option<Refusal>> {
    let Some(config) = config else {
        return Ok(peer);
    };
    if !is_trusted_proxy(peer.ip(), &config.trusted_proxies) {
        return Err(Some(Refusal::ProxyUntrusted));
    }
    match tokio::time::timeout(config.header_timeout, read_header(tcp)).await {
        Ok(Ok(header)) => Ok(header.source.unwrap_or(peer)),
        Ok(Err(ReadError::Header(HeaderError::Missing))) => Err(Some(Refusal::ProxyHeaderMissing)),
        Ok(Err(ReadError::Header(err @ HeaderError::Invalid(_)))) => {
            tracing::debug!(%peer, error = %err, "PROXY protocol header refused");
            Err(Some(Refusal::ProxyHeaderInvalid))
        }
        Ok(Err(ReadError::Closed | ReadError::Io(_))) => Err(None),
        Err(_) => Err(Some(Refusal::ProxyHeaderTimeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn complete(bytes: &[u8]) -> ProxyHeader {
        parse(bytes)
            .unwrap_or_else(|err| panic!("{err} for {bytes:?}"))
            .unwrap_or_else(|| panic!("incomplete: {bytes:?}"))
    }

    fn invalid(bytes: &[u8]) -> &'static str {
        match parse(bytes) {
            Err(HeaderError::Invalid(reason)) => reason,
            other => panic!("{other:?} for {bytes:?}"),
        }
    }

    /// A v2 header: `command` and `family_protocol` bytes, then `body` (addresses and TLVs).
    fn v2(command: u8, family_protocol: u8, body: &[u8]) -> Vec<u8> {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend([0x20 | command, family_protocol]);
        bytes.extend(u16::try_from(body.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn v1_names_the_source_and_its_length() {
        let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            complete(line),
            ProxyHeader {
                source: Some(addr("192.0.2.7:56324")),
                length: 41
            }
        );
        let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 443\r\n";
        assert_eq!(complete(line).source, Some(addr("[2001:db8::7]:65535")));
        assert_eq!(complete(b"PROXY UNKNOWN\r\n").source, None);
        assert_eq!(
            complete(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").length,
            35
        );
    }

    #[test]
    fn v1_refuses_what_the_specification_does_not_allow() {
        for (line, reason) in [
            (
                &b"PROXY TCP4 192.0.2.7 10.0.0.1 56324\r\n"[..],
                "five fields",
            ),
            (b"PROXY TCP4  192.0.2.7 10.0.0.1 1 2\r\n", "five fields"),
            (b"PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n", "protocol"),
            (b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n", "source address"),
            (b"PROXY TCP6 2001:db8::7 10.0.0.1 1 2\r\n", "destination"),
            (b"PROXY TCP4 192.0.2.007 10.0.0.1 1 2\r\n", "source address"),
            (b"PROXY TCP4 192.0.2.7 10.0.0.1 080 2\r\n", "decimal"),
            (b"PROXY TCP4 192.0.2.7 10.0.0.1 +80 2\r\n", "decimal"),
            (b"PROXY TCP4 192.0.2.7 10.0.0.1 80 65536\r\n", "65535"),
            (b"PROXY TCP4 192.0.2.\xff 10.0.0.1 1 2\r\n", "text"),
        ] {
            let found = invalid(line);
            assert!(found.contains(reason), "{found:?} for {line:?}");
        }
        let endless = [b"PROXY TCP4 ".as_slice(), &[b'1'; 100]].concat();
        assert_eq!(invalid(&endless), "v1 line longer than 107 bytes");
    }

    #[test]
    fn v2_names_the_source_and_skips_tlvs() {
        let mut ipv4 = vec![192, 0, 2, 7, 10, 0, 0, 1];
        ipv4.extend(56324u16.to_be_bytes());
        ipv4.extend(443u16.to_be_bytes());
        let with_tlv = [ipv4.as_slice(), &[0xEA, 0, 3, b'v', b'p', b'c']].concat();
        let header = v2(0x1, 0x11, &with_tlv);
        // The TLV need not have arrived: the length says how much to skip.
        assert_eq!(
            complete(&header[..16 + 12]),
            ProxyHeader {
                source: Some(addr("192.0.2.7:56324")),
                length: 16 + 18
            }
        );

        let mut ipv6 = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        ipv6.extend([0; 16]);
        ipv6.extend(8080u16.to_be_bytes());
        ipv6.extend(443u16.to_be_bytes());
        assert_eq!(
            complete(&v2(0x1, 0x21, &ipv6)).source,
            Some(addr("[2001:db8::7]:8080"))
        );
    }

    #[test]
    fn v2_local_unspec_and_unix_keep_the_peer() {
        // LOCAL: the proxy's health check; whatever follows is ignored.
        assert_eq!(complete(&v2(0x0, 0xff, &[1, 2, 3])).source, None);
        assert_eq!(complete(&v2(0x1, 0x00, &[])).source, None);
        assert_eq!(complete(&v2(0x1, 0x31, &[0; 216])).source, None);
    }

    #[test]
    fn v2_refuses_bad_fields() {
        let mut version_1 = v2(0x1, 0x11, &[0; 12]);
        version_1[12] = 0x11;
        assert!(invalid(&version_1).contains("version"));
        assert!(invalid(&v2(0x2, 0x11, &[0; 12])).contains("command"));
        assert!(invalid(&v2(0x1, 0x41, &[0; 12])).contains("family"));
        assert!(invalid(&v2(0x1, 0x13, &[0; 12])).contains("transport"));
        assert!(invalid(&v2(0x1, 0x12, &[0; 12])).contains("other than TCP"));
        assert!(invalid(&v2(0x1, 0x21, &[0; 12])).contains("shorter"));
    }

    #[test]
    fn other_protocols_are_a_missing_header() {
        for bytes in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST",
            b"\x16\x03\x01\x02\x00",
            b"\r\n\r\n\0\r\nQUIT!",
            b"proxy TCP4",
        ] {
            assert_eq!(parse(bytes), Err(HeaderError::Missing), "{bytes:?}");
        }
    }

    #[test]
    fn prefixes_wait_and_a_full_view_always_decides() {
        let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n";
        let binary = v2(0x1, 0x11, &[0; 12]);
        for header in [&line[..], &binary] {
            for end in 0..header.len() {
                assert_eq!(parse(&header[..end]), Ok(None), "{:?}", &header[..end]);
            }
        }
        let mut filler = b"PROXY ".to_vec();
        filler.resize(PEEK_BYTES, b'x');
        assert!(parse(&filler).is_err());
        let mut unix = v2(0x1, 0x31, &[0; 216]);
        unix.truncate(PEEK_BYTES);
        assert!(parse(&unix).unwrap().is_some());
    }

    #[tokio::test]
    async fn reading_leaves_the_clients_bytes_and_waits_for_a_split_header() {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (sender, accepted) = tokio::join!(
            TcpStream::connect(listener.local_addr().unwrap()),
            listener.accept()
        );
        let (mut sender, mut accepted) = (sender.unwrap(), accepted.unwrap().0);
        sender.write_all(b"PROXY TCP4 192.0.2.7 ").await.unwrap();
        let reading = tokio::spawn(async move {
            let header = read_header(&mut accepted).await.unwrap();
            let mut rest = String::new();
            accepted.read_to_string(&mut rest).await.unwrap();
            (header, rest)
        });
        // The reader has seen half a line; the rest and the client's bytes come later.
        tokio::task::yield_now().await;
        sender
            .write_all(b"10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n")
            .await
            .unwrap();
        drop(sender);
        let (header, rest) = reading.await.unwrap();
        assert_eq!(header.source, Some(addr("192.0.2.7:56324")));
        assert_eq!(rest, "GET / HTTP/1.1\r\n");
    }
}
