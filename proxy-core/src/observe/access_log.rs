//! The JSON access log: one line per request. A request appends its line to a shared
//! buffer and goes on; a dedicated thread writes the buffer out every [`FLUSH_INTERVAL`]
//! (sooner when it is half full), so requests neither wait on a disk or a pipe nor wake a
//! thread per line. At most the configured number of lines wait; more are dropped and
//! counted (`edge_access_log_dropped_total`).
//!
//! The writer thread also hands each batch to a [`LogFeed`] if one is attached
//! ([`AccessLog::ship_to`]): the Loki shipper gets the very lines written, off the request
//! path and without formatting them twice.

use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::json::{json_key, JsonObject};
use super::Metrics;

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard output (Fly ships it to its log pipeline).
    Stdout,
    /// A file, appended to, reopened after [`AccessLog::reopen`] (log rotation).
    File(PathBuf),
}

/// Receives the access log's lines, as written (redacted JSON), on the log's writer thread:
/// never on the request path. Implemented by the Loki shipper.
pub trait LogFeed: Send + Sync + std::fmt::Debug {
    /// One or more whole lines, each ending in `\n`, in the order they were logged. Must
    /// not block for long: the writer waits for it.
    fn lines(&self, lines: &[u8]);
}

/// One access-log line, borrowing its text from the request it describes. Field names
/// follow nginx's variables where one exists.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct AccessLogEntry<'a> {
    /// When the request finished, RFC 3339 in UTC.
    pub time: &'a str,
    /// The client as the proxy identifies it.
    pub client_ip: &'a str,
    /// The TCP peer.
    pub remote_addr: &'a str,
    /// The Host header as sent (empty if none).
    pub host: &'a str,
    /// Request method.
    pub method: &'a str,
    /// Request target with secrets redacted.
    pub uri: &'a str,
    /// HTTP version (`HTTP/1.1`).
    pub protocol: &'a str,
    /// Status sent (0 if the connection was closed without a response).
    pub status: u16,
    /// Response body bytes sent.
    pub body_bytes_sent: u64,
    /// Seconds from request start to logging.
    pub request_time: f64,
    /// The upstream address used, if any.
    pub upstream_addr: &'a str,
    /// Seconds until the upstream's response headers, if any.
    pub upstream_response_time: Option<f64>,
    /// The upstream's status, if any.
    pub upstream_status: Option<u16>,
    /// Cache status in nginx's words, empty when the location does not cache.
    pub upstream_cache_status: &'a str,
    /// Rate-limit outcome, empty when the location has no limit.
    pub rate_limit: &'a str,
    /// The ban rule that refused the request (the client is banned), empty for others.
    pub ban: &'a str,
    /// The user authentication let in (never a password), empty for others.
    pub user: &'a str,
    /// User-Agent header.
    pub user_agent: &'a str,
    /// Referer header, secrets redacted.
    pub referer: &'a str,
    /// Request id (also in `X-Request-Id`).
    pub request_id: &'a str,
    /// Matched site name (empty if none).
    pub site: &'a str,
    /// Matched location pattern (empty if none).
    pub location: &'a str,
    /// Error, when the request failed.
    pub error: &'a str,
}

