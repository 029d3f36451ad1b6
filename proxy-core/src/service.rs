//! [`EdgeServices`]: the Pingora services an edge proxy runs, built from a compiled
//! [`RuntimeConfig`]: the public proxy, the admin listener, and the background work the
//! config needs (MagicDNS resolution, deny-list files watched for changes). This is where
//! anything that runs is started; compiling a config starts nothing.

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::apps::ServerApp;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::protocols::http::v1::server::RequestHeadLimits;
use pingora::protocols::l4::stream::Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest};
use pingora::proxy::HttpProxy;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{BackgroundService, GenBackgroundService};
use pingora::services::listening::Service;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::access::DenyList;
use crate::admin::{AdminApp, BansAction, PurgeAction};
use crate::ban::BanTable;
use crate::cache::EdgeCache;
use crate::fleet::Fleet;
use crate::model::{ClientConnectionSettings, RuntimeConfig, ServerSettings};
use crate::observe::{ClientClose, LocalApiClient, Metrics, Observability};
use crate::proxy::EdgeProxy;
use crate::reload::ConfigReloader;
use crate::telemetry::TelemetryShippers;
use crate::upstream::MagicDnsResolver;

/// The services an edge proxy needs. Build them with [`EdgeServices::new`], then
/// [`EdgeServices::add_to`] a Pingora server, which listens where the config says; or take
/// the apps with [`EdgeServices::into_apps`] to serve them on sockets of your own.
pub struct EdgeServices {
    server_conf: Arc<ServerConf>,
    client_settings: ClientConnectionSettings,
    open_connections: OpenConnections,
    proxy: EdgeProxy,
    listen: Vec<SocketAddr>,
    admin: AdminApp,
    admin_listen: SocketAddr,
    background: EdgeBackground,
    config: Arc<ArcSwap<RuntimeConfig>>,
    resolver: Arc<MagicDnsResolver>,
    observability: Arc<Observability>,
    cache: &'static EdgeCache,
    telemetry: Arc<TelemetryShippers>,
    #[cfg(feature = "tailscale-rs")]
    userspace: Arc<crate::tailnet::UserspaceTailnet>,
    bans: Arc<BanTable>,
    memory_trim: Option<fn()>,
}

