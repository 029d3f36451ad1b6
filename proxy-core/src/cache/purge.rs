//! Purges: the proxy-core API an admin endpoint calls. Purging is never reachable from the
//! public port; the admin listener authenticates the caller, then calls
//! [`EdgeCache::purge`] (or [`EdgeCache::purge_url`] / [`EdgeCache::purge_host`]).

use super::EdgeCache;
use crate::hostname::normalize_host;

/// What to purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeScope {
    /// Every entry of this host and path: all query strings, all `Vary` variants, GET and
    /// HEAD (they share entries).
    Url {
        /// The host, as a client would send it (case, port and trailing dot are ignored).
        host: String,
        /// The path; a query, if given, is ignored.
        path: String,
    },
    /// Everything cached for this host.
    Host(String),
}

impl EdgeCache {
    /// Removes what `scope` names; returns how many entries were removed.
    pub fn purge(&self, scope: &PurgeScope) -> usize {
        match scope {
            PurgeScope::Url { host, path } => self.purge_url(host, path),
            PurgeScope::Host(host) => self.purge_host(host),
        }
    }

    /// Removes every entry of `host` + `path` (query ignored); returns how many.
    pub fn purge_url(&self, host: &str, path: &str) -> usize {
        let host = canonical_host(host);
        let path = path.split('?').next().unwrap_or(path);
        self.storage()
            .purge_matching(|tags| *tags.host == *host && *tags.path == *path)
    }

    /// Removes every entry, of every host; returns how many. (A machine of a fleet that may
    /// have missed purges while away from Redis does this rather than serve what they meant.)
    pub fn purge_all(&self) -> usize {
        self.storage().purge_matching(|_| true)
    }

    /// Removes every entry of `host`; returns how many.
    pub fn purge_host(&self, host: &str) -> usize {
        let host = canonical_host(host);
        self.storage().purge_matching(|tags| *tags.host == *host)
    }
}

fn canonical_host(host: &str) -> String {
    match normalize_host(host.as_bytes()) {
        Ok(Some(normalized)) => normalized,
        _ => host.to_ascii_lowercase(),
    }
}
