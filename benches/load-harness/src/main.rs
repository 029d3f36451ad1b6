//! `load-harness`: load-tests proxy-app against a local fake tailnet, side by side with nginx
//! configured the same way (and HAProxy and Caddy at their defaults in the pass-through
//! scenarios), and writes the numbers to `benches/RESULTS.md` and a chart of them beside it
//! (see [`chart`]).
//!
//! The servers run pinned to core 0, the load generator (wrk) and the fake tailnet to core
//! 1; each scenario alternates proxy-app / nginx / ... / direct runs (A/B/A/B) and reports
//! medians with their spread; the `cache-fill-*` scenarios instead fill proxy-app's cache
//! with distinct objects and report its memory (see [`fill`]); `pass-1k`,
//! `cache-hit-defaults-1k` and `observed-1k` also count instructions per request under
//! callgrind (see [`callgrind`]). Ports come from listeners the servers inherit or bind
//! themselves (see [`listening`]). Everything listens on
//! loopback, except the peer of the `wan-*` scenarios: it gets a network namespace of its
//! own behind a veth pair with a round-trip delay (see [`netns`]), removed again on exit, on
//! error and on Ctrl-C. Every run is bounded in time. Run it through `benches/run.sh`, which
//! builds what it needs first. `--train` instead trains a profile-guided build (see
//! [`train`]).

mod callgrind;
mod chart;
mod client;
mod fill;
mod listening;
mod measure;
mod misses;
mod netns;
mod report;
mod scenario;
mod signals;
mod train;

