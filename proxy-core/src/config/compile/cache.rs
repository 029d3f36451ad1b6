//! `[cache]` (the storage) and `cache = { ... }` on sites and locations (the policies).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::Compiler;
use crate::cache::{
    Bypass, CacheKeyPolicy, CachePolicy, CacheSettings, DiskSettings, Freshness, QueryKey,
};
use crate::config::error::KeyPath;
use crate::config::file::{
    CachePolicySection, CacheSection, QueryKeySection, DEFAULT_BACKGROUND_UPDATE,
    DEFAULT_BYPASS_HEADERS, DEFAULT_CACHE_DISK_MAX_SIZE, DEFAULT_CACHE_ENABLED,
    DEFAULT_CACHE_INACTIVE, DEFAULT_CACHE_LOCK, DEFAULT_CACHE_LOCK_TIMEOUT,
    DEFAULT_CACHE_MAX_OBJECT_SIZE, DEFAULT_CACHE_MAX_SIZE, DEFAULT_IGNORE_CACHE_CONTROL,
    DEFAULT_IGNORE_SET_COOKIE, DEFAULT_KEY_HOST, DEFAULT_KEY_QUERY, DEFAULT_KEY_SCHEME,
    DEFAULT_STALE_IF_ERROR, DEFAULT_STALE_IF_ERROR_STATUSES, DEFAULT_STALE_WHILE_REVALIDATE,
    DEFAULT_STATUS_HEADER, DEFAULT_VALID,
};

