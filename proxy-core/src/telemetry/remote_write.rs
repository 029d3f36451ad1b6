//! Prometheus remote write: every interval the metrics are rendered exactly as `/metrics`
//! serves them, converted into one `WriteRequest` (histograms as their `_bucket`, `_sum`
//! and `_count` series, as a scrape stores them), compressed, and queued; a pusher sends
//! the queued snapshots oldest first (Prometheus refuses samples older than a series'
//! newest), retrying with backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;

use super::backlog::{Backlog, Batch, Weighed};
use super::client::{PushClient, PushError};
use super::proto::{snappy_protobuf, Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
use super::{shutting_down, sleep_or_shutdown, Backoff, RemoteWriteSettings, Sink};
use crate::observe::Metrics;
use crate::upstream::MagicDnsResolver;

const SINK: Sink = Sink::Prometheus;

/// The headers remote write 1.0 requires.
const HEADERS: &[(&str, &str)] = &[
    ("content-type", "application/x-protobuf"),
    ("content-encoding", "snappy"),
    ("x-prometheus-remote-write-version", "0.1.0"),
];

/// A series' labels as parsed: (name, value) pairs.
type Labels = Vec<(String, String)>;

/// One interval's metrics, ready to send.
#[derive(Debug)]
struct Snapshot {
    samples: usize,
    body: Bytes,
}

impl Weighed for Snapshot {
    fn weight(&self) -> usize {
        self.samples
    }
    fn bytes(&self) -> usize {
        self.body.len()
    }
}

/// Pushes the metrics to one remote-write receiver.
#[derive(Debug)]
pub(crate) struct RemoteWriteShipper {
    settings: RemoteWriteSettings,
    labels: Vec<(String, String)>,
    backoff: Backoff,
    metrics: Arc<Metrics>,
    resolver: Arc<MagicDnsResolver>,
    backlog: Mutex<Backlog<Snapshot>>,
    queued: Notify,
}

impl RemoteWriteShipper {
    pub(crate) fn new(
        settings: &RemoteWriteSettings,
        labels: &[(String, String)],
        backoff: Backoff,
        metrics: &Arc<Metrics>,
        resolver: &Arc<MagicDnsResolver>,
    ) -> Self {
        metrics.telemetry_sink(SINK.label());
        Self {
            settings: settings.clone(),
            labels: labels.to_vec(),
            backoff,
            metrics: metrics.clone(),
            resolver: resolver.clone(),
            // Snapshots are kept compressed: the bound is in samples, bytes follow from it.
            backlog: Mutex::new(Backlog::new(settings.buffer, usize::MAX)),
            queued: Notify::new(),
        }
    }

    /// Takes a snapshot every interval (and one at once when `shutdown` turns true) and
    /// pushes the queue, until the runtime stops.
    pub(crate) async fn run(&self, shutdown: ShutdownWatch) {
        let client = match self.settings.endpoint.client(&self.resolver) {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the remote-write client; metrics are not pushed");
                return;
            }
        };
        tokio::join!(
            self.snapshots(shutdown.clone()),
            self.pushes(&client, shutdown)
        );
    }

    async fn snapshots(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut draining = shutting_down(&shutdown);
        loop {
            if draining {
                tick.tick().await;
            } else {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.wait_for(|stop| *stop) => draining = true,
                }
            }
            self.snapshot();
        }
    }

    /// Renders the metrics now and queues them.
    fn snapshot(&self) {
        let text = self.metrics.render();
        if text.is_empty() {
            return; // metrics are off
        }
        let request = write_request(&text, &self.labels, now_millis());
        let samples = request.timeseries.len();
        let body = match snappy_protobuf(&request) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                tracing::error!(error = %e, "cannot compress a remote-write request");
                return;
            }
        };
        let dropped = self.backlog.lock().push(Snapshot { samples, body });
        self.metrics
            .telemetry_dropped(SINK.label(), "buffer_full", dropped);
        self.report_buffered();
        self.queued.notify_one();
    }

    fn report_buffered(&self) {
        let waiting = self.backlog.lock().weight();
        self.metrics.telemetry_buffered(SINK.label(), waiting);
    }

    async fn pushes(&self, client: &PushClient, mut shutdown: ShutdownWatch) {
        let mut backoff = self.backoff;
        let mut failing = false;
        loop {
            let batch = Batch::take(&self.backlog, 1);
            let Some(snapshot) = batch.items().first() else {
                self.queued.notified().await;
                continue;
            };
            let samples = snapshot.samples;
            match client.push(snapshot.body.clone(), HEADERS).await {
                Ok(()) => {
                    batch.done();
                    if failing {
                        tracing::info!(url = %self.settings.endpoint.url, "remote write works again");
                    }
                    failing = false;
                    backoff.reset();
                    self.metrics.telemetry_shipped(SINK.label(), samples);
                }
                Err(PushError::Rejected(why)) => {
                    batch.done();
                    tracing::error!(url = %self.settings.endpoint.url, error = %why, samples, "remote write refused; these samples are dropped");
                    self.metrics.telemetry_failed(SINK.label(), samples);
                    self.metrics
                        .telemetry_dropped(SINK.label(), "rejected", samples);
                }
                Err(PushError::Retry(why)) => {
                    if !failing {
                        tracing::warn!(url = %self.settings.endpoint.url, error = %why, "remote write failed; retrying with backoff");
                    }
                    failing = true;
                    self.metrics.telemetry_failed(SINK.label(), samples);
                    let dropped = batch.put_back();
                    self.metrics
                        .telemetry_dropped(SINK.label(), "buffer_full", dropped);
                    self.report_buffered();
                    if sleep_or_shutdown(backoff.next_wait(), &mut shutdown).await {
                        backoff.reset();
                    }
                }
            }
            self.report_buffered();
        }
    }

    /// One last snapshot, then everything queued, without retries.
    pub(crate) async fn flush(&self) {
        self.snapshot();
        let client = match self.settings.endpoint.client(&self.resolver) {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the remote-write client");
                return;
            }
        };
        loop {
            let batch = Batch::take(&self.backlog, 1);
            let Some(snapshot) = batch.items().first() else {
                return;
            };
            let samples = snapshot.samples;
            if let Err(e) = client.push(snapshot.body.clone(), HEADERS).await {
                drop(batch);
                let lost = self.backlog.lock().weight();
                tracing::warn!(error = %e, samples = lost, "remote write failed at shutdown; the rest is lost");
                self.metrics.telemetry_failed(SINK.label(), samples);
                return;
            }
            batch.done();
            self.metrics.telemetry_shipped(SINK.label(), samples);
        }
    }
}

