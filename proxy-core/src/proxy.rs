//! [`EdgeProxy`]: the `ProxyHttp` implementation that wires routing, upstreams and local
//! answers together. Each phase delegates to the module that owns it.

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::answer::{default_error_page, LocalAnswer};
use crate::cache::hooks::{self as cache_hooks, CacheRequest};
use crate::cache::{CacheStatus, EdgeCache, FreshHit};
use crate::guard::{GuardVerdict, Refusal};
use crate::observe::{Observability, RequestRecord, UpstreamErrorKind, REQUEST_ID_HEADER};
use crate::plugin::{PluginChain, PluginCtx, RequestFlow};
use crate::route::{normalize_host, normalize_path, Action, Location, RedirectVars, Site};
use crate::runtime::{RuntimeConfig, UnknownHostAnswer};
use crate::upstream::{apply_forwarded_headers, Upstream};
use pingora::cache::key::HashBinary;
use pingora::cache::{CacheKey, CacheMeta, RespCacheable};

/// Headers set on a fresh hit's header after it is built: the request id (by
/// `tag_response`) and `Connection` (by Pingora, which also sets `Date`). A kept hit header
/// carries them already, so setting them replaces a value.
static HIT_PRESET: [(http::HeaderName, http::HeaderValue); 2] = [
    (
        http::header::CONNECTION,
        http::HeaderValue::from_static("keep-alive"),
    ),
    (
        http::HeaderName::from_static(REQUEST_ID_HEADER),
        http::HeaderValue::from_static(""),
    ),
];

/// Per-request state shared by every phase, so no phase recomputes another's work.
pub struct RequestCtx {
    /// The config this request runs on (a reload mid-request does not affect it).
    pub config: Arc<RuntimeConfig>,
    /// The matched site.
    pub site: Option<Arc<Site>>,
    /// The matched location.
    pub location: Option<Arc<Location>>,
    /// The upstream this request is forwarded to.
    pub upstream: Option<Arc<Upstream>>,
    /// The normalised Host of a request for a configured site (empty until routed).
    pub host: String,
    /// Who is asking.
    pub client_ip: Option<IpAddr>,
    /// Request body limit in bytes (0 = unlimited).
    pub body_limit: u64,
    /// Request body bytes seen so far.
    pub body_seen: u64,
    /// When the request started.
    pub started: Instant,
    /// The site's and location's plugins, resolved once in the request phase.
    pub plugins: PluginChain,
    /// Request id, upstream timings, cache status and rate-limit outcome for the log line.
    pub observe: RequestRecord,
    /// The cache's state for this request.
    pub cache: CacheRequest,
    /// How long rate limiting holds this request before it proceeds (`delay` zones).
    pub rate_limit_delay: Duration,
}

/// The edge proxy. Cheap to share: the config sits behind an [`ArcSwap`] so a reload swaps
/// it atomically while in-flight requests finish on the config they started with.
pub struct EdgeProxy {
    config: Arc<ArcSwap<RuntimeConfig>>,
    observability: Option<Arc<Observability>>,
    cache: &'static EdgeCache,
}

impl EdgeProxy {
    /// A proxy serving `config`.
    pub fn new(config: Arc<RuntimeConfig>) -> Self {
        Self {
            cache: EdgeCache::leak(config.cache.clone()),
            config: Arc::new(ArcSwap::new(config)),
            observability: None,
        }
    }

    /// The same proxy recording metrics and access-log lines into `observability`.
    pub fn with_observability(mut self, observability: Arc<Observability>) -> Self {
        self.observability = Some(observability);
        self
    }

