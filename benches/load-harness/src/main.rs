//! `load-harness`: load-tests proxy-app against a local fake tailnet, side by side with nginx
//! configured the same way, and writes the numbers to `benches/RESULTS.md`.
//!
//! The servers run pinned to core 0, the load generator (wrk) and the fake tailnet to core
//! 1; each scenario alternates proxy-app / nginx / direct runs (A/B/A/B) and reports
//! medians with their spread. Everything listens on loopback; every run is bounded in time.
//! Run it through `benches/run.sh`, which builds what it needs first.

mod measure;
mod report;
mod scenario;

use anyhow::{bail, Context, Result};
use clap::Parser;
use fake_tailnet::{FakeTailnet, TailnetConfig, TAILNET_CA_PEM};
use measure::{children, cpu_seconds, peak_rss_mib, wrk, Sample};
use report::{Report, Row};
use scenario::{Scenario, Upstream};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Load-test proxy-app against a fake tailnet, side by side with nginx")]
struct Args {
    /// Every scenario briefly (about a minute in all), to check the harness itself.
    #[arg(long)]
    quick: bool,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 8)]
    duration: u64,
    /// Runs per server per scenario (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Only these scenarios (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// The proxy-app binary to test.
    #[arg(long)]
    proxy_bin: PathBuf,
    /// Where to write the Markdown report (default: print only).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The command line to record in the report.
    #[arg(long, default_value = "benches/run.sh")]
    command: String,
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.duration = 1;
        args.rounds = 1;
    }
    raise_fd_limit();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = pin_self_to_core(1);
    let tailnet = FakeTailnet::start_in_thread(TailnetConfig::new(&["peer"]))
        .context("starting the fake tailnet")?;
    let dir = tempfile::tempdir()?;
    let ca_file = dir.path().join("tailnet-ca.pem");
    std::fs::write(&ca_file, TAILNET_CA_PEM)?;
    let peer = tailnet.peer("peer").context("peer missing")?;
    let fqdn = peer.fqdn().to_string();
    let upstream = Upstream {
        fqdn: &fqdn,
        http: peer.http_addr(),
        https: peer.https_addr(),
        dns: tailnet.dns_addr(),
        ca_file: &ca_file,
    };

    let duration = Duration::from_secs(args.duration);
    let mut report = Report::new(&args.command, cores, pinned, duration, args.rounds);
    let direct = measure_direct(&upstream, 32, duration, args.rounds)?;
    report.direct(Row::from_samples("direct origin", &direct, 0.0));
    for scenario in scenario::all() {
        if !args.scenarios.is_empty() && !args.scenarios.iter().any(|n| n == scenario.name) {
            continue;
        }
        eprintln!("scenario {} ...", scenario.name);
        let rows = run_scenario(&scenario, &args, &upstream, dir.path(), duration)
            .with_context(|| format!("scenario {}", scenario.name))?;
        report.scenario(&scenario, rows);
    }
    let text = report.render();
    println!("{text}");
    if let Some(out) = &args.out {
        std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

fn measure_direct(
    up: &Upstream<'_>,
    connections: u32,
    duration: Duration,
    rounds: usize,
) -> Result<Vec<Sample>> {
    let url = format!("http://{}/bench?size=1024", up.http);
    (0..rounds)
        .map(|_| wrk(&url, up.fqdn, connections, duration))
        .collect()
}

/// A server under test: its process and how to reach it.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Waits until the server on `port` answers the scenario's request.
    fn ready(child: Child, port: u16, s: &Scenario) -> Result<Server> {
        let server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        wait_ready(server.addr, &s.host(), &s.path())?;
        Ok(server)
    }

    /// The server process and its children (nginx's worker).
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.child.id()];
        pids.extend(children(self.child.id()));
        pids
    }

    fn measure(&self, s: &Scenario, duration: Duration) -> Result<Sample> {
        let pids = self.pids();
        let before = cpu_seconds(&pids);
        let url = format!("http://{}{}", self.addr, s.path());
        let mut sample = wrk(&url, &s.host(), s.connections, duration)?;
        sample.cpu_seconds = cpu_seconds(&pids) - before;
        Ok(sample)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_scenario(
    s: &Scenario,
    args: &Args,
    up: &Upstream<'_>,
    dir: &Path,
    duration: Duration,
) -> Result<Vec<Row>> {
    let proxy = start_proxy(s, &args.proxy_bin, up, dir)?;
    let nginx = start_nginx(s, up, dir)?;
    // Warm both up (connection pools, TLS sessions) before measuring.
    proxy.measure(s, Duration::from_secs(1))?;
    nginx.measure(s, Duration::from_secs(1))?;
    let (mut proxy_samples, mut nginx_samples) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        proxy_samples.push(proxy.measure(s, duration)?);
        nginx_samples.push(nginx.measure(s, duration)?);
    }
    Ok(vec![
        Row::from_samples("proxy-app", &proxy_samples, peak_rss_mib(&proxy.pids())),
        Row::from_samples("nginx", &nginx_samples, peak_rss_mib(&nginx.pids())),
    ])
}

fn start_proxy(s: &Scenario, bin: &Path, up: &Upstream<'_>, dir: &Path) -> Result<Server> {
    let port = free_port()?;
    let config = dir.join(format!("{}-proxy.toml", s.name));
    std::fs::write(&config, scenario::proxy_config(s, port, free_port()?, up))?;
    let log = std::fs::File::create(dir.join(format!("{}-proxy.log", s.name)))?;
    let child = pinned_command(bin.as_os_str())
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Server::ready(child, port, s)
}

fn start_nginx(s: &Scenario, up: &Upstream<'_>, dir: &Path) -> Result<Server> {
    let port = free_port()?;
    let nginx_dir = dir.join(format!("{}-nginx", s.name));
    std::fs::create_dir_all(&nginx_dir)?;
    let config = nginx_dir.join("nginx.conf");
    std::fs::write(&config, scenario::nginx_config(s, port, &nginx_dir, up))?;
    let child = pinned_command("nginx".as_ref())
        .arg("-c")
        .arg(&config)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx (apt-get install nginx)")?;
    Server::ready(child, port, s)
}

fn pinned_command(program: &std::ffi::OsStr) -> Command {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return Command::new(program);
    }
    let mut command = Command::new("taskset");
    command.args(["-c", "0"]).arg(program);
    command
}

/// Pins this process (and the threads it starts later) to `core`, so the load generator
/// and the fake tailnet never compete with the server under test.
fn pin_self_to_core(core: usize) -> bool {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) <= core {
        return false;
    }
    Command::new("taskset")
        .args([
            "-a",
            "-cp",
            &core.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn raise_fd_limit() {
    let limit = libc::rlimit {
        rlim_cur: 65_536,
        rlim_max: 65_536,
    };
    // SAFETY: setrlimit reads a valid struct; failure only leaves the old limit.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_ready(addr: SocketAddr, host: &str, path: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if get_status(addr, host, path).is_some_and(|status| status == "200") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("server on {addr} never answered 200 for {host}{path}")
}

fn get_status(addr: SocketAddr, host: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    Some(String::from_utf8_lossy(&head[9..12]).into_owned())
}