fn now_millis() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// The Prometheus text exposition `text` as a remote-write request: one series per sample
/// line, at `timestamp` (ms), with `extra` labels added where the series has no label of
/// that name, and the families' `TYPE`/`HELP` as metadata.
pub(crate) fn write_request(
    text: &str,
    extra: &[(String, String)],
    timestamp: i64,
) -> WriteRequest {
    let mut timeseries = Vec::new();
    let mut families: HashMap<&str, MetricMetadata> = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(comment) = line.strip_prefix('#') {
            note_metadata(comment.trim_start(), &mut families);
            continue;
        }
        if line.is_empty() {
            continue;
        }
        match parse_sample(line) {
            Some((name, labels, value)) => {
                timeseries.push(series(name, labels, extra, value, timestamp));
            }
            None => tracing::debug!(line, "metrics line not understood; not pushed"),
        }
    }
    let mut metadata: Vec<MetricMetadata> = families.into_values().collect();
    metadata.sort_by(|a, b| a.metric_family_name.cmp(&b.metric_family_name));
    WriteRequest {
        timeseries,
        metadata,
    }
}

fn series(
    name: &str,
    mut labels: Vec<(String, String)>,
    extra: &[(String, String)],
    value: f64,
    timestamp: i64,
) -> TimeSeries {
    for (key, val) in extra {
        if !labels.iter().any(|(k, _)| k == key) {
            labels.push((key.clone(), val.clone()));
        }
    }
    labels.push(("__name__".to_owned(), name.to_owned()));
    // Remote write wants labels sorted by name.
    labels.sort_by(|a, b| a.0.cmp(&b.0));
    TimeSeries {
        labels: labels
            .into_iter()
            .map(|(name, value)| Label { name, value })
            .collect(),
        samples: vec![Sample { value, timestamp }],
    }
}

