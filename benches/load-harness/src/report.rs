//! The Markdown report: medians with spread, and ratios against nginx, the other peers and
//! the direct origin; and the numbers the chart draws.

use crate::callgrind::Counts;
use crate::chart::{Bar, Panel};
use crate::fill::FillSample;
use crate::measure::{median, Sample};
use crate::scenario::Scenario;
use std::fmt::Write as _;
use std::time::Duration;

/// One server's results in one scenario.
#[derive(Debug, Clone)]
pub struct Row {
    label: &'static str,
    rps: f64,
    rps_min: f64,
    rps_max: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
    peak_rss_mib: f64,
    /// Median busy share of the load core, over the runs that measured it.
    load_core_busy: Option<f64>,
    non_2xx: u64,
    errors: u64,
    /// Medians of proxy-app's requests/s and CPU per request over this row's, round by
    /// round: for a row measured in the same rounds as proxy-app.
    pairs: Option<(f64, f64)>,
}

impl Row {
    /// Medians (and the requests/s spread) of some samples.
    pub fn from_samples(label: &'static str, samples: &[Sample], peak_rss_mib: f64) -> Self {
        let rps: Vec<f64> = samples.iter().map(|s| s.rps).collect();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Self {
            label,
            rps: median(rps.clone()),
            rps_min: rps.iter().copied().fold(f64::INFINITY, f64::min),
            rps_max: rps.iter().copied().fold(0.0, f64::max),
            p50_ms: median(samples.iter().map(|s| ms(s.p50)).collect()),
            p99_ms: median(samples.iter().map(|s| ms(s.p99)).collect()),
            cpu_us: median(samples.iter().map(Sample::cpu_us_per_request).collect()),
            peak_rss_mib,
            load_core_busy: {
                let busy: Vec<f64> = samples.iter().filter_map(|s| s.load_core_busy).collect();
                (!busy.is_empty()).then(|| median(busy))
            },
            non_2xx: samples.iter().map(|s| s.non_2xx).sum(),
            errors: samples.iter().map(|s| s.errors).sum(),
            pairs: None,
        }
    }

    /// Adds the medians of the per-round ratios of `proxy` to `own` (this row's samples,
    /// each measured shortly after proxy-app's of the same round). On a machine whose
    /// speed drifts, a ratio of adjacent runs is steadier than a ratio of medians.
    pub fn paired(mut self, proxy: &[Sample], own: &[Sample]) -> Self {
        let pairs = || proxy.iter().zip(own);
        let rps = median(pairs().map(|(p, o)| ratio(p.rps, o.rps)).collect());
        let cpu = pairs()
            .map(|(p, o)| ratio(p.cpu_us_per_request(), o.cpu_us_per_request()))
            .collect();
        self.pairs = Some((rps, median(cpu)));
        self
    }
}

/// One server's results in a `cache-fill-*` scenario (medians of its fills).
#[derive(Debug, Clone)]
pub struct FillRow {
    label: &'static str,
    cache_mib: usize,
    seconds: f64,
    before_mib: f64,
    peak_mib: f64,
    end_mib: f64,
}

impl FillRow {
    /// Medians of some fills of `s`.
    pub fn from_samples(label: &'static str, s: &Scenario, samples: &[FillSample]) -> Self {
        let of = |field: fn(&FillSample) -> f64| median(samples.iter().map(field).collect());
        Self {
            label,
            cache_mib: s.cache_mib,
            seconds: of(|f| f.seconds),
            before_mib: of(|f| f.before_mib),
            peak_mib: of(|f| f.peak_mib),
            end_mib: of(|f| f.end_mib),
        }
    }
}

/// Label of proxy-app's rows.
pub const PROXY_APP: &str = "proxy-app";
/// Label of nginx's rows.
pub const NGINX: &str = "nginx";
/// Label of HAProxy's rows.
pub const HAPROXY: &str = "HAProxy";
/// Label of HAProxy's equal-output rows ([`crate::scenario::Scenario::peers_same_headers`]).
pub const HAPROXY_SAME: &str = "HAProxy, proxy-app's headers";
/// Label of Caddy's rows.
pub const CADDY: &str = "Caddy";
/// The servers the chart draws, in its order.
pub const CHARTED: [&str; 4] = [PROXY_APP, NGINX, HAPROXY, CADDY];
/// Label of the direct-origin rows.
pub const DIRECT: &str = "direct origin";
/// Label of the rows of nginx without upstream keepalive.
pub const NO_KEEPALIVE: &str = "nginx, no upstream keepalive";
/// Label of the fill rows of proxy-app with mimalloc's arena committed at once (mimalloc's
/// own default on Linux; proxy-app commits it as used unless told so).
pub const EAGER_COMMIT: &str = "proxy-app, MIMALLOC_ARENA_EAGER_COMMIT=1";
/// Label of the rows of proxy-app without metrics and access log.
pub const UNOBSERVED: &str = "proxy-app, no metrics, no log";
/// Label of the rows of the baseline build (`--baseline-bin`).
pub const BASELINE: &str = "proxy-app, baseline build";

