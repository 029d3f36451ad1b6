//! A fleet of edges: machines sharing one Redis (`[redis]`) count global rate-limit zones
//! together and purge each other's caches. Redis is an existing engine; nothing here speaks
//! a protocol of its own between proxies. Without `[redis]` none of this runs.
//!
//! # Global rate limits: a local view, reconciled in the background
//!
//! A zone with `scope = "global"` is decided on this machine, under the zone's lock, from
//! what it knows of the key (its view of the zone); no request waits on Redis. Every
//! `sync_interval` (100 ms by default) one script call per machine sends what it admitted
//! per key since the last sync and reads back, per key, the fleet's arrival time (GCRA's
//! TAT, nginx's `excess`, kept in Redis on Redis's clock) and `w`, how many machines served
//! the key in the last `presence window` (20 syncs, at least 2 s).
//!
//! Between syncs a machine admits a key's request against the fleet's arrival time as of
//! the last sync plus its own admissions since, **each counted `w` times**: it assumes every
//! machine serving the key admits at its pace, so it takes only its `1/w` share of what the
//! bucket had left plus what drains meanwhile. A key not yet synced twice is counted as if
//! every machine of the fleet (`N`, from a heartbeat set in Redis) served it, so machines
//! meeting a key at the same moment do not each hand out the whole burst. Redis adds each
//! machine's admissions once (`TAT = max(TAT, first arrival) + n x interval`), so its count
//! is exact and every machine converges to it at its next sync.
//!
//! **Error bound.** Over a window of `W` seconds, with rate `r`, `burst` `b`, `N` machines
//! and a sync period `T` (plus one round trip): while every machine's `w` for a key is right
//! (the machines serving it stayed the same), the fleet admits at most `r x W + b + 1`
//! plus one rounding request per machine, as one machine would. When a machine starts
//! serving a key that others already serve with a smaller `w`, those others over-admit for
//! at most one sync: at most `(b + 1 + r x T) / w` more per machine that joined. So a client
//! spread over `N` machines from its first request gets no more than
//! `r x W + b + 1 + N`, and the worst a client can get away with, joining machines one by
//! one, is `r x W + (b + 1 + r x T) x (1 + 1/2 + ... + 1/N) + N`. When counts are late, the
//! error is on the strict side: a machine that met a key lately but no longer serves it keeps
//! the others' shares smaller for a presence window.
//!
//! **Fall-back.** When a sync fails (Redis down, refusing, or slower than
//! `command_timeout`), the zones fall back to counting locally at `1/N` of their rate (each
//! admission counts `N` times, `N` the fleet size last seen); the counts admitted meanwhile
//! are sent with the first sync that succeeds, and global counting resumes with it. The
//! switch is logged once each way and exported (`edge_fleet_redis_up`,
//! `edge_fleet_fallbacks_total{reason}`). Requests never wait on Redis, so a slow or dead
//! Redis costs them nothing; `/readyz` does not depend on it.
//!
//! Memory is bounded: a zone's view holds at most `slots` keys (idle ones are forgotten
//! after a presence window); a key with no room is counted in the zone's local sketch at the
//! fall-back share. Header-keyed zones send only a digest of the header value to Redis.
//!
//! # Fleet messages
//!
//! One Redis stream per fleet (`{prefix}:fleet`) carries typed [`FleetMessage`]s: purges
//! and bans. A purge accepted by any machine's admin listener is applied there at once and
//! queued for the stream; every other machine applies it when it reads it (idempotent, each
//! entry once, counted in `edge_fleet_purges_received_total`). A machine that was
//! disconnected reads on from the last entry it applied; if entries it never read were
//! trimmed, or Redis lost its data meanwhile, it drops its whole cache instead
//! (`edge_fleet_cache_drops_total`).
//!
//! Bans ride the same stream: with [`Fleet::with_bans`] and the fleet set as the
//! [`BanTable`]'s listener, a ban made or lifted on one machine (a rule or the admin action)
//! is applied on every other (`edge_fleet_bans_received_total`), counted in `edge_bans_total`
//! only where it was decided. A machine starting afresh (or unable to catch up) reads the
//! whole stream once for the bans still in force. To add a kind of message, add a variant to
//! [`FleetMessage`] and its handling where messages are applied; older machines skip kinds
//! they do not know.
//!
//! Every fleet metric and log line names the machine (`instance`).
//!
//! # Redis keys
//!
//! All under `{prefix}:` (a hash tag: one Redis Cluster slot): `machines` (sorted set of
//! heartbeats), `rl:ZONE:KEY` (a hash per key: arrival time and the machines serving it,
//! expiring when idle), `fleet` (the message stream) and `epoch` (tells a Redis that lost
//! its data).

