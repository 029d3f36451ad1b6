//! Loki push: the access log's writer thread hands its lines over ([`LogFeed`]), already
//! formatted and redacted; each becomes one entry of the configured stream, timestamped
//! with its request's `time`. A pusher sends them in batches (`batch_size` lines, or
//! whatever waited `max_wait`), in the order they were logged, retrying with backoff.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use tokio::sync::Notify;

use super::backlog::{Backlog, Batch, Weighed};
use super::client::PushError;
use super::proto::{snappy_protobuf, EntryAdapter, PushRequest, StreamAdapter, Timestamp};
use super::{shutting_down, sleep_or_shutdown, Backoff, LokiSettings, Sink};
use crate::observe::{LogFeed, Metrics};
use crate::upstream::MagicDnsResolver;

const SINK: Sink = Sink::Loki;

/// Loki's clients send snappy-compressed protobuf without a `Content-Encoding`.
const HEADERS: &[(&str, &str)] = &[("content-type", "application/x-protobuf")];

/// Bytes allowed to wait per line of the buffer, as the access log's own queue allows:
/// lines carry client-chosen text, so the buffer is bounded in bytes too.
const BYTES_PER_LINE: usize = 2048;

/// One access-log line waiting to be pushed.
#[derive(Debug)]
struct Entry {
    at: Timestamp,
    line: String,
    queued: Instant,
}

impl Weighed for Entry {
    fn weight(&self) -> usize {
        1
    }
    fn bytes(&self) -> usize {
        self.line.len()
    }
}

/// Pushes access-log lines to one Loki.
#[derive(Debug)]
pub(crate) struct LokiShipper {
    settings: LokiSettings,
    /// The stream's labels in Loki's syntax.
    stream: String,
    backoff: Backoff,
    metrics: Arc<Metrics>,
    resolver: Arc<MagicDnsResolver>,
    backlog: Mutex<Backlog<Entry>>,
    queued: Notify,
}

impl LogFeed for LokiShipper {
    fn lines(&self, lines: &[u8]) {
        let queued = Instant::now();
        let mut dropped = 0;
        let (waiting, first) = {
            let mut backlog = self.backlog.lock();
            let first = backlog.len() == 0;
            for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let line = String::from_utf8_lossy(line).into_owned();
                let at = line_time(&line).unwrap_or_else(now);
                dropped += backlog.push(Entry { at, line, queued });
            }
            (backlog.len(), first)
        };
        self.metrics
            .telemetry_dropped(SINK.label(), "buffer_full", dropped);
        self.metrics.telemetry_buffered(SINK.label(), waiting);
        // The pusher waits for the first line (to start its max_wait) or a full batch.
        if first || waiting >= self.settings.batch_size {
            self.queued.notify_one();
        }
    }
}

impl LokiShipper {
    pub(crate) fn new(
        settings: &LokiSettings,
        backoff: Backoff,
        metrics: &Arc<Metrics>,
        resolver: &Arc<MagicDnsResolver>,
    ) -> Self {
        metrics.telemetry_sink(SINK.label());
        Self {
            settings: settings.clone(),
            stream: stream_labels(&settings.labels),
            backoff,
            metrics: metrics.clone(),
            resolver: resolver.clone(),
            backlog: Mutex::new(Backlog::new(
                settings.buffer,
                settings.buffer.saturating_mul(BYTES_PER_LINE),
            )),
            queued: Notify::new(),
        }
    }

