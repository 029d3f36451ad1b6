//! [`CachePolicy`]: per-location cache rules, compiled from config. What makes the key
//! ([`CacheKeyPolicy`]), which requests skip the cache ([`Bypass`]), and how long a response
//! stays fresh ([`Freshness`], with nginx's precedence between origin headers and config).

use http::HeaderName;
use pingora::cache::cache_control::CacheControl;
use pingora::cache::key::HashBinary;
use pingora::cache::{CacheKey, CacheMeta};
use pingora::http::{RequestHeader, ResponseHeader};
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::storage::PurgeTags;

/// How the query string takes part in the cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryKey {
    /// The query exactly as sent.
    Full,
    /// Ignored: `/p?a=1` and `/p?b=2` share one entry.
    None,
    /// Parameters sorted, so `?a=1&b=2` and `?b=2&a=1` share one entry.
    Sorted,
    /// Only these parameters, sorted.
    Allow(Vec<String>),
}

/// Which request components make the cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKeyPolicy {
    /// Include the scheme.
    pub scheme: bool,
    /// Include the host (two sites never share entries).
    pub host: bool,
    /// How the query takes part.
    pub query: QueryKey,
    /// Request headers whose values are part of the key.
    pub headers: Vec<HeaderName>,
}

impl CacheKeyPolicy {
    /// The primary key text for a request. Components are separated by a byte that cannot
    /// occur in a host, path or header value, so distinct requests never collide.
    pub fn primary(&self, scheme: &str, host: &str, req: &RequestHeader) -> String {
        let mut key = String::with_capacity(128);
        if self.scheme {
            key.push_str(scheme);
        }
        key.push('\n');
        if self.host {
            key.push_str(host);
        }
        key.push('\n');
        key.push_str(req.uri.path());
        if let Some(query) = req.uri.query() {
            self.push_query(&mut key, query);
        }
        for name in &self.headers {
            key.push('\n');
            key.push_str(name.as_str());
            for value in req.headers.get_all(name) {
                key.push(':');
                key.push_str(&String::from_utf8_lossy(value.as_bytes()));
            }
        }
        key
    }

    fn push_query(&self, key: &mut String, query: &str) {
        let params = || query.split('&').filter(|p| !p.is_empty());
        let kept: Vec<&str> = match &self.query {
            QueryKey::None => return,
            QueryKey::Full => {
                key.push('?');
                key.push_str(query);
                return;
            }
            QueryKey::Sorted => params().collect(),
            QueryKey::Allow(names) => params()
                .filter(|p| names.iter().any(|n| n == param_name(p)))
                .collect(),
        };
        let mut kept = kept;
        kept.sort_unstable();
        key.push('?');
        key.push_str(&kept.join("&"));
    }

    /// The pingora cache key for a request, tagged with host and path for purges.
    pub fn cache_key(&self, scheme: &str, host: &str, req: &RequestHeader) -> CacheKey {
        let mut key = self.lookup_key(scheme, host, req);
        tag_for_purge(&mut key, host, req);
        key
    }

    /// The key for `req` without the purge tags that storing an entry needs: enough to
    /// look one up. Its hash is computed once here; pingora-cache asks for it several
    /// times per request, and each time would hash the key again.
    pub fn lookup_key(&self, scheme: &str, host: &str, req: &RequestHeader) -> CacheKey {
        let primary = self.primary(scheme, host, req);
        let hash = primary_hash(primary.as_bytes());
        // No user tag: it is for storage backends with per-user quotas, which this one is
        // not, and it would copy the host into every key.
        let mut key = CacheKey::new(primary, String::new());
        key.set_primary_bin_override(hash);
        key
    }
}

/// A primary key's hash, what entries are found by (in memory and as disk file names): the
/// first 128 bits of its BLAKE3 hash. A cryptographic hash, so that no request can be made
/// to share another's entry; BLAKE3 rather than pingora-cache's BLAKE2b because it takes a
/// third of the instructions on keys of a few dozen bytes.
fn primary_hash(primary: &[u8]) -> HashBinary {
    let mut hash = HashBinary::default();
    let len = hash.len();
    hash.copy_from_slice(&blake3::hash(primary).as_bytes()[..len]);
    hash
}

