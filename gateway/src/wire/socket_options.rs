//! The `tcp` options, set on each client socket once accepted and each upstream socket once
//! connected: keepalive probes, so that a peer that vanished (or a NAT or load balancer entry
//! that expired) is noticed on an idle connection; Nagle's algorithm; and the kernel buffers.

use std::io;

use rustix::net::sockopt;
use tokio::net::TcpStream;

use wsfleet_config::TcpConfig;

/// Sets what `config` asks for on `tcp`. `no_delay_now` is the socket's TCP_NODELAY as it
/// stands (accepted sockets inherit the listener's), so that it is set only to change it.
pub(crate) fn apply(tcp: &TcpStream, config: &TcpConfig, no_delay_now: bool) -> io::Result<()> {
    if config.no_delay != no_delay_now {
        sockopt::set_tcp_nodelay(tcp, config.no_delay)?;
    }
    if let Some(keepalive) = &config.keepalive {
        sockopt::set_tcp_keepidle(tcp, keepalive.idle)?;
        sockopt::set_tcp_keepintvl(tcp, keepalive.interval)?;
        sockopt::set_tcp_keepcnt(tcp, keepalive.count)?;
        sockopt::set_socket_keepalive(tcp, true)?;
    }
    if let Some(bytes) = config.send_buffer_bytes {
        sockopt::set_socket_send_buffer_size(tcp, bytes as usize)?;
    }
    if let Some(bytes) = config.receive_buffer_bytes {
        sockopt::set_socket_recv_buffer_size(tcp, bytes as usize)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use wsfleet_config::KeepaliveConfig;

    async fn connected_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (connected, accepted) = tokio::join!(
            TcpStream::connect(listener.local_addr().unwrap()),
            listener.accept()
        );
        (connected.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn every_option_reads_back_from_the_kernel() {
        let (socket, _peer) = connected_pair().await;
        let config = TcpConfig {
            no_delay: false,
            keepalive: Some(KeepaliveConfig {
                idle: Duration::from_secs(45),
                interval: Duration::from_secs(7),
                count: 4,
            }),
            send_buffer_bytes: Some(64 * 1024),
            receive_buffer_bytes: Some(32 * 1024),
            ..TcpConfig::default()
        };
        sockopt::set_tcp_nodelay(&socket, true).unwrap();
        apply(&socket, &config, true).unwrap();
        assert!(!sockopt::tcp_nodelay(&socket).unwrap());
        assert!(sockopt::socket_keepalive(&socket).unwrap());
        assert_eq!(
            sockopt::tcp_keepidle(&socket).unwrap(),
            Duration::from_secs(45)
        );
        assert_eq!(
            sockopt::tcp_keepintvl(&socket).unwrap(),
            Duration::from_secs(7)
        );
        assert_eq!(sockopt::tcp_keepcnt(&socket).unwrap(), 4);
        // Linux doubles the value for its bookkeeping (socket(7)).
        assert_eq!(
            sockopt::socket_send_buffer_size(&socket).unwrap(),
            128 * 1024
        );
        assert_eq!(
            sockopt::socket_recv_buffer_size(&socket).unwrap(),
            64 * 1024
        );
    }

    #[tokio::test]
    async fn the_defaults_leave_the_socket_alone_but_for_no_delay() {
        let (socket, _peer) = connected_pair().await;
        let before = sockopt::socket_send_buffer_size(&socket).unwrap();
        apply(&socket, &TcpConfig::default(), false).unwrap();
        assert!(sockopt::tcp_nodelay(&socket).unwrap());
        assert!(!sockopt::socket_keepalive(&socket).unwrap());
        assert_eq!(sockopt::socket_send_buffer_size(&socket).unwrap(), before);
    }
}
