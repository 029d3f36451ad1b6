//! [`GlobalView`]: what one machine knows of a global zone's counts, decided on locally and
//! reconciled with Redis in the background (the algorithm is in the module docs of
//! [`crate::fleet`]).

use blake2::digest::consts::U16;
use blake2::{Blake2b, Digest};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::limit::LimitKey;

/// Keys reconciled per zone and sync at most; the rest wait for the next sync.
const MAX_BATCH: usize = 4096;

/// Syncs a key needs before its own count of machines is trusted: until then it is counted
/// as if every machine of the fleet served it, so machines that meet a key at about the same
/// time do not each hand out the whole burst.
const SETTLING_SYNCS: u8 = 2;

/// One machine's view of a global zone. Called under the zone's lock on the request path
/// ([`GlobalView::estimate`], [`GlobalView::commit`]) and by the sync task.
pub(crate) struct GlobalView {
    /// Keys by their hash (the map hashes that hash again, cheaply).
    keys: Mutex<HashMap<u64, KeyView, foldhash::fast::FixedState>>,
    /// Hashes keys outside the lock.
    hasher: foldhash::fast::FixedState,
    /// Keys held at most (the zone's `slots`); a key with no room is counted in the zone's
    /// local sketch at the fall-back share.
    capacity: usize,
    /// The zone's emission interval (ns).
    interval_ns: i64,
    /// Machines in the fleet when last seen (at least 1).
    fleet_size: AtomicU32,
    /// Whether the last sync reached Redis.
    linked: AtomicBool,
}

/// One key as this machine knows it.
struct KeyView {
    /// The key's part of its Redis key (an address, or a digest of a header value).
    name: Box<str>,
    /// Theoretical arrival time (ns, the zone's clock): Redis's value at the last sync plus
    /// what this machine admitted since, each weighted by `machines`.
    tat: i64,
    /// Machines that served the key lately, as Redis said at the last sync (0: not synced).
    machines: u32,
    /// Successful syncs of this key (saturating).
    syncs: u8,
    /// Requests admitted here since the last sync was sent, and when the first came.
    pending: u32,
    pending_since: i64,
    /// Requests sent in the sync in flight, and when the first came.
    in_flight: u32,
    in_flight_since: i64,
    /// A request came (admitted or not) since the last sync: this machine serves the key.
    seen: bool,
}

/// One key's share of a sync: what this machine admitted since the last one.
#[derive(Debug, Clone)]
pub(crate) struct SyncEntry {
    pub(crate) id: u64,
    pub(crate) name: Box<str>,
    /// Requests admitted.
    pub(crate) admitted: u32,
    /// How long ago the first of them came (ns).
    pub(crate) age_ns: i64,
}

impl GlobalView {
    pub(crate) fn new(capacity: usize, interval_ns: i64) -> Self {
        Self {
            keys: Mutex::new(HashMap::with_hasher(foldhash::fast::FixedState::default())),
            hasher: foldhash::fast::FixedState::with_seed(0x5eed),
            capacity: capacity.max(1),
            interval_ns,
            fleet_size: AtomicU32::new(1),
            linked: AtomicBool::new(false),
        }
    }

