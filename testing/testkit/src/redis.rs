//! A real Redis for fleet tests: Debian's `redis-server`, started by the test on a unix
//! socket in a temporary directory (it listens on no TCP port at all), and [`RedisRelay`], a
//! TCP relay in front of it whose listener the test holds, so proxies get a `redis://` URL
//! without any port being bound, released and bound again. The relay can add a delay to
//! every command and be cut, to play a slow or unreachable Redis.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A `redis-server` on a unix socket, killed on drop. Nothing is persisted.
pub struct RedisServer {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` (from Debian's `redis-server` package) and waits until it
    /// answers `PING`.
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = RedisServer { dir, child: None };
        server.restart();
        server
    }

    /// The unix socket it listens on.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// Whether it runs now.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills it (its data is gone, as a Redis without persistence restarting loses it).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    /// Starts it (again) on the same socket; waits until it answers `PING`.
    pub fn restart(&mut self) {
        self.stop();
        let socket = self.socket();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (Debian package redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.cli(&["PING"]).trim() == "PONG" {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer PING on {}", socket.display());
    }

    /// Runs `redis-cli` against it with `args`; returns what it printed (empty if it failed).
    pub fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .arg("-s")
            .arg(self.socket())
            .args(args)
            .stderr(Stdio::null())
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default()
    }

    /// One value of `INFO` (e.g. `total_commands_processed`), if it answers.
    pub fn info(&self, field: &str) -> Option<u64> {
        let prefix = format!("{field}:");
        self.cli(&["INFO", "all"])
            .lines()
            .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a relay does to the connections it carries.
#[derive(Default)]
struct RelayState {
    delay_ms: AtomicU64,
    cut: AtomicBool,
    /// Bumped on each cut: connections of an older generation close.
    generation: AtomicU64,
}

/// A TCP relay to a unix socket, on a listener bound by the test (loopback, port from the
/// kernel) and held for the relay's life, running on its own thread. A TLS relay ends TLS
/// itself (as a Redis with `tls-port` would) with a certificate for `127.0.0.1` signed by
/// the fake tailnet's CA, and passes the plain RESP stream on.
pub struct RedisRelay {
    addr: SocketAddr,
    state: Arc<RelayState>,
    tls: bool,
}

impl RedisRelay {
    /// Relays connections to `127.0.0.1:<port>` to the unix socket `target`.
    pub fn start(target: &Path) -> RedisRelay {
        Self::start_with(target, None)
    }

    /// Relays TLS connections to `127.0.0.1:<port>` to the unix socket `target`; the server
    /// certificate is for `127.0.0.1` (and `redis.test`), signed by the tailnet CA
    /// ([`fake_tailnet::ca_pem_file`]).
    pub fn start_tls(target: &Path) -> RedisRelay {
        let config = fake_tailnet::server_config("redis.test", &["127.0.0.1".to_owned()])
            .expect("TLS config for the relay");
        let mut config = (*config).clone();
        config.alpn_protocols.clear();
        Self::start_with(
            target,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
    }

    fn start_with(target: &Path, tls: Option<tokio_rustls::TlsAcceptor>) -> RedisRelay {
        let secure = tls.is_some();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        listener.set_nonblocking(true).expect("nonblocking");
        let state = Arc::new(RelayState::default());
        let target = target.to_path_buf();
        let shared = state.clone();
        std::thread::Builder::new()
            .name("redis-relay".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("relay runtime");
                runtime.block_on(relay(listener, target, tls, shared));
            })
            .expect("relay thread");
        RedisRelay {
            addr,
            state,
            tls: secure,
        }
    }

    /// Where proxies connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// URL of the relay: `redis://`, or `rediss://` for a TLS relay.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://{}", self.addr)
    }

    /// Holds everything a client sends for `delay` before passing it on (0: none).
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Closes every connection and refuses new ones (`true`), or lets them through again.
    pub fn set_cut(&self, cut: bool) {
        self.state.cut.store(cut, Ordering::Relaxed);
        if cut {
            self.state.generation.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn relay(
    listener: std::net::TcpListener,
    target: PathBuf,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<RelayState>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("relay listener");
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if state.cut.load(Ordering::Relaxed) {
            drop(client);
            continue;
        }
        let (target, state, tls) = (target.clone(), state.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => carry(client, target, state).await,
                Some(acceptor) => {
                    // A client that does not trust the certificate gives up in the handshake.
                    if let Ok(client) = acceptor.accept(client).await {
                        carry(client, target, state).await;
                    }
                }
            }
        });
    }
}

/// Carries one client connection to the unix socket `target` and back, with the relay's
/// delay, until either side closes or the relay is cut.
async fn carry<S>(client: S, target: PathBuf, state: Arc<RelayState>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let Ok(server) = tokio::net::UnixStream::connect(&target).await else {
        return;
    };
    let generation = state.generation.load(Ordering::Relaxed);
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = client_read.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            let delay = state.delay_ms.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = tokio::io::copy(&mut server_read, &mut client_write);
    let cut = async {
        while state.generation.load(Ordering::Relaxed) == generation {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
        _ = cut => {}
    }
}
