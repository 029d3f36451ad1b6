//! Upstreams checked as a pool: several addresses (`addresses = [...]`), or one whose
//! upstream has `health` or serves a site with offline mode. Selection among the healthy
//! addresses, active health checks and passive marking, on pingora-load-balancing.
//!
//! The addresses come from the resolver's slots (never a lookup here): a discovery that
//! reads them feeds a `LoadBalancer`, whose selector and health state the request path only
//! reads. A background task per pool, started by the resolver, refreshes the membership,
//! runs the checks and brings back addresses marked down by a refused connection. Health
//! state lives in a `HealthRegistry` that a reload keeping the upstream as it was hands to
//! the next pool, so a down address stays down until its checks pass.

use arc_swap::ArcSwap;
use async_trait::async_trait;
use futures::FutureExt;
use pingora::upstreams::peer::{BasicPeer, HttpPeer};
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::selection::{Consistent, RoundRobin};
use pingora_load_balancing::{Backend, Backends, HealthRegistry, LoadBalancer};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

use super::least_conn::{backend, load_of, AddressInFlight, InFlightCounters, LeastConn};
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
    /// The one with the fewest requests in flight through this proxy; ties in turn.
    LeastConn,
}

impl Balance {
    /// Every `balance` value, with its meaning: what the config accepts and lists.
    pub(crate) const ALL: [(&'static str, Balance); 3] = [
        ("round_robin", Balance::RoundRobin),
        ("consistent", Balance::Consistent),
        ("least_conn", Balance::LeastConn),
    ];

    /// The balance named `name` in the config.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
    }
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
    /// With `least_conn`: the counts each address carries to the selector.
    in_flight: Option<Arc<InFlightCounters>>,
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
        if let Some(counters) = &self.in_flight {
            counters.attach(&mut backends);
        }
        Ok((backends, HashMap::new()))
    }
}

/// The library's selector, by `balance`.
enum Selector {
    RoundRobin(LoadBalancer<RoundRobin>),
    Consistent(LoadBalancer<Consistent>),
    LeastConn(LoadBalancer<LeastConn>),
}

impl Selector {
    fn backends(&self) -> &Backends {
        match self {
            Self::RoundRobin(lb) => lb.backends(),
            Self::Consistent(lb) => lb.backends(),
            Self::LeastConn(lb) => lb.backends(),
        }
    }

    fn select(&self, key: &[u8], avoid: Option<&SocketAddr>) -> Option<Backend> {
        let accept = |b: &Backend, ready: bool| ready && b.addr.as_inet() != avoid;
        match self {
            Self::RoundRobin(lb) => lb.select_with(key, MAX_SELECT_STEPS, accept),
            Self::Consistent(lb) => lb.select_with(key, MAX_SELECT_STEPS, accept),
            Self::LeastConn(lb) => lb.select_with(key, MAX_SELECT_STEPS, accept),
        }
    }

    /// Re-reads the members' addresses. The discovery never waits, so this completes in
    /// one poll.
    fn refresh(&self) {
        let done = match self {
            Self::RoundRobin(lb) => lb.update().now_or_never(),
            Self::Consistent(lb) => lb.update().now_or_never(),
            Self::LeastConn(lb) => lb.update().now_or_never(),
        };
        if let Some(Err(e)) = done {
            tracing::warn!(error = %e, "upstream address refresh failed");
        }
    }
}

/// A pool's selector with the state a reload can hand from a running pool to the next:
/// health (the registry the checks write) and in-flight counts.
struct PoolCore {
    selector: Selector,
    registry: Arc<HealthRegistry>,
    in_flight: Arc<InFlightCounters>,
}

