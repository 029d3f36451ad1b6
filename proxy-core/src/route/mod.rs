//! Which site and location serve a request, and what happens before any of their rules run:
//! framing checks, the health path, Host parsing, path normalisation, location matching
//! (nginx rules), and what the matched location's action means for this request.
//!
//! The compiled sites and locations live here too ([`Site`], [`Location`]): a location owns
//! its action, guards, plugins and cache policy, so routing hands the proxy everything a
//! request needs in one step.

mod host;
mod location;
mod path;
mod request;

pub use crate::hostname::{normalize_host, HostError};
pub(crate) use host::HostRouter;
pub use location::{Action, Location, LocationPattern, RedirectTarget};
pub(crate) use location::{LocationTable, RedirectVars};
pub use path::{normalize_path, PathError};
pub(crate) use request::{Next, Routed, Routing};

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;

use crate::plugin::PluginChain;

/// What a request for a Host that no site serves gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownHostAnswer {
    /// Close the connection without a response (nginx's `return 444`).
    Close,
    /// Answer with this status and a short body.
    Status(u16),
}

/// The `[server]` keys that decide what happens before any site matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoutingSettings {
    /// Path answered 200 locally for any Host, if any.
    pub health_path: Option<String>,
    /// Answer for unknown hosts.
    pub unknown_host: UnknownHostAnswer,
}

/// Every site by host, and the settings routing applies before a site matches.
#[derive(Debug)]
pub(crate) struct Routes {
    router: HostRouter,
    settings: RoutingSettings,
}

impl Routes {
    /// Routes over `router` with `settings`.
    pub(crate) fn new(router: HostRouter, settings: RoutingSettings) -> Self {
        Self { router, settings }
    }

    /// The site serving a normalised host, if any.
    pub(crate) fn site_for_host(&self, host: &str) -> Option<&Arc<Site>> {
        self.router.find(host)
    }

    /// Every site, once each, in no particular order.
    pub(crate) fn sites(&self) -> impl Iterator<Item = &Arc<Site>> {
        self.router.sites()
    }

    /// The routing settings.
    pub(crate) fn settings(&self) -> &RoutingSettings {
        &self.settings
    }
}

/// A site: the hosts it answers for, its locations, its error pages and its plugins.
#[derive(Debug)]
pub struct Site {
    name: String,
    hosts: Vec<String>,
    locations: LocationTable,
    error_pages: HashMap<u16, Bytes>,
    plugins: PluginChain,
    offline: Option<OfflinePolicy>,
}

/// What a site answers while every address of an upstream is down (`[sites.NAME.offline]`).
#[derive(Debug, Clone)]
pub(crate) struct OfflinePolicy {
    /// How long past its expiry a cached answer is still served.
    pub stale: std::time::Duration,
    /// The maintenance page's body.
    pub page: Bytes,
    /// Its `Retry-After`, in seconds.
    pub retry_after: http::HeaderValue,
}

impl Site {
    /// A site; `plugins` run for requests that match no location (each location carries the
    /// site's plugins it inherits in its own chain).
    pub(crate) fn new(
        name: String,
        hosts: Vec<String>,
        locations: LocationTable,
        error_pages: HashMap<u16, Bytes>,
        plugins: PluginChain,
    ) -> Self {
        Self {
            name,
            hosts,
            locations,
            error_pages,
            plugins,
            offline: None,
        }
    }

    /// Answers as `offline` says while an upstream is down.
    pub(crate) fn set_offline(&mut self, offline: OfflinePolicy) {
        self.offline = Some(offline);
    }

    /// What the site answers while every address of an upstream is down, if it says.
    pub(crate) fn offline(&self) -> Option<&OfflinePolicy> {
        self.offline.as_ref()
    }

    /// The site's name from the config (`[sites.NAME]`); also its metrics label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Host patterns as configured (normalised to lowercase).
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// The location serving a normalised path, by nginx's precedence rules.
    pub fn location_for_path(&self, path: &[u8]) -> Option<&Arc<Location>> {
        self.locations.find(path)
    }

    /// The error page (HTML) the site serves for `status`, if it configures one.
    pub fn error_page(&self, status: u16) -> Option<&Bytes> {
        self.error_pages.get(&status)
    }

    /// The site's own plugins.
    pub fn plugins(&self) -> &PluginChain {
        &self.plugins
    }
}
