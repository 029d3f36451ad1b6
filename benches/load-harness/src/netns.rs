//! The slow path of the `wan-*` scenarios: a network namespace for the fake peer, joined to
//! the root namespace by a veth pair with a /30 from 10.213.0.0/16, with `tc netem` adding
//! half the round-trip delay on each end. Created and removed by the harness: on drop, on
//! SIGINT/SIGTERM (see [`crate::signals`]), and at the next start if a run was killed.

use crate::signals;
use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Prefix of the namespaces this harness creates: `edgebench-<pid>`.
pub const NS_PREFIX: &str = "edgebench-";
/// Prefix of the veth ends: `edgeb<pid>r` (root namespace) and `edgeb<pid>n` (peer's).
const IF_PREFIX: &str = "edgeb";
/// Every `ip` / `tc` command must finish within this.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// netem's queue limit in packets (its default of 1000 is small for a benchmark).
const NETEM_LIMIT: u32 = 100_000;

/// How the delay is added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DelayMethod {
    /// `tc netem` on both veth ends, half the round trip each.
    Netem,
    /// The kernel has no netem (or `tc` failed): the fake peer holds bytes in user space.
    UserSpace { why: String },
}

/// A namespace joined to the root namespace by a veth pair. Dropping it removes both.
#[derive(Debug)]
pub struct Netns {
    /// Namespace name, `edgebench-<pid>`.
    pub name: String,
    /// The veth end in the root namespace.
    pub root_if: String,
    /// Address of the root end.
    pub root_ip: Ipv4Addr,
    /// Address of the namespace end (where the peer listens).
    pub peer_ip: Ipv4Addr,
    /// How the delay is added.
    pub method: DelayMethod,
}

impl Netns {
    /// Creates the namespace and the link with round-trip delay `rtt`.
    pub fn create(rtt: Duration) -> Result<Netns> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("network namespaces need root");
        }
        run("ip", &["-V"]).context("iproute2's `ip` is needed")?;
        let pid = std::process::id();
        let (root_ip, peer_ip) = pick_subnet(pid, &local_addresses()?)?;
        let mut ns = Netns {
            name: format!("{NS_PREFIX}{pid}"),
            root_if: format!("{IF_PREFIX}{pid}r"),
            root_ip,
            peer_ip,
            method: DelayMethod::Netem,
        };
        signals::track_netns(&ns.name, &ns.root_if);
        // From here on, dropping `ns` (also on error) removes whatever was created.
        ns.setup()?;
        ns.method = ns.add_delay(rtt);
        Ok(ns)
    }

    fn setup(&self) -> Result<()> {
        let (ns, root_if) = (self.name.as_str(), self.root_if.as_str());
        let ns_if = format!("{IF_PREFIX}{}n", std::process::id());
        let root_cidr = format!("{}/30", self.root_ip);
        let peer_cidr = format!("{}/30", self.peer_ip);
        run("ip", &["netns", "add", ns])?;
        let veth = [
            "link", "add", root_if, "type", "veth", "peer", "name", &ns_if,
        ];
        run("ip", &[&veth[..], &["netns", ns]].concat())?;
        run("ip", &["addr", "add", &root_cidr, "dev", root_if])?;
        run("ip", &["link", "set", root_if, "up"])?;
        run("ip", &["-n", ns, "addr", "add", &peer_cidr, "dev", &ns_if])?;
        run("ip", &["-n", ns, "link", "set", &ns_if, "up"])?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Adds netem on both ends, half the round trip each; on failure, reports user space.
    fn add_delay(&self, rtt: Duration) -> DelayMethod {
        let half = format!("{}us", rtt.as_micros() / 2);
        let limit = NETEM_LIMIT.to_string();
        let netem = ["root", "netem", "delay", &half, "limit", &limit];
        let ns_if = format!("{IF_PREFIX}{}n", std::process::id());
        let root_side = [&["qdisc", "add", "dev", &self.root_if][..], &netem].concat();
        let ns_side = [
            &["-n", &self.name, "qdisc", "add", "dev", &ns_if][..],
            &netem,
        ]
        .concat();
        let added = run("tc", &root_side).and_then(|_| run("tc", &ns_side));
        match added {
            Ok(_) => DelayMethod::Netem,
            Err(e) => {
                let _ = run("tc", &["qdisc", "del", "dev", &self.root_if, "root"]);
                let why = format!("{e:#}");
                DelayMethod::UserSpace {
                    why: why.trim().trim_end_matches('.').to_string(),
                }
            }
        }
    }

    /// Runs `f` on a new thread inside the namespace: sockets it (and threads it starts)
    /// create belong to the namespace.
    pub fn run_inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            let inside = scope.spawn(|| {
                let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
                use std::os::fd::AsRawFd;
                // SAFETY: setns on a valid namespace fd only changes this thread's namespace.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let e = std::io::Error::last_os_error();
                    return Err(e).context("entering the network namespace");
                }
                Ok(f())
            });
            inside
                .join()
                .unwrap_or_else(|_| bail!("thread in the namespace panicked"))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove(&self.name, &self.root_if);
        signals::untrack_netns(&self.name);
    }
}

/// Removes a namespace and its veth pair (deleting one end deletes both); errors ignored.
pub fn remove(ns: &str, root_if: &str) {
    let _ = run("ip", &["link", "del", root_if]);
    let _ = run("ip", &["netns", "del", ns]);
}