impl EdgeServices {
    /// Builds the services for `config`, using the server's configuration. If the access
    /// log cannot be opened it is turned off with an error logged; use
    /// [`EdgeServices::with_observability`] to handle that yourself.
    pub fn new(server_conf: &Arc<ServerConf>, config: RuntimeConfig) -> Self {
        let metrics = config.admin.metrics;
        // Lines shipped to Loki are formatted even when the file/stdout log is off.
        let ship = config.telemetry.ships_log_lines();
        let observability = Observability::start_shipping(metrics, &config.access_log, ship)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot open the access log; it is off");
                let mut nowhere = config.access_log.clone();
                nowhere.target = None;
                Observability::start_shipping(metrics, &nowhere, ship)
                    .unwrap_or_else(|_| Observability::without_access_log(metrics, &nowhere))
            });
        Self::with_observability(server_conf, config, Arc::new(observability))
    }

    /// Builds the services for `config`, recording into `observability`. Creates the
    /// process's response cache (see [`EdgeCache::leak`]): build these once per process.
    /// With `[telemetry.loki]`, the access log of `observability` feeds the Loki shipper:
    /// build it with [`Observability::start_shipping`] so that it has one even when the
    /// file/stdout log is off.
    pub fn with_observability(
        server_conf: &Arc<ServerConf>,
        config: RuntimeConfig,
        observability: Arc<Observability>,
    ) -> Self {
        let resolver = Arc::new(MagicDnsResolver::new(config.resolver.clone()));
        resolver.set_metrics(observability.metrics().clone());
        resolver.adopt(config.upstreams.values(), config.other_names());
        config.resolve_auth_names_with(&resolver);
        let telemetry = Arc::new(TelemetryShippers::new(
            &config.telemetry,
            observability.metrics(),
            &resolver,
        ));
        if let Some(feed) = telemetry.log_feed() {
            match observability.access_log() {
                Some(log) => {
                    log.ship_to(feed);
                }
                None => tracing::warn!(
                    "[telemetry.loki] gets no lines: this Observability has no access log"
                ),
            }
        }
        #[cfg(feature = "tailscale-rs")]
        let userspace = {
            let userspace = crate::tailnet::UserspaceTailnet::new(config.tailnet.clone());
            userspace.adopt(config.upstreams.values());
            Arc::new(userspace)
        };
        let cache = EdgeCache::leak(config.cache.clone());
        let bans = Arc::new(config.ban_settings.table());
        bans.set_metrics(observability.metrics().clone());
        let listen = config.server.listen.clone();
        let client_settings = config.server.client.clone();
        let admin_settings = config.admin.clone();
        let config = Arc::new(ArcSwap::from_pointee(config));
        let proxy = EdgeProxy::new(config.clone(), cache)
            .with_observability(observability.clone())
            .with_bans(bans.clone());
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
        // In a fleet, global zones, purges and bans are shared through Redis.
        let fleet = config.load().fleet.clone().map(|settings| {
            let metrics = observability.metrics().clone();
            let fleet = Arc::new(Fleet::new(settings, metrics, cache).with_bans(bans.clone()));
            bans.set_listener(fleet.clone());
            fleet
        });
        // Cache purges are admin actions: behind the token, never on the public port.
        let purge = match &fleet {
            Some(fleet) => PurgeAction::new(cache).with_fleet(fleet.clone()),
            None => PurgeAction::new(cache),
        };
        admin_app.add_action("purge", Arc::new(purge));
        admin_app.add_action("bans", Arc::new(BansAction::new(bans.clone())));
        #[cfg(feature = "tailscale-rs")]
        admin_app.add_readiness_check(userspace.clone());
        let background = EdgeBackground {
            resolver: resolver.clone(),
            config: config.clone(),
            telemetry: telemetry.clone(),
            #[cfg(feature = "tailscale-rs")]
            userspace: userspace.clone(),
            fleet,
            bans: bans.clone(),
        };
        Self {
            server_conf: server_conf.clone(),
            client_settings,
            open_connections: OpenConnections::default(),
            proxy,
            listen,
            admin: admin_app,
            admin_listen: admin_settings.listen,
            background,
            config,
            resolver,
            observability,
            cache,
            telemetry,
            #[cfg(feature = "tailscale-rs")]
            userspace,
            bans,
            memory_trim: None,
        }
    }

    /// The userspace tailnet node of `transport = "tailscale-rs"` upstreams: hand it a
    /// dialer of your own ([`crate::tailnet::UserspaceTailnet::use_dialer`]) or wait for it
    /// ([`crate::tailnet::UserspaceTailnet::wait_until_ready`]) before serving. It starts
    /// with the background work at the latest.
    #[cfg(feature = "tailscale-rs")]
    pub fn userspace_tailnet(&self) -> &Arc<crate::tailnet::UserspaceTailnet> {
        &self.userspace
    }

    /// The process's bans (`[bans]`): to list, add or lift them from code. With `[redis]`
    /// they are shared with the fleet already (the fleet is the table's listener); without
    /// it, share them through a channel of your own ([`BanTable::set_listener`],
    /// [`BanTable::apply_shared`]).
    pub fn bans(&self) -> &Arc<BanTable> {
        &self.bans
    }

    /// The shippers pushing metrics and access-log lines to the homelab (`[telemetry]`):
    /// flush them once the server has stopped ([`TelemetryShippers::flush`]).
    pub fn telemetry(&self) -> &Arc<TelemetryShippers> {
        &self.telemetry
    }

    /// What swaps a new config into these services while they run ([`ConfigReloader`]).
    pub fn reloader(&self) -> ConfigReloader {
        let reloader = ConfigReloader::new(
            self.config.clone(),
            self.resolver.clone(),
            self.observability.metrics().clone(),
        );
        #[cfg(feature = "tailscale-rs")]
        let reloader = reloader.with_userspace_tailnet(self.userspace.clone());
        reloader
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

    /// The client connections open on the public listeners, counted as they come and go
    /// (e.g. to end a graceful shutdown once none is left).
    pub fn open_connections(&self) -> OpenConnections {
        self.open_connections.clone()
    }

    /// Has the public proxy call `trim` on a worker thread a second after client connections
    /// opened or closed there, once for all that did meanwhile (so at most once a second per
    /// thread; with work stealing, on whichever thread runs the call): for an allocator that
    /// keeps freed memory until asked to give it back (mimalloc's `mi_collect`, glibc's
    /// `malloc_trim`), so that a worker gone quiet after a burst of connections returns
    /// their memory without the allocator purging on every free, which a busy worker pays
    /// for in page faults.
    pub fn trim_memory_with(&mut self, trim: fn()) {
        self.memory_trim = Some(trim);
    }

    /// The admin app, to add actions to it ([`AdminApp::add_action`]) before serving.
    pub fn admin_mut(&mut self) -> &mut AdminApp {
        &mut self.admin
    }

    /// Adds every service to `server`: the public proxy, the admin listener and the
    /// background work.
    pub fn add_to(self, server: &mut Server) {
        let app = self.public_app();
        let mut proxy = Service::new("edge proxy".into(), app);
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
        let proxy = Arc::new(self.public_app());
        EdgeApps {
            proxy,
            admin: Arc::new(self.admin),
            background: Arc::new(self.background),
        }
    }

    /// The public proxy app: Pingora's HTTP proxy over [`EdgeProxy`], reading request heads
    /// within the `[server]` limits, behind the connection cap.
    fn public_app(&self) -> ConnectionLimit<HttpProxy<EdgeProxy>> {
        let settings = &self.client_settings;
        let mut proxy = pingora::proxy::http_proxy(&self.server_conf, self.proxy.clone());
        let mut options = HttpServerOptions::default();
        options.h1_request_head = RequestHeadLimits {
            timeout: Some(settings.header_timeout),
            max_line: settings.max_header_line,
            max_size: settings.max_header_size,
            max_headers: settings.max_headers,
        };
        options.h1_pipelining = true;
        options.h1_discard_header_case = !settings.keep_header_case;
        options.h1_keepalive_timeout = Some(settings.keepalive_timeout);
        options.h1_lingering = Some(settings.lingering);
        options.h1_admission = settings.admission;
        // Pingora counts the reuses after the first request.
        options.keepalive_request_limit = Some(settings.keepalive_requests.saturating_sub(1));
        proxy.server_options = Some(options);
        ConnectionLimit {
            inner: Arc::new(proxy),
            open: self.open_connections.clone(),
            max: settings.max_connections,
            metrics: self.observability.metrics().clone(),
            trim: self.memory_trim,
        }
    }
}