use anyhow::{bail, Context, Result};
use clap::Parser;
use fake_tailnet::{FakeTailnet, PeerSpec, TailnetConfig, TAILNET_CA_PEM};
use measure::{children, cpu_seconds, drive, peak_rss_mib, CoreTimes, Load, Sample};
use netns::{DelayMethod, Netns};
use report::{
    FillRow, Report, Row, BASELINE, CADDY, DIRECT, EAGER_COMMIT, HAPROXY, HAPROXY_SAME, NGINX,
    NO_KEEPALIVE, PROXY_APP, UNOBSERVED,
};
use scenario::{Scenario, Upstream, Work};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    about = "Load-test proxy-app against a fake tailnet, side by side with nginx, HAProxy and Caddy"
)]
struct Args {
    /// Every scenario briefly (about a minute in all), to check the harness itself.
    #[arg(long)]
    quick: bool,
    /// Instead of measuring: serve each loopback scenario with proxy-app alone, for 20,000
    /// GETs from this process (no peers, wrk or tools needed), and print what each got. The
    /// training run of a profile-guided build (`scripts/pgo-build.sh`). With `--quick`,
    /// 1,000 GETs: a check of the training itself.
    #[arg(long, conflicts_with_all = ["baseline_bin", "out", "callgrind_dir"])]
    train: bool,
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
    /// Another proxy-app build to compare it with (such as the previous commit's): it runs
    /// right before or after proxy-app in each round, in turn, and is counted under
    /// callgrind too.
    #[arg(long)]
    baseline_bin: Option<PathBuf>,
    /// Where to write the Markdown report (default: print only); the chart goes beside it
    /// (`RESULTS.svg` for `RESULTS.md`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The command line to record in the report.
    #[arg(long, default_value = "benches/run.sh")]
    command: String,
    /// Round-trip delay of the `wan-*` scenarios' path (tc netem, half on each veth end).
    #[arg(long, default_value = "20ms", value_parser = netns::parse_delay)]
    netem_delay: Duration,
    /// Keep callgrind's dumps in this directory (one per server, run and process) for
    /// `callgrind_annotate`, instead of a temporary one.
    #[arg(long)]
    callgrind_dir: Option<PathBuf>,
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.duration = 1;
        args.rounds = 1;
    }
    signals::install().context("installing signal handlers")?;
    raise_fd_limit();
    let cores = machine_cores();
    // Training measures nothing: it needs neither a core of its own nor network namespaces.
    let pinned = !args.train && pin_self_to_core(LOAD_CORE);
    LOAD_PINNED.store(pinned, Ordering::Relaxed);
    if !args.train {
        netns::remove_stale();
    }
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

    if args.train {
        let requests = match args.quick {
            true => train::QUICK_REQUESTS,
            false => train::REQUESTS,
        };
        let scenarios = selected(&args);
        let text = train::run(&scenarios, requests, &args.proxy_bin, &upstream, dir.path())?;
        println!("{text}");
        return Ok(());
    }

    let duration = Duration::from_secs(args.duration);
    let mut report = Report::new(&args.command, cores, pinned, duration, args.rounds);
    let scenarios: Vec<Scenario> = selected(&args)
        .into_iter()
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
        let counts = count_instructions(scenario, &args, &up, dir.path())
            .with_context(|| format!("scenario {}, callgrind", scenario.name))?;
        let note = counts.as_ref().map(callgrind::Counts::note).or(note);
        let misses = count_misses(scenario, &args, &up, dir.path())
            .with_context(|| format!("scenario {}, cache simulation", scenario.name))?;
        let note = match (note, misses.map(|m| m.note(scenario.connections))) {
            (Some(note), Some(misses)) => Some(format!("{note}\n\n{misses}")),
            (note, misses) => note.or(misses),
        };
        report.scenario(scenario, rows, note.as_deref());
        if let Some(counts) = counts {
            report.instructions(scenario, counts);
        }
    }
    // Drawn even when not written (--quick), so that the chart's code runs in CI.
    let chart_file = match &args.out {
        Some(out) => out.with_extension("svg"),
        None => dir.path().join("RESULTS.svg"),
    };
    let svg = chart::draw(&report.chart_data())?;
    std::fs::write(&chart_file, svg)
        .with_context(|| format!("writing {}", chart_file.display()))?;
    let link = args.out.as_ref().and(chart_file.file_name());
    let text = report.render(link.and_then(|n| n.to_str()));
    println!("{text}");
    if let Some(out) = &args.out {
        std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// The scenarios named by `--scenarios`, or all of them.
fn selected(args: &Args) -> Vec<Scenario> {
    scenario::all()
        .into_iter()
        .filter(|s| args.scenarios.is_empty() || args.scenarios.iter().any(|n| n == s.name))
        .collect()
}

/// Instructions per request under callgrind, for the scenarios that count them: proxy-app
/// and nginx (and HAProxy in pass-through, at its defaults and with proxy-app's headers),
/// or proxy-app with and without metrics and log (`observed-1k`). `--quick`
/// counts `pass-1k` only, since valgrind takes a while to start a debug build.
fn count_instructions(
    s: &Scenario,
    args: &Args,
    up: &Upstream<'_>,
    dir: &Path,
) -> Result<Option<callgrind::Counts>> {
    let plan = callgrind::Plan::new(args.quick);
    if !(s.instructions || s.observed) {
        return Ok(None);
    }
    if args.quick && s.name != "pass-1k" {
        return Ok(Some(callgrind::Counts::skipped(
            plan,
            "only pass-1k with --quick",
        )));
    }
    let mut servers = match s.observed {
        true => {
            let plain = Scenario {
                observed: false,
                ..s.clone()
            };
            vec![
                (
                    PROXY_APP,
                    proxy_starter(s.clone(), &args.proxy_bin, *up, dir),
                ),
                (UNOBSERVED, proxy_starter(plain, &args.proxy_bin, *up, dir)),
            ]
        }
        false => {
            vec![
                (
                    PROXY_APP,
                    proxy_starter(s.clone(), &args.proxy_bin, *up, dir),
                ),
                (NGINX, nginx_starter(s, *up, dir)),
            ]
        }
    };
    // HAProxy where it runs (pass-through), at its defaults and with proxy-app's headers.
    if s.peers {
        servers.push((HAPROXY, haproxy_starter(s, *up, dir, false)));
        if s.peers_same_headers {
            servers.push((HAPROXY_SAME, haproxy_starter(s, *up, dir, true)));
        }
    }
    if let Some(baseline) = &args.baseline_bin {
        servers.push((BASELINE, proxy_starter(s.clone(), baseline, *up, dir)));
    }
    let dumps = args.callgrind_dir.as_deref().unwrap_or(dir);
    callgrind::Counts::measure(s, plan, dumps, servers).map(Some)
}

/// Simulated cache misses per request with the scenario's connections, for the scenarios
/// that count them: proxy-app and nginx. Not with `--quick`: a debug build under the
/// simulation takes minutes for a thousand connections.
fn count_misses(
    s: &Scenario,
    args: &Args,
    up: &Upstream<'_>,
    dir: &Path,
) -> Result<Option<misses::Misses>> {
    if !s.misses {
        return Ok(None);
    }
    if args.quick {
        return Ok(Some(misses::Misses::skipped("not with --quick")));
    }
    let servers = vec![
        (
            PROXY_APP,
            proxy_starter(s.clone(), &args.proxy_bin, *up, dir),
        ),
        (NGINX, nginx_starter(s, *up, dir)),
    ];
    let dumps = args.callgrind_dir.as_deref().unwrap_or(dir);
    misses::Misses::measure(s, dumps, servers).map(Some)
}

fn measure_direct(
    up: &Upstream<'_>,
    connections: u32,
    duration: Duration,
    rounds: usize,
) -> Result<Vec<Sample>> {
    let url = format!("http://{}/bench?size=1024", up.http);
    (0..rounds)
        .map(|_| drive(&url, up.fqdn, &[], Load::saturating(connections), duration))
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

/// Starts proxy-app for `s` under a tool, for [`callgrind`].
fn proxy_starter<'a>(
    s: Scenario,
    bin: &'a Path,
    up: Upstream<'a>,
    dir: &'a Path,
) -> callgrind::Start<'a> {
    Box::new(move |wrapper, tag| {
        start_proxy_under(&s, bin, &up, dir, tag, &[], wrapper, callgrind::DEADLINE)
    })
}

