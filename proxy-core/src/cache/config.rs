//! `[cache]` and `cache = { ... }` sections -> [`CacheSettings`] and [`CachePolicy`], with
//! every problem reported at its key.

use http::HeaderName;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::policy::{Bypass, CacheKeyPolicy, CachePolicy, Freshness, QueryKey};
use super::{CacheSettings, DiskSettings};

/// Default bound of the disk tier.
const DEFAULT_DISK_MAX_SIZE: usize = 1 << 30;
use crate::config::error::{KeyPath, Problems};
use crate::config::file::{CachePolicySection, CacheSection, QueryKeySection};

/// Default name of the cache status response header.
pub const DEFAULT_STATUS_HEADER: &str = "x-cache-status";

/// Compiles `[cache]`.
pub(crate) fn compile_settings(
    section: Option<&CacheSection>,
    base_dir: &std::path::Path,
    key: &KeyPath,
    problems: &mut Problems,
) -> CacheSettings {
    let defaults = CacheSettings::default();
    let Some(s) = section else { return defaults };
    let mut c = Checker { problems };
    let settings = CacheSettings {
        max_size: c.size(
            s.max_size.as_deref(),
            defaults.max_size,
            key.key("max_size"),
        ),
        max_object_size: c.size(
            s.max_object_size.as_deref(),
            defaults.max_object_size,
            key.key("max_object_size"),
        ),
        inactive: c.duration(
            s.inactive.as_deref(),
            defaults.inactive,
            key.key("inactive"),
        ),
        lock_timeout: c.duration(
            s.lock_timeout.as_deref(),
            defaults.lock_timeout,
            key.key("lock_timeout"),
        ),
        disk: s.disk.as_ref().map(|d| DiskSettings {
            path: base_dir.join(&d.path),
            max_size: c.size(
                d.max_size.as_deref(),
                DEFAULT_DISK_MAX_SIZE,
                key.key("disk").key("max_size"),
            ) as u64,
        }),
    };
    if settings.max_size == 0 {
        c.problem(key.key("max_size"), "max_size must be larger than 0");
    }
    CacheSettings {
        max_object_size: settings.max_object_size.min(settings.max_size),
        ..settings
    }
}

/// Checks a site's `cache` table on its own, so its problems are reported once, at its key.
pub(crate) fn check_site_policy(
    site: Option<&CachePolicySection>,
    key: &KeyPath,
    problems: &mut Problems,
) {
    if let Some(section) = site {
        Checker { problems }.policy(section, key);
    }
}

/// Compiles a location's cache policy: the location's keys win over the site's. `None`
/// when neither has a `cache` table, or the merged `enabled` is false. Problems of the
/// location's own table are reported at `key`; the site's are reported by
/// [`check_site_policy`].
pub(crate) fn compile_policy(
    site: Option<&CachePolicySection>,
    location: Option<&CachePolicySection>,
    key: &KeyPath,
    problems: &mut Problems,
) -> Option<Arc<CachePolicy>> {
    if let Some(section) = location {
        Checker {
            problems: &mut *problems,
        }
        .policy(section, key);
    }
    let merged = match (site, location) {
        (Some(site), location) => merge(site.clone(), location.cloned()),
        (None, location) => location.cloned()?,
    };
    if merged.enabled == Some(false) {
        return None;
    }
    // Both halves were checked above; the merge cannot add problems of its own.
    let mut scratch = Problems::default();
    let mut c = Checker {
        problems: &mut scratch,
    };
    Some(Arc::new(c.policy(&merged, key)))
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
        stale_if_error: l.stale_if_error.or(site.stale_if_error),
        stale_if_error_statuses: l.stale_if_error_statuses.or(site.stale_if_error_statuses),
        status_header: l.status_header.or(site.status_header),
    }
}

struct Checker<'a> {
    problems: &'a mut Problems,
}

