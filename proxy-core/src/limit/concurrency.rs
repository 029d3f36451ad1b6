//! [`ConcurrencyZone`]: nginx's `limit_conn`: how many requests of one key (client IP, IPv6
//! folded to a prefix; a header; the client per location) may be in progress at once. A
//! request holds a [`ConcurrencyPermit`] from when its head has been read until it ends, as
//! nginx counts "connections with a request being processed".
//!
//! Memory: a key has an entry only while one of its requests is in progress, so the table
//! is bounded by the requests in progress (at most `[server] max_connections` of them).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use super::key::{LimitKey, ZoneKey};

/// A concurrency zone's settings, as compiled from config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConcurrencySettings {
    /// The zone's name (for logs and metrics).
    pub name: String,
    /// Requests of one key in progress at once.
    pub max: u32,
    /// What is counted.
    pub key: ZoneKey,
    /// IPv6 prefix length that client IPs are folded to.
    pub ipv6_prefix: u8,
    /// Status of rejections.
    pub status: u16,
    /// Log and count rejections without rejecting.
    pub dry_run: bool,
}

/// The key of a request in progress, owned so that its permit can release it later.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum OwnedKey {
    Ip(IpAddr),
    IpLocation(IpAddr, Arc<str>, usize),
    Header(Box<[u8]>),
}

impl From<&LimitKey<'_>> for OwnedKey {
    fn from(key: &LimitKey<'_>) -> Self {
        match *key {
            LimitKey::Ip(ip) => OwnedKey::Ip(ip),
            LimitKey::IpLocation(ip, site, index) => OwnedKey::IpLocation(ip, site.into(), index),
            LimitKey::Header(value) => OwnedKey::Header(value.into()),
        }
    }
}

type Counts = Mutex<HashMap<OwnedKey, u32>>;

/// A `limit_conn` zone: settings and the keys with requests in progress.
pub struct ConcurrencyZone {
    /// Settings.
    pub settings: ConcurrencySettings,
    /// Created on first use or handed over from the zone it replaces on a reload, so that
    /// requests in progress across a reload are counted once.
    counts: OnceLock<Arc<Counts>>,
}

impl std::fmt::Debug for ConcurrencyZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrencyZone")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// One request in progress, counted in its zone until dropped.
#[derive(Debug)]
pub struct ConcurrencyPermit {
    counts: Arc<Counts>,
    key: OwnedKey,
}

impl Drop for ConcurrencyPermit {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

impl ConcurrencyZone {
    /// A zone with nothing in progress.
    pub fn new(settings: ConcurrencySettings) -> Self {
        Self {
            settings,
            counts: OnceLock::new(),
        }
    }

    fn counts(&self) -> &Arc<Counts> {
        self.counts.get_or_init(Arc::default)
    }

    /// Takes over `previous`'s counts if it has the same settings and this zone has not
    /// counted anything yet; returns whether it did.
    pub fn keep_counts(&self, previous: &ConcurrencyZone) -> bool {
        previous.settings == self.settings && self.counts.set(previous.counts().clone()).is_ok()
    }

    /// The key this zone counts a request under; `None`: not limited (no client address,
    /// or the keyed header is missing or empty).
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

    /// A permit for one more request of `key`, or `None` when `max` are in progress (a dry
    /// run still gives one, after logging).
    pub fn acquire(&self, key: &LimitKey<'_>) -> Option<ConcurrencyPermit> {
        let counts = self.counts();
        let owned = OwnedKey::from(key);
        let mut table = counts.lock();
        let count = table.entry(owned.clone()).or_insert(0);
        if *count >= self.settings.max {
            let zone = &self.settings.name;
            if !self.settings.dry_run {
                tracing::info!(%zone, ?key, "connection limit reached, rejected");
                if *count == 0 {
                    table.remove(&owned);
                }
                return None;
            }
            tracing::info!(%zone, ?key, "connection limit reached (dry run, not rejected)");
        }
        *count += 1;
        drop(table);
        Some(ConcurrencyPermit {
            counts: counts.clone(),
            key: owned,
        })
    }

    /// Keys with requests in progress now.
    pub fn keys_in_progress(&self) -> usize {
        self.counts.get().map_or(0, |c| c.lock().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(max: u32, dry_run: bool) -> ConcurrencyZone {
        ConcurrencyZone::new(ConcurrencySettings {
            name: "per_ip".into(),
            max,
            key: ZoneKey::ClientIp,
            ipv6_prefix: 64,
            status: 503,
            dry_run,
        })
    }

    #[test]
    fn permits_up_to_max_per_key_and_release_on_drop() {
        let z = zone(2, false);
        let a = LimitKey::Ip("192.0.2.1".parse().unwrap());
        let b = LimitKey::Ip("192.0.2.2".parse().unwrap());
        let first = z.acquire(&a).expect("first");
        let second = z.acquire(&a).expect("second");
        assert!(z.acquire(&a).is_none(), "third of the same key");
        assert!(z.acquire(&b).is_some(), "another key has its own count");
        drop(first);
        let third = z.acquire(&a).expect("a slot came free");
        drop((second, third));
        assert_eq!(z.keys_in_progress(), 0, "no entry outlives its requests");
    }

    #[test]
    fn dry_run_lets_everything_through() {
        let z = zone(1, true);
        let a = LimitKey::Ip("192.0.2.1".parse().unwrap());
        let permits: Vec<_> = (0..3).map(|_| z.acquire(&a)).collect();
        assert!(permits.iter().all(Option::is_some));
    }

    #[test]
    fn a_reload_keeps_the_counts_of_an_unchanged_zone() {
        let old = zone(1, false);
        let a = LimitKey::Ip("192.0.2.1".parse().unwrap());
        let _held = old.acquire(&a).expect("first");
        let new = zone(1, false);
        assert!(new.keep_counts(&old));
        assert!(
            new.acquire(&a).is_none(),
            "the request in progress still counts"
        );
    }
}
