//! Pingora services for an [`EdgeProxy`]: the public proxy service and the MagicDNS
//! resolver's background service, built from a [`RuntimeConfig`]. An embedder adds both to
//! its own `pingora::server::Server`.

use arc_swap::ArcSwap;
use pingora::proxy::{http_proxy_service_with_name, HttpProxy};
use pingora::server::configuration::ServerConf;
use pingora::services::background::GenBackgroundService;
use pingora::services::listening::Service;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::EdgeCache;
use crate::proxy::EdgeProxy;
use crate::runtime::{RuntimeConfig, ServerSettings};
use crate::upstream::MagicDnsResolver;

/// The services an edge proxy needs, ready to add to a Pingora server.
pub struct EdgeServices {
    /// The public HTTP proxy, listening on every configured address.
    pub proxy: Service<HttpProxy<EdgeProxy>>,
    /// Keeps upstream names resolved.
    pub resolver: GenBackgroundService<MagicDnsResolver>,
    /// Swap a new config in here to reload (then call [`MagicDnsResolver::adopt`]).
    pub config: Arc<ArcSwap<RuntimeConfig>>,
    /// The resolver, for readiness checks and reloads.
    pub resolver_handle: Arc<MagicDnsResolver>,
    /// The response cache, for purges from the admin side ([`EdgeCache::purge`]).
    pub cache: &'static EdgeCache,
}

impl EdgeServices {
    /// Resolves every upstream name once (waiting at most `limit`), so the proxy does not
    /// answer 502 while the first lookups are in flight. Call before running the server.
    pub fn prime_resolver(&self, limit: Duration) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match runtime {
            Ok(runtime) => runtime.block_on(self.resolver_handle.prime(limit)),
            Err(e) => tracing::warn!(error = %e, "cannot prime the resolver"),
        }
    }

    /// Builds the services for `config`, using the server's configuration.
    pub fn new(server_conf: &Arc<ServerConf>, config: Arc<RuntimeConfig>) -> Self {
        let resolver = Arc::new(MagicDnsResolver::new(config.resolver.clone()));
        resolver.adopt(&config);
        let listen = config.server.listen.clone();
        let proxy = EdgeProxy::new(config);
        let handle = proxy.config_handle();
        let cache = proxy.cache();
        let mut service = http_proxy_service_with_name(server_conf, proxy, "edge proxy");
        for addr in listen {
            service.add_tcp(&addr.to_string());
        }
        Self {
            proxy: service,
            resolver: GenBackgroundService::new("magicdns resolver".into(), resolver.clone()),
            config: handle,
            resolver_handle: resolver,
            cache,
        }
    }
}

/// Pingora's server configuration for these settings (threads, shutdown, upstream pool).
pub fn server_conf(settings: &ServerSettings) -> ServerConf {
    ServerConf {
        threads: settings.threads,
        grace_period_seconds: Some(whole_seconds(settings.grace_period)),
        graceful_shutdown_timeout_seconds: Some(whole_seconds(settings.shutdown_timeout)),
        upstream_keepalive_pool_size: settings.upstream_pool_size,
        ..ServerConf::default()
    }
}

/// Pingora counts shutdown periods in whole seconds; round up so none is cut short.
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}
