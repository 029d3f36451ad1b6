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
//! - [`client`]: who is asking (`Fly-Client-IP` from trusted proxies only).
//! - [`limit`], [`access`], [`guard`]: rate limits (nginx `limit_req` semantics, bounded
//!   memory), deny/allow lists and user-agent rules, run after routing.
//!
//! It is not a server: wiring listeners, signals and the CLI is the embedding app's job
//! (see `proxy-app`, or `examples/embed.rs` for a minimal one).

pub mod access;
pub mod answer;
pub mod builder;
pub mod client;
pub mod config;
pub mod guard;
pub mod limit;
pub mod proxy;
pub mod route;
pub mod runtime;
pub mod service;
pub mod upstream;

pub use proxy::{EdgeProxy, RequestCtx};
pub use runtime::{RuntimeConfig, ServerSettings, UnknownHostAnswer};
pub use service::{server_conf, EdgeServices};
pub use upstream::MagicDnsResolver;
