//! Running the load generator and reading what a server spent: requests/s and latency from
//! wrk, CPU time and peak memory from /proc.

use anyhow::{bail, Context, Result};
use std::io::Write;
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

/// What wrk sends: how many connections, and how long each waits between a response and
/// its next request.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub connections: u32,
    /// Milliseconds, 0 for none (each connection sends its next request at once).
    pub pause_ms: u64,
}

impl Load {
    /// `connections`, none pausing.
    pub fn saturating(connections: u32) -> Load {
        Load {
            connections,
            pause_ms: 0,
        }
    }

    /// The wrk script that makes each connection pause, if it pauses: wrk calls `delay()`
    /// before each request and waits that many milliseconds.
    pub fn script(&self) -> Option<String> {
        (self.pause_ms > 0).then(|| format!("function delay()\n  return {}\nend\n", self.pause_ms))
    }
}

/// Runs wrk against `url` with `Host: host` and `headers` and parses its report.
pub fn wrk(
    url: &str,
    host: &str,
    headers: &[&str],
    load: Load,
    duration: Duration,
) -> Result<Sample> {
    let (mut command, _script) = wrk_command(url, host, headers, load, duration)?;
    let out = command
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text)
}

/// wrk's command line for a run, and the script file it reads (kept until the run ends).
fn wrk_command(
    url: &str,
    host: &str,
    headers: &[&str],
    load: Load,
    duration: Duration,
) -> Result<(Command, Option<tempfile::NamedTempFile>)> {
    let mut command = Command::new("wrk");
    command
        .args(["-t1", "--latency", "--timeout", "5s"])
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .args(["-H", &format!("Host: {host}")]);
    for header in headers {
        command.args(["-H", header]);
    }
    let script = match load.script() {
        Some(text) => {
            let mut file = tempfile::Builder::new().suffix(".lua").tempfile()?;
            file.write_all(text.as_bytes())?;
            file.flush()?;
            command.arg("-s").arg(file.path());
            Some(file)
        }
        None => None,
    };
    command.arg(url);
    Ok((command, script))
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

    /// The arguments of a wrk command, as strings.
    fn args(command: &Command) -> Vec<String> {
        command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_paced_load_hands_wrk_a_script_that_delays_each_request() {
        let second = Duration::from_secs(1);
        let paced = Load {
            connections: 32,
            pause_ms: 3,
        };
        let (command, script) = wrk_command("http://a/", "h", &[], paced, second).unwrap();
        let script = script.expect("a paced run has a script");
        let given = args(&command);
        let at = given.iter().position(|a| a == "-s").expect("-s");
        assert_eq!(given[at + 1], script.path().to_string_lossy());
        assert_eq!(given.last().unwrap(), "http://a/", "the URL comes last");
        assert!(given.contains(&"-c32".to_string()));
        let text = std::fs::read_to_string(script.path()).unwrap();
        assert_eq!(text, "function delay()\n  return 3\nend\n");

        let (command, script) =
            wrk_command("http://a/", "h", &[], Load::saturating(32), second).unwrap();
        assert!(script.is_none());
        assert!(!args(&command).contains(&"-s".to_string()));
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
