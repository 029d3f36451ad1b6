//! Upstreams on the tailnet: their resolved addresses, TLS and timeout settings, and the
//! `HttpPeer` and request headers Pingora needs to reach them.

mod forwarded;
mod header_rules;
mod least_conn;
mod pool;
mod request_body;
mod resolver;

pub(crate) use forwarded::apply_forwarded_headers;
pub(crate) use header_rules::{merge_rules, HeaderRule, HeaderVars, ProxyHeaders};
pub(crate) use least_conn::AddressInFlight;
pub(crate) use pool::{AddressPool, Balance, HealthSettings, PoolMember};
pub(crate) use request_body::{BufferedBody, ReceiveError};
pub(crate) use resolver::{AddrSlot, TailnetNames};
pub use resolver::{MagicDnsResolver, ResolverSettings};

use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::tls::x509::X509;
use pingora::upstreams::peer::HttpPeer;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Where a header value comes from when sent upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostHeader {
    /// The client's Host header, unchanged (`"$host"`).
    Client,
    /// A fixed value, made a header value once.
    Fixed(http::HeaderValue),
}

impl HostHeader {
    /// Parses `"$host"` or a literal host name.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if text == "$host" || text == "$http_host" {
            return Ok(Self::Client);
        }
        let valid = !text.is_empty()
            && text.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_' | b'[' | b']')
            });
        if let (true, Ok(value)) = (valid, http::HeaderValue::from_str(text)) {
            Ok(Self::Fixed(value))
        } else {
            Err(format!(
                "invalid host header `{text}`: expected a host name or \"$host\""
            ))
        }
    }
}

/// TLS settings for an upstream.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamTls {
    /// Server name sent in the handshake and checked against the certificate.
    pub sni: String,
    /// Whether the certificate chain and name are verified.
    pub verify: bool,
    /// CA certificates to verify against (instead of the system roots).
    pub ca: Option<Arc<Box<[X509]>>>,
}

/// Connection timeouts and limits for an upstream, and how its response heads are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UpstreamTimeouts {
    /// TCP connect plus TLS handshake.
    pub connect: Duration,
    /// Longest wait for bytes from the upstream.
    pub read: Duration,
    /// Longest wait to write to the upstream.
    pub write: Duration,
    /// How long an idle pooled connection is kept.
    pub idle: Duration,
    /// Largest response head accepted, in bytes (nginx's `proxy_buffer_size`).
    pub max_response_header: usize,
    /// Whether response header names keep their case (`[server] header_case`).
    pub keep_header_case: bool,
}

/// A named upstream, compiled.
#[derive(Debug)]
pub struct Upstream {
    /// Name from the config (`[upstreams.NAME]`); also its metrics label.
    pub(crate) name: String,
    /// Host part of the address: a tailnet name or an IP literal.
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: Option<UpstreamTls>,
    pub(crate) host_header: HostHeader,
    /// Current addresses, kept fresh by the resolver (fixed for IP literals).
    pub(crate) addrs: Arc<AddrSlot>,
    /// The upstream's own `proxy_headers`, merged into each location proxying here.
    pub(crate) header_rules: Vec<HeaderRule>,
    /// How connections reach it.
    pub(crate) transport: Transport,
    /// Addresses under health checks: several (`addresses = [...]`), or one whose
    /// upstream has `health` or serves a site with offline mode; `None` for a plain
    /// `address`, which keeps the plain round robin over its answer and pays for no checks.
    pub(crate) pool: Option<Arc<AddressPool>>,
    /// Peer with every option set; only its address changes per request.
    template: HttpPeer,
    /// The template at each address requests went to, shared by them.
    peers: PeerCache,
}

/// How many addresses of one upstream [`PeerCache`] keeps a peer for; past it, the
/// oldest goes (an address that comes back gets a new one).
const PEER_CACHE_LIMIT: usize = 32;

