//! `--train`: the training run of a profile-guided build (`scripts/pgo-build.sh`).
//!
//! An instrumented proxy-app serves each loopback scenario in turn, configured as the harness
//! configures it, for a bounded number of GETs (and time) from a few keep-alive connections of this
//! process. No peer, load generator or tool runs, so training needs nothing but the fake
//! tailnet: it also runs where the harness's peers are not installed, such as the Fly image's
//! build stage. Each proxy-app is stopped gracefully, so that it writes its profile on exit.

use crate::client::Client;
use crate::scenario::{Scenario, Upstream, Work};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// GETs per scenario, spread over its connections.
pub const REQUESTS: usize = 20_000;
/// GETs per scenario with `--quick`.
pub const QUICK_REQUESTS: usize = 1_000;
/// At most this many connections per scenario (fewer where the scenario has fewer).
pub const CONNECTIONS: u32 = 16;
/// Distinct objects fetched in a cache-fill scenario.
pub const FILL_OBJECTS: usize = 200;
/// The longest a scenario's GETs may take, whatever is left of them.
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(5);
/// How long a proxy-app may take to exit (and write its profile) after SIGTERM.
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// What one scenario's training did.
#[derive(Debug, Default)]
pub struct Trained {
    /// Responses by status.
    pub statuses: BTreeMap<u16, usize>,
    /// GETs that got no response (a connection error or timeout); the connection is opened
    /// again after each.
    pub errors: usize,
}

impl Trained {
    fn add(&mut self, other: Trained) {
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.errors += other.errors;
    }

    fn responses(&self) -> usize {
        self.statuses.values().sum()
    }
}

/// The status most of a scenario's responses should have: the answer its work exercises
/// (the 429 of a rate limit, which callgrind's counts leave out, or the scenario's own).
pub fn trained_status(s: &Scenario) -> u16 {
    match s.work {
        Work::RateLimited => 429,
        _ => s.expected_status(),
    }
}

/// Trains `bin` on each of `scenarios` but the `wan-*` ones (they need the slow path's
/// network namespace), with `requests` GETs each; returns the report, a Markdown table.
pub fn run(
    scenarios: &[Scenario],
    requests: usize,
    bin: &Path,
    up: &Upstream<'_>,
    dir: &Path,
) -> Result<String> {
    let mut text = String::from(
        "| scenario | connections | GETs | responses by status | errors | seconds |\n|---|---:|---:|---|---:|---:|\n",
    );
    for s in scenarios {
        if s.wan {
            writeln!(
                text,
                "| {} | | | skipped: needs the slow path | | |",
                s.name
            )?;
            continue;
        }
        eprintln!("training on {} ...", s.name);
        let started = Instant::now();
        let server = crate::start_proxy(s, bin, up, dir, "-train", &[])
            .with_context(|| format!("scenario {}: starting proxy-app", s.name))?;
        let trained = match s.work {
            Work::CacheFill => fill(server.addr, s),
            _ => load(server.addr, s, requests),
        };
        // Stopped gracefully even when the GETs failed: a profile is written on exit.
        server
            .stop(STOP_LIMIT)
            .with_context(|| format!("scenario {}: stopping proxy-app", s.name))?;
        let trained = trained.with_context(|| format!("scenario {}", s.name))?;
        check(s, &trained)?;
        let statuses: Vec<String> = trained
            .statuses
            .iter()
            .map(|(status, n)| format!("{status}: {n}"))
            .collect();
        writeln!(
            text,
            "| {} | {} | {} | {} | {} | {:.1} |",
            s.name,
            connections(s),
            trained.responses() + trained.errors,
            statuses.join(", "),
            trained.errors,
            started.elapsed().as_secs_f64()
        )?;
    }
    Ok(text)
}

/// Connections a scenario's training opens.
fn connections(s: &Scenario) -> u32 {
    s.connections.clamp(1, CONNECTIONS)
}