/// The whole report.
pub struct Report {
    header: String,
    direct: Option<Row>,
    body: String,
    /// Each scenario's rows, for the chart (loopback scenarios only).
    charted: Vec<(&'static str, Vec<Row>)>,
    /// Each counted scenario's instructions per request, for the summary.
    instructions: Vec<(&'static str, Counts)>,
}

impl Report {
    /// A report for one run of the harness.
    pub fn new(
        command: &str,
        cores: usize,
        pinned: bool,
        duration: Duration,
        rounds: usize,
    ) -> Self {
        let header = format!(
            "# Load test results\n\n\
             Generated by `{command}` on {date}, at commit {commit}. To reproduce: `benches/run.sh` on a Debian 12 machine with two cores or more (it installs nginx, HAProxy, Caddy, wrk, h2load and valgrind, builds proxy-app in release mode and takes about 30 minutes); `benches/run.sh --scenarios pass-1k,cache-hit-defaults-1k` for a part.\n\n\
             - Machine: {cpu}, {cores} cores, {mem}; kernel {kernel}\n\
             - Servers pinned to core 0, wrk and the fake tailnet to core 1: {pinned}\n\
             - Each scenario: a 1 s warm-up per server, then {rounds} alternating runs of {secs} s per server (proxy-app, nginx, HAProxy, Caddy, proxy-app, nginx, ...; in `observed-1k` proxy-app without metrics and log runs right after proxy-app); medians reported, requests/s spread as min-max; ratios against each peer also as medians of each round's pair, which a machine whose speed drifts between rounds disturbs less; CPU per request is the server's user + system time over the requests wrk completed; load core busy is the share of core 1's time (wrk, the fake tailnet and its origins) that was busy during the server's runs (median): near 100%, the load side, not the server, set that server's requests/s, and CPU per request is the fairer comparison\n\
             - wrk: 1 thread, `--latency`; in the `*-paced` scenarios h2load instead (HTTP/1.1, 1 thread, the scenario's rate split over its connections with `--rps`, latencies from its per-request log); nginx: 1 worker, upstream keepalive >= 2x connections, keepalive_requests 1000000, the forwarding headers, request id and cache status header proxy-app adds by default (except in `cache-hit-defaults-1k`: both at their defaults); no access log and no proxy-app metrics, except in `observed-1k` (both log JSON to a file, proxy-app records metrics) and `cache-hit-defaults-1k` (metrics as shipped, on)\n\
             - HAProxy (one thread, `http-reuse always`) and Caddy (`reverse_proxy`, `GOMAXPROCS=1`), at their defaults otherwise (no log; Caddy adds its X-Forwarded-* headers, HAProxy none), in the pass-through scenarios `pass-1k`, `pass-1k-paced`, `pass-tls-1k`, `conns-256`, `conns-1024`, `slow-1024`; in `pass-1k` and `pass-tls-1k` HAProxy also runs adding the headers proxy-app adds by default (`X-Forwarded-For`, `X-Real-IP`, `X-Forwarded-Proto`, `Fly-Client-IP` and a UUID `X-Request-Id` upstream, the same id in the response): the equal-output row, under its defaults one\n\
             - Instructions per request (callgrind): each server answers `n` GETs one after another on one keep-alive connection under `valgrind --tool=callgrind`, then stops; its counters are zeroed after the first request (a miss for hits; nginx's master's only, valgrind's control commands do not reach its worker), so start-up is not counted; two runs of different `n`, each by a fresh process, and the difference of their totals over the difference of `n`, so that shutdown cancels\n\n",
            date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            commit = commit(),
            cpu = cpu_model(),
            mem = command_output("sh", &["-c", "free -h | awk '/Mem:/ {print $2}'"]),
            kernel = command_output("uname", &["-r"]),
            secs = duration.as_secs(),
        );
        Self {
            header,
            direct: None,
            body: String::new(),
            charted: Vec::new(),
            instructions: Vec::new(),
        }
    }

    /// The direct-origin baseline (no proxy).
    pub fn direct(&mut self, row: Row) {
        self.direct = Some(row);
    }

    /// One more line in the header's list.
    pub fn note(&mut self, line: &str) {
        let at = self.header.len() - 1;
        self.header.insert_str(at, &format!("- {line}\n"));
    }

    /// A scenario that could not run, and why.
    pub fn skipped(&mut self, s: &Scenario, why: &str) {
        let _ = writeln!(self.body, "## {} — {}\n\nSkipped: {why}\n", s.name, s.about);
    }

    /// One scenario's rows (proxy-app first, then nginx, then any others; a direct-origin
    /// row of its own replaces the global one in the ratios), and an optional note.
    pub fn scenario(&mut self, s: &Scenario, rows: Vec<Row>, note: Option<&str>) {
        if !s.wan {
            self.charted.push((s.name, rows.clone()));
        }
        let _ = writeln!(self.body, "## {} — {}\n", s.name, s.about);
        if let Some(note) = note {
            let _ = writeln!(self.body, "{note}\n");
        }
        let _ = writeln!(self.body, "{TABLE_HEAD}");
        for row in &rows {
            write_row(&mut self.body, row);
        }
        if let [proxy, nginx, others @ ..] = rows.as_slice() {
            let _ = write!(
                self.body,
                "\nproxy-app / nginx: **{:.2}x** req/s, {:.2}x CPU per request, p99 {:.2}x",
                ratio(proxy.rps, nginx.rps),
                ratio(proxy.cpu_us, nginx.cpu_us),
                ratio(proxy.p99_ms, nginx.p99_ms)
            );
            if let Some((rps, cpu)) = nginx.pairs {
                let _ = write!(
                    self.body,
                    " (medians of the rounds' pairs: **{rps:.2}x** req/s, {cpu:.2}x CPU per request)"
                );
            }
            for peer in others
                .iter()
                .filter(|r| [HAPROXY, HAPROXY_SAME, CADDY].contains(&r.label))
            {
                let _ = write!(
                    self.body,
                    "; proxy-app / {}: **{:.2}x** req/s, {:.2}x CPU per request, p99 {:.2}x",
                    peer.label,
                    ratio(proxy.rps, peer.rps),
                    ratio(proxy.cpu_us, peer.cpu_us),
                    ratio(proxy.p99_ms, peer.p99_ms)
                );
                if let Some((rps, cpu)) = peer.pairs {
                    let _ = write!(self.body, " (pairs: **{rps:.2}x** req/s, {cpu:.2}x CPU)");
                }
            }
            let own_direct = others.iter().find(|r| r.label == DIRECT);
            // The shared direct run saturates the origin: no ceiling for a paced scenario.
            let shared_direct = self.direct.as_ref().filter(|_| s.rate == 0);
            if let Some(direct) = own_direct.or(shared_direct) {
                let _ = write!(
                    self.body,
                    "; proxy-app / direct origin: **{:.2}x** req/s",
                    ratio(proxy.rps, direct.rps)
                );
            }
            if let Some(no_keepalive) = others.iter().find(|r| r.label == NO_KEEPALIVE) {
                let _ = write!(
                    self.body,
                    "; nginx without / with upstream keepalive: **{:.2}x** req/s",
                    ratio(no_keepalive.rps, nginx.rps)
                );
            }
            let variants = [
                (
                    UNOBSERVED,
                    "proxy-app with / without metrics and access log",
                ),
                (BASELINE, "proxy-app / baseline build"),
            ];
            for (label, what) in variants {
                if let Some(row) = others.iter().find(|r| r.label == label) {
                    write_variant(&mut self.body, what, proxy, row);
                }
            }
            let _ = writeln!(self.body, "\n");
        }
    }

    /// A scenario's instructions per request, for the summary at the top.
    pub fn instructions(&mut self, s: &Scenario, counts: Counts) {
        self.instructions.push((s.name, counts));
    }

    /// What the chart draws: requests/s and CPU per request of each charted server in each
    /// loopback scenario.
    pub fn chart_data(&self) -> Vec<Panel> {
        let bars = |value: fn(&Row) -> f64| -> Vec<Bar> {
            self.charted
                .iter()
                .flat_map(|(scenario, rows)| {
                    rows.iter()
                        .filter(|r| CHARTED.contains(&r.label))
                        .map(move |r| Bar {
                            group: scenario,
                            series: r.label,
                            value: value(r),
                        })
                })
                .collect()
        };
        vec![
            Panel {
                title: "requests/s (median), higher is better",
                bars: bars(|r| r.rps),
            },
            Panel {
                title: "server CPU µs per request (median), lower is better",
                bars: bars(|r| r.cpu_us),
            },
        ]
    }

    /// A `cache-fill-*` scenario's rows: memory against the cache's `max_size`.
    pub fn fill(&mut self, s: &Scenario, rows: Vec<FillRow>, rounds: usize) {
        let _ = writeln!(self.body, "## {} — {}\n", s.name, s.about);
        let _ = writeln!(
            self.body,
            "`max_size` {} MiB, {} objects of {} KiB; medians of {rounds} fill(s), each by a fresh process.\n",
            s.cache_mib,
            s.fill_objects(),
            s.body_size / 1024
        );
        let _ = writeln!(self.body, "| server | fill s | RSS before MiB | peak RSS MiB | RSS at end MiB | peak RSS / max_size |");
        let _ = writeln!(self.body, "|---|---:|---:|---:|---:|---:|");
        for r in &rows {
            let _ = writeln!(
                self.body,
                "| {} | {:.1} | {:.1} | {:.1} | {:.1} | **{:.2}x** |",
                r.label,
                r.seconds,
                r.before_mib,
                r.peak_mib,
                r.end_mib,
                ratio(r.peak_mib, r.cache_mib as f64)
            );
        }
        self.body.push('\n');
    }

    /// The Markdown text, linking the chart file `chart` (beside the report) if any.
    pub fn render(&self, chart: Option<&str>) -> String {
        let mut out = self.header.clone();
        if let Some(chart) = chart {
            let _ = writeln!(out, "![requests/s and CPU per request of each server in each loopback scenario]({chart})\n");
        }
        if !self.instructions.is_empty() {
            let _ = writeln!(out, "## Instructions per request (callgrind)\n");
            let _ = writeln!(out, "| scenario | server | instructions per request |");
            let _ = writeln!(out, "|---|---|---:|");
            for (scenario, counts) in &self.instructions {
                for (label, count) in &counts.counts {
                    let _ = writeln!(out, "| {scenario} | {label} | {:.1}k |", count / 1e3);
                }
                if let Some(why) = counts.skipped {
                    let _ = writeln!(out, "| {scenario} | - | not measured ({why}) |");
                }
            }
            out.push('\n');
        }
        if let Some(direct) = &self.direct {
            let _ = writeln!(out, "## {DIRECT} — wrk straight at the fake peer, 1 KiB, 32 connections (the ceiling)\n");
            let _ = writeln!(out, "{TABLE_HEAD}");
            write_row(&mut out, direct);
            out.push('\n');
        }
        out.push_str(&self.body);
        out
    }
}

/// The head of a scenario's table.
const TABLE_HEAD: &str = "| server | req/s (median) | spread | p50 ms | p99 ms | CPU µs / req | peak RSS MiB | load core busy | non-2xx | socket errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

fn write_row(out: &mut String, r: &Row) {
    let cpu = if r.cpu_us > 0.0 {
        format!("{:.1}", r.cpu_us)
    } else {
        "-".into()
    };
    let rss = if r.peak_rss_mib > 0.0 {
        format!("{:.1}", r.peak_rss_mib)
    } else {
        "-".into()
    };
    let load = r
        .load_core_busy
        .map_or_else(|| "-".into(), |busy| format!("{:.0}%", busy * 100.0));
    let _ = writeln!(
        out,
        "| {} | {:.0} | {:.0}-{:.0} | {:.2} | {:.2} | {} | {} | {} | {} | {} |",
        r.label,
        r.rps,
        r.rps_min,
        r.rps_max,
        r.p50_ms,
        r.p99_ms,
        cpu,
        rss,
        load,
        r.non_2xx,
        r.errors
    );
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The checked-out commit, and whether the tree differs from it.
fn commit() -> String {
    let hash = command_output("git", &["rev-parse", "--short=12", "HEAD"]);
    if hash.is_empty() {
        return "unknown (not a git checkout)".into();
    }
    match command_output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        true => format!("`{hash}`"),
        false => format!("`{hash}` with uncommitted changes"),
    }
}

/// The summary's part for a variant of proxy-app run back to back with it.
fn write_variant(body: &mut String, what: &str, proxy: &Row, variant: &Row) {
    let _ = write!(
        body,
        "; {what}: **{:.2}x** req/s, {:.2}x CPU per request",
        ratio(proxy.rps, variant.rps),
        ratio(proxy.cpu_us, variant.cpu_us)
    );
    if let Some((rps, cpu)) = variant.pairs {
        let _ = write!(
            body,
            " (medians of the rounds' back-to-back pairs: **{rps:.2}x** req/s, {cpu:.2}x CPU per request)"
        );
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".into(), |(_, v)| v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 10 s run at `rps` requests/s that used 10 s of CPU.
    fn run(rps: f64) -> Sample {
        Sample {
            rps,
            requests: (rps * 10.0) as u64,
            cpu_seconds: 10.0,
            ..Sample::default()
        }
    }

    #[test]
    fn pairs_are_ratios_of_adjacent_runs_not_of_medians() {
        // The machine slows down between rounds; within a round, proxy-app is 5% slower.
        let proxy = [run(95.0), run(47.5), run(190.0)];
        let own = [run(100.0), run(50.0), run(200.0)];
        let row = Row::from_samples(UNOBSERVED, &own, 0.0).paired(&proxy, &own);
        let (rps, cpu) = row.pairs.unwrap();
        assert!((rps - 0.95).abs() < 1e-9, "{rps}");
        assert!((cpu - 100.0 / 95.0).abs() < 1e-9, "{cpu}");
        let s = crate::scenario::named("observed-1k");
        let mut report = Report::new("test", 2, true, Duration::from_secs(1), 3);
        let proxy_row = Row::from_samples("proxy-app", &proxy, 0.0);
        let nginx_row = Row::from_samples("nginx", &own, 0.0).paired(&proxy, &own);
        report.scenario(&s, vec![proxy_row, nginx_row, row], None);
        let text = report.render(None);
        assert!(
            text.contains("; proxy-app with / without metrics and access log: **0.95x** req/s, 1.05x CPU per request (medians of the rounds' back-to-back pairs: **0.95x** req/s"),
            "{text}"
        );
        assert!(
            text.contains("proxy-app / nginx: **0.95x** req/s, 1.05x CPU per request, p99 0.00x (medians of the rounds' pairs: **0.95x** req/s"),
            "{text}"
        );
    }

    #[test]
    fn a_baseline_build_is_compared_round_by_round() {
        // The machine speeds up between rounds; within each, proxy-app is 2% faster.
        let proxy = [run(102.0), run(153.0), run(204.0)];
        let baseline = [run(100.0), run(150.0), run(200.0)];
        let s = crate::scenario::named("pass-1k");
        let mut report = Report::new("test", 2, true, Duration::from_secs(1), 3);
        let rows = vec![
            Row::from_samples(PROXY_APP, &proxy, 0.0),
            Row::from_samples(NGINX, &baseline, 0.0).paired(&proxy, &baseline),
            Row::from_samples(BASELINE, &baseline, 0.0).paired(&proxy, &baseline),
        ];
        report.scenario(&s, rows, None);
        let text = report.render(None);
        assert!(
            text.contains("; proxy-app / baseline build: **1.02x** req/s, 0.98x CPU per request (medians of the rounds' back-to-back pairs: **1.02x** req/s, 0.98x CPU per request)"),
            "{text}"
        );
        assert!(
            text.contains("| proxy-app, baseline build | 150 |"),
            "{text}"
        );
    }

    #[test]
    fn a_fill_reports_medians_and_peak_rss_against_max_size() {
        let s = crate::scenario::named("cache-fill-100k");
        let fill = |peak_mib| FillSample {
            seconds: 5.0,
            before_mib: 20.0,
            peak_mib,
            end_mib: 200.0,
        };
        let rows = vec![FillRow::from_samples(
            "proxy-app",
            &s,
            &[fill(250.0), fill(220.0), fill(230.0)],
        )];
        let mut report = Report::new("test", 2, true, Duration::from_secs(1), 3);
        report.fill(&s, rows, 3);
        let text = report.render(None);
        assert!(
            text.contains("`max_size` 200 MiB, 6144 objects of 100 KiB"),
            "{text}"
        );
        assert!(
            text.contains("| proxy-app | 5.0 | 20.0 | 230.0 | 200.0 | **1.15x** |"),
            "{text}"
        );
    }

    #[test]
    fn peers_get_ratios_a_chart_and_counts_a_summary() {
        let run = |rps: f64, cpu_seconds: f64| Sample {
            rps,
            requests: (rps * 10.0) as u64,
            cpu_seconds,
            ..Sample::default()
        };
        let s = crate::scenario::named("pass-1k");
        let proxy = [run(15_000.0, 9.0)];
        let row = |label, rps, cpu| {
            let own = [Sample {
                load_core_busy: Some(0.974),
                ..run(rps, cpu)
            }];
            Row::from_samples(label, &own, 0.0).paired(&proxy, &own)
        };
        let rows = vec![
            Row::from_samples(PROXY_APP, &proxy, 40.0),
            row(NGINX, 24_000.0, 7.2),
            row(HAPROXY, 21_000.0, 7.4),
            row(CADDY, 6_500.0, 9.1),
        ];
        let mut report = Report::new("test", 2, true, Duration::from_secs(1), 1);
        report.scenario(&s, rows, None);
        let plan = crate::callgrind::Plan::new(false);
        let counts = Counts {
            plan,
            counts: vec![(PROXY_APP, 103_000.0), (NGINX, 24_000.0)],
            skipped: None,
        };
        report.instructions(&s, counts);
        let text = report.render(Some("RESULTS.svg"));
        assert!(text.contains("](RESULTS.svg)"), "{text}");
        assert!(text.contains("| pass-1k | proxy-app | 103.0k |"), "{text}");
        // 9 s over 150,000 requests: 60 µs each.
        assert!(
            text.contains("| proxy-app | 15000 | 15000-15000 | 0.00 | 0.00 | 60.0 |"),
            "{text}"
        );
        // Where the load core's time was measured, its busy share; else a dash.
        assert!(
            text.contains("| nginx | 24000 | 24000-24000 | 0.00 | 0.00 | 30.0 | - | 97% | 0 | 0 |"),
            "{text}"
        );
        assert!(text.contains("| 60.0 | 40.0 | - | 0 | 0 |"), "{text}");
        assert!(
            text.contains("; proxy-app / HAProxy: **0.71x** req/s"),
            "{text}"
        );
        assert!(
            text.contains("; proxy-app / Caddy: **2.31x** req/s"),
            "{text}"
        );
        let panels = report.chart_data();
        assert_eq!(panels.len(), 2);
        let series: Vec<&str> = panels[1].bars.iter().map(|b| b.series).collect();
        assert_eq!(series, CHARTED);
        assert_eq!(panels[1].bars[0].value, 60.0);
        // The wan-* scenarios are latency-bound: not charted.
        let wan = crate::scenario::named("wan-pass-1k");
        report.scenario(&wan, vec![Row::from_samples(PROXY_APP, &proxy, 0.0)], None);
        assert_eq!(report.chart_data()[0].bars.len(), 4);
    }

    #[test]
    fn the_saturated_direct_origin_is_a_ceiling_only_for_saturated_scenarios() {
        let proxy = [run(15_000.0)];
        let mut report = Report::new("test", 2, true, Duration::from_secs(1), 1);
        report.direct(Row::from_samples(DIRECT, &[run(30_000.0)], 0.0));
        for name in ["pass-1k", "pass-1k-paced"] {
            let rows = vec![
                Row::from_samples(PROXY_APP, &proxy, 40.0),
                Row::from_samples(NGINX, &[run(24_000.0)], 0.0),
            ];
            report.scenario(&crate::scenario::named(name), rows, None);
        }
        let text = report.render(None);
        // A scenario's section, up to the next.
        let section = |name: &str| {
            let after = text.split(&format!("## {name} — ")).nth(1).unwrap();
            after.split("\n## ").next().unwrap().to_string()
        };
        assert!(
            section("pass-1k").contains("; proxy-app / direct origin: **0.50x** req/s"),
            "{text}"
        );
        assert!(
            !section("pass-1k-paced").contains("direct origin:"),
            "{text}"
        );
    }
}
