//! Telemetry that leaves the machine: the series `/metrics` serves, pushed to Prometheus with
//! its remote-write protocol (the `prometheus` sink, `[telemetry.prometheus]`), and the
//! access-log lines, pushed to Loki (the `loki` sink, `[telemetry.loki]`). This replaces the
//! Grafana Alloy agent that ran beside nginx.
//!
//! Everything here runs off the request path. Requests only append their log line to the
//! access log's buffer, as they always did; the access log's writer thread hands the lines
//! on, and [`TelemetryShippers`] push them (and read the metrics every interval) from the
//! background. A push that fails is retried with backoff while the data waits in a bounded
//! buffer; when it is full the oldest data is dropped and counted
//! (`edge_telemetry_dropped_total`). Receivers are tailnet names kept resolved by the same
//! [`MagicDnsResolver`] as upstreams: shipping never looks a name up itself.
//!
//! Not for: scraping (that is `/metrics` on the admin listener) or tracing.

mod backlog;
mod client;
mod loki;
mod proto;
mod remote_write;

use std::sync::Arc;
use std::time::Duration;

use pingora::server::ShutdownWatch;

use crate::observe::{LogFeed, Metrics};
use crate::upstream::MagicDnsResolver;
pub(crate) use client::{Auth, Endpoint};
use loki::LokiShipper;
use remote_write::RemoteWriteShipper;

/// The sink label of the telemetry metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sink {
    /// Prometheus remote write (unit: samples).
    Prometheus,
    /// Loki push (unit: lines).
    Loki,
}

impl Sink {
    /// The `sink` label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Prometheus => "prometheus",
            Self::Loki => "loki",
        }
    }
}

/// `[telemetry]`, compiled: what is shipped where. Bound when the process starts (a reload
/// keeps the running settings).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TelemetrySettings {
    /// Labels on everything shipped, sorted by name.
    pub(crate) labels: Vec<(String, String)>,
    /// First wait before retrying a failed push.
    pub(crate) min_backoff: Duration,
    /// Longest wait between retries.
    pub(crate) max_backoff: Duration,
    pub(crate) prometheus: Option<RemoteWriteSettings>,
    pub(crate) loki: Option<LokiSettings>,
}

impl TelemetrySettings {
    /// The labels added to everything shipped.
    pub fn labels(&self) -> &[(String, String)] {
        &self.labels
    }

    /// Whether anything is shipped at all.
    pub fn is_enabled(&self) -> bool {
        self.prometheus.is_some() || self.loki.is_some()
    }

    /// Whether access-log lines are shipped to Loki (so they are formatted even when the
    /// file/stdout access log is off).
    pub fn ships_log_lines(&self) -> bool {
        self.loki.is_some()
    }

    /// The receivers' host names (tailnet names the resolver must keep resolved; IP
    /// literals are left out).
    pub fn endpoint_names(&self) -> impl Iterator<Item = &str> {
        let prometheus = self.prometheus.as_ref().map(|p| &p.endpoint);
        let loki = self.loki.as_ref().map(|l| &l.endpoint);
        prometheus
            .into_iter()
            .chain(loki)
            .filter(|e| e.needs_resolution())
            .map(|e| e.host())
    }
}

/// `[telemetry.prometheus]`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteWriteSettings {
    pub(crate) endpoint: Endpoint,
    pub(crate) interval: Duration,
    /// Samples kept while the receiver is unreachable.
    pub(crate) buffer: usize,
}

/// `[telemetry.loki]`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LokiSettings {
    pub(crate) endpoint: Endpoint,
    /// The stream's labels (`[telemetry] labels` and the sink's own), sorted by name.
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) batch_size: usize,
    pub(crate) max_wait: Duration,
    /// Lines kept while Loki is unreachable.
    pub(crate) buffer: usize,
}

/// Retry timing shared by the sinks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(settings: &TelemetrySettings) -> Self {
        Self {
            min: settings.min_backoff,
            max: settings.max_backoff.max(settings.min_backoff),
            current: settings.min_backoff,
        }
    }

    /// The wait before the next retry (doubling up to the maximum).
    fn next_wait(&mut self) -> Duration {
        let wait = self.current;
        self.current = (self.current * 2).min(self.max);
        wait
    }

    fn reset(&mut self) {
        self.current = self.min;
    }
}

