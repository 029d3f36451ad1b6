//! Running the load generator and reading what a server spent: requests/s and latency from
//! wrk, CPU time and peak memory from /proc.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// One wrk run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Requests per second.
    pub rps: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Requests completed.
    pub requests: u64,
    /// Responses that were not 2xx or 3xx.
    pub non_2xx: u64,
    /// Socket errors (connect, read, write, timeout).
    pub errors: u64,
    /// Server CPU seconds (user + system) spent during the run.
    pub cpu_seconds: f64,
    /// The share of the load core's time (wrk and the fake tailnet) spent busy during the
    /// run, when known: near 1.0, the load side, not the server, set the requests/s.
    pub load_core_busy: Option<f64>,
}

impl Sample {
    /// Server CPU microseconds per request.
    pub fn cpu_us_per_request(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        self.cpu_seconds / self.requests as f64 * 1e6
    }
}

/// What the load generator sends: how many connections, and at what rate.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub connections: u32,
    /// Requests per second over all connections, 0 for as many as the server answers (each
    /// connection sends its next request as soon as it has the response).
    pub rate: u32,
}

impl Load {
    /// `connections`, each sending its next request at once.
    pub fn saturating(connections: u32) -> Load {
        Load {
            connections,
            rate: 0,
        }
    }
}

/// Sends `load` to `url` with `Host: host` and `headers` for `duration` and reads what came
/// back. As many requests as the server answers go through wrk; a set rate through h2load,
/// whose per-connection timer keeps it. (wrk paces only by pausing whole milliseconds
/// between a response and the next request, which bunches requests on its millisecond
/// clock: a server answering within the millisecond got fewer requests than a slower one,
/// so the two were not compared at equal load.)
pub fn drive(
    url: &str,
    host: &str,
    headers: &[&str],
    load: Load,
    duration: Duration,
) -> Result<Sample> {
    match load.rate {
        0 => wrk(url, host, headers, load.connections, duration),
        _ => h2load(url, host, headers, load, duration),
    }
}

/// Runs wrk against `url` with `Host: host` and `headers` and parses its report.
fn wrk(
    url: &str,
    host: &str,
    headers: &[&str],
    connections: u32,
    duration: Duration,
) -> Result<Sample> {
    let text = output_of(
        wrk_command(url, host, headers, connections, duration),
        "wrk",
    )?;
    parse_wrk(&text)
}

/// Runs a load generator to its end and gives its standard output; fails with what it
/// printed if it failed, or with the Debian package to install if it is missing.
fn output_of(mut command: Command, package: &str) -> Result<String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let out = command
        .output()
        .with_context(|| format!("running {program} (apt-get install {package})"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{program} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(text)
}

/// wrk's command line for a run.
fn wrk_command(
    url: &str,
    host: &str,
    headers: &[&str],
    connections: u32,
    duration: Duration,
) -> Command {
    let mut command = Command::new("wrk");
    command
        .args(["-t1", "--latency", "--timeout", "5s"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .args(["-H", &format!("Host: {host}")]);
    for header in headers {
        command.args(["-H", header]);
    }
    command.arg(url);
    command
}

/// Runs h2load over HTTP/1.1 at `load`'s rate and reads its report and per-request log.
fn h2load(
    url: &str,
    host: &str,
    headers: &[&str],
    load: Load,
    duration: Duration,
) -> Result<Sample> {
    let log = tempfile::Builder::new().suffix(".tsv").tempfile()?;
    let command = h2load_command(url, host, headers, load, duration, log.path());
    let text = output_of(command, "nghttp2-client")?;
    let mut sample = parse_h2load(&text)?;
    let latencies = read_h2load_log(&std::fs::read_to_string(log.path())?)?;
    sample.p50 = percentile(&latencies, 50.0);
    sample.p99 = percentile(&latencies, 99.0);
    Ok(sample)
}

/// h2load's command line for a run: one thread, `--rps` per connection, the run's length,
/// and a log of every request's latency.
fn h2load_command(
    url: &str,
    host: &str,
    headers: &[&str],
    load: Load,
    duration: Duration,
    log: &Path,
) -> Command {
    let mut command = Command::new("h2load");
    command
        .args(["--h1", "-t1"])
        .arg(format!("-c{}", load.connections))
        .arg(format!(
            "--rps={}",
            f64::from(load.rate) / f64::from(load.connections.max(1))
        ))
        .arg(format!("-D{}", duration.as_secs().max(1)))
        .arg("--log-file")
        .arg(log)
        .args(["-H", &format!(":authority: {host}")]);
    for header in headers {
        command.args(["-H", header]);
    }
    command.arg(url);
    command
}

/// Parses h2load's summary: requests/s, requests done, errors and non-2xx/3xx responses.
fn parse_h2load(text: &str) -> Result<Sample> {
    let mut sample = Sample::default();
    let mut seen = (false, false);
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            // `finished in 5.00s, 15000.20 req/s, 17.66MB/s`
            let rps = rest
                .split(", ")
                .find_map(|f| f.strip_suffix(" req/s"))
                .with_context(|| format!("h2load: no req/s in `{line}`"))?;
            sample.rps = rps.parse().with_context(|| format!("h2load: `{line}`"))?;
            seen.0 = true;
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            // `75000 total, 75000 started, 75000 done, 75000 succeeded, 0 failed, 0 errored, 0 timeout`
            for field in rest.split(", ") {
                let Some((count, what)) = field.split_once(' ') else {
                    continue;
                };
                let count: u64 = count.parse().with_context(|| format!("h2load: `{line}`"))?;
                match what {
                    "done" => sample.requests = count,
                    "errored" | "timeout" => sample.errors += count,
                    _ => {}
                }
            }
            seen.1 = true;
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            // `75000 2xx, 0 3xx, 0 4xx, 0 5xx`
            sample.non_2xx = rest
                .split(", ")
                .filter_map(|f| f.split_once(' '))
                .filter(|(_, class)| matches!(*class, "4xx" | "5xx"))
                .filter_map(|(count, _)| count.parse::<u64>().ok())
                .sum();
        }
    }
    if seen != (true, true) {
        bail!("unexpected h2load output:\n{text}");
    }
    Ok(sample)
}

/// The latencies of the requests answered, from h2load's `--log-file`: each line is a
/// request's start (µs since the epoch), its status (-1 for a failed request) and the
/// microseconds until its response ended, tab-separated.
fn read_h2load_log(text: &str) -> Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let (Some(status), Some(micros)) = (fields.get(1), fields.get(2)) else {
            bail!("h2load log: unexpected line `{line}`");
        };
        if status.trim() == "-1" {
            continue;
        }
        let micros: u64 = micros
            .trim()
            .parse()
            .with_context(|| format!("h2load log: `{line}`"))?;
        latencies.push(Duration::from_micros(micros));
    }
    latencies.sort_unstable();
    Ok(latencies)
}

