//! Host -> site routing: exact names in a hash map, `*.suffix` wildcards by label suffix.

use std::sync::Arc;

/// Hashed with foldhash, several times cheaper than SipHash on a host name, once per request
/// (and once per label for wildcards). Requests only look names up, never add them, so a
/// client choosing its `Host` cannot make the table degrade.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use super::Site;

/// Finds the site for a normalised host: exact names in O(1), then the longest matching
/// `*.suffix` wildcard (one lookup per label of the host).
#[derive(Debug, Default)]
pub(crate) struct HostRouter {
    exact: HashMap<String, Arc<Site>>,
    /// Keyed by the suffix including its leading dot: `*.example.com` -> `.example.com`.
    wildcard: HashMap<String, Arc<Site>>,
}

impl HostRouter {
    /// Adds a host pattern; returns the site already holding it, if any.
    pub(crate) fn insert(&mut self, pattern: &str, site: Arc<Site>) -> Option<Arc<Site>> {
        match pattern.strip_prefix('*') {
            Some(suffix) => self.wildcard.insert(suffix.to_string(), site),
            None => self.exact.insert(pattern.to_string(), site),
        }
    }

    /// The site serving `host` (already normalised), if any.
    pub(crate) fn find(&self, host: &str) -> Option<&Arc<Site>> {
        if let Some(site) = self.exact.get(host) {
            return Some(site);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        host.match_indices('.')
            .find_map(|(dot, _)| self.wildcard.get(&host[dot..]))
    }

    /// Every site, once each, in no particular order.
    pub(crate) fn sites(&self) -> impl Iterator<Item = &Arc<Site>> {
        let mut seen: Vec<&Arc<Site>> = Vec::new();
        for site in self.exact.values().chain(self.wildcard.values()) {
            if !seen.iter().any(|s| Arc::ptr_eq(s, site)) {
                seen.push(site);
            }
        }
        seen.into_iter()
    }
}
