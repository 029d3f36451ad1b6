//! Shared harness for proxy-core's integration tests: runs [`EdgeServices`] in this process,
//! on listeners the harness binds and holds, against an in-process fake tailnet, over real
//! loopback sockets.
//!
//! Each [`Edge`] has its own runtime thread, its own temporary directory (for the files a
//! config names: error pages, CA files, deny lists, the access log) and its own capture of
//! the log lines the proxy writes (see [`Edge::logs`]).

#![allow(dead_code)] // each test binary uses a different part of the harness

pub use testkit::*;

use fake_tailnet::FakeTailnet;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use proxy_core::cache::EdgeCache;
use proxy_core::config::load_str;
use proxy_core::observe::Observability;
use proxy_core::telemetry::TelemetryShippers;
use proxy_core::{serve_listener, server_conf, ConfigReloader, EdgeServices, RuntimeConfig};
use std::cell::RefCell;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long start-up waits for the first lookups of upstream names (as `proxy-app run`).
const STARTUP_DNS_WAIT: Duration = Duration::from_secs(5);

/// The `[server]`, `[admin]` and `[resolver]` sections every test config starts with. The
/// listen addresses are placeholders: [`Edge`] serves listeners it binds itself.
pub fn base_config(tailnet: &FakeTailnet) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
threads = 1
grace_period = "3s"
shutdown_timeout = "1s"
unknown_host = 421

[admin]
listen = "127.0.0.1:0"

[resolver]
nameservers = ["{dns}"]
min_ttl = "1s"
max_ttl = "2s"
timeout = "500ms"
retry_interval = "300ms"
"#,
        dns = tailnet.dns_addr(),
    )
}

/// An edge proxy running in this process: the public and admin apps of [`EdgeServices`]
/// served on loopback listeners bound (and held) by the harness, and its background work.
/// Stopped on drop.
pub struct Edge {
    /// Public listener.
    pub addr: SocketAddr,
    /// Admin listener (metrics, health, readiness, admin actions).
    pub admin_addr: SocketAddr,
    handles: Handles,
    logs: LogCapture,
    shutdown: watch::Sender<bool>,
    /// How long the connections open at shutdown go on being served, in milliseconds (none
    /// unless [`Edge::begin_shutdown`] says).
    drain_ms: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
    /// Dropped last: the files of a running proxy stay until it has stopped.
    dir: tempfile::TempDir,
}

/// What the test keeps of [`EdgeServices`] once its apps are serving.
struct Handles {
    cache: &'static EdgeCache,
    reloader: ConfigReloader,
    observability: Arc<Observability>,
    telemetry: Arc<TelemetryShippers>,
    grace_period: Duration,
}

impl Edge {
    /// Compiles `config` (relative paths in it name files in [`Edge::dir`]) and starts the
    /// proxy; returns once `/healthz` answered on the public listener.
    pub fn start(config: &str) -> Edge {
        Self::start_with_files(config, &[])
    }

    /// Like [`Edge::start`], with `files` (name, content) written to [`Edge::dir`] first.
    pub fn start_with_files(config: &str, files: &[(&str, &[u8])]) -> Edge {
        Self::start_with_setup(config, files, |_| {})
    }

    /// Like [`Edge::start_with_files`], with `setup` run on the services once built, before
    /// they serve (e.g. to hand them a dialer, or to wait for something).
    pub fn start_with_setup(
        config: &str,
        files: &[(&str, &[u8])],
        setup: impl FnOnce(&mut EdgeServices) + Send + 'static,
    ) -> Edge {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, content) in files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("create test dir");
            }
            std::fs::write(path, content).expect("write test file");
        }
        let logs = LogCapture::default();
        let dispatch = logs.dispatch();
        // Compiling logs too (e.g. deny-list lines skipped): captured like the rest.
        let config =
            tracing::dispatcher::with_default(&dispatch, || load_str(config, None, dir.path()))
                .unwrap_or_else(|errors| panic!("invalid test config:\n{errors}"));
        let public = TcpListener::bind("127.0.0.1:0").expect("bind the public listener");
        let admin = TcpListener::bind("127.0.0.1:0").expect("bind the admin listener");
        let addr = public.local_addr().expect("public listener address");
        let admin_addr = admin.local_addr().expect("admin listener address");
        let (shutdown, shutdown_rx) = watch::channel(false);
        let drain_ms = Arc::new(AtomicU64::new(0));
        let drain = drain_ms.clone();
        let (ready_tx, ready_rx) = mpsc::channel();
        // Built on a thread of its own: priming the resolver runs a runtime of its own, which
        // cannot start inside the test's.
        let thread = std::thread::Builder::new()
            .name("edge".into())
            .spawn(move || {
                serve(
                    config,
                    [public, admin],
                    dispatch,
                    shutdown_rx,
                    drain,
                    ready_tx,
                    setup,
                );
            })
            .expect("spawn the edge thread");
        let Ok(handles) = ready_rx.recv() else {
            let _ = thread.join();
            panic!("the edge thread exited before serving:\n{}", logs.text());
        };
        let edge = Edge {
            addr,
            admin_addr,
            handles,
            logs,
            shutdown,
            drain_ms,
            thread: Some(thread),
            dir,
        };
        edge.assert_healthy();
        edge
    }

    /// One `/healthz` on the public listener, as `proxy-app`'s harness waits for. The
    /// listener was bound before the proxy started, so the first answer must be the right one.
    fn assert_healthy(&self) {
        let reply = raw_request(
            self.addr,
            "GET /healthz HTTP/1.1\r\nHost: ready.check\r\nConnection: close\r\n\r\n",
        );
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "the edge did not answer /healthz: {reply:?}\n{}",
            self.logs()
        );
    }

    /// Starts a graceful shutdown, as `proxy-app` does on SIGTERM: the listeners stop
    /// accepting, and the client connections open go on being served until none is left or
    /// `drain` has passed.
    pub fn begin_shutdown(&self, drain: Duration) {
        let drain_ms = u64::try_from(drain.as_millis()).unwrap_or(u64::MAX);
        self.drain_ms.store(drain_ms, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
    }

    /// The directory relative paths of the config name (for files the test edits while the
    /// proxy runs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the proxy logged so far at `info` and above (as `proxy-app run` writes to stderr),
    /// from the threads that build and run it.
    pub fn logs(&self) -> String {
        self.logs.text()
    }

    /// Whether the proxy still serves: its listeners and background work have not stopped.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// The response cache ([`EdgeServices::cache`]).
    pub fn cache(&self) -> &'static EdgeCache {
        self.handles.cache
    }

    /// What swaps a new config in ([`EdgeServices::reloader`]).
    pub fn reloader(&self) -> &ConfigReloader {
        &self.handles.reloader
    }

    /// The telemetry shippers ([`EdgeServices::telemetry`]).
    pub fn telemetry(&self) -> &Arc<TelemetryShippers> {
        &self.handles.telemetry
    }

    /// Metrics and access log ([`EdgeServices::observability`]).
    pub fn observability(&self) -> &Arc<Observability> {
        &self.handles.observability
    }

    /// Peak resident memory (VmHWM) of this test process, which runs the proxy, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Served for Edge {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // As `proxy-app run` does once its server has stopped.
        if let Some(log) = self.handles.observability.access_log() {
            log.finish();
        }
        self.handles.telemetry.flush(self.handles.grace_period);
    }
}