/// The `p`th percentile of sorted values (nearest rank), zero for none.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Parses wrk's `--latency` report.
pub fn parse_wrk(text: &str) -> Result<Sample> {
    let mut sample = Sample::default();
    for line in text.lines().map(str::trim) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["50%", value] => sample.p50 = parse_latency(value)?,
            ["99%", value] => sample.p99 = parse_latency(value)?,
            ["Requests/sec:", value] => sample.rps = value.parse()?,
            [count, "requests", "in", ..] => sample.requests = count.parse()?,
            ["Non-2xx", "or", "3xx", "responses:", count] => sample.non_2xx = count.parse()?,
            ["Socket", "errors:", rest @ ..] => {
                sample.errors = rest
                    .iter()
                    .filter_map(|f| f.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    if !text.contains("requests in") {
        bail!("unexpected wrk output:\n{text}");
    }
    Ok(sample)
}

fn parse_latency(value: &str) -> Result<Duration> {
    let split = value
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("latency `{value}`"))?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        _ => bail!("unknown latency unit in `{value}`"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// CPU seconds (user + system) used so far by a process and its children that have exited
/// and been waited for, plus its live children (nginx's worker).
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name (which may contain spaces) start after ')'.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .sum()
}

/// A core's busy and total time so far, in clock ticks, from /proc/stat: busy is user,
/// nice, system, irq and softirq time; total adds idle, iowait and steal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreTimes {
    busy: u64,
    total: u64,
}

impl CoreTimes {
    /// The core's times now, if /proc/stat lists it.
    pub fn now(core: usize) -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?, core)
    }

    fn parse(stat: &str, core: usize) -> Option<Self> {
        let name = format!("cpu{core}");
        let line = stat
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let field = |i: usize| ticks.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal (guest time is inside user's).
        let busy = field(0) + field(1) + field(2) + field(5) + field(6);
        Some(Self {
            busy,
            total: busy + field(3) + field(4) + field(7),
        })
    }

    /// The busy share of the time between `earlier` and `self`.
    pub fn busy_since(self, earlier: Self) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let busy = self.busy.checked_sub(earlier.busy)?;
        (total > 0).then(|| busy as f64 / total as f64)
    }
}

/// Peak resident memory (VmHWM) of the processes, in MiB.
pub fn peak_rss_mib(pids: &[u32]) -> f64 {
    status_mib(pids, "VmHWM:")
}

/// Resident memory (VmRSS) of the processes now, in MiB.
pub fn rss_mib(pids: &[u32]) -> f64 {
    status_mib(pids, "VmRSS:")
}

/// The sum of one kB field of the processes' /proc status, in MiB.
fn status_mib(pids: &[u32], field: &str) -> f64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            let line = status.lines().find(|l| l.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .sum::<f64>()
        / 1024.0
}

