//! Instructions per request, counted by valgrind's callgrind: a deterministic measure where
//! wrk's requests/s vary by about ±15% between identical runs.
//!
//! A server runs under callgrind (pinned to core 0 like the other servers), answers `n`
//! GETs sent one after another on one keep-alive connection, and is stopped with SIGTERM;
//! callgrind then writes the instructions each process ran (every thread; nginx's master
//! and worker each to a file of their own, summed). That is
//! done twice, with `n1` and `n2` GETs, each time by a fresh process with a fresh cache.
//! After the first GET (a miss in the cache-hit scenarios) the counters are zeroed
//! (`callgrind_control --zero`): start-up work whose length depends on the clock (a timer
//! library calibrating itself for some milliseconds) would otherwise move the totals by
//! about a million instructions between runs. That reaches proxy-app and nginx's master,
//! not nginx's worker: valgrind's control commands do not reach a forked process, so the
//! worker's start-up only cancels in the difference. Shutdown is the same in both and cancels, so
//! `(I2 - I1) / (n2 - n1)` is what one more request costs.

use crate::client::Client;
use crate::scenario::Scenario;
use crate::Server;
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long a server may take to answer, and to exit, under valgrind: about 50x slower than
/// native, and a debug build on a busy machine takes minutes to start.
pub const DEADLINE: Duration = Duration::from_secs(300);

/// How many GETs the two runs send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// GETs of the first run.
    pub fewer: u64,
    /// GETs of the second run.
    pub more: u64,
}

impl Plan {
    /// A full run's plan, or `--quick`'s: a few GETs, so a debug build still reports a number.
    pub fn new(quick: bool) -> Plan {
        match quick {
            false => Plan {
                fewer: 500,
                more: 2500,
            },
            true => Plan { fewer: 5, more: 25 },
        }
    }
}

/// A server under test, started under the given wrapper (valgrind's command line) with a
/// tag telling its files apart from another run's.
pub type Start<'a> = Box<dyn Fn(&[OsString], &str) -> Result<Server> + 'a>;

/// The counts of one scenario: each server's instructions per request, or why there are
/// none.
#[derive(Debug, Clone)]
pub struct Counts {
    /// The plan they were counted with.
    pub plan: Plan,
    /// Label and instructions per request of each server counted, in order; empty when
    /// not measured.
    pub counts: Vec<(&'static str, f64)>,
    /// Why nothing was counted.
    pub skipped: Option<&'static str>,
}

impl Counts {
    /// Counts each of `servers`, one after the other (each under callgrind twice).
    pub fn measure(
        s: &Scenario,
        plan: Plan,
        dir: &Path,
        servers: Vec<(&'static str, Start<'_>)>,
    ) -> Result<Counts> {
        if !installed() {
            return Ok(Counts::skipped(plan, "valgrind not installed"));
        }
        let counts = servers
            .into_iter()
            .map(|(label, start)| {
                let count = per_request(s, &plan, dir, label, &*start)
                    .with_context(|| format!("{label} under callgrind"))?;
                Ok((label, count))
            })
            .collect::<Result<_>>()?;
        Ok(Counts {
            plan,
            counts,
            skipped: None,
        })
    }

    /// Nothing counted, because of `why`.
    pub fn skipped(plan: Plan, why: &'static str) -> Counts {
        Counts {
            plan,
            counts: Vec::new(),
            skipped: Some(why),
        }
    }