/// Fails unless most GETs were answered with the status the scenario exercises (at least
/// one: a rate limit lets a request through now and then, a ban is tripped by a served one).
fn check(s: &Scenario, trained: &Trained) -> Result<()> {
    let wanted = trained_status(s);
    let got = trained.statuses.get(&wanted).copied().unwrap_or(0);
    let total = trained.responses() + trained.errors;
    if got == 0 || got * 2 < total {
        bail!(
            "scenario {}: {got} of {total} GETs answered {wanted} ({:?}, {} errors)",
            s.name,
            trained.statuses,
            trained.errors
        );
    }
    Ok(())
}

/// `requests` GETs of the scenario's request over its connections, one thread each.
fn load(addr: SocketAddr, s: &Scenario, requests: usize) -> Result<Trained> {
    let conns = connections(s) as usize;
    let deadline = Instant::now() + SCENARIO_LIMIT;
    let (host, path) = (s.host(), s.path());
    let results: Vec<Result<Trained>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..conns)
            .map(|i| {
                let count = requests / conns + usize::from(i < requests % conns);
                let paths = std::iter::repeat_n(path.as_str(), count);
                let host = &host;
                scope.spawn(move || gets(addr, host, paths, s.headers(), deadline))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| bail!("a client thread panicked"))
            })
            .collect()
    });
    let mut total = Trained::default();
    for result in results {
        total.add(result?);
    }
    Ok(total)
}

/// [`FILL_OBJECTS`] distinct objects, one after another on one connection.
fn fill(addr: SocketAddr, s: &Scenario) -> Result<Trained> {
    let objects = FILL_OBJECTS.min(s.fill_objects());
    let paths: Vec<String> = (0..objects).map(|i| s.fill_path(i)).collect();
    let deadline = Instant::now() + SCENARIO_LIMIT;
    gets(
        addr,
        &s.host(),
        paths.iter().map(String::as_str),
        s.headers(),
        deadline,
    )
}

/// A GET of each of `paths` on one keep-alive connection, opened again after an error;
/// stops at `deadline`.
fn gets<'a>(
    addr: SocketAddr,
    host: &str,
    paths: impl Iterator<Item = &'a str>,
    headers: &[&str],
    deadline: Instant,
) -> Result<Trained> {
    let mut trained = Trained::default();
    let mut client = Client::connect(addr)?;
    for path in paths {
        if Instant::now() > deadline {
            break;
        }
        match client.get_with(host, path, headers) {
            Ok((status, _)) => *trained.statuses.entry(status).or_default() += 1,
            Err(_) => {
                trained.errors += 1;
                client = Client::connect(addr)?;
            }
        }
    }
    Ok(trained)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario;

    #[test]
    fn training_exercises_each_scenarios_own_answer_on_a_few_connections() {
        let all = scenario::all();
        let named = |name: &str| all.iter().find(|s| s.name == name).unwrap();
        assert_eq!(trained_status(named("rate-limited")), 429);
        assert_eq!(trained_status(named("banned")), 403);
        assert_eq!(trained_status(named("pass-tls-1k")), 200);
        assert_eq!(connections(named("conns-1024")), CONNECTIONS);
        assert_eq!(connections(named("cache-fill-100k")), 1);
    }

    #[test]
    fn a_scenario_whose_answers_are_mostly_other_statuses_fails_its_check() {
        let s = scenario::all()
            .into_iter()
            .find(|s| s.name == "banned")
            .unwrap();
        let mut trained = Trained::default();
        trained.statuses.insert(200, 10);
        assert!(check(&s, &trained).is_err(), "no 403 at all");
        trained.statuses.insert(403, 9);
        assert!(check(&s, &trained).is_err(), "fewer than half 403");
        trained.statuses.insert(403, 990);
        check(&s, &trained).unwrap();
        trained.errors = 2_000;
        assert!(check(&s, &trained).is_err(), "mostly errors");
    }
}