    fn id(&self, key: &LimitKey<'_>) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Machines in the fleet when last seen.
    pub(crate) fn fleet_size(&self) -> u32 {
        self.fleet_size.load(Ordering::Relaxed).max(1)
    }

    /// Whether the zone counts across the fleet now (else it is in fall-back).
    pub(crate) fn is_linked(&self) -> bool {
        self.linked.load(Ordering::Relaxed)
    }

    pub(crate) fn set_link(&self, linked: bool, fleet_size: Option<u32>) {
        self.linked.store(linked, Ordering::Relaxed);
        if let Some(size) = fleet_size {
            self.fleet_size.store(size.max(1), Ordering::Relaxed);
        }
    }

    /// The step, in interval units, a request admitted here moves the key's arrival time:
    /// the number of machines assumed to admit it at the same pace.
    fn weight(&self, view: Option<&KeyView>) -> u32 {
        let fleet = self.fleet_size();
        match view {
            Some(v) if self.is_linked() && v.syncs >= SETTLING_SYNCS => v.machines.max(1),
            Some(v) if self.is_linked() => v.machines.max(fleet),
            _ => fleet,
        }
    }

    /// The key's arrival time and the step (ns) one more admission adds; `None` if the key
    /// is unknown and there is no room for it (count it in the sketch instead).
    pub(crate) fn estimate(&self, key: &LimitKey<'_>) -> Option<(i64, i64)> {
        let id = self.id(key);
        let keys = self.keys.lock();
        let view = keys.get(&id);
        if view.is_none() && keys.len() >= self.capacity {
            return None;
        }
        let step = i64::from(self.weight(view)) * self.interval_ns;
        Some((view.map_or(0, |v| v.tat), step))
    }

    /// Counts an admitted request whose arrival time is now `arrival`; `false` if the key
    /// has no room (the caller counts it in the sketch).
    pub(crate) fn commit(&self, key: &LimitKey<'_>, arrival: i64, now: i64) -> bool {
        let id = self.id(key);
        let mut keys = self.keys.lock();
        if !keys.contains_key(&id) && keys.len() >= self.capacity {
            return false;
        }
        let view = keys.entry(id).or_insert_with(|| KeyView {
            name: key_name(key),
            tat: 0,
            machines: 0,
            syncs: 0,
            pending: 0,
            pending_since: now,
            in_flight: 0,
            in_flight_since: now,
            seen: false,
        });
        view.tat = view.tat.max(arrival);
        if view.pending == 0 {
            view.pending_since = now;
        }
        view.pending = view.pending.saturating_add(1);
        view.seen = true;
        true
    }

    /// Notes a rejected request: this machine still serves the key.
    pub(crate) fn saw(&self, key: &LimitKey<'_>) {
        let id = self.id(key);
        if let Some(view) = self.keys.lock().get_mut(&id) {
            view.seen = true;
        }
    }

    /// Takes what to send in the next sync: every key admitted or seen since the last one.
    /// Keys whose bucket has been empty for `idle_ns` and that have nothing to send are
    /// forgotten.
    pub(crate) fn take_batch(&self, now: i64, idle_ns: i64) -> Vec<SyncEntry> {
        let mut keys = self.keys.lock();
        keys.retain(|_, v| v.seen || v.pending > 0 || v.in_flight > 0 || v.tat + idle_ns > now);
        let mut batch = Vec::new();
        for (id, view) in keys.iter_mut() {
            if batch.len() >= MAX_BATCH {
                break;
            }
            if !view.seen && view.pending == 0 {
                continue;
            }
            batch.push(SyncEntry {
                id: *id,
                name: view.name.clone(),
                admitted: view.pending,
                age_ns: (now - view.pending_since).max(0),
            });
            view.in_flight = view.pending;
            view.in_flight_since = view.pending_since;
            view.pending = 0;
            view.seen = false;
        }
        batch
    }

    /// Redis's answer for a batch: each key's excess over its arrival time (ns, from `now`)
    /// and how many machines serve it. What was admitted here since the batch was sent is
    /// added back on top, at the new weight.
    pub(crate) fn apply(&self, answers: &[(u64, i64, u32)], now: i64) {
        let mut keys = self.keys.lock();
        for (id, excess_ns, machines) in answers {
            let Some(view) = keys.get_mut(id) else {
                continue;
            };
            view.machines = (*machines).max(1);
            view.syncs = view.syncs.saturating_add(1);
            view.in_flight = 0;
            let weight = i64::from(self.weight(Some(view)));
            view.tat = now + excess_ns + i64::from(view.pending) * weight * self.interval_ns;
        }
    }

    /// A sync failed: what it carried is sent again with the next one.
    pub(crate) fn restore(&self, batch: &[SyncEntry]) {
        let mut keys = self.keys.lock();
        for entry in batch {
            let Some(view) = keys.get_mut(&entry.id) else {
                continue;
            };
            if view.in_flight > 0 {
                if view.pending == 0 || view.in_flight_since < view.pending_since {
                    view.pending_since = view.in_flight_since;
                }
                view.pending = view.pending.saturating_add(view.in_flight);
                view.in_flight = 0;
            }
            view.seen = true;
        }
    }

    /// Keys held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.keys.lock().len()
    }
}

