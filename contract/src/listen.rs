//! How both sides listen: the launcher's store and status port, the operator's metrics and
//! probes. On every address by default, IPv6 and IPv4 alike, so a job runs the same on IPv4,
//! IPv6 and dual-stack clusters.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// Every address, IPv6 and IPv4, on `port` (see [`bind`]).
pub fn every_address(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))
}

/// A listening, non-blocking socket on `addr` (ready for `tokio::net::TcpListener::from_std`).
///
/// `[::]` listens dual-stack whatever `net.ipv6.bindv6only` says, and falls back to `0.0.0.0`
/// on a kernel without IPv6 (booted with `ipv6.disable=1`, as some hardened nodes are); any
/// other address is bound exactly. `SO_REUSEADDR` is set, as libuv does, so a restarted
/// process can rebind while old connections sit in TIME_WAIT.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    match listen(addr) {
        // A taken port is taken for IPv4 too: only a missing IPv6 falls back.
        Err(v6) if addr.ip() == Ipv6Addr::UNSPECIFIED && v6.kind() != io::ErrorKind::AddrInUse => {
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
            listen(v4).map_err(|v4_err| {
                io::Error::new(
                    v4_err.kind(),
                    format!("cannot listen on {addr} ({v6}) nor on {v4} ({v4_err})"),
                )
            })
        }
        other => other,
    }
}

fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.ip() == Ipv6Addr::UNSPECIFIED {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    // The kernel clamps the backlog to net.core.somaxconn, as torch's -1 asks.
    socket.listen(65535)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn round_trip(listener: &TcpListener, to: SocketAddr) {
        listener.set_nonblocking(false).unwrap();
        let mut client = TcpStream::connect(to).unwrap();
        let (mut served, _) = listener.accept().unwrap();
        client.write_all(b"x").unwrap();
        let mut byte = [0u8];
        served.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"x");
    }

    #[test]
    fn every_address_takes_ipv6_and_ipv4_loopback() {
        let listener = bind(every_address(0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(
            listener.local_addr().unwrap().is_ipv6(),
            "this machine has IPv6"
        );
        round_trip(&listener, SocketAddr::from((Ipv6Addr::LOCALHOST, port)));
        round_trip(&listener, SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }

    #[test]
    fn a_given_address_is_bound_exactly() {
        let v6 = bind("[::1]:0".parse().unwrap()).unwrap();
        let port = v6.local_addr().unwrap().port();
        round_trip(&v6, SocketAddr::from((Ipv6Addr::LOCALHOST, port)));
        assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
        let taken = bind(SocketAddr::from((Ipv6Addr::LOCALHOST, port))).unwrap_err();
        assert_eq!(taken.kind(), io::ErrorKind::AddrInUse);
    }
}
