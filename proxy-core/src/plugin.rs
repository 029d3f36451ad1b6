//! The plugin trait: how embedders and the `plugins` crate add behaviour to the proxy.
//!
//! A plugin is attached to a site or a location in config (`[[sites.NAME.plugins]]` with
//! `use = "PLUGIN"` and the plugin's own options), built once at config compile time by a
//! [`PluginFactory`] registered under its name in a [`PluginRegistry`], and then called in
//! the request phases below. Site plugins run before location plugins, each in config order.
//!
//! Every method has a default that does nothing, so a plugin implements only the phases it
//! needs. Plugins see the request context read-only through [`PluginCtx`].

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::Result;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::answer::LocalAnswer;
use crate::route::{Location, Site};

/// What a plugin sees of the request: who is asking and what the router matched.
#[derive(Clone, Copy)]
pub struct PluginCtx<'a> {
    /// The client's address (see the client identity rules).
    pub client_ip: Option<IpAddr>,
    /// The matched site.
    pub site: &'a Site,
    /// The matched location, if any matched.
    pub location: Option<&'a Location>,
}

/// What the request phase decided.
#[derive(Debug)]
pub enum RequestFlow {
    /// Go on to the next plugin and then the location's action.
    Continue,
    /// Answer the request with this response; later plugins and the action do not run
    /// (response-phase plugins still see the answer's header).
    Answer(LocalAnswer),
}

/// A plugin. All methods default to doing nothing.
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// **Request phase**, after routing and before any upstream work (after the built-in
    /// checks such as body limits). May inspect the request and answer it itself by
    /// returning [`RequestFlow::Answer`]. Default: [`RequestFlow::Continue`].
    async fn request(&self, _session: &mut Session, _ctx: PluginCtx<'_>) -> Result<RequestFlow> {
        Ok(RequestFlow::Continue)
    }

    /// **Upstream request phase**, for proxied requests only, after the forwarding headers
    /// are set: may change the request sent to the upstream. Default: no change.
    async fn upstream_request(
        &self,
        _session: &Session,
        _request: &mut RequestHeader,
        _ctx: PluginCtx<'_>,
    ) -> Result<()> {
        Ok(())
    }

    /// **Upstream response phase**, for proxied responses only, before caching: changes
    /// here are stored in the cache. Default: no change.
    fn upstream_response(&self, _response: &mut ResponseHeader, _ctx: PluginCtx<'_>) -> Result<()> {
        Ok(())
    }

    /// **Response phase**, for every response sent to the client: proxied, cached, and
    /// answered locally (returns, redirects, error pages, other plugins' answers).
    /// Default: no change.
    fn response(&self, _response: &mut ResponseHeader, _ctx: PluginCtx<'_>) -> Result<()> {
        Ok(())
    }

    /// **Logging phase**, once per request after the response is sent (or failed), with the
    /// final status (0 when no response was written). Must not block. Default: nothing.
    fn logging(&self, _session: &Session, _status: u16, _ctx: PluginCtx<'_>) {}
}

/// A plugin's options as written in config: every key of its table except `use`.
pub type PluginOptions = toml::Table;

/// Builds a plugin from its options, or says (in words an operator can act on) what is
/// wrong with them. The error is reported at the plugin's config key with file and line.
pub type PluginFactory = Arc<
    dyn Fn(&PluginOptions, PluginSetup<'_>) -> std::result::Result<Arc<dyn Plugin>, String>
        + Send
        + Sync,
>;

/// What a plugin factory knows besides its options.
#[derive(Debug, Clone, Copy)]
pub struct PluginSetup<'a> {
    /// The config file's directory: resolve relative paths in options against it.
    pub base_dir: &'a std::path::Path,
}

impl PluginSetup<'_> {
    /// `path` from an option, resolved against the config file's directory.
    pub fn resolve(&self, path: &str) -> std::path::PathBuf {
        self.base_dir.join(path)
    }
}

/// Plugin factories by name. The app registers the built-in plugins; embedders add theirs.
#[derive(Clone, Default)]
pub struct PluginRegistry {
    factories: BTreeMap<String, PluginFactory>,
}

impl PluginRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a factory under `name` (replacing any with the same name).
    pub fn register(
        &mut self,
        name: impl Into<String>,
        factory: impl Fn(&PluginOptions, PluginSetup<'_>) -> std::result::Result<Arc<dyn Plugin>, String>
            + Send
            + Sync
            + 'static,
    ) -> &mut Self {
        self.factories.insert(name.into(), Arc::new(factory));
        self
    }

    /// Builds the plugin `name` from `options`.
    pub fn build(
        &self,
        name: &str,
        options: &PluginOptions,
        setup: PluginSetup<'_>,
    ) -> std::result::Result<Arc<dyn Plugin>, String> {
        match self.factories.get(name) {
            Some(factory) => factory(options, setup),
            None => Err(format!(
                "unknown plugin `{name}` (available: {})",
                if self.factories.is_empty() {
                    "none".to_string()
                } else {
                    self.names().join(", ")
                }
            )),
        }
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.factories.keys().map(String::as_str).collect()
    }
}

impl fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginRegistry")
            .field("plugins", &self.names())
            .finish()
    }
}

/// The plugins attached to a site or a location, in config order.
#[derive(Clone, Default)]
pub struct PluginList(Vec<Arc<dyn Plugin>>);

impl PluginList {
    /// A list from built plugins.
    pub fn new(plugins: Vec<Arc<dyn Plugin>>) -> Self {
        Self(plugins)
    }

    /// The plugins in call order.
    pub fn as_slice(&self) -> &[Arc<dyn Plugin>] {
        &self.0
    }
}

impl fmt::Debug for PluginList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PluginList({} plugins)", self.0.len())
    }
}

/// The plugins that apply to one request: the site's, then the location's.
#[derive(Clone, Default)]
pub struct PluginChain {
    plugins: Vec<Arc<dyn Plugin>>,
}

impl PluginChain {
    /// The chain for a site and (optionally) a location.
    pub fn for_request(site: &Site, location: Option<&Location>) -> Self {
        let location_plugins = location.map(|l| l.plugins.as_slice()).unwrap_or_default();
        let inherit = location.is_none_or(|l| l.site_plugins);
        let site_plugins = if inherit {
            site.plugins.as_slice()
        } else {
            &[]
        };
        if site_plugins.is_empty() && location_plugins.is_empty() {
            return Self::default();
        }
        let plugins = site_plugins
            .iter()
            .chain(location_plugins)
            .cloned()
            .collect();
        Self { plugins }
    }

    /// Whether the chain is empty (the common case: nothing to call).
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// The plugins in call order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Plugin>> {
        self.plugins.iter()
    }
}

impl fmt::Debug for PluginChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PluginChain({} plugins)", self.plugins.len())
    }
}
