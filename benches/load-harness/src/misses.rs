//! Cache misses per request with many connections, simulated by callgrind
//! (`--cache-sim=yes`): this machine's virtual CPUs expose no hardware counters, and how
//! much memory a request touches that has left the caches is what sets the cost per request
//! once there are many connections.
//!
//! A server runs under callgrind with a fixed cache model ([`CACHE_MODEL`]: 32 KiB L1 data
//! and instruction caches, a 1 MiB last level, 64-byte lines) and answers GETs sent one at
//! a time, round-robin over as many keep-alive connections as the scenario has: each
//! request finds its connection's state as it left it one round, a thousand requests, ago,
//! as under the real load (where requests also overlap, which this leaves out so that the
//! counts do not depend on timing). The first round opens the connections; then the
//! server stops and callgrind writes the counts of every process (nginx's master and
//! worker each to a file of their own, summed). That is done twice, by fresh processes,
//! with different numbers of rounds: start-up, the first round and shutdown are the same
//! in both and cancel in `(E2 - E1) / (R2 - R1)`, the cost of one more request for each
//! event `E` (`R`: requests answered).

use crate::callgrind::{dumps, dumps_and_wrapper, installed, slug, Start};
use crate::client::Client;
use crate::scenario::Scenario;
use crate::Server;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;

/// callgrind's cache model: L1 instruction and data caches, and the last level.
pub const CACHE_MODEL: [&str; 4] = [
    "--cache-sim=yes",
    "--I1=32768,8,64",
    "--D1=32768,8,64",
    "--LL=1048576,16,64",
];

/// Rounds of GETs (one on every connection) after the first, in the two processes.
const ROUNDS: [usize; 2] = [1, 3];

/// What one more request costs, per server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerRequest {
    /// Instructions.
    pub instructions: f64,
    /// L1 data cache misses, reads and writes.
    pub l1_data: f64,
    /// Last-level data cache misses, reads and writes.
    pub last_level_data: f64,
}

/// The misses of one scenario: each server's, or why there are none.
#[derive(Debug, Clone)]
pub struct Misses {
    /// Label and cost per request of each server measured, in order.
    pub counts: Vec<(&'static str, PerRequest)>,
    /// Why nothing was measured.
    pub skipped: Option<&'static str>,
}

impl Misses {
    /// Measures each of `servers`, one after the other, each under callgrind once.
    pub fn measure(
        s: &Scenario,
        dir: &Path,
        servers: Vec<(&'static str, Start<'_>)>,
    ) -> Result<Misses> {
        if !installed() {
            return Ok(Misses::skipped("valgrind not installed"));
        }
        let counts = servers
            .into_iter()
            .map(|(label, start)| {
                let count = per_request(s, dir, label, &*start)
                    .with_context(|| format!("{label} under callgrind's cache simulation"))?;
                Ok((label, count))
            })
            .collect::<Result<_>>()?;
        Ok(Misses {
            counts,
            skipped: None,
        })
    }

    /// Nothing measured, because of `why`.
    pub fn skipped(why: &'static str) -> Misses {
        Misses {
            counts: Vec::new(),
            skipped: Some(why),
        }
    }

