//! Pingora services for an [`EdgeProxy`]: the public proxy service and the MagicDNS
//! resolver's background service, built from a [`RuntimeConfig`], plus the admin listener
//! ([`AdminApp`]). An embedder adds them to its own `pingora::server::Server`.

use arc_swap::ArcSwap;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::proxy::{http_proxy_service_with_name, HttpProxy};
use pingora::server::configuration::ServerConf;
use pingora::services::background::GenBackgroundService;
use pingora::services::listening::Service;
use std::sync::Arc;
use std::time::Duration;

use crate::admin::AdminApp;
use crate::cache::EdgeCache;
use crate::observe::{LocalApiClient, Observability};
use crate::proxy::EdgeProxy;
use crate::reload::ConfigReloader;
use crate::runtime::{RuntimeConfig, ServerSettings};
use crate::upstream::MagicDnsResolver;

/// The services an edge proxy needs, ready to add to a Pingora server.
pub struct EdgeServices {
    /// The public HTTP proxy, listening on every configured address.
    pub proxy: Service<HttpProxy<EdgeProxy>>,
    /// Keeps upstream names resolved.
    pub resolver: GenBackgroundService<MagicDnsResolver>,
    /// The config the proxy runs on; reload through [`EdgeServices::reloader`].
    pub config: Arc<ArcSwap<RuntimeConfig>>,
    /// The resolver, for readiness checks and reloads.
    pub resolver_handle: Arc<MagicDnsResolver>,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`, admin actions).
    pub admin: Service<AdminApp>,
    /// Metrics and access log shared by the proxy, the resolver and the admin listener.
    pub observability: Arc<Observability>,
    /// The response cache, for purges from the admin side ([`EdgeCache::purge`]).
    pub cache: &'static EdgeCache,
}

impl EdgeServices {
    /// What swaps a new config into these services while they run ([`ConfigReloader`]).
    pub fn reloader(&self) -> ConfigReloader {
        ConfigReloader::new(
            self.config.clone(),
            self.resolver_handle.clone(),
            self.observability.metrics().clone(),
        )
    }

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

    /// Builds the services for `config`, using the server's configuration. If the access
    /// log cannot be opened it is turned off with an error logged; use
    /// [`EdgeServices::with_observability`] to handle that yourself.
    pub fn new(server_conf: &Arc<ServerConf>, config: Arc<RuntimeConfig>) -> Self {
        let observability = Observability::from_settings(&config.observe).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot open the access log; it is off");
            Observability::without_access_log(&config.observe)
        });
        Self::with_observability(server_conf, config, Arc::new(observability))
    }

    /// Builds the services for `config`, recording into `observability`.
    pub fn with_observability(
        server_conf: &Arc<ServerConf>,
        config: Arc<RuntimeConfig>,
        observability: Arc<Observability>,
    ) -> Self {
        let resolver = Arc::new(MagicDnsResolver::new(config.resolver.clone()));
        resolver.set_metrics(observability.metrics().clone());
        resolver.adopt(&config);
        let listen = config.server.listen.clone();
        let admin_settings = config.observe.admin.clone();
        let proxy = EdgeProxy::new(config).with_observability(observability.clone());
        let handle = proxy.config_handle();
        let cache = proxy.cache();
        let mut service = http_proxy_service_with_name(server_conf, proxy, "edge proxy");
        for addr in listen {
            service.add_listener(public_listener(addr));
        }
        let token = admin_settings
            .token_env
            .as_deref()
            .and_then(|name| std::env::var(name).ok());
        let mut admin_app = AdminApp::new(
            observability.metrics().clone(),
            resolver.clone(),
            handle.clone(),
            admin_settings.tailscaled_socket.map(LocalApiClient::new),
            token,
        );
        // Cache purges are admin actions: behind the token, never on the public port.
        admin_app.add_action("purge", Arc::new(crate::cache::PurgeAction::new(cache)));
        let mut admin = Service::new("admin".into(), admin_app);
        admin.add_tcp(&admin_settings.listen.to_string());
        Self {
            proxy: service,
            resolver: GenBackgroundService::new("magicdns resolver".into(), resolver.clone()),
            config: handle,
            resolver_handle: resolver,
            admin,
            observability,
            cache,
        }
    }
}

/// A public listener. Its connections read straight from the socket into the HTTP
/// parser's own buffer: Pingora's default 64 KiB read buffer per connection (there for TLS
/// records, which this listener never terminates) would copy every request twice and
/// hold 64 KiB for each idle keep-alive connection.
fn public_listener(addr: std::net::SocketAddr) -> ListenerConfig {
    ListenerConfig::tcp(addr.to_string()).l4_buffer(L4BufferSettings::default().read(0))
}

/// Pingora's server configuration for these settings (threads, shutdown, upstream pool,
/// upgrade socket).
pub fn server_conf(settings: &ServerSettings) -> ServerConf {
    ServerConf {
        threads: settings.threads,
        grace_period_seconds: Some(whole_seconds(settings.grace_period)),
        graceful_shutdown_timeout_seconds: Some(whole_seconds(settings.shutdown_timeout)),
        upstream_keepalive_pool_size: settings.upstream_pool_size,
        upgrade_sock: settings
            .upgrade_sock
            .as_ref()
            .map(|path| path.to_string_lossy().into_owned())
            .unwrap_or_default(),
        ..ServerConf::default()
    }
}

/// Pingora counts shutdown periods in whole seconds; round up so none is cut short.
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}
