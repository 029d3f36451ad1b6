//! MagicDNS resolution of upstream names (and of the telemetry receivers'), off the request
//! path.
//!
//! A background task looks up every tracked name, stores the answer in the name's
//! [`AddrSlot`], and refreshes it when its TTL (clamped to the configured bounds) runs out.
//! When a refresh fails the last good answer stays in use. Requests and telemetry pushes
//! only read slots.

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{AddressPool, Upstream};
use crate::observe::{DnsLookupResult, Metrics};

/// The current addresses of one name. Shared between the resolver and every upstream that
/// uses the name.
#[derive(Debug, Default)]
pub(crate) struct AddrSlot {
    addrs: ArcSwapOption<Vec<IpAddr>>,
    next: AtomicUsize,
    stale: AtomicBool,
}

impl AddrSlot {
    /// A slot holding fixed addresses (IP-literal upstreams).
    pub(crate) fn fixed(addrs: Vec<IpAddr>) -> Self {
        let slot = Self::default();
        slot.store(addrs);
        slot
    }

    /// The next address, round-robin over the answer; `None` if never resolved.
    pub(crate) fn pick(&self) -> Option<IpAddr> {
        let guard = self.addrs.load();
        let addrs = guard.as_ref()?;
        if addrs.len() == 1 {
            return addrs.first().copied();
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        addrs.get(n % addrs.len()).copied()
    }

    /// The current answer, if any.
    pub(crate) fn current(&self) -> Option<Arc<Vec<IpAddr>>> {
        self.addrs.load_full()
    }

    /// Whether the answer in use is kept past a failed refresh.
    pub(crate) fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// Marks the answer in use as kept past a failed refresh.
    #[cfg(feature = "tailscale-rs")]
    pub(crate) fn mark_stale(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    pub(crate) fn store(&self, addrs: Vec<IpAddr>) {
        self.addrs.store(Some(Arc::new(addrs)));
        self.stale.store(false, Ordering::Relaxed);
    }
}

/// A name the resolver keeps resolved, and whether an upstream needs it (readiness waits
/// for those only).
#[derive(Debug)]
struct Tracked {
    slot: Arc<AddrSlot>,
    upstream: bool,
}

/// How a name is keyed: lowercase, without a trailing dot.
fn name_key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Resolver settings (the `[resolver]` section, compiled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    /// DNS servers to ask (MagicDNS is `100.100.100.100:53`).
    pub nameservers: Vec<SocketAddr>,
    /// Lower bound on the refresh interval.
    pub min_ttl: Duration,
    /// Upper bound on the refresh interval.
    pub max_ttl: Duration,
    /// Time allowed for one lookup.
    pub timeout: Duration,
    /// Delay before retrying a failed lookup.
    pub retry_interval: Duration,
}

/// Resolves upstream names through MagicDNS in the background.
///
/// Run it as a Pingora background service (it implements [`BackgroundService`]), and call
/// [`MagicDnsResolver::adopt`] with each compiled config to say which names to keep resolved.
pub struct MagicDnsResolver {
    settings: ResolverSettings,
    slots: Mutex<HashMap<String, Tracked>>,
    names_changed: Notify,
    metrics: OnceLock<Arc<Metrics>>,
    /// The address pools of the adopted config's upstreams, whose health checks `run`
    /// starts (each stops by itself when its config is dropped).
    pools: Mutex<Vec<Arc<AddressPool>>>,
}

impl std::fmt::Debug for MagicDnsResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MagicDnsResolver")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl MagicDnsResolver {
    /// Records lookups and stale answers in `metrics` from now on (set once).
    pub fn set_metrics(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    fn record_lookup(&self, result: DnsLookupResult) {
        if let Some(metrics) = self.metrics.get() {
            metrics.dns_lookup(result);
        }
    }

    fn record_stale_count(&self) {
        if let Some(metrics) = self.metrics.get() {
            let stale = self.tracked().iter().filter(|(_, s)| s.is_stale()).count();
            metrics.dns_stale_answers(stale);
        }
    }

    /// A resolver with no names yet.
    pub fn new(settings: ResolverSettings) -> Self {
        Self {
            settings,
            slots: Mutex::new(HashMap::new()),
            names_changed: Notify::new(),
            metrics: OnceLock::new(),
            pools: Mutex::new(Vec::new()),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &ResolverSettings {
        &self.settings
    }

    /// Starts tracking the names of a compiled config, replacing what was tracked: its
    /// `upstreams`' and `receivers`, other names to keep resolved (the telemetry receivers of
    /// `[telemetry]`).
    ///
    /// A name already tracked hands its last answer to the new config's slot, so a reload
    /// never makes a resolved upstream or receiver unavailable.
    pub fn adopt<'c>(
        &self,
        upstreams: impl IntoIterator<Item = &'c Arc<Upstream>>,
        receivers: impl IntoIterator<Item = &'c str>,
    ) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = HashMap::new();
        let mut pools = Vec::new();
        for upstream in upstreams.into_iter() {
            if let Some(pool) = &upstream.pool {
                pools.push(pool.clone());
            }
            if !upstream.kernel_transport() {
                continue;
            }
            for (host, slot) in upstream.named_slots() {
                let key = name_key(host);
                if let Some(previous) = slots.get(&key).and_then(|t| t.slot.current()) {
                    if slot.current().is_none() {
                        slot.store(previous.as_ref().clone());
                    }
                }
                next.insert(
                    key,
                    Tracked {
                        slot: slot.clone(),
                        upstream: true,
                    },
                );
            }
        }
        self.adopt_pools(pools);
        // Receivers have no slot of their own in the config: they keep the one they had,
        // or share an upstream's.
        for name in receivers {
            let key = name_key(name);
            let slot = slots.get(&key).map(|t| t.slot.clone()).unwrap_or_default();
            next.entry(key).or_insert(Tracked {
                slot,
                upstream: false,
            });
        }
        *slots = next;
        drop(slots);
        self.names_changed.notify_one();
    }

    /// Puts `pools` (a new config's) in place of the running ones. They read the answers
    /// just handed over; a pool the reload kept as it was takes over its predecessor's
    /// health state; the running pools stop their checks and reports; only the new pools'
    /// addresses keep a series in `edge_upstream_address_up`. Their checks start with `run`.
    fn adopt_pools(&self, pools: Vec<Arc<AddressPool>>) {
        let mut running = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        for pool in &pools {
            if let Some(metrics) = self.metrics.get() {
                pool.set_metrics(metrics.clone());
            }
            pool.refresh();
            for old in running.iter() {
                if pool.keep_health_of(old) {
                    break;
                }
            }
        }
        for old in running.iter() {
            if !pools.iter().any(|pool| Arc::ptr_eq(pool, old)) {
                old.retire();
            }
        }
        if let Some(metrics) = self.metrics.get() {
            let names: Vec<&str> = pools.iter().map(|pool| pool.upstream()).collect();
            metrics.keep_upstream_addresses(&names);
        }
        for pool in &pools {
            pool.record_states();
        }
        *running = pools;
    }

    /// The addresses `name` resolved to last, if it is tracked and has resolved: what
    /// telemetry pushes connect to. Reads the table only, never looks anything up.
    pub fn addresses(&self, name: &str) -> Option<Arc<Vec<IpAddr>>> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.get(&name_key(name))?.slot.current()
    }

    /// Whether every upstream name has resolved at least once (telemetry receivers do not
    /// count: a homelab that is down never makes the proxy unready).
    pub fn all_resolved(&self) -> bool {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots
            .values()
            .filter(|t| t.upstream)
            .all(|t| t.slot.current().is_some())
    }

    /// Upstream names that have never resolved.
    pub fn unresolved(&self) -> Vec<String> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<String> = slots
            .iter()
            .filter(|(_, t)| t.upstream && t.slot.current().is_none())
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    fn tracked(&self) -> Vec<(String, Arc<AddrSlot>)> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots
            .iter()
            .map(|(n, t)| (n.clone(), t.slot.clone()))
            .collect()
    }

