//! [`MemoryStorage`]: the in-memory cache tier, bounded by bytes.
//!
//! Unlike pingora-cache's test-only `MemCache`, metadata is kept in parsed form (a hit
//! clones a `ResponseHeader` instead of decompressing and re-parsing it), bodies are shared
//! `Bytes` (a hit copies nothing; large ones in pages of their own, see [`super::body`]),
//! fills of a declared length reserve it up front, the byte bound is enforced by
//! pingora-cache's LRU eviction manager, entries unread for `inactive` are dropped, and
//! purges reach every variant of a URL or everything of a host.

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use parking_lot::RwLock;
use pingora::cache::eviction::lru::Manager;
use pingora::cache::eviction::EvictionManager;
use pingora::cache::key::{CacheHashKey, CompactCacheKey, HashBinary};
use pingora::cache::storage::streaming_write::U64WriteId;
use pingora::cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType, Storage,
};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheEntryKeyRef, CacheKey, CacheMeta};
use pingora::http::ResponseHeader;
use pingora::protocols::http::v1::server::PreparedHead;
use pingora::{Error, ErrorType, Result};
use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

use super::body::{restored_body, stored_body};
use super::disk::{DiskRecord, DiskTier};
use pingora::cache::CacheEntryKey;

/// Maps keyed by cache-key hashes (blake2 outputs). foldhash, seeded per process, costs a
/// tenth of SipHash on them; the keys' own hashing already resists chosen collisions.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Shards of the LRU (independent locks, so concurrent admissions rarely contend).
const LRU_SHARDS: usize = 16;
/// Bookkeeping bytes counted per entry on top of its header and body.
const ENTRY_OVERHEAD: usize = 256;

/// What a purge matched on, recorded with each entry when its key is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeTags {
    /// The normalised request host.
    pub host: Arc<str>,
    /// The request path, without query.
    pub path: Arc<str>,
}

/// Response metadata as stored: already parsed, so a hit never deserialises anything.
struct StoredMeta {
    fresh_until: SystemTime,
    updated: SystemTime,
    stale_while_revalidate: u32,
    stale_if_error: u32,
    variance: Option<HashBinary>,
    header: ResponseHeader,
}

impl StoredMeta {
    fn from_meta(meta: &CacheMeta) -> Self {
        Self {
            fresh_until: meta.fresh_until(),
            updated: meta.updated(),
            stale_while_revalidate: meta.stale_while_revalidate_sec(),
            stale_if_error: meta.stale_if_error_sec(),
            variance: meta.variance(),
            header: detached(meta.response_header()),
        }
    }

    /// A `CacheMeta` for one hit. `created` is the last update so the `Age` pingora
    /// computes counts from the last (re)validation, as it does for its own storage.
    fn to_meta(&self) -> CacheMeta {
        let mut meta = CacheMeta::new(
            self.fresh_until,
            self.updated,
            self.stale_while_revalidate,
            self.stale_if_error,
            self.header.clone(),
        );
        if let Some(variance) = self.variance {
            meta.set_variance(variance);
        }
        meta
    }

    fn weight(&self) -> usize {
        self.header
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>()
            + ENTRY_OVERHEAD
    }
}

/// A copy of `header` that owns its bytes. A parsed header's values and name spellings are
/// slices of the buffer the response was read into (with the first body bytes); a cached
/// header must not keep that whole buffer alive for as long as the entry lives.
fn detached(header: &ResponseHeader) -> ResponseHeader {
    owned_copy(header).unwrap_or_else(|_| header.clone())
}

fn owned_copy(header: &ResponseHeader) -> Result<ResponseHeader> {
    let copy = |value: &HeaderValue| {
        HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone())
    };
    let size = Some(header.headers.len());
    let mut owned = match header.has_case() {
        true => ResponseHeader::build(header.status, size)?,
        false => ResponseHeader::build_no_case(header.status, size)?,
    };
    owned.set_version(header.version);
    if header.has_case() {
        for (name, value) in header.case_header_iter() {
            let name = String::from_utf8_lossy(name.as_slice()).into_owned();
            owned.append_header(name, copy(value))?;
        }
    } else {
        for (name, value) in &header.headers {
            owned.append_header(name.clone(), copy(value))?;
        }
    }
    owned.set_reason_phrase(header.get_reason_phrase())?;
    Ok(owned)
}

/// A complete entry.
struct Entry {
    meta: StoredMeta,
    body: Bytes,
    compact: CompactCacheKey,
    tags: Option<PurgeTags>,
    /// Seconds since the storage's epoch when it was last read or written.
    last_access: AtomicU64,
    /// The header fresh hits send, built by the first hit of each second: later hits
    /// clone it instead of inserting headers (an insert into a cloned header grows both
    /// of Pingora's maps, a few hundred instructions each).
    hit_header: ArcSwapOption<HitHeader>,
    /// Whether the body is what the header says: its `Content-Length`, or a chunked body
    /// stored whole. Only such an entry is answered by the fast path. Worked out once
    /// here: header and body do not change, and the look-up and parse cost each hit
    /// about 230 instructions.
    whole: bool,
}

impl Entry {
    fn new(
        meta: StoredMeta,
        body: Bytes,
        compact: CompactCacheKey,
        tags: Option<PurgeTags>,
        now_secs: u64,
    ) -> Entry {
        let whole = match declared_length(&meta.header) {
            Some(length) => length == body.len(),
            None => is_chunked(&meta.header),
        };
        Entry {
            meta,
            body,
            compact,
            tags,
            last_access: AtomicU64::new(now_secs),
            hit_header: ArcSwapOption::empty(),
            whole,
        }
    }
}

/// A stored header as a fresh hit sends it, and what it was built for.
struct HitHeader {
    status_name: Option<http::HeaderName>,
    preset: &'static [(http::HeaderName, http::HeaderValue)],
    age: u64,
    date_secs: u64,
    header: ResponseHeader,
    /// The header without `preset`, serialized once for all hits that take a session's
    /// prepared-head path; `None` where such a head cannot be sent (see
    /// [`PreparedHead::new`]).
    prepared: Option<PreparedHead>,
}

