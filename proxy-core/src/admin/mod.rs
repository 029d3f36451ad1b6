//! The admin listener: `/metrics`, `/healthz`, `/readyz`, and admin actions behind a bearer
//! token. It is a separate Pingora service on its own address (loopback by default), so the
//! public port never serves any of it.
//!
//! | path | auth | answer |
//! |---|---|---|
//! | `GET /metrics` | none | Prometheus text format |
//! | `GET /healthz` | none | 200 while the process serves |
//! | `GET /readyz` | none | 200 when every upstream name has resolved, if configured tailscaled reports `Running`, and every [`ReadinessCheck`] added (the userspace tailnet) is ready; else 503 with the reasons |
//! | `GET /admin/config` | token | JSON summary of the running config |
//! | `/admin/bans` | token | list (`GET`), add (`POST ?ip=IP&duration=1h`) and lift (`DELETE ?ip=IP`) bans ([`BansAction`]) |
//! | `/admin/NAME` | token | an action registered with [`AdminApp::add_action`] (e.g. cache purge) |
//!
//! Admin actions are off unless a token is configured (`admin.token_env` names an
//! environment variable holding it): then every `/admin/` path answers 403. A missing or
//! wrong token gets 401. Tokens are compared in constant time.
//!
//! To add an action to the listener [`crate::EdgeServices`] built, call
//! [`crate::EdgeServices::admin_mut`] then [`AdminApp::add_action`] before serving.

mod bans;
mod purge;

pub use bans::BansAction;
pub use purge::PurgeAction;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::collections::BTreeMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

use crate::model::RuntimeConfig;
use crate::observe::{LocalApiClient, Metrics};
use crate::upstream::MagicDnsResolver;

/// An admin action served at `/admin/NAME` once the bearer token checks out.
#[async_trait]
pub trait AdminAction: Send + Sync {
    /// Answers the request (its header is read; the body, if any, is not).
    async fn run(&self, session: &mut ServerSession) -> Response<Vec<u8>>;
}

/// Something more `/readyz` waits for (e.g. the userspace tailnet), beside the upstream
/// names and tailscaled.
pub trait ReadinessCheck: Send + Sync {
    /// Why it is not ready, if it is not (empty when ready). Must not wait.
    fn not_ready_reasons(&self) -> Vec<String>;
}

/// The admin HTTP app. Build it with [`AdminApp::new`], wrap it in a Pingora
/// `Service` listening on the admin address (see [`crate::EdgeServices`]).
pub struct AdminApp {
    metrics: Arc<Metrics>,
    resolver: Arc<MagicDnsResolver>,
    config: Arc<ArcSwap<RuntimeConfig>>,
    tailscaled: Option<LocalApiClient>,
    token: Option<String>,
    actions: BTreeMap<String, Arc<dyn AdminAction>>,
    readiness: Vec<Arc<dyn ReadinessCheck>>,
}

impl AdminApp {
    /// An admin app over these parts. `token` enables admin actions; `None` or empty keeps
    /// them off.
    pub fn new(
        metrics: Arc<Metrics>,
        resolver: Arc<MagicDnsResolver>,
        config: Arc<ArcSwap<RuntimeConfig>>,
        tailscaled: Option<LocalApiClient>,
        token: Option<String>,
    ) -> Self {
        Self {
            metrics,
            resolver,
            config,
            tailscaled,
            token: token.filter(|t| !t.is_empty()),
            actions: BTreeMap::new(),
            readiness: Vec::new(),
        }
    }

    /// Makes `/readyz` wait for `check` too.
    pub fn add_readiness_check(&mut self, check: Arc<dyn ReadinessCheck>) {
        self.readiness.push(check);
    }

    /// Serves `action` at `/admin/NAME` (behind the token, like every admin action).
    pub fn add_action(&mut self, name: &str, action: Arc<dyn AdminAction>) {
        self.actions.insert(name.to_owned(), action);
    }