/// The edge thread: builds the services, reports their handles on `ready`, serves
/// `[public, admin]` until `shutdown`, lets the client connections still open finish for up to
/// `drain_ms`, then stops the runtime. Every thread of it logs to `logs`.
fn serve(
    config: RuntimeConfig,
    [public, admin]: [TcpListener; 2],
    logs: tracing::Dispatch,
    shutdown: ShutdownWatch,
    drain_ms: Arc<AtomicU64>,
    ready: mpsc::Sender<Handles>,
    setup: impl FnOnce(&mut EdgeServices),
) {
    let _logging = tracing::dispatcher::set_default(&logs);
    let config_grace_period = config.server().grace_period();
    let mut services = EdgeServices::new(&Arc::new(server_conf(config.server())), config);
    setup(&mut services);
    services.prime_resolver(STARTUP_DNS_WAIT);
    let handles = Handles {
        cache: services.cache(),
        reloader: services.reloader(),
        observability: services.observability().clone(),
        telemetry: services.telemetry().clone(),
        grace_period: config_grace_period,
    };
    let open_connections = services.open_connections();
    let apps = services.into_apps();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("edge-worker")
        .enable_all()
        .on_thread_start(move || log_on_this_thread(Some(&logs)))
        .on_thread_stop(|| log_on_this_thread(None))
        .build()
        .expect("build the edge runtime");
    runtime.block_on(async move {
        let mut tasks = tokio::task::JoinSet::new();
        let background = apps.background.clone();
        let watch = shutdown.clone();
        tasks.spawn(async move { background.start(watch).await });
        tasks.spawn(serve_listener(public, apps.proxy.clone(), shutdown.clone()));
        tasks.spawn(serve_listener(admin, apps.admin.clone(), shutdown.clone()));
        if ready.send(handles).is_err() {
            return;
        }
        // Until shutdown, or until any of them stops early (a panic ends the thread, which
        // `Edge::is_running` reports).
        let mut shutdown = shutdown;
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => {}
            ended = tasks.join_next() => {
                if let Some(Err(e)) = ended {
                    if e.is_panic() {
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
            }
        }
        let drain = Duration::from_millis(drain_ms.load(Ordering::Relaxed));
        let deadline = Instant::now() + drain;
        while open_connections.count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
}

thread_local! {
    /// The log capture of the edge whose runtime owns this thread.
    static LOG_SCOPE: RefCell<Option<tracing::dispatcher::DefaultGuard>> =
        const { RefCell::new(None) };
}

/// Routes this thread's log events to `dispatch` (`None`: stop).
fn log_on_this_thread(dispatch: Option<&tracing::Dispatch>) {
    let guard = dispatch.map(tracing::dispatcher::set_default);
    LOG_SCOPE.with(|scope| *scope.borrow_mut() = guard);
}

/// The log lines of one edge, formatted as `proxy-app` formats them (without colours).
#[derive(Clone, Default)]
struct LogCapture {
    text: Arc<Mutex<Vec<u8>>>,
}

impl LogCapture {
    fn dispatch(&self) -> tracing::Dispatch {
        let writer = LogWriter(self.text.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::Dispatch::new(subscriber)
    }

    fn text(&self) -> String {
        let text = self.text.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&text).into_owned()
    }
}

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut text = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