/// Attaches what purging by host or URL matches an entry on to a key from
/// [`CacheKeyPolicy::lookup_key`].
pub(crate) fn tag_for_purge(key: &mut CacheKey, host: &str, req: &RequestHeader) {
    key.extensions.insert(PurgeTags {
        host: host.into(),
        path: req.uri.path().into(),
    });
}

fn param_name(param: &str) -> &str {
    param.split_once('=').map_or(param, |(name, _)| name)
}

/// Which requests skip the cache (nginx `proxy_cache_bypass`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bypass {
    /// Any of these request headers present.
    pub headers: Vec<HeaderName>,
    /// Any of these cookies present.
    pub cookies: Vec<String>,
    /// Any of these query parameters present.
    pub query: Vec<String>,
}

impl Bypass {
    /// Whether `req` skips the cache.
    pub fn applies(&self, req: &RequestHeader) -> bool {
        if self.headers.iter().any(|h| req.headers.contains_key(h)) {
            return true;
        }
        if !self.query.is_empty() {
            let query = req.uri.query().unwrap_or("");
            let hit = query
                .split('&')
                .any(|p| self.query.iter().any(|q| q == param_name(p)));
            if hit {
                return true;
            }
        }
        !self.cookies.is_empty() && self.has_cookie(req)
    }

    fn has_cookie(&self, req: &RequestHeader) -> bool {
        req.headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .any(|pair| {
                let name = pair.trim().split('=').next().unwrap_or("");
                self.cookies.iter().any(|c| c == name)
            })
    }
}

/// How long responses stay fresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    /// TTL by status when the origin says nothing or is ignored.
    pub valid: HashMap<u16, Duration>,
    /// TTL for statuses not in `valid` (`"any"`), if set.
    pub valid_any: Option<Duration>,
    /// Ignore `Cache-Control`/`Expires` from the origin.
    pub ignore_cache_control: bool,
    /// Cache responses with `Set-Cookie` (stripping it from the stored copy).
    pub ignore_set_cookie: bool,
    /// Stale-while-revalidate window from config.
    pub stale_while_revalidate: Duration,
    /// Stale-if-error window from config.
    pub stale_if_error: Duration,
    /// Upstream statuses that count as errors for stale-if-error.
    pub stale_if_error_statuses: Vec<u16>,
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// `Cache-Control: no-store`, `private` or `no-cache`.
    OriginForbids,
    /// `Vary: *`.
    VaryStar,
    /// `Set-Cookie` present and not ignored.
    SetCookie,
    /// No TTL applies (status not configured, or a zero TTL).
    NoTtl,
}

impl NotStored {
    /// A short reason for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OriginForbids => "origin-forbids",
            Self::VaryStar => "vary-star",
            Self::SetCookie => "set-cookie",
            Self::NoTtl => "no-ttl",
        }
    }
}

impl Freshness {
    /// The metadata to store `resp` with, or why it is not stored. Precedence as nginx:
    /// `Cache-Control` (`s-maxage` before `max-age`), then `Expires`, then `valid`.
    pub fn decide(&self, resp: &ResponseHeader, now: SystemTime) -> Result<CacheMeta, NotStored> {
        if vary_star(resp) {
            return Err(NotStored::VaryStar);
        }
        let has_cookie = resp.headers.contains_key(http::header::SET_COOKIE);
        if has_cookie && !self.ignore_set_cookie {
            return Err(NotStored::SetCookie);
        }
        let cc = (!self.ignore_cache_control)
            .then(|| CacheControl::from_resp_headers(resp))
            .flatten();
        if let Some(cc) = &cc {
            if cc.no_store() || cc.private() || cc.no_cache() {
                return Err(NotStored::OriginForbids);
            }
        }
        let ttl = self
            .origin_ttl(cc.as_ref(), resp, now)
            .or_else(|| self.status_ttl(resp.status.as_u16()))
            .filter(|ttl| !ttl.is_zero())
            .ok_or(NotStored::NoTtl)?;
        let directive = |f: fn(&CacheControl) -> pingora::Result<Option<u32>>| {
            cc.as_ref().and_then(|cc| f(cc).ok().flatten())
        };
        let swr = directive(CacheControl::stale_while_revalidate)
            .unwrap_or(secs(self.stale_while_revalidate));
        let sie = directive(CacheControl::stale_if_error).unwrap_or(secs(self.stale_if_error));
        let mut header = resp.clone();
        // Never hand one visitor's cookie to another.
        header.remove_header(&http::header::SET_COOKIE);
        Ok(CacheMeta::new(now + ttl, now, swr, sie, header))
    }

