//! The compiled configuration the proxy runs on: validated, indexed, and ready for the
//! request path. Built from TOML by [`crate::config`] or from code by [`crate::builder`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::client::ClientIpPolicy;
use crate::guard::GuardTable;
use crate::route::HostRouter;
use crate::upstream::{ResolverSettings, Upstream};

/// What a request for a Host that no site serves gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownHostAnswer {
    /// Close the connection without a response (nginx's `return 444`).
    Close,
    /// Answer with this status and a short body.
    Status(u16),
}

/// Process-wide settings: listeners, threads, shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Public listen addresses.
    pub listen: Vec<SocketAddr>,
    /// Admin listen address.
    pub admin_listen: SocketAddr,
    /// Worker threads.
    pub threads: usize,
    /// How long in-flight requests may run after SIGTERM.
    pub grace_period: Duration,
    /// How long runtimes get to wind down after the grace period.
    pub shutdown_timeout: Duration,
    /// Idle upstream connections kept for reuse, across all upstreams.
    pub upstream_pool_size: usize,
    /// Where listening sockets are handed to a new process on SIGQUIT, if anywhere.
    pub upgrade_sock: Option<std::path::PathBuf>,
}

/// A compiled configuration.
#[derive(Debug)]
pub struct RuntimeConfig {
    /// Process-wide settings.
    pub server: ServerSettings,
    /// How upstream names are resolved.
    pub resolver: ResolverSettings,
    /// Host -> site.
    pub router: HostRouter,
    /// Upstreams by name.
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    /// Path answered 200 locally for any Host, if any.
    pub health_path: Option<String>,
    /// Answer for unknown hosts.
    pub unknown_host: UnknownHostAnswer,
    /// Admin listener and access log.
    pub observe: crate::observe::ObserveSettings,
    /// Cache storage settings (`[cache]`).
    pub cache: crate::cache::CacheSettings,
    /// How the client address is found (trusted proxies, `Fly-Client-IP`).
    pub client: ClientIpPolicy,
    /// Access rules and rate limits of sites and locations.
    pub guards: GuardTable,
}