#[derive(Clone, Copy)]
enum FillState {
    Partial(usize),
    Complete(usize),
}

/// An entry still being written; readers stream from it as bytes arrive.
struct Fill {
    id: u64,
    meta: StoredMeta,
    body: RwLock<Vec<u8>>,
    state: watch::Sender<FillState>,
    compact: CompactCacheKey,
    tags: Option<PurgeTags>,
}

/// The in-memory cache tier. Pingora requires `&'static` storage; see
/// [`crate::cache::EdgeCache`] for how one instance is created per process.
pub struct MemoryStorage {
    entries: RwLock<HashMap<HashBinary, Arc<Entry>>>,
    fills: RwLock<HashMap<HashBinary, Arc<Fill>>>,
    /// Every fill being written, by id: with the cache lock off, two misses of one key are
    /// written at once and the later one replaces the earlier in `fills`, but each writer's
    /// own client still streams its own fill (`lookup_streaming_write`).
    writing: RwLock<HashMap<u64, Arc<Fill>>>,
    next_fill: AtomicU64,
    eviction: Manager<LRU_SHARDS>,
    inactive: Duration,
    epoch: Instant,
    last_sweep: AtomicU64,
    disk: Option<Arc<DiskTier>>,
    max_object_size: usize,
}

impl MemoryStorage {
    /// Storage holding at most `max_size` bytes; entries unread for `inactive` are dropped.
    pub fn new(max_size: usize, inactive: Duration) -> Self {
        Self {
            entries: RwLock::new(HashMap::default()),
            fills: RwLock::new(HashMap::default()),
            writing: RwLock::new(HashMap::default()),
            next_fill: AtomicU64::new(1),
            eviction: Manager::with_capacity(max_size, 1024),
            inactive,
            epoch: Instant::now(),
            last_sweep: AtomicU64::new(0),
            disk: None,
            max_object_size: max_size,
        }
    }

    /// Bounds the buffer a fill reserves up front for a declared `Content-Length`.
    pub fn with_max_object_size(self, max_object_size: usize) -> Self {
        Self {
            max_object_size,
            ..self
        }
    }

    /// Adds a disk tier behind memory: complete entries are also written to it, and memory
    /// misses are looked up in it.
    pub fn with_disk(self, disk: DiskTier) -> Self {
        Self {
            disk: Some(Arc::new(disk)),
            ..self
        }
    }

    /// The disk tier, if any.
    pub fn disk(&self) -> Option<&DiskTier> {
        self.disk.as_deref()
    }

    /// The eviction manager enforcing the byte bound (handed to pingora-cache).
    pub fn eviction(&self) -> &Manager<LRU_SHARDS> {
        &self.eviction
    }

    /// Bytes currently held by complete entries (bodies, headers and bookkeeping).
    pub fn used_bytes(&self) -> usize {
        self.entries
            .read()
            .values()
            .map(|e| e.body.len() + e.meta.weight())
            .sum()
    }

    /// Number of complete entries.
    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    /// Whether no complete entry is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every entry (and in-flight write) whose tags match; returns how many.
    pub fn purge_matching(&self, matches: impl Fn(&PurgeTags) -> bool) -> usize {
        let hit = |tags: &Option<PurgeTags>| tags.as_ref().is_some_and(&matches);
        self.fills.write().retain(|_, fill| !hit(&fill.tags));
        let mut removed: Vec<HashBinary> = {
            let mut entries = self.entries.write();
            let keys: Vec<HashBinary> = entries
                .iter()
                .filter(|(_, e)| hit(&e.tags))
                .map(|(k, _)| *k)
                .collect();
            for key in &keys {
                if let Some(entry) = entries.remove(key) {
                    self.forget(&entry.compact);
                }
            }
            keys
        };
        if let Some(disk) = self.disk.as_ref() {
            removed.extend(disk.remove_matching(&matches));
        }
        // An entry may have been in memory and on disk: count it once.
        removed.sort_unstable();
        removed.dedup();
        removed.len()
    }

    fn forget(&self, compact: &CompactCacheKey) {
        self.eviction
            .remove(CacheEntryKeyRef::from_entry_id(compact, None));
    }