impl Compiler<'_> {
    /// `[cache]`; an absent section means the defaults (the cache exists whether or not any
    /// location uses it, so a reload can start caching without a restart).
    pub(super) fn cache_settings(
        &mut self,
        section: Option<&CacheSection>,
        key: &KeyPath,
    ) -> CacheSettings {
        let empty = CacheSection::default();
        let s = section.unwrap_or(&empty);
        let max_size = self.memory_size(
            s.max_size.as_deref(),
            DEFAULT_CACHE_MAX_SIZE,
            key.key("max_size"),
        );
        if max_size == 0 {
            self.problem(key.key("max_size"), "max_size must be larger than 0");
        }
        let max_object_size = self.memory_size(
            s.max_object_size.as_deref(),
            DEFAULT_CACHE_MAX_OBJECT_SIZE,
            key.key("max_object_size"),
        );
        let disk = s.disk.as_ref().map(|d| DiskSettings {
            path: self.path(&d.path),
            max_size: self.size(
                d.max_size.as_deref(),
                DEFAULT_CACHE_DISK_MAX_SIZE,
                key.key("disk").key("max_size"),
            ),
        });
        CacheSettings {
            max_size,
            max_object_size: max_object_size.min(max_size),
            inactive: self.duration(
                s.inactive.as_deref(),
                DEFAULT_CACHE_INACTIVE,
                key.key("inactive"),
            ),
            lock_timeout: self.duration(
                s.lock_timeout.as_deref(),
                DEFAULT_CACHE_LOCK_TIMEOUT,
                key.key("lock_timeout"),
            ),
            disk,
        }
    }

    /// Checks a site's `cache` table on its own, so its problems are reported once, at its
    /// key, however many locations inherit it.
    pub(super) fn check_site_policy(&mut self, site: Option<&CachePolicySection>, key: &KeyPath) {
        if let Some(section) = site {
            self.policy(section, key);
        }
    }

    /// A location's cache policy: the location's keys win over the site's. `None` when
    /// neither has a `cache` table, or the merged `enabled` is false. Problems of the
    /// location's own table are reported at `key`; the site's by [`Self::check_site_policy`].
    pub(super) fn location_policy(
        &mut self,
        site: Option<&CachePolicySection>,
        location: Option<&CachePolicySection>,
        key: &KeyPath,
    ) -> Option<Arc<CachePolicy>> {
        if let Some(section) = location {
            self.policy(section, key);
        }
        let merged = match (site, location) {
            (Some(site), location) => merge(site.clone(), location.cloned()),
            (None, location) => location.cloned()?,
        };
        if !merged.enabled.unwrap_or(DEFAULT_CACHE_ENABLED) {
            return None;
        }
        // Both halves were checked above; compile the merge without reporting twice.
        let reported = std::mem::take(&mut self.problems);
        let policy = self.policy(&merged, key);
        self.problems = reported;
        Some(Arc::new(policy))
    }

    fn policy(&mut self, s: &CachePolicySection, key: &KeyPath) -> CachePolicy {
        let bypass_headers = match &s.bypass_headers {
            Some(names) => self.header_names(names, &key.key("bypass_headers")),
            None => self.header_names(DEFAULT_BYPASS_HEADERS, &key.key("bypass_headers")),
        };
        let bypass = Bypass {
            headers: bypass_headers,
            cookies: s.bypass_cookies.clone().unwrap_or_default(),
            query: s.bypass_query.clone().unwrap_or_default(),
        };
        let key_policy = CacheKeyPolicy {
            scheme: s.key_scheme.unwrap_or(DEFAULT_KEY_SCHEME),
            host: s.key_host.unwrap_or(DEFAULT_KEY_HOST),
            query: self.query(s.key_query.as_ref(), &key.key("key_query")),
            headers: self.header_names(
                s.key_headers.as_deref().unwrap_or_default(),
                &key.key("key_headers"),
            ),
        };
        let status_header = match s.status_header.as_deref().unwrap_or(DEFAULT_STATUS_HEADER) {
            "" => None,
            name => self.header_name(name, key.key("status_header")),
        };
        CachePolicy {
            key: key_policy,
            bypass,
            freshness: self.freshness(s, key),
            status_header,
            lock: s.lock.unwrap_or(DEFAULT_CACHE_LOCK),
            background_update: s.background_update.unwrap_or(DEFAULT_BACKGROUND_UPDATE),
        }
    }

    fn query(&mut self, q: Option<&QueryKeySection>, key: &KeyPath) -> QueryKey {
        let default = QueryKeySection::Mode(DEFAULT_KEY_QUERY.into());
        match q.unwrap_or(&default) {
            QueryKeySection::Mode(mode) => match mode.as_str() {
                "full" => QueryKey::Full,
                "none" => QueryKey::None,
                "sorted" => QueryKey::Sorted,
                other => {
                    self.problem(key.clone(), format!("unknown query mode `{other}`: expected \"full\", \"none\", \"sorted\" or a list of parameter names"));
                    QueryKey::Full
                }
            },
            QueryKeySection::Allow(names) => QueryKey::Allow(names.clone()),
        }
    }

    fn freshness(&mut self, s: &CachePolicySection, key: &KeyPath) -> Freshness {
        let default_valid: BTreeMap<String, String> = DEFAULT_VALID
            .iter()
            .map(|(status, ttl)| (status.to_string(), ttl.to_string()))
            .collect();
        let (valid, valid_any) = self.valid(
            s.valid.as_ref().unwrap_or(&default_valid),
            &key.key("valid"),
        );
        let statuses = key.key("stale_if_error_statuses");
        let stale_if_error_statuses = s
            .stale_if_error_statuses
            .clone()
            .unwrap_or_else(|| DEFAULT_STALE_IF_ERROR_STATUSES.to_vec());
        for (i, status) in stale_if_error_statuses.iter().enumerate() {
            if !(500..=599).contains(status) {
                self.problem(
                    statuses.index(i),
                    format!("{status} is not a server error status (500..599)"),
                );
            }
        }
        Freshness {
            valid,
            valid_any,
            stale_if_error_statuses,
            ignore_cache_control: s
                .ignore_cache_control
                .unwrap_or(DEFAULT_IGNORE_CACHE_CONTROL),
            ignore_set_cookie: s.ignore_set_cookie.unwrap_or(DEFAULT_IGNORE_SET_COOKIE),
            stale_while_revalidate: self.duration(
                s.stale_while_revalidate.as_deref(),
                DEFAULT_STALE_WHILE_REVALIDATE,
                key.key("stale_while_revalidate"),
            ),
            stale_if_error: self.duration(
                s.stale_if_error.as_deref(),
                DEFAULT_STALE_IF_ERROR,
                key.key("stale_if_error"),
            ),
        }
    }

    fn valid(
        &mut self,
        map: &BTreeMap<String, String>,
        key: &KeyPath,
    ) -> (HashMap<u16, Duration>, Option<Duration>) {
        let mut by_status = HashMap::new();
        let mut any = None;
        for (status, ttl) in map {
            let key = key.key(status);
            let ttl = self.duration(Some(ttl), "0s", key.clone());
            match status.parse::<u16>() {
                _ if status == "any" => any = Some(ttl),
                Ok(code) if (100..=599).contains(&code) => {
                    by_status.insert(code, ttl);
                }
                _ => self.problem(
                    key,
                    format!("`{status}` is not a status: expected 100..599 or \"any\""),
                ),
            }
        }
        (by_status, any)
    }
}

