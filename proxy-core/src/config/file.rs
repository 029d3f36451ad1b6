//! The configuration as written: plain serde structs that mirror the TOML file.
//!
//! Nothing here is validated beyond its TOML type; durations and sizes are kept as the strings
//! the operator wrote. [`super::compile`] turns this into the runtime model and is where every
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
    /// Rate-limit zones applied to this location, on top of the site's.
    #[serde(default)]
    pub rate_limits: Vec<String>,
    /// Only clients in these IPs/CIDRs may use this location; others get 403.
    pub allow: Option<Vec<String>>,
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
