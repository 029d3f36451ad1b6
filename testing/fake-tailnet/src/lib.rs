//! A fake Tailscale tailnet on loopback, for the edge proxy's integration tests and benchmarks.
//!
//! It runs a fake MagicDNS server (UDP and TCP, via hickory-server) answering A queries for
//! `name.domain`, and one fake peer per name: a random loopback address in `127.100.0.0/16`
//! (or a fixed one, e.g. in another network namespace, with an optional emulated round-trip
//! time) serving plain HTTP/1.1 and HTTPS (certificate signed by the committed test CA in
//! `testdata/tls/`). All peers of one tailnet share the same two ports, like real tailnet
//! machines serving on :80 and :443. Peers report what they received, can be told how to
//! answer (per peer or per request via query parameters), echo requests at `/__echo`, echo
//! WebSocket messages at `/__ws`, and can be stopped to simulate a machine going down.
//! [`FakeLocalApi`] is a fake tailscaled LocalAPI on a unix socket whose `BackendState` tests
//! can change.
//!
//! It is **not** a Tailscale implementation: there is no WireGuard, no coordination server,
//! no IPv6, no HTTP/2, and the TLS material is for tests only. Never expose it beyond loopback
//! (or a private link to a network namespace on the same host).
//!
//! ```no_run
//! # async fn demo() -> Result<(), fake_tailnet::FakeTailnetError> {
//! use fake_tailnet::{FakeTailnet, TailnetConfig};
//! let tailnet = FakeTailnet::start(TailnetConfig::new(&["docs", "git"])).await?;
//! let docs = tailnet.peer("docs").expect("configured");
//! println!("dns {} docs {} at {}", tailnet.dns_addr(), docs.fqdn(), docs.http_addr());
//! # Ok(()) }
//! ```

mod alloc;
mod config;
mod delay;
mod dns;
mod error;
mod http;
mod localapi;
mod peer;
mod tls;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::runtime::Handle;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

pub use config::{
    PeerSpec, ResponseSpec, TailnetConfig, DEFAULT_DNS_IP, DEFAULT_DOMAIN, DEFAULT_TTL,
};
pub use error::FakeTailnetError;
pub use http::varied_body;
pub use localapi::FakeLocalApi;
pub use peer::{FakePeer, SeenRequest};
pub use tls::{
    ca_cert_pem_path, ca_pem_file, generate_ca_pem, server_config, tls_testdata_dir, write_ca_pem,
    wrong_ca_pem_path, TAILNET_CA_COMMON_NAME, TAILNET_CA_FILE, TAILNET_CA_PEM,
    WRONG_CA_COMMON_NAME, WRONG_CA_PEM,
};

use dns::DnsState;

/// How many peers can be added with [`FakeTailnet::add_peer`] over a tailnet's life.
pub const ADDED_PEER_LIMIT: usize = 64;

/// A running fake tailnet. Dropping it stops the DNS server and every peer.
pub struct FakeTailnet {
    domain: String,
    dns_addr: SocketAddr,
    /// HTTP and HTTPS ports shared by all peers; the lock also serialises `add_peer`.
    ports: Mutex<(u16, u16)>,
    dns: Arc<DnsState>,
    peers: Vec<FakePeer>,
    added: Box<[OnceLock<FakePeer>]>,
    runtime: Handle,
    shutdown: CancellationToken,
    dns_task: AbortHandle,
    /// Declared last so it is dropped after everything else has been stopped.
    thread: Option<RuntimeThread>,
}