/// A server app that closes connections beyond `max` open at once (nginx's
/// `worker_connections`), counting each in `edge_client_closes_total{reason="max_connections"}`,
/// so that slow clients cannot take every file descriptor.
pub struct ConnectionLimit<A> {
    inner: Arc<A>,
    open: OpenConnections,
    max: usize,
    metrics: Arc<Metrics>,
    trim: Option<fn()>,
}

impl<A> ConnectionLimit<A> {
    /// `inner` behind a cap of `max` connections, counting them in `open`.
    pub fn new(inner: A, max: usize, open: OpenConnections, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::new(inner),
            open,
            max,
            metrics,
            trim: None,
        }
    }

    /// Calls `trim` a second after a connection starts or ends on a worker thread, once
    /// for all that start or end there meanwhile (a task on that thread's runtime; with work
    /// stealing, on whichever thread runs it).
    pub fn trim_memory_with(mut self, trim: fn()) -> Self {
        self.trim = Some(trim);
        self
    }

    /// Has the trim, if any, run [`TRIM_AFTER`] from now unless it already will on this
    /// thread.
    fn trim_soon(&self) {
        if let Some(trim) = self.trim {
            schedule_trim(trim);
        }
    }
}

/// How long after a connection starts or ends [`ConnectionLimit::trim_memory_with`]'s call
/// comes: long enough that a busy worker makes it about once a second, short enough that a
/// burst's memory is back soon after the burst.
const TRIM_AFTER: Duration = Duration::from_secs(1);