    /// The refusal for a request without the configured token, `None` if it has it.
    /// Constant-time in the token's content, so timing reveals nothing beyond its length.
    fn refusal(&self, session: &ServerSession) -> Option<Response<Vec<u8>>> {
        let Some(expected) = &self.token else {
            return Some(text(StatusCode::FORBIDDEN, "admin actions are disabled\n"));
        };
        let presented = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if bool::from(presented.ct_eq(expected.as_bytes())) {
            None
        } else {
            let mut response = text(StatusCode::UNAUTHORIZED, "missing or wrong token\n");
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            Some(response)
        }
    }

    /// Why the proxy is not ready, if it is not.
    pub async fn not_ready_reasons(&self) -> Vec<String> {
        let mut reasons: Vec<String> = self
            .resolver
            .unresolved()
            .into_iter()
            .map(|name| format!("upstream name `{name}` has not resolved"))
            .collect();
        if let Some(client) = &self.tailscaled {
            match client.backend_state().await {
                Ok(state) if state == crate::observe::tailscaled::RUNNING => {}
                Ok(state) => reasons.push(format!("tailscaled is {state}, not Running")),
                Err(e) => reasons.push(e.to_string()),
            }
        }
        for check in &self.readiness {
            reasons.extend(check.not_ready_reasons());
        }
        reasons
    }

    async fn readyz(&self) -> Response<Vec<u8>> {
        let reasons = self.not_ready_reasons().await;
        if reasons.is_empty() {
            return text(StatusCode::OK, "ready\n");
        }
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", reasons.join("\n")),
        )
    }

    fn config_summary(&self) -> Response<Vec<u8>> {
        let config = self.config.load();
        let sites: Vec<_> = config
            .sites()
            .map(|site| serde_json::json!({ "name": site.name() }))
            .collect();
        let upstreams: Vec<_> = config
            .upstreams()
            .map(|u| {
                let addrs: Vec<String> = u
                    .addrs
                    .current()
                    .map(|a| a.iter().map(ToString::to_string).collect())
                    .unwrap_or_default();
                serde_json::json!({
                    "name": u.name,
                    "address": format!("{}:{}", u.host, u.port),
                    "tls": u.tls.is_some(),
                    "transport": u.transport(),
                    "resolved": addrs,
                    "stale": u.addrs.is_stale(),
                })
            })
            .collect();
        let body = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "sites": sites,
            "upstreams": upstreams,
        });
        let mut response = text(StatusCode::OK, format!("{body:#}\n"));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        response
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        let is_get = session.req_header().method == http::Method::GET;
        match path.as_str() {
            "/metrics" if is_get && !self.metrics.is_enabled() => text(
                StatusCode::NOT_FOUND,
                "metrics are off ([admin] metrics = false)\n",
            ),
            "/metrics" if is_get => {
                let mut response = text(StatusCode::OK, self.metrics.render());
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            "/healthz" if is_get => text(StatusCode::OK, "ok\n"),
            "/readyz" if is_get => self.readyz().await,
            _ => match path.strip_prefix("/admin/") {
                Some(action) => {
                    if let Some(refusal) = self.refusal(session) {
                        return refusal;
                    }
                    if action == "config" && is_get {
                        return self.config_summary();
                    }
                    match self.actions.get(action).cloned() {
                        Some(handler) => handler.run(session).await,
                        None => text(StatusCode::NOT_FOUND, "no such admin action\n"),
                    }
                }
                None => text(StatusCode::NOT_FOUND, "not found\n"),
            },
        }
    }
}

fn text(status: StatusCode, body: impl Into<Vec<u8>>) -> Response<Vec<u8>> {
    let body = body.into();
    // Pingora's ServeHttp writes no length; without one the connection cannot be reused.
    let length = http::HeaderValue::from(body.len());
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    headers.insert(http::header::CONTENT_LENGTH, length);
    response
}
