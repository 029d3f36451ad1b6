//! [`EdgeProxy`]: the `ProxyHttp` implementation. It coordinates and decides nothing itself:
//! each phase hands the request to the module that owns that step.
//!
//! | phase | owner | what happens |
//! |---|---|---|
//! | `early_request_filter` | [`crate::client`], `observe` | who is asking and over which scheme; the request id |
//! | `request_filter` | [`crate::route`] | framing, health path, Host -> site -> location, and what the location's action means |
//! | | [`crate::guard`] | declared body size, user-agent and deny rules, allow lists, rate limits |
//! | | [`crate::auth`] | the location's authentication: basic or forward auth (may refuse) |
//! | | [`crate::plugin`] | the request phase of the location's plugins (may answer) |
//! | | `cache` | the hot-object fast path: a fresh hit is answered here |
//! | `request_filter` (buffering) | [`crate::upstream`] | where `request_buffering` is on, the body received whole first (memory, then a temporary file) |
//! | `request_body_filter`, `buffered_request_body` | `ctx`, [`crate::upstream`] | the body limit, counted as the body streams; a buffered body forwarded part by part |
//! | `request_cache_filter`, `cache_key_callback`, `cache_hit_filter`, `response_cache_filter`, `cache_vary_filter`, `should_serve_stale` | `cache` | cache policy: enable (with the lock or not), key, the lock for stale entries, cacheability, variance, stale |
//! | `upstream_peer` | [`crate::upstream`] | the resolved address from the resolver's table; never a lookup |
//! | `upstream_request_filter` | `upstream`, [`crate::client`], `auth`, [`crate::compress`], plugins | Host, forwarding headers, client-IP header, request id, `Authorization` removed and forward auth's headers set, the coding asked of the upstream, the operator's `proxy_headers`, plugins |
//! | `upstream_response_filter` | `observe`, plugins, [`crate::compress`] | upstream status and timing; plugins; the coding of the response (before caching) |
//! | `upstream_response_body_filter` | [`crate::compress`] | the body compressed as it arrives, so the cache stores it compressed |
//! | `response_filter`, `response_body_filter` | [`crate::answer`], `cache`, `observe`, plugins | the site's page in place of an upstream error (`intercept_errors`), cache status header, request id, plugins |
//! | `fail_to_proxy` | [`crate::answer`] | what an error becomes; the site's error page |
//! | `logging` | [`crate::observe`], plugins | one metrics update and one access-log line |

mod ctx;

pub use ctx::RequestCtx;

