//! [`UserspaceTailnet`]: owns the tailnet node of the `tailscale-rs` transport, off the
//! request path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

use super::connector::TailnetConnector;
use super::dial::{TailnetDialer, TailnetState};
use super::node::TailscaleNode;
use super::TailnetSettings;
use crate::admin::ReadinessCheck;
use crate::upstream::{AddrSlot, Upstream};

/// How often peer names are looked up again (the node's own peer table answers: cheap).
const REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// Longest wait for one answer of the node (it waits on the coordination server while it
/// has not heard from it).
const QUESTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the node to start.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// First and longest delay between attempts to start the node.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How often [`UserspaceTailnet::wait_until_ready`] looks.
const WAIT_POLL: Duration = Duration::from_millis(50);

/// Where the node is.
#[derive(Debug, Clone)]
enum Status {
    NotStarted,
    /// Starting; the last attempt's error, if one failed.
    Joining(Option<String>),
    /// Started; what it said of itself last.
    Joined(TailnetState),
}

/// What the upstreams of the running config need: their peer names (and the address slot
/// each fills) and their connectors (which need the dialer).
#[derive(Default)]
struct Tracked {
    names: HashMap<String, Arc<AddrSlot>>,
    connectors: Vec<Arc<TailnetConnector>>,
}

/// The thread the node runs on, and how to stop it.
struct Runner {
    stop: watch::Sender<bool>,
}

/// The userspace tailnet node of the `tailscale-rs` transport, and the background work
/// around it: joining the tailnet (retrying while the coordination server cannot be
/// reached), handing the node to the upstreams' connectors, and resolving their peer names
/// through the node into the address slots the request path reads, as
/// [`crate::MagicDnsResolver`] does through MagicDNS for kernel upstreams.
///
/// The node runs on a thread and runtime of its own, so that it can be started (and waited
/// for, see [`UserspaceTailnet::wait_until_ready`]) before the server's runtimes exist,
/// and so it outlives any one of them.
pub struct UserspaceTailnet {
    settings: Option<TailnetSettings>,
    dialer: OnceLock<Arc<dyn TailnetDialer>>,
    tracked: Mutex<Tracked>,
    status: Mutex<Status>,
    wake: Notify,
    runner: Mutex<Option<Runner>>,
}

