//! Response caching on pingora-cache: an in-memory, byte-bounded storage with
//! LRU eviction, per-location [`CachePolicy`] (key, bypass, freshness, stale windows),
//! nginx-style [`CacheStatus`] words, purges ([`EdgeCache::purge_url`],
//! [`EdgeCache::purge_host`]), and an optional disk tier behind memory (`[cache.disk]`).
//!
//! [`EdgeCache`] is created once per process and lives for the rest of it: pingora-cache
//! takes its storage, eviction manager and cache lock as `&'static` references (its design,
//! so no request ever reference-counts them), hence [`EdgeCache::leak`]. A config reload
//! keeps the cache it started with; changing `[cache]` sizes needs a restart.

mod body;
mod disk;
pub(crate) mod hooks;
mod policy;
mod purge;
mod status;
mod storage;

pub(crate) use disk::DiskTier;
pub use policy::{Bypass, CacheKeyPolicy, CachePolicy, Freshness, NotStored, QueryKey};
pub use purge::PurgeScope;
pub use status::CacheStatus;
pub(crate) use storage::{FreshHit, MemoryStorage};

use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::cache::CacheOptionOverrides;
use pingora::proxy::Session;
use std::time::Duration;

/// Storage-wide settings (`[cache]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Bytes kept in memory.
    pub max_size: usize,
    /// Largest response stored.
    pub max_object_size: usize,
    /// Entries unread this long are dropped.
    pub inactive: Duration,
    /// How long concurrent misses wait for the one upstream fetch.
    pub lock_timeout: Duration,
    /// The disk tier, if any.
    pub disk: Option<DiskSettings>,
}

/// `[cache.disk]`: where and how much the disk tier keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSettings {
    /// The cache directory (created if missing).
    pub path: std::path::PathBuf,
    /// Bytes of entry files kept.
    pub max_size: u64,
}

/// The process's cache: storage, eviction and the lock that collapses concurrent misses.
pub struct EdgeCache {
    storage: MemoryStorage,
    lock: Box<CacheKeyLockImpl>,
    settings: CacheSettings,
}

impl EdgeCache {
    /// Creates the cache and leaks it: pingora-cache requires `'static` storage, eviction
    /// manager and lock. Call once per process; [`crate::EdgeServices`] does, and hands the
    /// same cache to every config a reload swaps in.
    pub fn leak(settings: CacheSettings) -> &'static EdgeCache {
        let mut storage = MemoryStorage::new(settings.max_size, settings.inactive)
            .with_max_object_size(settings.max_object_size);
        if let Some(disk) = &settings.disk {
            match DiskTier::open(&disk.path, disk.max_size) {
                Ok(tier) => storage = storage.with_disk(tier),
                // A broken disk costs the disk tier, never the service.
                Err(e) => tracing::warn!(
                    path = %disk.path.display(),
                    error = %e,
                    "cache disk tier unavailable; caching in memory only"
                ),
            }
        }
        Box::leak(Box::new(EdgeCache {
            storage,
            // A lock older than this is considered abandoned by its writer.
            lock: CacheLock::new_boxed(settings.lock_timeout.max(Duration::from_secs(1))),
            settings,
        }))
    }

    /// Puts the lock on a request enabled without it, once its lookup found an entry to
    /// serve stale while one request refreshes it: only the lock tells a request whether
    /// another is refreshing.
    pub(crate) fn lock_for_stale(&'static self, session: &mut Session) {
        session
            .cache
            .set_cache_lock(Some(self.lock.as_ref()), Some(self.lock_options()));
    }

    fn lock_options(&self) -> CacheOptionOverrides {
        let mut overrides = CacheOptionOverrides::default();
        overrides.wait_timeout = Some(self.settings.lock_timeout);
        overrides
    }

    /// The storage (for inspection, e.g. bytes used).
    pub fn storage(&self) -> &MemoryStorage {
        &self.storage
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    /// Turns pingora-cache on for this request with our storage and eviction, and the lock
    /// that collapses concurrent misses when `lock` is set.
    pub fn enable(&'static self, session: &mut Session, lock: bool) {
        let lock = lock.then_some(self.lock.as_ref());
        session.cache.enable(
            &self.storage,
            Some(self.storage.eviction()),
            None,
            lock,
            lock.map(|_| self.lock_options()),
        );
        session
            .cache
            .set_max_file_size_bytes(self.settings.max_object_size);
    }
}
