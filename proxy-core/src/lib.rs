//! # proxy-core
//!
//! The library behind a programmable edge proxy that puts services living on a Tailscale
//! tailnet on the public internet. It provides [`EdgeProxy`], a Pingora
//! [`ProxyHttp`](pingora::proxy::ProxyHttp) implementation, and everything it runs on:
//!
//! - [`config`]: TOML in, a validated [`RuntimeConfig`] out, with errors naming file, line
//!   and key; [`builder`] builds the same runtime from code.
//! - [`route`]: Host -> site -> location (nginx matching rules on normalised paths).
//! - [`upstream`]: tailnet upstreams resolved through MagicDNS in the background
//!   ([`MagicDnsResolver`]), TLS with SNI and verification, forwarding headers.
//! - [`answer`]: local answers (returns, redirects, health, error pages).
//! - [`observe`]: Prometheus metrics, the JSON access log, request ids, tailscaled
//!   readiness; [`admin`]: the admin listener serving them.
//! - [`cache`]: response caching on pingora-cache (bounded memory storage, policies, purge).
//! - [`client`]: who is asking (`Fly-Client-IP` from trusted proxies only).
//! - [`limit`], [`access`], [`guard`]: rate limits (nginx `limit_req` semantics, bounded
//!   memory), deny/allow lists and user-agent rules, run after routing.
//! - [`plugin`]: the plugin trait and registry that sites and locations attach plugins
//!   from (built-in plugins live in the `plugins` crate).
//! - [`service`]: the Pingora services (proxy, resolver, admin) built from a config;
//!   [`reload`]: swapping a new config into them while they run.
//!
//! It is not a server: wiring listeners, signals and the CLI is the embedding app's job
//! (see `proxy-app`, or `examples/embed.rs` for a minimal one).

pub mod access;
pub mod admin;
pub mod answer;
pub mod builder;
pub mod cache;
pub mod client;
pub mod config;
pub mod guard;
pub mod limit;
pub mod observe;
pub mod plugin;
pub mod proxy;
pub mod reload;
pub mod route;
pub mod runtime;
pub mod service;
mod text;
pub mod upstream;

pub use observe::Observability;
pub use proxy::{EdgeProxy, RequestCtx};
pub use reload::{ConfigReloader, ReloadReport};
pub use runtime::{RuntimeConfig, ServerSettings, UnknownHostAnswer};
pub use service::{server_conf, EdgeServices};
pub use upstream::MagicDnsResolver;
