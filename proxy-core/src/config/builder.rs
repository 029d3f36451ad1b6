//! Building a [`RuntimeConfig`] from code. The builders fill the same plain structs as a TOML
//! file and go through the same compiler, so code and TOML can never disagree.
//!
//! ```
//! use proxy_core::config::{ConfigBuilder, LocationBuilder, SiteBuilder, UpstreamBuilder};
//!
//! let config = ConfigBuilder::new()
//!     .listen("127.0.0.1:8080")
//!     .upstream("docs", UpstreamBuilder::new("docs.tail1234.ts.net:443").tls())
//!     .site(
//!         "docs",
//!         SiteBuilder::new()
//!             .host("docs.example.com")
//!             .location(LocationBuilder::new("/").proxy("docs"))
//!             .location(LocationBuilder::new("= /robots.txt").respond(200, "User-agent: *\n")),
//!     )
//!     .build()
//!     .expect("valid config");
//! assert!(config.site_for_host("docs.example.com").is_some());
//! ```

use std::path::PathBuf;

mod guards;
pub use guards::RateLimitBuilder;

use super::file::{
    ConfigFile, LocationSection, PluginSection, ProxyHeaderSection, RedirectSection, ReturnSection,
    SiteSection, StatusOrWord, TelemetrySection, UpstreamSection,
};
use super::{compile_file, ConfigErrors};
use crate::model::RuntimeConfig;
use crate::plugin::PluginRegistry;

/// Builds a whole config.
#[derive(Debug, Clone, Default)]
pub struct ConfigBuilder {
    file: ConfigFile,
    base_dir: PathBuf,
    plugins: PluginRegistry,
}

impl ConfigBuilder {
    /// An empty config (defaults everywhere).
    pub fn new() -> Self {
        Self {
            file: ConfigFile::default(),
            base_dir: PathBuf::from("."),
            plugins: PluginRegistry::default(),
        }
    }

    /// Starts from existing config data (e.g. parsed TOML to extend in code).
    pub fn from_file(file: ConfigFile) -> Self {
        Self {
            file,
            ..Self::new()
        }
    }

