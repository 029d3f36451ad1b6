//! The JSON access log: one line per request, written by a dedicated thread so requests
//! never wait on a disk or a pipe. Lines travel through a bounded queue; when it is full the
//! line is dropped and counted (`edge_access_log_dropped_total`).

use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use super::Metrics;

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard output (Fly ships it to its log pipeline).
    Stdout,
    /// A file, appended to, reopened after [`AccessLog::reopen`] (log rotation).
    File(PathBuf),
}

/// One access-log line. Field names follow nginx's variables where one exists.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct AccessLogEntry {
    /// When the request finished, RFC 3339 in UTC.
    pub time: String,
    /// The client as the proxy identifies it.
    pub client_ip: String,
    /// The TCP peer.
    pub remote_addr: String,
    /// The Host header as sent (empty if none).
    pub host: String,
    /// Request method.
    pub method: String,
    /// Request target with secrets redacted.
    pub uri: String,
    /// HTTP version (`HTTP/1.1`).
    pub protocol: String,
    /// Status sent (0 if the connection was closed without a response).
    pub status: u16,
    /// Response body bytes sent.
    pub body_bytes_sent: u64,
    /// Seconds from request start to logging.
    pub request_time: f64,
    /// The upstream address used, if any.
    pub upstream_addr: String,
    /// Seconds until the upstream's response headers, if any.
    pub upstream_response_time: Option<f64>,
    /// The upstream's status, if any.
    pub upstream_status: Option<u16>,
    /// Cache status in nginx's words, empty when the location does not cache.
    pub upstream_cache_status: String,
    /// Rate-limit outcome, empty when the location has no limit.
    pub rate_limit: String,
    /// User-Agent header.
    pub user_agent: String,
    /// Referer header, secrets redacted.
    pub referer: String,
    /// Request id (also in `X-Request-Id`).
    pub request_id: String,
    /// Matched site name (empty if none).
    pub site: String,
    /// Matched location pattern (empty if none).
    pub location: String,
    /// Error, when the request failed.
    pub error: String,
}

/// The writer side of the access log. Cloning is cheap; all clones feed one writer thread.
#[derive(Debug, Clone)]
pub struct AccessLog {
    queue: SyncSender<String>,
    reopen: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

/// How often the writer wakes to notice a reopen request when no lines arrive.
const IDLE_WAKE: Duration = Duration::from_millis(250);

impl AccessLog {
    /// Opens `target` and starts the writer thread with a queue of `capacity` lines.
    pub fn start(
        target: AccessLogTarget,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> io::Result<Self> {
        let sink = Sink::open(&target)?;
        let (queue, lines) = sync_channel(capacity.max(1));
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(lines, sink, target, flag))?;
        Ok(Self {
            queue,
            reopen,
            metrics,
        })
    }

    /// Queues one entry; never blocks. A full queue drops the line and counts it.
    pub fn log(&self, entry: &AccessLogEntry) {
        let line = match serde_json::to_string(entry) {
            Ok(line) => line,
            Err(e) => {
                tracing::debug!(error = %e, "cannot serialise access-log entry");
                return;
            }
        };
        match self.queue.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.access_log_dropped();
            }
        }
    }

    /// Asks the writer to reopen its file (call on SIGUSR1 after rotating it).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// The flag [`AccessLog::reopen`] sets, for a signal handler that may only store to an
    /// atomic (e.g. `signal_hook::flag::register`).
    pub fn reopen_flag(&self) -> Arc<AtomicBool> {
        self.reopen.clone()
    }
}

enum Sink {
    Stdout(io::Stdout),
    File(BufWriter<File>),
}

impl Sink {
    fn open(target: &AccessLogTarget) -> io::Result<Self> {
        match target {
            AccessLogTarget::Stdout => Ok(Self::Stdout(io::stdout())),
            AccessLogTarget::File(path) => Ok(Self::File(BufWriter::new(open_append(path)?))),
        }
    }

    fn write_line(&mut self, line: &str) -> io::Result<()> {
        match self {
            Self::Stdout(out) => {
                let mut out = out.lock();
                out.write_all(line.as_bytes())?;
                out.write_all(b"\n")
            }
            Self::File(file) => {
                file.write_all(line.as_bytes())?;
                file.write_all(b"\n")
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Stdout(out) => out.flush(),
            Self::File(file) => file.flush(),
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The writer thread: drains the queue, flushes when it runs dry, reopens on request.
fn write_lines(
    lines: Receiver<String>,
    mut sink: Sink,
    target: AccessLogTarget,
    reopen: Arc<AtomicBool>,
) {
    loop {
        match lines.recv_timeout(IDLE_WAKE) {
            Ok(line) => {
                // Checked after receiving, so a line queued after `reopen()` goes to the new file.
                reopen_if_asked(&mut sink, &target, &reopen);
                write_or_warn(&mut sink, &line);
                while let Ok(more) = lines.try_recv() {
                    write_or_warn(&mut sink, &more);
                }
                let _ = sink.flush();
            }
            Err(RecvTimeoutError::Timeout) => reopen_if_asked(&mut sink, &target, &reopen),
            Err(RecvTimeoutError::Disconnected) => {
                let _ = sink.flush();
                return;
            }
        }
    }
}

fn reopen_if_asked(sink: &mut Sink, target: &AccessLogTarget, reopen: &AtomicBool) {
    if !reopen.swap(false, Ordering::Relaxed) {
        return;
    }
    let _ = sink.flush();
    match Sink::open(target) {
        Ok(fresh) => *sink = fresh,
        Err(e) => tracing::error!(error = %e, "cannot reopen the access log"),
    }
}

fn write_or_warn(sink: &mut Sink, line: &str) {
    if let Err(e) = sink.write_line(line) {
        tracing::warn!(error = %e, "cannot write the access log");
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
            method: "GET".into(),
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
        let (queue, _lines) = sync_channel(1);
        let log = AccessLog {
            queue,
            reopen: Arc::new(AtomicBool::new(false)),
            metrics: metrics.clone(),
        };
        for _ in 0..3 {
            log.log(&AccessLogEntry::default());
        }
        assert!(metrics.render().contains("edge_access_log_dropped_total 2"));
    }
}
