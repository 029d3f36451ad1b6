//! [`EdgeServices`]: the Pingora services an edge proxy runs, built from a compiled
//! [`RuntimeConfig`]: the public proxy, the admin listener, and the background work the
//! config needs (MagicDNS resolution, deny-list files watched for changes). This is where
//! anything that runs is started; compiling a config starts nothing.

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::protocols::l4::stream::Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest};
use pingora::proxy::{http_proxy_service_with_name, HttpProxy};
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{BackgroundService, GenBackgroundService};
use pingora::services::listening::Service;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use crate::access::DenyList;
use crate::admin::{AdminApp, PurgeAction};
use crate::cache::EdgeCache;
use crate::model::{RuntimeConfig, ServerSettings};
use crate::observe::{LocalApiClient, Observability};
use crate::proxy::EdgeProxy;
use crate::reload::ConfigReloader;
use crate::upstream::MagicDnsResolver;

/// The services an edge proxy needs. Build them with [`EdgeServices::new`], then
/// [`EdgeServices::add_to`] a Pingora server, which listens where the config says; or take
/// the apps with [`EdgeServices::into_apps`] to serve them on sockets of your own.
pub struct EdgeServices {
    server_conf: Arc<ServerConf>,
    proxy: EdgeProxy,
    listen: Vec<SocketAddr>,
    admin: AdminApp,
    admin_listen: SocketAddr,
    background: EdgeBackground,
    config: Arc<ArcSwap<RuntimeConfig>>,
    resolver: Arc<MagicDnsResolver>,
    observability: Arc<Observability>,
    cache: &'static EdgeCache,
}

impl EdgeServices {
    /// Builds the services for `config`, using the server's configuration. If the access
    /// log cannot be opened it is turned off with an error logged; use
    /// [`EdgeServices::with_observability`] to handle that yourself.
    pub fn new(server_conf: &Arc<ServerConf>, config: RuntimeConfig) -> Self {
        let metrics = config.admin.metrics;
        let observability = Observability::start(metrics, &config.access_log).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot open the access log; it is off");
            Observability::without_access_log(metrics, &config.access_log)
        });
        Self::with_observability(server_conf, config, Arc::new(observability))
    }

    /// Builds the services for `config`, recording into `observability`. Creates the
    /// process's response cache (see [`EdgeCache::leak`]): build these once per process.
    pub fn with_observability(
        server_conf: &Arc<ServerConf>,
        config: RuntimeConfig,
        observability: Arc<Observability>,
    ) -> Self {
        let resolver = Arc::new(MagicDnsResolver::new(config.resolver.clone()));
        resolver.set_metrics(observability.metrics().clone());
        resolver.adopt(config.upstreams.values());
        let cache = EdgeCache::leak(config.cache.clone());
        let listen = config.server.listen.clone();
        let admin_settings = config.admin.clone();
        let config = Arc::new(ArcSwap::from_pointee(config));
        let proxy = EdgeProxy::new(config.clone(), cache).with_observability(observability.clone());
        let mut admin_app = AdminApp::new(
            observability.metrics().clone(),
            resolver.clone(),
            config.clone(),
            admin_settings
                .tailscaled_socket
                .clone()
                .map(LocalApiClient::new),
            admin_settings.token(),
        );
        // Cache purges are admin actions: behind the token, never on the public port.
        admin_app.add_action("purge", Arc::new(PurgeAction::new(cache)));
        let background = EdgeBackground {
            resolver: resolver.clone(),
            config: config.clone(),
        };
        Self {
            server_conf: server_conf.clone(),
            proxy,
            listen,
            admin: admin_app,
            admin_listen: admin_settings.listen,
            background,
            config,
            resolver,
            observability,
            cache,
        }
    }

    /// What swaps a new config into these services while they run ([`ConfigReloader`]).
    pub fn reloader(&self) -> ConfigReloader {
        ConfigReloader::new(
            self.config.clone(),
            self.resolver.clone(),
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
            Ok(runtime) => runtime.block_on(self.resolver.prime(limit)),
            Err(e) => tracing::warn!(error = %e, "cannot prime the resolver"),
        }
    }

    /// The resolver keeping upstream names resolved (for readiness checks).
    pub fn resolver(&self) -> &Arc<MagicDnsResolver> {
        &self.resolver
    }

    /// Metrics and access log shared by the proxy, the resolver and the admin listener.
    pub fn observability(&self) -> &Arc<Observability> {
        &self.observability
    }

    /// The response cache, for purges from outside the admin listener
    /// ([`EdgeCache::purge`]).
    pub fn cache(&self) -> &'static EdgeCache {
        self.cache
    }

    /// The admin app, to add actions to it ([`AdminApp::add_action`]) before serving.
    pub fn admin_mut(&mut self) -> &mut AdminApp {
        &mut self.admin
    }

    /// Adds every service to `server`: the public proxy, the admin listener and the
    /// background work.
    pub fn add_to(self, server: &mut Server) {
        let mut proxy = http_proxy_service_with_name(&self.server_conf, self.proxy, "edge proxy");
        for addr in self.listen {
            proxy.add_listener(public_listener(addr));
        }
        let mut admin = Service::new("admin".into(), self.admin);
        admin.add_tcp(&self.admin_listen.to_string());
        let background = Arc::new(self.background);
        server.add_service(GenBackgroundService::new(
            "edge background".into(),
            background,
        ));
        server.add_service(admin);
        server.add_service(proxy);
    }

    /// The apps without listeners, for serving on sockets you already hold (inherited from
    /// a supervisor, or bound by a test): hand each accepted connection of the public
    /// listener to the proxy app and each admin connection to the admin app
    /// ([`serve_listener`] does), and run the background work until shutdown.
    /// The config's `listen` and `[admin] listen` addresses are not used.
    pub fn into_apps(self) -> EdgeApps {
        EdgeApps {
            proxy: Arc::new(pingora::proxy::http_proxy(&self.server_conf, self.proxy)),
            admin: Arc::new(self.admin),
            background: Arc::new(self.background),
        }
    }
}

