//! # proxy-core
//!
//! The library behind a programmable edge proxy that puts services living on a Tailscale
//! tailnet on the public internet. It provides [`EdgeProxy`], a Pingora
//! [`ProxyHttp`](pingora::proxy::ProxyHttp) implementation, the services it runs in
//! ([`EdgeServices`]), and the config language that drives both ([`config`]).
//!
//! It is not a server: wiring listeners, signals and the CLI is the embedding app's job
//! (see `proxy-app`, or `examples/embed.rs` for a minimal one). It is not a place for
//! optional policies either: those are plugins ([`plugin`]), like the `plugins` crate's.
//!
//! # Map of the code
//!
//! One request, phase by phase (the table in [`EdgeProxy`]'s module says the same per
//! Pingora hook):
//!
//! | step | module | config it reads |
//! |---|---|---|
//! | who is asking | [`client`] | `[client]` |
//! | framing, health path, Host -> site -> location, the location's action | [`route`] | `[server]` `health_path`/`unknown_host`, `[sites.*]`, `[[sites.*.locations]]` |
//! | body size, user agents, deny and allow lists, rate limits | `guard` (with `access`, [`limit`]) | `max_body_size`, `[sites.*.access]`, `allow`, `[rate_limits.*]` |
//! | plugins | [`plugin`] | `[[sites.*.plugins]]`, `[[sites.*.locations.plugins]]` |
//! | cache policy and storage | [`cache`] | `cache = {...}`, `[cache]` |
//! | upstream peers, MagicDNS, forwarding headers | `upstream` ([`Upstream`], [`MagicDnsResolver`]) | `[upstreams.*]`, `[resolver]` |
//! | the userspace tailnet transport (cargo feature `tailscale-rs`) | [`tailnet`] | `transport = "tailscale-rs"`, `[tailnet]` |
//! | local answers and error pages | `answer` ([`LocalAnswer`], [`Reply`]) | `return`, `redirect`, `error_pages` |
//! | metrics, access log, request ids | [`observe`] | `[admin] metrics`, `[access_log]` |
//! | metrics and log lines pushed to the homelab (off the request path) | [`telemetry`] | `[telemetry]` |
//! | the admin listener | [`admin`] | `[admin]` |
//! | global rate limits and fleet-wide purge over Redis (off the request path) | [`fleet`] | `[redis]`, `scope = "global"` |
//!
//! And around it:
//!
//! | what | module |
//! |---|---|
//! | TOML / builders -> compiled model, every check, every default | [`config`] (`file.rs`: keys and defaults; `compile/<section>.rs`: checks) |
//! | the compiled model | [`RuntimeConfig`], [`route::Site`], [`route::Location`] |
//! | the per-request state | [`RequestCtx`] |
//! | starting what runs (proxy, admin, resolver, deny-list watching, telemetry shippers) | [`EdgeServices`] |
//! | swapping a new config in | [`ConfigReloader`] |
//!
//! Dependencies between modules go one way: `config` -> `model` -> `route` -> `guard`,
//! `plugin`, `cache`, `upstream` -> leaves (`access`, `limit`, `client`, `observe`,
//! `answer`); `proxy`, `service`, `reload` and `admin` sit on top. Nothing at request time
//! reads the plain config data.

#![deny(missing_docs)]
#![warn(unreachable_pub)]
#![forbid(unsafe_code)]

mod access;
pub mod admin;
mod answer;
mod auth;
pub mod ban;
pub mod cache;
pub mod client;
pub mod compress;
pub mod config;
pub mod fleet;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod guard;
mod hostname;
pub mod limit;
mod model;
pub mod observe;
pub mod plugin;
mod proxy;
mod reload;
pub mod route;
mod service;
pub mod tailnet;
pub mod telemetry;
mod text;
mod upstream;

pub use answer::{LocalAnswer, Reply};
pub use model::{AdminSettings, RuntimeConfig, ServerSettings};
pub use proxy::{EdgeProxy, RequestCtx};
pub use reload::{ConfigReloader, ReloadReport};
pub use service::{serve_listener, server_conf, EdgeApps, EdgeBackground, EdgeServices};
pub use upstream::{MagicDnsResolver, ResolverSettings, Upstream};