    /// The report's line: each count, and the first's ratio to the second.
    pub fn note(&self) -> String {
        let lead = format!(
            "Instructions per request (callgrind: the difference of {} and {} GETs on one keep-alive connection, each by a fresh process)",
            self.plan.fewer, self.plan.more
        );
        if let Some(why) = self.skipped {
            return format!("{lead}: not measured ({why}).");
        }
        let each: Vec<String> = self
            .counts
            .iter()
            .map(|(label, count)| format!("{label} {:.1}k", count / 1e3))
            .collect();
        let ratio = match self.counts.as_slice() {
            [(_, first), (_, second), ..] if *second > 0.0 => {
                format!(": **{:.2}x**", first / second)
            }
            _ => String::new(),
        };
        format!("{lead}: {}{ratio}.", each.join(", "))
    }
}

/// Whether valgrind runs (Debian's `valgrind` package).
pub fn installed() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One server's instructions per request: two runs under callgrind, their difference.
fn per_request(
    s: &Scenario,
    plan: &Plan,
    dir: &Path,
    label: &str,
    start: &dyn Fn(&[OsString], &str) -> Result<Server>,
) -> Result<f64> {
    let mut totals = Vec::new();
    for requests in [plan.fewer, plan.more] {
        let tag = format!("-callgrind-{}-{requests}", slug(label));
        let out_dir = dir.join(format!("cg-{}{tag}", s.name));
        let wrapper = dumps_and_wrapper(&out_dir, &[])?;
        let server = start(&wrapper, &tag)?;
        let mut client = Client::connect(server.addr)?;
        let (host, path, expected) = (s.host(), s.path(), s.expected_status());
        for i in 0..requests {
            let (status, _) = client.get(&host, &path)?;
            if status != expected && !(i == 0 && status == 200) {
                bail!("GET {path} number {i}: status {status}, not {expected}");
            }
            if i == 0 {
                zero_counters()?;
            }
        }
        drop(client);
        // callgrind writes its counts when the process exits.
        server.stop(DEADLINE)?;
        totals.push(sum_of_dumps(&out_dir)?);
    }
    difference(totals[0], totals[1], plan)
}

/// `label` as a part of a file name.
pub fn slug(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Makes `out_dir` for one run's dumps, writable by nginx's worker after it has dropped
/// root, and returns the command line that runs a server under callgrind (with `options`),
/// writing one file per process there (`%p.out`, `%p` its pid).
pub fn dumps_and_wrapper(out_dir: &Path, options: &[&str]) -> Result<Vec<OsString>> {
    std::fs::create_dir_all(out_dir)?;
    std::fs::set_permissions(out_dir, std::fs::Permissions::from_mode(0o777))?;
    let mut out_arg = OsString::from("--callgrind-out-file=");
    out_arg.push(out_dir.join("%p.out"));
    let mut wrapper: Vec<OsString> = vec!["valgrind".into(), "--tool=callgrind".into()];
    wrapper.extend(options.iter().map(OsString::from));
    wrapper.push(out_arg);
    Ok(wrapper)
}

/// Zeroes the counters of every process running under callgrind that its control commands
/// reach (the server under test; for nginx its master, not the forked worker); nothing
/// else runs under callgrind meanwhile.
fn zero_counters() -> Result<()> {
    let out = Command::new("callgrind_control")
        .arg("--zero")
        .stdin(Stdio::null())
        .output()
        .context("running callgrind_control")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains("OK") {
        bail!(
            "callgrind_control --zero failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The instructions of every dump (`*.out`) in `dir`.
fn sum_of_dumps(dir: &Path) -> Result<u64> {
    dumps(dir)?
        .iter()
        .map(|(path, text)| {
            total_instructions(text).with_context(|| format!("in {}", path.display()))
        })
        .sum()
}

/// The path and text of every dump (`*.out`) in `dir`; an error when there is none.
pub fn dumps(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("out") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        found.push((path, text));
    }
    if found.is_empty() {
        bail!("no callgrind dump in {}", dir.display());
    }
    Ok(found)
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

/// Instructions per request from the totals of the run with fewer GETs and the one with
/// more; an error when more GETs did not cost more.
pub fn difference(fewer: u64, more: u64, plan: &Plan) -> Result<f64> {
    if more <= fewer || plan.more <= plan.fewer {
        bail!(
            "{} GETs ran {more} instructions, {} GETs {fewer}: no difference to divide",
            plan.more,
            plan.fewer
        );
    }
    Ok((more - fewer) as f64 / (plan.more - plan.fewer) as f64)
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
    fn the_difference_of_two_runs_cancels_start_up() {
        let plan = Plan::new(false);
        // 50M for start-up and shutdown, 100k per request.
        let run = |n: u64| 50_000_000 + n * 100_000;
        let count = difference(run(plan.fewer), run(plan.more), &plan).unwrap();
        assert_eq!(count, 100_000.0);
        assert!(difference(run(plan.more), run(plan.fewer), &plan).is_err());
    }

    #[test]
    fn the_note_gives_each_count_and_the_ratio() {
        let plan = Plan::new(false);
        let counts = Counts {
            plan,
            counts: vec![("proxy-app", 102_700.0), ("nginx", 24_000.0)],
            skipped: None,
        };
        let text = counts.note();
        assert!(text.contains("difference of 500 and 2500 GETs"), "{text}");
        assert!(
            text.ends_with("proxy-app 102.7k, nginx 24.0k: **4.28x**."),
            "{text}"
        );
        let skipped = Counts::skipped(plan, "valgrind not installed").note();
        assert!(skipped.ends_with("not measured (valgrind not installed)."));
    }

    #[test]
    fn quick_runs_send_few_requests() {
        let quick = Plan::new(true);
        assert!(quick.more <= 25 && quick.fewer < quick.more);
    }

    #[test]
    fn sums_the_dumps_of_every_process_of_a_run() {
        let dir = tempfile::tempdir().unwrap();
        let dump = |name: &str, ir: u64| {
            let text = format!("events: Ir\nsummary: {ir}\n");
            std::fs::write(dir.path().join(name), text).unwrap();
        };
        dump("100.out", 7_000);
        dump("101.out", 900);
        std::fs::write(dir.path().join("notes.txt"), "summary: 1\n").unwrap();
        assert_eq!(sum_of_dumps(dir.path()).unwrap(), 7_900);
        let empty = tempfile::tempdir().unwrap();
        assert!(sum_of_dumps(empty.path()).is_err());
    }
}