/// A key's part of its Redis key: an address as text; a header value only as a digest, so
/// tokens and session ids never sit in Redis.
fn key_name(key: &LimitKey<'_>) -> Box<str> {
    match key {
        LimitKey::Ip(ip) => ip.to_string().into(),
        LimitKey::IpLocation(ip, site, index) => format!("{ip}@{site}#{index}").into(),
        LimitKey::Header(value) => {
            let digest = Blake2b::<U16>::digest(value);
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            format!("h:{hex}").into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    const I: i64 = 100_000_000; // 10r/s

    fn ip(n: u32) -> LimitKey<'static> {
        LimitKey::Ip(IpAddr::V4(n.into()))
    }

    #[test]
    fn unsynced_keys_count_for_the_whole_fleet_then_for_the_machines_serving_them() {
        let view = GlobalView::new(16, I);
        view.set_link(true, Some(3));
        assert_eq!(view.estimate(&ip(1)), Some((0, 3 * I)));
        assert!(view.commit(&ip(1), 3 * I, 0));
        for _ in 0..SETTLING_SYNCS {
            view.saw(&ip(1));
            let batch = view.take_batch(0, 0);
            assert_eq!(batch.len(), 1);
            view.apply(&[(batch[0].id, 5 * I, 1)], 0);
        }
        // Only this machine serves the key: one admission is one interval, on top of the
        // fleet's arrival time.
        assert_eq!(view.estimate(&ip(1)), Some((5 * I, I)));
        // In fall-back every key counts for the whole fleet again.
        view.set_link(false, None);
        assert_eq!(view.estimate(&ip(1)), Some((5 * I, 3 * I)));
    }

    #[test]
    fn a_failed_sync_sends_its_counts_again_and_admissions_during_a_sync_are_kept() {
        let view = GlobalView::new(16, I);
        view.set_link(true, Some(1));
        view.commit(&ip(1), I, 10);
        view.commit(&ip(1), 2 * I, 20);
        let batch = view.take_batch(30, 0);
        assert_eq!((batch[0].admitted, batch[0].age_ns), (2, 20));
        view.commit(&ip(1), 3 * I, 40);
        view.restore(&batch);
        let again = view.take_batch(50, 0);
        assert_eq!((again[0].admitted, again[0].age_ns), (3, 40));
        view.commit(&ip(1), 4 * I, 60);
        // Redis says 7 intervals ahead; the one admitted meanwhile comes on top.
        view.apply(&[(again[0].id, 7 * I, 1)], 100);
        assert_eq!(view.estimate(&ip(1)).unwrap().0, 100 + 8 * I);
        assert_eq!(view.take_batch(100, 0)[0].admitted, 1);
    }

    #[test]
    fn memory_is_bounded_and_idle_keys_are_forgotten() {
        let view = GlobalView::new(4, I);
        for n in 0..4 {
            assert!(view.commit(&ip(n), I, 0));
        }
        assert_eq!(view.estimate(&ip(99)), None);
        assert!(!view.commit(&ip(99), I, 0));
        let batch = view.take_batch(0, 0);
        view.apply(&batch.iter().map(|e| (e.id, 0, 1)).collect::<Vec<_>>(), 0);
        // Nothing to send, buckets empty for longer than idle: forgotten.
        view.take_batch(10 * I, I);
        assert_eq!(view.len(), 0);
    }

    #[test]
    fn header_values_reach_redis_only_as_digests() {
        let name = key_name(&LimitKey::Header(b"Bearer secret-token"));
        assert!(name.starts_with("h:") && !name.contains("secret"), "{name}");
        assert_eq!(name.len(), 2 + 32);
    }
}