/// Starts nginx for `s` (with upstream keepalive) under a tool, for [`callgrind`] and
/// [`misses`].
fn nginx_starter<'a>(s: &'a Scenario, up: Upstream<'a>, dir: &'a Path) -> callgrind::Start<'a> {
    Box::new(move |wrapper, tag| {
        start_nginx_under(s, &up, dir, tag, true, wrapper, callgrind::DEADLINE)
    })
}

/// Starts HAProxy for `s` under a tool, for [`callgrind`].
fn haproxy_starter<'a>(
    s: &'a Scenario,
    up: Upstream<'a>,
    dir: &'a Path,
    same_headers: bool,
) -> callgrind::Start<'a> {
    Box::new(move |wrapper, tag| {
        start_haproxy_under(s, &up, dir, tag, same_headers, wrapper, callgrind::DEADLINE)
    })
}

/// A server under test: its process and how to reach it.
pub struct Server {
    child: Child,
    addr: SocketAddr,
    /// The signal of a graceful stop (see [`Server::stop`]).
    stop_signal: libc::c_int,
}

impl Server {
    /// Waits at most `limit` until the server, listening on `addr` (a listener it
    /// inherited), answers the scenario's request.
    fn ready_at(child: Child, addr: SocketAddr, s: &Scenario, limit: Duration) -> Result<Server> {
        signals::track_child(child.id());
        let mut server = Server {
            child,
            addr,
            stop_signal: libc::SIGTERM,
        };
        server.wait_ready(s, Instant::now() + limit)?;
        Ok(server)
    }

