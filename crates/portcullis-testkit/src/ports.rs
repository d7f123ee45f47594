//! Free loopback ports.

use std::net::{SocketAddr, TcpListener};

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr")
}

/// A free loopback port.
pub fn free_port() -> u16 {
    free_addr().port()
}
