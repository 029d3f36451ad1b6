//! `load-harness`: load-tests proxy-app against a local fake tailnet, side by side with nginx
//! configured the same way, and writes the numbers to `benches/RESULTS.md`.
//!
//! The servers run pinned to core 0, the load generator (wrk) and the fake tailnet to core
//! 1; each scenario alternates proxy-app / nginx / direct runs (A/B/A/B) and reports
//! medians with their spread; the `cache-fill-*` scenarios instead fill proxy-app's cache
//! with distinct objects and report its memory (see [`fill`]); `observed-1k` also counts
//! proxy-app's instructions per request under callgrind (see [`callgrind`]). Everything listens on
//! loopback, except the peer of the `wan-*` scenarios: it gets a network namespace of its
//! own behind a veth pair with a round-trip delay (see [`netns`]), removed again on exit, on
//! error and on Ctrl-C. Every run is bounded in time. Run it through `benches/run.sh`, which
//! builds what it needs first.

mod callgrind;
mod fill;
mod measure;
mod netns;
mod report;
mod scenario;
mod signals;

use anyhow::{bail, Context, Result};
use clap::Parser;
use fake_tailnet::{FakeTailnet, PeerSpec, TailnetConfig, TAILNET_CA_PEM};
use measure::{children, cpu_seconds, peak_rss_mib, wrk, Sample};
use netns::{DelayMethod, Netns};
use report::{FillRow, Report, Row, DIRECT, LAZY_COMMIT, NO_KEEPALIVE, UNOBSERVED};
use scenario::{Scenario, Upstream, Work};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
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
    /// Round-trip delay of the `wan-*` scenarios' path (tc netem, half on each veth end).
    #[arg(long, default_value = "20ms", value_parser = netns::parse_delay)]
    netem_delay: Duration,
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.duration = 1;
        args.rounds = 1;
    }
    signals::install().context("installing signal handlers")?;
    netns::remove_stale();
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
    let scenarios: Vec<Scenario> = scenario::all()
        .into_iter()
        .filter(|s| args.scenarios.is_empty() || args.scenarios.iter().any(|n| n == s.name))
        .map(|s| if args.quick { s.quick() } else { s })
        .collect();
    // Declared after `tailnet`, so it is dropped first: its peer, then its namespace.
    let wan_wanted = scenarios.iter().any(|s| s.wan);
    let wan = if wan_wanted {
        WanPeer::start(&tailnet, args.netem_delay).map_err(|e| format!("{e:#}"))
    } else {
        Err("not selected".to_string())
    };
    match &wan {
        Ok(wan) => report.note(&wan.describe()),
        Err(why) if wan_wanted => eprintln!("skipping the wan-* scenarios, no slow path: {why}"),
        Err(_) => {}
    }
    let direct = measure_direct(&upstream, 32, duration, args.rounds)?;
    report.direct(Row::from_samples(DIRECT, &direct, 0.0));
    for scenario in &scenarios {
        let (up, note) = match (scenario.wan, &wan) {
            (false, _) => (upstream, None),
            (true, Ok(wan)) => (
                wan.upstream(&upstream),
                Some(scenario::wan_note(scenario, wan.rtt, wan.probe.1)),
            ),
            (true, Err(why)) => {
                report.skipped(scenario, &format!("no slow path ({why})"));
                continue;
            }
        };
        eprintln!("scenario {} ...", scenario.name);
        if scenario.work == Work::CacheFill {
            let rows = run_fill_scenario(scenario, &args, &up, dir.path())
                .with_context(|| format!("scenario {}", scenario.name))?;
            report.fill(scenario, rows, args.rounds);
            continue;
        }
        let rows = run_scenario(scenario, &args, &up, dir.path(), duration)
            .with_context(|| format!("scenario {}", scenario.name))?;
        // wrk's req/s are too noisy for a few percent: count instructions too.
        let note = match scenario.observed {
            true => Some(
                callgrind::observed_note(scenario, &args, &up, dir.path())
                    .with_context(|| format!("scenario {}, callgrind", scenario.name))?,
            ),
            false => note,
        };
        report.scenario(scenario, rows, note.as_deref());
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

/// Name of the peer behind the slow path.
const WAN_PEER: &str = "wan";

/// How long a server may take to answer its scenario's request after starting.
const READY_LIMIT: Duration = Duration::from_secs(20);

/// The fake peer of the `wan-*` scenarios: in a network namespace of its own, behind a veth
/// pair with a round-trip delay, and in the root tailnet's DNS.
struct WanPeer {
    /// Declared first, so the peer stops before the namespace is removed.
    tailnet: FakeTailnet,
    netns: Netns,
    rtt: Duration,
    /// A GET over the path on a new connection, and on a reused one.
    probe: (Duration, Duration),
}

impl WanPeer {
    fn start(root: &FakeTailnet, rtt: Duration) -> Result<WanPeer> {
        let netns = Netns::create(rtt)?;
        let mut spec = PeerSpec::new(WAN_PEER).with_ip(netns.peer_ip);
        if let DelayMethod::UserSpace { why } = &netns.method {
            eprintln!("tc netem unavailable ({why}): the fake peer adds the delay in user space");
            spec = spec.with_emulated_rtt(rtt);
        }
        let config = TailnetConfig {
            domain: root.domain().to_string(),
            peers: vec![spec],
            ..TailnetConfig::default()
        };
        let tailnet = netns
            .run_inside(|| FakeTailnet::start_in_thread(config))?
            .context("starting the peer in the namespace")?;
        let peer = tailnet.peer(WAN_PEER).context("peer missing")?;
        root.set_answer(peer.fqdn(), vec![peer.ip()]);
        let probe = netns::probe(peer.http_addr(), peer.fqdn()).context("a GET over the path")?;
        if probe.1 < rtt * 9 / 10 {
            bail!("the path adds no delay: a GET took {:?}", probe.1);
        }
        Ok(WanPeer {
            tailnet,
            netns,
            rtt,
            probe,
        })
    }

    fn peer(&self) -> &fake_tailnet::FakePeer {
        self.tailnet.peers().next().expect("one peer")
    }

    /// The upstream for the scenarios: this peer, with the root tailnet's DNS and CA.
    fn upstream<'a>(&'a self, root: &Upstream<'a>) -> Upstream<'a> {
        let peer = self.peer();
        Upstream {
            fqdn: peer.fqdn(),
            http: peer.http_addr(),
            https: peer.https_addr(),
            ..*root
        }
    }

    /// The report's line about the path.
    fn describe(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let half = ms(self.rtt) / 2.0;
        let how = match &self.netns.method {
            DelayMethod::Netem => format!("`tc netem` ({half:.1} ms on each veth end)"),
            DelayMethod::UserSpace { why } => format!(
                "the fake peer's user-space delay line ({half:.1} ms each way, plus a round trip before a new connection's first bytes), because `tc netem` failed ({why})"
            ),
        };
        format!(
            "wan-* scenarios: the fake peer runs in network namespace `{ns}` at {peer}, joined by a veth pair to {root} (/30) in the root namespace where the servers, wrk and DNS run; {rtt:.0} ms round trip from {how}. A GET over the path took {first:.1} ms on a new connection and {reused:.1} ms on a reused one.",
            ns = self.netns.name,
            peer = self.netns.peer_ip,
            root = self.netns.root_ip,
            rtt = ms(self.rtt),
            first = ms(self.probe.0),
            reused = ms(self.probe.1),
        )
    }
}

/// A server under test: its process and how to reach it.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Waits until the server on `port` answers the scenario's request.
    fn ready(child: Child, port: u16, s: &Scenario) -> Result<Server> {
        Server::ready_within(child, port, s, READY_LIMIT)
    }

    /// Waits at most `limit` until the server on `port` answers the scenario's request.
    fn ready_within(child: Child, port: u16, s: &Scenario, limit: Duration) -> Result<Server> {
        signals::track_child(child.id());
        let server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        wait_ready(server.addr, &s.host(), &s.path(), limit)?;
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
        // nginx's worker and cache manager outlive a killed master: kill them after it
        // (not before, or the master would start new ones).
        let kids = children(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in kids {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        signals::untrack_child(self.child.id());
    }
}

fn run_scenario(
    s: &Scenario,
    args: &Args,
    up: &Upstream<'_>,
    dir: &Path,
    duration: Duration,
) -> Result<Vec<Row>> {
    let proxy = start_proxy(s, &args.proxy_bin, up, dir, "", &[])?;
    let nginx = start_nginx(s, up, dir, true)?;
    // The observed scenario also runs proxy-app without metrics and log: their cost.
    let unobserved = match s.observed {
        true => {
            let plain = Scenario {
                observed: false,
                ..s.clone()
            };
            Some(start_proxy(
                &plain,
                &args.proxy_bin,
                up,
                dir,
                "-unobserved",
                &[],
            )?)
        }
        false => None,
    };
    // The wan-* pass-through scenarios also show what not reusing upstream connections costs.
    let no_reuse = match (s.wan, s.work) {
        (true, Work::PassThrough | Work::PassThroughTls) => Some(start_nginx(s, up, dir, false)?),
        _ => None,
    };
    // Warm them up (connection pools, TLS sessions) before measuring.
    for server in [
        Some(&proxy),
        Some(&nginx),
        no_reuse.as_ref(),
        unobserved.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        server.measure(s, Duration::from_secs(1))?;
    }
    let (mut proxy_samples, mut nginx_samples) = (Vec::new(), Vec::new());
    let (mut no_reuse_samples, mut direct_samples) = (Vec::new(), Vec::new());
    let mut unobserved_samples = Vec::new();
    for _ in 0..args.rounds {
        proxy_samples.push(proxy.measure(s, duration)?);
        // Right after proxy-app, so that each pair meets the same machine (see `paired`).
        if let Some(unobserved) = &unobserved {
            unobserved_samples.push(unobserved.measure(s, duration)?);
        }
        nginx_samples.push(nginx.measure(s, duration)?);
        if let Some(no_reuse) = &no_reuse {
            no_reuse_samples.push(no_reuse.measure(s, duration)?);
        }
        if s.wan {
            direct_samples.push(measure_wan_direct(s, up, duration)?);
        }
    }
    let mut rows = vec![
        Row::from_samples("proxy-app", &proxy_samples, peak_rss_mib(&proxy.pids())),
        Row::from_samples("nginx", &nginx_samples, peak_rss_mib(&nginx.pids()))
            .paired(&proxy_samples, &nginx_samples),
    ];
    if let Some(no_reuse) = &no_reuse {
        let rss = peak_rss_mib(&no_reuse.pids());
        rows.push(Row::from_samples(NO_KEEPALIVE, &no_reuse_samples, rss));
    }
    if let Some(unobserved) = &unobserved {
        let rss = peak_rss_mib(&unobserved.pids());
        let row = Row::from_samples(UNOBSERVED, &unobserved_samples, rss);
        rows.push(row.paired(&proxy_samples, &unobserved_samples));
    }
    if s.wan {
        rows.push(Row::from_samples(DIRECT, &direct_samples, 0.0));
    }
    Ok(rows)
}

/// Fills proxy-app's cache, as started by default and as `fly/fly.toml` starts it.
fn run_fill_scenario(
    s: &Scenario,
    args: &Args,
    up: &Upstream<'_>,
    dir: &Path,
) -> Result<Vec<FillRow>> {
    let eager = fill::run(s, args, up, dir, &[])?;
    let lazy = fill::run(s, args, up, dir, &[("MIMALLOC_ARENA_EAGER_COMMIT", "0")])?;
    Ok(vec![
        FillRow::from_samples("proxy-app", s, &eager),
        FillRow::from_samples(LAZY_COMMIT, s, &lazy),
    ])
}

/// wrk straight at the peer behind the slow path, as the scenario reaches it (HTTP or TLS).
fn measure_wan_direct(s: &Scenario, up: &Upstream<'_>, duration: Duration) -> Result<Sample> {
    let url = match s.work {
        Work::PassThroughTls => format!("https://{}{}", up.https, s.path()),
        _ => format!("http://{}{}", up.http, s.path()),
    };
    wrk(&url, up.fqdn, s.connections, duration)
}

/// Starts proxy-app for `s` with `env` added; `tag` tells its files apart from another
/// proxy-app's.
fn start_proxy(
    s: &Scenario,
    bin: &Path,
    up: &Upstream<'_>,
    dir: &Path,
    tag: &str,
    env: &[(&str, &str)],
) -> Result<Server> {
    start_proxy_under(s, bin, up, dir, tag, env, &[], READY_LIMIT)
}

/// [`start_proxy`] with proxy-app's command line after `wrapper` (a tool such as valgrind),
/// given `limit` to answer.
#[allow(clippy::too_many_arguments)]
fn start_proxy_under(
    s: &Scenario,
    bin: &Path,
    up: &Upstream<'_>,
    dir: &Path,
    tag: &str,
    env: &[(&str, &str)],
    wrapper: &[OsString],
    limit: Duration,
) -> Result<Server> {
    let (config, port) = write_proxy_config(s, up, dir, tag)?;
    let log = std::fs::File::create(dir.join(format!("{}{tag}-proxy.log", s.name)))?;
    let (program, args) = match wrapper.split_first() {
        Some((tool, tool_args)) => (tool.as_os_str(), [tool_args, &[bin.into()]].concat()),
        None => (bin.as_os_str(), Vec::new()),
    };
    let child = pinned_command(program)
        .args(args)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", program.to_string_lossy()))?;
    Server::ready_within(child, port, s, limit)
}

/// Writes proxy-app's config for `s` on free ports; returns its path and the listen port.
fn write_proxy_config(
    s: &Scenario,
    up: &Upstream<'_>,
    dir: &Path,
    tag: &str,
) -> Result<(PathBuf, u16)> {
    let port = free_port()?;
    let config = dir.join(format!("{}{tag}-proxy.toml", s.name));
    std::fs::write(&config, scenario::proxy_config(s, port, free_port()?, up))?;
    Ok((config, port))
}

fn start_nginx(s: &Scenario, up: &Upstream<'_>, dir: &Path, keepalive: bool) -> Result<Server> {
    let port = free_port()?;
    let suffix = if keepalive { "" } else { "-no-keepalive" };
    let nginx_dir = dir.join(format!("{}-nginx{suffix}", s.name));
    std::fs::create_dir_all(&nginx_dir)?;
    let config = nginx_dir.join("nginx.conf");
    let text = scenario::nginx_config(s, port, &nginx_dir, up, keepalive);
    std::fs::write(&config, text)?;
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

/// A server command, pinned to core 0 and sent SIGTERM if the harness dies (even killed).
fn pinned_command(program: &std::ffi::OsStr) -> Command {
    let mut command = if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        Command::new(program)
    } else {
        let mut command = Command::new("taskset");
        command.args(["-c", "0"]).arg(program);
        command
    };
    // SAFETY: prctl is async-signal-safe and the closure touches no shared state.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
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

fn wait_ready(addr: SocketAddr, host: &str, path: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
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
