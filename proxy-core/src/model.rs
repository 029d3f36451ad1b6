//! [`RuntimeConfig`]: the compiled configuration the proxy runs on, validated and indexed
//! for the request path. Built from TOML by [`crate::config`] or from code by
//! [`crate::config::ConfigBuilder`]; nothing in it is a raw config string.
//!
//! What a request needs is reached through its site and location ([`Site`], [`Location`]):
//! a location owns its action, guards, plugins and cache policy. The process-wide settings
//! beside them are read when the services start ([`ServerSettings`], [`AdminSettings`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::access::DenyList;
use crate::ban::{BanRules, BanSettings};
use crate::cache::CacheSettings;
use crate::client::ClientIpPolicy;
use crate::fleet::FleetSettings;
use crate::limit::{ConcurrencyZone, LimitZone};
use crate::observe::AccessLogSettings;
use crate::route::{Routes, Site};
use crate::tailnet::TailnetSettings;
use crate::telemetry::TelemetrySettings;
use crate::upstream::{ResolverSettings, Upstream};

/// `[server]`, compiled: listeners, threads, shutdown. Bound when the process starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    pub(crate) listen: Vec<SocketAddr>,
    pub(crate) threads: usize,
    pub(crate) work_stealing: bool,
    pub(crate) grace_period: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) upstream_pool_size: usize,
    pub(crate) upgrade_sock: Option<PathBuf>,
    pub(crate) client: ClientConnectionSettings,
}

/// How client connections are bounded in time and size (`[server]`): nginx's
/// `client_header_timeout`, `client_body_timeout`, `send_timeout`, `keepalive_timeout`,
/// `keepalive_requests`, `large_client_header_buffers`, `lingering_*` and a cap like
/// `worker_connections`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientConnectionSettings {
    pub(crate) header_timeout: Duration,
    pub(crate) body_timeout: Duration,
    pub(crate) send_timeout: Duration,
    pub(crate) keepalive_timeout: Duration,
    pub(crate) keepalive_requests: u32,
    pub(crate) max_header_line: usize,
    pub(crate) max_header_size: usize,
    pub(crate) max_headers: usize,
    /// Whether header names keep the case they arrived in (`header_case = "preserve"`).
    pub(crate) keep_header_case: bool,
    pub(crate) max_connections: usize,
    pub(crate) lingering: crate::answer::Lingering,
    /// Bytes of a buffered request body kept in memory (`request_buffer_size`).
    pub(crate) request_buffer_size: usize,
    /// Requests a worker thread works on at once, and how long each counts (`in_progress`,
    /// `in_progress_hold`); `None`: no bound.
    pub(crate) admission: Option<pingora::apps::admission::Admission>,
}

impl ServerSettings {
    /// Public listen addresses.
    pub fn listen(&self) -> &[SocketAddr] {
        &self.listen
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// How long in-flight requests may run after SIGTERM.
    pub fn grace_period(&self) -> Duration {
        self.grace_period
    }

    /// Where listening sockets are handed to a new process on SIGQUIT, if anywhere.
    pub fn upgrade_sock(&self) -> Option<&Path> {
        self.upgrade_sock.as_deref()
    }
}

/// `[admin]`, compiled: the admin listener. Bound when the process starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    pub(crate) listen: SocketAddr,
    pub(crate) token_env: Option<String>,
    pub(crate) tailscaled_socket: Option<PathBuf>,
    pub(crate) metrics: bool,
}

impl AdminSettings {
    /// Where `/metrics`, `/healthz`, `/readyz` and admin actions are served.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// tailscaled's LocalAPI socket, when `/readyz` should ask it.
    pub fn tailscaled_socket(&self) -> Option<&Path> {
        self.tailscaled_socket.as_deref()
    }

    /// The bearer token for admin actions, read from the configured environment variable;
    /// `None` (admin actions off) when no variable is configured or it is empty.
    pub fn token(&self) -> Option<String> {
        let name = self.token_env.as_deref()?;
        std::env::var(name).ok().filter(|token| !token.is_empty())
    }

    /// Whether metrics are recorded and served.
    pub fn metrics(&self) -> bool {
        self.metrics
    }
}