mod link;
mod messages;
mod settings;
mod sync;
mod view;

pub use messages::FleetMessage;
pub use settings::FleetSettings;
pub(crate) use view::GlobalView;

use arc_swap::ArcSwap;
use pingora::server::ShutdownWatch;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::mpsc;

use crate::ban::{Ban, BanListener, BanTable};
use crate::cache::EdgeCache;
use crate::model::RuntimeConfig;
use crate::observe::Metrics;

/// Messages waiting to be sent while Redis is away, at most.
const OUTBOX: usize = 1024;

/// This machine's membership of a fleet: the background work (syncing global zones,
/// sending and applying fleet messages) and the queue of messages to send.
pub struct Fleet {
    settings: FleetSettings,
    metrics: Arc<Metrics>,
    cache: &'static EdgeCache,
    bans: Option<Arc<BanTable>>,
    outbox: mpsc::Sender<FleetMessage>,
    pending: parking_lot::Mutex<Option<mpsc::Receiver<FleetMessage>>>,
}

impl Fleet {
    /// A fleet member over `cache` (what fleet purges apply to), recording into `metrics`.
    /// Starts nothing: [`Fleet::run`] does.
    pub fn new(settings: FleetSettings, metrics: Arc<Metrics>, cache: &'static EdgeCache) -> Self {
        metrics.fleet_started(&settings.instance);
        let (outbox, pending) = mpsc::channel(OUTBOX);
        Self {
            settings,
            metrics,
            cache,
            bans: None,
            outbox,
            pending: parking_lot::Mutex::new(Some(pending)),
        }
    }

    /// Shares `bans` with the fleet: bans (and lifts) from other machines are applied to it,
    /// and a machine that starts afresh reads the bans in force. To send this machine's own,
    /// set the fleet as the table's listener ([`BanTable::set_listener`]).
    pub fn with_bans(mut self, bans: Arc<BanTable>) -> Self {
        self.bans = Some(bans);
        self
    }

    /// `[redis]` as compiled.
    pub fn settings(&self) -> &FleetSettings {
        &self.settings
    }

    /// Queues `message` for every other machine; `false` if the queue is full (Redis has
    /// been away for a long time). Never waits.
    pub fn publish(&self, message: FleetMessage) -> bool {
        self.outbox.try_send(message).is_ok()
    }

    /// Runs until shutdown: reconciles the global zones of the running `config`, sends
    /// queued messages, and applies the fleet's. Call once.
    pub async fn run(&self, config: &ArcSwap<RuntimeConfig>, shutdown: ShutdownWatch) {
        let Some(outbox) = self.pending.lock().take() else {
            return;
        };
        let link = match link::RedisLink::open(&self.settings, self.metrics.clone()) {
            Ok(link) => link,
            Err(e) => {
                tracing::error!(instance = %self.settings.instance, error = %e, "cannot use the fleet's Redis: global zones count locally");
                return;
            }
        };
        let mut inbox =
            messages::FleetInbox::new(&link, &self.metrics, self.cache, self.bans.clone());
        tokio::join!(
            sync::run(&link, config, &self.metrics, shutdown.clone()),
            messages::publish(&link, &self.metrics, outbox, shutdown.clone()),
            inbox.run(shutdown),
        );
    }
}

/// Sends every ban made or lifted on this machine to the fleet (never waits: a full queue
/// drops it, with a warning).
impl BanListener for Fleet {
    fn banned(&self, ban: &Ban) {
        if !self.publish(FleetMessage::from(ban)) {
            tracing::warn!(instance = %self.settings.instance, ip = %ban.ip, "fleet queue full: ban not shared");
        }
    }

    fn lifted(&self, ip: IpAddr) {
        if !self.publish(FleetMessage::Unban { ip }) {
            tracing::warn!(instance = %self.settings.instance, %ip, "fleet queue full: lifted ban not shared");
        }
    }
}