/// Removes namespaces and veth ends left by earlier runs that were killed (their pid is
/// gone or no longer a load-harness). Does nothing without root or iproute2.
pub fn remove_stale() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    let mut stale = HashSet::new();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if let Some(pid) = name.strip_prefix(NS_PREFIX).and_then(|p| p.parse().ok()) {
            stale.insert(pid);
        }
    }
    if let Ok(links) = run("ip", &["-o", "link", "show"]) {
        for link in links.lines().filter_map(|l| l.split(": ").nth(1)) {
            let name = link.split('@').next().unwrap_or_default();
            let pid = name
                .strip_prefix(IF_PREFIX)
                .and_then(|r| r.strip_suffix('r'));
            if let Some(pid) = pid.and_then(|p| p.parse().ok()) {
                stale.insert(pid);
            }
        }
    }
    for pid in stale.into_iter().filter(|pid| !is_harness(*pid)) {
        eprintln!("removing {NS_PREFIX}{pid}, left by an earlier run");
        remove(&format!("{NS_PREFIX}{pid}"), &format!("{IF_PREFIX}{pid}r"));
    }
}

/// Whether `pid` is a running load-harness (another run in progress).
fn is_harness(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim() == env!("CARGO_PKG_NAME"))
}

/// IPv4 addresses configured on this host's interfaces (root namespace).
fn local_addresses() -> Result<Vec<Ipv4Addr>> {
    let out = run("ip", &["-o", "-4", "addr", "show"])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect())
}

/// The root and peer addresses of a /30 in 10.213.0.0/16 that no local address is in,
/// starting from one derived from `pid` so that concurrent runs pick different ones.
pub fn pick_subnet(pid: u32, taken: &[Ipv4Addr]) -> Result<(Ipv4Addr, Ipv4Addr)> {
    const BASE: u32 = u32::from_be_bytes([10, 213, 0, 0]);
    const SUBNETS: u32 = 1 << 14;
    for i in 0..64 {
        let net = BASE + (pid % SUBNETS + i) % SUBNETS * 4;
        if !taken.iter().any(|ip| u32::from(*ip) & !3 == net) {
            return Ok((Ipv4Addr::from(net + 1), Ipv4Addr::from(net + 2)));
        }
    }
    bail!("no free /30 in 10.213.0.0/16")
}

/// Parses a delay like `20ms`, `20000us`, `1s` or `20` (milliseconds), between 1 ms and 1 s.
pub fn parse_delay(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("bad delay {text:?}"))?;
    let delay = match unit {
        "" | "ms" => Duration::from_millis(number),
        "us" => Duration::from_micros(number),
        "s" => Duration::from_secs(number),
        _ => return Err(format!("bad delay unit in {text:?} (us, ms or s)")),
    };
    if !(Duration::from_millis(1)..=Duration::from_secs(1)).contains(&delay) {
        return Err(format!("delay {text:?} out of range (1ms to 1s)"));
    }
    Ok(delay)
}

/// Times GETs over one connection to `addr`: (the first, including connect; the fastest of
/// the following ones). About 2 and 1 round trips over a slow path.
pub fn probe(addr: SocketAddr, host: &str) -> Result<(Duration, Duration)> {
    let timeout = Duration::from_secs(3);
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    let mut get = || -> Result<Duration> {
        let sent = Instant::now();
        write!(stream, "GET /bench?size=0 HTTP/1.1\r\nHost: {host}\r\n\r\n")?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte)?;
            head.push(byte[0]);
            if head.len() > 16 * 1024 {
                bail!("response head too long");
            }
        }
        if !head.starts_with(b"HTTP/1.1 200") {
            bail!("unexpected response {}", String::from_utf8_lossy(&head));
        }
        Ok(sent.elapsed())
    };
    get()?;
    let first = started.elapsed();
    let mut reused = Duration::MAX;
    for _ in 0..3 {
        reused = reused.min(get()?);
    }
    Ok((first, reused))
}

/// Runs a command to completion within [`COMMAND_TIMEOUT`]; its stdout, or an error with
/// its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let line = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running `{line}`"))?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{line}` did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`{line}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_delays() {
        assert_eq!(parse_delay("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_delay("20"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_delay("1500us"), Ok(Duration::from_micros(1500)));
        assert_eq!(parse_delay("1s"), Ok(Duration::from_secs(1)));
        for bad in ["", "ms", "20m", "-5ms", "0ms", "2s", "1.5ms"] {
            assert!(parse_delay(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subnets_skip_taken_ones_and_stay_in_range() {
        let (root, peer) = pick_subnet(1, &[]).unwrap();
        assert_eq!(
            (root, peer),
            ([10, 213, 0, 5].into(), [10, 213, 0, 6].into())
        );
        let (root, _) = pick_subnet(1, &[[10, 213, 0, 6].into()]).unwrap();
        assert_eq!(root, Ipv4Addr::from([10, 213, 0, 9]));
        let (root, peer) = pick_subnet((1 << 14) - 1, &[]).unwrap();
        assert_eq!(
            (root, peer),
            ([10, 213, 255, 253].into(), [10, 213, 255, 254].into())
        );
        let (root, _) = pick_subnet(u32::MAX, &[]).unwrap();
        assert_eq!(root.octets()[..2], [10, 213]);
    }
}
