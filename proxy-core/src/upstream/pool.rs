//! Upstreams with several addresses (`addresses = [...]`): selection among the healthy
//! ones, active health checks and passive marking, on pingora-load-balancing.
//!
//! The addresses come from the resolver's slots (never a lookup here): a discovery that
//! reads them feeds a `LoadBalancer`, whose selector and health state the request path only
//! reads. A background task per pool, started by the resolver, refreshes the membership,
//! runs the checks and brings back addresses marked down by a refused connection.

use async_trait::async_trait;
use futures::FutureExt;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::upstreams::peer::{BasicPeer, HttpPeer};
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::selection::{Consistent, RoundRobin};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::AddrSlot;
use crate::observe::Metrics;

/// Longest walk over the selector for one pick (pingora-load-balancing's bound).
const MAX_SELECT_STEPS: usize = 256;

/// How a pool picks an address among the healthy ones (`balance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Balance {
    /// In turn.
    RoundRobin,
    /// By a hash of the request's path and query (Ketama), so one URL keeps one address.
    Consistent,
}

/// Active health checks (`[upstreams.NAME.health]`), compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthSettings {
    /// `GET` this path and expect a status in `status`; `None`: a TCP (and TLS) connect.
    pub path: Option<String>,
    /// Time between two checks of an address; also how long a refused connection keeps
    /// it out.
    pub interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Consecutive passes that bring an address back.
    pub healthy: usize,
    /// Consecutive failures that take it out.
    pub unhealthy: usize,
    /// Statuses that pass, inclusive.
    pub status: (u16, u16),
}

/// One configured address: a tailnet name (or IP) and port, with its resolver slot.
#[derive(Debug)]
pub(crate) struct PoolMember {
    pub host: String,
    pub port: u16,
    pub slot: Arc<AddrSlot>,
}

/// The current addresses of every member, for pingora-load-balancing's discovery: reads
/// the resolver's slots, never waits.
struct SlotDiscovery {
    members: Vec<(Arc<AddrSlot>, u16)>,
}

#[async_trait]
impl ServiceDiscovery for SlotDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut backends = BTreeSet::new();
        for (slot, port) in &self.members {
            for ip in slot.current().iter().flat_map(|ips| ips.iter()) {
                backends.insert(backend(SocketAddr::new(*ip, *port)));
            }
        }
        Ok((backends, HashMap::new()))
    }
}

fn backend(addr: SocketAddr) -> Backend {
    Backend {
        addr: PeerAddr::Inet(addr),
        weight: 1,
        ext: Default::default(),
    }
}

/// The library's selector, by `balance`.
enum Selector {
    RoundRobin(LoadBalancer<RoundRobin>),
    Consistent(LoadBalancer<Consistent>),
}

impl Selector {
    fn backends(&self) -> &Backends {
        match self {
            Self::RoundRobin(lb) => lb.backends(),
            Self::Consistent(lb) => lb.backends(),
        }
    }

    fn select(&self, key: &[u8], avoid: Option<&SocketAddr>) -> Option<Backend> {
        let accept = |b: &Backend, ready: bool| ready && b.addr.as_inet() != avoid;
        match self {
            Self::RoundRobin(lb) => lb.select_with(key, MAX_SELECT_STEPS, accept),
            Self::Consistent(lb) => lb.select_with(key, MAX_SELECT_STEPS, accept),
        }
    }

    /// Re-reads the members' addresses. The discovery never waits, so this completes in
    /// one poll.
    fn refresh(&self) {
        let done = match self {
            Self::RoundRobin(lb) => lb.update().now_or_never(),
            Self::Consistent(lb) => lb.update().now_or_never(),
        };
        if let Some(Err(e)) = done {
            tracing::warn!(error = %e, "upstream address refresh failed");
        }
    }
}

/// An active check that also counts its results in metrics.
struct ObservedCheck {
    inner: Box<dyn HealthCheck + Send + Sync>,
    upstream: String,
    metrics: Arc<OnceLock<Arc<Metrics>>>,
}

#[async_trait]
impl HealthCheck for ObservedCheck {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        let result = self.inner.check(target).await;
        if let Some(metrics) = self.metrics.get() {
            let address = target.addr.to_string();
            metrics.upstream_health_check(&self.upstream, &address, result.is_ok());
        }
        result
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        tracing::info!(upstream = %self.upstream, address = %target.addr, healthy, "upstream address health changed");
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.inner.health_threshold(success)
    }
}