fn merge(site: CachePolicySection, loc: Option<CachePolicySection>) -> CachePolicySection {
    let Some(l) = loc else { return site };
    CachePolicySection {
        enabled: l.enabled.or(site.enabled),
        key_scheme: l.key_scheme.or(site.key_scheme),
        key_host: l.key_host.or(site.key_host),
        key_query: l.key_query.or(site.key_query),
        key_headers: l.key_headers.or(site.key_headers),
        valid: l.valid.or(site.valid),
        ignore_cache_control: l.ignore_cache_control.or(site.ignore_cache_control),
        ignore_set_cookie: l.ignore_set_cookie.or(site.ignore_set_cookie),
        bypass_headers: l.bypass_headers.or(site.bypass_headers),
        bypass_cookies: l.bypass_cookies.or(site.bypass_cookies),
        bypass_query: l.bypass_query.or(site.bypass_query),
        stale_while_revalidate: l.stale_while_revalidate.or(site.stale_while_revalidate),
        background_update: l.background_update.or(site.background_update),
        lock: l.lock.or(site.lock),
        stale_if_error: l.stale_if_error.or(site.stale_if_error),
        stale_if_error_statuses: l.stale_if_error_statuses.or(site.stale_if_error_statuses),
        status_header: l.status_header.or(site.status_header),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::CacheDiskSection;
    use crate::plugin::PluginRegistry;
    use std::path::Path;

    fn compiler<'a>(base_dir: &'a Path, plugins: &'a PluginRegistry) -> Compiler<'a> {
        Compiler {
            base_dir,
            plugins,
            problems: Default::default(),
            watched_lists: Default::default(),
            htpasswd_files: Vec::new(),
            forward_auths: Vec::new(),
        }
    }

    #[test]
    fn location_keys_win_over_site_keys() {
        let plugins = PluginRegistry::default();
        let mut c = compiler(Path::new("."), &plugins);
        let site = CachePolicySection {
            key_query: Some(QueryKeySection::Mode("none".into())),
            stale_if_error: Some("1m".into()),
            ..CachePolicySection::default()
        };
        let loc = CachePolicySection {
            stale_if_error: Some("5s".into()),
            ..CachePolicySection::default()
        };
        let root = KeyPath::root();
        let p = c.location_policy(Some(&site), Some(&loc), &root).unwrap();
        assert!(c.problems.is_empty());
        assert_eq!(p.key.query, QueryKey::None);
        assert_eq!(p.freshness.stale_if_error, Duration::from_secs(5));
        let off = CachePolicySection {
            enabled: Some(false),
            ..CachePolicySection::default()
        };
        assert!(c.location_policy(Some(&site), Some(&off), &root).is_none());
        assert!(c.location_policy(None, None, &root).is_none());
    }

    #[test]
    fn bad_values_are_reported() {
        let plugins = PluginRegistry::default();
        let base = Path::new("/etc/edge");
        let mut c = compiler(base, &plugins);
        let bad = CachePolicySection {
            key_query: Some(QueryKeySection::Mode("half".into())),
            valid: Some([("2OO".to_string(), "1d".to_string())].into()),
            ..CachePolicySection::default()
        };
        c.location_policy(None, Some(&bad), &KeyPath::root());
        assert!(!c.problems.is_empty());
        let disk = CacheSection {
            disk: Some(CacheDiskSection {
                path: "cache".into(),
                max_size: Some("2g".into()),
            }),
            ..CacheSection::default()
        };
        let settings = c.cache_settings(Some(&disk), &KeyPath::root());
        let disk = settings.disk.unwrap();
        assert_eq!(disk.path, base.join("cache"));
        assert_eq!(disk.max_size, 2 << 30);
    }

    #[test]
    fn toml_errors_name_line_and_key() {
        let text = "[cache]\nmax_size = \"lots\"\n\n[upstreams.docs]\naddress = \"docs.tail1.ts.net:80\"\n\n[sites.docs]\nhosts = [\"docs.example.com\"]\ncache = { key_query = \"half\" }\n[[sites.docs.locations]]\nmatch = \"/\"\nproxy = \"docs\"\ncache = { valid = { \"2OO\" = \"1d\" } }\n";
        let e = crate::config::errors(text);
        assert_eq!(e.lines().count(), 3, "{e}");
        assert!(
            e.contains("edge.toml:2: cache.max_size: invalid size"),
            "{e}"
        );
        assert!(
            e.contains("edge.toml:9: sites.docs.cache.key_query: unknown query mode `half`"),
            "{e}"
        );
        assert!(
            e.contains("sites.docs.locations[0].cache.valid.2OO: `2OO` is not a status"),
            "{e}"
        );
    }
}
