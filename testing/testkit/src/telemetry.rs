//! The far end of the proxy's telemetry, for tests: [`PushReceiver`], an HTTP(S) endpoint the
//! test holds that records what it is pushed (decoding Loki's push format, protobuf +
//! snappy, as Loki does), can be down or hang on purpose, and can pass pushes on to a real
//! receiver; and [`Prometheus`], Debian's real Prometheus with its remote-write receiver on,
//! on a port it picks and reports.

use std::convert::Infallible;
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prost::Message;

/// What a [`PushReceiver`] does with a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Accepts it (decoding a Loki push, or passing it on).
    Up,
    /// Answers 503, as the homelab's reverse proxy does while the service behind it is down.
    Down,
    /// Reads it and never answers, holding the connection open.
    Hang,
}

/// One push as received.
#[derive(Debug, Clone)]
pub struct Push {
    /// Request path.
    pub path: String,
    /// Request headers (names lowercase).
    pub headers: Vec<(String, String)>,
    /// The body as sent.
    pub body: Bytes,
    /// The status answered.
    pub status: u16,
}

impl Push {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One Loki entry as a receiver decoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LokiEntry {
    /// The stream's labels, as sent (`{instance="x", job="y"}`).
    pub labels: String,
    /// Timestamp: seconds since the epoch.
    pub seconds: i64,
    /// Timestamp: nanoseconds within the second.
    pub nanos: i32,
    /// The line.
    pub line: String,
}

/// Where accepted pushes go.
enum Role {
    /// Decode and keep Loki pushes (`POST /loki/api/v1/push`).
    Loki,
    /// Pass every push on to this URL and answer what it answered.
    Gate(String),
}

struct Shared {
    role: Role,
    mode: Mutex<Mode>,
    pushes: Mutex<Vec<Push>>,
    hung: AtomicUsize,
    client: reqwest::Client,
}

/// An HTTP(S) push endpoint on a loopback listener it holds, served by a runtime of its own.
/// Stopped on drop.
pub struct PushReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl PushReceiver {
    /// A Loki push endpoint over plain HTTP.
    pub fn loki() -> PushReceiver {
        Self::start(Role::Loki, None)
    }

    /// A Loki push endpoint over HTTPS, with a certificate for `fqdn` signed by the fake
    /// tailnet's CA (as the homelab's reverse proxy has one for its `*.ts.net` name).
    pub fn loki_tls(fqdn: &str) -> PushReceiver {
        let config = fake_tailnet::server_config(fqdn, &[]).expect("server certificate");
        Self::start(Role::Loki, Some(tokio_rustls::TlsAcceptor::from(config)))
    }

    /// A gate in front of a real receiver at `forward_url`: pushes pass while it is
    /// [`Mode::Up`], and it can be taken down or hung without touching the receiver.
    pub fn gate(forward_url: &str) -> PushReceiver {
        Self::start(Role::Gate(forward_url.to_owned()), None)
    }