    /// Directory that relative file paths (error pages, CA files) are resolved against.
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = dir.into();
        self
    }

    /// The registry that builds the plugins sites and locations attach.
    pub fn plugin_registry(mut self, registry: PluginRegistry) -> Self {
        self.plugins = registry;
        self
    }

    /// Adds a public listen address.
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.file
            .server
            .listen
            .get_or_insert_with(Vec::new)
            .push(addr.into());
        self
    }

    /// Sets the admin listen address.
    pub fn admin_listen(mut self, addr: impl Into<String>) -> Self {
        self.file.admin.listen = Some(addr.into());
        self
    }

    /// Enables admin actions with the bearer token held by environment variable `name`.
    pub fn admin_token_env(mut self, name: impl Into<String>) -> Self {
        self.file.admin.token_env = Some(name.into());
        self
    }

    /// Turns metrics recording and `/metrics` on or off (default on).
    pub fn metrics(mut self, enabled: bool) -> Self {
        self.file.admin.metrics = Some(enabled);
        self
    }

    /// Makes `/readyz` also require tailscaled (LocalAPI socket at `path`) to be `Running`.
    pub fn tailscaled_socket(mut self, path: impl Into<String>) -> Self {
        self.file.admin.tailscaled_socket = Some(path.into());
        self
    }

    /// Writes the access log to `path` (`"-"`: stdout, the default).
    pub fn access_log_path(mut self, path: impl Into<String>) -> Self {
        self.file.access_log.path = Some(path.into());
        self
    }

    /// Turns the access log off.
    pub fn access_log_off(mut self) -> Self {
        self.file.access_log.enabled = Some(false);
        self
    }

    /// Sets `[telemetry]`: labels, and the Prometheus and Loki receivers metrics and
    /// access-log lines are pushed to.
    pub fn telemetry(mut self, telemetry: TelemetrySection) -> Self {
        self.file.telemetry = telemetry;
        self
    }

    /// Sets `[tailnet]`: the userspace tailnet node that `tailscale-rs` upstreams dial
    /// through (cargo feature `tailscale-rs`).
    pub fn tailnet(mut self, tailnet: super::file::TailnetSection) -> Self {
        self.file.tailnet = Some(tailnet);
        self
    }

    /// Sets the worker thread count.
    pub fn threads(mut self, threads: usize) -> Self {
        self.file.server.threads = Some(threads);
        self
    }

    /// Sets the shutdown grace period ("10s").
    pub fn grace_period(mut self, duration: impl Into<String>) -> Self {
        self.file.server.grace_period = Some(duration.into());
        self
    }

    /// Answers unknown hosts with `status` instead of closing the connection.
    pub fn unknown_host_status(mut self, status: u16) -> Self {
        self.file.server.unknown_host = Some(StatusOrWord::Status(status));
        self
    }

    /// Adds a DNS server (`ip` or `ip:port`) for upstream names.
    pub fn nameserver(mut self, addr: impl Into<String>) -> Self {
        self.file
            .resolver
            .nameservers
            .get_or_insert_with(Vec::new)
            .push(addr.into());
        self
    }

    /// Adds (or replaces) a named upstream.
    pub fn upstream(mut self, name: impl Into<String>, upstream: UpstreamBuilder) -> Self {
        self.file.upstreams.insert(name.into(), upstream.0);
        self
    }

    /// Adds (or replaces) a named site.
    pub fn site(mut self, name: impl Into<String>, site: SiteBuilder) -> Self {
        self.file.sites.insert(name.into(), site.0);
        self
    }

    /// The plain config data built so far.
    pub fn into_file(self) -> ConfigFile {
        self.file
    }

    /// Validates and compiles, exactly as a TOML file would be.
    pub fn build(self) -> Result<RuntimeConfig, ConfigErrors> {
        compile_file(&self.file, &self.base_dir, &self.plugins)
    }
}

/// Builds one upstream.
#[derive(Debug, Clone, Default)]
pub struct UpstreamBuilder(UpstreamSection);

impl UpstreamBuilder {
    /// An upstream at `host:port`.
    pub fn new(address: impl Into<String>) -> Self {
        Self(UpstreamSection {
            address: Some(address.into()),
            ..UpstreamSection::default()
        })
    }

    /// Speak TLS (SNI defaults to the host; verification on).
    pub fn tls(mut self) -> Self {
        self.0.tls = Some(true);
        self
    }

    /// Overrides the SNI.
    pub fn sni(mut self, sni: impl Into<String>) -> Self {
        self.0.sni = Some(sni.into());
        self
    }

    /// Turns certificate verification off (explicit opt-out).
    pub fn insecure_skip_verify(mut self) -> Self {
        self.0.verify = Some(false);
        self
    }

    /// Verifies against the CA certificates in this PEM file.
    pub fn ca_file(mut self, path: impl Into<String>) -> Self {
        self.0.ca_file = Some(path.into());
        self
    }

    /// Sets the Host header sent upstream (`"$host"` passes the client's).
    pub fn host_header(mut self, host: impl Into<String>) -> Self {
        self.0.host_header = Some(host.into());
        self
    }

    /// Sets the connect timeout ("5s").
    pub fn connect_timeout(mut self, duration: impl Into<String>) -> Self {
        self.0.connect_timeout = Some(duration.into());
        self
    }

    /// Reaches the upstream through `transport`: `"kernel"` (the default) or `"tailscale-rs"`
    /// (the userspace tailnet of [`ConfigBuilder::tailnet`]).
    pub fn transport(mut self, transport: impl Into<String>) -> Self {
        self.0.transport = Some(transport.into());
        self
    }

    /// Sets the read timeout ("60s").
    pub fn read_timeout(mut self, duration: impl Into<String>) -> Self {
        self.0.read_timeout = Some(duration.into());
        self
    }