thread_local! {
    /// Whether a trim is already due on this thread (shared with the task that makes it,
    /// which clears it wherever it runs).
    static TRIM_DUE: Arc<std::sync::atomic::AtomicBool> = Arc::default();
}

/// Has `trim` run [`TRIM_AFTER`] from now unless it already will on this thread.
fn schedule_trim(trim: fn()) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    TRIM_DUE.with(|due| {
        if due.swap(true, Ordering::Relaxed) {
            return;
        }
        let due = due.clone();
        runtime.spawn(async move {
            tokio::time::sleep(TRIM_AFTER).await;
            due.store(false, Ordering::Relaxed);
            trim();
        });
    });
}

/// A count of open connections, shared by whoever holds a clone.
#[derive(Debug, Clone, Default)]
pub struct OpenConnections(Arc<AtomicUsize>);

impl OpenConnections {
    /// Connections open now.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One open connection, counted until dropped (also when its task is cancelled).
struct OpenConnection(Arc<AtomicUsize>, Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        self.1.client_connections(-1.0);
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ConnectionLimit<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: pingora::protocols::Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<pingora::protocols::Stream> {
        let open = &self.open.0;
        if open.fetch_add(1, Ordering::Relaxed) >= self.max {
            open.fetch_sub(1, Ordering::Relaxed);
            self.metrics.client_closed(ClientClose::MaxConnections);
            tracing::debug!(
                max = self.max,
                "max_connections open: closing a new connection"
            );
            return None;
        }
        self.metrics.client_connections(1.0);
        let _open = OpenConnection(open.clone(), self.metrics.clone());
        // Both ends: a burst of new connections leaves their first requests' buffers freed
        // behind them, a burst of closes the connections' own memory.
        self.trim_soon();
        let reuse = self.inner.process_new(stream, shutdown).await;
        self.trim_soon();
        reuse
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// Serves `app` on `listener` (a socket you already hold) as a Pingora listening service
/// does, until `shutdown` turns true: each accepted connection gets its peer's address (what
/// the client identity and `X-Real-IP` are read from) and `TCP_NODELAY`, then is handed to
/// the app, reused while it keeps alive. Use it for [`EdgeApps::proxy`] and
/// [`EdgeApps::admin`].
///
/// At shutdown it stops accepting and calls the app's `cleanup`, as Pingora does: the
/// connections still open are served on (as long as the runtime runs; count them with
/// [`EdgeServices::open_connections`] to drain), each ending after its request in flight,
/// whose answer says `Connection: close`.
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
            _ = shutdown.wait_for(|stop| *stop) => break,
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
    // As a Pingora listening service does once its listeners stop: the proxy then answers
    // the requests still in flight with `Connection: close`.
    app.cleanup().await;
}

/// The apps of [`EdgeServices`], to serve on sockets of your own ([`EdgeServices::into_apps`]).
pub struct EdgeApps {
    /// The public proxy (behind the `[server] max_connections` cap).
    pub proxy: Arc<ConnectionLimit<HttpProxy<EdgeProxy>>>,
    /// The admin listener's app.
    pub admin: Arc<AdminApp>,
    /// What must run beside them until shutdown: MagicDNS resolution, deny-list watching
    /// and the telemetry shippers.
    pub background: Arc<EdgeBackground>,
}

/// What runs beside the listeners for as long as the server does: MagicDNS resolution of
/// the upstream and telemetry names, re-reading deny-list files that changed, pushing
/// telemetry to the homelab, writing the bans' state file, in a fleet, syncing with the
/// fleet's Redis, and (feature `tailscale-rs`) the userspace tailnet node.
pub struct EdgeBackground {
    resolver: Arc<MagicDnsResolver>,
    config: Arc<ArcSwap<RuntimeConfig>>,
    telemetry: Arc<TelemetryShippers>,
    #[cfg(feature = "tailscale-rs")]
    userspace: Arc<crate::tailnet::UserspaceTailnet>,
    fleet: Option<Arc<Fleet>>,
    bans: Arc<BanTable>,
}

#[async_trait]
impl BackgroundService for EdgeBackground {
    async fn start(&self, shutdown: ShutdownWatch) {
        // Telemetry keeps pushing after shutdown (what the draining requests log) until the
        // runtime stops; the rest is the embedder's final `TelemetryShippers::flush`.
        #[cfg(feature = "tailscale-rs")]
        let userspace = {
            self.userspace.start();
            let mut shutdown = shutdown.clone();
            async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
                self.userspace.stop();
            }
        };
        #[cfg(not(feature = "tailscale-rs"))]
        let userspace = async {};
        let fleet = async {
            if let Some(fleet) = &self.fleet {
                fleet.run(&self.config, shutdown.clone()).await;
            }
        };
        tokio::join!(
            self.resolver.run(shutdown.clone()),
            watch_deny_lists(&self.config, shutdown.clone()),
            save_bans(&self.bans, shutdown.clone()),
            self.telemetry.run(shutdown.clone()),
            userspace,
            fleet
        );
    }
}

/// How often the bans' state file is written when bans changed (and expired bans swept).
const BAN_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Writes the bans' state file within [`BAN_SAVE_INTERVAL`] of a change, and once more at
/// shutdown, so a restart (or a crash) loses at most that much.
async fn save_bans(bans: &Arc<BanTable>, mut shutdown: ShutdownWatch) {
    let mut tick = tokio::time::interval(BAN_SAVE_INTERVAL);
    let mut ticks = 0u32;
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.changed() => true,
        };
        ticks = ticks.wrapping_add(1);
        // Expired bans are swept (and the gauge updated) every minute even without changes.
        if stopping || bans.is_dirty() || ticks.is_multiple_of(60) {
            let table = bans.clone();
            // File writes block: keep them off the runtime's workers.
            match tokio::task::spawn_blocking(move || table.save()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "cannot write the bans' state file"),
                Err(e) => tracing::warn!(error = %e, "bans' state file write failed"),
            }
        }
        if stopping {
            return;
        }
    }
}