impl std::fmt::Debug for FakeTailnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeTailnet")
            .field("domain", &self.domain)
            .field("dns_addr", &self.dns_addr)
            .field("ports", &self.ports())
            .field(
                "peers",
                &self.peers().map(FakePeer::fqdn).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl FakeTailnet {
    /// Starts DNS and all peers on the current tokio runtime.
    pub async fn start(config: TailnetConfig) -> Result<FakeTailnet, FakeTailnetError> {
        let shutdown = CancellationToken::new();
        let started = Self::start_with(config, shutdown.clone());
        if started.is_err() {
            shutdown.cancel();
        }
        started
    }

    /// Starts everything on a new runtime in a background thread, for callers without a
    /// runtime. The returned handle keeps the thread alive; dropping it stops everything.
    pub fn start_in_thread(config: TailnetConfig) -> Result<FakeTailnet, FakeTailnetError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let join = std::thread::Builder::new()
            .name("fake-tailnet".to_string())
            .spawn(move || run_thread(config, ready_tx, stop_rx))
            .map_err(|e| FakeTailnetError::io("spawn fake-tailnet thread", e))?;
        let started = ready_rx
            .recv()
            .map_err(|_| FakeTailnetError::Thread("exited before starting".to_string()));
        match started.and_then(|r| r) {
            Ok(mut tailnet) => {
                tailnet.thread = Some(RuntimeThread {
                    stop: Some(stop_tx),
                    join: Some(join),
                });
                Ok(tailnet)
            }
            Err(e) => {
                drop(stop_tx);
                let _ = join.join();
                Err(e)
            }
        }
    }

    /// Binds and starts everything; on error the caller cancels `shutdown`.
    fn start_with(
        config: TailnetConfig,
        shutdown: CancellationToken,
    ) -> Result<FakeTailnet, FakeTailnetError> {
        validate_names(config.peers.iter().map(|p| p.name.as_str()))?;
        let (udp, tcp) = dns::bind(config.dns_bind)?;
        let dns_addr = udp
            .local_addr()
            .map_err(|e| FakeTailnetError::io("read DNS socket address", e))?;
        let state = Arc::new(DnsState::new(config.ttl));
        let fixed: Vec<_> = config.peers.iter().map(|p| p.ip).collect();
        let bound = alloc::bind_peers(&fixed, &reserved_ips(dns_addr))?;
        let runtime = Handle::current();
        let mut peers = Vec::with_capacity(bound.len());
        for (spec, bound) in config.peers.into_iter().zip(bound) {
            let fqdn = format!("{}.{}", spec.name, config.domain);
            let peer = FakePeer::start(&spec, fqdn, bound, &shutdown, &runtime)?;
            state.set_answer(peer.fqdn(), vec![peer.ip()]);
            peers.push(peer);
        }
        let ports = peers
            .first()
            .map_or((0, 0), |p| (p.http_addr().port(), p.https_addr().port()));
        let mut server = dns::serve(state.clone(), udp, tcp)?;
        let dns_task = runtime.spawn(async move {
            let _ = server.block_until_done().await;
        });
        Ok(FakeTailnet {
            domain: config.domain,
            dns_addr,
            ports: Mutex::new(ports),
            dns: state,
            peers,
            added: (0..ADDED_PEER_LIMIT).map(|_| OnceLock::new()).collect(),
            runtime,
            shutdown,
            dns_task: dns_task.abort_handle(),
            thread: None,
        })
    }

    /// Where the DNS server listens; UDP and TCP share this address.
    pub fn dns_addr(&self) -> SocketAddr {
        self.dns_addr
    }

    /// The tailnet domain, e.g. `tail0fake.ts.net`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The port every peer serves plain HTTP/1.1 on (0 if the tailnet has no peers yet).
    pub fn http_port(&self) -> u16 {
        self.ports().0
    }

    /// The port every peer serves HTTPS on (0 if the tailnet has no peers yet).
    pub fn https_port(&self) -> u16 {
        self.ports().1
    }

    /// Both shared ports.
    fn ports(&self) -> (u16, u16) {
        *self.ports.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The peer with short name `name`, including peers added at runtime.
    pub fn peer(&self, name: &str) -> Option<&FakePeer> {
        self.peers().find(|p| p.name() == name)
    }

    /// All peers, configured ones first, then those added at runtime.
    pub fn peers(&self) -> impl Iterator<Item = &FakePeer> {
        self.peers
            .iter()
            .chain(self.added.iter().filter_map(OnceLock::get))
    }

    /// The fqdn for a short name in this tailnet, e.g. `docs.tail0fake.ts.net` (no trailing dot).
    pub fn fqdn(&self, name: &str) -> String {
        format!("{name}.{}", self.domain)
    }

    /// Sets the A answer for `fqdn` (any name, case-insensitive, trailing dot optional).
    /// An empty list makes the name exist with no addresses (NOERROR, no answers).
    pub fn set_answer(&self, fqdn: &str, ips: Vec<Ipv4Addr>) {
        self.dns.set_answer(fqdn, ips);
    }

    /// Removes `fqdn` from DNS: NXDOMAIN from now on.
    pub fn remove_answer(&self, fqdn: &str) {
        self.dns.remove_answer(fqdn);
    }

    /// The current A answer for `fqdn`, or `None` if it would get NXDOMAIN.
    pub fn answer(&self, fqdn: &str) -> Option<Vec<Ipv4Addr>> {
        self.dns.lookup(fqdn)
    }

    /// When `true`, DNS drops every query (UDP and TCP) without answering, like MagicDNS down.
    pub fn set_silent(&self, silent: bool) {
        self.dns.set_silent(silent);
    }

    /// Changes the TTL of future answers.
    pub fn set_ttl(&self, ttl: u32) {
        self.dns.set_ttl(ttl);
    }

    /// DNS queries received so far, including dropped and unanswerable ones.
    pub fn dns_queries(&self) -> u64 {
        self.dns.queries()
    }

    /// Starts a new peer on a new address at the tailnet's ports and adds its A record.
    ///
    /// Its certificate covers only its own fqdn. At most [`ADDED_PEER_LIMIT`] peers can be
    /// added over the tailnet's life.
    pub async fn add_peer(&self, spec: PeerSpec) -> Result<FakePeer, FakeTailnetError> {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        validate_names(self.peers().map(FakePeer::name).chain([spec.name.as_str()]))?;
        let slot = self.added.iter().find(|s| s.get().is_none()).ok_or(
            FakeTailnetError::TooManyPeers {
                limit: ADDED_PEER_LIMIT,
            },
        )?;
        let mut exclude = reserved_ips(self.dns_addr);
        exclude.extend(self.peers().map(FakePeer::ip));
        let bound = bind_one(spec.ip, &exclude, *ports)?;
        let fqdn = self.fqdn(&spec.name);
        let peer = FakePeer::start(&spec, fqdn, bound, &self.shutdown, &self.runtime)?;
        *ports = (peer.http_addr().port(), peer.https_addr().port());
        self.dns.set_answer(peer.fqdn(), vec![peer.ip()]);
        let _ = slot.set(peer.clone());
        Ok(peer)
    }
}

impl Drop for FakeTailnet {
    fn drop(&mut self) {
        for peer in self.peers() {
            peer.stop();
        }
        self.shutdown.cancel();
        self.dns_task.abort();
    }
}

/// Binds one peer (at `fixed` if given) at the shared ports, or on fresh ports if there are
/// none yet.
fn bind_one(
    fixed: Option<Ipv4Addr>,
    exclude: &HashSet<Ipv4Addr>,
    (http_port, https_port): (u16, u16),
) -> Result<alloc::BoundPeer, FakeTailnetError> {
    if let (Some(ip), true) = (fixed, http_port != 0) {
        return alloc::bind_pair(ip, http_port, https_port)
            .map_err(|e| FakeTailnetError::io(format!("bind peer on {ip}"), e));
    }
    if http_port == 0 {
        let mut bound = alloc::bind_peers(&[fixed], exclude)?;
        return bound.pop().ok_or(FakeTailnetError::AddressesExhausted {
            what: "a peer".to_string(),
            attempts: 0,
        });
    }
    alloc::bind_at_ports(&mut alloc::Rng::new(), exclude, http_port, https_port)
}

/// Addresses peers must not use: the default DNS address and the actual DNS address.
fn reserved_ips(dns_addr: SocketAddr) -> HashSet<Ipv4Addr> {
    let mut reserved = HashSet::from([DEFAULT_DNS_IP]);
    if let std::net::IpAddr::V4(ip) = dns_addr.ip() {
        reserved.insert(ip);
    }
    reserved
}

/// Checks that every name is a DNS label and that there are no duplicates.
fn validate_names<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), FakeTailnetError> {
    let mut seen = HashSet::new();
    for name in names {
        let invalid = |reason| FakeTailnetError::InvalidPeerName {
            name: name.to_string(),
            reason,
        };
        let label_ok = (1..=63).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !label_ok {
            return Err(invalid("not a DNS label (letters, digits, inner '-')"));
        }
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(invalid("duplicate peer name"));
        }
    }
    Ok(())
}

/// Keeps the background runtime of [`FakeTailnet::start_in_thread`] alive until dropped.
struct RuntimeThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RuntimeThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

/// Body of the background thread: start the tailnet, hand it over, run until told to stop.
fn run_thread(
    config: TailnetConfig,
    ready: std::sync::mpsc::Sender<Result<FakeTailnet, FakeTailnetError>>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("fake-tailnet-rt")
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(FakeTailnetError::io("build tokio runtime", e)));
            return;
        }
    };
    runtime.block_on(async move {
        let started = FakeTailnet::start(config).await;
        let ok = started.is_ok();
        if ready.send(started).is_ok() && ok {
            let _ = stop.await;
        }
    });
}
