//! One WebSocket connection after its upgrade: messages in, echoes or broadcasts out, until the
//! client closes, the connection fails, the room drops the client or the server shuts down.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use tokio_util::sync::CancellationToken;
use yawc::close::CloseCode;
use yawc::{Frame, HttpWebSocket, OpCode, WebSocketError};

use crate::room::Membership;
use crate::whoami;

/// How long a closing handshake may take before the connection is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// What a session knows about its client.
pub struct Session {
    /// The TCP peer: the gateway pod that forwarded the connection.
    pub peer: IpAddr,
    /// The answer to `whoami`, prepared at the upgrade.
    pub whoami: Bytes,
    /// The client's place in the chat room; None in echo mode.
    pub chat: Option<Membership>,
}

/// How a session ended, for its log line.
pub enum Ending {
    /// The client sent a close frame, with this code if it gave one.
    ClientClosed(Option<CloseCode>),
    /// The connection failed, or ended without a close frame.
    Lost,
    /// The upstream closed the connection with this code and reason.
    Closed(CloseCode, &'static str),
}

/// Runs the session to its end, closing the connection properly.
pub async fn run(
    mut ws: HttpWebSocket,
    mut session: Session,
    shutdown: &CancellationToken,
) -> Ending {
    let ending = loop {
        let step = tokio::select! {
            frame = ws.next() => match frame {
                Some(frame) => on_frame(&mut ws, &session, frame).await,
                None => Err(WebSocketError::ConnectionClosed),
            },
            broadcast = next_broadcast(session.chat.as_mut()) => match broadcast {
                Some(message) => ws.send(Frame::text(message)).await.map(|()| None),
                None => Ok(Some(Ending::Closed(CloseCode::Policy, "send buffer full"))),
            },
            () = shutdown.cancelled() => Ok(Some(Ending::Closed(CloseCode::Away, "server shutting down"))),
        };
        match step {
            Ok(None) => {}
            Ok(Some(ending)) => break ending,
            Err(_) => break Ending::Lost,
        }
    };
    // Out of the room before the closing handshake, which may take a while.
    drop(session.chat.take());
    close(&mut ws, &ending).await;
    ending
}

/// Answers one message; returns how the session ends if this frame ends it.
async fn on_frame(
    ws: &mut HttpWebSocket,
    session: &Session,
    frame: Frame,
) -> Result<Option<Ending>, WebSocketError> {
    match frame.opcode() {
        OpCode::Text if frame.payload() == whoami::QUESTION => {
            ws.send(Frame::text(session.whoami.clone())).await?;
        }
        OpCode::Text => match &session.chat {
            Some(chat) => chat.broadcast(&chat_message(session.peer, frame.payload())),
            None => ws.send(Frame::text(frame.into_payload())).await?,
        },
        OpCode::Binary if session.chat.is_none() => {
            ws.send(Frame::binary(frame.into_payload())).await?;
        }
        OpCode::Binary => {
            return Ok(Some(Ending::Closed(
                CloseCode::Unsupported,
                "chat takes text messages",
            )));
        }
        OpCode::Close => return Ok(Some(Ending::ClientClosed(frame.close_code()))),
        // yawc answers pings itself and hands over whole messages, never their fragments.
        OpCode::Ping | OpCode::Pong | OpCode::Continuation => {}
    }
    Ok(None)
}

/// The next chat message for this client; never resolves in echo mode.
async fn next_broadcast(chat: Option<&mut Membership>) -> Option<Bytes> {
    match chat {
        Some(chat) => chat.next().await,
        None => std::future::pending().await,
    }
}

/// A chat message as every member receives it.
fn chat_message(sender: IpAddr, text: &[u8]) -> Bytes {
    // yawc has checked that text messages are UTF-8 (Options::with_utf8), so nothing is lost.
    let text = String::from_utf8_lossy(text);
    Bytes::from(serde_json::json!({ "from": sender.to_string(), "text": text }).to_string())
}

/// Completes the closing handshake `ending` calls for, then shuts the connection down.
async fn close(ws: &mut HttpWebSocket, ending: &Ending) {
    let handshake = async {
        match ending {
            // Polling once more sends what yawc owes the client: the reply to its close frame,
            // or the close frame yawc chose for a protocol error.
            Ending::ClientClosed(_) | Ending::Lost => {
                ws.next().await;
            }
            Ending::Closed(code, reason) => {
                if ws.send(Frame::close(*code, reason)).await.is_ok() {
                    // The client may still send messages until its close frame; they are dropped.
                    while let Some(frame) = ws.next().await {
                        if frame.opcode() == OpCode::Close {
                            break;
                        }
                    }
                }
            }
        }
        let _ = ws.close().await;
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, handshake).await;
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientClosed(Some(code)) => {
                write!(f, "closed by the client ({})", u16::from(*code))
            }
            Self::ClientClosed(None) => f.write_str("closed by the client (no code)"),
            Self::Lost => f.write_str("connection lost"),
            Self::Closed(code, reason) => write!(f, "closed: {reason} ({})", u16::from(*code)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_messages_name_the_sender() {
        let message = chat_message("10.244.1.3".parse().unwrap(), "hi \"all\"".as_bytes());
        let message: serde_json::Value = serde_json::from_slice(&message).unwrap();
        assert_eq!(
            message,
            serde_json::json!({ "from": "10.244.1.3", "text": "hi \"all\"" })
        );
    }
}