    /// Pushes batches until the runtime stops; once `shutdown` turns true, pushes whatever
    /// waits without waiting for `max_wait`.
    pub(crate) async fn run(&self, mut shutdown: ShutdownWatch) {
        let client = match self.settings.endpoint.client(&self.resolver) {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the Loki client; log lines are not pushed");
                return;
            }
        };
        let mut backoff = self.backoff;
        let mut failing = false;
        loop {
            if !self.batch_ready(&mut shutdown).await {
                continue;
            }
            let batch = Batch::take(&self.backlog, self.settings.batch_size);
            if batch.is_empty() {
                continue;
            }
            let lines = batch.weight();
            match client.push(self.request(batch.items()), HEADERS).await {
                Ok(()) => {
                    batch.done();
                    if failing {
                        tracing::info!(url = %self.settings.endpoint.url, "Loki push works again");
                    }
                    failing = false;
                    backoff.reset();
                    self.metrics.telemetry_shipped(SINK.label(), lines);
                }
                Err(PushError::Rejected(why)) => {
                    batch.done();
                    tracing::error!(url = %self.settings.endpoint.url, error = %why, lines, "Loki refused a push; these lines are dropped");
                    self.metrics.telemetry_failed(SINK.label(), lines);
                    self.metrics
                        .telemetry_dropped(SINK.label(), "rejected", lines);
                }
                Err(PushError::Retry(why)) => {
                    if !failing {
                        tracing::warn!(url = %self.settings.endpoint.url, error = %why, "Loki push failed; retrying with backoff");
                    }
                    failing = true;
                    self.metrics.telemetry_failed(SINK.label(), lines);
                    let dropped = batch.put_back();
                    self.metrics
                        .telemetry_dropped(SINK.label(), "buffer_full", dropped);
                    if sleep_or_shutdown(backoff.next_wait(), &mut shutdown).await {
                        backoff.reset();
                    }
                }
            }
            let waiting = self.backlog.lock().len();
            self.metrics.telemetry_buffered(SINK.label(), waiting);
        }
    }

    /// Waits until a batch should go: `batch_size` lines wait, the oldest has waited
    /// `max_wait`, or the process is shutting down and anything waits. False: look again.
    async fn batch_ready(&self, shutdown: &mut ShutdownWatch) -> bool {
        let draining = shutting_down(shutdown);
        let (waiting, oldest) = {
            let backlog = self.backlog.lock();
            (backlog.len(), backlog.front().map(|e| e.queued))
        };
        let Some(oldest) = oldest else {
            tokio::select! {
                _ = self.queued.notified() => {}
                _ = shutdown.wait_for(|stop| *stop), if !draining => {}
            }
            return false;
        };
        let due = oldest + self.settings.max_wait;
        if draining || waiting >= self.settings.batch_size || Instant::now() >= due {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = self.queued.notified() => {}
            _ = shutdown.wait_for(|stop| *stop), if !draining => {}
        }
        false
    }

    fn request(&self, batch: &[Entry]) -> Bytes {
        let request = PushRequest {
            streams: vec![StreamAdapter {
                labels: self.stream.clone(),
                entries: batch
                    .iter()
                    .map(|e| EntryAdapter {
                        timestamp: Some(e.at),
                        line: e.line.clone(),
                    })
                    .collect(),
            }],
        };
        match snappy_protobuf(&request) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                // Only an input over snappy's ~4 GiB limit fails; a batch never is.
                tracing::error!(error = %e, "cannot compress a Loki push");
                Bytes::new()
            }
        }
    }

    /// Everything waiting, in batches, without retries.
    pub(crate) async fn flush(&self) {
        let client = match self.settings.endpoint.client(&self.resolver) {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the Loki client");
                return;
            }
        };
        loop {
            let batch = Batch::take(&self.backlog, self.settings.batch_size);
            if batch.is_empty() {
                return;
            }
            let lines = batch.weight();
            if let Err(e) = client.push(self.request(batch.items()), HEADERS).await {
                drop(batch);
                let lost = self.backlog.lock().len();
                tracing::warn!(error = %e, lines = lost, "Loki push failed at shutdown; the rest is lost");
                self.metrics.telemetry_failed(SINK.label(), lines);
                return;
            }
            batch.done();
            self.metrics.telemetry_shipped(SINK.label(), lines);
        }
    }
}

/// `{instance="edge", job="proxy-app"}`: Loki's stream selector syntax.
fn stream_labels(labels: &[(String, String)]) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(name, value)| {
            let value = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{name}=\"{value}\"")
        })
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

/// The `time` an access-log line starts with (`{"time":"2026-11-23T04:05:06.789Z",...`).
fn line_time(line: &str) -> Option<Timestamp> {
    let text = line.strip_prefix("{\"time\":\"")?.split('"').next()?;
    let when =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(Timestamp {
        seconds: when.unix_timestamp(),
        nanos: i32::try_from(when.nanosecond()).ok()?,
    })
}

fn now() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_labels_are_loki_selectors() {
        let labels = [
            ("instance".to_owned(), "fly\"edge".to_owned()),
            ("job".to_owned(), "proxy-app".to_owned()),
        ];
        assert_eq!(
            stream_labels(&labels),
            r#"{instance="fly\"edge", job="proxy-app"}"#
        );
    }

    #[test]
    fn a_line_is_stamped_with_its_request_time() {
        let at = line_time(r#"{"time":"2026-11-23T04:05:06.789Z","status":200}"#).unwrap();
        assert_eq!((at.seconds, at.nanos), (1_795_406_706, 789_000_000));
        assert_eq!(line_time("not json"), None);
    }
}
