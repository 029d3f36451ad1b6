//! The configuration as written: plain serde structs that mirror the TOML file.
//!
//! Nothing here is validated beyond its TOML type; durations and sizes are kept as the strings
//! the operator wrote. the compiler (`config::compile`) turns this into the runtime model and is where every
//! check lives, so errors can name the key that holds the bad value. Builders in
//! [`crate::builder`] fill the same structs, so code and TOML produce identical runtimes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Listeners, threads, shutdown, and what unknown hosts get.
    #[serde(default)]
    pub server: ServerSection,
    /// The admin listener (metrics, health, admin actions).
    #[serde(default)]
    pub admin: AdminSection,
    /// MagicDNS resolution of upstream names.
    #[serde(default)]
    pub resolver: ResolverSection,
    /// Named upstreams that locations proxy to.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamSection>,
    /// Named sites, each answering for one or more hosts.
    #[serde(default)]
    pub sites: BTreeMap<String, SiteSection>,
    /// The JSON access log.
    #[serde(default)]
    pub access_log: AccessLogSection,
    /// The response cache's storage (sizes, expiry, lock); policies live on sites and locations.
    pub cache: Option<CacheSection>,
    /// Who the client is: which TCP peers may tell us (`Fly-Client-IP`).
    #[serde(default)]
    pub client: ClientSection,
    /// Named rate-limit zones (nginx `limit_req_zone`), attached to sites and locations.
    #[serde(default)]
    pub rate_limits: BTreeMap<String, RateLimitSection>,
}

/// `[server]`: process-wide settings of the public listener.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Public listen addresses, e.g. `["0.0.0.0:8080", "[::]:8080"]`. Default `0.0.0.0:8080`.
    pub listen: Option<Vec<String>>,
    /// Worker threads. Default: the number of CPUs.
    pub threads: Option<usize>,
    /// How long in-flight requests may run after SIGTERM before the process stops. Default "10s".
    pub grace_period: Option<String>,
    /// After the grace period, how long runtimes get to wind down. Default "5s".
    pub shutdown_timeout: Option<String>,
    /// Path answered `200 OK` locally for any Host (Fly health checks). Default "/healthz";
    /// an empty string turns it off.
    pub health_path: Option<String>,
    /// What a request for a Host no site serves gets: `"close"` (drop the connection, like
    /// nginx's 444) or a status code such as 421 or 404. Default "close".
    pub unknown_host: Option<StatusOrWord>,
    /// Idle upstream connections kept for reuse, across all upstreams. Default 128.
    pub upstream_pool_size: Option<usize>,
    /// Unix socket through which a new process started with `--upgrade` takes over the
    /// listening sockets when this one gets SIGQUIT (zero-downtime binary upgrade). Unset:
    /// SIGQUIT shuts down gracefully, like SIGTERM.
    pub upgrade_sock: Option<String>,
}

/// A value that is either a status code or a keyword (`unknown_host = 421` or `"close"`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum StatusOrWord {
    /// A numeric HTTP status.
    Status(u16),
    /// A keyword such as `"close"`.
    Word(String),
}

/// `[admin]`: the admin listener, never the public port.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Admin listen address. Default "127.0.0.1:9091".
    pub listen: Option<String>,
    /// Name of the environment variable holding the bearer token for admin actions
    /// (config summary, cache purge). Unset (or the variable empty): admin actions are off.
    pub token_env: Option<String>,
    /// tailscaled's LocalAPI socket (e.g. "/var/run/tailscale/tailscaled.sock"); when set,
    /// `/readyz` also requires tailscaled to report `Running`.
    pub tailscaled_socket: Option<String>,
    /// Record Prometheus metrics and serve them on `/metrics`. Default true; off, recording
    /// costs nothing and `/metrics` answers 404.
    pub metrics: Option<bool>,
}

