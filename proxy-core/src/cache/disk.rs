//! [`DiskTier`]: the cache's second tier, so entries survive a restart.
//!
//! Every complete in-memory entry is also written to one file (named by its key hash),
//! atomically (a temporary file renamed into place), with a checksum over the whole file.
//! A memory miss looks on disk; a file that is short, mangled or fails its checksum is
//! deleted and treated as a miss, never served. The directory is bounded by bytes (oldest
//! files deleted first). Any disk error only costs caching: the request is proxied as usual.

use blake2::digest::consts::U16;
use blake2::{Blake2b, Digest};
use bytes::Bytes;
use parking_lot::Mutex;
use pingora::cache::key::HashBinary;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::storage::PurgeTags;

/// Identifies our files (and their format version). Version 2: files are named by the
/// BLAKE3-based key hash (`CacheKeyPolicy::lookup_key`); version 1's, named by BLAKE2b, would
/// never be found again, so a start removes them as foreign.
const MAGIC: &[u8; 8] = b"EDGEC02\n";
const CHECKSUM_LEN: usize = 16;
const FILE_SUFFIX: &str = ".entry";

type Checksum = Blake2b<U16>;

/// One stored response as written to disk.
pub struct DiskRecord {
    /// pingora-cache's serialised internal metadata.
    pub internal: Vec<u8>,
    /// pingora-cache's serialised response header.
    pub header: Vec<u8>,
    /// The body.
    pub body: Bytes,
    /// Host and path, for purges.
    pub tags: Option<PurgeTags>,
}

struct DiskFile {
    size: u64,
    seq: u64,
    tags: Option<PurgeTags>,
}

#[derive(Default)]
struct DiskIndex {
    files: HashMap<HashBinary, DiskFile>,
    /// Write order, oldest first: what goes when the directory is over its bound.
    by_age: BTreeMap<u64, HashBinary>,
    total: u64,
    next_seq: u64,
}

impl DiskIndex {
    fn insert(&mut self, hash: HashBinary, size: u64, tags: Option<PurgeTags>) {
        self.remove(&hash);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_age.insert(seq, hash);
        self.total += size;
        self.files.insert(hash, DiskFile { size, seq, tags });
    }

    fn remove(&mut self, hash: &HashBinary) -> bool {
        let Some(file) = self.files.remove(hash) else {
            return false;
        };
        self.by_age.remove(&file.seq);
        self.total = self.total.saturating_sub(file.size);
        true
    }

    /// Oldest files to delete so the total fits `max_size`.
    fn over_limit(&mut self, max_size: u64) -> Vec<HashBinary> {
        let mut victims = Vec::new();
        while self.total > max_size {
            let Some((_, hash)) = self.by_age.pop_first() else {
                break;
            };
            if let Some(file) = self.files.remove(&hash) {
                self.total = self.total.saturating_sub(file.size);
            }
            victims.push(hash);
        }
        victims
    }
}

/// The on-disk tier: a directory of entry files, bounded by bytes.
pub struct DiskTier {
    dir: PathBuf,
    max_size: u64,
    index: Mutex<DiskIndex>,
}

impl DiskTier {
    /// Opens (creating it if needed) the cache directory and indexes the files already
    /// there; unreadable or foreign files are removed.
    pub fn open(dir: &Path, max_size: u64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let tier = Self {
            dir: dir.to_path_buf(),
            max_size,
            index: Mutex::new(DiskIndex::default()),
        };
        tier.scan()?;
        Ok(tier)
    }

    /// Bytes of entry files on disk.
    pub fn used_bytes(&self) -> u64 {
        self.index.lock().total
    }