    /// Waits at most `limit` until the server has bound a port of its choice on 127.0.0.1
    /// (read from the kernel's socket table), then until it answers the scenario's request.
    fn ready_reported(child: Child, s: &Scenario, limit: Duration) -> Result<Server> {
        signals::track_child(child.id());
        let deadline = Instant::now() + limit;
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stop_signal: libc::SIGTERM,
        };
        loop {
            if let Some(addr) = listening::listener_on(server.child.id(), Ipv4Addr::LOCALHOST) {
                server.addr = addr;
                break;
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("the server exited before listening: {status}");
            }
            if Instant::now() > deadline {
                bail!("the server did not listen on 127.0.0.1 within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        server.wait_ready(s, deadline)?;
        Ok(server)
    }

    /// Waits until the server answers the scenario's request with a 200, or `deadline`;
    /// fails at once if the server exits.
    fn wait_ready(&mut self, s: &Scenario, deadline: Instant) -> Result<()> {
        let (host, path) = (s.host(), s.ready_path());
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the server on {} exited before answering: {status}",
                    self.addr
                );
            }
            // Wait as long as allowed for the answer: a probe given up and sent again would
            // make the number of requests a server sees vary (see `callgrind`).
            let left = deadline.saturating_duration_since(Instant::now());
            let status = get_status(self.addr, &host, &path, s.headers(), left);
            if status.is_some_and(|status| status == "200") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "server on {} never answered 200 for {host}{path}",
            self.addr
        )
    }

    /// Stops the server gracefully and waits at most `limit` for it to exit (a tool it runs
    /// under writes its results then).
    fn stop(mut self, limit: Duration) -> Result<()> {
        let signal = self.stop_signal;
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        let deadline = Instant::now() + limit;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("the server did not exit within {limit:?} of signal {signal}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
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
        let load_core = LOAD_PINNED.load(Ordering::Relaxed).then_some(LOAD_CORE);
        let load_before = load_core.and_then(CoreTimes::now);
        let url = format!("http://{}{}", self.addr, s.path());
        let mut sample = drive(&url, &s.host(), s.headers(), s.load(), duration)?;
        sample.cpu_seconds = cpu_seconds(&pids) - before;
        sample.load_core_busy = load_core
            .and_then(CoreTimes::now)
            .zip(load_before)
            .and_then(|(after, before)| after.busy_since(before));
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

/// A server measured in a scenario: its row's label, and its runs.
struct Contender {
    label: &'static str,
    server: Server,
    samples: Vec<Sample>,
}

fn run_scenario(
    s: &Scenario,
    args: &Args,
    up: &Upstream<'_>,
    dir: &Path,
    duration: Duration,
) -> Result<Vec<Row>> {
    // In the order they run in each round.
    let mut servers = vec![(
        PROXY_APP,
        start_proxy(s, &args.proxy_bin, up, dir, "", &[])?,
    )];
    // The observed scenario also runs proxy-app without metrics and log (their cost), right
    // after proxy-app, so that each pair meets the same machine (see `paired`).
    if s.observed {
        let plain = Scenario {
            observed: false,
            ..s.clone()
        };
        let server = start_proxy(&plain, &args.proxy_bin, up, dir, "-unobserved", &[])?;
        servers.push((UNOBSERVED, server));
    }
    if let Some(baseline) = &args.baseline_bin {
        let server = start_proxy(s, baseline, up, dir, "-baseline", &[])?;
        servers.push((BASELINE, server));
    }
    servers.push((NGINX, start_nginx(s, up, dir, true)?));
    // The wan-* pass-through scenarios also show what not reusing upstream connections costs.
    if s.wan && matches!(s.work, Work::PassThrough | Work::PassThroughTls) {
        servers.push((NO_KEEPALIVE, start_nginx(s, up, dir, false)?));
    }
    if s.peers {
        servers.push((HAPROXY, start_haproxy(s, up, dir, false)?));
        servers.push((CADDY, start_caddy(s, up, dir)?));
    }
    if s.peers_same_headers {
        servers.push((HAPROXY_SAME, start_haproxy(s, up, dir, true)?));
    }
    let mut contenders: Vec<Contender> = servers
        .into_iter()
        .map(|(label, server)| Contender {
            label,
            server,
            samples: Vec::new(),
        })
        .collect();
    // Warm them up (connection pools, TLS sessions) before measuring.
    for c in &contenders {
        c.server.measure(s, Duration::from_secs(1))?;
    }
    let mut direct_samples = Vec::new();
    for round in 0..args.rounds {
        // The baseline build runs right after proxy-app in even rounds, right before it in
        // odd ones, so that neither always meets the machine as the other left it.
        let mut order: Vec<usize> = (0..contenders.len()).collect();
        if round % 2 == 1 {
            if let Some(at) = contenders.iter().position(|c| c.label == BASELINE) {
                let moved = order.remove(at);
                order.insert(0, moved);
            }
        }
        for i in order {
            let c = &mut contenders[i];
            let sample = c.server.measure(s, duration)?;
            c.samples.push(sample);
        }
        if s.wan {
            direct_samples.push(measure_wan_direct(s, up, duration)?);
        }
    }
    // Report order: proxy-app, nginx, the other peers, then proxy-app's variants.
    let rank = |label: &str| {
        [
            PROXY_APP,
            NGINX,
            HAPROXY,
            HAPROXY_SAME,
            CADDY,
            NO_KEEPALIVE,
            UNOBSERVED,
            BASELINE,
        ]
        .iter()
        .position(|l| *l == label)
    };
    contenders.sort_by_key(|c| rank(c.label));
    let proxy_samples = contenders[0].samples.clone();
    let mut rows: Vec<Row> = contenders
        .iter()
        .map(|c| {
            let row = Row::from_samples(c.label, &c.samples, peak_rss_mib(&c.server.pids()));
            match c.label {
                PROXY_APP | NO_KEEPALIVE => row,
                _ => row.paired(&proxy_samples, &c.samples),
            }
        })
        .collect();
    if s.wan {
        rows.push(Row::from_samples(DIRECT, &direct_samples, 0.0));
    }
    Ok(rows)
}

/// Fills proxy-app's cache, as started by default (mimalloc's arena committed as used) and
/// with the arena committed at once, as mimalloc would by itself.
fn run_fill_scenario(
    s: &Scenario,
    args: &Args,
    up: &Upstream<'_>,
    dir: &Path,
) -> Result<Vec<FillRow>> {
    let lazy = fill::run(s, args, up, dir, &[])?;
    let eager = fill::run(s, args, up, dir, &[("MIMALLOC_ARENA_EAGER_COMMIT", "1")])?;
    Ok(vec![
        FillRow::from_samples("proxy-app", s, &lazy),
        FillRow::from_samples(EAGER_COMMIT, s, &eager),
    ])
}

/// wrk straight at the peer behind the slow path, as the scenario reaches it (HTTP or TLS).
fn measure_wan_direct(s: &Scenario, up: &Upstream<'_>, duration: Duration) -> Result<Sample> {
    let url = match s.work {
        Work::PassThroughTls => format!("https://{}{}", up.https, s.path()),
        _ => format!("http://{}{}", up.http, s.path()),
    };
    drive(&url, up.fqdn, &[], s.load(), duration)
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
    let config = dir.join(format!("{}{tag}-proxy.toml", s.name));
    std::fs::write(&config, scenario::proxy_config(s, up))?;
    let log = std::fs::File::create(dir.join(format!("{}{tag}-proxy.log", s.name)))?;
    let mut command = wrapped_command(wrapper, bin.as_os_str());
    let child = command
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    // It listens on port 0 and holds what the kernel gave it: read the port back.
    Server::ready_reported(child, s, limit)
}

fn start_nginx(s: &Scenario, up: &Upstream<'_>, dir: &Path, keepalive: bool) -> Result<Server> {
    let tag = if keepalive { "" } else { "-no-keepalive" };
    start_nginx_under(s, up, dir, tag, keepalive, &[], READY_LIMIT)
}

/// nginx for `s` after `wrapper` (a tool such as valgrind), on a listener it inherits; `tag`
/// tells its files apart from another nginx's.
fn start_nginx_under(
    s: &Scenario,
    up: &Upstream<'_>,
    dir: &Path,
    tag: &str,
    keepalive: bool,
    wrapper: &[OsString],
    limit: Duration,
) -> Result<Server> {
    let listener = listening::hold()?;
    let addr = listener.local_addr()?;
    let nginx_dir = dir.join(format!("{}-nginx{tag}", s.name));
    std::fs::create_dir_all(&nginx_dir)?;
    let config = nginx_dir.join("nginx.conf");
    let text = scenario::nginx_config(s, addr.port(), &nginx_dir, up, keepalive);
    std::fs::write(&config, text)?;
    // Master and worker even under a tool: nginx 1.22 without master crashes on an
    // inherited listener.
    let globals = "daemon off;";
    let mut command = wrapped_command(wrapper, "nginx".as_ref());
    command
        .arg("-c")
        .arg(&config)
        .args(["-g", globals])
        // nginx takes listeners named in NGINX (as in its binary upgrade).
        .env("NGINX", format!("{};", listening::INHERITED_FD))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    listening::pass(&mut command, &listener);
    let child = command
        .spawn()
        .context("starting nginx (apt-get install nginx)")?;
    let mut server = Server::ready_at(child, addr, s, limit)?;
    // On SIGTERM nginx's master kills a worker still busy after a second (as one writing its
    // callgrind dump is); on SIGQUIT it waits.
    server.stop_signal = libc::SIGQUIT;
    Ok(server)
}

/// HAProxy for a pass-through scenario, at its defaults (or adding the headers proxy-app
/// adds, with `same_headers`), on a listener it inherits.
fn start_haproxy(
    s: &Scenario,
    up: &Upstream<'_>,
    dir: &Path,
    same_headers: bool,
) -> Result<Server> {
    start_haproxy_under(s, up, dir, "", same_headers, &[], READY_LIMIT)
}

/// HAProxy for `s` after `wrapper` (a tool such as valgrind), on a listener it inherits;
/// `tag` tells its files apart from another HAProxy's.
fn start_haproxy_under(
    s: &Scenario,
    up: &Upstream<'_>,
    dir: &Path,
    tag: &str,
    same_headers: bool,
    wrapper: &[OsString],
    limit: Duration,
) -> Result<Server> {
    let listener = listening::hold()?;
    let addr = listener.local_addr()?;
    let headers = if same_headers { "-same-headers" } else { "" };
    let config = dir.join(format!("{}-haproxy{headers}{tag}.cfg", s.name));
    std::fs::write(&config, scenario::haproxy_config(s, up, same_headers))?;
    let log = std::fs::File::create(dir.join(format!("{}-haproxy{headers}{tag}.log", s.name)))?;
    let mut command = wrapped_command(wrapper, "haproxy".as_ref());
    // -db: in the foreground, one process.
    command
        .arg("-db")
        .arg("-f")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log);
    listening::pass(&mut command, &listener);
    let child = command
        .spawn()
        .context("starting haproxy (apt-get install haproxy)")?;
    Server::ready_at(child, addr, s, limit)
}

/// Caddy for a pass-through scenario, at its defaults, one thread, on a port it binds.
fn start_caddy(s: &Scenario, up: &Upstream<'_>, dir: &Path) -> Result<Server> {
    let caddy_dir = dir.join(format!("{}-caddy", s.name));
    std::fs::create_dir_all(&caddy_dir)?;
    let config = caddy_dir.join("caddy.json");
    std::fs::write(&config, scenario::caddy_config(s, up))?;
    let log = std::fs::File::create(caddy_dir.join("caddy.log"))?;
    let child = pinned_command("caddy".as_ref())
        .args(["run", "--config"])
        .arg(&config)
        .env("GOMAXPROCS", "1")
        // Its autosaved config and storage stay in the run's directory.
        .env("HOME", &caddy_dir)
        .env("XDG_CONFIG_HOME", caddy_dir.join("config"))
        .env("XDG_DATA_HOME", caddy_dir.join("data"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting caddy (apt-get install caddy)")?;
    Server::ready_reported(child, s, READY_LIMIT)
}

/// [`pinned_command`] for `program`, after `wrapper` (a tool and its options) if any.
fn wrapped_command(wrapper: &[OsString], program: &std::ffi::OsStr) -> Command {
    match wrapper.split_first() {
        Some((tool, tool_args)) => {
            let mut command = pinned_command(tool);
            command.args(tool_args).arg(program);
            command
        }
        None => pinned_command(program),
    }
}

/// The cores this machine gives the harness, counted before it pins itself to core 1: after
/// that, `available_parallelism` (which follows the affinity mask) says 1, and servers would
/// run unpinned on core 1 beside wrk and the fake tailnet.
fn machine_cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A server command, pinned to core 0 and sent SIGTERM if the harness dies (even killed).
fn pinned_command(program: &std::ffi::OsStr) -> Command {
    let mut command = if machine_cores() < 2 {
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

/// The core the harness pins itself to, with wrk and the fake tailnet (servers get core 0).
const LOAD_CORE: usize = 1;

/// Whether the harness runs pinned to [`LOAD_CORE`], so that core's time is the load side's.
static LOAD_PINNED: AtomicBool = AtomicBool::new(false);

/// Pins this process (and the threads it starts later) to `core`, so the load generator
/// and the fake tailnet never compete with the server under test.
fn pin_self_to_core(core: usize) -> bool {
    if machine_cores() <= core {
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

/// The status of a GET with `headers`, waiting at most `limit` (at least a second) for it.
fn get_status(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[&str],
    limit: Duration,
) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream
        .set_read_timeout(Some(limit.max(Duration::from_secs(1))))
        .ok()?;
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    Some(String::from_utf8_lossy(&head[9..12]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_run_on_core_0_after_the_harness_pins_itself_to_core_1() {
        if machine_cores() < 2 {
            return;
        }
        assert!(pin_self_to_core(1), "taskset could not pin the harness");
        let out = pinned_command("grep".as_ref())
            .args(["Cpus_allowed_list", "/proc/self/status"])
            .output()
            .expect("running grep");
        let line = String::from_utf8_lossy(&out.stdout);
        assert_eq!(line.trim_end().rsplit('\t').next(), Some("0"), "{line}");
    }
}