    fn origin_ttl(
        &self,
        cc: Option<&CacheControl>,
        resp: &ResponseHeader,
        now: SystemTime,
    ) -> Option<Duration> {
        if self.ignore_cache_control {
            return None;
        }
        if let Some(cc) = cc {
            let age = cc
                .s_maxage()
                .ok()
                .flatten()
                .or_else(|| cc.max_age().ok().flatten());
            if let Some(age) = age {
                return Some(Duration::from_secs(age.into()));
            }
        }
        let expires = resp.headers.get(http::header::EXPIRES)?;
        // An unparsable Expires means "already expired" (RFC 9111 5.3).
        let at = expires
            .to_str()
            .ok()
            .and_then(|t| httpdate::parse_http_date(t).ok())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Some(at.duration_since(now).unwrap_or(Duration::ZERO))
    }

    /// Whether a failed upstream attempt may be answered with a stale entry: connect
    /// errors and timeouts always, statuses only when configured.
    pub fn stale_on_error(&self, error: &pingora::Error) -> bool {
        if error.esource() != &pingora::ErrorSource::Upstream {
            return false;
        }
        match error.etype() {
            pingora::ErrorType::HTTPStatus(status) => self.stale_if_error_statuses.contains(status),
            _ => true,
        }
    }

    fn status_ttl(&self, status: u16) -> Option<Duration> {
        self.valid.get(&status).copied().or(self.valid_any)
    }
}