impl PoolCore {
    /// A selector over `members` reading health from `registry` (whose check is set).
    fn new(
        members: &[PoolMember],
        balance: Balance,
        registry: Arc<HealthRegistry>,
        in_flight: Arc<InFlightCounters>,
    ) -> Self {
        let discovery = SlotDiscovery {
            members: members.iter().map(|m| (m.slot.clone(), m.port)).collect(),
            in_flight: (balance == Balance::LeastConn).then(|| in_flight.clone()),
        };
        let backends = Backends::new_with_health_registry(Box::new(discovery), registry.clone());
        let selector = match balance {
            Balance::RoundRobin => Selector::RoundRobin(LoadBalancer::from_backends(backends)),
            Balance::Consistent => Selector::Consistent(LoadBalancer::from_backends(backends)),
            Balance::LeastConn => Selector::LeastConn(LoadBalancer::from_backends(backends)),
        };
        Self {
            selector,
            registry,
            in_flight,
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

/// What the checks connect with and send: TLS, SNI, verification, trusted CAs (in the
/// pool group) and the Host header. Health state is only handed over between pools whose
/// checks are alike.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CheckTarget {
    tls: bool,
    sni: String,
    verify: bool,
    group_key: u64,
    host_header: String,
}

/// An address picked for a request, with its in-flight count when the pool balances by
/// `least_conn` (the request holds it until its context is dropped).
#[derive(Debug)]
pub(crate) struct Pick {
    pub addr: SocketAddr,
    pub in_flight: Option<AddressInFlight>,
}

/// The addresses of one checked upstream, their health, and how one is picked.
pub(crate) struct AddressPool {
    upstream: String,
    members: Vec<PoolMember>,
    balance: Balance,
    core: ArcSwap<PoolCore>,
    health: HealthSettings,
    checks: CheckTarget,
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
    /// Set when a reload replaced the pool: its task stops and it reports nothing more.
    retired: AtomicBool,
    /// Wakes the task when the pool is retired.
    wake: Arc<Notify>,
}

impl std::fmt::Debug for AddressPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressPool")
            .field("upstream", &self.upstream)
            .field("members", &self.members)
            .field("balance", &self.balance)
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
        let registry = Arc::new(HealthRegistry::new());
        registry.set_health_check(Box::new(ObservedCheck {
            inner: health_check(&health, template, host_header),
            upstream: upstream.clone(),
            metrics: metrics.clone(),
        }));
        let core = PoolCore::new(&members, balance, registry, Arc::default());
        let checks = CheckTarget {
            tls: template.is_tls(),
            sni: template.sni.clone(),
            verify: template.options.verify_cert,
            group_key: template.group_key,
            host_header: host_header.to_string(),
        };
        let pool = Self {
            upstream,
            members,
            balance,
            core: ArcSwap::from_pointee(core),
            health,
            checks,
            retry,
            passive: Mutex::new(Vec::new()),
            refreshing: Mutex::new(()),
            metrics,
            started: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            wake: Arc::new(Notify::new()),
        };
        pool.refresh();
        pool
    }