/// Serves `app` on `listener` (a socket you already hold) as a Pingora listening service
/// does, until `shutdown` turns true: each accepted connection gets its peer's address (what
/// the client identity and `X-Real-IP` are read from) and `TCP_NODELAY`, then is handed to
/// the app, reused while it keeps alive. Use it for [`EdgeApps::proxy`] and
/// [`EdgeApps::admin`].
pub async fn serve_listener<A>(
    listener: std::net::TcpListener,
    app: Arc<A>,
    mut shutdown: ShutdownWatch,
) where
    A: ServerApp + Send + Sync + 'static,
{
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
    {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve on the listener");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // As Pingora does (e.g. out of file descriptors): back off, keep serving.
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let digest = SocketDigest::from_raw_fd(tcp.as_raw_fd());
        let mut stream = Stream::from(tcp);
        stream.set_socket_digest(digest);
        if let Err(e) = stream.set_nodelay() {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let (app, shutdown) = (app.clone(), shutdown.clone());
        tokio::spawn(Service::<A>::handle_event(Box::new(stream), app, shutdown));
    }
}

/// The apps of [`EdgeServices`], to serve on sockets of your own ([`EdgeServices::into_apps`]).
pub struct EdgeApps {
    /// The public proxy.
    pub proxy: Arc<HttpProxy<EdgeProxy>>,
    /// The admin listener's app.
    pub admin: Arc<AdminApp>,
    /// What must run beside them until shutdown: MagicDNS resolution and deny-list watching.
    pub background: Arc<EdgeBackground>,
}

/// What runs beside the listeners for as long as the server does: MagicDNS resolution of
/// the upstream names and re-reading deny-list files that changed.
pub struct EdgeBackground {
    resolver: Arc<MagicDnsResolver>,
    config: Arc<ArcSwap<RuntimeConfig>>,
}

#[async_trait]
impl BackgroundService for EdgeBackground {
    async fn start(&self, shutdown: ShutdownWatch) {
        tokio::join!(
            self.resolver.run(shutdown.clone()),
            watch_deny_lists(&self.config, shutdown)
        );
    }
}

/// Re-reads the deny-list files of the running config when they change, until shutdown.
/// The lists of a config swapped out by a reload are no longer polled.
async fn watch_deny_lists(config: &ArcSwap<RuntimeConfig>, mut shutdown: ShutdownWatch) {
    let mut tick = tokio::time::interval(DenyList::POLL_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let lists = config.load().deny_lists.clone();
        if lists.is_empty() {
            continue;
        }
        // File reads block: keep them off the runtime's workers.
        let refreshed = tokio::task::spawn_blocking(move || {
            lists.iter().for_each(|list| {
                list.refresh();
            })
        });
        if let Err(e) = refreshed.await {
            tracing::warn!(error = %e, "deny-list refresh failed");
        }
    }
}

/// A public listener. Its connections read straight from the socket into the HTTP
/// parser's own buffer: Pingora's default 64 KiB read buffer per connection (there for TLS
/// records, which this listener never terminates) would copy every request twice and
/// hold 64 KiB for each idle keep-alive connection.
fn public_listener(addr: SocketAddr) -> ListenerConfig {
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