/// Peers made from an upstream's template, one per address, each shared by the requests to
/// its address: a request takes a reference instead of cloning the template into a box of
/// its own and freeing it after (about 0.6k instructions per request).
#[derive(Debug, Default)]
struct PeerCache(arc_swap::ArcSwap<Vec<Arc<HttpPeer>>>);

impl PeerCache {
    /// The peer for `addr`, made from `template` if there is none yet.
    fn get(&self, template: &HttpPeer, addr: SocketAddr) -> Arc<HttpPeer> {
        let at = |peer: &&Arc<HttpPeer>| matches!(&peer._address, PeerAddr::Inet(a) if *a == addr);
        if let Some(peer) = self.0.load().iter().find(at) {
            return Arc::clone(peer);
        }
        let mut made = template.clone();
        made._address = PeerAddr::Inet(addr);
        let made = Arc::new(made);
        self.0.rcu(|peers| {
            // Another thread may have made one meanwhile: keep a single peer per address.
            let others = peers.iter().filter(|peer| !at(peer));
            let skip = (peers.len() + 1).saturating_sub(PEER_CACHE_LIMIT);
            let mut kept: Vec<Arc<HttpPeer>> = others.skip(skip).cloned().collect();
            kept.push(Arc::clone(&made));
            kept
        });
        made
    }

    /// Forgets every peer (after the template changed).
    fn clear(&self) {
        self.0.store(Arc::default());
    }
}

/// How connections reach an upstream (`transport` of `[upstreams.NAME]`).
#[derive(Debug, Clone, Default)]
pub(crate) enum Transport {
    /// The host's network stack (with tailscaled's TUN device, the tailnet).
    #[default]
    Kernel,
    /// The userspace tailnet node (`"tailscale-rs"`), through this connector.
    #[cfg(feature = "tailscale-rs")]
    Userspace(Arc<crate::tailnet::TailnetConnector>),
}

impl Transport {
    /// The name the config uses for it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            #[cfg(feature = "tailscale-rs")]
            Self::Userspace(_) => "tailscale-rs",
        }
    }
}

impl Upstream {
    /// Name from the config (`[upstreams.NAME]`); also its metrics label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address as configured: a tailnet name or an IP literal, and the port.
    pub fn address(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    /// Whether the upstream speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The addresses in use now (`None` until the name first resolves), and whether they
    /// are kept past a failed refresh.
    pub fn resolved(&self) -> (Option<Arc<Vec<IpAddr>>>, bool) {
        (self.addrs.current(), self.addrs.is_stale())
    }

    /// Builds an upstream; `addrs` is shared with the resolver for tailnet names.
    pub(crate) fn new(
        name: String,
        host: String,
        port: u16,
        tls: Option<UpstreamTls>,
        host_header: HostHeader,
        timeouts: UpstreamTimeouts,
        addrs: Arc<AddrSlot>,
    ) -> Self {
        let template = peer_template(&name, port, tls.as_ref(), &timeouts);
        Self {
            name,
            host,
            port,
            tls,
            host_header,
            addrs,
            header_rules: Vec::new(),
            transport: Transport::Kernel,
            pool: None,
            template,
            peers: PeerCache::default(),
        }
    }

    /// The peer every request's is cloned from (TLS, SNI, timeouts).
    pub(crate) fn template(&self) -> &HttpPeer {
        &self.template
    }

    /// Every name the resolver keeps resolved for this upstream, with its slot: the
    /// address's, or each of `addresses`'.
    pub(crate) fn named_slots(&self) -> Vec<(&str, &Arc<AddrSlot>)> {
        let is_name = |host: &str| host.parse::<IpAddr>().is_err();
        match &self.pool {
            None if is_name(&self.host) => vec![(self.host.as_str(), &self.addrs)],
            None => Vec::new(),
            Some(pool) => pool
                .members()
                .iter()
                .filter(|m| is_name(&m.host))
                .map(|m| (m.host.as_str(), &m.slot))
                .collect(),
        }
    }

    /// Connects through `transport` from now on (the default is the kernel's).
    pub(crate) fn set_transport(&mut self, transport: Transport) {
        self.template.group_key = pool_group(&self.name, self.tls.as_ref(), &transport);
        self.template.options.custom_l4 = match &transport {
            Transport::Kernel => None,
            #[cfg(feature = "tailscale-rs")]
            Transport::Userspace(connector) => {
                Some(connector.clone() as Arc<dyn pingora::connectors::L4Connect + Send + Sync>)
            }
        };
        self.transport = transport;
        self.peers.clear();
    }

    /// How connections reach it: `"kernel"` or `"tailscale-rs"`.
    pub fn transport(&self) -> &'static str {
        self.transport.name()
    }