/// Direct children of a process (nginx's workers).
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The median of some values (the mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 2s test @ http://127.0.0.1:8080/\n  1 threads and 32 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     1.50ms  300.00us   9.00ms   90.00%\n    Req/Sec    21.00k     1.00k   23.00k    70.00%\n  Latency Distribution\n     50%    1.45ms\n     75%    1.60ms\n     90%    1.80ms\n     99%    2.50ms\n  42000 requests in 2.00s, 50.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 7\nRequests/sec:  21000.00\nTransfer/sec:     25.00MB\n";

    /// The arguments of a command, as strings.
    fn args(command: &Command) -> Vec<String> {
        command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_set_rate_is_split_over_h2loads_connections_and_logged() {
        let second = Duration::from_secs(2);
        let load = Load {
            connections: 32,
            rate: 12_000,
        };
        let command = h2load_command(
            "http://a/",
            "h",
            &["Accept-Encoding: gzip"],
            load,
            second,
            Path::new("/l.tsv"),
        );
        assert_eq!(command.get_program(), "h2load");
        let given = args(&command);
        for arg in ["--h1", "-t1", "-c32", "--rps=375", "-D2", ":authority: h"] {
            assert!(given.contains(&arg.to_string()), "{arg} in {given:?}");
        }
        let at = given.iter().position(|a| a == "--log-file").unwrap();
        assert_eq!(given[at + 1], "/l.tsv");
        assert!(given.contains(&"Accept-Encoding: gzip".to_string()));
        assert_eq!(given.last().unwrap(), "http://a/", "the URL comes last");

        let given = args(&wrk_command("http://a/", "h", &[], 32, second));
        assert!(given.contains(&"-c32".to_string()) && given.contains(&"-d2s".to_string()));
        assert!(!given.iter().any(|a| a.contains("rps")));
    }

    #[test]
    fn parses_an_h2load_report_and_its_log() {
        let report = "starting benchmark...\nspawning thread #0: 32 total client(s). Timing-based test with 0s of warm-up time and 2s of main duration for measurements.\nWarm-up phase is over for thread #0.\nMain benchmark duration is over for thread #0. Stopping all clients.\nStopped all clients for thread #0\n\nfinished in 2.00s, 11999.50 req/s, 14.17MB/s\nrequests: 24000 total, 24010 started, 23999 done, 23990 succeeded, 9 failed, 2 errored, 1 timeout\nstatus codes: 23990 2xx, 0 3xx, 3 4xx, 4 5xx\ntraffic: 28.34MB (29717960) total, 5.56MB (5832000) headers (space savings 0.00%), 23.44MB (24576000) data\n";
        let s = parse_h2load(report).unwrap();
        assert!((s.rps - 11_999.5).abs() < 0.01);
        assert_eq!((s.requests, s.errors, s.non_2xx), (23_999, 3, 7));
        assert!(parse_h2load("connect failed\n").is_err());

        // 100 answered requests of 1..=100 µs, in completion order, and one failed.
        let mut log: String = (1..=100u64)
            .rev()
            .map(|us| format!("1700000000{us:06}\t200\t{us}\n"))
            .collect();
        log.push_str("1700000000000101\t-1\t5000000\n");
        let latencies = read_h2load_log(&log).unwrap();
        assert_eq!(latencies.len(), 100);
        assert_eq!(percentile(&latencies, 50.0), Duration::from_micros(50));
        assert_eq!(percentile(&latencies, 99.0), Duration::from_micros(99));
        assert_eq!(percentile(&[], 99.0), Duration::ZERO);
        assert!(read_h2load_log("garbage\n").is_err());
    }

    #[test]
    fn parses_a_wrk_report() {
        let s = parse_wrk(REPORT).unwrap();
        assert_eq!(s.requests, 42_000);
        assert_eq!(s.non_2xx, 7);
        assert_eq!(s.errors, 3);
        assert!((s.rps - 21_000.0).abs() < 0.1);
        assert_eq!(s.p50, Duration::from_micros(1450));
        assert_eq!(s.p99, Duration::from_micros(2500));
    }

    #[test]
    fn reads_a_cores_busy_share_from_proc_stat() {
        let before =
            "cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 1 0 1 100 0 0 0 0 0 0\ncpu1 10 1 20 300 5 2 3 7 0 0\n";
        let after =
            "cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 1 0 1 100 0 0 0 0 0 0\ncpu1 70 1 50 310 5 2 13 7 0 0\n";
        let (a, b) = (
            CoreTimes::parse(before, 1).unwrap(),
            CoreTimes::parse(after, 1).unwrap(),
        );
        assert_eq!(
            a,
            CoreTimes {
                busy: 36,
                total: 348
            }
        );
        // 60 user + 30 system + 10 softirq busy, 10 idle.
        assert_eq!(b.busy_since(a), Some(100.0 / 110.0));
        assert_eq!(a.busy_since(a), None);
        assert_eq!(a.busy_since(b), None, "counters that went backwards");
        assert_eq!(CoreTimes::parse(before, 2), None);
        assert_eq!(CoreTimes::parse("cpu1 x y\n", 1), None);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