    /// Records checks and address states in `metrics` from now on (set once).
    pub(crate) fn set_metrics(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// The upstream's name.
    pub(crate) fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The configured addresses.
    pub(crate) fn members(&self) -> &[PoolMember] {
        &self.members
    }

    /// A healthy address other than `avoid`, picked by the pool's balance (`key` for
    /// consistent hashing); `None` when none is healthy or nothing has resolved.
    pub(crate) fn select(&self, key: &[u8], avoid: Option<&SocketAddr>) -> Option<Pick> {
        let core = self.core.load();
        let picked = match core.selector.select(key, avoid) {
            Some(b) => b,
            // Nothing selectable: the membership may predate the first answers of the names.
            None if core.selector.backends().get_backend().is_empty() => {
                drop(core);
                self.refresh();
                self.core.load().selector.select(key, avoid)?
            }
            None => return None,
        };
        let addr = picked.addr.as_inet().copied()?;
        let in_flight = load_of(&picked).map(AddressInFlight::start);
        Some(Pick { addr, in_flight })
    }

    /// Whether every address is down (health checks or refused connections); `false`
    /// while nothing has resolved.
    pub(crate) fn all_down(&self) -> bool {
        let core = self.core.load();
        let backends = core.selector.backends();
        let members = backends.get_backend();
        !members.is_empty() && !members.iter().any(|b| backends.ready(b))
    }

    /// Takes `addr` out until the next check after one interval: a connection to it was
    /// refused or timed out.
    pub(crate) fn mark_failed(&self, addr: &SocketAddr) {
        self.core
            .load()
            .selector
            .backends()
            .set_enable(&backend(*addr), false);
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

    /// Re-reads the members' addresses from their slots. One refresh at a time; a caller
    /// that finds one running waits for it (a few microseconds: the discovery never waits)
    /// and then reads again, so it never returns before the slots' answers are in.
    pub(crate) fn refresh(&self) {
        let _one_at_a_time = self
            .refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.core.load().selector.refresh();
    }

    /// Takes over `running`'s health state, in-flight counts and held-out addresses when
    /// it is the same upstream with the same addresses and checks (a reload that kept it):
    /// a down address then stays down until its checks pass. Call before the pool serves
    /// and after its slots have their answers; returns whether it took them.
    pub(crate) fn keep_health_of(&self, running: &AddressPool) -> bool {
        if std::ptr::eq(self, running) || !self.checked_alike(running) {
            return false;
        }
        let old = running.core.load();
        let core = PoolCore::new(
            &self.members,
            self.balance,
            old.registry.clone(),
            old.in_flight.clone(),
        );
        self.core.store(Arc::new(core));
        let held = running
            .passive
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.refresh();
        let core = self.core.load();
        for (addr, _) in &held {
            core.selector.backends().set_enable(&backend(*addr), false);
        }
        *self.passive.lock().unwrap_or_else(PoisonError::into_inner) = held;
        true
    }

    /// Same upstream, addresses, health settings and check target.
    fn checked_alike(&self, other: &AddressPool) -> bool {
        let addresses = |pool: &AddressPool| -> Vec<(String, u16)> {
            pool.members
                .iter()
                .map(|m| (m.host.clone(), m.port))
                .collect()
        };
        self.upstream == other.upstream
            && self.health == other.health
            && self.checks == other.checks
            && addresses(self) == addresses(other)
    }

    /// Stops the pool's task and its reports (a reload replaced or removed the upstream).
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// Re-enables addresses held out by a failed connection whose time is up.
    fn release_passive(&self, now: Instant) {
        let mut passive = self.passive.lock().unwrap_or_else(PoisonError::into_inner);
        let core = self.core.load();
        let backends = core.selector.backends();
        passive.retain(|(addr, until)| {
            let keep = *until > now;
            if !keep {
                backends.set_enable(&backend(*addr), true);
            }
            keep
        });
    }

    /// Publishes whether each current address takes requests (`edge_upstream_address_up`);
    /// addresses no longer in the pool lose their series. Nothing once retired.
    pub(crate) fn record_states(&self) {
        let Some(metrics) = self.metrics.get() else {
            return;
        };
        let core = self.core.load();
        let backends = core.selector.backends();
        let states = backends
            .get_backend()
            .iter()
            .map(|b| (b.addr.to_string(), backends.ready(b)))
            .collect();
        metrics.upstream_addresses_up(&self.upstream, states, || !self.is_retired());
    }

    /// One round of the background work: membership, held-out addresses, checks, gauges.
    async fn tick(&self) {
        self.refresh();
        self.release_passive(Instant::now());
        let registry = self.core.load().registry.clone();
        registry.run_health_check(true).await;
        self.record_states();
    }

    /// Starts the pool's background task once (later calls do nothing): it runs until the
    /// pool is dropped or retired (its config replaced by a reload) or `stop` fires.
    pub(crate) fn start(self: &Arc<Self>, stop: pingora::server::ShutdownWatch) {
        if self.started.swap(true, Ordering::Relaxed) || self.is_retired() {
            return;
        }
        let interval = self.health.interval;
        tokio::spawn(watch(
            Arc::downgrade(self),
            interval,
            self.wake.clone(),
            stop,
        ));
    }
}

/// Runs `pool`'s checks every `interval` while it exists and is not retired.
async fn watch(
    pool: Weak<AddressPool>,
    interval: Duration,
    wake: Arc<Notify>,
    mut stop: pingora::server::ShutdownWatch,
) {
    loop {
        {
            let Some(pool) = pool.upgrade() else {
                return;
            };
            if pool.is_retired() {
                return;
            }
            pool.tick().await;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake.notified() => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() { return; }
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

    fn settings(interval: Duration, timeout: Duration) -> HealthSettings {
        HealthSettings {
            path: None,
            interval,
            timeout,
            healthy: 1,
            unhealthy: 1,
            status: (200, 399),
        }
    }

    /// A TCP-checked pool of one address.
    fn pool_at(addr: SocketAddr, health: HealthSettings) -> Arc<AddressPool> {
        let template = HttpPeer::new(addr, false, String::new());
        let member = PoolMember {
            host: addr.ip().to_string(),
            port: addr.port(),
            slot: Arc::new(AddrSlot::fixed(vec![addr.ip()])),
        };
        Arc::new(AddressPool::new(
            "app".into(),
            vec![member],
            Balance::RoundRobin,
            health,
            true,
            &template,
            "app",
        ))
    }

    /// A pool of one address: a listener the test holds (TCP checks pass).
    fn pool(listener: &std::net::TcpListener) -> (Arc<AddressPool>, SocketAddr) {
        let addr = listener.local_addr().expect("listener address");
        let health = settings(Duration::from_millis(10), Duration::from_secs(1));
        (pool_at(addr, health), addr)
    }

    fn picked(pool: &AddressPool, avoid: Option<&SocketAddr>) -> Option<SocketAddr> {
        pool.select(b"/", avoid).map(|p| p.addr)
    }

    #[test]
    fn a_refused_address_is_held_out_until_its_time_is_up() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let (pool, addr) = pool(&listener);
        assert_eq!(picked(&pool, None), Some(addr));
        assert_eq!(picked(&pool, Some(&addr)), None);
        pool.mark_failed(&addr);
        assert_eq!(picked(&pool, None), None);
        assert!(pool.all_down());
        pool.release_passive(Instant::now());
        assert!(pool.all_down(), "released before its interval");
        pool.release_passive(Instant::now() + Duration::from_secs(3600));
        assert_eq!(picked(&pool, None), Some(addr));
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
            pool.wake.clone(),
            stop,
        ));
        drop(pool);
        let ended = tokio::time::timeout(Duration::from_secs(30), task).await;
        assert!(ended.is_ok(), "the check task outlived its pool");
    }

    #[tokio::test]
    async fn the_check_task_ends_when_its_pool_is_retired_though_still_held() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        // Checks an hour apart: only the retirement can end the task's wait.
        let addr = listener.local_addr().expect("listener address");
        let pool = pool_at(
            addr,
            settings(Duration::from_secs(3600), Duration::from_secs(1)),
        );
        let (_keep, stop) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(watch(
            Arc::downgrade(&pool),
            Duration::from_secs(3600),
            pool.wake.clone(),
            stop,
        ));
        pool.retire();
        let ended = tokio::time::timeout(Duration::from_secs(30), task).await;
        assert!(ended.is_ok(), "the check task outlived the retirement");
        drop(pool);
    }