    /// Whether it is reached through the host's network stack.
    pub(crate) fn kernel_transport(&self) -> bool {
        matches!(self.transport, Transport::Kernel)
    }

    /// The connector of a `tailscale-rs` upstream.
    #[cfg(feature = "tailscale-rs")]
    pub(crate) fn tailnet_connector(&self) -> Option<&Arc<crate::tailnet::TailnetConnector>> {
        match &self.transport {
            Transport::Userspace(connector) => Some(connector),
            Transport::Kernel => None,
        }
    }

    /// Whether the host is a name the resolver must look up (not an IP literal).
    pub fn needs_resolution(&self) -> bool {
        self.host.parse::<IpAddr>().is_err()
    }

    /// A peer for a request: with a pool, a healthy address other than `avoid` (`key`
    /// picks it for consistent hashing) and, with `least_conn`, the request's in-flight
    /// count on it; `None` when none is healthy or resolved.
    pub(crate) fn peer_for(
        &self,
        key: &[u8],
        avoid: Option<&SocketAddr>,
    ) -> Option<(Arc<HttpPeer>, Option<AddressInFlight>)> {
        let Some(pool) = &self.pool else {
            return self.shared_peer().map(|peer| (peer, None));
        };
        let pick = pool.select(key, avoid)?;
        Some((self.peers.get(&self.template, pick.addr), pick.in_flight))
    }

    /// A peer for the next request, or `None` when the name has never resolved.
    ///
    /// Reads only the in-memory address table: never a DNS lookup on the request path.
    pub fn peer(&self) -> Option<HttpPeer> {
        self.shared_peer().map(|peer| HttpPeer::clone(&peer))
    }

    /// [`Self::peer`] as the requests to its address share it.
    pub(crate) fn shared_peer(&self) -> Option<Arc<HttpPeer>> {
        let ip = self.addrs.pick()?;
        Some(
            self.peers
                .get(&self.template, SocketAddr::new(ip, self.port)),
        )
    }
}

/// The pool group of an upstream: its name, the CAs it trusts (so a reload that changes
/// the CA does not reuse connections verified with the old one) and its transport (Pingora's
/// pool key ignores `custom_l4`: without it a reload that moves an upstream to the other
/// transport would reuse a connection of the old one).
fn pool_group(name: &str, tls: Option<&UpstreamTls>, transport: &Transport) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut hasher);
    transport.name().hash(&mut hasher);
    let cas = tls.and_then(|t| t.ca.as_ref());
    for cert in cas.iter().flat_map(|certs| certs.iter()) {
        cert.to_der().unwrap_or_default().hash(&mut hasher);
    }
    hasher.finish()
}