/// `[access_log]`: one JSON line per request.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogSection {
    /// Write the access log. Default true.
    pub enabled: Option<bool>,
    /// A file (relative to the config file), reopened on SIGUSR1; `"-"` or unset: stdout.
    pub path: Option<String>,
    /// Query parameters whose names contain any of these (case-insensitive) are logged as
    /// `REDACTED`. Default `["token", "key", "password", "secret"]`.
    pub redact_query_params: Option<Vec<String>>,
    /// Lines queued for the writer before new ones are dropped (and counted). Default 8192.
    pub queue_size: Option<usize>,
}

/// `[resolver]`: how upstream names are resolved.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverSection {
    /// DNS servers as `ip` or `ip:port`. Default `["100.100.100.100:53"]` (MagicDNS).
    pub nameservers: Option<Vec<String>>,
    /// Answers are refreshed no sooner than this, whatever their TTL. Default "5s".
    pub min_ttl: Option<String>,
    /// Answers are refreshed at least this often, whatever their TTL. Default "5m".
    pub max_ttl: Option<String>,
    /// Time allowed for one lookup. Default "2s".
    pub timeout: Option<String>,
    /// Delay before retrying a failed lookup. Default "2s".
    pub retry_interval: Option<String>,
}

/// `[upstreams.NAME]`: a service on the tailnet.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// `host:port`, where host is a tailnet name (`docs.tailXXXX.ts.net`) or an IP address.
    pub address: String,
    /// Speak TLS to the upstream. Default false.
    #[serde(default)]
    pub tls: bool,
    /// SNI (and the name the certificate must carry). Default: the host of `address`.
    pub sni: Option<String>,
    /// Verify the upstream certificate. Default true; `false` is an explicit opt-out.
    pub verify: Option<bool>,
    /// PEM file of CA certificates to verify against instead of the system roots.
    pub ca_file: Option<String>,
    /// Host header sent upstream: a literal, or `"$host"` to pass the client's.
    /// Default: the host of `address` (nginx's `$proxy_host`).
    pub host_header: Option<String>,
    /// Time to establish a TCP connection (and TLS handshake). Default "10s".
    pub connect_timeout: Option<String>,
    /// Longest wait for bytes from the upstream. Default "60s".
    pub read_timeout: Option<String>,
    /// Longest wait to write to the upstream. Default "60s".
    pub write_timeout: Option<String>,
    /// How long an idle pooled connection is kept. Default "60s".
    pub idle_timeout: Option<String>,
}

/// `[sites.NAME]`: one public service.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSection {
    /// Hosts served: exact names or `*.example.com` wildcards.
    pub hosts: Vec<String>,
    /// Largest accepted request body; `"0"` means unlimited. Default "1m" (nginx's default).
    pub max_body_size: Option<String>,
    /// Error pages by status (`"502" = "errors/502.html"`), for 502, 503 and 504 answers.
    /// Paths are relative to the config file.
    #[serde(default)]
    pub error_pages: BTreeMap<String, String>,
    /// Locations, in file order (which matters for regex locations).
    #[serde(default)]
    pub locations: Vec<LocationSection>,
    /// Plugins for every request of the site, in order (before location plugins).
    #[serde(default)]
    pub plugins: Vec<PluginSection>,
    /// Cache policy defaults for every location of the site (a location's own `cache` wins,
    /// key by key).
    pub cache: Option<CachePolicySection>,
    /// Rate-limit zones applied to every request of the site.
    #[serde(default)]
    pub rate_limits: Vec<String>,
    /// Deny lists and user-agent rules of the site.
    pub access: Option<SiteAccessSection>,
}

