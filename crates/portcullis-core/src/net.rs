//! Who is calling: the client address behind trusted proxies.
//!
//! The rule (DESIGN §9): a client's `X-Forwarded-For` is believed only when the peer
//! that connected is a trusted proxy. Then the client is the right-most entry that is
//! not itself a trusted proxy: each trusted proxy appended the address it saw, so every
//! entry to the right of the first untrusted one was written by someone we trust, and
//! everything to its left may be forged. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
//! is the IPv4 address it carries, so one client is never two keys.
//!
//! ```
//! use portcullis_core::net::{TrustedProxies, client_ip};
//! use std::net::IpAddr;
//!
//! let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
//! let peer: IpAddr = "10.0.0.2".parse().unwrap();
//! // A forged left-most entry is ignored; the proxy chain's own entries are skipped.
//! let ip = client_ip(peer, ["6.6.6.6, 203.0.113.7, 10.0.0.9"], &trusted);
//! assert_eq!(ip, "203.0.113.7".parse::<IpAddr>().unwrap());
//! // From an untrusted peer the header changes nothing.
//! let ip = client_ip("198.51.100.1".parse().unwrap(), ["6.6.6.6"], &trusted);
//! assert_eq!(ip, "198.51.100.1".parse::<IpAddr>().unwrap());
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::IpNet;

/// The networks whose forwarding headers are believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Trusts the given networks. An empty list trusts nobody.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets }
    }

    /// Whether `ip` belongs to a trusted network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Whether no network is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The trusted networks.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries; any other address as is.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The client's address for a request from `peer` carrying the given `X-Forwarded-For`
/// header values (in the order they appeared).
///
/// An entry that does not parse ends the walk: the address to its right (written by a
/// trusted proxy) is taken, because a well-behaved proxy never writes such an entry.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a str>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let peer = canonical_ip(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    let entries: Vec<&str> = forwarded_for
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut current = peer;
    for entry in entries.iter().rev() {
        let Some(ip) = parse_forwarded_entry(entry) else {
            return current;
        };
        current = ip;
        if !trusted.contains(ip) {
            return ip;
        }
    }
    current
}

/// Parses one `X-Forwarded-For` entry: an IP address, optionally with a port
/// (`1.2.3.4:80`, `[2001:db8::1]:443`).
pub fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    if let Ok(sa) = entry.parse::<SocketAddr>() {
        return Some(canonical_ip(sa.ip()));
    }
    if let Some(inner) = entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')) {
        return inner.parse::<IpAddr>().ok().map(canonical_ip);
    }
    None
}

/// The key of a client address for counters: an IPv4 address as is, an IPv6 address as
/// its network of `v6_prefix` bits (one end site gets a /64 or a /56; keying on single
/// IPv6 addresses would let one client be a billion keys).
pub fn ip_key(ip: IpAddr, v6_prefix: u8) -> String {
    let mut out = String::with_capacity(16);
    push_ip_key(&mut out, ip, v6_prefix);
    out
}

/// [`ip_key`], appended to `out`: on the rate limiter's hot path, without the formatting
/// machinery for the common IPv4 case.
pub fn push_ip_key(out: &mut String, ip: IpAddr, v6_prefix: u8) {
    use std::fmt::Write;
    match canonical_ip(ip) {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            let _ = match ipnet::Ipv6Net::new(v6, v6_prefix.min(128)) {
                Ok(net) => write!(out, "{}", net.trunc()),
                Err(_) => write!(out, "{v6}"),
            };
        }
    }
}

/// The unspecified IPv4 address, for places that need an address before one is known.
pub const UNSPECIFIED: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_keys_are_the_dotted_quad() {
        for a in [
            "0.0.0.0",
            "10.0.0.9",
            "203.0.113.7",
            "255.255.255.255",
            "100.20.3.199",
        ] {
            assert_eq!(ip_key(ip(a), 56), a);
        }
        let mut out = String::from("ip:");
        push_ip_key(&mut out, ip("::ffff:198.51.100.10"), 56);
        assert_eq!(out, "ip:198.51.100.10");
    }

    #[test]
    fn ip_keys_group_v6_networks() {
        assert_eq!(ip_key(ip("203.0.113.7"), 64), "203.0.113.7");
        assert_eq!(ip_key(ip("::ffff:203.0.113.7"), 64), "203.0.113.7");
        assert_eq!(ip_key(ip("2001:db8:1:2:3:4:5:6"), 64), "2001:db8:1:2::/64");
        assert_eq!(ip_key(ip("2001:db8:1:2ff::1"), 56), "2001:db8:1:200::/56");
        assert_eq!(
            ip_key(ip("2001:db8:1:2ff::1"), 56),
            ip_key(ip("2001:db8:1:200::9"), 56)
        );
    }

    #[test]
    fn client_ip_table() {
        let trusted = TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ]);
        struct Case {
            name: &'static str,
            peer: &'static str,
            xff: &'static [&'static str],
            want: &'static str,
        }
        let cases = [
            Case {
                name: "untrusted peer ignores header",
                peer: "198.51.100.1",
                xff: &["1.1.1.1"],
                want: "198.51.100.1",
            },
            Case {
                name: "trusted peer without header",
                peer: "10.0.0.1",
                xff: &[],
                want: "10.0.0.1",
            },
            Case {
                name: "trusted peer, one entry",
                peer: "10.0.0.1",
                xff: &["203.0.113.7"],
                want: "203.0.113.7",
            },
            Case {
                name: "forged left entries ignored",
                peer: "10.0.0.1",
                xff: &["6.6.6.6, 203.0.113.7"],
                want: "203.0.113.7",
            },
            Case {
                name: "trusted chain skipped",
                peer: "10.0.0.1",
                xff: &["203.0.113.7, 10.1.1.1, 10.2.2.2"],
                want: "203.0.113.7",
            },
            Case {
                name: "several header lines",
                peer: "10.0.0.1",
                xff: &["6.6.6.6", "203.0.113.7, 10.9.9.9"],
                want: "203.0.113.7",
            },
            Case {
                name: "all trusted: left-most",
                peer: "10.0.0.1",
                xff: &["10.3.3.3, 10.2.2.2"],
                want: "10.3.3.3",
            },
            Case {
                name: "garbage stops the walk",
                peer: "10.0.0.1",
                xff: &["203.0.113.7, garbage"],
                want: "10.0.0.1",
            },
            Case {
                name: "port and brackets",
                peer: "10.0.0.1",
                xff: &["[2001:db8::1]:443"],
                want: "2001:db8::1",
            },
            Case {
                name: "v4 with port",
                peer: "10.0.0.1",
                xff: &["203.0.113.7:5555"],
                want: "203.0.113.7",
            },
            Case {
                name: "mapped v6 peer is v4",
                peer: "::ffff:198.51.100.1",
                xff: &[],
                want: "198.51.100.1",
            },
            Case {
                name: "mapped v6 trusted peer",
                peer: "::ffff:10.0.0.1",
                xff: &["::ffff:203.0.113.7"],
                want: "203.0.113.7",
            },
            Case {
                name: "v6 trusted proxy",
                peer: "fd00::1",
                xff: &["2001:db8::7"],
                want: "2001:db8::7",
            },
        ];
        for c in cases {
            let got = client_ip(ip(c.peer), c.xff.iter().copied(), &trusted);
            assert_eq!(got, ip(c.want), "{}", c.name);
        }
    }
}