fn peer_template(
    name: &str,
    port: u16,
    tls: Option<&UpstreamTls>,
    timeouts: &UpstreamTimeouts,
) -> HttpPeer {
    let unspecified = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port);
    let sni = tls.map(|t| t.sni.clone()).unwrap_or_default();
    let mut peer = HttpPeer::new(unspecified, tls.is_some(), sni);
    // Pingora's pool key ignores the CA a connection was verified with, so two upstreams on
    // one address could share a connection checked against the other's CA. One pool group
    // per upstream rules that out.
    peer.group_key = pool_group(name, tls, &Transport::Kernel);
    let options = &mut peer.options;
    options.connection_timeout = Some(timeouts.connect);
    options.total_connection_timeout = Some(timeouts.connect);
    options.read_timeout = Some(timeouts.read);
    options.write_timeout = Some(timeouts.write);
    options.idle_timeout = Some(timeouts.idle);
    options.max_response_head = Some(timeouts.max_response_header);
    options.discard_header_case = !timeouts.keep_header_case;
    if let Some(tls) = tls {
        options.verify_cert = tls.verify;
        options.verify_hostname = tls.verify;
        options.ca = tls.ca.clone();
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(addrs: &Arc<AddrSlot>) -> Upstream {
        let timeouts = UpstreamTimeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(2),
            write: Duration::from_secs(3),
            idle: Duration::from_secs(4),
            max_response_header: 8192,
            keep_header_case: false,
        };
        let host = "docs.tailnet.test".to_string();
        Upstream::new(
            "docs".into(),
            host,
            8080,
            None,
            HostHeader::Client,
            timeouts,
            addrs.clone(),
        )
    }

    fn inet(peer: &HttpPeer) -> SocketAddr {
        match &peer._address {
            PeerAddr::Inet(addr) => *addr,
            other => panic!("not an inet address: {other:?}"),
        }
    }

    /// Requests to one address share one peer; each address has its own, with the
    /// template's options; a new answer's addresses get new peers.
    #[test]
    fn requests_to_an_address_share_its_peer() {
        let (a, b) = ("100.64.0.1".parse().unwrap(), "100.64.0.2".parse().unwrap());
        let slot = Arc::new(AddrSlot::fixed(vec![a, b]));
        let upstream = upstream(&slot);
        let picks: Vec<Arc<HttpPeer>> = (0..4).map(|_| upstream.shared_peer().unwrap()).collect();
        assert_eq!(inet(&picks[0]), SocketAddr::new(a, 8080));
        assert_eq!(inet(&picks[1]), SocketAddr::new(b, 8080));
        assert!(Arc::ptr_eq(&picks[0], &picks[2]), "one peer per address");
        assert!(Arc::ptr_eq(&picks[1], &picks[3]));
        assert!(!Arc::ptr_eq(&picks[0], &picks[1]));
        for peer in &picks {
            assert_eq!(peer.options.read_timeout, Some(Duration::from_secs(2)));
            assert_eq!(peer.group_key, upstream.template().group_key);
        }

        let c = "100.64.0.3".parse().unwrap();
        slot.store(vec![c]);
        let moved = upstream.shared_peer().unwrap();
        assert_eq!(inet(&moved), SocketAddr::new(c, 8080));
        assert_eq!(
            upstream.peer().map(|p| inet(&p)),
            Some(SocketAddr::new(c, 8080))
        );
    }

    /// Past [`PEER_CACHE_LIMIT`] addresses the oldest peer goes; a changed template (the
    /// transport) is not served from peers made before it.
    #[test]
    fn the_peer_cache_is_bounded_and_follows_the_template() {
        let slot = Arc::new(AddrSlot::fixed(vec!["100.64.0.1".parse().unwrap()]));
        let mut upstream = upstream(&slot);
        let first = upstream.shared_peer().unwrap();
        for i in 0..PEER_CACHE_LIMIT {
            let ip = IpAddr::from([100, 64, 1, i as u8]);
            upstream
                .peers
                .get(&upstream.template, SocketAddr::new(ip, 8080));
        }
        assert_eq!(upstream.peers.0.load().len(), PEER_CACHE_LIMIT);
        assert!(
            !Arc::ptr_eq(&first, &upstream.shared_peer().unwrap()),
            "the oldest address's peer was let go"
        );

        let kept = upstream.shared_peer().unwrap();
        upstream.set_transport(Transport::Kernel);
        let after = upstream.shared_peer().unwrap();
        assert!(
            !Arc::ptr_eq(&kept, &after),
            "a new transport's peers are made again"
        );
        assert_eq!(after.group_key, upstream.template().group_key);
    }
}