    fn build_client(&self) -> Result<TokioResolver, String> {
        let servers = self
            .settings
            .nameservers
            .iter()
            .map(|addr| {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                server
            })
            .collect();
        let config = ResolverConfig::from_parts(None, vec![], servers);
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        let options = builder.options_mut();
        options.timeout = self.settings.timeout;
        options.attempts = 1;
        options.ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
        options.use_hosts_file = ResolveHosts::Never;
        builder.build().map_err(|e| e.to_string())
    }

    /// Looks up one name and stores the answer; returns when to look again.
    async fn refresh(&self, client: &TokioResolver, name: &str, slot: &AddrSlot) -> Duration {
        let fqdn = format!("{name}.");
        match client.lookup_ip(fqdn.as_str()).await {
            Ok(answer) => {
                let addrs: Vec<IpAddr> = answer.iter().collect();
                if addrs.is_empty() {
                    self.record_lookup(DnsLookupResult::Empty);
                    return self.keep_stale(name, slot, "empty answer");
                }
                self.record_lookup(DnsLookupResult::Success);
                let ttl = answer
                    .valid_until()
                    .saturating_duration_since(std::time::Instant::now());
                let next = ttl.clamp(self.settings.min_ttl, self.settings.max_ttl);
                tracing::debug!(name, ?addrs, ?next, "resolved upstream name");
                slot.store(addrs);
                next
            }
            Err(e) => {
                self.record_lookup(DnsLookupResult::Failure);
                self.keep_stale(name, slot, &e.to_string())
            }
        }
    }