    #[tokio::test]
    async fn a_pool_checked_alike_keeps_the_running_pools_down_address_down() {
        // TEST-NET-1: nothing answers, so the one check fails (refused, unreachable or
        // timed out), and one failure takes the address out.
        let addr: SocketAddr = "192.0.2.1:80".parse().expect("address");
        let health = settings(Duration::from_secs(3600), Duration::from_millis(200));
        let running = pool_at(addr, health.clone());
        running.tick().await;
        assert!(running.all_down(), "the failed check took the address out");

        let next = pool_at(addr, health.clone());
        assert!(!next.all_down(), "a fresh pool starts healthy");
        assert!(next.keep_health_of(&running));
        assert!(next.all_down(), "the kept state says down");
        assert_eq!(picked(&next, None), None);

        // Other checks: nothing is handed over.
        let changed = pool_at(addr, settings(Duration::from_secs(60), health.timeout));
        assert!(!changed.keep_health_of(&running));
        assert_eq!(picked(&changed, None), Some(addr));
    }

    #[test]
    fn least_conn_pools_hand_out_in_flight_guards_and_others_do_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("listener address");
        let template = HttpPeer::new(addr, false, String::new());
        let member = PoolMember {
            host: addr.ip().to_string(),
            port: addr.port(),
            slot: Arc::new(AddrSlot::fixed(vec![addr.ip()])),
        };
        let health = settings(Duration::from_secs(5), Duration::from_secs(1));
        let pool = AddressPool::new(
            "app".into(),
            vec![member],
            Balance::LeastConn,
            health,
            true,
            &template,
            "app",
        );
        let pick = pool.select(b"/", None).expect("a pick");
        assert!(pick.in_flight.is_some());
        let (round_robin, _) = self::pool(&listener);
        assert!(round_robin
            .select(b"/", None)
            .expect("a pick")
            .in_flight
            .is_none());
    }
}
