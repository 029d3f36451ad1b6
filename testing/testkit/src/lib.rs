//! # testkit
//!
//! What the workspace's integration tests share, whatever runs the proxy (proxy-core's
//! in-process harness or the `proxy-app` binary): the fake tailnet on its own thread, an HTTP
//! client that never uses a system proxy or follows redirects, whole responses, raw requests
//! over a socket, polling, the admin listener's endpoints, and the receivers of the proxy's
//! telemetry ([`telemetry`]: a Loki push endpoint, a gate, a real Prometheus), a real Redis
//! behind a relay the test controls ([`redis`]), and a real browser ([`browser`]: headless
//! Chromium over the DevTools protocol). It depends on
//! nothing of the proxy's, so every crate's tests can use it.
//!
//! Not for: starting a proxy (each crate's `tests/common` does, its own way), or assertions.

#![deny(missing_docs)]

pub use fake_tailnet;

pub mod browser;
pub mod redis;
pub mod telemetry;

use fake_tailnet::{FakeTailnet, TailnetConfig};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Something serving HTTP on a public listener (a proxy under test).
pub trait Served {
    /// The public listener's address.
    fn addr(&self) -> SocketAddr;

    /// A URL on the public listener.
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr(), path)
    }
}

/// Starts a fake tailnet with the given peers (short names), on its own runtime thread so
/// that blocking test code (starting the proxy, raw sockets) never stalls its DNS or peers.
pub async fn tailnet(peers: &[&str]) -> FakeTailnet {
    tailnet_with(TailnetConfig::new(peers))
}

/// Starts a fake tailnet from a full config, on its own runtime thread.
pub fn tailnet_with(config: TailnetConfig) -> FakeTailnet {
    FakeTailnet::start_in_thread(config).expect("start fake tailnet")
}

/// An HTTP client that never uses a system proxy and never follows redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build client")
}

/// GET `path` with the given Host header; returns status, headers and body text.
pub async fn get(server: &impl Served, host: &str, path: &str) -> Reply {
    get_on(&client(), server, host, path).await
}

/// [`get`] on `client`, whose keep-alive connection to the server is reused from one call
/// to the next.
pub async fn get_on(
    client: &reqwest::Client,
    server: &impl Served,
    host: &str,
    path: &str,
) -> Reply {
    let response = client
        .get(server.url(path))
        .header("host", host)
        .send()
        .await
        .expect("request through the proxy");
    Reply::read(response).await
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body, as text.
    pub body: String,
}

impl Reply {
    /// Reads a reqwest response.
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("read body");
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A header value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends raw bytes and reads until the server closes or 2 s pass; returns what came back
/// (empty if the connection was closed without a response).
pub fn raw_request(addr: SocketAddr, request: &str) -> String {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A raw connection to `addr` whose reads give up after 15 s.
pub fn raw_connection(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("read timeout");
    stream
}

/// Reads one response off `stream`: its status line and headers, and a body of its
/// `Content-Length`; what arrived, if the stream ends or times out before a whole head.
pub fn read_response(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return String::from_utf8_lossy(&head).into_owned(),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("read body");
    head + &String::from_utf8_lossy(&body)
}

/// Polls `check` every 100 ms until it is true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check()
}

/// GET on the admin listener at `admin`; returns status and body.
pub async fn admin_get(admin: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = client().get(format!("http://{admin}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("admin request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// The admin listener's `/metrics` text (asserting it answered 200).
pub async fn scrape(admin: SocketAddr) -> String {
    let (status, body) = admin_get(admin, "/metrics", None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Path of a file in the repository's `testdata/`.
pub fn testdata(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(path)
}