impl AccessLogEntry<'_> {
    /// Appends the entry to `out` as one line: the JSON document `serde_json` would write
    /// for it, then a newline.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        let mut line = JsonObject::new(out);
        line.str(json_key!(first "time"), self.time);
        line.str(json_key!("client_ip"), self.client_ip);
        line.str(json_key!("remote_addr"), self.remote_addr);
        line.str(json_key!("host"), self.host);
        line.str(json_key!("method"), self.method);
        line.str(json_key!("uri"), self.uri);
        line.str(json_key!("protocol"), self.protocol);
        line.uint(json_key!("status"), self.status);
        line.uint(json_key!("body_bytes_sent"), self.body_bytes_sent);
        line.float(json_key!("request_time"), self.request_time);
        line.str(json_key!("upstream_addr"), self.upstream_addr);
        line.opt_float(
            json_key!("upstream_response_time"),
            self.upstream_response_time,
        );
        line.opt_uint(json_key!("upstream_status"), self.upstream_status);
        line.str(
            json_key!("upstream_cache_status"),
            self.upstream_cache_status,
        );
        line.str(json_key!("rate_limit"), self.rate_limit);
        line.str(json_key!("ban"), self.ban);
        line.str(json_key!("user"), self.user);
        line.str(json_key!("user_agent"), self.user_agent);
        line.str(json_key!("referer"), self.referer);
        line.str(json_key!("request_id"), self.request_id);
        line.str(json_key!("site"), self.site);
        line.str(json_key!("location"), self.location);
        line.str(json_key!("error"), self.error);
        line.end();
        out.push(b'\n');
    }
}

/// The writer side of the access log. Cloning is cheap; all clones feed one writer thread,
/// which writes what is left and stops once the last clone is dropped.
#[derive(Debug, Clone)]
pub struct AccessLog {
    handle: Arc<WriterHandle>,
    metrics: Arc<Metrics>,
}

/// How long lines may wait before the writer writes them out.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// A batch buffer grown past this is not kept for the next batch.
const KEEP_BUFFER: usize = 1 << 20;

/// Bytes allowed to wait per line of capacity: lines carry client-chosen text (URI, User-Agent,
/// Referer), so a stalled writer must be bounded in bytes too, not only in lines.
const BYTES_PER_LINE: usize = 2048;

/// What requests and the writer thread share.
#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    reopen: Arc<AtomicBool>,
    /// Where written lines are handed on, once attached.
    feed: OnceLock<Arc<dyn LogFeed>>,
    /// Lines that may wait.
    capacity: usize,
    /// Bytes that may wait.
    max_bytes: usize,
    /// The waiting lines at which the writer is woken before its interval ends.
    wake_at: usize,
}

/// Lines waiting for the writer.
#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    lines: usize,
    /// Set by [`AccessLog::finish`] or when the last clone is gone: write what is left and
    /// stop.
    closed: bool,
}

/// Held by every [`AccessLog`] clone; dropping the last one stops the writer.
#[derive(Debug)]
struct WriterHandle {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl WriterHandle {
    fn close(&self) {
        self.shared.pending.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.close();
    }
}

impl AccessLog {
    /// Opens `target` and starts the writer thread; at most `capacity` lines (and
    /// `capacity` x 2 KiB) wait.
    pub fn start(
        target: AccessLogTarget,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> io::Result<Self> {
        let sink = Sink::open(&target)?;
        Self::start_sink(sink, Some(target), capacity, metrics)
    }

    /// A log that formats and queues lines like [`AccessLog::start`] but writes them
    /// nowhere: they only go to the feed attached with [`AccessLog::ship_to`] (the file
    /// or stdout log is off, the lines are still shipped).
    pub fn start_without_target(capacity: usize, metrics: Arc<Metrics>) -> io::Result<Self> {
        Self::start_sink(Sink::Nowhere, None, capacity, metrics)
    }

    fn start_sink(
        sink: Sink,
        target: Option<AccessLogTarget>,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> io::Result<Self> {
        let log = Self::unstarted(capacity, metrics);
        let shared = log.handle.shared.clone();
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_batches(&shared, sink, target.as_ref()))?;
        *log.handle.writer.lock() = Some(writer);
        Ok(log)
    }

    /// Hands every batch written from now on to `feed` as well (once; false if a feed
    /// is attached already).
    pub fn ship_to(&self, feed: Arc<dyn LogFeed>) -> bool {
        self.handle.shared.feed.set(feed).is_ok()
    }

    fn unstarted(capacity: usize, metrics: Arc<Metrics>) -> Self {
        let capacity = capacity.max(1);
        let shared = Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            reopen: Arc::new(AtomicBool::new(false)),
            feed: OnceLock::new(),
            capacity,
            max_bytes: capacity.saturating_mul(BYTES_PER_LINE),
            wake_at: (capacity / 2).max(1),
        };
        Self {
            handle: Arc::new(WriterHandle {
                shared: Arc::new(shared),
                writer: Mutex::new(None),
            }),
            metrics,
        }
    }

