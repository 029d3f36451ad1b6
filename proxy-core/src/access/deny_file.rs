//! [`DenyList`]: a deny list backed by a file and reloaded when the file changes.
//!
//! A list reads its file when it is created. Whoever runs the proxy calls
//! [`DenyList::refresh`] now and then (the edge services do, every
//! [`DenyList::POLL_INTERVAL`]): it compares the file's metadata and, on a change, parses the
//! file and swaps the new set in atomically, so requests never wait and never see a
//! half-read list.

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::ip_set::{parse_ip_list, IpSet};

/// What identifies a version of a file without reading it (also for htpasswd files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileStamp {
    Missing,
    Present {
        modified: Option<SystemTime>,
        len: u64,
    },
}

/// A deny list read from a file.
#[derive(Debug)]
pub(crate) struct DenyList {
    path: PathBuf,
    set: ArcSwap<IpSet>,
    /// What the set was read from.
    stamp: Mutex<FileStamp>,
}

impl DenyList {
    /// How often the edge services check deny-list files for changes.
    pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(500);

    /// Reads `path` now; a missing or unreadable file is an empty list and a warning (the
    /// program that writes it, such as fail2ban, may create it later).
    pub(crate) fn load(path: PathBuf) -> Self {
        let list = Self {
            set: ArcSwap::from_pointee(IpSet::default()),
            stamp: Mutex::new(FileStamp::Missing),
            path,
        };
        *list.stamp.lock() = list.reload();
        list
    }

    /// Reads the file again if it changed since it was last read; returns whether it did.
    pub(crate) fn refresh(&self) -> bool {
        let mut last = self.stamp.lock();
        if file_stamp(&self.path) == *last {
            return false;
        }
        *last = self.reload();
        true
    }

    /// Whether `ip` is denied.
    pub(crate) fn contains(&self, ip: std::net::IpAddr) -> bool {
        self.set.load().contains(ip)
    }

    /// Entries currently loaded.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.set.load().len()
    }

    /// Whether the list is currently empty.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the file and swaps the new set in; returns the stamp of what was read.
    fn reload(&self) -> FileStamp {
        let stamp = file_stamp(&self.path);
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

/// The stamp of the file at `path` now.
pub(crate) fn file_stamp(path: &Path) -> FileStamp {
    match std::fs::metadata(path) {
        Ok(meta) => FileStamp::Present {
            modified: meta.modified().ok(),
            len: meta.len(),
        },
        Err(_) => FileStamp::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_empty_and_later_creation_is_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deny.txt");
        let list = DenyList::load(path.clone());
        assert!(list.is_empty());
        assert!(!list.refresh(), "nothing changed");
        std::fs::write(&path, "192.0.2.1\n").unwrap();
        assert!(list.refresh());
        assert!(list.contains("192.0.2.1".parse().unwrap()));
        std::fs::write(&path, "192.0.2.2\n192.0.2.3\n").unwrap();
        assert!(list.refresh());
        assert_eq!(list.len(), 2);
        assert!(!list.contains("192.0.2.1".parse().unwrap()));
    }
}
