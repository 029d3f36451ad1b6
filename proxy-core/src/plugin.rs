//! The plugin trait: how embedders and the `plugins` crate add behaviour to the proxy.
//!
//! A plugin is attached to a site or a location in config (`[[sites.NAME.plugins]]` with
//! `use = "PLUGIN"` and the plugin's own options), built once at config compile time by a
//! [`PluginFactory`] registered under its name in a [`PluginRegistry`], and then called in
//! the request phases below. Site plugins run before location plugins, each in config order.
//!
//! Every method has a default that does nothing, so a plugin implements only the phases it
//! needs. Plugins see the request context read-only through [`PluginCtx`].
//!
//! | phase | method | may |
//! |---|---|---|
//! | after routing and the location's guards | [`Plugin::request`] | answer the request itself |
//! | before the request goes upstream | [`Plugin::upstream_request`] | change the upstream request |
//! | on the upstream's response header, before caching | [`Plugin::upstream_response`] | change what is cached |
//! | before any response header is sent | [`Plugin::response`] | change every response |
//! | after the response | [`Plugin::logging`] | observe the outcome |

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::Result;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::access::DenyList;
use crate::answer::LocalAnswer;
use crate::observe::Metrics;

/// What a plugin sees of the request: who is asking and what the router matched; and
/// where it counts what it decided ([`PluginCtx::count`]).
#[derive(Debug, Clone, Copy)]
pub struct PluginCtx<'a> {
    client_ip: Option<IpAddr>,
    site: &'a str,
    location: Option<(&'a str, usize)>,
    metrics: Option<&'a Metrics>,
}

impl<'a> PluginCtx<'a> {
    /// The context of a request from `client_ip` matched to the site named `site` and,
    /// unless it matched none, the location with pattern text and index `location`.
    pub fn new(
        client_ip: Option<IpAddr>,
        site: &'a str,
        location: Option<(&'a str, usize)>,
    ) -> Self {
        Self {
            client_ip,
            site,
            location,
            metrics: None,
        }
    }

    /// The same context, counting plugin events into `metrics`.
    pub fn with_metrics(mut self, metrics: &'a Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Counts one `event` of `plugin` in `edge_plugin_events_total{plugin,event}` (when the
    /// proxy records metrics). Both are the plugin's own fixed words, never request data, so
    /// the number of series stays bounded.
    pub fn count(&self, plugin: &'static str, event: &'static str) {
        if let Some(metrics) = self.metrics {
            metrics.plugin_event(plugin, event);
        }
    }

    /// The client's address (`Fly-Client-IP` from a trusted proxy, else the peer's).
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    /// The matched site's name (`[sites.NAME]`).
    pub fn site_name(&self) -> &'a str {
        self.site
    }

    /// The matched location's pattern as written in the config, if a location matched.
    pub fn location_pattern(&self) -> Option<&'a str> {
        self.location.map(|(pattern, _)| pattern)
    }

    /// The matched location's position in its site's list, if a location matched.
    pub fn location_index(&self) -> Option<usize> {
        self.location.map(|(_, index)| index)
    }
}

/// Why a plugin could not be built from its config, reported at the plugin's config key
/// with file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// No plugin is registered under this name.
    #[error("unknown plugin `{name}` (available: {available})")]
    Unknown {
        /// The name the config used.
        name: String,
        /// The registered names, for the message.
        available: String,
    },
    /// The plugin's options are wrong; the message says how, in words an operator can act on.
    #[error("{0}")]
    Options(String),
}

impl From<String> for PluginError {
    fn from(message: String) -> Self {
        PluginError::Options(message)
    }
}

impl From<&str> for PluginError {
    fn from(message: &str) -> Self {
        PluginError::Options(message.to_string())
    }
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
    dyn Fn(&PluginOptions, PluginSetup<'_>) -> std::result::Result<Arc<dyn Plugin>, PluginError>
        + Send
        + Sync,
>;

/// What a plugin factory knows besides its options, and what it may ask of the edge.
#[derive(Debug, Clone, Copy)]
pub struct PluginSetup<'a> {
    /// The config file's directory: resolve relative paths in options against it.
    pub base_dir: &'a std::path::Path,
    /// Where IP list files are noted for the running edge to keep fresh (none: read once).
    watched: Option<&'a parking_lot::Mutex<Vec<Arc<DenyList>>>>,
}

impl<'a> PluginSetup<'a> {
    /// A setup resolving paths against `base_dir`, whose IP list files are read once and
    /// never re-read (for plugins built outside a config, e.g. in tests).
    pub fn new(base_dir: &'a std::path::Path) -> Self {
        Self {
            base_dir,
            watched: None,
        }
    }

    /// A setup whose IP list files are noted in `watched`, which the running edge re-reads
    /// when they change.
    pub(crate) fn watching(
        base_dir: &'a std::path::Path,
        watched: &'a parking_lot::Mutex<Vec<Arc<DenyList>>>,
    ) -> Self {
        Self {
            base_dir,
            watched: Some(watched),
        }
    }

    /// `path` from an option, resolved against the config file's directory.
    pub fn resolve(&self, path: &str) -> std::path::PathBuf {
        self.base_dir.join(path)
    }

    /// An IP list read from the file at `path` (relative to the config file), one IP or
    /// CIDR per line as deny lists are; the running edge re-reads it when it changes, as it
    /// does deny lists, so e.g. published crawler ranges can be updated without a reload.
    /// A missing file is an empty list (logged) until it appears.
    pub fn ip_list_file(&self, path: &str) -> IpListFile {
        let list = Arc::new(DenyList::load(self.resolve(path)));
        if let Some(watched) = self.watched {
            watched.lock().push(list.clone());
        }
        IpListFile(list)
    }
}

/// An IP list kept in a file and re-read when it changes ([`PluginSetup::ip_list_file`]).
#[derive(Debug, Clone)]
pub struct IpListFile(Arc<DenyList>);

impl IpListFile {
    /// Whether `ip` is on the list (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(ip)
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
        factory: impl Fn(&PluginOptions, PluginSetup<'_>) -> std::result::Result<Arc<dyn Plugin>, PluginError>
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
    ) -> std::result::Result<Arc<dyn Plugin>, PluginError> {
        match self.factories.get(name) {
            Some(factory) => factory(options, setup),
            None => Err(PluginError::Unknown {
                name: name.to_string(),
                available: if self.factories.is_empty() {
                    "none".to_string()
                } else {
                    self.names().join(", ")
                },
            }),
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

/// The plugins one request runs, in call order: for a location, the site's it inherits and
/// then its own, put together once when the config is compiled.
#[derive(Clone, Default)]
pub struct PluginChain {
    plugins: Vec<Arc<dyn Plugin>>,
}

impl PluginChain {
    /// A chain of built plugins, in call order.
    pub fn new(plugins: Vec<Arc<dyn Plugin>>) -> Self {
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