/// `[[sites.NAME.locations]]`: what to do for a set of paths.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocationSection {
    /// nginx location syntax: `"/prefix/"`, `"= /exact"`, `"^~ /priority-prefix/"`,
    /// `"~ regex"` or `"~* case-insensitive-regex"`.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Proxy to the named upstream.
    pub proxy: Option<String>,
    /// Answer locally with a fixed response.
    #[serde(rename = "return")]
    pub respond: Option<ReturnSection>,
    /// Answer with a redirect.
    pub redirect: Option<RedirectSection>,
    /// Host header override for this location (wins over the upstream's).
    pub host_header: Option<String>,
    /// Body size limit for this location (wins over the site's).
    pub max_body_size: Option<String>,
    /// Plugins for requests of this location, in order (after the site's).
    #[serde(default)]
    pub plugins: Vec<PluginSection>,
    /// Whether the site's plugins also run for this location. Default true.
    pub site_plugins: Option<bool>,
    /// Cache policy for this location (each key set here wins over the site's `cache`).
    pub cache: Option<CachePolicySection>,
    /// Rate-limit zones applied to this location, on top of the site's.
    #[serde(default)]
    pub rate_limits: Vec<String>,
    /// Only clients in these IPs/CIDRs may use this location; others get 403.
    pub allow: Option<Vec<String>>,
}

/// `[[sites.NAME.plugins]]` / `[[sites.NAME.locations.plugins]]`: a plugin and its options.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct PluginSection {
    /// The registered plugin name, e.g. `"headers"`.
    #[serde(rename = "use")]
    pub name: String,
    /// Everything else in the table: the plugin's own options, which it validates.
    #[serde(flatten)]
    pub options: toml::Table,
}

/// `return = { status = 200, body = "...", content_type = "..." }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnSection {
    /// Status code. Default 200.
    pub status: Option<u16>,
    /// Body text. Default empty.
    #[serde(default)]
    pub body: String,
    /// Content type. Default "text/plain; charset=utf-8".
    pub content_type: Option<String>,
}

/// `redirect = { status = 301, to = "https://example.com$request_uri" }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectSection {
    /// 301, 302 (default), 303, 307 or 308.
    pub status: Option<u16>,
    /// Target, with `$request_uri`, `$uri`, `$args`, `$host` and `$scheme` substituted.
    pub to: String,
}

/// `[cache]`: the shared response cache storage.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Bytes kept in memory (bodies and headers); least recently used entries are evicted
    /// above it. Default "256m".
    pub max_size: Option<String>,
    /// Largest response stored; larger ones are proxied, not cached. Default "16m".
    pub max_object_size: Option<String>,
    /// Entries not read for this long are dropped, fresh or not (nginx `inactive`). Default "10m".
    pub inactive: Option<String>,
    /// How long concurrent misses wait for the one upstream fetch before going upstream
    /// themselves, uncached (nginx `proxy_cache_lock_timeout`). Default "5s".
    pub lock_timeout: Option<String>,
    /// A disk tier behind memory, so entries survive a restart.
    pub disk: Option<CacheDiskSection>,
}

/// `[cache.disk]`: the cache's disk tier.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheDiskSection {
    /// Cache directory, relative to the config file; created if missing.
    pub path: String,
    /// Bytes of entry files kept on disk. Default "1g".
    pub max_size: Option<String>,
}