    /// Sends the request header `name` to this upstream as `value` (with variables such as
    /// `$client_ip`; `""` leaves it out), over the built-in forwarding headers.
    pub fn proxy_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let entry = ProxyHeaderSection::Set(value.into());
        self.0.proxy_headers.insert(name.into(), entry);
        self
    }
}

/// Builds one site.
#[derive(Debug, Clone, Default)]
pub struct SiteBuilder(SiteSection);

impl SiteBuilder {
    /// A site with no hosts or locations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a host (exact, or `*.example.com`).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.0.hosts.push(host.into());
        self
    }

    /// Adds a location (order matters for regex locations).
    pub fn location(mut self, location: LocationBuilder) -> Self {
        self.0.locations.push(location.0);
        self
    }

    /// Sets the request body limit ("10m"; "0" = unlimited).
    pub fn max_body_size(mut self, size: impl Into<String>) -> Self {
        self.0.max_body_size = Some(size.into());
        self
    }

    /// Attaches a plugin (by registered name) with its options.
    pub fn plugin(mut self, name: impl Into<String>, options: toml::Table) -> Self {
        self.0.plugins.push(PluginSection {
            name: name.into(),
            options,
        });
        self
    }

    /// Serves this HTML file for `status` errors the proxy answers itself.
    pub fn error_page(mut self, status: u16, path: impl Into<String>) -> Self {
        self.0.error_pages.insert(status.to_string(), path.into());
        self
    }

    /// Caches responses of every location of the site with this policy (a location's own
    /// policy wins, key by key). `CachePolicySection::default()` caches with the defaults.
    pub fn cache(mut self, policy: super::file::CachePolicySection) -> Self {
        self.0.cache = Some(policy);
        self
    }

    /// Authenticates every location of the site this way (a location's own `auth` wins).
    pub fn auth(mut self, auth: super::file::AuthSection) -> Self {
        self.0.auth = Some(auth);
        self
    }

    /// Compresses responses of every location of the site with these settings (a
    /// location's own win, key by key). `CompressSection::default()` compresses with the
    /// defaults.
    pub fn compress(mut self, settings: super::file::CompressSection) -> Self {
        self.0.compress = Some(settings);
        self
    }

    /// Replaces upstream error responses that have a page in the site's error pages with
    /// that page, status kept (nginx's `proxy_intercept_errors on`).
    pub fn intercept_errors(mut self) -> Self {
        self.0.intercept_errors = Some(true);
        self
    }

    /// Sends the request header `name` upstream as `value` from every proxying location of
    /// the site (over the upstream's).
    pub fn proxy_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let entry = ProxyHeaderSection::Set(value.into());
        self.0.proxy_headers.insert(name.into(), entry);
        self
    }
}

/// Builds one location.
#[derive(Debug, Clone, Default)]
pub struct LocationBuilder(LocationSection);

impl LocationBuilder {
    /// A location with an nginx-syntax pattern: `"/p"`, `"= /p"`, `"^~ /p"`, `"~ re"`, `"~* re"`.
    pub fn new(pattern: impl Into<String>) -> Self {
        Self(LocationSection {
            pattern: pattern.into(),
            ..LocationSection::default()
        })
    }

    /// Proxies to the named upstream.
    pub fn proxy(mut self, upstream: impl Into<String>) -> Self {
        self.0.proxy = Some(upstream.into());
        self
    }

    /// Answers locally with a plain-text body.
    pub fn respond(mut self, status: u16, body: impl Into<String>) -> Self {
        self.0.respond = Some(ReturnSection {
            status: Some(status),
            body: body.into(),
            content_type: None,
        });
        self
    }

    /// Redirects (`$request_uri` and friends are substituted).
    pub fn redirect(mut self, status: u16, to: impl Into<String>) -> Self {
        self.0.redirect = Some(RedirectSection {
            status: Some(status),
            to: to.into(),
        });
        self
    }

    /// Overrides the Host header sent upstream.
    pub fn host_header(mut self, host: impl Into<String>) -> Self {
        self.0.host_header = Some(host.into());
        self
    }