impl Checker<'_> {
    fn problem(&mut self, key: KeyPath, message: impl Into<String>) {
        self.problems.push(key, message);
    }

    fn size(&mut self, text: Option<&str>, default: usize, key: KeyPath) -> usize {
        let Some(size) = self.problems.size(text, key.clone()) else {
            return default;
        };
        usize::try_from(size).unwrap_or_else(|_| {
            self.problem(key, format!("size `{size}` is too large"));
            default
        })
    }

    fn duration(&mut self, text: Option<&str>, default: Duration, key: KeyPath) -> Duration {
        self.problems.duration(text, default, key)
    }

    fn header_names(&mut self, names: &[String], key: &KeyPath) -> Vec<HeaderName> {
        names
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                HeaderName::try_from(name.as_str())
                    .map_err(|_| {
                        self.problem(key.index(i), format!("invalid header name `{name}`"))
                    })
                    .ok()
            })
            .collect()
    }

    fn policy(&mut self, s: &CachePolicySection, key: &KeyPath) -> CachePolicy {
        let bypass_default = Bypass::default();
        let bypass = Bypass {
            headers: match &s.bypass_headers {
                Some(names) => self.header_names(names, &key.key("bypass_headers")),
                None => bypass_default.headers,
            },
            cookies: s.bypass_cookies.clone().unwrap_or_default(),
            query: s.bypass_query.clone().unwrap_or_default(),
        };
        let key_policy = CacheKeyPolicy {
            scheme: s.key_scheme.unwrap_or(true),
            host: s.key_host.unwrap_or(true),
            query: self.query(s.key_query.as_ref(), &key.key("key_query")),
            headers: self.header_names(
                s.key_headers.as_deref().unwrap_or_default(),
                &key.key("key_headers"),
            ),
        };
        let status_header = match s.status_header.as_deref() {
            None => Some(HeaderName::from_static(DEFAULT_STATUS_HEADER)),
            Some("") => None,
            Some(name) => {
                let names = self.header_names(&[name.to_string()], &key.key("status_header"));
                names.into_iter().next()
            }
        };
        CachePolicy {
            key: key_policy,
            bypass,
            freshness: self.freshness(s, key),
            status_header,
        }
    }

    fn query(&mut self, q: Option<&QueryKeySection>, key: &KeyPath) -> QueryKey {
        match q {
            None => QueryKey::Full,
            Some(QueryKeySection::Mode(mode)) => match mode.as_str() {
                "full" => QueryKey::Full,
                "none" => QueryKey::None,
                "sorted" => QueryKey::Sorted,
                other => {
                    self.problem(key.clone(), format!("unknown query mode `{other}`: expected \"full\", \"none\", \"sorted\" or a list of parameter names"));
                    QueryKey::Full
                }
            },
            Some(QueryKeySection::Allow(names)) => QueryKey::Allow(names.clone()),
        }
    }

    fn freshness(&mut self, s: &CachePolicySection, key: &KeyPath) -> Freshness {
        let defaults = Freshness::default();
        let (valid, valid_any) = match &s.valid {
            None => (defaults.valid, None),
            Some(map) => self.valid(map, &key.key("valid")),
        };
        let statuses = key.key("stale_if_error_statuses");
        let stale_if_error_statuses = match &s.stale_if_error_statuses {
            None => defaults.stale_if_error_statuses,
            Some(list) => {
                for (i, status) in list.iter().enumerate() {
                    if !(500..=599).contains(status) {
                        self.problem(
                            statuses.index(i),
                            format!("{status} is not a server error status (500..599)"),
                        );
                    }
                }
                list.clone()
            }
        };
        Freshness {
            valid,
            valid_any,
            stale_if_error_statuses,
            ignore_cache_control: s.ignore_cache_control.unwrap_or(false),
            ignore_set_cookie: s.ignore_set_cookie.unwrap_or(false),
            stale_while_revalidate: self.duration(
                s.stale_while_revalidate.as_deref(),
                Duration::ZERO,
                key.key("stale_while_revalidate"),
            ),
            stale_if_error: self.duration(
                s.stale_if_error.as_deref(),
                Duration::ZERO,
                key.key("stale_if_error"),
            ),
        }
    }

    fn valid(
        &mut self,
        map: &std::collections::BTreeMap<String, String>,
        key: &KeyPath,
    ) -> (HashMap<u16, Duration>, Option<Duration>) {
        let mut by_status = HashMap::new();
        let mut any = None;
        for (status, ttl) in map {
            let key = key.key(status);
            let ttl = self.duration(Some(ttl), Duration::ZERO, key.clone());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_keys_win_over_site_keys() {
        let site = CachePolicySection {
            key_query: Some(QueryKeySection::Mode("none".into())),
            stale_if_error: Some("1m".into()),
            ..CachePolicySection::default()
        };
        let loc = CachePolicySection {
            stale_if_error: Some("5s".into()),
            ..CachePolicySection::default()
        };
        let mut problems = Problems::default();
        let p = compile_policy(Some(&site), Some(&loc), &KeyPath::root(), &mut problems).unwrap();
        assert!(problems.is_empty());
        assert_eq!(p.key.query, QueryKey::None);
        assert_eq!(p.freshness.stale_if_error, Duration::from_secs(5));
        let off = CachePolicySection {
            enabled: Some(false),
            ..CachePolicySection::default()
        };
        assert!(compile_policy(Some(&site), Some(&off), &KeyPath::root(), &mut problems).is_none());
        assert!(compile_policy(None, None, &KeyPath::root(), &mut problems).is_none());
    }

    #[test]
    fn bad_values_are_reported() {
        let bad = CachePolicySection {
            key_query: Some(QueryKeySection::Mode("half".into())),
            valid: Some([("2OO".to_string(), "1d".to_string())].into()),
            ..CachePolicySection::default()
        };
        let mut problems = Problems::default();
        compile_policy(None, Some(&bad), &KeyPath::root(), &mut problems);
        let disk = CacheSection {
            disk: Some(crate::config::file::CacheDiskSection {
                path: "cache".into(),
                max_size: Some("2g".into()),
            }),
            ..CacheSection::default()
        };
        let base = std::path::Path::new("/etc/edge");
        let settings = compile_settings(Some(&disk), base, &KeyPath::root(), &mut problems);
        let disk = settings.disk.unwrap();
        assert_eq!(disk.path, base.join("cache"));
        assert_eq!(disk.max_size, 2 << 30);
        assert!(!problems.is_empty());
    }

    #[test]
    fn toml_errors_name_line_and_key() {
        let text = "[cache]\nmax_size = \"lots\"\n\n[upstreams.docs]\naddress = \"docs.tail1.ts.net:80\"\n\n[sites.docs]\nhosts = [\"docs.example.com\"]\ncache = { key_query = \"half\" }\n[[sites.docs.locations]]\nmatch = \"/\"\nproxy = \"docs\"\ncache = { valid = { \"2OO\" = \"1d\" } }\n";
        let e = match crate::config::load_str(
            text,
            Some(std::path::Path::new("edge.toml")),
            std::path::Path::new("."),
        ) {
            Ok(_) => "no error".to_string(),
            Err(e) => e.to_string(),
        };
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
