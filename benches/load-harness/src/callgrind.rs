//! Instructions per request, counted by valgrind's callgrind: a deterministic measure of the
//! cost of observability in `observed-1k`, where wrk's requests/s vary too much between
//! identical runs to show a few percent.
//!
//! proxy-app runs under callgrind (pinned to core 0 like the other servers), is warmed up,
//! its counters are zeroed, wrk runs for a measured window, and the counters are dumped; the
//! dump's total divided by wrk's request count is the figure.

use crate::measure::wrk;
use crate::scenario::{Scenario, Upstream};
use crate::Server;
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long proxy-app may take to answer under valgrind (about 50x slower than native).
const START_DEADLINE: Duration = Duration::from_secs(120);

/// The load put on proxy-app under callgrind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// wrk's connections.
    pub connections: u32,
    /// Load before the counters are zeroed (connection pools, caches, lazy statics).
    pub warm_up: Duration,
    /// The measured window.
    pub window: Duration,
}

impl Plan {
    /// A full run's plan, or `--quick`'s: short, so a debug build still reports a number.
    pub fn new(quick: bool) -> Plan {
        match quick {
            false => Plan {
                connections: 8,
                warm_up: Duration::from_secs(5),
                window: Duration::from_secs(10),
            },
            true => Plan {
                connections: 1,
                warm_up: Duration::from_secs(1),
                window: Duration::from_secs(2),
            },
        }
    }
}

/// The note for the observed scenario: instructions per request with and without metrics
/// and access log, or why they were not measured.
pub fn observed_note(
    s: &Scenario,
    args: &crate::Args,
    up: &Upstream<'_>,
    dir: &Path,
) -> Result<String> {
    if !installed() {
        return Ok(summary(None, &Plan::new(args.quick)));
    }
    let plan = Plan::new(args.quick);
    let with = measure(s, &args.proxy_bin, up, dir, "", &plan)?;
    let plain = Scenario {
        observed: false,
        ..s.clone()
    };
    let without = measure(&plain, &args.proxy_bin, up, dir, "-unobserved", &plan)?;
    Ok(summary(Some((with, without)), &plan))
}