    fn start(role: Role, tls: Option<tokio_rustls::TlsAcceptor>) -> PushReceiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let shared = Arc::new(Shared {
            role,
            mode: Mutex::new(Mode::Up),
            pushes: Mutex::new(Vec::new()),
            hung: AtomicUsize::new(0),
            client: crate::client(),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("push-receiver")
            .enable_all()
            .build()
            .expect("receiver runtime");
        let state = shared.clone();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (state, tls) = (state.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, request).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        PushReceiver {
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Changes what it does with the next pushes.
    pub fn set_mode(&self, mode: Mode) {
        *self
            .shared
            .mode
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = mode;
    }

    /// Every push received so far, answered or not (hung ones are not listed).
    pub fn pushes(&self) -> Vec<Push> {
        let pushes = self.shared.pushes.lock();
        pushes.unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Pushes accepted (answered 2xx).
    pub fn accepted(&self) -> Vec<Push> {
        let mut pushes = self.pushes();
        pushes.retain(|p| (200..300).contains(&p.status));
        pushes
    }

    /// Pushes being held without an answer now ([`Mode::Hang`]).
    pub fn hung(&self) -> usize {
        self.shared.hung.load(Ordering::SeqCst)
    }

    /// Every entry of the accepted Loki pushes, in the order received, as Loki stores
    /// them: an entry identical to one stored already (same stream, time and line: a batch
    /// sent again after a push was cut off at shutdown) is not stored twice.
    pub fn loki_entries(&self) -> Vec<LokiEntry> {
        let mut entries: Vec<LokiEntry> = Vec::new();
        let received = self
            .accepted()
            .iter()
            .flat_map(|push| decode_loki(&push.body).unwrap_or_default())
            .collect::<Vec<_>>();
        for entry in received {
            if !entries.contains(&entry) {
                entries.push(entry);
            }
        }
        entries
    }
}

impl Drop for PushReceiver {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn answer(state: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(n, v)| {
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_owned(), value)
        })
        .collect();
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, "unreadable body"),
    };
    let mode = *state.mode.lock().unwrap_or_else(PoisonError::into_inner);
    let mut push = Push {
        path,
        headers,
        body,
        status: 0,
    };
    let (status, text) = match mode {
        Mode::Hang => {
            state.hung.fetch_add(1, Ordering::SeqCst);
            // Answers never; the count goes down if the client gives up and the runtime
            // drops this future.
            let _held = HungCount(&state.hung);
            std::future::pending::<()>().await;
            unreachable!("a pending future never completes")
        }
        Mode::Down => (
            StatusCode::SERVICE_UNAVAILABLE,
            "down for the test".to_owned(),
        ),
        Mode::Up => match &state.role {
            Role::Loki => accept_loki(&push),
            Role::Gate(url) => pass_on(&state.client, url, &push).await,
        },
    };
    push.status = status.as_u16();
    state
        .pushes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(push);
    reply(status, &text)
}

struct HungCount<'a>(&'a AtomicUsize);

impl Drop for HungCount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What Loki answers: 204 for a well-formed protobuf push, 400 otherwise.
fn accept_loki(push: &Push) -> (StatusCode, String) {
    if push.path != "/loki/api/v1/push" {
        return (StatusCode::NOT_FOUND, "404 page not found".into());
    }
    if push.header("content-type") != Some("application/x-protobuf") {
        return (
            StatusCode::BAD_REQUEST,
            "expected application/x-protobuf".into(),
        );
    }
    match decode_loki(&push.body) {
        Ok(_) => (StatusCode::NO_CONTENT, String::new()),
        Err(e) => (StatusCode::BAD_REQUEST, e),
    }
}

async fn pass_on(client: &reqwest::Client, url: &str, push: &Push) -> (StatusCode, String) {
    let mut request = client.post(url).body(push.body.clone());
    for (name, value) in &push.headers {
        if name.starts_with("content-") || name.starts_with("x-prometheus") {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(response) => {
            let status =
                StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, response.text().await.unwrap_or_default())
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

fn reply(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = status;
    response
}

/// Loki's `logproto.PushRequest`, declared here from `push.proto` independently of the
/// proxy's own declaration, so a wrong field number on either side fails the tests.
#[derive(Clone, PartialEq, prost::Message)]
struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    streams: Vec<StreamAdapter>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StreamAdapter {
    #[prost(string, tag = "1")]
    labels: String,
    #[prost(message, repeated, tag = "2")]
    entries: Vec<EntryAdapter>,
    #[prost(uint64, tag = "3")]
    hash: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    line: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Timestamp {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// A push body (snappy block format around protobuf, as Loki's clients send it) as entries.
pub fn decode_loki(body: &[u8]) -> Result<Vec<LokiEntry>, String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("not snappy: {e}"))?;
    let request = PushRequest::decode(raw.as_slice()).map_err(|e| format!("not a push: {e}"))?;
    let mut entries = Vec::new();
    for stream in request.streams {
        for entry in stream.entries {
            let at = entry.timestamp.ok_or("an entry without a timestamp")?;
            entries.push(LokiEntry {
                labels: stream.labels.clone(),
                seconds: at.seconds,
                nanos: at.nanos,
                line: entry.line,
            });
        }
    }
    Ok(entries)
}

/// A real Prometheus (Debian's `prometheus`), with its remote-write receiver on, listening
/// on a port it picked itself (read from its log) and storing into a temporary directory.
/// Killed on drop.
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts it and waits until it is ready (`/-/ready`).
    pub async fn start() -> Prometheus {
        let dir = tempfile::tempdir().expect("prometheus dir");
        let config = dir.path().join("prometheus.yml");
        // Nothing to scrape: everything it stores arrives by remote write.
        std::fs::write(&config, "global:\n  scrape_interval: 1h\n").expect("prometheus.yml");
        let mut child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--web.enable-remote-write-receiver")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run prometheus (installed by scripts/test.sh)");
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("prometheus stderr");
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("msg=\"Listening on\"") {
                    let addr = line
                        .split_whitespace()
                        .find_map(|field| field.strip_prefix("address="))
                        .and_then(|a| a.parse::<SocketAddr>().ok());
                    if let Some(addr) = addr {
                        let _ = addr_tx.send(addr);
                    }
                }
                let mut log = kept.lock().unwrap_or_else(PoisonError::into_inner);
                log.push_str(&line);
                log.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            if let Ok(addr) = addr_rx.try_recv() {
                break addr;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("prometheus never said where it listens:\n{}", text(&log));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let prometheus = Prometheus {
            child,
            addr,
            log,
            _dir: dir,
        };
        let ready = format!("http://{addr}/-/ready");
        assert!(
            poll_ready(&ready).await,
            "prometheus not ready:\n{}",
            prometheus.log()
        );
        prometheus
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        text(&self.log)
    }

    /// Evaluates `expr` now through the HTTP API; the `data` of the answer
    /// (`{"resultType": ..., "result": [...]}`), or the error Prometheus gave.
    pub async fn try_query(&self, expr: &str) -> Result<serde_json::Value, String> {
        let response = crate::client()
            .get(format!("http://{}/api/v1/query", self.addr))
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let text = response.text().await.map_err(|e| e.to_string())?;
        let body: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(format!("{expr}: {body}"));
        }
        Ok(body["data"].clone())
    }

    /// The series of an instant vector `expr`: each one's labels and value.
    pub async fn vector(&self, expr: &str) -> Vec<(serde_json::Value, f64)> {
        let data = self
            .try_query(expr)
            .await
            .unwrap_or_else(|e| panic!("query failed: {e}"));
        data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|series| {
                let value = series["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                (series["metric"].clone(), value)
            })
            .collect()
    }

    /// The value of a single-series instant vector `expr`, if it has exactly one series.
    pub async fn value(&self, expr: &str) -> Option<f64> {
        match self.vector(expr).await.as_slice() {
            [(_, value)] => Some(*value),
            _ => None,
        }
    }

    /// Every sample value of the series a range selector `expr` (`metric{...}[10m]`) holds.
    pub async fn samples(&self, expr: &str) -> Vec<f64> {
        let data = self
            .try_query(expr)
            .await
            .unwrap_or_else(|e| panic!("query failed: {e}"));
        data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|series| series["values"].as_array().cloned().unwrap_or_default())
            .filter_map(|pair| pair[1].as_str().and_then(|v| v.parse().ok()))
            .collect()
    }
}

async fn poll_ready(url: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(response) = crate::client().get(url).send().await {
            if response.status().is_success() {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn text(log: &Mutex<String>) -> String {
    log.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
