//! [`LimitZone`]: one named rate limit, its sketch, and the nginx `limit_req` decision.

use pingora_limits::estimator::Estimator;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::key::{LimitKey, ZoneKey};
use super::rate::Rate;
use crate::fleet::GlobalView;

/// Rows of the count-min sketch: each row is an independent hash, and a key is
/// over-counted only if it collides in all of them.
const SKETCH_ROWS: usize = 4;

/// A zone's settings, as compiled from config: what it counts and at which rate (nginx's
/// `limit_req_zone`), and how a site or location naming it alone applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSettings {
    /// The zone's name (for logs and metrics).
    pub name: String,
    /// The sustained rate.
    pub rate: Rate,
    /// Requests allowed above the rate before rejecting, where applied by name.
    pub burst: u32,
    /// `None`: excess requests within the burst pass at once (`nodelay`). `Some(n)`: the
    /// first `n` pass at once, later ones are delayed to the rate. Where applied by name.
    pub delay: Option<u32>,
    /// What is counted.
    pub key: ZoneKey,
    /// IPv6 prefix length that client IPs are folded to.
    pub ipv6_prefix: u8,
    /// Status of rejections, where applied by name.
    pub status: u16,
    /// Log and count rejections without rejecting, where applied by name.
    pub dry_run: bool,
    /// Counters per sketch row.
    pub slots: usize,
    /// Whether this process counts alone or with the whole fleet.
    pub scope: ZoneScope,
}

/// Who counts a zone's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZoneScope {
    /// This process alone.
    #[default]
    Local,
    /// Every machine sharing the fleet's Redis (see [`crate::fleet`]): decided on a local
    /// view, reconciled in the background; a share of the rate while Redis is unreachable.
    Global,
}

impl ZoneSettings {
    /// How a site or location naming the zone alone applies it.
    pub fn default_use(&self) -> ZoneUse {
        ZoneUse {
            burst: self.burst,
            delay: self.delay,
            status: self.status,
            dry_run: self.dry_run,
        }
    }

    /// Whether two zones count the same way (what a reload may keep counters across; how
    /// the zone is applied does not matter to its counters).
    fn counts_like(&self, other: &ZoneSettings) -> bool {
        self.name == other.name
            && self.rate == other.rate
            && self.key == other.key
            && self.ipv6_prefix == other.ipv6_prefix
            && self.slots == other.slots
            && self.scope == other.scope
    }
}

/// How one site or location applies a zone (nginx's `limit_req zone=NAME burst=N
/// nodelay`): places sharing a zone share its counters, each with its own burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZoneUse {
    /// Requests allowed above the rate before rejecting.
    pub burst: u32,
    /// `None`: excess requests within the burst pass at once (`nodelay`). `Some(n)`: the
    /// first `n` pass at once, later ones are delayed to the rate.
    pub delay: Option<u32>,
    /// Status of rejections.
    pub status: u16,
    /// Log and count rejections without rejecting.
    pub dry_run: bool,
}

/// A rate-limit zone: settings plus bounded-memory counters.
///
/// The counters are created on the zone's first request, or taken over from the zone of the
/// same name and settings in the config running before a reload ([`LimitZone::keep_counters`]),
/// so compiling a config allocates none and a reload hands no client a fresh burst.
pub struct LimitZone {
    /// Settings.
    pub settings: ZoneSettings,
    /// Nanoseconds between requests at the zone's rate (GCRA's emission interval).
    interval_ns: i64,
    counters: OnceLock<Arc<Counters>>,
}

/// A zone's state, shared with the zone that replaces it on a reload.
struct Counters {
    /// Per-key theoretical arrival time, in nanoseconds since `epoch`: one single-row
    /// pingora-limits estimator per row, so each row can be raised on its own (conservative
    /// update: a counter holds the latest arrival time of the keys hashed to it, not a sum).
    rows: Box<[Estimator]>,
    epoch: Instant,
    /// Held while a decision reads and then raises the counters, like nginx's zone mutex,
    /// so racing requests are decided one after the other and counted exactly.
    lock: Mutex<()>,
    rejected: AtomicU64,
    /// A global zone's view of the fleet's counts (the sketch then only holds keys the view
    /// has no room for).
    global: Option<Arc<GlobalView>>,
}

