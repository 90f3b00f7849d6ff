//! The upstream every target forwards to: answers each data frame with the same payload.

use anyhow::Context as _;
use std::net::SocketAddr;
use tokio::io::AsyncWriteExt as _;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::frame;
use crate::handshake;

/// Connections the kernel queues for the echo upstream before it accepts them: a storm
/// through any proxy must not wait on the upstream's listen queue.
const LISTEN_BACKLOG: u32 = 4096;

/// The echo upstream's listening socket.
pub fn listener(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts upgrades on `listener` forever.
pub async fn serve(listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await.context("accepting")?;
        tokio::spawn(async move {
            // A client that vanishes mid-run is the load generator's business, not ours.
            let _ = echo_connection(stream).await;
        });
    }
}

async fn echo_connection(mut stream: TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut frames = handshake::accept(&mut stream).await?;
    let mut out = Vec::with_capacity(4096);
    loop {
        // Answer every complete frame already read with a single write.
        let mut closing = false;
        while let Some(frame) = frames.next_frame()? {
            match frame.opcode {
                frame::OPCODE_BINARY | frame::OPCODE_TEXT => {
                    frame::encode(&mut out, frame.opcode, frame.payload, None)
                }
                frame::OPCODE_PING => {
                    frame::encode(&mut out, frame::OPCODE_PONG, frame.payload, None)
                }
                frame::OPCODE_CLOSE => {
                    frame::encode(&mut out, frame::OPCODE_CLOSE, frame.payload, None);
                    closing = true;
                    break;
                }
                _ => {}
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if closing {
            // The server closes TCP first (RFC 6455 section 7.1.1), so TIME_WAIT stays here.
            return Ok(stream.shutdown().await?);
        }
        if frames.fill(&mut stream).await? == 0 {
            return Ok(());
        }
    }
}