/// The algorithm on a simulated clock: machines deciding on their views, syncing with a
/// model of the Redis script (same arithmetic, zero round trip), a client rotating over
/// them. Deterministic, so the error bound can be asserted exactly.
#[cfg(test)]
mod simulation {
    use crate::limit::{LimitKey, LimitZone, Rate, ZoneKey, ZoneScope, ZoneSettings, ZoneVerdict};
    use std::collections::HashMap;
    use std::net::IpAddr;

    const MS: i64 = 1_000_000;

    fn zone() -> LimitZone {
        LimitZone::new(ZoneSettings {
            name: "fleet".into(),
            rate: Rate::parse("20r/s").unwrap(),
            burst: 10,
            delay: None,
            key: ZoneKey::ClientIp,
            ipv6_prefix: 64,
            status: 429,
            dry_run: false,
            slots: 1024,
            scope: ZoneScope::Global,
        })
    }

    /// The script's arithmetic: arrival time and machines per key.
    #[derive(Default)]
    struct ModelRedis {
        tat: HashMap<Box<str>, i64>,
        seen: HashMap<Box<str>, HashMap<usize, i64>>,
    }

    impl ModelRedis {
        fn sync(&mut self, machine: usize, zone: &LimitZone, now: i64, window: i64, fleet: u32) {
            let view = zone.global_view().unwrap();
            let batch = view.take_batch(now, window);
            let interval = zone.settings.rate.emission_interval_ns();
            let answers: Vec<(u64, i64, u32)> = batch
                .iter()
                .map(|e| {
                    let tat = self.tat.entry(e.name.clone()).or_insert(0);
                    if e.admitted > 0 {
                        *tat = (*tat).max(now - e.age_ns) + i64::from(e.admitted) * interval;
                    }
                    let seen = self.seen.entry(e.name.clone()).or_default();
                    seen.insert(machine, now);
                    seen.retain(|_, at| *at > now - window);
                    (e.id, (*tat - now).max(0), seen.len() as u32)
                })
                .collect();
            view.apply(&answers, now);
            view.set_link(true, Some(fleet));
        }
    }

    /// `machines` machines syncing every 100 ms (staggered), a client sending `per_second`
    /// requests rotating over `serving` of them for `seconds`; how many passed.
    fn admitted(machines: usize, serving: usize, per_second: i64, seconds: i64) -> i64 {
        let zones: Vec<LimitZone> = (0..machines).map(|_| zone()).collect();
        let mut redis = ModelRedis::default();
        let window = 2_000 * MS;
        let key = LimitKey::Ip(IpAddr::from([192, 0, 2, 1]));
        // Every machine has synced (knows the fleet) before the client starts.
        for (m, z) in zones.iter().enumerate() {
            redis.sync(m, z, 0, window, machines as u32);
        }
        let (mut passed, mut next_sync) = (0, vec![100 * MS; machines]);
        for (m, at) in next_sync.iter_mut().enumerate() {
            *at += m as i64 * 100 * MS / machines as i64;
        }
        let step = 1_000 * MS / per_second;
        for i in 0..per_second * seconds {
            let now = 1 + i * step;
            for (m, z) in zones.iter().enumerate() {
                while next_sync[m] <= now {
                    redis.sync(m, z, next_sync[m], window, machines as u32);
                    next_sync[m] += 100 * MS;
                }
            }
            let z = &zones[i as usize % serving];
            if matches!(
                z.acquire_at(&key, now, &z.settings.default_use()),
                ZoneVerdict::Pass { .. }
            ) {
                passed += 1;
            }
        }
        passed
    }

    #[test]
    fn three_machines_sharing_a_client_admit_what_one_would() {
        // 20r/s, burst 10, 10 s: one machine admits 20 x 10 + 10 + 1 = 211; the bound for a
        // client spread over N machines from its first request is that + N.
        for per_second in [30, 100, 1000] {
            let fleet = admitted(3, 3, per_second, 10);
            eprintln!("{per_second}/s over 3 machines: {fleet} passed");
            assert!(
                (211 - 2..=211 + 3).contains(&fleet),
                "{per_second}/s: {fleet} passed"
            );
        }
        // A local zone's count, to the request (the last request comes just before 10 s).
        let alone = admitted(1, 1, 100, 10);
        assert!((210..=211).contains(&alone), "{alone}");
    }

    #[test]
    fn a_client_on_one_machine_of_three_gets_the_whole_rate() {
        let one = admitted(3, 1, 100, 10);
        eprintln!("one machine of three: {one} passed");
        assert!((211 - 2..=211 + 3).contains(&one), "{one} passed");
    }
}