impl Counters {
    fn new(settings: &ZoneSettings, interval_ns: i64) -> Self {
        let slots = settings.slots;
        Self {
            rows: (0..SKETCH_ROWS)
                .map(|_| Estimator::new(1, slots.max(1)))
                .collect(),
            epoch: Instant::now(),
            lock: Mutex::new(()),
            rejected: AtomicU64::new(0),
            global: (settings.scope == ZoneScope::Global)
                .then(|| Arc::new(GlobalView::new(slots, interval_ns))),
        }
    }
}

impl std::fmt::Debug for LimitZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitZone")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A zone's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneVerdict {
    /// The request passes, after waiting `delay` (zero with `nodelay`).
    Pass {
        /// How long to hold the request first.
        delay: Duration,
        /// The key's arrival time once this request is counted.
        arrival: i64,
    },
    /// The request is over rate + burst; it is not counted.
    Reject {
        /// When a request from this key would pass again.
        retry_after: Duration,
    },
}

impl LimitZone {
    /// A zone whose counters start empty on its first request.
    pub fn new(settings: ZoneSettings) -> Self {
        Self {
            interval_ns: settings.rate.emission_interval_ns(),
            counters: OnceLock::new(),
            settings,
        }
    }

    /// Takes over `previous`'s counters if it counts the same way (name, rate, key, memory;
    /// bursts and statuses may differ) and this zone has not counted anything yet (nginx
    /// keeps a `limit_req_zone` across reloads the same way); returns whether it did.
    pub fn keep_counters(&self, previous: &LimitZone) -> bool {
        if !previous.settings.counts_like(&self.settings) {
            return false;
        }
        self.counters.set(previous.counters().clone()).is_ok()
    }

    /// Whether this zone counts with the same counters as `other`.
    pub fn shares_counters_with(&self, other: &LimitZone) -> bool {
        match (self.counters.get(), other.counters.get()) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    fn counters(&self) -> &Arc<Counters> {
        self.counters
            .get_or_init(|| Arc::new(Counters::new(&self.settings, self.interval_ns)))
    }

    /// A global zone's view of the fleet's counts, which the sync task reconciles.
    pub(crate) fn global_view(&self) -> Option<&Arc<GlobalView>> {
        self.counters().global.as_ref()
    }

    /// Nanoseconds since the zone's counters were created: the clock its arrival times use.
    pub(crate) fn clock(&self) -> i64 {
        self.now()
    }

    /// Rejections (or, in dry run, would-be rejections) so far.
    pub fn rejected_total(&self) -> u64 {
        self.counters
            .get()
            .map_or(0, |c| c.rejected.load(Ordering::Relaxed))
    }

    /// Bytes of counters this zone holds, whatever the number of clients.
    pub fn memory_bytes(&self) -> usize {
        SKETCH_ROWS * self.settings.slots * std::mem::size_of::<isize>()
    }

    /// The key this zone counts a request under; `None` means the request is not limited
    /// (no client address, or the keyed header is missing or empty).
    pub fn key_for<'a>(
        &self,
        client_ip: Option<IpAddr>,
        header: impl FnOnce(&http::HeaderName) -> Option<&'a [u8]>,
        location: (&'a str, usize),
    ) -> Option<LimitKey<'a>> {
        self.settings
            .key
            .key_for(client_ip, self.settings.ipv6_prefix, header, location)
    }

    /// Counts one request for `key` now, applying the zone as named alone.
    pub fn acquire(&self, key: &LimitKey<'_>) -> ZoneVerdict {
        self.acquire_at(key, self.now(), &self.settings.default_use())
    }

    /// Counts one request for `key` at `now` (nanoseconds since the zone was created),
    /// applied as `usage` says.
    pub fn acquire_at(&self, key: &LimitKey<'_>, now: i64, usage: &ZoneUse) -> ZoneVerdict {
        let _decision = self.lock();
        let verdict = self.decide_at(key, now, usage);
        if let ZoneVerdict::Pass { arrival, .. } = verdict {
            self.commit(key, arrival, now);
        }
        verdict
    }

