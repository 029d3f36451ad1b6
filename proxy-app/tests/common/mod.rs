//! Shared harness for proxy-app's integration tests: runs the real `proxy-app` binary against
//! an in-process fake tailnet, over real loopback sockets.

#![allow(dead_code)] // each test binary uses a different part of the harness

use fake_tailnet::{FakeTailnet, TailnetConfig};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `proxy-app` binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_proxy-app")
}

/// A free TCP port on 127.0.0.1 (bound then released; the proxy binds it right after).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
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

/// The `[server]` and `[resolver]` sections every test config starts with.
pub fn base_config(listen: u16, tailnet: &FakeTailnet) -> String {
    base_config_with_admin(listen, free_port(), tailnet)
}

/// [`base_config`] with the admin listener on a port the test knows.
pub fn base_config_with_admin(listen: u16, admin: u16, tailnet: &FakeTailnet) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{listen}"]
threads = 1
grace_period = "3s"
shutdown_timeout = "1s"
unknown_host = 421

[admin]
listen = "127.0.0.1:{admin}"

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

/// A running `proxy-app run` process. Killed on drop.
pub struct Proxy {
    child: Option<Child>,
    /// Public listener.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Proxy {
    /// Writes `config` (use `{port}` where the public port goes... or pass a full config made
    /// with [`base_config`]) and starts the proxy; waits until `/healthz` answers.
    pub fn start(port: u16, config: &str) -> Proxy {
        Self::start_with_files(port, config, &[])
    }

    /// Like [`Proxy::start`], with extra files written next to the config first.
    pub fn start_with_files(port: u16, config: &str, files: &[(&str, &[u8])]) -> Proxy {
        Self::start_under(&[], &[], port, config, files)
    }

    /// Like [`Proxy::start_with_files`], with `args` after `run --config FILE`, and the
    /// whole `proxy-app run ...` appended to `wrapper`'s arguments (e.g. a program that
    /// sets up a mount namespace and then execs it). The wrapper must exec the proxy, so
    /// that the process started is the proxy's.
    pub fn start_under(
        wrapper: &[&str],
        args: &[&str],
        port: u16,
        config: &str,
        files: &[(&str, &[u8])],
    ) -> Proxy {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, content) in files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("create test dir");
            }
            std::fs::write(path, content).expect("write test file");
        }
        let config_path = dir.path().join("proxy.toml");
        std::fs::write(&config_path, config).expect("write config");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary());
                command
            }
            None => Command::new(binary()),
        };
        let child = command
            .args(["run", "--config"])
            .arg(&config_path)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn proxy-app");
        let mut proxy = Proxy {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        proxy.wait_ready();
        proxy
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit_status() {
                panic!("proxy-app exited early ({status}):\n{}", self.logs());
            }
            let response = raw_request(
                self.addr,
                "GET /healthz HTTP/1.1\r\nHost: ready.check\r\nConnection: close\r\n\r\n",
            );
            if response.starts_with("HTTP/1.1 200") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("proxy-app did not become ready:\n{}", self.logs());
    }

    /// A URL on the public listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The process's stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The directory holding the config (for files the test edits while it runs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal (e.g. "TERM", "HUP") to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Exit status if the process has exited.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Whether the process is still running.
    pub fn try_exit_status_is_none(&mut self) -> bool {
        self.try_exit_status().is_none()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit_status() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// Current resident memory (VmRSS) in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// GET on the admin listener; returns status and body.
pub async fn admin_get(admin: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = client().get(format!("http://127.0.0.1:{admin}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("admin request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// The admin listener's `/metrics` text (asserting it answered 200).
pub async fn scrape(admin: u16) -> String {
    let (status, body) = admin_get(admin, "/metrics", None).await;
    assert_eq!(status, 200, "{body}");
    body
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
pub async fn get(proxy: &Proxy, host: &str, path: &str) -> Reply {
    let response = client()
        .get(proxy.url(path))
        .header("host", host)
        .send()
        .await
        .expect("request through the proxy");
    Reply::read(response).await
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
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

/// Path of a file in the repository's `testdata/`.
pub fn testdata(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(path)
}

/// `proxy-app demo` on free ports (its fake tailnet runs inside it), killed on drop.
pub struct Demo {
    child: Child,
    /// Public listener.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Demo {
    /// Starts the demo and waits until its public port answers `/healthz`.
    pub async fn start() -> Demo {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let stdout = std::fs::File::create(dir.path().join("out.log")).expect("log file");
        let child = Command::new(binary())
            .args(["demo", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin", &format!("127.0.0.1:{}", free_port())])
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn proxy-app demo");
        let demo = Demo {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        let health = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let ready = eventually(Duration::from_secs(30), || {
            raw_request(demo.addr, health).starts_with("HTTP/1.1 200")
        })
        .await;
        assert!(ready, "demo never became ready");
        demo
    }

    /// What the demo printed so far (the curl commands to try).
    pub fn printed(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("out.log")).unwrap_or_default()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