use arc_swap::ArcSwap;
use bytes::Bytes;
use pingora::cache::key::HashBinary;
use pingora::cache::{CacheKey, CacheMeta, ForcedFreshness, HitHandler, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::proxy::{DownstreamEnd, FailToProxy, ProxyHttp, Session, SharedPeer};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::answer::{LocalAnswer, Reply, ResponseBody};
use crate::auth::AuthVerdict;
use crate::ban::BanTable;
use crate::cache::hooks as cache_hooks;
use crate::cache::{CacheStatus, EdgeCache, FreshHit};
use crate::compress::CompressRequest;
use crate::guard::{GuardVerdict, Refusal};
use crate::model::RuntimeConfig;
use crate::observe::{
    ClientClose, LogBudget, Observability, RequestRecord, UpstreamErrorKind, REQUEST_ID_HEADER,
    REQUEST_ID_NAME,
};
use crate::plugin::{PluginChain, PluginCtx, RequestFlow};
use crate::route::{Next, Routed, Routing};
use crate::upstream::{apply_forwarded_headers, BufferedBody, HeaderVars, ReceiveError};

/// Headers set on a fresh hit's header after it is built: the request id (by
/// `tag_response`) and `Connection` (by Pingora, which also sets `Date`). A kept hit header
/// carries them already, so setting them replaces a value. A hit written from the kept
/// head serialized (`write_prepared_response`) gets the same two after that head:
/// `Connection` from the session, the request id as its extra field.
static HIT_PRESET: [(http::HeaderName, http::HeaderValue); 2] = [
    (
        http::header::CONNECTION,
        http::HeaderValue::from_static("keep-alive"),
    ),
    (
        http::HeaderName::from_static(REQUEST_ID_NAME),
        http::HeaderValue::from_static(""),
    ),
];

/// The edge proxy. Cheap to share and to clone: the config sits behind an [`ArcSwap`] so a
/// reload swaps it atomically while in-flight requests finish on the config they started
/// with.
#[derive(Clone)]
pub struct EdgeProxy {
    config: Arc<ArcSwap<RuntimeConfig>>,
    observability: Option<Arc<Observability>>,
    cache: &'static EdgeCache,
    /// Failed requests logged per second; the rest are counted in a summary line.
    error_log: Arc<LogBudget>,
    /// The process's bans, answered before routing.
    bans: Arc<BanTable>,
}

/// Failed requests logged at ERROR per second (each is counted in metrics regardless).
const ERROR_LINES_PER_SECOND: u32 = 10;

impl EdgeProxy {
    /// A proxy serving the config in `config` (swap a new one in to reload; see
    /// [`crate::ConfigReloader`]), caching in `cache`.
    pub fn new(config: Arc<ArcSwap<RuntimeConfig>>, cache: &'static EdgeCache) -> Self {
        Self {
            config,
            observability: None,
            cache,
            error_log: Arc::new(LogBudget::new(ERROR_LINES_PER_SECOND)),
            bans: Arc::new(BanTable::new(1, None)),
        }
    }

    /// The same proxy answering clients banned in `bans` before routing, and adding the
    /// bans the config's `[bans]` rules decide to it.
    pub fn with_bans(mut self, bans: Arc<BanTable>) -> Self {
        self.bans = bans;
        self
    }

    /// A banned client's refusal (before routing), or a trap path's: the client is banned
    /// now. `None` for everyone else (one atomic load without bans or trap rules).
    fn refuse_banned(&self, session: &Session, ctx: &mut RequestCtx) -> Option<Reply> {
        let ip = ctx.client_ip?;
        let rules = &ctx.config.bans;
        let rule = match self.bans.banned(ip) {
            Some(rule) => rule,
            None if rules.has_traps() => {
                let rule = rules.trap(ip, session.req_header().uri.path())?;
                let ban = self.bans.ban(ip, rule.duration, &rule.name);
                tracing::info!(client = %ip, rule = %ban.rule, until = ban.until, "client banned (trap path)");
                ban.rule
            }
            None => return None,
        };
        ctx.record.ban = Some(rule);
        if let Some(observability) = &self.observability {
            observability.metrics().ban_refused();
        }
        Some(Reply::Send(rules.refusal()))
    }

    /// Counts a finished request's answer against the status ban rules; bans its client
    /// when one trips.
    fn count_for_bans(&self, session: &Session, ctx: &mut RequestCtx) {
        let (Some(ip), None) = (ctx.client_ip, &ctx.record.ban) else {
            return;
        };
        let Some(status) = session.response_written().map(|r| r.status.as_u16()) else {
            return;
        };
        if let Some(rule) = ctx.config.bans.count_answer(ip, status) {
            let ban = self.bans.ban(ip, rule.duration, &rule.name);
            tracing::info!(client = %ip, rule = %ban.rule, until = ban.until, "client banned");
        }
    }

    /// The same proxy recording metrics and access-log lines into `observability`.
    pub fn with_observability(mut self, observability: Arc<Observability>) -> Self {
        self.observability = Some(observability);
        self
    }

    /// Adopts what routing found (the site, the location and its body limit); returns
    /// what the location does next.
    fn enter_site(&self, ctx: &mut RequestCtx, routed: Routed) -> Next {
        if let Some(location) = &routed.location {
            ctx.body.limit = location.guards().body_limit();
        }
        let plugins = routed
            .location
            .as_deref()
            .map_or(routed.site.plugins(), |l| l.plugins());
        ctx.route.has_plugins = !plugins.is_empty();
        ctx.route.host = routed.host;
        ctx.route.site = Some(routed.site);
        ctx.route.location = routed.location;
        routed.next
    }

    /// Routes the request and runs its location's guards: what the location does next and how
    /// long rate limiting holds the request first, or the reply that ends it here.
    fn admit(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
    ) -> Result<(Next, Duration), Box<Reply>> {
        let raw_head = || {
            let h1 = session.as_downstream().as_http1()?;
            Some(h1.get_headers_raw_bytes())
        };
        let request = session.req_header();
        let routed = match ctx.config.routes.route(request, ctx.scheme, raw_head) {
            Routing::Answered(reply) => return Err(reply),
            Routing::Site(routed) => routed,
        };
        let next = self.enter_site(ctx, routed);
        let (Some(site), Some(location)) =
            (ctx.route.site.as_deref(), ctx.route.location.as_deref())
        else {
            return Ok((next, Duration::ZERO));
        };
        let client = (site.name(), location.index());
        match location.guards().check(request, ctx.client_ip, client) {
            GuardVerdict::Pass {
                delay,
                zones,
                permits,
            } => {
                self.record_rate_limit_pass(&mut ctx.record, &zones, delay.is_zero());
                ctx.permits = permits;
                Ok((next, delay))
            }
            GuardVerdict::Refuse(answer, why) => {
                self.record_refusal(&mut ctx.record, site.name(), &why);
                Err(Box::new(Reply::Send(answer)))
            }
        }
    }

    /// Counts a request the rate limits let through (and notes it for the access log).
    fn record_rate_limit_pass(&self, record: &mut RequestRecord, zones: &[&str], at_once: bool) {
        if zones.is_empty() {
            return;
        }
        let outcome = if at_once { "passed" } else { "delayed" };
        record.rate_limit = Some(outcome);
        if let Some(observability) = &self.observability {
            for zone in zones {
                observability.metrics().rate_limit_decision(zone, outcome);
            }
        }
    }

    /// Counts a refusal by a deny rule or a rate limit (and notes it for the access log).
    fn record_refusal(&self, record: &mut RequestRecord, site: &str, why: &Refusal) {
        let metrics = self.observability.as_ref().map(|o| o.metrics());
        match why {
            Refusal::RateLimit(zone) => {
                record.rate_limit = Some("rejected");
                if let Some(metrics) = metrics {
                    metrics.rate_limit_decision(zone, "rejected");
                }
            }
            Refusal::ConnectionLimit(zone) => {
                record.rate_limit = Some("connection_limit");
                if let Some(metrics) = metrics {
                    metrics.connection_limit_rejected(zone);
                }
            }
            _ => {}
        }
        if let (Some(list), Some(metrics)) = (why.access_list(), metrics) {
            metrics.deny_hit(site, list);
        }
    }

    /// For a location that buffers requests (`request_buffering`): receives the body whole
    /// before anything goes upstream; a body over the limit is answered 413 here.
    async fn buffer_request_body(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Reply>> {
        if session.is_body_done() {
            return Ok(None);
        }
        // A client waiting for `100 Continue` would send nothing: the proxy, which takes the
        // body now, answers it (and the upstream is not asked again, see
        // `upstream_request_filter`).
        if expects_continue(session.req_header()) {
            session.write_continue_response().await?;
        }
        let memory = ctx.config.server.client.request_buffer_size;
        match BufferedBody::receive(session, memory, ctx.body.limit).await {
            Ok(body) => {
                ctx.buffered_body = Some(Box::new(body));
                Ok(None)
            }
            Err(ReceiveError::TooLarge) => {
                let answer = LocalAnswer::text(413, "request body too large\n").closing();
                Ok(Some(Reply::Send(answer)))
            }
            Err(ReceiveError::Failed(e)) => Err(e),
        }
    }

    /// Runs the location's authentication, if it has one: `None` lets the request go on,
    /// an answer refuses it (401/403, or 503 when authentication could not decide).
    async fn authenticate(&self, session: &Session, ctx: &mut RequestCtx) -> Option<LocalAnswer> {
        let auth = ctx.route.location.as_deref()?.auth()?.clone();
        let site = ctx.route.site.as_deref().map_or("", |s| s.name());
        let request = crate::auth::AuthRequest {
            header: session.req_header(),
            host: &ctx.route.host,
            scheme: ctx.scheme,
            client_ip: ctx.client_ip,
        };
        // Boxed: the check's future (an HTTP client's for forward auth) would otherwise
        // sit in every request's `request_filter` future, with or without authentication.
        let verdict = Box::pin(auth.check(&request)).await;
        if let Some(observability) = &self.observability {
            observability
                .metrics()
                .auth_decision(site, verdict.outcome());
        }
        match verdict {
            AuthVerdict::Allow { user, headers } => {
                ctx.record.user = user;
                ctx.auth_headers = headers;
                None
            }
            AuthVerdict::Deny(answer) => Some(answer),
            AuthVerdict::Error { answer, why } => {
                tracing::error!(site, error = %why, "authentication could not decide; request refused");
                Some(answer)
            }
        }
    }

    /// The plugins this request runs and what they see of it (counting their events into
    /// the proxy's metrics); `None` when there are none.
    fn plugins<'a>(&'a self, ctx: &'a RequestCtx) -> Option<(&'a PluginChain, PluginCtx<'a>)> {
        let (chain, plugin_ctx) = ctx.plugins()?;
        Some(match &self.observability {
            Some(observability) => (chain, plugin_ctx.with_metrics(observability.metrics())),
            None => (chain, plugin_ctx),
        })
    }

    /// Runs the request phase of the plugins; the first answer wins.
    async fn run_request_plugins(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
    ) -> Result<Option<LocalAnswer>> {
        let Some((chain, plugin_ctx)) = self.plugins(ctx) else {
            return Ok(None);
        };
        for plugin in chain.iter() {
            if let RequestFlow::Answer(answer) = plugin.request(session, plugin_ctx).await? {
                return Ok(Some(answer));
            }
        }
        Ok(None)
    }

    /// Runs the response phase of the plugins on a header about to be sent.
    fn run_response_plugins(&self, header: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
        let Some((chain, plugin_ctx)) = self.plugins(ctx) else {
            return Ok(());
        };
        chain
            .iter()
            .try_for_each(|plugin| plugin.response(header, plugin_ctx))
    }

    /// The hot-object fast path: a fresh object held in memory for a proxied location.
    fn fresh_cache_hit(&self, session: &Session, ctx: &mut RequestCtx) -> Option<FreshHit> {
        let policy = ctx.route.location.as_ref().and_then(|l| l.cache());
        cache_hooks::fresh_hit(
            self.cache,
            session.req_header(),
            policy,
            ctx.scheme,
            &ctx.route.host,
            ctx.compress.as_deref().map(CompressRequest::variant),
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
        close_after_if_shutting_down(session);
        ctx.record.cache_status = Some(CacheStatus::Hit.as_str());
        let status_name = cache_hooks::status_header_name(&ctx.cache);
        // Without plugins to see the header or an error page to put in its place, the head
        // kept with the entry is written as it was serialized, the request id after it
        // (HTTP/1; the session says whether it could).
        if self.plugins(ctx).is_none() {
            if let Some(head) = hit.prepared_head(hit.at(), status_name, &HIT_PRESET)? {
                let id = ctx.record.request_id.header_value_ref();
                if !intercepts_error(ctx, head.header().status.as_u16())
                    && session
                        .as_downstream_mut()
                        .write_prepared_response(&head, &[(&REQUEST_ID_HEADER, id)], &hit.body())
                        .await?
                {
                    return Ok(());
                }
            }
        }
        let mut header = hit.response_header(hit.at(), status_name, &HIT_PRESET)?;
        self.intercept_upstream_error(session, &mut header, ctx)?;
        self.tag_response(&mut header, ctx)?;
        let body = match std::mem::take(&mut ctx.response_body) {
            ResponseBody::Replaced(page) => page,
            _ => hit.body(),
        };
        crate::answer::write_response(session, header, body).await
    }

    /// What every response from the cache or the upstream gets: the cache status (header
    /// and log), the request id and plugins' response headers.
    fn finish_response_header(
        &self,
        header: &mut ResponseHeader,
        ctx: &mut RequestCtx,
        cache_status: Option<CacheStatus>,
    ) -> Result<()> {
        ctx.record.cache_status = cache_status.map(|s| s.as_str());
        cache_hooks::add_status_header(&ctx.cache, cache_status, header)?;
        self.tag_response(header, ctx)
    }

    /// Where the location intercepts errors (`intercept_errors`) and the site has a page for
    /// the upstream's error status: the page replaces the upstream's body, status kept.
    fn intercept_upstream_error(
        &self,
        session: &Session,
        header: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = header.status.as_u16();
        if !intercepts_error(ctx, status) {
            return Ok(());
        }
        let Some(page) = ctx.route.site.as_deref().and_then(|s| s.error_page(status)) else {
            return Ok(());
        };
        crate::answer::intercept_error_header(header, page.len())?;
        if session.req_header().method != http::Method::HEAD {
            ctx.response_body = ResponseBody::Replaced(page.clone());
        }
        Ok(())
    }

    /// The request id and plugins' response headers.
    fn tag_response(&self, header: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
        ctx.record.tag_response(header)?;
        self.run_response_plugins(header, ctx)
    }

    /// Sends a reply the proxy makes itself: the site's error page for error statuses,
    /// plugins' headers; then throws away what is left of the request body (bounded), so the
    /// client reads the answer. Or closes the connection without a response.
    async fn send(&self, session: &mut Session, ctx: &RequestCtx, reply: Reply) -> Result<()> {
        let mut answer = match reply {
            Reply::Send(answer) => answer,
            Reply::Close => {
                session.set_keepalive(None);
                return Ok(());
            }
        };
        close_after_if_shutting_down(session);
        let site = ctx.route.site.as_deref().filter(|_| !ctx.offline);
        if let Some(page) = site.and_then(|site| site.error_page(answer.status)) {
            answer.body = page.clone();
            answer.content_type = LocalAnswer::html(0, "").content_type;
        }
        let mut header = answer.response_header()?;
        self.tag_response(&mut header, ctx)?;
        answer.write(session, header).await?;
        if !ctx.lingering_done {
            let bounds = &ctx.config.server.client.lingering;
            crate::answer::discard_request_body(session, bounds).await;
        }
        Ok(())
    }
}

impl ProxyHttp for EdgeProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.config.load_full(), self.observability.as_deref())
    }

    /// None: compression is proxy-core's own (`compress`). Pingora's default adds its
    /// compression module, disabled, which still cost every request a context, two
    /// allocations and a call per response header and body chunk.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let peer = match session.client_addr() {
            Some(PeerAddr::Inet(addr)) => Some(addr.ip()),
            _ => None,
        };
        ctx.record.request_id = crate::observe::request_id_for(session.req_header());
        (ctx.client_ip, ctx.scheme) =
            ctx.config
                .client
                .client(peer, &session.req_header().headers, scheme(session));
        // Between two reads of the body, and for the client to take each part of the answer.
        let limits = &ctx.config.server.client;
        session.set_read_timeout(Some(limits.body_timeout));
        session.set_write_timeout(Some(limits.send_timeout));
        Ok(())
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        if client_gave_up(error) {
            // nginx logs these ("client prematurely closed connection", "client timed out")
            // at `info`, below its default level; here at `debug`, below the default `info`.
            // A crawler that drops its connections would otherwise fill the error log, and
            // the access log has the request (499 where the upstream had it).
            tracing::debug!(error = %error, "the client went away before its answer");
            return true;
        }
        !self.error_log.allow("failed request")
    }

    fn downstream_ended(&self, end: DownstreamEnd<'_>) {
        let reason = match end {
            DownstreamEnd::IdleTimeout => ClientClose::KeepaliveTimeout,
            DownstreamEnd::HeadError(e) => match e.etype() {
                ErrorType::ReadTimedout => ClientClose::HeaderTimeout,
                ErrorType::HTTPStatus(status) => {
                    tracing::info!(status, error = %e, "request head refused");
                    ClientClose::HeaderTooLarge
                }
                _ => return,
            },
        };
        if let Some(observability) = &self.observability {
            observability.metrics().client_closed(reason);
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if let Some(refusal) = self.refuse_banned(session, ctx) {
            self.send(session, ctx, refusal).await?;
            return Ok(true);
        }
        let reply = match self.admit(session, ctx) {
            Err(reply) => *reply,
            Ok((next, delay)) => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let answer = match self.authenticate(session, ctx).await {
                    Some(refusal) => Some(refusal),
                    None if self.plugins(ctx).is_some() => {
                        self.run_request_plugins(session, ctx).await?
                    }
                    None => None,
                };
                match (answer, next) {
                    (Some(answer), _) => Reply::Send(answer),
                    (None, Next::Answer(answer)) => Reply::Send(*answer),
                    (None, Next::Proxy(upstream)) => {
                        ctx.route.upstream = Some(upstream);
                        ctx.compress = compress_request(session, ctx);
                        if let Some(hit) = self.fresh_cache_hit(session, ctx) {
                            self.write_cache_hit(session, ctx, hit).await?;
                            return Ok(true);
                        }
                        let buffers = ctx
                            .route
                            .location
                            .as_deref()
                            .is_some_and(|l| l.buffers_requests());
                        if !buffers {
                            return Ok(false);
                        }
                        match self.buffer_request_body(session, ctx).await? {
                            None => return Ok(false),
                            Some(refusal) => refusal,
                        }
                    }
                }
            }
        };
        self.send(session, ctx, reply).await?;
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
        if ctx.body.add(chunk.len()) {
            return Error::e_explain(
                ErrorType::HTTPStatus(413),
                "request body larger than the limit",
            );
        }
        Ok(())
    }

    async fn buffered_request_body(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Bytes>> {
        match ctx.buffered_body.as_mut() {
            Some(body) => body.next_part().await,
            None => Ok(None),
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let peer = self.upstream_peer_shared(session, ctx).await?;
        Ok(Box::new(HttpPeer::clone(&peer)))
    }

    async fn upstream_peer_shared(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<SharedPeer> {
        let Some(upstream) = ctx.route.upstream.as_ref() else {
            return Error::e_explain(
                ErrorType::InternalError,
                "no upstream selected for this request",
            );
        };
        ctx.record.upstream_started = Some(Instant::now());
        // Each attempt forwards a buffered body from its start.
        if let Some(body) = ctx.buffered_body.as_mut() {
            body.rewind();
            ctx.body.restart();
        }
        // A retry's pick replaces the previous one, giving back its in-flight count.
        ctx.route.in_flight = None;
        let peer = match &upstream.pool {
            None => upstream.shared_peer().map(|peer| (peer, None)),
            Some(_) => {
                // A retry avoids the address whose connection just failed.
                let failed = match &ctx.record.upstream_addr {
                    Some(PeerAddr::Inet(addr)) if ctx.record.upstream_retried => Some(addr),
                    _ => None,
                };
                let uri = &session.req_header().uri;
                let key = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
                upstream.peer_for(key.as_bytes(), failed)
            }
        };
        match peer {
            Some((peer, in_flight)) => {
                ctx.record.upstream_addr = Some(peer._address.clone());
                ctx.route.in_flight = in_flight;
                Ok(SharedPeer::Shared(peer))
            }
            None if offline_policy(ctx).is_some() => {
                ctx.offline = true;
                let why = format!("upstream `{}`: every address is down", upstream.name);
                Err(Error::explain(ErrorType::HTTPStatus(503), why).into_up())
            }
            None => {
                ctx.record.upstream_error = Some(UpstreamErrorKind::Dns);
                let why = match &upstream.pool {
                    None => format!(
                        "upstream `{}`: `{}` has not resolved yet",
                        upstream.name, upstream.host
                    ),
                    Some(_) => format!(
                        "upstream `{}`: no healthy address (or none resolved yet)",
                        upstream.name
                    ),
                };
                Err(Error::explain(ErrorType::ConnectNoRoute, why).into_up())
            }
        }
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Some(upstream) = ctx.route.upstream.as_ref() else {
            return e;
        };
        let Some(pool) = &upstream.pool else {
            return e;
        };
        if let PeerAddr::Inet(addr) = &peer._address {
            pool.mark_failed(addr);
        }
        // One retry, on another address, of a request nothing of which reached the upstream.
        let idempotent = session.req_header().method.is_idempotent();
        if pool.retry
            && idempotent
            && !ctx.record.upstream_retried
            && !session.as_ref().retry_buffer_truncated()
        {
            ctx.record.upstream_retried = true;
            if let Some(observability) = &self.observability {
                observability.metrics().upstream_retry(&upstream.name);
            }
            e.set_retry(true);
        } else {
            e.set_retry(false);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.buffered_body.is_some() {
            // The body is here already; the client had its `100 Continue` from the proxy.
            upstream_request.remove_header(&http::header::EXPECT);
        }
        let Some(upstream) = ctx.route.upstream.as_ref() else {
            return Ok(());
        };
        let location = ctx.route.location.as_deref();
        let host_header = location
            .and_then(|l| l.host_header())
            .unwrap_or(&upstream.host_header);
        // The operator's rules read the request as the client sent it, and have the last word.
        let own_headers = location.and_then(|l| l.proxy_headers()).map(|rules| {
            let peer_ip = match session.client_addr() {
                Some(PeerAddr::Inet(addr)) => Some(addr.ip().to_canonical()),
                _ => None,
            };
            let vars = HeaderVars {
                client_ip: ctx.client_ip,
                peer_ip,
                scheme: ctx.scheme,
                host: &ctx.route.host,
                request_id: ctx.record.request_id.as_str(),
            };
            rules.render(upstream_request, &vars)
        });
        // The request id, the client-IP header and the X-Forwarded-* headers are written after
        // the request's own headers rather than added to its map (`set_wire_header`), so they
        // come after every change made to the map here. A later change of any header (auth,
        // compression, the operator's rules) moves them into the map first.
        let client_ip = ctx.client_ip.map(crate::client::ip_header_value);
        apply_forwarded_headers(
            upstream_request,
            host_header,
            &ctx.config.client,
            client_ip,
            ctx.scheme,
        )?;
        upstream_request.set_wire_header(
            REQUEST_ID_HEADER.clone(),
            ctx.record.request_id.header_value(),
        )?;
        if let Some(auth) = location.and_then(|l| l.auth()) {
            auth.prepare_upstream(upstream_request, &ctx.auth_headers)?;
        }
        if let Some(compress) = ctx.compress.as_deref() {
            compress.upstream_request(upstream_request)?;
        }
        if let Some(own_headers) = own_headers {
            own_headers.apply(upstream_request)?;
        }
        let Some((chain, plugin_ctx)) = self.plugins(ctx) else {
            return Ok(());
        };
        // Plugins read the request's map: every header set above is in it.
        upstream_request.merge_wire_headers()?;
        for plugin in chain.iter() {
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
        ctx.record.upstream_responded(upstream_response);
        if let Some((chain, plugin_ctx)) = self.plugins(ctx) {
            chain
                .iter()
                .try_for_each(|plugin| plugin.upstream_response(upstream_response, plugin_ctx))?;
        }
        match ctx.compress.as_deref_mut() {
            Some(compress) => compress.response_header(upstream_response),
            None => Ok(()),
        }
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        let Some(compress) = ctx.compress.as_deref_mut() else {
            return Ok(None);
        };
        let done = compress.response_body(body, end_of_stream)?;
        if let (Some(done), Some(observability)) = (done, &self.observability) {
            observability.metrics().compressed(
                done.encoding.token(),
                done.bytes_in,
                done.bytes_out,
            );
        }
        Ok(None)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        close_after_if_shutting_down(session);
        self.intercept_upstream_error(session, upstream_response, ctx)?;
        let cache_status = match ctx.offline {
            true => {
                upstream_response.insert_header(OFFLINE_HEADER, "1")?;
                Some(CacheStatus::Stale)
            }
            false => cache_hooks::status(session, &ctx.cache),
        };
        self.finish_response_header(upstream_response, ctx, cache_status)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        ctx.response_body.filter(body);
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        self.count_for_bans(session, ctx);
        if let Some(observability) = &self.observability {
            observability.finish_request(session, error, ctx.facts());
            if let Some(reason) = client_close(session, error) {
                observability.metrics().client_closed(reason);
            }
        }
        let Some((chain, plugin_ctx)) = self.plugins(ctx) else {
            return;
        };
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        for plugin in chain.iter() {
            plugin.logging(session, status, plugin_ctx);
        }
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        if ctx.route.upstream.is_none() {
            return Ok(());
        }
        let policy = ctx.route.location.as_ref().and_then(|l| l.cache());
        cache_hooks::request_cache_filter(
            self.cache,
            session,
            policy,
            ctx.scheme,
            &ctx.route.host,
            &mut ctx.cache,
        );
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
        ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        let coding = ctx.compress.as_deref().map(|c| c.variant());
        cache_hooks::variance(meta, req, coding)
    }

    fn should_serve_stale(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        cache_hooks::should_serve_stale(session, &ctx.cache, error)
    }

    async fn cache_hit_filter(
        &self,
        session: &mut Session,
        meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        is_fresh: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<ForcedFreshness>> {
        cache_hooks::hit_found(self.cache, session, meta, is_fresh, &mut ctx.cache);
        if !is_fresh {
            // Offline: a stale answer within the site's window is served as it is.
            let within = |stale: Duration| {
                SystemTime::now()
                    .duration_since(meta.fresh_until())
                    .map_or(true, |past| past <= stale)
            };
            if offline_policy(ctx).is_some_and(|o| within(o.stale)) {
                ctx.offline = true;
                return Ok(Some(ForcedFreshness::ForceFresh));
            }
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let mut reply = match ctx.route.site.as_deref().and_then(|s| s.offline()) {
            Some(offline) if ctx.offline => {
                let mut page = LocalAnswer::html(503, offline.page.clone()).closing();
                page.headers
                    .push((http::header::RETRY_AFTER, offline.retry_after.clone()));
                page.headers.push((
                    http::HeaderName::from_static(OFFLINE_HEADER),
                    http::HeaderValue::from_static("1"),
                ));
                Reply::Send(page)
            }
            _ => Reply::for_error(e),
        };
        // An upstream that failed before any of its answer reached the client (refused,
        // reset, timed out, an invalid head) leaves the client's connection as good as it
        // was: it stays open when the request has been read whole, as nginx keeps it.
        let keep_client = e.esource() == &ErrorSource::Upstream
            && session.response_written().is_none()
            && session.is_body_done();
        if keep_client {
            if let Reply::Send(answer) = &mut reply {
                answer.close = false;
            }
        }
        let error_code = reply.status();
        // A client whose body could not be read (too slow, gone) gets no lingering close:
        // the answer closes the connection at once.
        let client_failed = e.esource() == &ErrorSource::Downstream
            && matches!(
                e.etype(),
                ErrorType::ReadTimedout | ErrorType::ReadError | ErrorType::ConnectionClosed
            );
        if client_failed {
            session.set_keepalive(None);
            ctx.lingering_done = true;
        }
        if matches!(reply, Reply::Send(_)) && session.response_written().is_none() {
            if let Err(write_error) = self.send(session, ctx, reply).await {
                tracing::debug!(error = %write_error, "could not write error response");
            }
        }
        FailToProxy {
            error_code,
            can_reuse_downstream: keep_client,
        }
    }
}

/// Marks an answer served from cache because every address of the upstream is down.
const OFFLINE_HEADER: &str = "x-edge-offline";

/// The site's offline policy, when it has one and every address of the request's upstream
/// is down.
fn offline_policy(ctx: &RequestCtx) -> Option<&crate::route::OfflinePolicy> {
    let offline = ctx.route.site.as_deref()?.offline()?;
    let pool = ctx.route.upstream.as_deref()?.pool.as_deref()?;
    pool.all_down().then_some(offline)
}

/// Has a response written while the server shuts down (SIGTERM, or SIGQUIT after a binary
/// upgrade) say `Connection: close`, as nginx's do: the connection closes after it, and a
/// client told to keep it alive would send its next request into that close.
/// Whether the location intercepts errors (`intercept_errors`) and `status` is one: the
/// site's page for it, if it has one, then takes the response's place.
fn intercepts_error(ctx: &RequestCtx, status: u16) -> bool {
    status >= 400
        && ctx
            .route
            .location
            .as_deref()
            .is_some_and(|l| l.intercepts_errors())
}

fn close_after_if_shutting_down(session: &mut Session) {
    if session.is_process_shutting_down() {
        session.set_keepalive(None);
    }
}

/// Why this request's client connection closes, if a client limit closes it: a body or a
/// send timeout, or the last request `keepalive_requests` allows.
fn client_close(session: &Session, error: Option<&Error>) -> Option<ClientClose> {
    if let Some(e) = error.filter(|e| e.esource() == &ErrorSource::Downstream) {
        return match e.etype() {
            ErrorType::ReadTimedout => Some(ClientClose::BodyTimeout),
            ErrorType::WriteTimedout => Some(ClientClose::SendTimeout),
            _ => None,
        };
    }
    let last = session.get_keepalive_reuses_remaining() == Some(0);
    (last && session.get_keepalive().is_some()).then_some(ClientClose::KeepaliveRequests)
}

/// The compression state of a request about to be proxied, where its location compresses.
fn compress_request(session: &Session, ctx: &RequestCtx) -> Option<Box<CompressRequest>> {
    let policy = ctx.route.location.as_deref()?.compression()?;
    Some(Box::new(CompressRequest::new(policy, session.req_header())))
}

/// Whether the client waits for `100 Continue` before sending its body.
fn expects_continue(request: &RequestHeader) -> bool {
    request.version == http::Version::HTTP_11
        && request
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// The scheme of the connection the request came over.
/// A request that failed on the client's side of the connection: it closed or reset it, or
/// stopped reading or sending within the timeouts. Not the proxy's error, nor the upstream's.
fn client_gave_up(error: &Error) -> bool {
    error.esource() == &ErrorSource::Downstream
        && matches!(
            error.etype(),
            ErrorType::ConnectionClosed
                | ErrorType::ReadError
                | ErrorType::WriteError
                | ErrorType::ReadTimedout
                | ErrorType::WriteTimedout
        )
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