fn vary_star(resp: &ResponseHeader) -> bool {
    resp.headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim() == "*")
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// A location's cache policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePolicy {
    /// What makes the key.
    pub key: CacheKeyPolicy,
    /// Which requests skip the cache.
    pub bypass: Bypass,
    /// How long responses stay fresh.
    pub freshness: Freshness,
    /// Name of the cache status response header, if any.
    pub status_header: Option<HeaderName>,
    /// Whether concurrent misses for one key wait for the one fetch (nginx's
    /// `proxy_cache_lock`).
    pub lock: bool,
    /// Whether the request that finds an entry expired within its stale-while-revalidate
    /// window is served stale while the refresh runs in the background (nginx's
    /// `proxy_cache_background_update`), rather than waiting for it.
    pub background_update: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy a `cache = {}` table compiles to: every key at its default.
    fn defaults() -> CachePolicy {
        let text = "[upstreams.u]\naddress = \"127.0.0.1:1\"\n[sites.s]\nhosts = [\"s\"]\ncache = {}\n[[sites.s.locations]]\nmatch = \"/\"\nproxy = \"u\"\n";
        let config =
            crate::config::load_str(text, None, std::path::Path::new(".")).expect("valid config");
        let site = config.site_for_host("s").expect("site");
        let location = site.location_for_path(b"/").expect("location");
        CachePolicy::clone(location.cache().expect("a cache policy"))
    }

    fn req(uri: &str) -> RequestHeader {
        RequestHeader::build("GET", uri.as_bytes(), None).unwrap()
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn keys_are_found_by_a_fixed_blake3_hash() {
        use pingora::cache::key::CacheHashKey;
        let p = defaults().key;
        let r = req("/a?x=1");
        assert_eq!(p.primary("https", "a.com", &r), "https\na.com\n/a?x=1");
        let hex = |hash: HashBinary| hash.iter().map(|b| format!("{b:02x}")).collect::<String>();
        // Disk files are named by this hash: a change of it empties every disk cache (and
        // needs a new file format version in `disk.rs`).
        let expected = "4abaae8758fa2498959851de9d5b1b62";
        let lookup = p.lookup_key("https", "a.com", &r);
        assert_eq!(hex(lookup.primary_bin()), expected);
        // Storing (with purge tags) and looking up find the same entry.
        assert_eq!(
            hex(p.cache_key("https", "a.com", &r).combined_bin()),
            expected
        );
    }

    #[test]
    fn host_and_scheme_separate_keys() {
        let p = defaults().key;
        let r = req("/a?x=1");
        assert_ne!(
            p.primary("http", "a.com", &r),
            p.primary("http", "b.com", &r)
        );
        assert_ne!(
            p.primary("http", "a.com", &r),
            p.primary("https", "a.com", &r)
        );
        let shared = CacheKeyPolicy { host: false, ..p };
        assert_eq!(
            shared.primary("http", "a.com", &r),
            shared.primary("http", "b.com", &r)
        );
    }

    #[test]
    fn query_modes() {
        let key = |query: QueryKey, uri: &str| {
            CacheKeyPolicy {
                query,
                ..defaults().key
            }
            .primary("http", "h", &req(uri))
        };
        assert_ne!(
            key(QueryKey::Full, "/p?a=1&b=2"),
            key(QueryKey::Full, "/p?b=2&a=1")
        );
        assert_eq!(key(QueryKey::None, "/p?a=1"), key(QueryKey::None, "/p?b=2"));
        assert_eq!(
            key(QueryKey::Sorted, "/p?a=1&b=2"),
            key(QueryKey::Sorted, "/p?b=2&a=1")
        );
        let allow = || QueryKey::Allow(vec!["page".into()]);
        assert_eq!(
            key(allow(), "/p?page=2&utm=x"),
            key(allow(), "/p?utm=y&page=2")
        );
        assert_ne!(key(allow(), "/p?page=2"), key(allow(), "/p?page=3"));
    }

    #[test]
    fn chosen_headers_are_in_the_key() {
        let p = CacheKeyPolicy {
            headers: vec![HeaderName::from_static("accept-language")],
            ..defaults().key
        };
        let mut fr = req("/");
        fr.insert_header("accept-language", "fr").unwrap();
        assert_ne!(
            p.primary("http", "h", &fr),
            p.primary("http", "h", &req("/"))
        );
    }

    #[test]
    fn bypass_rules() {
        let b = Bypass {
            cookies: vec!["session".into()],
            query: vec!["nocache".into()],
            ..defaults().bypass
        };
        let mut auth = req("/");
        auth.insert_header("authorization", "Bearer x").unwrap();
        assert!(b.applies(&auth));
        let mut cookie = req("/");
        cookie.insert_header("cookie", "a=1; session=2").unwrap();
        assert!(b.applies(&cookie));
        assert!(b.applies(&req("/?nocache=1")));
        assert!(!b.applies(&req("/?cache=1")));
    }

    #[test]
    fn nginx_precedence_and_refusals() {
        let f = defaults().freshness;
        let now = SystemTime::now();
        let ttl = |meta: CacheMeta| meta.fresh_until().duration_since(now).unwrap();
        let both = resp(200, &[("cache-control", "max-age=60, s-maxage=120")]);
        assert_eq!(ttl(f.decide(&both, now).unwrap()), Duration::from_secs(120));
        let plain = resp(200, &[]);
        assert_eq!(
            ttl(f.decide(&plain, now).unwrap()),
            Duration::from_secs(600)
        );
        for cc in ["no-store", "private", "no-cache"] {
            let r = resp(200, &[("cache-control", cc)]);
            assert_eq!(f.decide(&r, now).unwrap_err(), NotStored::OriginForbids);
        }
        let star = resp(200, &[("vary", "Accept, *")]);
        assert_eq!(f.decide(&star, now).unwrap_err(), NotStored::VaryStar);
        assert_eq!(
            f.decide(&resp(404, &[]), now).unwrap_err(),
            NotStored::NoTtl
        );
        let ignoring = Freshness {
            ignore_cache_control: true,
            ..defaults().freshness
        };
        let forbids = resp(200, &[("cache-control", "no-store, max-age=5")]);
        assert_eq!(
            ttl(ignoring.decide(&forbids, now).unwrap()),
            Duration::from_secs(600)
        );
    }

    #[test]
    fn set_cookie_refused_or_stripped() {
        let r = resp(200, &[("set-cookie", "id=alice")]);
        let now = SystemTime::now();
        let f = defaults().freshness;
        assert_eq!(f.decide(&r, now).unwrap_err(), NotStored::SetCookie);
        let ignoring = Freshness {
            ignore_set_cookie: true,
            ..defaults().freshness
        };
        let meta = ignoring.decide(&r, now).unwrap();
        assert!(meta.headers().get("set-cookie").is_none());
    }
}