    /// The report's line: each server's misses, and the first's ratio of L1 misses to the
    /// second's.
    pub fn note(&self, connections: u32) -> String {
        let lead = format!(
            "Simulated cache misses per request with {connections} connections (callgrind `{}`; GETs one at a time, round-robin over the connections; the difference of {} and {} rounds after the first, each by a fresh process)",
            CACHE_MODEL.join(" "),
            ROUNDS[0],
            ROUNDS[1]
        );
        if let Some(why) = self.skipped {
            return format!("{lead}: not measured ({why}).");
        }
        let each: Vec<String> = self
            .counts
            .iter()
            .map(|(label, c)| {
                format!(
                    "{label} {:.0} last-level and {:.0} L1 data misses, {:.1}k instructions",
                    c.last_level_data,
                    c.l1_data,
                    c.instructions / 1e3
                )
            })
            .collect();
        // The ratio of L1 misses: nginx's few last-level misses make that ratio swing.
        let ratio = match self.counts.as_slice() {
            [(_, first), (_, second), ..] if second.l1_data > 0.0 => format!(
                ": **{:.2}x** the L1 data misses",
                first.l1_data / second.l1_data
            ),
            _ => String::new(),
        };
        format!("{lead}: {}{ratio}.", each.join("; "))
    }
}

/// One server's cost per request: two processes, each first sending one GET on every
/// connection and then [`ROUNDS`] more rounds of them.
fn per_request(
    s: &Scenario,
    dir: &Path,
    label: &str,
    start: &dyn Fn(&[OsString], &str) -> Result<Server>,
) -> Result<PerRequest> {
    if !s.headers().is_empty() {
        bail!(
            "round-robin GETs send no headers but Host; {} needs some",
            s.name
        );
    }
    let connections = s.connections as usize;
    let mut runs = Vec::new();
    for rounds in ROUNDS {
        let tag = format!("-misses-{}-{rounds}", slug(label));
        let out_dir = dir.join(format!("cs-{}{tag}", s.name));
        let wrapper = dumps_and_wrapper(&out_dir, &CACHE_MODEL)?;
        let server = start(&wrapper, &tag)?;
        let (host, path, expected) = (s.host(), s.path(), s.expected_status());
        let mut clients = Vec::with_capacity(connections);
        // The first round opens the connections (and the server's to its upstream).
        for _ in 0..connections {
            clients.push(Client::connect(server.addr)?);
        }
        for round in 0..=rounds {
            for (i, client) in clients.iter_mut().enumerate() {
                let (status, _) = client.get(&host, &path)?;
                if status != expected {
                    bail!(
                        "GET {path} number {i} of round {round}: status {status}, not {expected}"
                    );
                }
            }
        }
        drop(clients);
        // callgrind writes its counts when the process exits.
        server.stop(crate::callgrind::DEADLINE)?;
        let requests = (connections * (rounds + 1)) as u64;
        runs.push((requests, events_of_dumps(&out_dir)?));
    }
    difference(&runs[0], &runs[1])
}

/// The event totals of every dump (`*.out`) in `dir`, summed.
fn events_of_dumps(dir: &Path) -> Result<HashMap<String, u64>> {
    let mut totals = HashMap::new();
    for (path, text) in dumps(dir)? {
        let events = event_totals(&text).with_context(|| format!("in {}", path.display()))?;
        for (event, value) in events {
            *totals.entry(event).or_insert(0) += value;
        }
    }
    Ok(totals)
}

/// Every event a callgrind dump counted (`events:` names, `summary:` or `totals:` values).
pub fn event_totals(text: &str) -> Result<HashMap<String, u64>> {
    let line = |key: &str| text.lines().find_map(|l| l.strip_prefix(key));
    let names = line("events:").context("callgrind dump without an events: line")?;
    let values = line("summary:")
        .or_else(|| line("totals:"))
        .context("callgrind dump without a summary: or totals: line")?;
    let values = values
        .split_whitespace()
        .map(|v| v.parse::<u64>().with_context(|| format!("bad count `{v}`")))
        .collect::<Result<Vec<_>>>()?;
    let names: Vec<&str> = names.split_whitespace().collect();
    if names.len() < values.len() {
        bail!("{} events named, {} counted", names.len(), values.len());
    }
    // callgrind leaves out trailing zero counts.
    Ok(names
        .iter()
        .enumerate()
        .map(|(i, name)| (name.to_string(), values.get(i).copied().unwrap_or(0)))
        .collect())
}

/// The cost of one more request from the shorter run's `(requests, events)` and the
/// longer's; an error when the longer run completed no more requests, or lacks an event.
pub fn difference(
    shorter: &(u64, HashMap<String, u64>),
    longer: &(u64, HashMap<String, u64>),
) -> Result<PerRequest> {
    let (r1, e1) = shorter;
    let (r2, e2) = longer;
    if r2 <= r1 {
        bail!("the longer run completed {r2} requests, the shorter {r1}: no difference to divide");
    }
    let per = |events: &[&str]| -> Result<f64> {
        let sum = |e: &HashMap<String, u64>| -> Result<f64> {
            events
                .iter()
                .map(|name| {
                    e.get(*name)
                        .map(|v| *v as f64)
                        .with_context(|| format!("no `{name}` count (run without --cache-sim?)"))
                })
                .sum()
        };
        Ok((sum(e2)? - sum(e1)?) / (r2 - r1) as f64)
    };
    Ok(PerRequest {
        instructions: per(&["Ir"])?,
        l1_data: per(&["D1mr", "D1mw"])?,
        last_level_data: per(&["DLmr", "DLmw"])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\npid: 4242\ncmd:  proxy-app run --config x.toml\npart: 1\n\npositions: line\nevents: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw\nsummary: 1000000 300000 200000 5000 4000 3000 100 700 900\n\n\nob=(1) proxy-app\nfl=(1) ???\nfn=(1) main\n0 1000000\n";

    #[test]
    fn reads_every_event_of_a_dump() {
        let events = event_totals(DUMP).unwrap();
        assert_eq!(events["Ir"], 1_000_000);
        assert_eq!(events["D1mw"], 3000);
        assert_eq!(events["DLmw"], 900);
        let short = DUMP.replace(
            "summary: 1000000 300000 200000 5000 4000 3000 100 700 900",
            "totals: 10 5",
        );
        let events = event_totals(&short).unwrap();
        assert_eq!((events["Ir"], events["Dr"], events["DLmw"]), (10, 5, 0));
        assert!(event_totals("events: Ir\n").is_err());
        assert!(event_totals("events: Ir\nsummary: 12 13\n").is_err());
    }

    #[test]
    fn one_more_request_costs_the_difference_of_two_runs() {
        let run = |requests: u64, ir: u64, d1: u64, ll: u64| {
            let events = [
                ("Ir", ir),
                ("D1mr", d1),
                ("D1mw", d1),
                ("DLmr", ll),
                ("DLmw", 0),
            ];
            (
                requests,
                events.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            )
        };
        let cost = difference(
            &run(1000, 50_000_000, 2_000, 900),
            &run(3000, 130_000_000, 6_000, 2_100),
        )
        .unwrap();
        assert_eq!(cost.instructions, 40_000.0);
        assert_eq!(cost.l1_data, 4.0);
        assert_eq!(cost.last_level_data, 0.6);
        assert!(difference(&run(3000, 2, 2, 2), &run(3000, 3, 3, 3)).is_err());
        let no_sim = (2000, [("Ir".to_string(), 9)].into_iter().collect());
        assert!(difference(&run(1000, 1, 1, 1), &no_sim).is_err());
    }

    #[test]
    fn the_note_names_each_server_and_the_ratio() {
        let c = |ll: f64, l1: f64| PerRequest {
            instructions: 36_500.0,
            l1_data: l1,
            last_level_data: ll,
        };
        let note = Misses {
            counts: vec![("proxy-app", c(318.0, 890.0)), ("nginx", c(3.0, 349.0))],
            skipped: None,
        }
        .note(1024);
        assert!(note.contains("with 1024 connections"), "{note}");
        assert!(
            note.contains(
                "proxy-app 318 last-level and 890 L1 data misses, 36.5k instructions; nginx 3 last-level and 349 L1"
            ),
            "{note}"
        );
        assert!(note.ends_with(": **2.55x** the L1 data misses."), "{note}");
        let skipped = Misses::skipped("valgrind not installed").note(1024);
        assert!(
            skipped.ends_with(": not measured (valgrind not installed)."),
            "{skipped}"
        );
    }
}