/// `TYPE name kind` or `HELP name text`.
fn note_metadata<'t>(comment: &'t str, families: &mut HashMap<&'t str, MetricMetadata>) {
    let mut parts = comment.splitn(3, ' ');
    let (Some(keyword), Some(name)) = (parts.next(), parts.next()) else {
        return;
    };
    let rest = parts.next().unwrap_or_default();
    let entry = families.entry(name).or_insert_with(|| MetricMetadata {
        r#type: 0,
        metric_family_name: name.to_owned(),
        help: String::new(),
        unit: String::new(),
    });
    match keyword {
        "TYPE" => {
            entry.r#type = match rest.trim() {
                "counter" => 1,
                "gauge" => 2,
                "histogram" => 3,
                "summary" => 5,
                _ => 0,
            }
        }
        "HELP" => entry.help = unescape(rest, false),
        _ => {}
    }
}

/// `name{a="x",b="y"} value [timestamp]`, or `name value`.
fn parse_sample(line: &str) -> Option<(&str, Labels, f64)> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        number => number.parse().ok()?,
    };
    Some((name, labels, value))
}

/// The labels after a `{`, up to and past the closing `}`.
fn parse_labels(mut text: &str) -> Option<(Labels, &str)> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches([' ', ',']);
        if let Some(after) = text.strip_prefix('}') {
            return Some((labels, after));
        }
        let (name, after) = text.split_once('=')?;
        let after = after.strip_prefix('"')?;
        let end = closing_quote(after)?;
        labels.push((name.trim().to_owned(), unescape(&after[..end], true)));
        text = &after[end + 1..];
    }
}

/// The index of the first `"` not escaped by a backslash.
fn closing_quote(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// Undoes the exposition format's escapes: `\\` and `\n`, and `\"` in label values.
fn unescape(text: &str, quotes: bool) -> String {
    if !text.contains('\\') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some('"') if quotes => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(series: &TimeSeries) -> Vec<(&str, &str)> {
        series
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect()
    }

    #[test]
    fn every_served_line_becomes_a_series_with_sorted_labels() {
        let text = "# HELP edge_requests_total Requests answered.\n\
                    # TYPE edge_requests_total counter\n\
                    edge_requests_total{host=\"docs\",method=\"GET\",status=\"200\"} 2\n\
                    \n\
                    # TYPE edge_request_duration_seconds histogram\n\
                    edge_request_duration_seconds_bucket{host=\"docs\",le=\"+Inf\"} 2\n\
                    edge_request_duration_seconds_sum{host=\"docs\"} 0.25\n\
                    edge_requests_in_flight 0\n";
        let extra = [("instance".to_owned(), "edge".to_owned())];
        let request = write_request(text, &extra, 1_700_000_000_000);
        assert_eq!(request.timeseries.len(), 4);
        assert_eq!(
            labels(&request.timeseries[0]),
            [
                ("__name__", "edge_requests_total"),
                ("host", "docs"),
                ("instance", "edge"),
                ("method", "GET"),
                ("status", "200"),
            ]
        );
        assert_eq!(
            request.timeseries[0].samples,
            [Sample {
                value: 2.0,
                timestamp: 1_700_000_000_000
            }]
        );
        assert_eq!(request.timeseries[1].samples[0].value, 2.0);
        assert!(labels(&request.timeseries[1]).contains(&("le", "+Inf")));
        assert_eq!(request.timeseries[2].samples[0].value, 0.25);
        assert_eq!(
            labels(&request.timeseries[3]),
            [
                ("__name__", "edge_requests_in_flight"),
                ("instance", "edge")
            ]
        );
        let counter = &request.metadata[1];
        assert_eq!(
            (
                counter.metric_family_name.as_str(),
                counter.r#type,
                counter.help.as_str()
            ),
            ("edge_requests_total", 1, "Requests answered.")
        );
        assert_eq!(request.metadata[0].r#type, 3);
    }

    #[test]
    fn escaped_label_values_and_own_labels_win() {
        let text = "x{instance=\"own\",path=\"a\\\"b\\\\c\\nd,}\"} -Inf\n";
        let extra = [("instance".to_owned(), "edge".to_owned())];
        let request = write_request(text, &extra, 0);
        assert_eq!(
            labels(&request.timeseries[0]),
            [
                ("__name__", "x"),
                ("instance", "own"),
                ("path", "a\"b\\c\nd,}")
            ]
        );
        assert_eq!(request.timeseries[0].samples[0].value, f64::NEG_INFINITY);
    }

    #[test]
    fn what_metrics_render_converts_line_for_line() {
        let metrics = Metrics::new();
        metrics.request("docs", "GET", 200, std::time::Duration::from_millis(3), 10);
        let text = metrics.render();
        let lines = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .count();
        assert_eq!(write_request(&text, &[], 0).timeseries.len(), lines);
    }
}