/// The shippers of one process: started by [`crate::EdgeServices`] as background work,
/// flushed by the embedding app once its server has stopped ([`TelemetryShippers::flush`]).
#[derive(Debug, Default)]
pub struct TelemetryShippers {
    prometheus: Option<RemoteWriteShipper>,
    loki: Option<Arc<LokiShipper>>,
}

impl TelemetryShippers {
    /// Shippers for `settings`, pushing the series of `metrics` and counting into them;
    /// receivers' names are read from `resolver`. Nothing starts until
    /// [`TelemetryShippers::run`].
    pub fn new(
        settings: &TelemetrySettings,
        metrics: &Arc<Metrics>,
        resolver: &Arc<MagicDnsResolver>,
    ) -> Self {
        let backoff = Backoff::new(settings);
        let prometheus = settings
            .prometheus
            .as_ref()
            .map(|s| RemoteWriteShipper::new(s, &settings.labels, backoff, metrics, resolver));
        let loki = settings
            .loki
            .as_ref()
            .map(|s| Arc::new(LokiShipper::new(s, backoff, metrics, resolver)));
        Self { prometheus, loki }
    }

    /// Where the access log hands its lines, when lines are shipped to Loki.
    pub fn log_feed(&self) -> Option<Arc<dyn LogFeed>> {
        self.loki.clone().map(|loki| loki as Arc<dyn LogFeed>)
    }

    /// Whether anything is shipped.
    pub fn is_enabled(&self) -> bool {
        self.prometheus.is_some() || self.loki.is_some()
    }

    /// Pushes until the runtime running it stops. When `shutdown` turns true it pushes
    /// everything buffered at once (a final metrics snapshot included), then goes on
    /// shipping what the draining requests still log until the runtime is shut down.
    pub async fn run(&self, shutdown: ShutdownWatch) {
        let prometheus = async {
            if let Some(shipper) = &self.prometheus {
                shipper.run(shutdown.clone()).await;
            }
        };
        let loki = async {
            if let Some(shipper) = &self.loki {
                shipper.run(shutdown.clone()).await;
            }
        };
        tokio::join!(prometheus, loki);
    }

    /// Pushes what is still buffered (and one last metrics snapshot), oldest first, each
    /// push bounded by its sink's timeout, without retrying: a sink stops at its first
    /// failure, and everything stops after `limit`. Blocks; call it once the server has
    /// stopped and the access log has been finished ([`crate::observe::AccessLog::finish`]).
    pub fn flush(&self, limit: Duration) {
        if !self.is_enabled() {
            return;
        }
        // A runtime of its own, on a thread of its own: callable from anywhere, even from
        // inside another runtime (a test's, an embedder's drop).
        std::thread::scope(|scope| {
            let flushing = std::thread::Builder::new()
                .name("telemetry-flush".into())
                .spawn_scoped(scope, || self.flush_here(limit));
            if let Err(e) = flushing.map(|thread| thread.join()) {
                tracing::error!(error = %e, "cannot flush telemetry");
            }
        });
    }

    fn flush_here(&self, limit: Duration) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let runtime = match runtime {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, "cannot flush telemetry");
                return;
            }
        };
        runtime.block_on(async {
            let prometheus = async {
                if let Some(shipper) = &self.prometheus {
                    shipper.flush().await;
                }
            };
            let loki = async {
                if let Some(shipper) = &self.loki {
                    shipper.flush().await;
                }
            };
            let both = async { tokio::join!(prometheus, loki) };
            if tokio::time::timeout(limit, both).await.is_err() {
                tracing::warn!(?limit, "telemetry flush cut short; what was left is lost");
            }
        });
    }
}

/// Whether the process is shutting down (or whoever could tell us is gone).
fn shutting_down(shutdown: &ShutdownWatch) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Sleeps `wait`, or less if `shutdown` turns true meanwhile (then returns true).
async fn sleep_or_shutdown(wait: Duration, shutdown: &mut ShutdownWatch) -> bool {
    if shutting_down(shutdown) {
        tokio::time::sleep(wait).await;
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = shutdown.wait_for(|stop| *stop) => true,
    }
}