    /// Queues one entry; never blocks on I/O. When `capacity` lines or their bytes already
    /// wait, the line is dropped and counted.
    pub fn log(&self, entry: &AccessLogEntry<'_>) {
        let shared = &self.handle.shared;
        let mut pending = shared.pending.lock();
        if pending.lines >= shared.capacity || pending.bytes.len() >= shared.max_bytes {
            drop(pending);
            self.metrics.access_log_dropped();
            return;
        }
        entry.write_line(&mut pending.bytes);
        pending.lines += 1;
        if pending.lines == shared.wake_at {
            shared.wake.notify_one();
        }
    }

    /// Writes every waiting line and stops the writer; lines logged later are lost. Call
    /// once the server has stopped, before the process exits.
    pub fn finish(&self) {
        self.handle.close();
        if let Some(writer) = self.handle.writer.lock().take() {
            let _ = writer.join();
        }
    }

    /// Asks the writer to reopen its file (call on SIGUSR1 after rotating it).
    pub fn reopen(&self) {
        self.handle.shared.reopen.store(true, Ordering::Relaxed);
    }

    /// The flag [`AccessLog::reopen`] sets, for a signal handler that may only store to an
    /// atomic (e.g. `signal_hook::flag::register`).
    pub fn reopen_flag(&self) -> Arc<AtomicBool> {
        self.handle.shared.reopen.clone()
    }
}

enum Sink {
    Stdout(io::Stdout),
    File(File),
    /// Lines only go to the feed.
    Nowhere,
}

impl Sink {
    fn open(target: &AccessLogTarget) -> io::Result<Self> {
        match target {
            AccessLogTarget::Stdout => Ok(Self::Stdout(io::stdout())),
            AccessLogTarget::File(path) => Ok(Self::File(open_append(path)?)),
        }
    }

    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        match self {
            Self::Stdout(out) => {
                let mut out = out.lock();
                out.write_all(batch)?;
                out.flush()
            }
            Self::File(file) => file.write_all(batch),
            Self::Nowhere => Ok(()),
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The writer thread: every [`FLUSH_INTERVAL`], or when woken early, takes the waiting
/// lines and writes them with one call; reopens the file on request.
fn write_batches(shared: &Shared, mut sink: Sink, target: Option<&AccessLogTarget>) {
    let mut batch = Vec::new();
    loop {
        let closed = {
            let mut pending = shared.pending.lock();
            if !pending.closed {
                shared.wake.wait_for(&mut pending, FLUSH_INTERVAL);
            }
            std::mem::swap(&mut pending.bytes, &mut batch);
            pending.lines = 0;
            pending.closed
        };
        // Checked before writing, so lines logged after `reopen()` go to the new file.
        if let Some(target) = target {
            reopen_if_asked(&mut sink, target, &shared.reopen);
        }
        if !batch.is_empty() {
            if let Err(e) = sink.write_batch(&batch) {
                tracing::warn!(error = %e, "cannot write the access log");
            }
            if let Some(feed) = shared.feed.get() {
                feed.lines(&batch);
            }
            batch.clear();
            if batch.capacity() > KEEP_BUFFER {
                batch = Vec::new();
            }
        }
        if closed {
            return;
        }
    }
}

fn reopen_if_asked(sink: &mut Sink, target: &AccessLogTarget, reopen: &AtomicBool) {
    if !reopen.swap(false, Ordering::Relaxed) {
        return;
    }
    match Sink::open(target) {
        Ok(fresh) => *sink = fresh,
        Err(e) => tracing::error!(error = %e, "cannot reopen the access log"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_lines(path: &Path, want: usize) -> Vec<String> {
        for _ in 0..100 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if lines.len() >= want {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("access log never reached {want} lines");
    }

    #[test]
    fn writes_json_lines_and_reopens_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::start(
            AccessLogTarget::File(path.clone()),
            16,
            Arc::new(Metrics::new()),
        )
        .unwrap();
        let entry = AccessLogEntry {
            status: 200,
            method: "GET",
            ..Default::default()
        };
        log.log(&entry);
        let lines = read_lines(&path, 1);
        let value: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(value["status"], 200);
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        log.reopen();
        log.log(&entry);
        assert_eq!(read_lines(&path, 1).len(), 1);
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let metrics = Arc::new(Metrics::new());
        let log = AccessLog::unstarted(1, metrics.clone());
        for _ in 0..3 {
            log.log(&AccessLogEntry::default());
        }
        assert!(metrics.render().contains("edge_access_log_dropped_total 2"));
    }

    #[test]
    fn waiting_bytes_are_bounded_too() {
        let metrics = Arc::new(Metrics::new());
        let log = AccessLog::unstarted(4, metrics.clone());
        let long = "a".repeat(3 * BYTES_PER_LINE);
        let entry = AccessLogEntry {
            uri: &long,
            ..Default::default()
        };
        for _ in 0..4 {
            log.log(&entry);
        }
        // Two long lines pass 4 x 2 KiB: the next two are dropped though lines are free.
        assert!(metrics.render().contains("edge_access_log_dropped_total 2"));
    }

    #[test]
    fn lines_are_what_serde_json_writes() {
        let entry = AccessLogEntry {
            time: "2026-11-23T04:05:06.007Z",
            client_ip: "203.0.113.9",
            uri: "/a?b=\"c\"\\",
            user_agent: "bot\u{1}\tü",
            status: 404,
            body_bytes_sent: 12,
            request_time: 0.012,
            upstream_response_time: Some(1.5),
            upstream_status: None,
            ..Default::default()
        };
        let mut line = Vec::new();
        entry.write_line(&mut line);
        let mut expected = serde_json::to_vec(&entry).unwrap();
        expected.push(b'\n');
        assert_eq!(
            String::from_utf8(line).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    }

    #[test]
    fn finish_writes_waiting_lines_before_returning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let target = AccessLogTarget::File(path.clone());
        let log = AccessLog::start(target, 16, Arc::new(Metrics::new())).unwrap();
        for _ in 0..3 {
            log.log(&AccessLogEntry::default());
        }
        log.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
    }

    #[derive(Debug, Default)]
    struct Collected(Mutex<Vec<u8>>);

    impl LogFeed for Collected {
        fn lines(&self, lines: &[u8]) {
            self.0.lock().extend_from_slice(lines);
        }
    }

    #[test]
    fn a_feed_gets_the_lines_written_even_without_a_target() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let target = AccessLogTarget::File(path.clone());
        for log in [
            AccessLog::start(target, 16, Arc::new(Metrics::new())).unwrap(),
            AccessLog::start_without_target(16, Arc::new(Metrics::new())).unwrap(),
        ] {
            let feed = Arc::new(Collected::default());
            assert!(log.ship_to(feed.clone()));
            log.log(&AccessLogEntry {
                status: 201,
                ..Default::default()
            });
            log.log(&AccessLogEntry::default());
            log.finish();
            let fed = String::from_utf8(feed.0.lock().clone()).unwrap();
            assert_eq!(fed.lines().count(), 2);
            assert!(fed.starts_with("{\"time\""), "{fed}");
            assert!(fed.contains("\"status\":201"), "{fed}");
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
    }

    #[test]
    fn dropping_the_last_handle_writes_what_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let target = AccessLogTarget::File(path.clone());
        let log = AccessLog::start(target, 16, Arc::new(Metrics::new())).unwrap();
        let copy = log.clone();
        log.log(&AccessLogEntry::default());
        drop(log);
        copy.log(&AccessLogEntry::default());
        drop(copy);
        assert_eq!(read_lines(&path, 2).len(), 2);
    }
}
