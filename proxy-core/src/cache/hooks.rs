//! The cache's part of each `ProxyHttp` phase, called from [`crate::proxy`].

use pingora::cache::key::HashBinary;
use pingora::cache::{CacheKey, CacheMeta, NoCacheReason, RespCacheable, VarianceBuilder};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::sync::Arc;
use std::time::SystemTime;

use super::{CachePolicy, CacheStatus, EdgeCache, FreshHit};

/// The cache state of one request.
#[derive(Debug, Default)]
pub(crate) struct CacheRequest {
    /// The policy of the matched location, if it caches.
    pub policy: Option<Arc<CachePolicy>>,
    /// Whether pingora-cache was enabled for the request.
    pub enabled: bool,
    /// Set when the request skipped the cache by a bypass rule.
    pub bypassed: bool,
    /// `Set-Cookie` values removed from the stored copy; only the visitor whose request
    /// fetched the response gets them back.
    own_cookies: Vec<http::HeaderValue>,
    host: String,
    scheme: &'static str,
    /// The key the fast path built and missed with, kept for `cache_key_callback`.
    key: Option<CacheKey>,
    /// Whether the lock was put on for a stale entry (once per request: pingora-cache
    /// refuses a second lock).
    stale_lock: bool,
}

/// `request_cache_filter`: enables the cache for GET/HEAD on a caching location, unless a
/// bypass rule applies.
pub(crate) fn request_cache_filter(
    cache: &'static EdgeCache,
    session: &mut Session,
    policy: Option<&Arc<CachePolicy>>,
    scheme: &'static str,
    host: &str,
    state: &mut CacheRequest,
) {
    let Some(policy) = policy else { return };
    let req = session.req_header();
    if req.method != http::Method::GET && req.method != http::Method::HEAD {
        return;
    }
    state.policy = Some(policy.clone());
    if policy.bypass.applies(req) {
        state.bypassed = true;
        return;
    }
    state.host = host.to_owned();
    state.scheme = scheme;
    state.enabled = true;
    cache.enable(session, policy.lock);
}

/// Request headers that need pingora-cache's full hit path (ranges, conditional requests).
const FULL_PATH_HEADERS: [http::header::HeaderName; 6] = [
    http::header::RANGE,
    http::header::IF_RANGE,
    http::header::IF_NONE_MATCH,
    http::header::IF_MODIFIED_SINCE,
    http::header::IF_MATCH,
    http::header::IF_UNMODIFIED_SINCE,
];

/// The hot-object fast path, run from `request_filter`: a plain GET or HEAD on a caching
/// location whose object (or the request's variant of it, `coding` standing for
/// `Accept-Encoding` as in [`variance`]) is fresh and complete in memory is answered from it
/// directly. Marks the request as a cache hit in `state`. Anything else returns `None` and
/// goes through [`request_cache_filter`] and pingora-cache as usual.
pub(crate) fn fresh_hit(
    cache: &'static EdgeCache,
    req: &RequestHeader,
    policy: Option<&Arc<CachePolicy>>,
    scheme: &'static str,
    host: &str,
    coding: Option<&'static str>,
    state: &mut CacheRequest,
) -> Option<FreshHit> {
    let policy = policy?;
    if req.method != http::Method::GET && req.method != http::Method::HEAD {
        return None;
    }
    // One pass over the request's few headers costs less than six hashed lookups.
    if req
        .headers
        .keys()
        .any(|name| FULL_PATH_HEADERS.contains(name))
        || policy.bypass.applies(req)
    {
        return None;
    }
    let mut key = policy.key.lookup_key(scheme, host, req);
    let vary = |stored: &ResponseHeader| variance_of(&stored.headers, req, coding);
    let Some(hit) = cache
        .storage()
        .fresh_variant_hit(&key, SystemTime::now(), vary)
    else {
        super::policy::tag_for_purge(&mut key, host, req);
        state.key = Some(key);
        return None;
    };
    state.policy = Some(policy.clone());
    Some(hit)
}

/// `cache_key_callback`: the key the location's policy builds (the one the fast path
/// already built, when it missed).
pub(crate) fn cache_key(session: &Session, state: &mut CacheRequest) -> Result<CacheKey> {
    if let Some(key) = state.key.take() {
        return Ok(key);
    }
    let Some(policy) = state.policy.as_ref() else {
        return Error::e_explain(ErrorType::InternalError, "cache enabled without a policy");
    };
    Ok(policy
        .key
        .cache_key(state.scheme, &state.host, session.req_header()))
}