    fn keep_stale(&self, name: &str, slot: &AddrSlot, why: &str) -> Duration {
        match slot.current() {
            Some(addrs) => {
                slot.stale.store(true, Ordering::Relaxed);
                tracing::warn!(
                    name,
                    ?addrs,
                    error = why,
                    "lookup failed; keeping last good answer"
                );
            }
            None => tracing::warn!(
                name,
                error = why,
                "lookup failed; upstream unavailable until it resolves"
            ),
        }
        self.settings.retry_interval
    }

    /// Looks up every tracked name once, waiting at most `limit`; names that fail stay
    /// unresolved (their upstreams answer 502) and the background task keeps trying.
    /// Call it before opening listeners so the first requests do not race the first lookups.
    pub async fn prime(&self, limit: Duration) {
        let client = match self.build_client() {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "cannot build DNS resolver");
                return;
            }
        };
        let tracked = self.tracked();
        let lookups = tracked
            .iter()
            .map(|(name, slot)| self.refresh(&client, name, slot));
        if tokio::time::timeout(limit, futures::future::join_all(lookups))
            .await
            .is_err()
        {
            tracing::warn!(unresolved = ?self.unresolved(), "upstream names still unresolved at start-up");
        }
        // The pools' members read the answers now, before the first request.
        self.refresh_pools();
    }

    /// The pools of the running config.
    fn running_pools(&self) -> Vec<Arc<AddressPool>> {
        self.pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes every pool's members read their names' answers.
    fn refresh_pools(&self) {
        for pool in self.running_pools() {
            pool.refresh();
        }
    }

    /// Starts the health checks of pools adopted since the last call.
    fn start_health_checks(&self, shutdown: &ShutdownWatch) {
        for pool in self.running_pools() {
            pool.start(shutdown.clone());
        }
    }

    /// Keeps every tracked name resolved until `shutdown` turns true.
    pub async fn run(&self, mut shutdown: ShutdownWatch) {
        let client = match self.build_client() {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "cannot build DNS resolver; upstream names will not resolve");
                return;
            }
        };
        let mut due: HashMap<String, Instant> = HashMap::new();
        loop {
            self.start_health_checks(&shutdown);
            client.clear_cache();
            let now = Instant::now();
            let tracked = self.tracked();
            let lookups = tracked
                .iter()
                .filter(|(name, _)| due.get(name).is_none_or(|at| *at <= now))
                .map(|(name, slot)| {
                    let client = &client;
                    async move { (name, self.refresh(client, name, slot).await) }
                });
            for (name, next) in futures::future::join_all(lookups).await {
                due.insert(name.clone(), Instant::now() + next);
            }
            self.record_stale_count();
            // New answers reach the pools now rather than at their next check.
            self.refresh_pools();
            let wake = due
                .values()
                .min()
                .copied()
                .unwrap_or(now + self.settings.max_ttl);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.names_changed.notified() => {}
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { return; }
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for MagicDnsResolver {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.run(shutdown).await;
    }
}
/// Resolves the names of reqwest clients (telemetry receivers, forward-auth services) from
/// the MagicDNS resolver's table: the answer the background lookups keep fresh, never a
/// lookup of its own.
pub(crate) struct TailnetNames(pub(crate) Arc<MagicDnsResolver>);

impl reqwest::dns::Resolve for TailnetNames {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let answer = self.0.addresses(name.as_str());
        let name = name.as_str().to_owned();
        Box::pin(async move {
            match answer {
                Some(addrs) if !addrs.is_empty() => {
                    let addrs: Vec<SocketAddr> =
                        addrs.iter().map(|ip| SocketAddr::new(*ip, 0)).collect();
                    Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
                }
                _ => Err(format!("`{name}` has not resolved (MagicDNS)").into()),
            }
        })
    }
}
