//! Reconciling global zones with Redis: every `sync_interval`, one script call sends what this
//! machine admitted per key since the last sync and reads back each key's fleet-wide arrival
//! time and how many machines serve it (the algorithm is in [`crate::fleet`]'s docs).

use arc_swap::ArcSwap;
use pingora::server::ShutdownWatch;
use std::sync::Arc;

use super::link::{LinkError, RedisLink};
use super::view::SyncEntry;
use crate::limit::{LimitZone, ZoneScope};
use crate::model::RuntimeConfig;
use crate::observe::Metrics;

/// Keys per script call: one call stays short enough not to hold Redis up for others.
const KEYS_PER_CALL: usize = 512;

/// GCRA in Redis, per key, on Redis's clock (microseconds, exact in Lua's doubles).
///
/// `KEYS[1]` is the fleet's machine set (a sorted set scored by last sync); `KEYS[2..]` the
/// keys' hashes (`t`: arrival time, `m:<machine>`: when that machine last served it).
/// `ARGV[1]` = this machine, `ARGV[2]` = presence window (us), then per key: requests
/// admitted, age of the first (us), emission interval (us). Returns the number of machines,
/// then per key: its excess over now (us) and the machines serving it.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local machine = ARGV[1]
local window = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, machine)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('PEXPIRE', KEYS[1], math.floor(window / 1000) * 2)
local out = { redis.call('ZCARD', KEYS[1]) }
for i = 2, #KEYS do
  local a = 3 + (i - 2) * 3
  local n = tonumber(ARGV[a])
  local age = tonumber(ARGV[a + 1])
  local interval = tonumber(ARGV[a + 2])
  local key = KEYS[i]
  local tat = tonumber(redis.call('HGET', key, 't') or '0')
  if n > 0 then
    local start = now - age
    if tat < start then tat = start end
    tat = tat + n * interval
    redis.call('HSET', key, 't', string.format('%.0f', tat))
  end
  redis.call('HSET', key, 'm:' .. machine, string.format('%.0f', now))
  local fields = redis.call('HGETALL', key)
  local machines = 0
  for f = 1, #fields, 2 do
    local name = fields[f]
    if string.sub(name, 1, 2) == 'm:' then
      if tonumber(fields[f + 1]) > now - window then
        machines = machines + 1
      else
        redis.call('HDEL', key, name)
      end
    end
  end
  local excess = tat - now
  if excess < 0 then excess = 0 end
  redis.call('PEXPIRE', key, math.floor((excess + window) / 1000) + 1)
  out[#out + 1] = excess
  out[#out + 1] = machines
end
return out
";

/// One zone's part of a sync.
struct ZoneBatch {
    zone: Arc<LimitZone>,
    entries: Vec<SyncEntry>,
}

/// Reconciles the running config's global zones every `sync_interval` until shutdown,
/// switching them to fall-back when Redis cannot be reached and back when it can. The
/// switch is logged once each way and counted.
pub(crate) async fn run(
    link: &RedisLink,
    config: &ArcSwap<RuntimeConfig>,
    metrics: &Metrics,
    mut shutdown: ShutdownWatch,
) {
    let script = redis::Script::new(SCRIPT);
    let settings = &link.settings;
    let mut tick = tokio::time::interval(settings.sync_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut linked: Option<bool> = None;
    let mut fleet_size = 1;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let zones: Vec<Arc<LimitZone>> = config
            .load()
            .zones
            .values()
            .filter(|zone| zone.settings.scope == ZoneScope::Global)
            .cloned()
            .collect();
        let outcome = sync_once(link, &script, &zones).await;
        let instance = settings.instance.as_str();
        match outcome {
            Ok(machines) => {
                fleet_size = machines;
                metrics.fleet_sync(instance, Some(machines));
                if linked != Some(true) {
                    tracing::info!(
                        instance,
                        machines,
                        "fleet Redis reachable: global rate-limit zones count across the fleet"
                    );
                }
                linked = Some(true);
            }
            Err(e) => {
                metrics.fleet_sync(instance, None);
                if linked != Some(false) {
                    metrics.fleet_fallback(instance, e.reason());
                    tracing::warn!(
                        instance,
                        error = %e,
                        share = format!("1/{fleet_size}"),
                        "fleet Redis unreachable: global rate-limit zones fall back to local counting at a share of their rate"
                    );
                }
                linked = Some(false);
            }
        }
    }
}

/// One reconciliation of every global zone; the number of machines in the fleet, or why
/// Redis could not be reached (the zones are then in fall-back, their counts kept for the
/// next sync).
async fn sync_once(
    link: &RedisLink,
    script: &redis::Script,
    zones: &[Arc<LimitZone>],
) -> Result<u32, LinkError> {
    let settings = &link.settings;
    let window = settings.presence_window();
    let window_us = micros(window.as_nanos());
    let idle_ns = i64::try_from(window.as_nanos()).unwrap_or(i64::MAX);
    let batches: Vec<ZoneBatch> = zones
        .iter()
        .filter_map(|zone| {
            let view = zone.global_view()?;
            let entries = view.take_batch(zone.clock(), idle_ns);
            Some(ZoneBatch {
                zone: zone.clone(),
                entries,
            })
        })
        .collect();
    let all: Vec<(usize, &SyncEntry)> = batches
        .iter()
        .enumerate()
        .flat_map(|(z, batch)| batch.entries.iter().map(move |entry| (z, entry)))
        .collect();
    let mut answers: Vec<Vec<(u64, i64, u32)>> = vec![Vec::new(); batches.len()];
    let mut machines = 1;
    // At least one call, so the heartbeat (and the link's health) is checked every sync.
    let chunks: Vec<&[(usize, &SyncEntry)]> = if all.is_empty() {
        vec![&[]]
    } else {
        all.chunks(KEYS_PER_CALL).collect()
    };
    for chunk in chunks {
        let mut call = script.prepare_invoke();
        call.key(settings.key("machines"))
            .arg(&settings.instance)
            .arg(window_us);
        for (z, entry) in chunk {
            let zone = &batches[*z].zone;
            let name = format!("rl:{}:{}", zone.settings.name, entry.name);
            let interval = zone.settings.rate.emission_interval_ns();
            call.key(settings.key(&name))
                .arg(entry.admitted)
                .arg(micros(entry.age_ns as u128))
                .arg(micros(interval as u128).max(1));
        }
        let reply: Result<Vec<i64>, LinkError> = link.invoke(&call).await;
        let reply = match reply {
            Ok(reply) if reply.len() == 1 + 2 * chunk.len() => reply,
            Ok(reply) => {
                let e = redis::RedisError::from((
                    redis::ErrorKind::Parse,
                    "unexpected script answer",
                    format!("{} values for {} keys", reply.len(), chunk.len()),
                ));
                restore(&batches);
                return Err(e.into());
            }
            Err(e) => {
                restore(&batches);
                return Err(e);
            }
        };
        machines = u32::try_from(reply[0]).unwrap_or(1).max(1);
        for ((z, entry), pair) in chunk.iter().zip(reply[1..].chunks(2)) {
            let excess_ns = pair[0].max(0).saturating_mul(1000);
            let serving = u32::try_from(pair[1]).unwrap_or(1);
            answers[*z].push((entry.id, excess_ns, serving));
        }
    }
    for (batch, answers) in batches.iter().zip(answers) {
        if let Some(view) = batch.zone.global_view() {
            view.apply(&answers, batch.zone.clock());
            view.set_link(true, Some(machines));
        }
    }
    Ok(machines)
}

/// A failed sync: every zone's counts go out again with the next one, and the zones fall
/// back to local counting meanwhile.
fn restore(batches: &[ZoneBatch]) {
    for batch in batches {
        if let Some(view) = batch.zone.global_view() {
            view.restore(&batch.entries);
            view.set_link(false, None);
        }
    }
}

fn micros(nanos: u128) -> i64 {
    i64::try_from(nanos / 1000).unwrap_or(i64::MAX)
}
