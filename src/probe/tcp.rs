//! TCP connections for probes, optionally from a chosen source address.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// A TCP connection to `addr` within `timeout`, bound to `source` first when
/// set (a bind failure says which address could not be bound).
pub fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(src) = source {
        sock.bind(&SocketAddr::new(src, 0).into()).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("failed to bind source address {src}: {e}"),
            )
        })?;
    }
    sock.connect_timeout(&addr.into(), timeout)?;
    Ok(sock.into())
}

/// What a connection attempt showed about the path to `addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Connected.
    Open,
    /// Refused: the packet arrived, nothing listens; the path let it through.
    Refused,
    /// No answer within the timeout: dropped on the way, or nobody there.
    Silent,
}

impl Reach {
    /// The packet got through (open or refused).
    pub fn passed(self) -> bool {
        self != Reach::Silent
    }
}

/// Try to connect; what happened.
pub fn reach(addr: SocketAddr, source: Option<IpAddr>, timeout: Duration) -> Reach {
    match connect(addr, source, timeout) {
        Ok(_) => Reach::Open,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Reach::Refused,
        Err(_) => Reach::Silent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn open_refused_and_unbindable_sources() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = l.local_addr().unwrap();
        assert_eq!(reach(open, None, Duration::from_secs(1)), Reach::Open);
        drop(l);
        assert_eq!(reach(open, None, Duration::from_secs(1)), Reach::Refused);
        // 198.51.100.1 (TEST-NET-2) is on no interface here: the bind fails
        // before any packet leaves.
        let e = connect(
            open,
            Some("198.51.100.1".parse().unwrap()),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("failed to bind source address 198.51.100.1: "),
            "{e}"
        );
    }
}