/// `cache = { ... }` on a site or location: what is cached, under which key, for how long.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CachePolicySection {
    /// Cache responses here. Default true once a `cache` table is present; `false` turns a
    /// site's caching off for one location.
    pub enabled: Option<bool>,
    /// Include the scheme (http/https) in the key. Default true.
    pub key_scheme: Option<bool>,
    /// Include the host in the key. Default true, so two sites never share entries.
    pub key_host: Option<bool>,
    /// The query in the key: "full" (default), "none", "sorted", or a list of parameter names
    /// to keep (an allowlist, sorted).
    pub key_query: Option<QueryKeySection>,
    /// Request headers whose values are part of the key, e.g. `["Accept-Language"]`.
    pub key_headers: Option<Vec<String>>,
    /// Freshness by status when the origin says nothing (or is ignored): `{ "200" = "1d",
    /// "404" = "1m", "any" = "5m" }`. Default `{ "200" = "10m", "301" = "10m", "302" = "10m" }`
    /// as nginx's `proxy_cache_valid 10m`.
    pub valid: Option<BTreeMap<String, String>>,
    /// Ignore the origin's `Cache-Control` and `Expires` (nginx `proxy_ignore_headers
    /// Cache-Control Expires`). Default false: they are honoured.
    pub ignore_cache_control: Option<bool>,
    /// Cache responses carrying `Set-Cookie` anyway; the stored copy has `Set-Cookie` removed.
    /// Default false: such responses are not cached.
    pub ignore_set_cookie: Option<bool>,
    /// Requests carrying any of these headers skip the cache. Default `["Authorization"]`.
    pub bypass_headers: Option<Vec<String>>,
    /// Requests carrying any of these cookies skip the cache.
    pub bypass_cookies: Option<Vec<String>>,
    /// Requests carrying any of these query parameters skip the cache.
    pub bypass_query: Option<Vec<String>>,
    /// Serve a stale entry at once and refresh it in the background for this long after it
    /// expires (the origin's `stale-while-revalidate` wins when honoured). Default "0s".
    pub stale_while_revalidate: Option<String>,
    /// Serve a stale entry when the upstream fails, for this long after it expires (the
    /// origin's `stale-if-error` wins when honoured). Default "0s".
    pub stale_if_error: Option<String>,
    /// Upstream statuses that count as errors for `stale_if_error` (connect errors and
    /// timeouts always do). Default `[500, 502, 503, 504]`.
    pub stale_if_error_statuses: Option<Vec<u16>>,
    /// Name of the response header carrying the cache status; "" turns it off.
    /// Default "X-Cache-Status".
    pub status_header: Option<String>,
}

/// `key_query = "full" | "none" | "sorted" | ["param", ...]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum QueryKeySection {
    /// A mode keyword.
    Mode(String),
    /// Parameter names to keep.
    Allow(Vec<String>),
}

/// `[client]`: how the client address is found.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// CIDRs of TCP peers whose client-IP header is believed. Default: none (the header is
    /// never believed and the peer address is the client).
    pub trusted_proxies: Option<Vec<String>>,
    /// Header naming the client when the peer is trusted. Default "Fly-Client-IP".
    pub ip_header: Option<String>,
    /// When a trusted peer sent no usable header, take the rightmost untrusted entry of
    /// `X-Forwarded-For`. Default false.
    pub forwarded_for_fallback: Option<bool>,
}

/// `[rate_limits.NAME]`: a rate-limit zone with nginx `limit_req` semantics.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    /// `"10r/s"` or `"30r/m"`.
    pub rate: String,
    /// Requests allowed above the rate before rejecting. Default 0.
    pub burst: Option<u32>,
    /// The first `delay` excess requests pass at once, later ones (within the burst) are
    /// delayed to the rate. Default: no delay at all (nginx's `nodelay`).
    pub delay: Option<u32>,
    /// `"client_ip"` (default), `"client_ip+location"` or `"header:NAME"`.
    pub key: Option<String>,
    /// IPv6 clients are counted per prefix of this length. Default 64.
    pub ipv6_prefix: Option<u8>,
    /// Status of rejections. Default 429.
    pub status: Option<u16>,
    /// Only log and count rejections, never reject. Default false.
    pub dry_run: Option<bool>,
    /// Counters per row of the sketch (memory is 4 rows x 8 bytes x slots). Default 16384.
    pub slots: Option<usize>,
}

/// `[sites.NAME.access]`: who may not use a site at all.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SiteAccessSection {
    /// Files of denied IPs/CIDRs (one per line, or nginx `geo` lines `1.2.3.4 1;` as
    /// fail2ban writes them), reloaded when they change.
    #[serde(default)]
    pub deny_files: Vec<String>,
    /// Body of the 403 sent to denied clients. Default "forbidden\n".
    pub deny_body: Option<String>,
    /// Case-insensitive regexes; a matching `User-Agent` gets 403.
    #[serde(default)]
    pub user_agent_deny: Vec<String>,
    /// Body of the 403 sent to denied user agents. Default: `deny_body`.
    pub user_agent_body: Option<String>,
}