impl std::fmt::Debug for UserspaceTailnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserspaceTailnet")
            .field("settings", &self.settings)
            .field("status", &*lock(&self.status))
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl UserspaceTailnet {
    /// The service for `[tailnet]` (`None`: no node unless one is handed over with
    /// [`UserspaceTailnet::use_dialer`]).
    pub fn new(settings: Option<TailnetSettings>) -> Self {
        Self {
            settings,
            dialer: OnceLock::new(),
            tracked: Mutex::new(Tracked::default()),
            status: Mutex::new(Status::NotStarted),
            wake: Notify::new(),
            runner: Mutex::new(None),
        }
    }

    /// Dials through `dialer` instead of joining with tailscale-rs (an embedder's own node,
    /// or an in-memory tailnet in tests). Call before [`UserspaceTailnet::start`]; returns
    /// false if a node is already in use.
    pub fn use_dialer(&self, dialer: Arc<dyn TailnetDialer>) -> bool {
        let set = self.dialer.set(dialer).is_ok();
        if set {
            self.install_all();
        }
        set
    }

    /// Whether there is a node to run: `[tailnet]` is configured or a dialer was handed over.
    pub fn is_configured(&self) -> bool {
        self.settings.is_some() || self.dialer.get().is_some()
    }

    /// Starts tracking the `tailscale-rs` upstreams of a compiled config, replacing what was
    /// tracked. A peer name already resolved hands its addresses to the new config's slot,
    /// so a reload never makes a reachable upstream unavailable.
    pub fn adopt<'c>(&self, upstreams: impl IntoIterator<Item = &'c Arc<Upstream>>) {
        let mut tracked = lock(&self.tracked);
        let mut next = Tracked::default();
        for upstream in upstreams {
            let Some(connector) = upstream.tailnet_connector() else {
                continue;
            };
            next.connectors.push(connector.clone());
            if !upstream.needs_resolution() {
                continue;
            }
            let name = upstream.host.clone();
            if let Some(previous) = tracked.names.get(&name).and_then(|s| s.current()) {
                if upstream.addrs.current().is_none() {
                    upstream.addrs.store(previous.as_ref().clone());
                }
            }
            next.names.insert(name, upstream.addrs.clone());
        }
        *tracked = next;
        drop(tracked);
        self.install_all();
        self.wake.notify_one();
    }

    /// Hands the node to every tracked connector, once there is a node.
    fn install_all(&self) {
        let Some(dialer) = self.dialer.get() else {
            return;
        };
        for connector in &lock(&self.tracked).connectors {
            connector.install(dialer);
        }
    }

    /// Starts the node and its background work on a thread of its own, if there is a node
    /// to run and it is not running yet.
    pub fn start(self: &Arc<Self>) {
        if !self.is_configured() {
            return;
        }
        let mut runner = lock(&self.runner);
        if runner.is_some() {
            return;
        }
        let (stop, stopped) = watch::channel(false);
        let service = self.clone();
        let thread = std::thread::Builder::new()
            .name("tailnet".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("tailnet-worker")
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => runtime.block_on(service.run(stopped)),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the userspace tailnet's runtime");
                        *lock(&service.status) =
                            Status::Joining(Some(format!("cannot start its runtime: {e}")));
                    }
                }
            });
        match thread {
            Ok(_) => *runner = Some(Runner { stop }),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the userspace tailnet's thread");
                *lock(&self.status) =
                    Status::Joining(Some(format!("cannot start its thread: {e}")));
            }
        }
    }

    /// Stops the background work and the node (their thread ends on its own).
    pub fn stop(&self) {
        if let Some(runner) = lock(&self.runner).take() {
            let _ = runner.stop.send(true);
        }
    }

    /// Blocks until the node is authorized and every tracked peer name has resolved, at most
    /// `limit`; starts the node first if needed. Not for async code: it sleeps the thread.
    /// On timeout, returns why it is not ready.
    pub fn wait_until_ready(self: &Arc<Self>, limit: Duration) -> Result<(), Vec<String>> {
        self.start();
        let deadline = Instant::now() + limit;
        loop {
            let reasons = self.not_ready_reasons();
            if reasons.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(reasons);
            }
            std::thread::sleep(WAIT_POLL);
        }
    }

    /// Why the userspace tailnet is not ready, if it is not: the node is not started, not
    /// joined or not authorized, or a tracked peer name has not resolved. Reads what the
    /// background work found last; never waits.
    pub fn not_ready_reasons(&self) -> Vec<String> {
        let unresolved = self.unresolved();
        if !self.is_configured() {
            // Upstreams of this transport came with a reload; `[tailnet]` takes a restart.
            return unresolved
                .into_iter()
                .map(|name| {
                    format!("upstream name `{name}` needs the userspace tailnet, which is not running: `[tailnet]` takes a restart")
                })
                .collect();
        }
        let mut reasons = Vec::new();
        match &*lock(&self.status) {
            Status::NotStarted => reasons.push("userspace tailnet: not started".to_string()),
            Status::Joining(None) => reasons.push("userspace tailnet: joining".to_string()),
            Status::Joining(Some(e)) => reasons.push(format!("userspace tailnet: {e}")),
            Status::Joined(TailnetState::NotReady(why)) => {
                reasons.push(format!("userspace tailnet: {why}"))
            }
            Status::Joined(TailnetState::Ready) => {}
        }
        reasons.extend(unresolved.into_iter().map(|name| {
            format!("upstream name `{name}` is not a known peer of the userspace tailnet")
        }));
        reasons
    }

    /// Tracked peer names that have never resolved, sorted.
    fn unresolved(&self) -> Vec<String> {
        let tracked = lock(&self.tracked);
        let mut names: Vec<String> = tracked
            .names
            .iter()
            .filter(|(_, slot)| slot.current().is_none())
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let dialer = match self.dialer.get() {
            Some(dialer) => dialer.clone(),
            None => match self.join(&mut stop).await {
                Some(dialer) => dialer,
                None => return,
            },
        };
        self.install_all();
        loop {
            self.refresh(dialer.as_ref()).await;
            tokio::select! {
                _ = tokio::time::sleep(REFRESH_INTERVAL) => {}
                _ = self.wake.notified() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// Creates the tailscale-rs node, retrying with backoff; `None` once stopped.
    async fn join(&self, stop: &mut watch::Receiver<bool>) -> Option<Arc<dyn TailnetDialer>> {
        let settings = self.settings.as_ref()?;
        *lock(&self.status) = Status::Joining(None);
        let mut delay = RETRY_MIN;
        loop {
            let attempt = tokio::time::timeout(JOIN_TIMEOUT, TailscaleNode::join(settings));
            let error = tokio::select! {
                result = attempt => match result {
                    Ok(Ok(node)) => {
                        let node: Arc<dyn TailnetDialer> = Arc::new(node);
                        // A dialer handed over meanwhile wins; this node is dropped.
                        let _ = self.dialer.set(node);
                        tracing::info!("userspace tailnet node started");
                        return self.dialer.get().cloned();
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("the node did not start within {JOIN_TIMEOUT:?}"),
                },
                _ = stop.wait_for(|stop| *stop) => return None,
            };
            tracing::warn!(error = %error, retry_in = ?delay, "userspace tailnet node did not start");
            *lock(&self.status) = Status::Joining(Some(error));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|stop| *stop) => return None,
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    /// Asks the node how it is, then (once it is authorized) looks every tracked peer name
    /// up in its peer table. A failed lookup keeps the last good answer.
    async fn refresh(&self, dialer: &dyn TailnetDialer) {
        let state = tokio::time::timeout(QUESTION_TIMEOUT, dialer.state())
            .await
            .unwrap_or_else(|_| {
                TailnetState::NotReady("the coordination server has not answered yet".into())
            });
        let ready = state == TailnetState::Ready;
        *lock(&self.status) = Status::Joined(state);
        if !ready {
            return;
        }
        let names: Vec<(String, Arc<AddrSlot>)> = lock(&self.tracked)
            .names
            .iter()
            .map(|(name, slot)| (name.clone(), slot.clone()))
            .collect();
        for (name, slot) in names {
            let error =
                match tokio::time::timeout(QUESTION_TIMEOUT, dialer.peer_addresses(&name)).await {
                    Ok(Ok(addrs)) if !addrs.is_empty() => {
                        if slot.current().as_deref() != Some(&addrs) {
                            tracing::info!(name, ?addrs, "userspace tailnet peer resolved");
                        }
                        slot.store(addrs);
                        continue;
                    }
                    Ok(Ok(_)) => "no such peer on the tailnet".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "the node did not answer".to_string(),
                };
            if slot.current().is_some() {
                slot.mark_stale();
            }
            tracing::warn!(name, error, "userspace tailnet peer lookup failed");
        }
    }
}

impl ReadinessCheck for UserspaceTailnet {
    fn not_ready_reasons(&self) -> Vec<String> {
        UserspaceTailnet::not_ready_reasons(self)
    }
}