    /// Attaches a plugin (by registered name) with its options.
    pub fn plugin(mut self, name: impl Into<String>, options: toml::Table) -> Self {
        self.0.plugins.push(PluginSection {
            name: name.into(),
            options,
        });
        self
    }

    /// Sets this location's cache policy (wins over the site's, key by key).
    pub fn cache(mut self, policy: super::file::CachePolicySection) -> Self {
        self.0.cache = Some(policy);
        self
    }

    /// Authenticates this location's requests this way, in place of the site's;
    /// `AuthSection::default()` turns the site's off here.
    pub fn auth(mut self, auth: super::file::AuthSection) -> Self {
        self.0.auth = Some(auth);
        self
    }

    /// Compression here (each key set wins over the site's); `enabled: Some(false)` turns
    /// the site's off.
    pub fn compress(mut self, settings: super::file::CompressSection) -> Self {
        self.0.compress = Some(settings);
        self
    }

    /// Whether upstream error responses are replaced by the site's error pages here (over
    /// the site's choice).
    pub fn intercept_errors(mut self, on: bool) -> Self {
        self.0.intercept_errors = Some(on);
        self
    }

    /// Sends the request header `name` upstream as `value` from this location (over the
    /// site's and the upstream's).
    pub fn proxy_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let entry = ProxyHeaderSection::Set(value.into());
        self.0.proxy_headers.insert(name.into(), entry);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_headers_and_intercepted_errors_build_as_in_toml() {
        let config = ConfigBuilder::new()
            .upstream(
                "app",
                UpstreamBuilder::new("app.tail1.ts.net:80")
                    .proxy_header("X-Forwarded-Proto", "https"),
            )
            .site(
                "app",
                SiteBuilder::new()
                    .host("app.example.com")
                    .error_page(502, "Cargo.toml")
                    .intercept_errors()
                    .proxy_header("X-Real-IP", "")
                    .location(LocationBuilder::new("/").proxy("app"))
                    .location(
                        LocationBuilder::new("/raw/")
                            .proxy("app")
                            .intercept_errors(false)
                            .proxy_header("X-Who", "$client_ip"),
                    ),
            )
            .base_dir(env!("CARGO_MANIFEST_DIR"))
            .build()
            .expect("valid config");
        let site = config.site_for_host("app.example.com").expect("site");
        let root = site.location_for_path(b"/").expect("root");
        let raw = site.location_for_path(b"/raw/x").expect("raw");
        assert!(root.intercepts_errors() && !raw.intercepts_errors());
        assert!(root.proxy_headers().is_some() && raw.proxy_headers().is_some());
        let bad = ConfigBuilder::new()
            .upstream(
                "app",
                UpstreamBuilder::new("app.tail1.ts.net:80").proxy_header("Host", "x"),
            )
            .build();
        assert!(bad.is_err());
    }

    #[test]
    fn auth_builds_as_in_toml() {
        use super::super::file::{AuthSection, ForwardAuthSection};
        let forward = AuthSection {
            forward: Some(ForwardAuthSection {
                url: "http://auth.tail1.ts.net:9091/verify".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let config = ConfigBuilder::new()
            .upstream("app", UpstreamBuilder::new("app.tail1.ts.net:80"))
            .site(
                "app",
                SiteBuilder::new()
                    .host("app.example.com")
                    .auth(forward)
                    .location(LocationBuilder::new("/").proxy("app"))
                    .location(
                        LocationBuilder::new("/open/")
                            .proxy("app")
                            .auth(AuthSection::default()),
                    ),
            )
            .build()
            .expect("valid config");
        let site = config.site_for_host("app.example.com").expect("site");
        let root = site.location_for_path(b"/").expect("root");
        assert!(root.auth().is_some());
        let open = site.location_for_path(b"/open/x").expect("open");
        assert!(open.auth().is_none());
        let names: Vec<&str> = config.other_names().collect();
        assert_eq!(names, ["auth.tail1.ts.net"]);
    }
}