/// Whether valgrind and callgrind_control run (Debian's `valgrind` package has both).
fn installed() -> bool {
    ["valgrind", "callgrind_control"].iter().all(|program| {
        Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The report's line: both counts and their ratio, or "not measured".
pub fn summary(counts: Option<(f64, f64)>, plan: &Plan) -> String {
    let Some((with, without)) = counts else {
        return "Instructions per request (callgrind): not measured (valgrind not installed)."
            .to_string();
    };
    let ratio = if without > 0.0 { with / without } else { 0.0 };
    format!(
        "Instructions per request (callgrind, {c} connection(s), {w} s window after a {u} s warm-up): {with:.1}k with metrics and log, {without:.1}k without: **{ratio:.3}x**.",
        c = plan.connections,
        w = plan.window.as_secs(),
        u = plan.warm_up.as_secs(),
        with = with / 1e3,
        without = without / 1e3,
    )
}

/// Instructions per request of proxy-app for `s`, under callgrind; `tag` tells its files
/// apart from another proxy-app's.
fn measure(
    s: &Scenario,
    bin: &Path,
    up: &Upstream<'_>,
    dir: &Path,
    tag: &str,
    plan: &Plan,
) -> Result<f64> {
    let out_file = dir.join(format!("cg-{}{tag}.out", s.name));
    let server = start(s, bin, up, dir, tag, &out_file)?;
    let pid = server.child.id();
    let url = format!("http://{}{}", server.addr, s.path());
    let host = s.host();
    wrk(&url, &host, plan.connections, plan.warm_up).context("warm-up under callgrind")?;
    control(pid, "-z")?;
    let sample = wrk(&url, &host, plan.connections, plan.window)?;
    control(pid, "-d")?;
    // Stop it now: nothing more is counted, and it frees core 0.
    drop(server);
    let dump = first_dump(&out_file);
    let text =
        std::fs::read_to_string(&dump).with_context(|| format!("reading {}", dump.display()))?;
    per_request(total_instructions(&text)?, sample.requests)
}

/// Starts proxy-app under callgrind, writing its dumps next to `out_file`.
fn start(
    s: &Scenario,
    bin: &Path,
    up: &Upstream<'_>,
    dir: &Path,
    tag: &str,
    out_file: &Path,
) -> Result<Server> {
    let mut out_arg = OsString::from("--callgrind-out-file=");
    out_arg.push(out_file);
    let wrapper = ["valgrind".into(), "--tool=callgrind".into(), out_arg];
    let tag = format!("{tag}-callgrind");
    crate::start_proxy_under(s, bin, up, dir, &tag, &[], &wrapper, START_DEADLINE)
        .context("proxy-app under callgrind")
}

/// Sends callgrind_control's `option` (`-z` zero, `-d` dump) to process `pid`; returns
/// once callgrind has done it.
fn control(pid: u32, option: &str) -> Result<()> {
    let out = Command::new("callgrind_control")
        .arg(option)
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .output()
        .context("running callgrind_control")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // It reports a missing process on stdout with a zero exit status.
    if !out.status.success() || text.contains("Error") {
        bail!(
            "callgrind_control {option} {pid} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The file of the first dump requested with `--callgrind-out-file=out_file`: callgrind
/// numbers the parts of a dump on request.
fn first_dump(out_file: &Path) -> PathBuf {
    let mut name = out_file.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// The instructions (`Ir`) a callgrind dump counted: its `summary:` line, or `totals:`.
pub fn total_instructions(text: &str) -> Result<u64> {
    let column = text
        .lines()
        .find_map(|l| l.strip_prefix("events:"))
        .and_then(|events| events.split_whitespace().position(|e| e == "Ir"))
        .unwrap_or(0);
    let line = |key: &str| text.lines().find_map(|l| l.strip_prefix(key));
    let values = line("summary:")
        .or_else(|| line("totals:"))
        .context("callgrind dump without a summary: or totals: line")?;
    let value = values
        .split_whitespace()
        .nth(column)
        .with_context(|| format!("no Ir count in `{}`", values.trim()))?;
    value
        .parse()
        .with_context(|| format!("bad Ir count `{value}`"))
}

/// Instructions per request; an error when no request completed.
pub fn per_request(instructions: u64, requests: u64) -> Result<f64> {
    if requests == 0 {
        bail!("no request completed in the measured window under callgrind");
    }
    Ok(instructions as f64 / requests as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\npid: 4242\ncmd:  proxy-app run --config x.toml\npart: 1\n\ndesc: I1 cache: \ndesc: Timerange: Basic block 1000 - 2000\ntrigger: Program termination\n\npositions: line\nevents: Ir\nsummary: 1027000\n\n\nob=(1) proxy-app\nfl=(1) ???\nfn=(1) main\n0 1027000\n\ntotals: 1027000\n";

    #[test]
    fn reads_the_summary_line_of_a_dump() {
        assert_eq!(total_instructions(DUMP).unwrap(), 1_027_000);
    }

    #[test]
    fn falls_back_to_totals_and_finds_the_ir_column() {
        let text = "events: Dr Ir Dw\nfn=(1) main\n0 1 2 3\ntotals: 5 960 7\n";
        assert_eq!(total_instructions(text).unwrap(), 960);
        assert!(total_instructions("events: Ir\nfn=(1) main\n").is_err());
        assert!(total_instructions("events: Ir\nsummary: lots\n").is_err());
    }

    #[test]
    fn divides_by_the_requests_of_the_window() {
        assert_eq!(per_request(1_027_000, 10).unwrap(), 102_700.0);
        assert!(per_request(1_027_000, 0).is_err());
    }

    #[test]
    fn the_summary_gives_both_counts_and_their_ratio() {
        let plan = Plan::new(false);
        let text = summary(Some((102_700.0, 96_200.0)), &plan);
        assert!(
            text.contains("102.7k with metrics and log, 96.2k without: **1.068x**"),
            "{text}"
        );
        assert!(text.contains("8 connection(s), 10 s window"), "{text}");
        assert!(summary(None, &plan).ends_with("not measured (valgrind not installed)."));
    }

    #[test]
    fn quick_runs_are_short() {
        let quick = Plan::new(true);
        assert_eq!(quick.connections, 1);
        assert!(quick.warm_up + quick.window <= Duration::from_secs(3));
        assert_eq!(
            first_dump(Path::new("cg-observed-1k.out")),
            Path::new("cg-observed-1k.out.1")
        );
    }
}
