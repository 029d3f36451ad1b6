//! Configuration of a fake tailnet and of its peers' responses.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The default tailnet domain.
pub const DEFAULT_DOMAIN: &str = "tail0fake.ts.net";

/// The default MagicDNS address (Tailscale's real one is 100.100.100.100).
pub const DEFAULT_DNS_IP: Ipv4Addr = Ipv4Addr::new(127, 100, 100, 100);

/// The default DNS TTL in seconds.
pub const DEFAULT_TTL: u32 = 60;

/// How a whole fake tailnet is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailnetConfig {
    /// The MagicDNS domain; a peer's fqdn is `name.domain`. Default `tail0fake.ts.net`.
    pub domain: String,
    /// Where the DNS server listens (UDP and TCP on the same port). Port 0 picks a free one.
    /// Default `127.100.100.100:0`.
    pub dns_bind: SocketAddr,
    /// TTL of A answers in seconds. Default 60.
    pub ttl: u32,
    /// The peers to start.
    pub peers: Vec<PeerSpec>,
}

impl Default for TailnetConfig {
    fn default() -> Self {
        Self {
            domain: DEFAULT_DOMAIN.to_string(),
            dns_bind: SocketAddr::from((DEFAULT_DNS_IP, 0)),
            ttl: DEFAULT_TTL,
            peers: Vec::new(),
        }
    }
}

impl TailnetConfig {
    /// Default settings with one peer per short name, each with the default response.
    pub fn new(peers: &[&str]) -> Self {
        Self {
            peers: peers.iter().map(|name| PeerSpec::new(name)).collect(),
            ..Self::default()
        }
    }
}

/// One peer: a short name (its fqdn is `name.domain`) and how it responds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    /// Short name, e.g. `docs`; must be a DNS label (letters, digits, `-`).
    pub name: String,
    /// How the peer answers requests (query parameters can override per request).
    pub response: ResponseSpec,
    /// Extra names its HTTPS certificate covers besides its fqdn, like a Caddy peer serving
    /// several virtual hosts (e.g. `docs.ops`).
    pub tls_names: Vec<String>,
    /// The address to serve on instead of a random one in `127.100.0.0/16`, e.g. a veth
    /// address in another network namespace. The listeners are created by the thread that
    /// starts the tailnet (or calls [`crate::FakeTailnet::add_peer`]), so they belong to
    /// that thread's network namespace. Default none.
    pub ip: Option<Ipv4Addr>,
    /// A round-trip time to emulate in user space on every connection, for a slow path
    /// where the kernel cannot add one (no `tc netem`): bytes in each direction are held
    /// for half of it, and a new connection's first bytes for one more round trip (the TCP
    /// handshake the kernel completed at once). Default zero (off).
    pub emulated_rtt: Duration,
}

impl PeerSpec {
    /// A peer with the default response.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            response: ResponseSpec::default(),
            tls_names: Vec::new(),
            ip: None,
            emulated_rtt: Duration::ZERO,
        }
    }

    /// The same peer serving on `ip` (see [`PeerSpec::ip`]).
    pub fn with_ip(mut self, ip: Ipv4Addr) -> Self {
        self.ip = Some(ip);
        self
    }

    /// The same peer behind an emulated round-trip time (see [`PeerSpec::emulated_rtt`]).
    pub fn with_emulated_rtt(mut self, rtt: Duration) -> Self {
        self.emulated_rtt = rtt;
        self
    }

    /// The same peer with a certificate that also covers `names` (exact names).
    pub fn with_tls_names(mut self, names: &[&str]) -> Self {
        self.tls_names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// The same peer with another response.
    pub fn with_response(mut self, response: ResponseSpec) -> Self {
        self.response = response;
        self
    }
}

/// How a peer responds, unless overridden per request by query parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseSpec {
    /// HTTP status code. Default 200.
    pub status: u16,
    /// Size of the response body in bytes. 0 (the default) means the short text
    /// `hello from <name>\n`; use the query parameter `size=0` for an empty body.
    pub body_size: usize,
    /// Extra response headers, in order; a name given here replaces the default
    /// `x-fake-peer` / `content-type` header of the same name.
    pub headers: Vec<(String, String)>,
    /// Delay before the response head is sent. Default none.
    pub latency: Duration,
}

impl Default for ResponseSpec {
    fn default() -> Self {
        Self {
            status: 200,
            body_size: 0,
            headers: Vec::new(),
            latency: Duration::ZERO,
        }
    }
}
