//! The connection a request came on, and the client behind it.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use portcullis_core::net::{TrustedProxies, canonical_ip, client_ip};

/// Who sent a request, as far as we can tell. Put into the request's extensions by the
/// server before any protection runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// The address that connected to us.
    pub peer: SocketAddr,
    /// The client: the peer, or what trusted proxies say is behind them.
    pub ip: IpAddr,
    /// Whether the peer is a trusted proxy (its forwarding headers are believed).
    pub peer_trusted: bool,
    /// Whether the request arrived over TLS on our listener.
    pub tls: bool,
}

impl ClientInfo {
    /// Resolves the client of a request from `peer` with these headers.
    pub fn resolve(
        peer: SocketAddr,
        tls: bool,
        headers: &HeaderMap,
        trusted: &TrustedProxies,
    ) -> Self {
        let peer_ip = canonical_ip(peer.ip());
        let peer_trusted = trusted.contains(peer_ip);
        let ip = if peer_trusted {
            let values = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok());
            client_ip(peer_ip, values, trusted)
        } else {
            peer_ip
        };
        Self {
            peer,
            ip,
            peer_trusted,
            tls,
        }
    }
}