/// A compiled configuration.
#[derive(Debug)]
pub struct RuntimeConfig {
    pub(crate) server: ServerSettings,
    pub(crate) admin: AdminSettings,
    pub(crate) access_log: AccessLogSettings,
    pub(crate) resolver: ResolverSettings,
    pub(crate) cache: CacheSettings,
    pub(crate) client: ClientIpPolicy,
    pub(crate) routes: Routes,
    pub(crate) upstreams: BTreeMap<String, Arc<Upstream>>,
    /// Every rate-limit zone, by name (locations hold the same zones).
    pub(crate) zones: BTreeMap<String, Arc<LimitZone>>,
    /// Every connection-limit zone, by name (locations hold the same zones).
    pub(crate) connection_zones: BTreeMap<String, Arc<ConcurrencyZone>>,
    /// Every deny list the sites read, for the service that watches their files.
    pub(crate) deny_lists: Vec<Arc<DenyList>>,
    /// The htpasswd files of basic-auth locations, re-read when they change.
    pub(crate) htpasswd_files: Vec<Arc<crate::auth::HtpasswdFile>>,
    /// The forward-auth services of sites and locations.
    pub(crate) forward_auths: Vec<Arc<crate::auth::ForwardAuth>>,
    /// `[telemetry]`: metrics and log lines pushed to the homelab.
    pub(crate) telemetry: TelemetrySettings,
    /// `[tailnet]`: the userspace tailnet node of `transport = "tailscale-rs"` upstreams.
    pub(crate) tailnet: Option<TailnetSettings>,
    /// `[redis]`: the fleet this machine belongs to, if any.
    pub(crate) fleet: Option<FleetSettings>,
    /// `[bans]`: the rules that ban clients.
    pub(crate) bans: BanRules,
    /// `[bans]`: where bans are kept (read when the process starts).
    pub(crate) ban_settings: BanSettings,
}

impl RuntimeConfig {
    /// `[server]`: listeners, threads, shutdown.
    pub fn server(&self) -> &ServerSettings {
        &self.server
    }

    /// `[admin]`: the admin listener.
    pub fn admin(&self) -> &AdminSettings {
        &self.admin
    }

    /// The site serving `host` (lowercase, without port or trailing dot), if any.
    pub fn site_for_host(&self, host: &str) -> Option<&Arc<Site>> {
        self.routes.site_for_host(host)
    }

    /// Every site, once each, in no particular order.
    pub fn sites(&self) -> impl Iterator<Item = &Arc<Site>> {
        self.routes.sites()
    }

    /// Every upstream, by name.
    pub fn upstreams(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.upstreams.values()
    }

    /// The upstream called `name`.
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.get(name)
    }

    /// `[resolver]`: how upstream names are resolved.
    pub fn resolver(&self) -> &ResolverSettings {
        &self.resolver
    }

    /// `[cache]`: the cache storage.
    pub fn cache(&self) -> &CacheSettings {
        &self.cache
    }

    /// `[access_log]`.
    pub fn access_log(&self) -> &AccessLogSettings {
        &self.access_log
    }

    /// `[client]`: how the client address is found.
    pub fn client(&self) -> &ClientIpPolicy {
        &self.client
    }

    /// `[telemetry]`: what is pushed to the homelab's Prometheus and Loki.
    pub fn telemetry(&self) -> &TelemetrySettings {
        &self.telemetry
    }

    /// `[tailnet]`: the userspace tailnet node, if configured.
    pub fn tailnet(&self) -> Option<&TailnetSettings> {
        self.tailnet.as_ref()
    }

    /// `[redis]`: the fleet this machine shares limits and purges with, if any.
    pub fn fleet(&self) -> Option<&FleetSettings> {
        self.fleet.as_ref()
    }

    /// `[bans]`: where the process keeps its bans.
    pub fn ban_settings(&self) -> &BanSettings {
        &self.ban_settings
    }

    /// Names the MagicDNS resolver keeps resolved besides the upstreams': the telemetry
    /// receivers' and the forward-auth services'.
    pub(crate) fn other_names(&self) -> impl Iterator<Item = &str> {
        let auth = self.forward_auths.iter().filter_map(|a| a.host_name());
        self.telemetry.endpoint_names().chain(auth)
    }

    /// Has the forward-auth services resolve their names from `resolver`'s table (after it
    /// adopted [`RuntimeConfig::other_names`]).
    pub(crate) fn resolve_auth_names_with(&self, resolver: &Arc<crate::MagicDnsResolver>) {
        for auth in &self.forward_auths {
            auth.use_resolver(resolver);
        }
    }
}