    fn scan(&self) -> io::Result<()> {
        let mut found = Vec::new();
        for item in std::fs::read_dir(&self.dir)? {
            let path = item?.path();
            let Some(hash) = hash_of(&path) else {
                // Leftover temporary files of interrupted writes.
                if path.extension().is_some_and(|e| e == "tmp") {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            };
            let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
            match std::fs::read(&path).ok().and_then(|b| decode(&b).ok()) {
                Some(record) => found.push((modified, hash, record_size(&record), record.tags)),
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        // Oldest first, so the write order (and what goes first) survives the restart.
        found.sort_by_key(|(modified, ..)| *modified);
        let mut index = self.index.lock();
        for (_, hash, size, tags) in found {
            index.insert(hash, size, tags);
        }
        let victims = index.over_limit(self.max_size);
        drop(index);
        self.delete_files(&victims);
        Ok(())
    }

    fn path(&self, hash: &HashBinary) -> PathBuf {
        let mut name = String::with_capacity(hash.len() * 2 + FILE_SUFFIX.len());
        for byte in hash {
            name.push_str(&format!("{byte:02x}"));
        }
        name.push_str(FILE_SUFFIX);
        self.dir.join(name)
    }

    /// The record for `hash`, if a sound file holds it. A damaged file is deleted.
    pub async fn read(&self, hash: &HashBinary) -> Option<DiskRecord> {
        if !self.index.lock().files.contains_key(hash) {
            return None;
        }
        let path = self.path(hash);
        let decoded = match tokio::fs::read(&path).await {
            Ok(bytes) => decode(&bytes),
            Err(e) => Err(format!("read: {e}")),
        };
        match decoded {
            Ok(record) => Some(record),
            Err(why) => {
                tracing::warn!(file = %path.display(), %why, "dropping a damaged cache file");
                self.remove(hash);
                None
            }
        }
    }

    /// Writes `record` in the background; failures are logged and cost only caching.
    pub fn write(self: &Arc<Self>, hash: HashBinary, record: DiskRecord) {
        let tier = self.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn_blocking(move || {
            if let Err(e) = tier.write_now(hash, &record) {
                tracing::warn!(error = %e, "cache disk write failed; entry kept in memory only");
            }
        });
    }

    fn write_now(&self, hash: HashBinary, record: &DiskRecord) -> io::Result<()> {
        let size = record_size(record);
        if size > self.max_size {
            return Ok(());
        }
        let path = self.path(&hash);
        let tmp = path.with_extension("tmp");
        let written =
            std::fs::write(&tmp, encode(record)).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let victims = {
            let mut index = self.index.lock();
            index.insert(hash, size, record.tags.clone());
            index.over_limit(self.max_size)
        };
        self.delete_files(&victims);
        Ok(())
    }

    /// Deletes the file for `hash`.
    pub fn remove(&self, hash: &HashBinary) {
        if self.index.lock().remove(hash) {
            let _ = std::fs::remove_file(self.path(hash));
        }
    }

    /// Deletes every file whose tags match; returns their key hashes.
    pub fn remove_matching(&self, matches: impl Fn(&PurgeTags) -> bool) -> Vec<HashBinary> {
        let victims: Vec<HashBinary> = {
            let mut index = self.index.lock();
            let hashes: Vec<HashBinary> = index
                .files
                .iter()
                .filter(|(_, f)| f.tags.as_ref().is_some_and(&matches))
                .map(|(h, _)| *h)
                .collect();
            hashes.into_iter().filter(|h| index.remove(h)).collect()
        };
        self.delete_files(&victims);
        victims
    }

    fn delete_files(&self, hashes: &[HashBinary]) {
        for hash in hashes {
            let _ = std::fs::remove_file(self.path(hash));
        }
    }
}

fn hash_of(path: &Path) -> Option<HashBinary> {
    let name = path.file_name()?.to_str()?.strip_suffix(FILE_SUFFIX)?;
    let mut hash = HashBinary::default();
    if name.len() != hash.len() * 2 {
        return None;
    }
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(name.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(hash)
}

fn record_size(record: &DiskRecord) -> u64 {
    (record.internal.len() + record.header.len() + record.body.len() + 128) as u64
}

fn encode(record: &DiskRecord) -> Vec<u8> {
    let (host, path) = record
        .tags
        .as_ref()
        .map_or(("", ""), |t| (&*t.host, &*t.path));
    let mut out = Vec::with_capacity(record_size(record) as usize);
    out.extend_from_slice(MAGIC);
    for part in [
        host.as_bytes(),
        path.as_bytes(),
        &record.internal,
        &record.header,
        &record.body,
    ] {
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(part);
    }
    let checksum = Checksum::digest(&out);
    out.extend_from_slice(&checksum);
    out
}

fn decode(bytes: &[u8]) -> Result<DiskRecord, String> {
    let body_end = bytes
        .len()
        .checked_sub(CHECKSUM_LEN)
        .filter(|end| *end >= MAGIC.len())
        .ok_or("file too short")?;
    let (content, checksum) = bytes.split_at(body_end);
    if Checksum::digest(content).as_slice() != checksum {
        return Err("checksum mismatch".into());
    }
    if !content.starts_with(MAGIC) {
        return Err("not a cache entry file".into());
    }
    let mut rest = &content[MAGIC.len()..];
    let mut next = || -> Result<&[u8], String> {
        let len_bytes: [u8; 8] = rest
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or("truncated length")?;
        let len = usize::try_from(u64::from_le_bytes(len_bytes)).map_err(|e| e.to_string())?;
        let part = rest.get(8..8 + len).ok_or("truncated section")?;
        rest = &rest[8 + len..];
        Ok(part)
    };
    let host = String::from_utf8_lossy(next()?).into_owned();
    let path = String::from_utf8_lossy(next()?).into_owned();
    let internal = next()?.to_vec();
    let header = next()?.to_vec();
    let body = Bytes::copy_from_slice(next()?);
    let tags = (!host.is_empty()).then(|| PurgeTags {
        host: host.into(),
        path: path.into(),
    });
    Ok(DiskRecord {
        internal,
        header,
        body,
        tags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(body: &[u8]) -> DiskRecord {
        DiskRecord {
            internal: b"internal".to_vec(),
            header: b"header".to_vec(),
            body: Bytes::copy_from_slice(body),
            tags: Some(PurgeTags {
                host: "a.com".into(),
                path: "/p".into(),
            }),
        }
    }

    #[test]
    fn round_trip_and_every_corruption_is_detected() {
        let encoded = encode(&record(b"hello"));
        let decoded = decode(&encoded).unwrap();
        assert_eq!(&decoded.body[..], b"hello");
        assert_eq!(decoded.tags.unwrap().path.as_ref(), "/p");
        for cut in [0, 5, encoded.len() / 2, encoded.len() - 1] {
            assert!(decode(&encoded[..cut]).is_err(), "torn at {cut}");
        }
        for flip in [0, 10, encoded.len() / 2, encoded.len() - 1] {
            let mut bad = encoded.clone();
            bad[flip] ^= 0x40;
            assert!(decode(&bad).is_err(), "flipped at {flip}");
        }
    }

    #[tokio::test]
    async fn survives_reopen_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let size = record_size(&record(&[0; 1000]));
        let tier = Arc::new(DiskTier::open(dir.path(), size * 3).unwrap());
        for i in 0..5u8 {
            tier.write_now([i; 16], &record(&[i; 1000])).unwrap();
        }
        assert!(tier.used_bytes() <= size * 3);
        assert!(tier.read(&[0; 16]).await.is_none(), "oldest deleted");
        drop(tier);
        let reopened = DiskTier::open(dir.path(), size * 3).unwrap();
        let kept = reopened.read(&[4; 16]).await.unwrap();
        assert_eq!(&kept.body[..], &[4u8; 1000][..]);
        assert_eq!(reopened.remove_matching(|t| &*t.host == "a.com").len(), 3);
        assert!(reopened.read(&[4; 16]).await.is_none());
    }

    #[tokio::test]
    async fn version_one_files_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
        tier.write_now([3; 16], &record(b"body")).unwrap();
        let path = tier.path(&[3; 16]);
        drop(tier);
        // The same entry as version 1 wrote it: its own magic, a valid checksum.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - CHECKSUM_LEN);
        bytes[..MAGIC.len()].copy_from_slice(b"EDGEC01\n");
        let checksum = Checksum::digest(&bytes);
        bytes.extend_from_slice(&checksum);
        std::fs::write(&path, bytes).unwrap();
        let reopened = DiskTier::open(dir.path(), 1 << 20).unwrap();
        assert!(!path.exists(), "a version 1 file is removed");
        assert_eq!(reopened.used_bytes(), 0);
        assert!(reopened.read(&[3; 16]).await.is_none());
    }

    #[tokio::test]
    async fn damaged_file_is_a_miss_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
        tier.write_now([7; 16], &record(b"body")).unwrap();
        let path = tier.path(&[7; 16]);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(tier.read(&[7; 16]).await.is_none());
        assert!(!path.exists());
    }
}