/// `response_cache_filter`: whether and how long to store the response.
pub(crate) fn response_cacheable(
    state: &mut CacheRequest,
    req: &RequestHeader,
    resp: &ResponseHeader,
) -> RespCacheable {
    let Some(policy) = state.policy.as_ref() else {
        return RespCacheable::Uncacheable(NoCacheReason::NeverEnabled);
    };
    // A HEAD response has no body: storing it would answer later GETs with an empty body.
    if req.method == http::Method::HEAD {
        return RespCacheable::Uncacheable(NoCacheReason::Custom("head-miss"));
    }
    match policy.freshness.decide(resp, SystemTime::now()) {
        Ok(meta) => {
            let cookies = resp.headers.get_all(http::header::SET_COOKIE);
            state.own_cookies = cookies.iter().cloned().collect();
            RespCacheable::Cacheable(meta)
        }
        Err(why) => RespCacheable::Uncacheable(NoCacheReason::Custom(why.as_str())),
    }
}

/// `cache_vary_filter`: the variance of the request for the headers the origin's `Vary`
/// names (a request without one of them varies on its absence). Where the location
/// compresses, `Accept-Encoding` counts as the coding chosen for the request (`coding`), so
/// the many ways of writing that header share one stored variant per coding.
pub(crate) fn variance(
    meta: &CacheMeta,
    req: &RequestHeader,
    coding: Option<&'static str>,
) -> Option<HashBinary> {
    variance_of(meta.headers(), req, coding)
}

/// [`variance`] for a stored response's headers.
fn variance_of(
    headers: &http::HeaderMap,
    req: &RequestHeader,
    coding: Option<&'static str>,
) -> Option<HashBinary> {
    let names: Vec<String> = headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
    let mut builder = VarianceBuilder::new();
    for name in &names {
        let value = match coding {
            Some(coding) if name == "accept-encoding" => coding.as_bytes(),
            _ => req
                .headers
                .get(name.as_str())
                .map_or(&[][..], |v| v.as_bytes()),
        };
        builder.add_value(name, value);
    }
    builder.finalize()
}

/// `cache_hit_filter`: an entry found expired, within its stale-while-revalidate window, on a
/// location without the cache lock gets the lock after all, so that one request refreshes
/// it while the others are served stale.
pub(crate) fn hit_found(
    cache: &'static EdgeCache,
    session: &mut Session,
    meta: &CacheMeta,
    is_fresh: bool,
    state: &mut CacheRequest,
) {
    let unlocked = state.policy.as_ref().is_some_and(|policy| !policy.lock);
    if !is_fresh
        && unlocked
        && !state.stale_lock
        && meta.serve_stale_while_revalidate(SystemTime::now())
    {
        state.stale_lock = true;
        cache.lock_for_stale(session);
    }
}

/// `should_serve_stale`: within the entry's windows (checked by pingora-cache), serve stale
/// while another request refreshes the entry (and, with `background_update`, while this one
/// refreshes it in the background), or when the upstream failed (connect error, timeout, or
/// one of the configured statuses).
pub(crate) fn should_serve_stale(
    session: &Session,
    state: &CacheRequest,
    error: Option<&Error>,
) -> bool {
    let Some(error) = error else {
        let refreshing_here = session.cache.is_cache_lock_writer();
        return !refreshing_here || state.policy.as_ref().is_some_and(|p| p.background_update);
    };
    match state.policy.as_ref() {
        Some(policy) => policy.freshness.stale_on_error(error),
        None => error.esource() == &ErrorSource::Upstream,
    }
}

/// `response_filter`: the cache status header, and the fetching visitor's own cookies.
/// The nginx-style cache status of this request, if the cache was consulted.
pub(crate) fn status(session: &Session, state: &CacheRequest) -> Option<CacheStatus> {
    if state.bypassed {
        Some(CacheStatus::Bypass)
    } else if state.enabled {
        Some(CacheStatus::from_phase(session.cache.phase()))
    } else {
        None
    }
}

/// The name of the cache-status header the request's location sends, if any.
pub(crate) fn status_header_name(state: &CacheRequest) -> Option<&http::HeaderName> {
    state.policy.as_ref().and_then(|p| p.status_header.as_ref())
}

/// Adds the cache status header (and this visitor's own cookies, see below) to a response.
pub(crate) fn add_status_header(
    state: &CacheRequest,
    status: Option<CacheStatus>,
    resp: &mut ResponseHeader,
) -> Result<()> {
    // pingora serves even the fetching request from the stored (cookie-less) copy; when
    // it passed the upstream's header through instead, the cookies are already there.
    if !resp.headers.contains_key(http::header::SET_COOKIE) {
        for cookie in &state.own_cookies {
            resp.append_header(http::header::SET_COOKIE, cookie.clone())?;
        }
    }
    let Some(name) = status_header_name(state) else {
        return Ok(());
    };
    match status {
        Some(status) => resp.insert_header(name.clone(), status.as_str()),
        None => Ok(()),
    }
}
