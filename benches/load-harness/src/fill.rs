//! The `cache-fill-*` scenarios: distinct objects fetched one after another through
//! proxy-app until its cache has been filled several times over, then its memory read.

use crate::client::Client;
use crate::measure::{peak_rss_mib, rss_mib};
use crate::scenario::{Scenario, Upstream};
use anyhow::{bail, Result};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The longest a whole fill may take.
const FILL_DEADLINE: Duration = Duration::from_secs(300);

/// One fill of a fresh proxy-app.
#[derive(Debug, Clone, Copy, Default)]
pub struct FillSample {
    /// Seconds the fill took.
    pub seconds: f64,
    /// RSS once the server answered its first request, before the fill (MiB).
    pub before_mib: f64,
    /// Peak RSS (VmHWM) after the fill (MiB).
    pub peak_mib: f64,
    /// RSS after the fill (MiB).
    pub end_mib: f64,
}

/// Fills a fresh proxy-app, started with `env`, `rounds` times.
pub fn run(
    s: &Scenario,
    args: &crate::Args,
    up: &Upstream<'_>,
    dir: &Path,
    env: &[(&str, &str)],
) -> Result<Vec<FillSample>> {
    (0..args.rounds)
        .map(|_| {
            let proxy = crate::start_proxy(s, &args.proxy_bin, up, dir, "", env)?;
            let pids = proxy.pids();
            let before_mib = rss_mib(&pids);
            let seconds = fill(proxy.addr, s)?;
            Ok(FillSample {
                seconds,
                before_mib,
                peak_mib: peak_rss_mib(&pids),
                end_mib: rss_mib(&pids),
            })
        })
        .collect()
}

/// GETs each of the scenario's objects once, in order, on one keep-alive connection;
/// returns the seconds it took.
fn fill(addr: SocketAddr, s: &Scenario) -> Result<f64> {
    let started = Instant::now();
    let mut client = Client::connect(addr)?;
    let host = s.host();
    for i in 0..s.fill_objects() {
        if started.elapsed() > FILL_DEADLINE {
            bail!("fill still running after {FILL_DEADLINE:?}, at object {i}");
        }
        let path = s.fill_path(i);
        let (status, len) = client.get(&host, &path)?;
        if status != 200 || len != s.body_size {
            bail!("GET {path}: status {status}, {len} bytes");
        }
    }
    Ok(started.elapsed().as_secs_f64())
}