    /// The response cache (for purges from an admin endpoint).
    pub fn cache(&self) -> &'static EdgeCache {
        self.cache
    }

    /// The handle through which a new config can be swapped in.
    pub fn config_handle(&self) -> Arc<ArcSwap<RuntimeConfig>> {
        self.config.clone()
    }

    /// Routes a request: finds the site and location and decides what happens next.
    fn route(&self, session: &Session, ctx: &mut RequestCtx) -> Decision {
        let request = session.req_header();
        if let Some(answer) = check_framing(session) {
            return Decision::Refuse(answer);
        }
        let path = request.uri.path();
        if ctx.config.health_path.as_deref() == Some(path) && is_get_or_head(request) {
            return Decision::Refuse(LocalAnswer::text(200, "ok\n"));
        }
        let host = match request_host(request) {
            HostLookup::Found(host) => host,
            HostLookup::Missing => return Decision::Refuse(unknown_host(ctx.config.unknown_host)),
            HostLookup::Invalid(why) => {
                return Decision::Refuse(LocalAnswer::text(400, why).closing())
            }
        };
        let Some(site) = ctx.config.router.find(&host).cloned() else {
            return Decision::Refuse(unknown_host(ctx.config.unknown_host));
        };
        ctx.host = host;
        let normalized = match normalize_path(path) {
            Ok(p) => p,
            Err(e) => return Decision::Refuse(LocalAnswer::text(400, format!("{e}\n")).closing()),
        };
        ctx.site = Some(site.clone());
        let Some(location) = site.locations.find(&normalized).cloned() else {
            return Decision::Answer(LocalAnswer::text(404, "not found\n"));
        };
        ctx.location = Some(location.clone());
        ctx.body_limit = location.max_body_size.unwrap_or(site.max_body_size);
        if let Some(answer) = check_declared_length(request, ctx.body_limit) {
            return Decision::Refuse(answer);
        }
        match ctx
            .config
            .guards
            .check(&site, &location, request, ctx.client_ip)
        {
            GuardVerdict::Pass { delay, zones } => {
                ctx.rate_limit_delay = delay;
                self.record_guard_pass(ctx, &zones);
            }
            GuardVerdict::Refuse(answer, why) => {
                self.record_refusal(ctx, &site.name, &why);
                return Decision::Refuse(answer);
            }
        }
        match &location.action {
            Action::Proxy(upstream) => {
                ctx.upstream = Some(upstream.clone());
                Decision::Proxy
            }
            Action::Return {
                status,
                content_type,
                body,
            } => Decision::Answer(LocalAnswer {
                content_type: content_type.clone().into(),
                ..LocalAnswer::text(*status, body.clone())
            }),
            Action::Redirect { status, target } => {
                let uri = String::from_utf8_lossy(&normalized);
                let vars = RedirectVars {
                    request_uri: request.uri.path_and_query().map_or("/", |pq| pq.as_str()),
                    uri: &uri,
                    args: request.uri.query().unwrap_or(""),
                    host: &ctx.host,
                    scheme: scheme(session),
                };
                Decision::Answer(LocalAnswer {
                    location: Some(target.render(&vars)),
                    ..LocalAnswer::text(*status, "")
                })
            }
        }
    }

    /// Counts a request the rate limits let through (and notes it for the access log).
    fn record_guard_pass(&self, ctx: &mut RequestCtx, zones: &[String]) {
        if zones.is_empty() {
            return;
        }
        let outcome = if ctx.rate_limit_delay.is_zero() {
            "passed"
        } else {
            "delayed"
        };
        ctx.observe.rate_limit = Some(outcome);
        if let Some(observability) = &self.observability {
            for zone in zones {
                observability.metrics().rate_limit_decision(zone, outcome);
            }
        }
    }

    /// Counts a refusal by a deny rule or a rate limit (and notes it for the access log).
    fn record_refusal(&self, ctx: &mut RequestCtx, site: &str, why: &Refusal) {
        let metrics = self.observability.as_ref().map(|o| o.metrics());
        match why {
            Refusal::RateLimit(zone) => {
                ctx.observe.rate_limit = Some("rejected");
                if let Some(metrics) = metrics {
                    metrics.rate_limit_decision(zone, "rejected");
                }
            }
            Refusal::UserAgent | Refusal::DenyList | Refusal::AllowList => {
                let list = match why {
                    Refusal::UserAgent => "user_agent",
                    Refusal::DenyList => "deny_list",
                    _ => "allow_list",
                };
                if let Some(metrics) = metrics {
                    metrics.deny_hit(site, list);
                }
            }
        }
    }

    /// Runs the request phase of the plugins; the first answer wins.
    async fn run_request_plugins(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
    ) -> Result<Option<LocalAnswer>> {
        let Some(site) = ctx.site.as_deref() else {
            return Ok(None);
        };
        let plugin_ctx = PluginCtx {
            client_ip: ctx.client_ip,
            site,
            location: ctx.location.as_deref(),
        };
        for plugin in ctx.plugins.iter() {
            if let RequestFlow::Answer(answer) = plugin.request(session, plugin_ctx).await? {
                return Ok(Some(answer));
            }
        }
        Ok(None)
    }

    /// Runs the response phase of the plugins on a header about to be sent.
    fn run_response_plugins(&self, header: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
        let Some(plugin_ctx) = plugin_ctx(ctx) else {
            return Ok(());
        };
        ctx.plugins
            .iter()
            .try_for_each(|plugin| plugin.response(header, plugin_ctx))
    }

    /// The hot-object fast path: a fresh object held in memory for a proxied location.
    fn fresh_cache_hit(&self, session: &Session, ctx: &mut RequestCtx) -> Option<FreshHit> {
        ctx.upstream.as_ref()?;
        let policy = ctx.location.as_ref().and_then(|l| l.cache.as_ref());
        let scheme = scheme(session);
        cache_hooks::fresh_hit(
            self.cache,
            session.req_header(),
            policy,
            scheme,
            &ctx.host,
            &mut ctx.cache,
        )
    }

    /// Answers from a fresh cached object with the headers pingora-cache's hit path would
    /// send (`Age`, the cache status, the request id, plugins' response headers).
    async fn write_cache_hit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        hit: FreshHit,
    ) -> Result<()> {
        // The stored header comes with the cache-status header already saying HIT; a
        // fresh hit carries no visitor's cookies, so nothing else of
        // `finish_response_header` applies.
        let status_name = cache_hooks::status_header_name(&ctx.cache);
        let mut header = hit.response_header(SystemTime::now(), status_name, &HIT_PRESET)?;
        ctx.observe.cache_status = Some(CacheStatus::Hit.as_str());
        self.tag_response(&mut header, ctx)?;
        crate::answer::write_response(session, header, hit.body()).await
    }

    /// What every response from the cache or the upstream gets: the cache status (header
    /// and log), the request id and plugins' response headers.
    fn finish_response_header(
        &self,
        header: &mut ResponseHeader,
        ctx: &mut RequestCtx,
        cache_status: Option<CacheStatus>,
    ) -> Result<()> {
        ctx.observe.cache_status = cache_status.map(|s| s.as_str());
        cache_hooks::add_status_header(&ctx.cache, cache_status, header)?;
        self.tag_response(header, ctx)
    }

    /// The request id and plugins' response headers.
    fn tag_response(&self, header: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
        ctx.observe.tag_response(header)?;
        self.run_response_plugins(header, ctx)
    }

    /// Writes a local answer: the site's error page for error statuses, plugins' headers.
    async fn write_answer(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        mut answer: LocalAnswer,
    ) -> Result<()> {
        let page = ctx
            .site
            .as_ref()
            .and_then(|site| site.error_pages.get(&answer.status));
        if let Some(page) = page {
            answer.body = page.clone();
            answer.content_type = LocalAnswer::html(0, "").content_type;
        }
        let mut header = answer.response_header()?;
        ctx.observe.tag_response(&mut header)?;
        self.run_response_plugins(&mut header, ctx)?;
        answer.write(session, header).await
    }
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            config: self.config.load_full(),
            site: None,
            location: None,
            upstream: None,
            host: String::new(),
            client_ip: None,
            body_limit: 0,
            body_seen: 0,
            started: Instant::now(),
            plugins: PluginChain::default(),
            observe: RequestRecord::new(self.observability.as_deref()),
            cache: CacheRequest::default(),
            rate_limit_delay: Duration::ZERO,
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let peer = match session.client_addr() {
            Some(PeerAddr::Inet(addr)) => Some(addr.ip()),
            _ => None,
        };
        ctx.observe.request_id = crate::observe::request_id_for(session.req_header());
        ctx.client_ip = ctx
            .config
            .client
            .client_ip(peer, &session.req_header().headers);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let decision = self.route(session, ctx);
        // Response plugins apply to every answer of a matched site, refusals included.
        if let Some(site) = ctx.site.as_deref() {
            ctx.plugins = PluginChain::for_request(site, ctx.location.as_deref());
        }
        if !ctx.rate_limit_delay.is_zero() {
            tokio::time::sleep(ctx.rate_limit_delay).await;
        }
        let planned = match decision {
            Decision::Refuse(answer) => Some(answer),
            decision => match self.run_request_plugins(session, ctx).await? {
                Some(answer) => {
                    ctx.upstream = None;
                    Some(answer)
                }
                None => match decision {
                    Decision::Answer(answer) => Some(answer),
                    _ => None,
                },
            },
        };
        let Some(answer) = planned else {
            if let Some(hit) = self.fresh_cache_hit(session, ctx) {
                self.write_cache_hit(session, ctx, hit).await?;
                return Ok(true);
            }
            return Ok(false);
        };
        if answer.status == 0 {
            // Unknown host with "close": drop the connection without a response.
            session.set_keepalive(None);
            return Ok(true);
        }
        self.write_answer(session, ctx, answer).await?;
        Ok(true)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(chunk) = body else { return Ok(()) };
        ctx.body_seen += chunk.len() as u64;
        if ctx.body_limit > 0 && ctx.body_seen > ctx.body_limit {
            return Error::e_explain(
                ErrorType::HTTPStatus(413),
                "request body larger than the limit",
            );
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(upstream) = ctx.upstream.as_ref() else {
            return Error::e_explain(
                ErrorType::InternalError,
                "no upstream selected for this request",
            );
        };
        ctx.observe.upstream_started = Some(Instant::now());
        match upstream.peer() {
            Some(peer) => {
                ctx.observe.upstream_addr = Some(peer._address.clone());
                Ok(Box::new(peer))
            }
            None => {
                ctx.observe.upstream_error = Some(UpstreamErrorKind::Dns);
                let e = Error::explain(
                    ErrorType::ConnectNoRoute,
                    format!(
                        "upstream `{}`: `{}` has not resolved yet",
                        upstream.name, upstream.host
                    ),
                );
                Err(e.into_up())
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream_request.insert_header(REQUEST_ID_HEADER, ctx.observe.request_id.as_str())?;
        let Some(upstream) = ctx.upstream.as_ref() else {
            return Ok(());
        };
        let host_header = ctx
            .location
            .as_ref()
            .and_then(|l| l.host_header.as_ref())
            .unwrap_or(&upstream.host_header);
        ctx.config
            .client
            .set_upstream_header(upstream_request, ctx.client_ip)?;
        apply_forwarded_headers(
            upstream_request,
            host_header,
            ctx.client_ip,
            scheme(session),
        )?;
        let Some(plugin_ctx) = plugin_ctx(ctx) else {
            return Ok(());
        };
        for plugin in ctx.plugins.iter() {
            plugin
                .upstream_request(session, upstream_request, plugin_ctx)
                .await?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.observe.upstream_responded(upstream_response);
        let Some(plugin_ctx) = plugin_ctx(ctx) else {
            return Ok(());
        };
        ctx.plugins
            .iter()
            .try_for_each(|plugin| plugin.upstream_response(upstream_response, plugin_ctx))
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let cache_status = cache_hooks::status(session, &ctx.cache);
        self.finish_response_header(upstream_response, ctx, cache_status)
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(observability) = &self.observability {
            observability.finish_request(session, error, ctx);
        }
        let Some(plugin_ctx) = plugin_ctx(ctx) else {
            return;
        };
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        for plugin in ctx.plugins.iter() {
            plugin.logging(session, status, plugin_ctx);
        }
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        if ctx.upstream.is_some() {
            let policy = ctx.location.as_ref().and_then(|l| l.cache.as_ref());
            let scheme = scheme(session);
            cache_hooks::request_cache_filter(
                self.cache,
                session,
                policy,
                scheme,
                &ctx.host,
                &mut ctx.cache,
            );
        }
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        cache_hooks::cache_key(session, &mut ctx.cache)
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        Ok(cache_hooks::response_cacheable(
            &mut ctx.cache,
            session.req_header(),
            resp,
        ))
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        cache_hooks::variance(meta, req)
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        cache_hooks::should_serve_stale(&ctx.cache, error)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let status = error_status(e);
        if status > 0 && session.response_written().is_none() {
            let answer = LocalAnswer::html(status, default_error_page(status)).closing();
            if let Err(write_error) = self.write_answer(session, ctx, answer).await {
                tracing::debug!(error = %write_error, "could not write error response");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }
}

/// What routing decided.
enum Decision {
    /// Answer now, before plugins run (malformed requests, unknown hosts, health checks).
    Refuse(LocalAnswer),
    /// Forward to the upstream in `ctx.upstream`, unless a plugin answers.
    Proxy,
    /// Answer locally (the location's action or a 404), unless a plugin answers first.
    Answer(LocalAnswer),
}

fn plugin_ctx(ctx: &RequestCtx) -> Option<PluginCtx<'_>> {
    if ctx.plugins.is_empty() {
        return None;
    }
    Some(PluginCtx {
        client_ip: ctx.client_ip,
        site: ctx.site.as_deref()?,
        location: ctx.location.as_deref(),
    })
}

/// The status an error maps to: 504 for upstream timeouts, 502 for other upstream
/// failures, 0 (no answer) when the client is gone.
fn error_status(e: &Error) -> u16 {
    match (e.etype(), e.esource()) {
        (ErrorType::HTTPStatus(code), _) => *code,
        (
            ErrorType::ConnectTimedout
            | ErrorType::ReadTimedout
            | ErrorType::WriteTimedout
            | ErrorType::TLSHandshakeTimedout,
            ErrorSource::Upstream,
        ) => 504,
        (_, ErrorSource::Upstream) => 502,
        (
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
            ErrorSource::Downstream,
        ) => 0,
        (ErrorType::ReadTimedout, ErrorSource::Downstream) => 408,
        (_, ErrorSource::Downstream) => 400,
        _ => 500,
    }
}

enum HostLookup {
    Found(String),
    Missing,
    Invalid(&'static str),
}

/// The request's host: the Host header, or the authority of an absolute-form target.
/// HTTP/1.1 requires Host (RFC 9112 3.2); HTTP/1.0 without it is treated as an unknown host.
fn request_host(request: &RequestHeader) -> HostLookup {
    let raw = match request.headers.get(http::header::HOST) {
        Some(value) => value.as_bytes(),
        None => match request.uri.authority() {
            Some(authority) => authority.as_str().as_bytes(),
            None if request.version == http::Version::HTTP_10 => return HostLookup::Missing,
            None => return HostLookup::Invalid("missing Host header\n"),
        },
    };
    match normalize_host(raw) {
        Ok(Some(host)) => HostLookup::Found(host),
        Ok(None) => HostLookup::Missing,
        Err(_) => HostLookup::Invalid("invalid Host header\n"),
    }
}

/// Refuses framing that Pingora tolerates but a strict edge should not. RFC 9112 6.1 lets a
/// server either reject Transfer-Encoding with Content-Length or drop the length; Pingora
/// drops it (and closes after), we reject, since the pair is the classic smuggling vector.
fn check_framing(session: &Session) -> Option<LocalAnswer> {
    let request = session.req_header();
    if request.method == http::Method::CONNECT {
        return Some(LocalAnswer::text(405, "CONNECT is not supported\n").closing());
    }
    let has_te = request
        .headers
        .contains_key(http::header::TRANSFER_ENCODING);
    if has_te
        && (request.headers.contains_key(http::header::CONTENT_LENGTH)
            || raw_has_content_length(session))
    {
        return Some(
            LocalAnswer::text(400, "both Transfer-Encoding and Content-Length\n").closing(),
        );
    }
    None
}

/// Whether the request head as received had a Content-Length line (Pingora removes it from
/// the parsed header when Transfer-Encoding is present). Only called for chunked requests.
fn raw_has_content_length(session: &Session) -> bool {
    let Some(h1) = session.as_downstream().as_http1() else {
        return false;
    };
    let raw = h1.get_headers_raw_bytes();
    raw.split(|b| *b == b'\n')
        .any(|line| line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
}

/// 413 before reading a body whose declared length is over the limit.
fn check_declared_length(request: &RequestHeader, limit: u64) -> Option<LocalAnswer> {
    if limit == 0 {
        return None;
    }
    let declared = request
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())?;
    (declared > limit).then(|| LocalAnswer::text(413, "request body too large\n").closing())
}

fn unknown_host(answer: UnknownHostAnswer) -> LocalAnswer {
    match answer {
        UnknownHostAnswer::Close => LocalAnswer::text(0, "").closing(),
        UnknownHostAnswer::Status(status) => LocalAnswer::text(status, "unknown host\n"),
    }
}

fn is_get_or_head(request: &RequestHeader) -> bool {
    request.method == http::Method::GET || request.method == http::Method::HEAD
}

fn scheme(session: &Session) -> &'static str {
    let tls = session
        .digest()
        .is_some_and(|digest| digest.ssl_digest.is_some());
    if tls {
        "https"
    } else {
        "http"
    }
}