/// Re-reads the deny-list and htpasswd files of the running config when they change, until
/// shutdown.
/// The lists of a config swapped out by a reload are no longer polled.
async fn watch_deny_lists(config: &ArcSwap<RuntimeConfig>, mut shutdown: ShutdownWatch) {
    let mut tick = tokio::time::interval(DenyList::POLL_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let config = config.load();
        let lists = config.deny_lists.clone();
        let htpasswd_files = config.htpasswd_files.clone();
        if lists.is_empty() && htpasswd_files.is_empty() {
            continue;
        }
        // File reads block: keep them off the runtime's workers.
        let refreshed = tokio::task::spawn_blocking(move || {
            lists.iter().for_each(|list| {
                list.refresh();
            });
            htpasswd_files.iter().for_each(|file| {
                file.refresh();
            });
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
        work_stealing: settings.work_stealing,
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn conf(server: &str) -> ServerConf {
        let text = format!("[server]\n{server}");
        let config = crate::config::load_str(&text, None, Path::new(".")).expect("valid config");
        server_conf(config.server())
    }

    /// A connection's own future lives as long as the connection, also while it waits for a
    /// request: it must not hold a request's future (several KiB, made when a request
    /// begins), or every idle keep-alive connection costs that much.
    #[tokio::test]
    async fn a_connection_waiting_for_a_request_holds_no_request_future() {
        let text = "[sites.docs]\nhosts = [\"docs.example.com\"]\n[[sites.docs.locations]]\n\
                    match = \"/\"\nreturn = { body = \"hi\" }\n";
        let config = crate::config::load_str(text, None, Path::new(".")).expect("valid config");
        let apps = EdgeServices::new(&Arc::new(server_conf(config.server())), config).into_apps();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let _client = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let connection = apps
            .proxy
            .inner
            .process_new(Box::new(Stream::from(accepted)), &shutdown);
        let size = std::mem::size_of_val(&*connection);
        assert!(
            size <= 1024,
            "a waiting connection's future is {size} bytes"
        );
    }

    #[test]
    fn threads_keep_their_connections_unless_work_stealing_is_on() {
        assert!(!conf("threads = 2\n").work_stealing);
        assert!(conf("threads = 2\nwork_stealing = true\n").work_stealing);
        assert_eq!(conf("threads = 2\n").threads, 2);
    }
}
