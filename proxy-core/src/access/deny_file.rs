//! [`DenyList`]: a deny list backed by a file and reloaded when the file changes.
//!
//! A background thread polls the file's metadata; on a change it parses the file and swaps
//! the new set in atomically, so requests never wait and never see a half-read list. The
//! thread holds only a weak reference and ends once the config that owns the list is gone.

use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use super::ip_set::{parse_ip_list, IpSet};

/// How often the file's metadata is checked.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What identifies a version of the file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileStamp {
    Missing,
    Present {
        modified: Option<SystemTime>,
        len: u64,
    },
}

/// A deny list read from a file.
#[derive(Debug)]
pub struct DenyList {
    path: PathBuf,
    set: ArcSwap<IpSet>,
}

impl DenyList {
    /// Reads `path` now (a missing file is an empty list and a warning) and starts watching
    /// it for changes.
    pub fn watch(path: PathBuf) -> Arc<Self> {
        let list = Arc::new(Self {
            set: ArcSwap::from_pointee(IpSet::default()),
            path,
        });
        let stamp = list.reload();
        let weak = Arc::downgrade(&list);
        let spawned = std::thread::Builder::new()
            .name("deny-list-watch".into())
            .spawn(move || watch_loop(weak, stamp));
        if let Err(e) = spawned {
            tracing::warn!(path = %list.path.display(), error = %e, "cannot watch deny list; changes need a restart");
        }
        list
    }

    /// Whether `ip` is denied.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        self.set.load().contains(ip)
    }

    /// Entries currently loaded.
    pub fn len(&self) -> usize {
        self.set.load().len()
    }

    /// Whether the list is currently empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file this list is read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file and swaps the new set in; returns the stamp of what was read.
    fn reload(&self) -> FileStamp {
        let stamp = stamp(&self.path);
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "deny list unreadable; treating it as empty");
                self.set.store(Arc::new(IpSet::default()));
                return stamp;
            }
        };
        let (set, warnings) = parse_ip_list(&text);
        for w in &warnings {
            tracing::warn!(
                "deny list {}:{}: line skipped: {}",
                self.path.display(),
                w.line,
                w.message
            );
        }
        tracing::info!(path = %self.path.display(), entries = set.len(), "deny list loaded");
        self.set.store(Arc::new(set));
        stamp
    }
}

fn stamp(path: &Path) -> FileStamp {
    match std::fs::metadata(path) {
        Ok(meta) => FileStamp::Present {
            modified: meta.modified().ok(),
            len: meta.len(),
        },
        Err(_) => FileStamp::Missing,
    }
}

fn watch_loop(list: Weak<DenyList>, mut last: FileStamp) {
    loop {
        std::thread::sleep(POLL_INTERVAL);
        let Some(list) = list.upgrade() else { return };
        if stamp(&list.path) != last {
            last = list.reload();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_empty_and_later_creation_is_picked_up() {
        let dir = tempfile_dir();
        let path = dir.join("deny.txt");
        let list = DenyList::watch(path.clone());
        assert!(list.is_empty());
        std::fs::write(&path, "192.0.2.1\n").unwrap();
        let ip = "192.0.2.1".parse().unwrap();
        let picked_up = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            list.contains(ip)
        });
        assert!(picked_up, "the new file was not loaded");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "deny-list-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