    fn now_secs(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    fn is_inactive(&self, entry: &Entry, now: u64) -> bool {
        now.saturating_sub(entry.last_access.load(Ordering::Relaxed)) > self.inactive.as_secs()
    }

    /// Drops inactive entries, at most once per quarter of the `inactive` period.
    fn sweep_inactive(&self) {
        let now = self.now_secs();
        let last = self.last_sweep.load(Ordering::Relaxed);
        let interval = (self.inactive.as_secs() / 4).max(1);
        if now < last + interval
            || self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let mut stale = Vec::new();
        self.entries.write().retain(|_, entry| {
            let keep = !self.is_inactive(entry, now);
            if !keep {
                stale.push(entry.compact.clone());
            }
            keep
        });
        for compact in &stale {
            self.forget(compact);
        }
    }

    /// A memory miss found on disk: back into memory (and the eviction manager), then a hit.
    async fn promote_from_disk(
        &self,
        key: &CacheKey,
        hash: HashBinary,
    ) -> Option<(CacheMeta, HitHandler)> {
        let disk = self.disk.as_ref()?;
        let record = disk.read(&hash).await?;
        let Ok(meta) = CacheMeta::deserialize(&record.internal, &record.header) else {
            disk.remove(&hash);
            return None;
        };
        let entry = Arc::new(Entry::new(
            StoredMeta::from_meta(&meta),
            restored_body(record.body),
            key.to_compact(),
            record.tags,
            self.now_secs(),
        ));
        let weight = entry.body.len() + entry.meta.weight();
        self.entries.write().insert(hash, entry.clone());
        let admitted = CacheEntryKey::key_only(entry.compact.clone());
        for victim in self.eviction.admit(admitted, weight, meta.fresh_until()) {
            // Out of memory only: the disk copy stays.
            self.entries.write().remove(&victim.key().combined_bin());
        }
        let hit = CompleteHit {
            end: entry.body.len(),
            entry,
            start: 0,
            done: false,
        };
        Some((meta, Box::new(MemoryHit::Complete(hit))))
    }

    /// Writes an entry to the disk tier, if there is one.
    fn write_to_disk(
        &self,
        hash: HashBinary,
        meta: &StoredMeta,
        body: &Bytes,
        tags: &Option<PurgeTags>,
    ) {
        let Some(disk) = self.disk.as_ref() else {
            return;
        };
        let Ok((internal, header)) = meta.to_meta().serialize() else {
            return;
        };
        let record = DiskRecord {
            internal,
            header,
            body: body.clone(),
            tags: tags.clone(),
        };
        disk.write(hash, record);
    }

    /// A complete entry for `key` that is fresh at `now`, does not vary, and whose stored
    /// `Content-Length` matches its body (or that was stored chunked): what the hot-object fast path may answer with
    /// directly, skipping pingora-cache's per-request state machine. Counts as an access
    /// for eviction, as a pingora-cache hit does. Anything else (expired, varying, still
    /// being written, only on disk) returns `None` and takes the full cache path. The LRU
    /// is touched at most once a second per entry.
    pub fn fresh_hit(&self, key: &CacheKey, now: SystemTime) -> Option<FreshHit> {
        self.fresh_variant_hit(key, now, |_| None)
    }

    /// Like [`Self::fresh_hit`], for entries that vary too: `vary` gives the request's
    /// variance for the `Vary` of the entry stored under `key`'s primary slot (`None`: take
    /// the full path). The variant found must be no older than that primary entry, as
    /// pingora-cache requires of a secondary variant (a purge or a new `Vary` family starts
    /// at the primary). An entry stored without `Content-Length` (a chunked body, such as a
    /// compressed one) is complete once stored: its hits send its length.
    pub fn fresh_variant_hit(
        &self,
        key: &CacheKey,
        now: SystemTime,
        vary: impl FnOnce(&ResponseHeader) -> Option<HashBinary>,
    ) -> Option<FreshHit> {
        let mut entry = self.entries.read().get(&key.combined_bin()).cloned()?;
        if let Some(stored) = entry.meta.variance {
            let wanted = vary(&entry.meta.header)?;
            if wanted != stored {
                let mut variant_key = key.clone();
                variant_key.set_variance_key(wanted);
                let variant = self
                    .entries
                    .read()
                    .get(&variant_key.combined_bin())
                    .cloned()?;
                if variant.meta.variance != Some(wanted)
                    || variant.meta.updated < entry.meta.updated
                {
                    return None;
                }
                entry = variant;
            }
        }
        let now_secs = self.now_secs();
        if self.is_inactive(&entry, now_secs) {
            return None; // the full path drops it
        }
        let previous_access = entry.last_access.swap(now_secs, Ordering::Relaxed);
        let meta = &entry.meta;
        if meta.fresh_until <= now {
            return None;
        }
        if !entry.whole {
            return None;
        }
        // One LRU touch per entry and second is enough to keep a hot object at the front,
        // and spares the shard lock on every hit.
        if previous_access != now_secs {
            let weight = entry.body.len() + meta.weight();
            let tracked = CacheEntryKey::key_only(entry.compact.clone());
            self.eviction.access(&tracked, weight, meta.fresh_until);
        }
        Some(FreshHit { entry, at: now })
    }

    fn lookup_entry(&self, hash: &HashBinary) -> Option<Arc<Entry>> {
        let entry = self.entries.read().get(hash).cloned()?;
        let now = self.now_secs();
        if self.is_inactive(&entry, now) {
            self.entries.write().remove(hash);
            self.forget(&entry.compact);
            return None;
        }
        entry.last_access.store(now, Ordering::Relaxed);
        Some(entry)
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = key.combined_bin();
        let complete = |entry: Arc<Entry>| {
            let meta = entry.meta.to_meta();
            let hit = CompleteHit {
                end: entry.body.len(),
                entry,
                start: 0,
                done: false,
            };
            Ok(Some((
                meta,
                Box::new(MemoryHit::Complete(hit)) as HitHandler,
            )))
        };
        if let Some(entry) = self.lookup_entry(&hash) {
            return complete(entry);
        }
        let fill = self.fills.read().get(&hash).cloned();
        if let Some(fill) = fill {
            return Ok(Some(streaming_hit(fill)));
        }
        // A fill that finished between the two looks above is an entry now: its commit puts
        // the entry in before it takes the fill out. Without this second look, a request that
        // waited on the cache lock for that fill could miss it and go upstream again.
        if let Some(entry) = self.lookup_entry(&hash) {
            return complete(entry);
        }
        Ok(self.promote_from_disk(key, hash).await)
    }

    async fn lookup_streaming_write(
        &'static self,
        key: &CacheKey,
        streaming_write_tag: Option<&[u8]>,
        trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(tag) = streaming_write_tag.and_then(|t| U64WriteId::try_from(t).ok()) else {
            return self.lookup(key, trace).await;
        };
        let id: u64 = tag.into();
        let fill = self.writing.read().get(&id).cloned();
        Ok(fill.map(streaming_hit))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        self.sweep_inactive();
        let hash = key.combined_bin();
        let id = self.next_fill.fetch_add(1, Ordering::Relaxed);
        let (state, _) = watch::channel(FillState::Partial(0));
        let capacity =
            declared_length(meta.response_header()).map_or(0, |n| n.min(self.max_object_size));
        let fill = Arc::new(Fill {
            id,
            meta: StoredMeta::from_meta(meta),
            body: RwLock::new(Vec::with_capacity(capacity)),
            state,
            compact: key.to_compact(),
            tags: key.extensions.get::<PurgeTags>().cloned(),
        });
        self.fills.write().insert(hash, fill.clone());
        self.writing.write().insert(id, fill.clone());
        Ok(Box::new(MemoryMiss {
            storage: self,
            hash,
            fill,
            tag: U64WriteId::from(id),
            written: 0,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let hash = target.key().combined_bin();
        // Eviction only frees memory; the disk copy stays until it is invalidated.
        if let (PurgeType::Invalidation, Some(disk)) = (purge_type, self.disk.as_ref()) {
            disk.remove(&hash);
        }
        let fill = self.fills.write().remove(&hash).is_some();
        let entry = self.entries.write().remove(&hash).is_some();
        Ok(if fill || entry {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = key.combined_bin();
        let mut entries = self.entries.write();
        let Some(old) = entries.get(&hash) else {
            return Ok(false);
        };
        let updated = Arc::new(Entry::new(
            StoredMeta::from_meta(meta),
            old.body.clone(),
            old.compact.clone(),
            old.tags.clone(),
            self.now_secs(),
        ));
        entries.insert(hash, updated.clone());
        drop(entries);
        self.write_to_disk(hash, &updated.meta, &updated.body, &updated.tags);
        Ok(true)
    }

    fn support_streaming_partial_write(&self) -> bool {
        true
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

fn streaming_hit(fill: Arc<Fill>) -> (CacheMeta, HitHandler) {
    let meta = fill.meta.to_meta();
    let hit = PartialHit {
        updates: fill.state.subscribe(),
        fill,
        read: 0,
    };
    (meta, Box::new(MemoryHit::Partial(hit)))
}

/// Reads a complete entry (zero-copy) or streams one still being written.
enum MemoryHit {
    Complete(CompleteHit),
    Partial(PartialHit),
}

/// A fresh entry found by [`MemoryStorage::fresh_hit`].
pub struct FreshHit {
    entry: Arc<Entry>,
    at: SystemTime,
}

impl FreshHit {
    /// The response header to send at `now`: the stored one plus `Age` and `Date`, as
    /// pingora-cache and Pingora build them for a hit, and `status_name` (the location's
    /// cache-status header, if it sends one) saying `HIT`. `preset` names headers the
    /// caller sets on every response after this (the request id, Pingora's `Connection`):
    /// the copy carries them with the given values, so that setting them replaces a value
    /// instead of growing the copied header. The header is built once per entry and
    /// second (per `Age` and `Date`) and cloned for the other hits.
    pub fn response_header(
        &self,
        now: SystemTime,
        status_name: Option<&http::HeaderName>,
        preset: &'static [(http::HeaderName, http::HeaderValue)],
    ) -> Result<ResponseHeader> {
        Ok(self.hit_header(now, status_name, preset)?.header.clone())
    }

    /// The header of [`Self::response_header`] without `preset`, serialized for a session
    /// to write as it is ([`PreparedHead`]), the caller adding `preset`'s fields with their
    /// values for this response; built with it, once per entry and second. `None` where
    /// such a head cannot be sent, and the hit takes [`Self::response_header`].
    pub fn prepared_head(
        &self,
        now: SystemTime,
        status_name: Option<&http::HeaderName>,
        preset: &'static [(http::HeaderName, http::HeaderValue)],
    ) -> Result<Option<PreparedHead>> {
        Ok(self.hit_header(now, status_name, preset)?.prepared.clone())
    }

    fn hit_header(
        &self,
        now: SystemTime,
        status_name: Option<&http::HeaderName>,
        preset: &'static [(http::HeaderName, http::HeaderValue)],
    ) -> Result<Arc<HitHeader>> {
        let age = now
            .duration_since(self.entry.meta.updated)
            .unwrap_or_default()
            .as_secs();
        let date_secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if let Some(kept) = &*self.entry.hit_header.load() {
            if kept.age == age
                && kept.date_secs == date_secs
                && kept.status_name.as_ref() == status_name
                && std::ptr::eq(kept.preset, preset)
            {
                return Ok(kept.clone());
            }
        }
        let mut header = self.entry.meta.header.clone();
        if !header.headers.contains_key(http::header::CONTENT_LENGTH) {
            // A chunked body, stored whole: its length is known now.
            header.remove_header(&http::header::TRANSFER_ENCODING);
            header.insert_header(http::header::CONTENT_LENGTH, self.entry.body.len())?;
        }
        if let Some(name) = status_name {
            header.insert_header(name.clone(), super::CacheStatus::Hit.as_str())?;
        }
        header.insert_header(http::header::AGE, age)?;
        header.insert_header(http::header::DATE, httpdate::fmt_http_date(now))?;
        header.set_version(http::Version::HTTP_11);
        let prepared = PreparedHead::new(Arc::new(header.clone()));
        for (name, value) in preset {
            header.insert_header(name.clone(), value.clone())?;
        }
        let kept = Arc::new(HitHeader {
            status_name: status_name.cloned(),
            preset,
            age,
            date_secs,
            header,
            prepared,
        });
        self.entry.hit_header.store(Some(kept.clone()));
        Ok(kept)
    }

    /// The time the entry was found fresh at, for the header sent with it (one clock read
    /// per hit, not two).
    pub fn at(&self) -> SystemTime {
        self.at
    }

    /// The stored body (shared, not copied).
    pub fn body(&self) -> Bytes {
        self.entry.body.clone()
    }
}

struct CompleteHit {
    entry: Arc<Entry>,
    start: usize,
    end: usize,
    done: bool,
}

struct PartialHit {
    fill: Arc<Fill>,
    updates: watch::Receiver<FillState>,
    read: usize,
}

impl PartialHit {
    async fn read(&mut self) -> Option<Bytes> {
        loop {
            let (end, complete) = match *self.updates.borrow_and_update() {
                FillState::Partial(n) => (n, false),
                FillState::Complete(n) => (n, true),
            };
            if end > self.read {
                let chunk = Bytes::copy_from_slice(&self.fill.body.read()[self.read..end]);
                self.read = end;
                return Some(chunk);
            }
            // The writer is gone (finished or failed) once the channel closes.
            if complete || self.updates.changed().await.is_err() {
                return None;
            }
        }
    }
}

#[async_trait]
impl HandleHit for MemoryHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        match self {
            Self::Complete(hit) if hit.done => Ok(None),
            Self::Complete(hit) => {
                hit.done = true;
                Ok(Some(hit.entry.body.slice(hit.start..hit.end)))
            }
            Self::Partial(hit) => Ok(hit.read().await),
        }
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        matches!(self, Self::Complete(_))
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let Self::Complete(hit) = self else {
            return Error::e_explain(ErrorType::InternalError, "cannot seek a partial entry");
        };
        let len = hit.entry.body.len();
        if start >= len {
            return Error::e_explain(ErrorType::InternalError, "seek start out of range");
        }
        hit.start = start;
        hit.end = end.map_or(len, |end| end.min(len)).max(start);
        hit.done = false;
        Ok(())
    }

    fn should_count_access(&self) -> bool {
        matches!(self, Self::Complete(_))
    }

    fn get_eviction_weight(&self) -> usize {
        match self {
            Self::Complete(hit) => hit.entry.body.len() + hit.entry.meta.weight(),
            Self::Partial(_) => 0,
        }
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Writes one response; it becomes an entry on `finish`, unless purged meanwhile.
struct MemoryMiss {
    storage: &'static MemoryStorage,
    hash: HashBinary,
    fill: Arc<Fill>,
    tag: U64WriteId,
    written: usize,
}

#[async_trait]
impl HandleMiss for MemoryMiss {
    async fn write_body(&mut self, data: Bytes, eof: bool) -> Result<()> {
        self.fill.body.write().extend_from_slice(&data);
        self.written += data.len();
        let state = if eof {
            FillState::Complete(self.written)
        } else {
            FillState::Partial(self.written)
        };
        self.fill.state.send_replace(state);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let storage = self.storage;
        // Copied, not taken: streaming readers may still be reading the fill's buffer.
        let body = stored_body(&self.fill.body.read());
        self.fill
            .state
            .send_replace(FillState::Complete(body.len()));
        let weight = body.len() + self.fill.meta.weight();
        let entry = Arc::new(Entry::new(
            clone_meta(&self.fill.meta),
            body,
            self.fill.compact.clone(),
            self.fill.tags.clone(),
            storage.now_secs(),
        ));
        {
            // Commit only if this fill is still the current one (a purge, or a newer fill
            // for the same key, wins). The entry goes in before the fill goes out, under
            // the fill lock, so a concurrent lookup always finds one of them.
            let mut fills = storage.fills.write();
            if fills.get(&self.hash).is_none_or(|f| f.id != self.fill.id) {
                return Ok(MissFinishType::Created(0));
            }
            storage.entries.write().insert(self.hash, entry.clone());
            fills.remove(&self.hash);
        }
        storage.write_to_disk(self.hash, &entry.meta, &entry.body, &entry.tags);
        Ok(MissFinishType::Created(weight))
    }

    fn streaming_write_tag(&self) -> Option<&[u8]> {
        Some(self.tag.as_bytes())
    }
}

impl Drop for MemoryMiss {
    fn drop(&mut self) {
        // Finished or not, the writer is gone.
        self.storage.writing.write().remove(&self.fill.id);
        // An unfinished write is abandoned: readers stop, nothing is committed.
        let mut fills = self.storage.fills.write();
        if fills.get(&self.hash).is_some_and(|f| f.id == self.fill.id) {
            fills.remove(&self.hash);
        }
    }
}

/// Whether the response's body was sent chunked (`Transfer-Encoding: chunked`).
fn is_chunked(header: &ResponseHeader) -> bool {
    header
        .headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .any(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// The response's `Content-Length`, if it declares a valid one.
fn declared_length(header: &ResponseHeader) -> Option<usize> {
    let value = header.headers.get(http::header::CONTENT_LENGTH)?;
    value.to_str().ok()?.parse().ok()
}

fn clone_meta(meta: &StoredMeta) -> StoredMeta {
    StoredMeta {
        fresh_until: meta.fresh_until,
        updated: meta.updated,
        stale_while_revalidate: meta.stale_while_revalidate,
        stale_if_error: meta.stale_if_error,
        variance: meta.variance,
        header: meta.header.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::cache::trace::Span;

    fn storage(max_size: usize, inactive: Duration) -> &'static MemoryStorage {
        Box::leak(Box::new(MemoryStorage::new(max_size, inactive)))
    }

    fn meta() -> CacheMeta {
        let header = ResponseHeader::build(200, None).unwrap();
        let now = SystemTime::now();
        CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header)
    }

    fn key(host: &str, path: &str, query: &str) -> CacheKey {
        let mut key = CacheKey::new(format!("{host}{path}?{query}"), host);
        key.extensions.insert(PurgeTags {
            host: host.into(),
            path: path.into(),
        });
        key
    }

    async fn write(s: &'static MemoryStorage, key: &CacheKey, body: &[u8]) -> usize {
        write_with(s, key, &meta(), body).await
    }

    async fn write_with(
        s: &'static MemoryStorage,
        key: &CacheKey,
        meta: &CacheMeta,
        body: &[u8],
    ) -> usize {
        let span = Span::inactive().handle();
        let mut miss = s.get_miss_handler(key, meta, &span).await.unwrap();
        miss.write_body(Bytes::copy_from_slice(body), true)
            .await
            .unwrap();
        match miss.finish().await.unwrap() {
            MissFinishType::Created(weight) => weight,
            MissFinishType::Appended(weight, _) => weight,
        }
    }

    async fn read(s: &'static MemoryStorage, key: &CacheKey) -> Option<Vec<u8>> {
        let span = Span::inactive().handle();
        let (_, mut hit) = s.lookup(key, &span).await.unwrap()?;
        let mut out = Vec::new();
        while let Some(chunk) = hit.read_body().await.unwrap() {
            out.extend_from_slice(&chunk);
        }
        Some(out)
    }

    #[tokio::test]
    async fn write_then_read_keeps_parsed_meta() {
        let s = storage(1 << 20, Duration::from_secs(600));
        let k = key("a.com", "/x", "");
        assert!(read(s, &k).await.is_none());
        write(s, &k, b"hello").await;
        assert_eq!(read(s, &k).await.as_deref(), Some(&b"hello"[..]));
        let span = Span::inactive().handle();
        let (meta, _) = s.lookup(&k, &span).await.unwrap().unwrap();
        assert!(meta.is_fresh(SystemTime::now()));
        assert_eq!(meta.response_header().status.as_u16(), 200);
    }

    #[tokio::test]
    async fn fresh_hits_need_a_fresh_complete_non_varying_entry_of_its_length() {
        let s = storage(1 << 20, Duration::from_secs(600));
        let now = SystemTime::now();
        let meta = |variance: Option<HashBinary>| {
            let mut header = ResponseHeader::build(200, None).unwrap();
            header.insert_header("content-length", "5").unwrap();
            let mut meta = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header);
            if let Some(variance) = variance {
                meta.set_variance(variance);
            }
            meta
        };
        let fresh = key("a.com", "/fresh", "");
        write_with(s, &fresh, &meta(None), b"hello").await;
        let hit = s.fresh_hit(&fresh, now).expect("a fresh hit");
        assert_eq!(&hit.body()[..], b"hello");
        let header = hit
            .response_header(now + Duration::from_secs(3), None, &[])
            .unwrap();
        assert_eq!(header.headers.get("age").unwrap(), "3");
        assert!(header.headers.get("x-cache-status").is_none());
        // The status header, `Age`, `Date` and the preset headers: built by the first hit
        // of a second, kept for the next ones; another name gets its own copy.
        static PRESET: [(http::HeaderName, http::HeaderValue); 1] = [(
            http::HeaderName::from_static("x-request-id"),
            http::HeaderValue::from_static(""),
        )];
        let status = http::HeaderName::from_static("x-cache-status");
        for later in [4, 4, 5, 5] {
            let at = now + Duration::from_secs(later);
            let mut header = hit.response_header(at, Some(&status), &PRESET).unwrap();
            assert_eq!(header.headers.get("x-cache-status").unwrap(), "HIT");
            assert_eq!(header.headers.get("age").unwrap(), &later.to_string());
            assert_eq!(
                header.headers.get("date").unwrap(),
                &httpdate::fmt_http_date(at)
            );
            assert_eq!(header.headers.get_all("x-cache-status").iter().count(), 1);
            assert_eq!(header.headers.get("x-request-id").unwrap(), "");
            // Setting a preset header replaces its value (and does not touch the kept copy).
            header.insert_header("x-request-id", "r1").unwrap();
            assert_eq!(header.headers.get_all("x-request-id").iter().count(), 1);
        }
        // The prepared head is the same header without the presets, made with it.
        let at = now + Duration::from_secs(5);
        let prepared = hit
            .prepared_head(at, Some(&status), &PRESET)
            .unwrap()
            .unwrap();
        let mut built = hit.response_header(at, Some(&status), &PRESET).unwrap();
        built.remove_header("x-request-id");
        assert_eq!(prepared.header().headers, built.headers);
        assert_eq!(prepared.content_length(), 5);
        let again = hit
            .prepared_head(at, Some(&status), &PRESET)
            .unwrap()
            .unwrap();
        assert!(Arc::ptr_eq(prepared.header(), again.header()));
        let later = hit.prepared_head(at + Duration::from_secs(1), Some(&status), &PRESET);
        assert!(!Arc::ptr_eq(
            prepared.header(),
            later.unwrap().unwrap().header()
        ));
        let other = http::HeaderName::from_static("x-edge-cache");
        let header = hit.response_header(now, Some(&other), &[]).unwrap();
        assert_eq!(header.headers.get("x-edge-cache").unwrap(), "HIT");
        assert!(header.headers.get("x-cache-status").is_none());
        assert!(header.headers.get("x-request-id").is_none());
        let again = s.fresh_hit(&fresh, now).expect("still fresh");
        let plain = again.response_header(now, None, &[]).unwrap();
        assert!(plain.headers.get("x-cache-status").is_none());
        assert!(s.fresh_hit(&fresh, now + Duration::from_secs(61)).is_none());

        let unknown_length = key("a.com", "/bare", "");
        write(s, &unknown_length, b"hello").await;
        assert!(s.fresh_hit(&unknown_length, now).is_none());
        let wrong_length = key("a.com", "/short", "");
        write_with(s, &wrong_length, &meta(None), b"hi").await;
        assert!(s.fresh_hit(&wrong_length, now).is_none());
        let varying = key("a.com", "/vary", "");
        write_with(s, &varying, &meta(Some([7; 16])), b"hello").await;
        assert!(s.fresh_hit(&varying, now).is_none());
        assert!(s.fresh_hit(&key("b.com", "/fresh", ""), now).is_none());
    }

    #[tokio::test]
    async fn fresh_variant_hits_find_their_variant_and_send_a_chunked_body_length() {
        let s = storage(1 << 20, Duration::from_secs(600));
        let now = SystemTime::now();
        let meta = |variance: HashBinary, written: SystemTime| {
            let mut header = ResponseHeader::build(200, None).unwrap();
            header.insert_header("vary", "Accept-Encoding").unwrap();
            header
                .insert_header("transfer-encoding", "chunked")
                .unwrap();
            let mut meta = CacheMeta::new(now + Duration::from_secs(60), written, 0, 0, header);
            meta.set_variance(variance);
            meta
        };
        let primary = key("a.com", "/page", "");
        let mut secondary = primary.clone();
        secondary.set_variance_key([2; 16]);
        write_with(s, &primary, &meta([1; 16], now), b"gzip bytes").await;
        write_with(s, &secondary, &meta([2; 16], now), b"br").await;
        let vary = |wanted: HashBinary| {
            move |header: &ResponseHeader| {
                assert!(header.headers.contains_key("vary"));
                Some(wanted)
            }
        };
        let first = s.fresh_variant_hit(&primary, now, vary([1; 16])).unwrap();
        assert_eq!(&first.body()[..], b"gzip bytes");
        let header = first.response_header(now, None, &[]).unwrap();
        assert_eq!(header.headers.get("content-length").unwrap(), "10");
        assert!(header.headers.get("transfer-encoding").is_none());
        let second = s.fresh_variant_hit(&primary, now, vary([2; 16])).unwrap();
        assert_eq!(&second.body()[..], b"br");
        assert!(s.fresh_variant_hit(&primary, now, vary([3; 16])).is_none());
        assert!(s.fresh_variant_hit(&primary, now, |_| None).is_none());
        // A variant older than its primary is void, as pingora-cache has it.
        let later = now + Duration::from_secs(1);
        write_with(s, &primary, &meta([1; 16], later), b"gzip bytes").await;
        assert!(s.fresh_variant_hit(&primary, now, vary([2; 16])).is_none());
    }

    #[test]
    fn detached_headers_keep_status_spelling_order_and_reason() {
        let wire = |h: &ResponseHeader| {
            let mut buf = Vec::new();
            h.header_to_h1_wire(&mut buf);
            (
                h.status,
                h.version,
                h.get_reason_phrase().map(str::to_owned),
                buf,
            )
        };
        let mut header = ResponseHeader::build(203, None).unwrap();
        header.append_header("ETag", "\"v1\"").unwrap();
        header.append_header("set-COOKIE", "a=1").unwrap();
        header.append_header("Set-Cookie", "b=2").unwrap();
        header.append_header("x-Custom", "é".as_bytes()).unwrap();
        header.set_reason_phrase(Some("Fine")).unwrap();
        assert_eq!(wire(&detached(&header)), wire(&header));
        let mut plain = ResponseHeader::build_no_case(404, None).unwrap();
        plain.append_header("content-length", "0").unwrap();
        assert_eq!(wire(&detached(&plain)), wire(&plain));
    }

    fn meta_of_length(length: usize) -> CacheMeta {
        let mut header = ResponseHeader::build(200, None).unwrap();
        header.insert_header("content-length", length).unwrap();
        let now = SystemTime::now();
        CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header)
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn large_bodies_round_trip_in_pages_and_small_ones_on_the_heap() {
        use crate::cache::body::in_read_only_pages;
        let s = storage(1 << 20, Duration::from_secs(600));
        let span = Span::inactive().handle();
        let body: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
        let large = key("a.com", "/large", "");
        let meta = meta_of_length(body.len());
        let mut miss = s.get_miss_handler(&large, &meta, &span).await.unwrap();
        for chunk in body.chunks(64 * 1024) {
            let chunk = Bytes::copy_from_slice(chunk);
            miss.write_body(chunk, false).await.unwrap();
        }
        miss.write_body(Bytes::new(), true).await.unwrap();
        miss.finish().await.unwrap();
        let (_, mut hit) = s.lookup(&large, &span).await.unwrap().unwrap();
        let read = hit.read_body().await.unwrap().unwrap();
        assert_eq!(&read[..], &body[..]);
        assert!(in_read_only_pages(&read));
        let fresh = s.fresh_hit(&large, SystemTime::now()).unwrap();
        assert!(in_read_only_pages(&fresh.body()));

        let small = key("a.com", "/small", "");
        write(s, &small, b"hello").await;
        let (_, mut hit) = s.lookup(&small, &span).await.unwrap().unwrap();
        let read = hit.read_body().await.unwrap().unwrap();
        assert_eq!(&read[..], b"hello");
        assert!(!in_read_only_pages(&read));
    }

    #[tokio::test]
    async fn fills_reserve_the_declared_length_up_to_the_largest_object() {
        let s = MemoryStorage::new(1 << 20, Duration::from_secs(600)).with_max_object_size(4096);
        let s: &'static MemoryStorage = Box::leak(Box::new(s));
        let span = Span::inactive().handle();
        let capacity = |k: &CacheKey| s.fills.read()[&k.combined_bin()].body.read().capacity();
        let (declared, huge) = (key("a.com", "/d", ""), key("a.com", "/h", ""));
        let _first = s
            .get_miss_handler(&declared, &meta_of_length(3000), &span)
            .await;
        let _second = s
            .get_miss_handler(&huge, &meta_of_length(1 << 30), &span)
            .await;
        assert_eq!(capacity(&declared), 3000);
        assert_eq!(capacity(&huge), 4096);
    }

    #[tokio::test]
    async fn readers_stream_an_entry_being_written() {
        let s = storage(1 << 20, Duration::from_secs(600));
        let k = key("a.com", "/big", "");
        let span = Span::inactive().handle();
        let mut miss = s.get_miss_handler(&k, &meta(), &span).await.unwrap();
        miss.write_body(Bytes::from_static(b"part1"), false)
            .await
            .unwrap();
        let (_, mut hit) = s.lookup(&k, &span).await.unwrap().unwrap();
        assert_eq!(
            hit.read_body().await.unwrap().as_deref(),
            Some(&b"part1"[..])
        );
        let reader = tokio::spawn(async move {
            let mut rest = Vec::new();
            while let Some(chunk) = hit.read_body().await.unwrap() {
                rest.extend_from_slice(&chunk);
            }
            rest
        });
        miss.write_body(Bytes::from_static(b"part2"), true)
            .await
            .unwrap();
        miss.finish().await.unwrap();
        assert_eq!(reader.await.unwrap(), b"part2");
        assert_eq!(read(s, &k).await.as_deref(), Some(&b"part1part2"[..]));
    }

    /// Without the cache lock, two misses of one key are written at once; each writer's
    /// client streams its own fill (Pingora panics if it finds none).
    #[tokio::test]
    async fn overlapping_writers_of_one_key_each_stream_their_own_fill() {
        let s = storage(1 << 20, Duration::from_secs(600));
        let k = key("a.com", "/twice", "");
        let span = Span::inactive().handle();
        let mut first = s.get_miss_handler(&k, &meta(), &span).await.unwrap();
        let mut second = s.get_miss_handler(&k, &meta(), &span).await.unwrap();
        for (miss, body) in [(&mut first, "one"), (&mut second, "two")] {
            miss.write_body(Bytes::from_static(body.as_bytes()), false)
                .await
                .unwrap();
            let (_, mut own) = s
                .lookup_streaming_write(&k, miss.streaming_write_tag(), &span)
                .await
                .unwrap()
                .expect("the writer's own fill");
            assert_eq!(
                own.read_body().await.unwrap().as_deref(),
                Some(body.as_bytes())
            );
        }
        let first_tag = first.streaming_write_tag().unwrap().to_vec();
        first.write_body(Bytes::new(), true).await.unwrap();
        first.finish().await.unwrap();
        second.write_body(Bytes::new(), true).await.unwrap();
        second.finish().await.unwrap();
        assert_eq!(
            read(s, &k).await.as_deref(),
            Some(&b"two"[..]),
            "the later fill wins"
        );
        let gone = s
            .lookup_streaming_write(&k, Some(&first_tag), &span)
            .await
            .unwrap();
        assert!(gone.is_none(), "a finished writer is forgotten");
        assert!(s.writing.read().is_empty());
    }

    #[tokio::test]
    async fn abandoned_write_is_never_served() {
        let s = storage(1 << 20, Duration::from_secs(600));
        let k = key("a.com", "/torn", "");
        let span = Span::inactive().handle();
        let mut miss = s.get_miss_handler(&k, &meta(), &span).await.unwrap();
        miss.write_body(Bytes::from_static(b"half"), false)
            .await
            .unwrap();
        drop(miss);
        assert!(read(s, &k).await.is_none());
    }

    #[tokio::test]
    async fn purge_by_url_and_by_host() {
        let s = storage(1 << 20, Duration::from_secs(600));
        let a1 = key("a.com", "/p", "v=1");
        let a2 = key("a.com", "/p", "v=2");
        let a3 = key("a.com", "/q", "");
        let b1 = key("b.com", "/p", "v=1");
        for k in [&a1, &a2, &a3, &b1] {
            write(s, k, b"x").await;
        }
        assert_eq!(
            s.purge_matching(|t| &*t.host == "a.com" && &*t.path == "/p"),
            2
        );
        assert!(read(s, &a1).await.is_none() && read(s, &a2).await.is_none());
        assert!(read(s, &a3).await.is_some() && read(s, &b1).await.is_some());
        assert_eq!(s.purge_matching(|t| &*t.host == "a.com"), 1);
        assert!(read(s, &b1).await.is_some());
        assert_eq!(s.len(), 1);
    }

    #[tokio::test]
    async fn purge_during_a_write_wins() {
        let s = storage(1 << 20, Duration::from_secs(600));
        let k = key("a.com", "/p", "");
        let span = Span::inactive().handle();
        let mut miss = s.get_miss_handler(&k, &meta(), &span).await.unwrap();
        miss.write_body(Bytes::from_static(b"old"), true)
            .await
            .unwrap();
        s.purge_matching(|t| &*t.host == "a.com");
        miss.finish().await.unwrap();
        assert!(read(s, &k).await.is_none());
    }

    #[tokio::test]
    async fn inactive_entries_are_dropped() {
        let mut s = MemoryStorage::new(1 << 20, Duration::from_secs(5));
        // Pretend the storage has been up for a minute, so entries can look old.
        s.epoch = Instant::now()
            .checked_sub(Duration::from_secs(60))
            .unwrap_or(s.epoch);
        let s: &'static MemoryStorage = Box::leak(Box::new(s));
        let old = key("a.com", "/old", "");
        let recent = key("a.com", "/recent", "");
        write(s, &old, b"x").await;
        write(s, &recent, b"y").await;
        s.entries.read()[&old.combined_bin()]
            .last_access
            .store(0, Ordering::Relaxed);
        assert!(
            read(s, &old).await.is_none(),
            "unread for 60s > inactive 5s"
        );
        assert!(read(s, &recent).await.is_some());
        assert_eq!(s.len(), 1);
    }

    /// Drives the storage the way pingora-cache does: admit each finished write to the
    /// eviction manager, purge what it evicts.
    #[tokio::test]
    async fn memory_bound_holds_after_writing_three_times_the_limit() {
        let max = 64 * 1024;
        let s = storage(max, Duration::from_secs(600));
        let span = Span::inactive().handle();
        let body = vec![7u8; 4096];
        for i in 0..(3 * max / body.len()) {
            let k = key("a.com", &format!("/{i}"), "");
            let weight = write(s, &k, &body).await;
            let entry = CacheEntryKey::key_only(k.to_compact());
            let evicted = s.eviction().admit(entry, weight, SystemTime::now());
            for victim in evicted {
                s.purge(PurgeTarget::Exact(&victim), PurgeType::Eviction, &span)
                    .await
                    .unwrap();
            }
        }
        assert!(s.used_bytes() <= max, "{} > {max}", s.used_bytes());
        // The LRU is sharded (approximate across shards), so which entries survive is not
        // fixed; that the cache is still filled close to its bound is.
        assert!(s.used_bytes() > max / 2, "{} bytes kept", s.used_bytes());
    }
}
