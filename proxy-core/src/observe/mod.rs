//! Observability: Prometheus metrics ([`Metrics`]), the JSON access log ([`AccessLog`]),
//! request ids, secret redaction, and tailscaled readiness ([`LocalApiClient`]).
//!
//! [`Observability`] owns all of it; [`crate::EdgeProxy`] calls
//! `Observability::finish_request` from its `logging` phase, once per request. Other
//! modules record their own facts through [`Metrics`] (cache lookups, rate-limit decisions,
//! deny-list hits) and through the request's record (cache status, rate-limit
//! outcome), which the log line and metrics pick up at the end.

mod access_log;
mod histogram;
mod json;
mod log_budget;
mod metrics;
mod record;
mod redact;
mod request_id;
pub mod tailscaled;

pub use access_log::{AccessLog, AccessLogEntry, AccessLogTarget, LogFeed};
pub(crate) use log_budget::LogBudget;
pub use metrics::{
    ClientClose, DnsLookupResult, FleetEvent, InFlight, Metrics, UpstreamErrorKind, METRIC_NAMES,
    PREFIX,
};
pub(crate) use record::{RequestFacts, RequestRecord};
pub use redact::Redactor;
pub(crate) use request_id::{request_id_for, REQUEST_ID_HEADER, REQUEST_ID_NAME};
pub use tailscaled::{LocalApiClient, LocalApiError};

use std::sync::Arc;

/// The site label of requests that matched no site: keeps the label's values bounded by the
/// config whatever Host headers clients send.
pub const UNKNOWN_SITE: &str = "unknown";

/// The method label: standard methods as themselves, anything else `other`.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The cache_status label: nginx's words as themselves, anything else `other`.
pub fn cache_status_label(status: &str) -> &'static str {
    CACHE_STATUS_LABELS[cache_status_index(status)]
}

/// The values of the cache_status label, `other` last.
pub(crate) const CACHE_STATUS_LABELS: [&str; 8] = [
    "HIT",
    "MISS",
    "EXPIRED",
    "STALE",
    "UPDATING",
    "REVALIDATED",
    "BYPASS",
    "other",
];

/// Where [`cache_status_label`]'s value for `status` is in [`CACHE_STATUS_LABELS`].
pub(crate) fn cache_status_index(status: &str) -> usize {
    let known = &CACHE_STATUS_LABELS[..CACHE_STATUS_LABELS.len() - 1];
    known
        .iter()
        .position(|k| k.eq_ignore_ascii_case(status))
        .unwrap_or(known.len())
}

/// Metrics, access log and redaction for one proxy.
#[derive(Debug)]
pub struct Observability {
    metrics: Arc<Metrics>,
    access_log: Option<AccessLog>,
    redactor: Redactor,
}

/// `[access_log]`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSettings {
    /// Where lines go; `None` turns the access log off.
    pub target: Option<AccessLogTarget>,
    /// Lines queued before new ones are dropped.
    pub queue_size: usize,
    /// Redaction of logged URIs.
    pub redactor: Redactor,
}

impl Observability {
    /// Metrics (recorded when `metrics` is true) and, when `access_log` has a target, an
    /// access log writer.
    pub fn start(metrics: bool, access_log: &AccessLogSettings) -> std::io::Result<Self> {
        Self::with_metrics(Arc::new(metrics_for(metrics)), access_log)
    }

    /// Like [`Observability::start`], but with `ship_lines` the access log's lines are
    /// formatted even when it has no target, for a shipper attached with
    /// [`AccessLog::ship_to`] (`[telemetry.loki]` with `[access_log] enabled = false`).
    pub fn start_shipping(
        metrics: bool,
        access_log: &AccessLogSettings,
        ship_lines: bool,
    ) -> std::io::Result<Self> {
        let metrics = Arc::new(metrics_for(metrics));
        if !ship_lines || access_log.target.is_some() {
            return Self::with_metrics(metrics, access_log);
        }
        let log = AccessLog::start_without_target(access_log.queue_size, metrics.clone())?;
        Ok(Self {
            metrics,
            access_log: Some(log),
            redactor: access_log.redactor.clone(),
        })
    }

    /// Metrics and no access log: the fallback when the log cannot be opened.
    pub fn without_access_log(metrics: bool, access_log: &AccessLogSettings) -> Self {
        Self {
            metrics: Arc::new(metrics_for(metrics)),
            access_log: None,
            redactor: access_log.redactor.clone(),
        }
    }

    fn with_metrics(metrics: Arc<Metrics>, settings: &AccessLogSettings) -> std::io::Result<Self> {
        let access_log = match &settings.target {
            Some(target) => Some(AccessLog::start(
                target.clone(),
                settings.queue_size,
                metrics.clone(),
            )?),
            None => None,
        };
        Ok(Self {
            metrics,
            access_log,
            redactor: settings.redactor.clone(),
        })
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The access log, when enabled.
    pub fn access_log(&self) -> Option<&AccessLog> {
        self.access_log.as_ref()
    }

    /// The redactor applied to logged URIs.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }
}

/// Metrics, unless `[admin] metrics = false`.
fn metrics_for(enabled: bool) -> Metrics {
    match enabled {
        true => Metrics::new(),
        false => Metrics::disabled(),
    }
}