/// The addresses of one upstream with several, their health, and how one is picked.
pub(crate) struct AddressPool {
    upstream: String,
    members: Vec<PoolMember>,
    selector: Selector,
    health: HealthSettings,
    /// Retry once on another address when a connection fails (idempotent requests).
    pub(crate) retry: bool,
    /// Addresses taken out by a refused or timed-out connection, until when. Written on
    /// connection errors and by the background task only; the request path never reads it.
    passive: Mutex<Vec<(SocketAddr, Instant)>>,
    /// Serialises membership refreshes (the library wants them one at a time); never held
    /// across an await.
    refreshing: Mutex<()>,
    metrics: Arc<OnceLock<Arc<Metrics>>>,
    started: AtomicBool,
}

impl std::fmt::Debug for AddressPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressPool")
            .field("upstream", &self.upstream)
            .field("members", &self.members)
            .field("health", &self.health)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl AddressPool {
    /// A pool over `members`, checked as `health` says; `template` is the upstream's peer
    /// (TLS, SNI, verification) the HTTP checks connect with, `host_header` the Host they
    /// send.
    pub(crate) fn new(
        upstream: String,
        members: Vec<PoolMember>,
        balance: Balance,
        health: HealthSettings,
        retry: bool,
        template: &HttpPeer,
        host_header: &str,
    ) -> Self {
        let metrics: Arc<OnceLock<Arc<Metrics>>> = Arc::default();
        let discovery = SlotDiscovery {
            members: members.iter().map(|m| (m.slot.clone(), m.port)).collect(),
        };
        let mut backends = Backends::new(Box::new(discovery));
        backends.set_health_check(Box::new(ObservedCheck {
            inner: health_check(&health, template, host_header),
            upstream: upstream.clone(),
            metrics: metrics.clone(),
        }));
        let selector = match balance {
            Balance::RoundRobin => Selector::RoundRobin(LoadBalancer::from_backends(backends)),
            Balance::Consistent => Selector::Consistent(LoadBalancer::from_backends(backends)),
        };
        let pool = Self {
            upstream,
            members,
            selector,
            health,
            retry,
            passive: Mutex::new(Vec::new()),
            refreshing: Mutex::new(()),
            metrics,
            started: AtomicBool::new(false),
        };
        pool.refresh();
        pool
    }

    /// Records checks and address states in `metrics` from now on (set once).
    pub(crate) fn set_metrics(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// The configured addresses.
    pub(crate) fn members(&self) -> &[PoolMember] {
        &self.members
    }

    /// A healthy address other than `avoid`, picked by the pool's balance (`key` for
    /// consistent hashing); `None` when none is healthy or nothing has resolved.
    pub(crate) fn select(&self, key: &[u8], avoid: Option<&SocketAddr>) -> Option<SocketAddr> {
        if let Some(b) = self.selector.select(key, avoid) {
            return b.addr.as_inet().copied();
        }
        // Nothing selectable: the membership may predate the first answers of the names.
        if self.selector.backends().get_backend().is_empty() {
            self.refresh();
            return self.selector.select(key, avoid)?.addr.as_inet().copied();
        }
        None
    }

    /// Whether every address is down (health checks or refused connections); `false`
    /// while nothing has resolved.
    pub(crate) fn all_down(&self) -> bool {
        let backends = self.selector.backends();
        let members = backends.get_backend();
        !members.is_empty() && !members.iter().any(|b| backends.ready(b))
    }

    /// Takes `addr` out until the next check after one interval: a connection to it was
    /// refused or timed out.
    pub(crate) fn mark_failed(&self, addr: &SocketAddr) {
        let b = backend(*addr);
        self.selector.backends().set_enable(&b, false);
        let until = Instant::now() + self.health.interval;
        let mut passive = self.passive.lock().unwrap_or_else(PoisonError::into_inner);
        match passive.iter_mut().find(|(a, _)| a == addr) {
            Some(entry) => entry.1 = until,
            None => passive.push((*addr, until)),
        }
        drop(passive);
        tracing::warn!(upstream = %self.upstream, address = %addr, "connection failed; address held out until the next health check");
        self.record_states();
    }

    /// Re-reads the members' addresses from their slots.
    pub(crate) fn refresh(&self) {
        if let Ok(_one_at_a_time) = self.refreshing.try_lock() {
            self.selector.refresh();
        }
    }

    /// Re-enables addresses held out by a failed connection whose time is up.
    fn release_passive(&self, now: Instant) {
        let mut passive = self.passive.lock().unwrap_or_else(PoisonError::into_inner);
        let backends = self.selector.backends();
        passive.retain(|(addr, until)| {
            let keep = *until > now;
            if !keep {
                backends.set_enable(&backend(*addr), true);
            }
            keep
        });
    }

    fn record_states(&self) {
        let Some(metrics) = self.metrics.get() else {
            return;
        };
        let backends = self.selector.backends();
        for b in backends.get_backend().iter() {
            metrics.upstream_address_up(&self.upstream, &b.addr.to_string(), backends.ready(b));
        }
    }

    /// One round of the background work: membership, held-out addresses, checks, gauges.
    async fn tick(&self) {
        self.refresh();
        self.release_passive(Instant::now());
        self.selector.backends().run_health_check(true).await;
        self.record_states();
    }

    /// Starts the pool's background task once (later calls do nothing): it runs until the
    /// pool is dropped (its config replaced by a reload) or `stop` fires.
    pub(crate) fn start(self: &Arc<Self>, stop: pingora::server::ShutdownWatch) {
        if self.started.swap(true, Ordering::Relaxed) {
            return;
        }
        let interval = self.health.interval;
        tokio::spawn(watch(Arc::downgrade(self), interval, stop));
    }
}

/// Runs `pool`'s checks every `interval` while it exists.
async fn watch(
    pool: Weak<AddressPool>,
    interval: Duration,
    mut stop: pingora::server::ShutdownWatch,
) {
    loop {
        {
            let Some(pool) = pool.upgrade() else {
                return;
            };
            pool.tick().await;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {
                if *stop.borrow() { return; }
            }
        }
    }
}

/// pingora-load-balancing's HTTP or TCP check, with the upstream's TLS settings.
fn health_check(
    health: &HealthSettings,
    template: &HttpPeer,
    host_header: &str,
) -> Box<dyn HealthCheck + Send + Sync> {
    match &health.path {
        Some(path) => {
            let mut check = HttpHealthCheck::new(host_header, template.is_tls());
            let mut peer = template.clone();
            peer.options.connection_timeout = Some(health.timeout);
            peer.options.total_connection_timeout = Some(health.timeout);
            peer.options.read_timeout = Some(health.timeout);
            peer.options.write_timeout = Some(health.timeout);
            check.peer_template = peer;
            check.req.set_uri(path.parse().unwrap_or_default());
            check.consecutive_success = health.healthy;
            check.consecutive_failure = health.unhealthy;
            let (low, high) = health.status;
            check.validator = Some(Box::new(move |resp| {
                let status = resp.status.as_u16();
                if (low..=high).contains(&status) {
                    Ok(())
                } else {
                    pingora::Error::e_explain(
                        pingora::ErrorType::CustomCode("unexpected status", status),
                        "during the health check",
                    )
                }
            }));
            Box::new(check)
        }
        None => {
            let mut peer = BasicPeer::new("0.0.0.0:1");
            peer.sni = template.sni.clone();
            peer.options = template.options.clone();
            peer.options.connection_timeout = Some(health.timeout);
            peer.options.total_connection_timeout = Some(health.timeout);
            let mut check = TcpHealthCheck::new();
            check.peer_template = peer;
            check.consecutive_success = health.healthy;
            check.consecutive_failure = health.unhealthy;
            Box::new(*check)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of one address: a listener the test holds (TCP checks pass).
    fn pool(listener: &std::net::TcpListener) -> (Arc<AddressPool>, SocketAddr) {
        let addr = listener.local_addr().expect("listener address");
        let template = HttpPeer::new(addr, false, String::new());
        let health = HealthSettings {
            path: None,
            interval: Duration::from_millis(10),
            timeout: Duration::from_secs(1),
            healthy: 1,
            unhealthy: 1,
            status: (200, 399),
        };
        let member = PoolMember {
            host: addr.ip().to_string(),
            port: addr.port(),
            slot: Arc::new(AddrSlot::fixed(vec![addr.ip()])),
        };
        let pool = AddressPool::new(
            "app".into(),
            vec![member],
            Balance::RoundRobin,
            health,
            true,
            &template,
            "app",
        );
        (Arc::new(pool), addr)
    }

    #[test]
    fn a_refused_address_is_held_out_until_its_time_is_up() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let (pool, addr) = pool(&listener);
        assert_eq!(pool.select(b"/", None), Some(addr));
        assert_eq!(pool.select(b"/", Some(&addr)), None);
        pool.mark_failed(&addr);
        assert_eq!(pool.select(b"/", None), None);
        assert!(pool.all_down());
        pool.release_passive(Instant::now());
        assert!(pool.all_down(), "released before its interval");
        pool.release_passive(Instant::now() + Duration::from_secs(3600));
        assert_eq!(pool.select(b"/", None), Some(addr));
        assert!(!pool.all_down());
    }

    #[tokio::test]
    async fn the_check_task_ends_when_its_pool_is_dropped() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let (pool, _) = pool(&listener);
        let (_keep, stop) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(watch(
            Arc::downgrade(&pool),
            Duration::from_millis(10),
            stop,
        ));
        drop(pool);
        let ended = tokio::time::timeout(Duration::from_secs(30), task).await;
        assert!(ended.is_ok(), "the check task outlived its pool");
    }
}