    fn now(&self) -> i64 {
        i64::try_from(self.counters().epoch.elapsed().as_nanos()).unwrap_or(i64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The mutex guards no data, so a poisoned one is as good as a healthy one.
        self.counters()
            .lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The key's estimated arrival time: the lowest of its counters, each of which is the
    /// latest arrival time of any key hashed to it, so never below the key's own.
    fn estimate(&self, key: &LimitKey<'_>) -> i64 {
        // The sketch counts in `isize`; nanosecond clocks need 64 bits, as every target
        // Pingora runs on has.
        self.counters()
            .rows
            .iter()
            .map(|row| row.get(key) as i64)
            .min()
            .unwrap_or(0)
    }

    /// Decides without counting; the caller holds the zone's lock.
    ///
    /// GCRA, which is nginx's leaky bucket: `excess` is how far the key's theoretical
    /// arrival time is ahead of now, i.e. nginx's `excess` in time units. A request passes
    /// while `excess <= burst x interval`, and then moves the arrival time one interval on.
    fn decide_at(&self, key: &LimitKey<'_>, now: i64, usage: &ZoneUse) -> ZoneVerdict {
        let tolerance = i64::from(usage.burst) * self.interval_ns;
        let (estimate, step) = self.estimate_and_step(key);
        let excess = estimate.max(now) - now;
        if excess > tolerance {
            if let Some(view) = &self.counters().global {
                view.saw(key);
            }
            self.counters().rejected.fetch_add(1, Ordering::Relaxed);
            return ZoneVerdict::Reject {
                retry_after: Duration::from_nanos(u64::try_from(excess - tolerance).unwrap_or(0)),
            };
        }
        let delay_ns = match usage.delay {
            None => 0,
            Some(n) => (excess - i64::from(n) * self.interval_ns).max(0),
        };
        ZoneVerdict::Pass {
            delay: Duration::from_nanos(u64::try_from(delay_ns).unwrap_or(0)),
            arrival: estimate.max(now) + step,
        }
    }

    /// The key's arrival time, and how far one more request moves it: one interval for a
    /// local zone; for a global one, one interval per machine assumed to admit the key at
    /// the same pace ([`GlobalView`]), so this machine takes only its share.
    fn estimate_and_step(&self, key: &LimitKey<'_>) -> (i64, i64) {
        let Some(view) = &self.counters().global else {
            return (self.estimate(key), self.interval_ns);
        };
        view.estimate(key).unwrap_or_else(|| {
            let fleet = i64::from(view.fleet_size());
            (self.estimate(key), fleet * self.interval_ns)
        })
    }

    /// Counts a request that passed: raises each of the key's counters to its new arrival
    /// time (never lowers one). Counters only ever grow, so a key's estimate is never below
    /// its true arrival time, and a counter is ahead of now only while a key hashed to it
    /// has a non-empty bucket.
    fn commit(&self, key: &LimitKey<'_>, arrival: i64, now: i64) {
        if let Some(view) = &self.counters().global {
            if view.commit(key, arrival, now) {
                return;
            }
        }
        for row in self.counters().rows.iter() {
            let current = row.get(key) as i64;
            if current < arrival {
                row.incr(key, (arrival - current) as isize);
            }
        }
    }
}

/// The result of applying several zones to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitOutcome {
    /// Every zone passed; hold the request for the longest delay first.
    Pass {
        /// The longest delay any zone asked for.
        delay: Duration,
    },
    /// A zone rejected the request.
    Reject {
        /// The rejecting zone's name.
        zone: String,
        /// Status to answer with.
        status: u16,
        /// Seconds to put in `Retry-After` (at least 1).
        retry_after_secs: u64,
    },
}

/// Applies every `(zone, usage, key)`; the request passes only if all pass, and is counted
/// in no zone otherwise (as nginx does). Dry-run uses log their would-be rejections and
/// pass. The zones' locks are held while deciding and counting, taken in address order so
/// that two requests never wait on each other in a cycle.
pub fn acquire_all(zones: &[(&LimitZone, ZoneUse, LimitKey<'_>)]) -> LimitOutcome {
    let mut locked: Vec<&LimitZone> = zones.iter().map(|(zone, _, _)| *zone).collect();
    locked.sort_by_key(|zone| *zone as *const LimitZone as usize);
    locked.dedup_by_key(|zone| *zone as *const LimitZone as usize);
    let _held: Vec<MutexGuard<'_, ()>> = locked.iter().map(|zone| zone.lock()).collect();
    let mut counted = Vec::with_capacity(zones.len());
    let mut delay = Duration::ZERO;
    for (zone, usage, key) in zones {
        let now = zone.now();
        match zone.decide_at(key, now, usage) {
            ZoneVerdict::Pass { delay: d, arrival } => {
                delay = delay.max(d);
                counted.push((zone, key, arrival, now));
            }
            ZoneVerdict::Reject { retry_after } if usage.dry_run => {
                tracing::info!(zone = %zone.settings.name, key = ?key, ?retry_after, "rate limit exceeded (dry run, not rejected)");
            }
            ZoneVerdict::Reject { retry_after } => {
                tracing::info!(zone = %zone.settings.name, key = ?key, ?retry_after, "rate limit exceeded, rejected");
                return LimitOutcome::Reject {
                    zone: zone.settings.name.clone(),
                    status: usage.status,
                    retry_after_secs: retry_after.as_secs_f64().ceil().max(1.0) as u64,
                };
            }
        }
    }
    for (zone, key, arrival, now) in counted {
        zone.commit(key, arrival, now);
    }
    LimitOutcome::Pass { delay }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000_000;
    const SLOTS: usize = 16384;

    fn zone(rate: &str, burst: u32, delay: Option<u32>, slots: usize) -> LimitZone {
        LimitZone::new(ZoneSettings {
            name: "test".into(),
            rate: Rate::parse(rate).unwrap(),
            burst,
            delay,
            key: ZoneKey::ClientIp,
            ipv6_prefix: 64,
            status: 429,
            dry_run: false,
            slots,
            scope: ZoneScope::Local,
        })
    }

    fn ip_key(n: u32) -> LimitKey<'static> {
        LimitKey::Ip(IpAddr::V4(n.into()))
    }

    fn passes(zone: &LimitZone, key: &LimitKey<'_>, count: usize, now: i64) -> usize {
        (0..count)
            .filter(|_| {
                matches!(
                    zone.acquire_at(key, now, &zone.settings.default_use()),
                    ZoneVerdict::Pass { .. }
                )
            })
            .count()
    }

    #[test]
    fn burst_of_thirty_at_10rps_burst_20_gives_21_passes() {
        let z = zone("10r/s", 20, None, SLOTS);
        let key = ip_key(1);
        assert_eq!(passes(&z, &key, 30, 5 * SECOND), 21);
        assert_eq!(z.rejected_total(), 9);
        // The bucket drains at the rate: one more request per 100 ms.
        assert_eq!(passes(&z, &key, 5, 5 * SECOND + SECOND / 10), 1);
        assert_eq!(passes(&z, &key, 5, 5 * SECOND + SECOND / 2), 4);
        // After (burst + 1) intervals of quiet the whole burst is available again.
        assert_eq!(passes(&z, &key, 30, 10 * SECOND), 21);
    }

    #[test]
    fn rejection_says_when_to_retry() {
        let z = zone("1r/s", 0, None, SLOTS);
        let key = ip_key(1);
        assert!(matches!(
            z.acquire_at(&key, SECOND, &z.settings.default_use()),
            ZoneVerdict::Pass { .. }
        ));
        assert_eq!(
            z.acquire_at(&key, SECOND + SECOND / 4, &z.settings.default_use()),
            ZoneVerdict::Reject {
                retry_after: Duration::from_millis(750)
            }
        );
    }

    #[test]
    fn delay_mode_delays_excess_beyond_n_and_still_rejects_beyond_burst() {
        let z = zone("10r/s", 5, Some(2), SLOTS);
        let key = ip_key(1);
        let delays: Vec<Option<u64>> = (0..8)
            .map(
                |_| match z.acquire_at(&key, SECOND, &z.settings.default_use()) {
                    ZoneVerdict::Pass { delay, .. } => Some(delay.as_millis() as u64),
                    ZoneVerdict::Reject { .. } => None,
                },
            )
            .collect();
        assert_eq!(
            delays,
            [
                Some(0),
                Some(0),
                Some(0),
                Some(100),
                Some(200),
                Some(300),
                None,
                None
            ]
        );
    }

    #[test]
    fn clients_are_counted_separately() {
        let z = zone("1r/m", 2, None, SLOTS);
        for n in 0..100 {
            assert_eq!(passes(&z, &ip_key(n), 5, SECOND), 3, "client {n}");
        }
    }

    /// With far more clients than counters, every counter is shared; a single client must
    /// still never get more than rate + burst through, whatever the others do.
    #[test]
    fn collisions_never_let_a_client_exceed_rate_plus_burst() {
        let z = zone("10r/s", 20, None, 16);
        let mut now = SECOND;
        let victim = ip_key(7);
        let mut victim_passes = 0;
        // 10 seconds of traffic from 5,000 addresses, probing the victim every 50 ms.
        for step in 0..200 {
            for n in 0..25 {
                z.acquire_at(
                    &ip_key(1000 + step * 25 + n),
                    now,
                    &z.settings.default_use(),
                );
            }
            victim_passes += passes(&z, &victim, 3, now);
            now += SECOND / 20;
        }
        let elapsed_secs = 10;
        assert!(
            victim_passes <= 10 * elapsed_secs + 20 + 1,
            "victim got {victim_passes} requests through"
        );
    }

    #[test]
    fn racing_threads_of_one_client_get_exactly_rate_plus_burst() {
        let z = std::sync::Arc::new(zone("1r/m", 20, None, SLOTS));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let z = z.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .filter(|_| matches!(z.acquire(&ip_key(9)), ZoneVerdict::Pass { .. }))
                        .count()
                })
            })
            .collect();
        let passed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(passed, 21);
    }

    /// Counters hold the latest arrival time of the keys sharing them, not a sum, so a
    /// crowd that filled every counter leaves no trace once its buckets have drained.
    #[test]
    fn old_traffic_leaves_no_trace() {
        let z = zone("10r/s", 5, None, 64);
        for n in 0..10_000 {
            passes(&z, &ip_key(n), 3, 1000 * SECOND);
        }
        let later = 1000 * SECOND + SECOND;
        assert_eq!(passes(&z, &ip_key(99_999), 10, later), 6);
    }

    /// With fewer active clients than counters, new clients are not held back by others.
    #[test]
    fn moderate_crowds_do_not_limit_new_clients() {
        let z = zone("10r/s", 5, None, SLOTS);
        let first_requests = (0..2_000)
            .filter(|n| {
                matches!(
                    z.acquire_at(&ip_key(*n), SECOND, &z.settings.default_use()),
                    ZoneVerdict::Pass { .. }
                )
            })
            .count();
        assert_eq!(first_requests, 2_000);
    }

    #[test]
    fn memory_is_fixed_by_slots() {
        let z = zone("10r/s", 20, None, SLOTS);
        for n in 0..100_000 {
            z.acquire_at(&ip_key(n), SECOND, &z.settings.default_use());
        }
        assert_eq!(z.memory_bytes(), 4 * 8 * SLOTS);
    }

    #[test]
    fn a_request_rejected_by_one_zone_is_counted_in_none() {
        let wide = zone("1r/m", 5, None, SLOTS);
        let narrow = zone("1r/m", 0, None, SLOTS);
        let key = ip_key(1);
        let both = [
            (&wide, wide.settings.default_use(), key),
            (&narrow, narrow.settings.default_use(), key),
        ];
        assert!(matches!(acquire_all(&both), LimitOutcome::Pass { .. }));
        for _ in 0..3 {
            assert!(matches!(
                acquire_all(&both),
                LimitOutcome::Reject { status: 429, .. }
            ));
        }
        // Only the one passing request was counted in the wide zone: 5 more fit.
        let more = (0..10)
            .filter(|_| matches!(wide.acquire(&key), ZoneVerdict::Pass { .. }))
            .count();
        assert_eq!(more, 5);
    }

    #[test]
    fn places_sharing_a_zone_share_its_counters_with_their_own_bursts() {
        let z = zone("1r/m", 0, None, SLOTS);
        let key = ip_key(1);
        let wide = ZoneUse {
            burst: 4,
            ..z.settings.default_use()
        };
        let narrow = ZoneUse {
            burst: 1,
            status: 503,
            ..z.settings.default_use()
        };
        let pass =
            |usage: &ZoneUse| matches!(z.acquire_at(&key, SECOND, usage), ZoneVerdict::Pass { .. });
        assert!(
            pass(&narrow) && pass(&narrow) && !pass(&narrow),
            "burst 1: two pass"
        );
        // The wide place counts in the same bucket, two already in it: three more fit.
        assert_eq!((0..5).filter(|_| pass(&wide)).count(), 3);
        let outcome = acquire_all(&[(&z, narrow, key)]);
        assert!(matches!(outcome, LimitOutcome::Reject { status: 503, .. }));
    }
}
