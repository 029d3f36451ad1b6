//! Shared harness for proxy-app's integration tests: runs the real `proxy-app` binary against
//! an in-process fake tailnet, over real loopback sockets.
//!
//! Ports: a test config listens on port 0 ([`PUBLIC_LISTEN`], [`ADMIN_LISTEN`]), so the
//! kernel gives the proxy free ports as it binds them and the proxy holds them from then on;
//! the harness then reads the addresses the process really listens on from the kernel's
//! socket table (`/proc`). No port is ever bound, released and bound again, so no test can
//! race another for one. Public and admin listeners are told apart by their loopback address.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub use testkit::*;

pub mod encoded;

use fake_tailnet::FakeTailnet;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Where test configs put the public listener: the kernel picks the port.
pub const PUBLIC_LISTEN: &str = "127.0.0.1:0";
/// Where test configs put the admin listener: another loopback address, port from the kernel.
pub const ADMIN_LISTEN: &str = "127.0.0.2:0";
const PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const ADMIN_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// The `proxy-app` binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_proxy-app")
}

/// Runs `proxy-app check` on `config` (written as `edge.toml`): whether it passed, and what
/// it printed (stderr, then stdout).
pub fn check(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text)
}

/// The `[server]`, `[admin]` and `[resolver]` sections every test config starts with.
pub fn base_config(tailnet: &FakeTailnet) -> String {
    format!(
        r#"
[server]
listen = ["{PUBLIC_LISTEN}"]
threads = 1
grace_period = "3s"
shutdown_timeout = "1s"
unknown_host = 421

[admin]
listen = "{ADMIN_LISTEN}"

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

/// The TCP addresses a process and its descendants listen on, read from the kernel: the
/// sockets among their open files that `/proc/net/tcp{,6}` lists as listening.
pub fn listening_addrs(pid: u32) -> Vec<SocketAddr> {
    let mut inodes = HashSet::new();
    for pid in process_tree(pid) {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
            {
                inodes.insert(inode.to_string());
            }
        }
    }
    let mut addrs = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if *state == "0A" && inodes.contains(*inode) {
                addrs.extend(parse_proc_addr(local));
            }
        }
    }
    addrs
}

/// `pid` and every process below it (a wrapper's child, a script's proxy).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // The parent pid follows the command name, which sits in parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((child, ppid));
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    tree
}

/// `0100007F:1F90` (IPv4, bytes in host order) or its 32-digit IPv6 form.
fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::from(u32::from_str_radix(ip, 16).ok()?.to_le_bytes()),
        32 => {
            let mut bytes = [0u8; 16];
            for (word, chunk) in ip.as_bytes().chunks(8).enumerate() {
                let value = u32::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
                bytes[word * 4..word * 4 + 4].copy_from_slice(&value.to_le_bytes());
            }
            IpAddr::from(bytes)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The public listener of `pid` (or of a process below it), once it listens.
pub fn public_listener(pid: u32) -> Option<SocketAddr> {
    listener_on(pid, PUBLIC_IP)
}

/// The address `pid` (or a process below it) listens on at `ip`, once it does.
fn listener_on(pid: u32, ip: Ipv4Addr) -> Option<SocketAddr> {
    listening_addrs(pid)
        .into_iter()
        .find(|addr| addr.ip() == IpAddr::V4(ip))
}

/// A running `proxy-app run` process. Killed on drop.
pub struct Proxy {
    child: Option<Child>,
    /// Public listener.
    pub addr: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    dir: tempfile::TempDir,
}

impl Proxy {
    /// Writes `config` (made with [`base_config`], or listening on [`PUBLIC_LISTEN`] and
    /// [`ADMIN_LISTEN`]) and starts the proxy; waits until `/healthz` answers.
    pub fn start(config: &str) -> Proxy {
        Self::start_with_files(config, &[])
    }

    /// Like [`Proxy::start`], with extra files written next to the config first.
    pub fn start_with_files(config: &str, files: &[(&str, &[u8])]) -> Proxy {
        Self::start_under(&[], &[], config, files)
    }

    /// Like [`Proxy::start_with_files`], with `args` after `run --config FILE`, and the
    /// whole `proxy-app run ...` appended to `wrapper`'s arguments (e.g. a program that
    /// sets up a mount namespace and then execs it).
    pub fn start_under(
        wrapper: &[&str],
        args: &[&str],
        config: &str,
        files: &[(&str, &[u8])],
    ) -> Proxy {
        let mut proxy = Self::spawn_under(wrapper, args, config, files);
        proxy.wait_ready();
        proxy
    }

    /// Like [`Proxy::start_under`] without waiting: the addresses are unknown until
    /// [`Proxy::wait_ready`] returns (e.g. a process that waits for an upgrade handover).
    pub fn spawn_under(
        wrapper: &[&str],
        args: &[&str],
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
        let unbound = SocketAddr::from(([0, 0, 0, 0], 0));
        Proxy {
            child: Some(child),
            addr: unbound,
            admin: unbound,
            dir,
        }
    }

    /// Waits until the process listens on both addresses and answers `/healthz`.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit_status() {
                panic!("proxy-app exited early ({status}):\n{}", self.logs());
            }
            let pid = self.pid();
            if let (Some(public), Some(admin)) =
                (listener_on(pid, PUBLIC_IP), listener_on(pid, ADMIN_IP))
            {
                self.addr = public;
                self.admin = admin;
                let response = raw_request(
                    public,
                    "GET /healthz HTTP/1.1\r\nHost: ready.check\r\nConnection: close\r\n\r\n",
                );
                if response.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("proxy-app did not become ready:\n{}", self.logs());
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

    /// What the process listens on now.
    pub fn listening(&self) -> Vec<SocketAddr> {
        listening_addrs(self.pid())
    }

    /// Sends a signal (e.g. "TERM", "HUP") to the process.
    pub fn signal(&self, name: &str) {
        send_signal(self.pid(), name);
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

impl Served for Proxy {
    fn addr(&self) -> SocketAddr {
        self.addr
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

/// Sends the signal `name` ("TERM", "HUP", ...) to `pid`.
pub fn send_signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} failed");
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

/// `proxy-app demo` listening on ports the kernel picks (its fake tailnet runs inside it),
/// killed on drop.
pub struct Demo {
    child: Child,
    /// Public listener.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Demo {
    /// Starts the demo and waits until its public port answers `/healthz`.
    pub async fn start() -> Demo {
        let dir = tempfile::tempdir().expect("temp dir");
        let stdout = std::fs::File::create(dir.path().join("out.log")).expect("log file");
        let mut child = Command::new(binary())
            .args(["demo", "--listen", PUBLIC_LISTEN, "--admin", ADMIN_LISTEN])
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn proxy-app demo");
        let pid = child.id();
        let health = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let mut addr = None;
        let ready = eventually(Duration::from_secs(30), || {
            addr = listener_on(pid, PUBLIC_IP);
            addr.is_some_and(|addr| raw_request(addr, health).starts_with("HTTP/1.1 200"))
        })
        .await;
        if !ready {
            let _ = child.kill();
            panic!("demo never became ready");
        }
        Demo {
            child,
            addr: addr.expect("listening"),
            dir,
        }
    }

    /// What the demo printed so far (the curl commands to try).
    pub fn printed(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("out.log")).unwrap_or_default()
    }
}

impl Served for Demo {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
