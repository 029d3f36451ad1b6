//! [`RequestCtx`]: what one request carries from phase to phase, grouped by what it
//! describes, so no phase recomputes another's work.

use std::net::IpAddr;
use std::sync::Arc;

use crate::answer::ResponseBody;
use crate::cache::hooks::CacheRequest;
use crate::compress::CompressRequest;
use crate::limit::ConcurrencyPermit;
use crate::model::RuntimeConfig;
use crate::observe::{Observability, RequestFacts, RequestRecord};
use crate::plugin::{PluginChain, PluginCtx};
use crate::route::{Location, Site};
use crate::upstream::{AddressInFlight, BufferedBody, Upstream};

/// Per-request state shared by every phase.
pub struct RequestCtx {
    /// The config this request runs on (a reload mid-request does not affect it).
    pub(crate) config: Arc<RuntimeConfig>,
    /// Who is asking.
    pub(crate) client_ip: Option<IpAddr>,
    /// `http` or `https`: what a trusted proxy says the client used, else the connection's.
    pub(crate) scheme: &'static str,
    /// What routing found.
    pub(crate) route: RouteState,
    /// The request body seen so far against the location's limit.
    pub(crate) body: BodyLimit,
    /// The cache's state for this request.
    pub(crate) cache: CacheRequest,
    /// The coding chosen for the response and its encoder, where the location compresses
    /// (boxed: most requests have none, and every request moves its context).
    pub(crate) compress: Option<Box<CompressRequest>>,
    /// Request id, timings, upstream outcome, cache status and rate-limit outcome, for the
    /// log line and metrics.
    pub(crate) record: RequestRecord,
    /// The request's places in connection-limit zones, given back when it ends.
    pub(crate) permits: Vec<ConcurrencyPermit>,
    /// The response body sent: the upstream's, or the site's error page in its place.
    pub(crate) response_body: ResponseBody,
    /// The request body, when the location receives it whole before going upstream (boxed:
    /// most requests have none, and every request moves its context).
    pub(crate) buffered_body: Option<Box<BufferedBody>>,
    /// Set when what is left of the request body must not be read after an answer (the
    /// client already failed to send it).
    pub(crate) lingering_done: bool,
    /// Headers authentication sets on the upstream request (a forward-auth service's).
    pub(crate) auth_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Set when the site answers in offline mode: every address of the upstream is down.
    pub(crate) offline: bool,
}

/// What routing found for a request.
#[derive(Debug, Default)]
pub(crate) struct RouteState {
    /// The normalised Host of a request for a configured site (empty until routed).
    pub(crate) host: String,
    pub(crate) site: Option<Arc<Site>>,
    pub(crate) location: Option<Arc<Location>>,
    /// The upstream this request is forwarded to, once nothing answers it first.
    pub(crate) upstream: Option<Arc<Upstream>>,
    /// The request's count on the address it went to (`balance = "least_conn"`): replaced
    /// when a retry picks another address, given back when the context is dropped, however
    /// the request ends.
    pub(crate) in_flight: Option<AddressInFlight>,
    /// Whether the matched site or location has plugins (most have none, and every phase
    /// asks).
    pub(crate) has_plugins: bool,
}

/// Request body bytes seen so far, against a limit (0 = unlimited).
#[derive(Debug, Default)]
pub(crate) struct BodyLimit {
    pub(crate) limit: u64,
    seen: u64,
}

impl BodyLimit {
    /// Counts `bytes` more; returns whether the body is now over the limit.
    pub(crate) fn add(&mut self, bytes: usize) -> bool {
        self.seen += bytes as u64;
        self.limit > 0 && self.seen > self.limit
    }

    /// Counts from zero again (a buffered body forwarded once more, to another attempt).
    pub(crate) fn restart(&mut self) {
        self.seen = 0;
    }
}

impl RequestCtx {
    pub(crate) fn new(config: Arc<RuntimeConfig>, observability: Option<&Observability>) -> Self {
        Self {
            config,
            client_ip: None,
            scheme: "http",
            route: RouteState::default(),
            body: BodyLimit::default(),
            cache: CacheRequest::default(),
            compress: None,
            record: RequestRecord::new(observability),
            permits: Vec::new(),
            response_body: ResponseBody::Passed,
            buffered_body: None,
            lingering_done: false,
            auth_headers: Vec::new(),
            offline: false,
        }
    }

    /// The config this request runs on.
    pub fn config(&self) -> &Arc<RuntimeConfig> {
        &self.config
    }

    /// Who is asking (`Fly-Client-IP` from a trusted proxy, else the peer).
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    /// `http` or `https`: the scheme the client used (as a trusted proxy says, else the
    /// connection's); nginx's `$scheme`.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// The matched site, once routed.
    pub fn site(&self) -> Option<&Arc<Site>> {
        self.route.site.as_ref()
    }

    /// The matched location, once routed.
    pub fn location(&self) -> Option<&Arc<Location>> {
        self.route.location.as_ref()
    }

    /// The upstream the request goes to, once decided.
    pub fn upstream(&self) -> Option<&Arc<Upstream>> {
        self.route.upstream.as_ref()
    }

    /// The request id (kept from `X-Request-Id` or generated).
    pub fn request_id(&self) -> &str {
        self.record.request_id.as_str()
    }

    /// The plugins this request runs and what they see of it; `None` when there are none
    /// (no site matched, or its chain is empty).
    pub(crate) fn plugins(&self) -> Option<(&PluginChain, PluginCtx<'_>)> {
        if !self.route.has_plugins {
            return None;
        }
        let site = self.route.site.as_deref()?;
        let location = self.route.location.as_deref();
        let chain = location.map_or(site.plugins(), Location::plugins);
        if chain.is_empty() {
            return None;
        }
        let matched = location.map(|l| (l.pattern_text(), l.index()));
        Some((chain, PluginCtx::new(self.client_ip, site.name(), matched)))
    }

    /// What the log line and metrics need to know of this request.
    pub(crate) fn facts(&self) -> RequestFacts<'_> {
        RequestFacts {
            site: self.route.site.as_deref().map(Site::name),
            location: self.route.location.as_deref().map(Location::pattern_text),
            upstream: self.route.upstream.as_deref().map(|u| u.name.as_str()),
            client_ip: self.client_ip,
            record: &self.record,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_limit_counts_across_chunks_and_zero_is_unlimited() {
        let mut body = BodyLimit {
            limit: 10,
            ..BodyLimit::default()
        };
        assert!(!body.add(6));
        assert!(!body.add(4));
        assert!(body.add(1));
        let mut unlimited = BodyLimit::default();
        assert!(!unlimited.add(usize::MAX / 2));
    }
}
