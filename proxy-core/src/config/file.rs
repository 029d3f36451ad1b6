//! The configuration as written: plain serde structs that mirror the TOML file, with each
//! key's default as a constant beside it.
//!
//! Nothing here is validated beyond its TOML type; durations and sizes are kept as the strings
//! the operator wrote. The compiler (`config::compile`) turns this into the runtime model and
//! is where every check lives, so errors can name the key that holds the bad value. The
//! builders ([`super::ConfigBuilder`]) fill the same structs, so code and TOML produce
//! identical runtimes.
//!
//! Every key has one doc comment here, ending in `Default: ...`. Defaults are written in the
//! config's own syntax (`"10s"`, `"1m"`) and compiled by the same code as an operator's value,
//! so a default cannot mean something different from the same text in a file. The README's
//! configuration tables are checked against these comments and constants by a test.

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
    /// Named zones of requests in progress at once (nginx `limit_conn_zone`), attached to sites
    /// and locations.
    #[serde(default)]
    pub connection_limits: BTreeMap<String, ConnectionLimitSection>,
    /// Metrics and access-log lines pushed to the homelab's Prometheus and Loki.
    #[serde(default)]
    pub telemetry: TelemetrySection,
    /// The userspace tailnet node that upstreams with `transport = "tailscale-rs"` dial
    /// through.
    pub tailnet: Option<TailnetSection>,
    /// The Redis a fleet of machines shares (global rate limits, fleet-wide purge).
    pub redis: Option<RedisSection>,
    /// Automatic bans: rules over answers and trap paths, answered before routing.
    #[serde(default)]
    pub bans: BansSection,
}

/// Default of [`ServerSection::listen`].
pub const DEFAULT_LISTEN: &[&str] = &["0.0.0.0:8080"];
/// Default of [`ServerSection::grace_period`].
pub const DEFAULT_GRACE_PERIOD: &str = "10s";
/// Default of [`ServerSection::shutdown_timeout`].
pub const DEFAULT_SHUTDOWN_TIMEOUT: &str = "5s";
/// Default of [`ServerSection::health_path`].
pub const DEFAULT_HEALTH_PATH: &str = "/healthz";
/// Default of [`ServerSection::unknown_host`].
pub const DEFAULT_UNKNOWN_HOST: &str = "close";
/// Default of [`ServerSection::upstream_pool_size`].
pub const DEFAULT_UPSTREAM_POOL_SIZE: usize = 128;
/// Default of [`ServerSection::client_header_timeout`] (nginx's).
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: &str = "60s";
/// Default of [`ServerSection::client_body_timeout`] (nginx's).
pub const DEFAULT_CLIENT_BODY_TIMEOUT: &str = "60s";
/// Default of [`ServerSection::send_timeout`] (nginx's).
pub const DEFAULT_SEND_TIMEOUT: &str = "60s";
/// Default of [`ServerSection::keepalive_timeout`] (nginx's).
pub const DEFAULT_KEEPALIVE_TIMEOUT: &str = "75s";
/// Default of [`ServerSection::keepalive_requests`] (nginx's).
pub const DEFAULT_KEEPALIVE_REQUESTS: u32 = 1000;
/// Default of [`ServerSection::max_header_line`] (nginx's `large_client_header_buffers 4 8k`).
pub const DEFAULT_MAX_HEADER_LINE: &str = "8k";
/// Default of [`ServerSection::max_header_size`] (nginx's four 8k buffers).
pub const DEFAULT_MAX_HEADER_SIZE: &str = "32k";
/// Default of [`ServerSection::max_headers`].
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Default of [`ServerSection::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default of [`ServerSection::request_buffer_size`] (nginx's `client_body_buffer_size` on
/// 64-bit platforms).
pub const DEFAULT_REQUEST_BUFFER_SIZE: &str = "16k";
/// Default of [`ServerSection::in_progress`].
pub const DEFAULT_IN_PROGRESS: usize = 32;
/// Default of [`ServerSection::in_progress_hold`].
pub const DEFAULT_IN_PROGRESS_HOLD: &str = "2ms";
/// Default of [`ServerSection::lingering_time`] (nginx's).
pub const DEFAULT_LINGERING_TIME: &str = "30s";
/// Default of [`ServerSection::lingering_timeout`] (nginx's).
pub const DEFAULT_LINGERING_TIMEOUT: &str = "5s";
/// Default of [`ServerSection::lingering_size`].
pub const DEFAULT_LINGERING_SIZE: &str = "64m";

/// Default of [`ServerSection::header_case`].
pub const DEFAULT_HEADER_CASE: &str = "normalize";

/// `[server]`: process-wide settings of the public listener.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Public listen addresses, e.g. `["0.0.0.0:8080", "[::]:8080"]`.
    /// Default: [`DEFAULT_LISTEN`].
    pub listen: Option<Vec<String>>,
    /// Worker threads. Default: the number of CPUs.
    pub threads: Option<usize>,
    /// Whether idle worker threads take tasks queued on busy ones. Off (the default), each
    /// thread runs its own connections to the end, like nginx's worker processes, and a
    /// request costs less scheduling. Default: `false`.
    pub work_stealing: Option<bool>,
    /// How long in-flight requests may run after SIGTERM before the process stops.
    /// Default: [`DEFAULT_GRACE_PERIOD`].
    pub grace_period: Option<String>,
    /// After the grace period, how long runtimes get to wind down.
    /// Default: [`DEFAULT_SHUTDOWN_TIMEOUT`].
    pub shutdown_timeout: Option<String>,
    /// Path answered `200 OK` locally for any Host (Fly health checks); `""` turns it off.
    /// Default: [`DEFAULT_HEALTH_PATH`].
    pub health_path: Option<String>,
    /// What a request for a Host no site serves gets: `"close"` (drop the connection, like
    /// nginx's 444) or a status code such as 421 or 404. Default: [`DEFAULT_UNKNOWN_HOST`].
    pub unknown_host: Option<StatusOrWord>,
    /// Idle upstream connections kept for reuse, across all upstreams.
    /// Default: [`DEFAULT_UPSTREAM_POOL_SIZE`].
    pub upstream_pool_size: Option<usize>,
    /// Unix socket through which a new process started with `--upgrade` takes over the
    /// listening sockets when this one gets SIGQUIT (zero-downtime binary upgrade). Unset:
    /// SIGQUIT shuts down gracefully, like SIGTERM. Default: none.
    pub upgrade_sock: Option<String>,
    /// A client must send a whole request head within this long of its first byte (of the
    /// connection's start, for its first request); a slower one is closed.
    /// Default: [`DEFAULT_CLIENT_HEADER_TIMEOUT`].
    pub client_header_timeout: Option<String>,
    /// Longest wait between two reads of a request body; exceeded: 408.
    /// Default: [`DEFAULT_CLIENT_BODY_TIMEOUT`].
    pub client_body_timeout: Option<String>,
    /// Longest wait for a client to take the next part of a response; exceeded: closed.
    /// Default: [`DEFAULT_SEND_TIMEOUT`].
    pub send_timeout: Option<String>,
    /// How long a keep-alive connection may idle between requests before it is closed.
    /// Default: [`DEFAULT_KEEPALIVE_TIMEOUT`].
    pub keepalive_timeout: Option<String>,
    /// Requests one connection may carry; the last one's answer closes it.
    /// Default: [`DEFAULT_KEEPALIVE_REQUESTS`].
    pub keepalive_requests: Option<u32>,
    /// Longest request line (414 above it) or header line (400). Default:
    /// [`DEFAULT_MAX_HEADER_LINE`].
    pub max_header_line: Option<String>,
    /// Longest whole request head (400 above it); bytes past it are never buffered.
    /// Default: [`DEFAULT_MAX_HEADER_SIZE`].
    pub max_header_size: Option<String>,
    /// Most header lines in a request (400 above it). Default: [`DEFAULT_MAX_HEADERS`].
    pub max_headers: Option<usize>,
    /// How HTTP/1 header names are passed on, in requests to upstreams and responses to
    /// clients: `"normalize"` (a few common names in their usual capitals, `Content-Type`,
    /// the rest in lowercase, much as HAProxy and HTTP/2 write every name in lowercase) or `"preserve"` (as they arrived, as nginx
    /// does; each header is then stored twice). Names are case-insensitive in HTTP, so only
    /// a peer that breaks the standard tells the two apart. Default: [`DEFAULT_HEADER_CASE`].
    pub header_case: Option<String>,
    /// Client connections open at once across the public listeners; one more is closed
    /// at once. Default: [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: Option<usize>,
    /// After an answer sent while the request body is still coming (413, 403, 429, 401 ...)
    /// or to a refused request head (400, 414), the rest is read and thrown away for at most
    /// this long, so a client still writing reads the answer instead of a reset.
    /// Default: [`DEFAULT_LINGERING_TIME`].
    pub lingering_time: Option<String>,
    /// While a body is thrown away, the longest wait for its next bytes; exceeded: closed.
    /// Default: [`DEFAULT_LINGERING_TIMEOUT`].
    pub lingering_timeout: Option<String>,
    /// While a body is thrown away, the most bytes read; beyond: closed.
    /// Default: [`DEFAULT_LINGERING_SIZE`].
    pub lingering_size: Option<String>,
    /// Where `request_buffering` is on, the bytes of a request body kept in memory; the rest
    /// goes to an unnamed temporary file, gone when the request ends.
    /// Default: [`DEFAULT_REQUEST_BUFFER_SIZE`].
    pub request_buffer_size: Option<String>,
    /// HTTP/1 requests each busy worker thread works on at once; `0`: no bound. The next
    /// waits, in arrival order, for one of them to end, or for the thread to run out of work
    /// (its requests all waiting on I/O), when up to `in_progress` more start. A thread with
    /// more requests than it can answer at once then finishes those it started before it
    /// starts more, and their state stays in the CPU's caches; a thread with time to spare
    /// never leaves a request waiting. Default: [`DEFAULT_IN_PROGRESS`].
    pub in_progress: Option<usize>,
    /// How long a request counts against `in_progress` at most: one that lasts longer (a
    /// slow upstream, a download, a WebSocket) stops counting, and the next may start.
    /// Default: [`DEFAULT_IN_PROGRESS_HOLD`].
    pub in_progress_hold: Option<String>,
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

/// Default of [`AdminSection::listen`].
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9091";
/// Default of [`AdminSection::metrics`].
pub const DEFAULT_METRICS: bool = true;

/// `[admin]`: the admin listener, never the public port.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Admin listen address. Default: [`DEFAULT_ADMIN_LISTEN`].
    pub listen: Option<String>,
    /// Name of the environment variable holding the bearer token for admin actions
    /// (config summary, cache purge); unset, or the variable empty: admin actions are off.
    /// Default: none.
    pub token_env: Option<String>,
    /// tailscaled's LocalAPI socket (e.g. "/var/run/tailscale/tailscaled.sock"); when set,
    /// `/readyz` also requires tailscaled to report `Running`. Default: none.
    pub tailscaled_socket: Option<String>,
    /// Record Prometheus metrics and serve them on `/metrics`; off, recording costs nothing
    /// and `/metrics` answers 404. Default: [`DEFAULT_METRICS`].
    pub metrics: Option<bool>,
}

/// Default of [`AccessLogSection::enabled`].
pub const DEFAULT_ACCESS_LOG_ENABLED: bool = true;
/// Default of [`AccessLogSection::path`]: standard output.
pub const DEFAULT_ACCESS_LOG_PATH: &str = "-";
/// Default of [`AccessLogSection::redact_query_params`].
pub const DEFAULT_REDACT_QUERY_PARAMS: &[&str] = &["token", "key", "password", "secret"];
/// Default of [`AccessLogSection::queue_size`]: a few seconds of a busy proxy.
pub const DEFAULT_ACCESS_LOG_QUEUE_SIZE: usize = 8192;

/// `[access_log]`: one JSON line per request.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogSection {
    /// Write the access log. Default: [`DEFAULT_ACCESS_LOG_ENABLED`].
    pub enabled: Option<bool>,
    /// A file (relative to the config file), reopened on SIGUSR1; `"-"`: stdout.
    /// Default: [`DEFAULT_ACCESS_LOG_PATH`].
    pub path: Option<String>,
    /// Query parameters whose names contain any of these (case-insensitive) are logged as
    /// `REDACTED`. Default: [`DEFAULT_REDACT_QUERY_PARAMS`].
    pub redact_query_params: Option<Vec<String>>,
    /// Lines queued for the writer before new ones are dropped (and counted).
    /// Default: [`DEFAULT_ACCESS_LOG_QUEUE_SIZE`].
    pub queue_size: Option<usize>,
}

/// Default of [`ResolverSection::nameservers`] (MagicDNS).
pub const DEFAULT_NAMESERVERS: &[&str] = &["100.100.100.100:53"];
/// Default of [`ResolverSection::min_ttl`].
pub const DEFAULT_MIN_TTL: &str = "5s";
/// Default of [`ResolverSection::max_ttl`].
pub const DEFAULT_MAX_TTL: &str = "5m";
/// Default of [`ResolverSection::timeout`].
pub const DEFAULT_RESOLVER_TIMEOUT: &str = "2s";
/// Default of [`ResolverSection::retry_interval`].
pub const DEFAULT_RETRY_INTERVAL: &str = "2s";

/// `[resolver]`: how upstream names are resolved.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverSection {
    /// DNS servers as `ip` or `ip:port`. Default: [`DEFAULT_NAMESERVERS`].
    pub nameservers: Option<Vec<String>>,
    /// Answers are refreshed no sooner than this, whatever their TTL.
    /// Default: [`DEFAULT_MIN_TTL`].
    pub min_ttl: Option<String>,
    /// Answers are refreshed at least this often, whatever their TTL.
    /// Default: [`DEFAULT_MAX_TTL`].
    pub max_ttl: Option<String>,
    /// Time allowed for one lookup. Default: [`DEFAULT_RESOLVER_TIMEOUT`].
    pub timeout: Option<String>,
    /// Delay before retrying a failed lookup (the last good answer stays in use).
    /// Default: [`DEFAULT_RETRY_INTERVAL`].
    pub retry_interval: Option<String>,
}

/// Default of [`UpstreamSection::tls`].
pub const DEFAULT_TLS: bool = false;
/// Default of [`UpstreamSection::verify`].
pub const DEFAULT_VERIFY: bool = true;
/// Default of [`UpstreamSection::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: &str = "10s";
/// Default of [`UpstreamSection::read_timeout`].
pub const DEFAULT_READ_TIMEOUT: &str = "60s";
/// Default of [`UpstreamSection::write_timeout`].
pub const DEFAULT_WRITE_TIMEOUT: &str = "60s";
/// Default of [`UpstreamSection::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: &str = "60s";
/// Default of [`UpstreamSection::max_response_header`] (nginx's `proxy_buffer_size` is 4k or
/// 8k, one memory page).
pub const DEFAULT_MAX_RESPONSE_HEADER: &str = "8k";
/// Default of [`UpstreamSection::transport`]: the host's own network stack (with tailscaled
/// and its TUN device, the tailnet).
pub const DEFAULT_TRANSPORT: &str = "kernel";

/// Default of [`UpstreamSection::balance`].
pub const DEFAULT_BALANCE: &str = "round_robin";
/// Default of [`UpstreamSection::retry`].
pub const DEFAULT_RETRY: bool = true;
/// Default of [`HealthSection::interval`].
pub const DEFAULT_HEALTH_INTERVAL: &str = "5s";
/// Default of [`HealthSection::timeout`].
pub const DEFAULT_HEALTH_TIMEOUT: &str = "1s";
/// Default of [`HealthSection::healthy`].
pub const DEFAULT_HEALTH_HEALTHY: usize = 2;
/// Default of [`HealthSection::unhealthy`].
pub const DEFAULT_HEALTH_UNHEALTHY: usize = 3;
/// Default of [`HealthSection::status`]: what nginx's `health_check` accepts.
pub const DEFAULT_HEALTH_STATUS: [u16; 2] = [200, 399];

/// `[upstreams.NAME.health]`: active health checks of an upstream's `addresses`, or of its
/// one `address` (pingora-load-balancing's checks). Every address starts healthy; a reload
/// that keeps the upstream's addresses and checks keeps what they found.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// `GET` this path (with the upstream's Host header and TLS settings) and expect a
    /// status in `status`; absent: a TCP connect (and TLS handshake) is the check.
    /// Default: none.
    pub path: Option<String>,
    /// Time between two checks of an address; an address whose connection was refused is
    /// also held out this long. Default: [`DEFAULT_HEALTH_INTERVAL`].
    pub interval: Option<String>,
    /// Time one check may take. Default: [`DEFAULT_HEALTH_TIMEOUT`].
    pub timeout: Option<String>,
    /// Consecutive passes that bring an address back. Default: [`DEFAULT_HEALTH_HEALTHY`].
    pub healthy: Option<usize>,
    /// Consecutive failures that take an address out.
    /// Default: [`DEFAULT_HEALTH_UNHEALTHY`].
    pub unhealthy: Option<usize>,
    /// Lowest and highest status that pass an HTTP check. Default: [`DEFAULT_HEALTH_STATUS`].
    pub status: Option<[u16; 2]>,
}

/// `[upstreams.NAME]`: a service on the tailnet.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// `host:port`, where host is a tailnet name (`docs.tailXXXX.ts.net`) or an IP address.
    /// This or `addresses` (exactly one). Default: none.
    pub address: Option<String>,
    /// Several `host:port` (tailnet names or IP addresses) serving the same thing: requests
    /// go to the healthy ones, picked by `balance`, checked by `health`. This or `address`
    /// (exactly one). Default: none.
    pub addresses: Option<Vec<String>>,
    /// How `addresses` share requests: `"round_robin"`; `"consistent"` (a hash of the path
    /// and query: one URL keeps one address while it is healthy, good for caches behind);
    /// or `"least_conn"` (the one with the fewest requests in flight through this proxy,
    /// ties in turn). Only with `addresses`. Default: [`DEFAULT_BALANCE`].
    pub balance: Option<String>,
    /// Send an idempotent request (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) once more, to
    /// another of `addresses`, when the connection to the first fails (never once anything
    /// of the request was sent). Only with `addresses`. Default: [`DEFAULT_RETRY`].
    pub retry: Option<bool>,
    /// Active health checks (see [`HealthSection`]). With `addresses`, absent means TCP
    /// connect checks every [`DEFAULT_HEALTH_INTERVAL`]; with one `address`, present turns
    /// checks (and offline mode) on for it, absent leaves it unchecked unless a site with
    /// offline mode proxies to it. Default: `{ }` with `addresses`, none with `address`.
    pub health: Option<HealthSection>,
    /// Speak TLS to the upstream. Default: [`DEFAULT_TLS`].
    pub tls: Option<bool>,
    /// SNI (and the name the certificate must carry). Default: the host of `address`.
    pub sni: Option<String>,
    /// Verify the upstream certificate; `false` is an explicit opt-out.
    /// Default: [`DEFAULT_VERIFY`].
    pub verify: Option<bool>,
    /// PEM file of CA certificates to verify against instead of the system roots.
    /// Default: none.
    pub ca_file: Option<String>,
    /// Host header sent upstream: a literal, or `"$host"` to pass the client's.
    /// Default: the host of `address` (nginx's `$proxy_host`).
    pub host_header: Option<String>,
    /// Time to establish a TCP connection (and TLS handshake).
    /// Default: [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Option<String>,
    /// Longest wait for bytes from the upstream; exceeded: 504.
    /// Default: [`DEFAULT_READ_TIMEOUT`].
    pub read_timeout: Option<String>,
    /// Longest wait to write to the upstream. Default: [`DEFAULT_WRITE_TIMEOUT`].
    pub write_timeout: Option<String>,
    /// How long an idle pooled connection is kept. Default: [`DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: Option<String>,
    /// Largest response head (status line and headers) accepted from the upstream; a larger
    /// one is a 502. Default: [`DEFAULT_MAX_RESPONSE_HEADER`].
    pub max_response_header: Option<String>,
    /// Request headers sent to this upstream, by name (see [`ProxyHeaderSection`]); a site's
    /// and a location's win, name by name. Default: none.
    #[serde(default)]
    pub proxy_headers: BTreeMap<String, ProxyHeaderSection>,
    /// How connections reach the upstream: `"kernel"` (the host's network stack, through
    /// tailscaled's TUN device) or `"tailscale-rs"` (the userspace tailnet node of
    /// `[tailnet]`; needs the cargo feature `tailscale-rs`). Default: [`DEFAULT_TRANSPORT`].
    pub transport: Option<String>,
}

/// Default of [`TailnetSection::control_url`]: Tailscale's coordination server.
pub const DEFAULT_CONTROL_URL: &str = "https://controlplane.tailscale.com";
/// Default of [`TailnetSection::auth_key_env`].
pub const DEFAULT_AUTH_KEY_ENV: &str = "TS_AUTHKEY";

/// `[tailnet]`: the userspace tailnet node (Tailscale's `tailscale` crate, tailscale-rs) that
/// upstreams with `transport = "tailscale-rs"` dial through, for hosts without a TUN device
/// or root. Needs the cargo feature `tailscale-rs`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TailnetSection {
    /// Directory holding the node's keys (created if missing). Keep it across restarts: a
    /// node with new keys joins as a new machine and needs an auth key again. Required.
    pub state_dir: String,
    /// Hostname the node asks the tailnet for. Default: the host's own name.
    pub hostname: Option<String>,
    /// URL of the coordination server (e.g. a Headscale). Default: [`DEFAULT_CONTROL_URL`].
    pub control_url: Option<String>,
    /// Name of the environment variable holding the auth key, read at start; needed until
    /// the node has joined (its keys in `state_dir` keep it joined).
    /// Default: [`DEFAULT_AUTH_KEY_ENV`].
    pub auth_key_env: Option<String>,
}

/// One entry of `proxy_headers` (nginx `proxy_set_header`): a value with variables that
/// sets the header, replacing what the client or the proxy's own forwarding put there (`""`:
/// the header is not sent), or `{ append = "..." }`, added to the client's value after a
/// comma. Variables: `$client_ip`, `$remote_addr` (the same, as nginx's realip module makes
/// it), `$realip_remote_addr` (the TCP peer), `$scheme`, `$host`, `$request_id`,
/// `$proxy_add_x_forwarded_for` and `$http_NAME` (a request header as the client sent it).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ProxyHeaderSection {
    /// The header's value; `""` leaves the header out.
    Set(String),
    /// A value appended to the client's.
    Append(AppendHeaderSection),
}

// By hand rather than `untagged`, whose error ("did not match any variant") says nothing
// about what is expected.
impl<'de> Deserialize<'de> for ProxyHeaderSection {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entry;
        impl<'de> serde::de::Visitor<'de> for Entry {
            type Value = ProxyHeaderSection;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a header value (\"\" leaves the header out) or { append = \"...\" }")
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
                Ok(ProxyHeaderSection::Set(value.to_string()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                let append = AppendHeaderSection::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(ProxyHeaderSection::Append(append))
            }
        }
        deserializer.deserialize_any(Entry)
    }
}

/// The appending form of a [`ProxyHeaderSection`].
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AppendHeaderSection {
    /// The value added after the client's, comma-separated.
    pub append: String,
}

/// Default of [`SiteSection::request_buffering`]: streaming, unlike nginx (see the README).
pub const DEFAULT_REQUEST_BUFFERING: bool = false;
/// Default of [`SiteSection::intercept_errors`] (nginx's `proxy_intercept_errors off`).
pub const DEFAULT_INTERCEPT_ERRORS: bool = false;
/// Default of [`SiteSection::max_body_size`] (nginx's `client_max_body_size`).
pub const DEFAULT_MAX_BODY_SIZE: &str = "1m";

/// `[sites.NAME]`: one public service.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSection {
    /// Hosts served: exact names or `*.example.com` wildcards. Required.
    pub hosts: Vec<String>,
    /// Largest accepted request body; `"0"` means unlimited; above it: 413.
    /// Default: [`DEFAULT_MAX_BODY_SIZE`].
    pub max_body_size: Option<String>,
    /// Error pages by status (`"502" = "errors/502.html"`), for any 4xx/5xx the proxy
    /// answers itself (and an upstream's, with `intercept_errors`). Paths are relative to the
    /// config file. Default: none.
    #[serde(default)]
    pub error_pages: BTreeMap<String, String>,
    /// Replace an upstream's error response whose status has a page in `error_pages` with
    /// that page, keeping the status (nginx's `proxy_intercept_errors on`).
    /// Default: [`DEFAULT_INTERCEPT_ERRORS`].
    pub intercept_errors: Option<bool>,
    /// Receive a request body whole (within `max_body_size`) before anything of the request
    /// goes upstream, so a slow or cut-off upload never reaches the origin nor holds an
    /// upstream connection (nginx's `proxy_request_buffering on`).
    /// Default: [`DEFAULT_REQUEST_BUFFERING`].
    pub request_buffering: Option<bool>,
    /// Locations, in file order (which matters for regex locations). Required.
    #[serde(default)]
    pub locations: Vec<LocationSection>,
    /// Plugins for every request of the site, in order (before location plugins).
    /// Default: none.
    #[serde(default)]
    pub plugins: Vec<PluginSection>,
    /// Cache policy defaults for every location of the site (a location's own `cache` wins,
    /// key by key). Default: none (nothing cached).
    pub cache: Option<CachePolicySection>,
    /// Response compression for every location of the site (a location's own `compress`
    /// wins, key by key). Default: none (nothing compressed).
    pub compress: Option<CompressSection>,
    /// Rate-limit zones applied to every request of the site: a zone's name, or
    /// `{ zone = "NAME", burst = N, ... }` (see [`RateLimitUseSection`]). Default: none.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitRef>,
    /// Connection-limit zones applied to every request of the site. Default: none.
    #[serde(default)]
    pub connection_limits: Vec<String>,
    /// Deny lists and user-agent rules of the site. Default: none.
    pub access: Option<SiteAccessSection>,
    /// Authentication for every location of the site (`auth = { }`); a location's own
    /// `auth` replaces it. Default: none.
    pub auth: Option<AuthSection>,
    /// Request headers sent upstream by every proxying location of the site, by name (see
    /// [`ProxyHeaderSection`]); over the upstream's, under a location's. Default: none.
    #[serde(default)]
    pub proxy_headers: BTreeMap<String, ProxyHeaderSection>,
    /// Offline mode (see [`OfflineSection`]): what the site answers while every address of
    /// its upstream is down; the upstreams it proxies to are health-checked, those with one
    /// `address` too. Default: none (502).
    pub offline: Option<OfflineSection>,
}

/// Default of [`OfflineSection::stale`].
pub const DEFAULT_OFFLINE_STALE: &str = "1d";
/// Default of [`OfflineSection::retry_after`].
pub const DEFAULT_OFFLINE_RETRY_AFTER: &str = "60s";

/// `[sites.NAME.offline]`: while health checks find every address of the upstream of a
/// request down, a cached answer is served however stale (within `stale`) and anything
/// else gets a maintenance page (503 with `Retry-After`), without a connection attempt.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineSection {
    /// How long past its expiry a cached answer is still served while offline.
    /// Default: [`DEFAULT_OFFLINE_STALE`].
    pub stale: Option<String>,
    /// The maintenance page (HTML, relative to the config file). Default: the site's
    /// `error_pages` page for 503, else the built-in one.
    pub page: Option<String>,
    /// `Retry-After` of the maintenance page. Default: [`DEFAULT_OFFLINE_RETRY_AFTER`].
    pub retry_after: Option<String>,
}

/// Default of [`SiteAccessSection::deny_body`].
pub const DEFAULT_DENY_BODY: &str = "forbidden\n";

/// `[sites.NAME.access]`: who may not use a site at all.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SiteAccessSection {
    /// Files of denied IPs/CIDRs (one per line, or nginx `geo` lines `1.2.3.4 1;` as
    /// fail2ban writes them), reloaded when they change. Default: none.
    #[serde(default)]
    pub deny_files: Vec<String>,
    /// Body of the 403 sent to denied clients. Default: [`DEFAULT_DENY_BODY`].
    pub deny_body: Option<String>,
    /// Case-insensitive regexes; a matching `User-Agent` gets 403. Default: none.
    #[serde(default)]
    pub user_agent_deny: Vec<String>,
    /// Body of the 403 sent to denied user agents. Default: `deny_body`.
    pub user_agent_body: Option<String>,
}

/// Default of [`LocationSection::site_plugins`].
pub const DEFAULT_SITE_PLUGINS: bool = true;

/// `[[sites.NAME.locations]]`: what to do for a set of paths.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocationSection {
    /// nginx location syntax: `"/prefix/"`, `"= /exact"`, `"^~ /priority-prefix/"`,
    /// `"~ regex"` or `"~* case-insensitive-regex"`. Required.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Proxy to the named upstream. Default: none.
    pub proxy: Option<String>,
    /// Answer locally with a fixed response. Default: none.
    #[serde(rename = "return")]
    pub respond: Option<ReturnSection>,
    /// Answer with a redirect. Default: none.
    pub redirect: Option<RedirectSection>,
    /// Host header override for this location (wins over the upstream's). Default: none.
    pub host_header: Option<String>,
    /// Body size limit for this location (wins over the site's). Default: the site's.
    pub max_body_size: Option<String>,
    /// Replace upstream error responses with the site's error pages here (wins over the
    /// site's `intercept_errors`). Default: the site's.
    pub intercept_errors: Option<bool>,
    /// Receive request bodies whole before going upstream here (wins over the site's
    /// `request_buffering`). Default: the site's.
    pub request_buffering: Option<bool>,
    /// Plugins for requests of this location, in order (after the site's). Default: none.
    #[serde(default)]
    pub plugins: Vec<PluginSection>,
    /// Whether the site's plugins also run for this location.
    /// Default: [`DEFAULT_SITE_PLUGINS`].
    pub site_plugins: Option<bool>,
    /// Cache policy for this location (each key set here wins over the site's `cache`).
    /// Default: the site's.
    pub cache: Option<CachePolicySection>,
    /// Response compression for this location (each key set here wins over the site's
    /// `compress`). Default: the site's.
    pub compress: Option<CompressSection>,
    /// Rate-limit zones applied to this location, on top of the site's (a zone the site
    /// applies too is applied the location's way): a zone's name, or
    /// `{ zone = "NAME", burst = N, ... }` (see [`RateLimitUseSection`]). Default: none.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitRef>,
    /// Connection-limit zones applied to this location, on top of the site's. Default: none.
    #[serde(default)]
    pub connection_limits: Vec<String>,
    /// Only clients in these IPs/CIDRs may use this location; others get 403.
    /// Default: everyone.
    pub allow: Option<Vec<String>>,
    /// Authentication for this location (`auth = { }`), in place of the site's; `auth = {}`
    /// (no method) turns the site's off here. Default: the site's.
    pub auth: Option<AuthSection>,
    /// Request headers sent upstream from this location, by name (see
    /// [`ProxyHeaderSection`]); over the site's and the upstream's. Default: none.
    #[serde(default)]
    pub proxy_headers: BTreeMap<String, ProxyHeaderSection>,
}

/// Default of [`AuthSection::keep_authorization`]: the credentials stop at the edge.
pub const DEFAULT_KEEP_AUTHORIZATION: bool = false;

/// `auth = { }` on a site or location: who may use it. At most one method: `basic` or
/// `forward`; none turns a site's authentication off for a location.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Basic auth against an htpasswd file (`basic = { }`). Default: none.
    pub basic: Option<BasicAuthSection>,
    /// Ask an auth service for each request (`forward = { }`). Default: none.
    pub forward: Option<ForwardAuthSection>,
    /// Send the client's `Authorization` header upstream too (it is removed by default).
    /// Default: [`DEFAULT_KEEP_AUTHORIZATION`].
    pub keep_authorization: Option<bool>,
}

/// `auth = { basic = { } }`: users and passwords from an Apache htpasswd file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthSection {
    /// htpasswd file (relative to the config file) of `user:hash` lines, bcrypt
    /// (`htpasswd -B`) or argon2 hashes; re-read when it changes. Required.
    pub htpasswd: String,
    /// The realm the browser shows in its login prompt. Required.
    pub realm: String,
}

/// Default of [`ForwardAuthSection::timeout`].
pub const DEFAULT_FORWARD_AUTH_TIMEOUT: &str = "5s";
/// Default of [`ForwardAuthSection::cache`]: every request asks.
pub const DEFAULT_FORWARD_AUTH_CACHE: &str = "0s";
/// Default of [`ForwardAuthSection::cache_size`].
pub const DEFAULT_FORWARD_AUTH_CACHE_SIZE: usize = 10000;

/// `auth = { forward = { } }`: an auth service asked with a `GET` for each request
/// (nginx's `auth_request`, Traefik's ForwardAuth).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthSection {
    /// The auth service's URL (`http://` or `https://`, e.g. a tailnet name). Required.
    pub url: String,
    /// Response headers of the service's 2xx set on the upstream request (a client's own
    /// values of them are removed). Default: none.
    #[serde(default)]
    pub copy_headers: Vec<String>,
    /// Response header of the service's 2xx naming the user, logged as `user`.
    /// Default: none.
    pub user_header: Option<String>,
    /// Longest wait for the service's answer; past it, or on any other failure: 503.
    /// Default: [`DEFAULT_FORWARD_AUTH_TIMEOUT`].
    pub timeout: Option<String>,
    /// How long an answer (2xx, 401, 403, redirect) is remembered per `cache_key`.
    /// Default: [`DEFAULT_FORWARD_AUTH_CACHE`].
    pub cache: Option<String>,
    /// What answers are remembered by: `"cookie:NAME"`, `"header:NAME"`; a request without
    /// every part always asks. Required with `cache`. Default: none.
    #[serde(default)]
    pub cache_key: Vec<String>,
    /// Answers remembered at most. Default: [`DEFAULT_FORWARD_AUTH_CACHE_SIZE`].
    pub cache_size: Option<usize>,
}

/// `[[sites.NAME.plugins]]` / `[[sites.NAME.locations.plugins]]`: a plugin and its options.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct PluginSection {
    /// The registered plugin name, e.g. `"headers"`. Required.
    #[serde(rename = "use")]
    pub name: String,
    /// Everything else in the table: the plugin's own options, which it validates.
    #[serde(flatten)]
    pub options: toml::Table,
}

/// Default of [`ReturnSection::status`].
pub const DEFAULT_RETURN_STATUS: u16 = 200;
/// Default of [`ReturnSection::content_type`].
pub const DEFAULT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// `return = { }` on a location: answer locally with a fixed response.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnSection {
    /// Status code. Default: [`DEFAULT_RETURN_STATUS`].
    pub status: Option<u16>,
    /// Body text. Default: empty.
    #[serde(default)]
    pub body: String,
    /// Content type. Default: [`DEFAULT_CONTENT_TYPE`].
    pub content_type: Option<String>,
}

/// Default of [`RedirectSection::status`].
pub const DEFAULT_REDIRECT_STATUS: u16 = 302;

/// `redirect = { }` on a location: answer with a redirect.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectSection {
    /// 301, 302, 303, 307 or 308. Default: [`DEFAULT_REDIRECT_STATUS`].
    pub status: Option<u16>,
    /// Target, with `$request_uri`, `$uri`, `$args`, `$host` and `$scheme` substituted.
    /// Required.
    pub to: String,
}

/// Default of [`CacheSection::max_size`].
pub const DEFAULT_CACHE_MAX_SIZE: &str = "256m";
/// Default of [`CacheSection::max_object_size`].
pub const DEFAULT_CACHE_MAX_OBJECT_SIZE: &str = "16m";
/// Default of [`CacheSection::inactive`].
pub const DEFAULT_CACHE_INACTIVE: &str = "10m";
/// Default of [`CacheSection::lock_timeout`].
pub const DEFAULT_CACHE_LOCK_TIMEOUT: &str = "5s";

/// `[cache]`: the shared response cache storage.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Bytes kept in memory (bodies and headers); least recently used entries are evicted
    /// above it. Default: [`DEFAULT_CACHE_MAX_SIZE`].
    pub max_size: Option<String>,
    /// Largest response stored; larger ones are proxied, not cached.
    /// Default: [`DEFAULT_CACHE_MAX_OBJECT_SIZE`].
    pub max_object_size: Option<String>,
    /// Entries not read for this long are dropped, fresh or not (nginx `inactive`).
    /// Default: [`DEFAULT_CACHE_INACTIVE`].
    pub inactive: Option<String>,
    /// How long concurrent misses wait for the one upstream fetch before going upstream
    /// themselves, uncached (nginx `proxy_cache_lock_timeout`).
    /// Default: [`DEFAULT_CACHE_LOCK_TIMEOUT`].
    pub lock_timeout: Option<String>,
    /// A disk tier behind memory, so entries survive a restart. Default: none.
    pub disk: Option<CacheDiskSection>,
}

/// Default of [`CacheDiskSection::max_size`].
pub const DEFAULT_CACHE_DISK_MAX_SIZE: &str = "1g";

/// `[cache.disk]`: the cache's disk tier.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheDiskSection {
    /// Cache directory, relative to the config file; created if missing. Required.
    pub path: String,
    /// Bytes of entry files kept on disk. Default: [`DEFAULT_CACHE_DISK_MAX_SIZE`].
    pub max_size: Option<String>,
}

/// Default of [`CachePolicySection::enabled`] once a `cache` table is present.
pub const DEFAULT_CACHE_ENABLED: bool = true;
/// Default of [`CachePolicySection::key_scheme`].
pub const DEFAULT_KEY_SCHEME: bool = true;
/// Default of [`CachePolicySection::key_host`].
pub const DEFAULT_KEY_HOST: bool = true;
/// Default of [`CachePolicySection::key_query`].
pub const DEFAULT_KEY_QUERY: &str = "full";
/// Default of [`CachePolicySection::valid`] (nginx's `proxy_cache_valid 10m`).
pub const DEFAULT_VALID: &[(&str, &str)] = &[("200", "10m"), ("301", "10m"), ("302", "10m")];
/// Default of [`CachePolicySection::ignore_cache_control`].
pub const DEFAULT_IGNORE_CACHE_CONTROL: bool = false;
/// Default of [`CachePolicySection::ignore_set_cookie`].
pub const DEFAULT_IGNORE_SET_COOKIE: bool = false;
/// Default of [`CachePolicySection::bypass_headers`].
pub const DEFAULT_BYPASS_HEADERS: &[&str] = &["Authorization"];
/// Default of [`CachePolicySection::stale_while_revalidate`].
pub const DEFAULT_STALE_WHILE_REVALIDATE: &str = "0s";
/// Default of [`CachePolicySection::stale_if_error`].
pub const DEFAULT_STALE_IF_ERROR: &str = "0s";
/// Default of [`CachePolicySection::stale_if_error_statuses`].
pub const DEFAULT_STALE_IF_ERROR_STATUSES: &[u16] = &[500, 502, 503, 504];
/// Default of [`CachePolicySection::lock`] (nginx's `proxy_cache_lock off`).
pub const DEFAULT_CACHE_LOCK: bool = false;
/// Default of [`CachePolicySection::background_update`] (nginx's
/// `proxy_cache_background_update off`).
pub const DEFAULT_BACKGROUND_UPDATE: bool = false;
/// Default of [`CachePolicySection::status_header`].
pub const DEFAULT_STATUS_HEADER: &str = "X-Cache-Status";

/// `cache = { }` on a site or location: what is cached, under which key, for how long.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CachePolicySection {
    /// Cache responses here once a `cache` table is present; `false` turns a site's caching
    /// off for one location. Default: [`DEFAULT_CACHE_ENABLED`].
    pub enabled: Option<bool>,
    /// Include the scheme (http/https) in the key. Default: [`DEFAULT_KEY_SCHEME`].
    pub key_scheme: Option<bool>,
    /// Include the host in the key, so two sites never share entries.
    /// Default: [`DEFAULT_KEY_HOST`].
    pub key_host: Option<bool>,
    /// The query in the key: "full", "none", "sorted", or a list of parameter names to keep
    /// (an allowlist, sorted). Default: [`DEFAULT_KEY_QUERY`].
    pub key_query: Option<QueryKeySection>,
    /// Request headers whose values are part of the key, e.g. `["Accept-Language"]`.
    /// Default: none.
    pub key_headers: Option<Vec<String>>,
    /// Freshness by status when the origin says nothing (or is ignored), e.g.
    /// `{ "200" = "1d", "404" = "1m", "any" = "5m" }`. Default: [`DEFAULT_VALID`].
    pub valid: Option<BTreeMap<String, String>>,
    /// Ignore the origin's `Cache-Control` and `Expires` (nginx `proxy_ignore_headers
    /// Cache-Control Expires`). Default: [`DEFAULT_IGNORE_CACHE_CONTROL`].
    pub ignore_cache_control: Option<bool>,
    /// Cache responses carrying `Set-Cookie` anyway; the stored copy has `Set-Cookie` removed.
    /// Default: [`DEFAULT_IGNORE_SET_COOKIE`].
    pub ignore_set_cookie: Option<bool>,
    /// Requests carrying any of these headers skip the cache.
    /// Default: [`DEFAULT_BYPASS_HEADERS`].
    pub bypass_headers: Option<Vec<String>>,
    /// Requests carrying any of these cookies skip the cache. Default: none.
    pub bypass_cookies: Option<Vec<String>>,
    /// Requests carrying any of these query parameters skip the cache. Default: none.
    pub bypass_query: Option<Vec<String>>,
    /// For this long after an entry expires, while one request refreshes it, the others get
    /// the stale copy at once (nginx's `proxy_cache_use_stale updating`; the origin's
    /// `stale-while-revalidate` wins when honoured). Default: [`DEFAULT_STALE_WHILE_REVALIDATE`].
    pub stale_while_revalidate: Option<String>,
    /// Within `stale_while_revalidate`, the request that finds the entry expired gets the
    /// stale copy too and the refresh runs in the background; off, that request waits for
    /// the refresh. Default: [`DEFAULT_BACKGROUND_UPDATE`].
    pub background_update: Option<bool>,
    /// Concurrent misses for one key wait (up to `[cache] lock_timeout`) for the one request
    /// that fetches it, instead of all going upstream. Default: [`DEFAULT_CACHE_LOCK`].
    pub lock: Option<bool>,
    /// Serve a stale entry when the upstream fails, for this long after it expires (the
    /// origin's `stale-if-error` wins when honoured). Default: [`DEFAULT_STALE_IF_ERROR`].
    pub stale_if_error: Option<String>,
    /// Upstream statuses that count as errors for `stale_if_error` (connect errors and
    /// timeouts always do). Default: [`DEFAULT_STALE_IF_ERROR_STATUSES`].
    pub stale_if_error_statuses: Option<Vec<u16>>,
    /// Name of the response header carrying the cache status; "" turns it off.
    /// Default: [`DEFAULT_STATUS_HEADER`].
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

/// Default of [`CompressSection::enabled`] once a `compress` table is present.
pub const DEFAULT_COMPRESS_ENABLED: bool = true;
/// Default of [`CompressSection::encodings`]: the proxy's preference among codings a client
/// accepts equally.
pub const DEFAULT_COMPRESS_ENCODINGS: &[&str] = &["zstd", "br", "gzip"];
/// Default of [`CompressSection::types`]: text formats (nginx's `text/html` plus the
/// `gzip_types` most sites add, as Caddy's `encode` defaults).
pub const DEFAULT_COMPRESS_TYPES: &[&str] = &[
    "text/html",
    "text/css",
    "text/plain",
    "text/xml",
    "text/javascript",
    "text/markdown",
    "text/csv",
    "application/javascript",
    "application/json",
    "application/xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/manifest+json",
    "application/ld+json",
    "application/wasm",
    "image/svg+xml",
    "image/x-icon",
];
/// Default of [`CompressSection::min_length`] (Caddy's; below it the saving is about the
/// size of the headers it costs).
pub const DEFAULT_COMPRESS_MIN_LENGTH: &str = "512";
/// Default of [`CompressSection::gzip_level`] (zlib's own default).
pub const DEFAULT_GZIP_LEVEL: u32 = 6;
/// Default of [`CompressSection::br_level`] (about gzip 6's speed, smaller output).
pub const DEFAULT_BR_LEVEL: u32 = 5;
/// Default of [`CompressSection::zstd_level`] (zstd's own default).
pub const DEFAULT_ZSTD_LEVEL: u32 = 3;

/// `compress = { }` on a site or location: which responses are compressed, with which
/// codings. The coding is chosen from the request's `Accept-Encoding` (q-values honoured, the
/// proxy's order breaking ties); cached responses are stored compressed, once per coding.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CompressSection {
    /// Compress here once a `compress` table is present; `false` turns a site's compression
    /// off for one location. Default: [`DEFAULT_COMPRESS_ENABLED`].
    pub enabled: Option<bool>,
    /// Codings offered, `"zstd"`, `"br"` and `"gzip"`, in the proxy's order of preference.
    /// Default: [`DEFAULT_COMPRESS_ENCODINGS`].
    pub encodings: Option<Vec<String>>,
    /// Media types compressed (`"text/html"`, `"text/*"`, or `"*"` for any), compared
    /// without parameters such as `charset`. Default: [`DEFAULT_COMPRESS_TYPES`].
    pub types: Option<Vec<String>>,
    /// Responses whose `Content-Length` is below this are sent as they are (a response of
    /// unknown length is compressed). Default: [`DEFAULT_COMPRESS_MIN_LENGTH`].
    pub min_length: Option<String>,
    /// gzip level, 1 (fastest) to 9 (smallest). Default: [`DEFAULT_GZIP_LEVEL`].
    pub gzip_level: Option<u32>,
    /// Brotli quality, 1 (fastest) to 11 (smallest). Default: [`DEFAULT_BR_LEVEL`].
    pub br_level: Option<u32>,
    /// zstd level, 1 (fastest) to 19 (smallest). Default: [`DEFAULT_ZSTD_LEVEL`].
    pub zstd_level: Option<u32>,
}

/// Default of [`ClientSection::ip_header`] (Fly.io's).
pub const DEFAULT_IP_HEADER: &str = "Fly-Client-IP";
/// Default of [`ClientSection::forwarded_for_fallback`].
pub const DEFAULT_FORWARDED_FOR_FALLBACK: bool = false;
/// Default of [`ClientSection::proto_header`] (Fly.io's edge sends it).
pub const DEFAULT_PROTO_HEADER: &str = "X-Forwarded-Proto";

/// `[client]`: how the client address is found.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// CIDRs of TCP peers whose client-IP header is believed; with none, the header is never
    /// believed and the peer address is the client. Default: none.
    pub trusted_proxies: Option<Vec<String>>,
    /// Header naming the client when the peer is trusted. Default: [`DEFAULT_IP_HEADER`].
    pub ip_header: Option<String>,
    /// When a trusted peer sent no usable header, take the rightmost untrusted entry of
    /// `X-Forwarded-For`. Default: [`DEFAULT_FORWARDED_FOR_FALLBACK`].
    pub forwarded_for_fallback: Option<bool>,
    /// Header in which a trusted peer names the scheme the client used (`http` or `https`,
    /// e.g. Fly's edge, which terminates TLS); `$scheme`, `X-Forwarded-Proto` upstream and
    /// the cache key follow it. From other peers it is ignored; `""`: always the
    /// connection's scheme. Default: [`DEFAULT_PROTO_HEADER`].
    pub proto_header: Option<String>,
}

/// Default of [`ConnectionLimitSection::key`].
pub const DEFAULT_CONNECTION_KEY: &str = "client_ip";
/// Default of [`ConnectionLimitSection::status`] (nginx's `limit_conn_status`).
pub const DEFAULT_CONNECTION_LIMIT_STATUS: u16 = 503;

/// `[connection_limits.NAME]`: how many requests of one client may be in progress at once, with
/// nginx `limit_conn` semantics (a request counts from when its head was read until it ends).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionLimitSection {
    /// Requests of one key in progress at once; one more is refused. Required.
    pub max: u32,
    /// `"client_ip"`, `"client_ip+location"` or `"header:NAME"`.
    /// Default: [`DEFAULT_CONNECTION_KEY`].
    pub key: Option<String>,
    /// IPv6 clients are counted per prefix of this length. Default: [`DEFAULT_IPV6_PREFIX`].
    pub ipv6_prefix: Option<u8>,
    /// Status of refusals. Default: [`DEFAULT_CONNECTION_LIMIT_STATUS`].
    pub status: Option<u16>,
    /// Only log and count refusals, never refuse. Default: [`DEFAULT_DRY_RUN`].
    pub dry_run: Option<bool>,
}

/// One entry of a site's or location's `rate_limits`: a zone's name (applied with the
/// zone's own `burst`, `delay`, `status` and `dry_run`), or a table that applies it its own
/// way (nginx's `limit_req zone=NAME burst=N nodelay`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum RateLimitRef {
    /// The zone's name.
    Zone(String),
    /// The zone and how it is applied here.
    Use(RateLimitUseSection),
}

impl RateLimitRef {
    /// The name of the zone applied.
    pub fn zone(&self) -> &str {
        match self {
            RateLimitRef::Zone(name) => name,
            RateLimitRef::Use(applied) => &applied.zone,
        }
    }
}

impl From<String> for RateLimitRef {
    fn from(zone: String) -> Self {
        RateLimitRef::Zone(zone)
    }
}

// By hand rather than `untagged`, whose error ("did not match any variant") says nothing
// about what is expected.
impl<'de> Deserialize<'de> for RateLimitRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entry;
        impl<'de> serde::de::Visitor<'de> for Entry {
            type Value = RateLimitRef;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a rate-limit zone's name or { zone = \"NAME\", burst = N, ... }")
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
                Ok(RateLimitRef::Zone(value.to_string()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                let applied = RateLimitUseSection::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(RateLimitRef::Use(applied))
            }
        }
        deserializer.deserialize_any(Entry)
    }
}

/// `rate_limits = [{ }]` on a site or location: a zone applied its own way here (nginx's
/// `limit_req`), so two places can share one zone's counters with different bursts.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitUseSection {
    /// The `[rate_limits.NAME]` zone whose counters this counts in. Required.
    pub zone: String,
    /// Requests allowed above the rate before rejecting. Default: the zone's `burst`.
    pub burst: Option<u32>,
    /// The first `delay` excess requests pass at once, later ones (within the burst) are
    /// delayed to the rate. Default: the zone's `delay`.
    pub delay: Option<u32>,
    /// `true`: the whole burst passes at once (`delay` must be unset); `false`: excess
    /// requests beyond `delay` (0 unless set) are held back to the rate, as nginx without
    /// `nodelay`. Default: the zone's `delay`.
    pub nodelay: Option<bool>,
    /// Status of rejections. Default: the zone's `status`.
    pub status: Option<u16>,
    /// Only log and count rejections, never reject. Default: the zone's `dry_run`.
    pub dry_run: Option<bool>,
}

/// Default of [`RateLimitSection::burst`].
pub const DEFAULT_BURST: u32 = 0;
/// Default of [`RateLimitSection::key`].
pub const DEFAULT_ZONE_KEY: &str = "client_ip";
/// Default of [`RateLimitSection::ipv6_prefix`].
pub const DEFAULT_IPV6_PREFIX: u8 = 64;
/// Default of [`RateLimitSection::status`].
pub const DEFAULT_LIMIT_STATUS: u16 = 429;
/// Default of [`RateLimitSection::dry_run`].
pub const DEFAULT_DRY_RUN: bool = false;
/// Default of [`RateLimitSection::slots`].
pub const DEFAULT_SLOTS: usize = 16384;

/// `[rate_limits.NAME]`: a rate-limit zone with nginx `limit_req` semantics: what is counted
/// (`key`), at which `rate`, in how much memory (`slots`), as nginx's `limit_req_zone`; and
/// how it is applied where a site or location names it alone (`burst`, `delay`, `status`,
/// `dry_run`), which `{ zone = "NAME", ... }` can change place by place.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    /// `"10r/s"` or `"30r/m"`. Required.
    pub rate: String,
    /// Requests allowed above the rate before rejecting, where the zone is applied by name.
    /// Default: [`DEFAULT_BURST`].
    pub burst: Option<u32>,
    /// The first `delay` excess requests pass at once, later ones (within the burst) are
    /// delayed to the rate, where the zone is applied by name. Default: no delay at all
    /// (nginx's `nodelay`).
    pub delay: Option<u32>,
    /// `"client_ip"`, `"client_ip+location"` or `"header:NAME"`.
    /// Default: [`DEFAULT_ZONE_KEY`].
    pub key: Option<String>,
    /// IPv6 clients are counted per prefix of this length. Default: [`DEFAULT_IPV6_PREFIX`].
    pub ipv6_prefix: Option<u8>,
    /// Status of rejections, where the zone is applied by name.
    /// Default: [`DEFAULT_LIMIT_STATUS`].
    pub status: Option<u16>,
    /// Only log and count rejections, never reject, where the zone is applied by name.
    /// Default: [`DEFAULT_DRY_RUN`].
    pub dry_run: Option<bool>,
    /// Counters per row of the sketch (memory is 4 rows x 8 bytes x slots).
    /// Default: [`DEFAULT_SLOTS`].
    pub slots: Option<usize>,
    /// `"local"`: this process counts alone; `"global"`: every machine sharing `[redis]`
    /// counts together (needs `[redis]`). Default: [`DEFAULT_ZONE_SCOPE`].
    pub scope: Option<String>,
}

/// Default of [`RateLimitSection::scope`].
pub const DEFAULT_ZONE_SCOPE: &str = "local";

/// Default of [`TelemetrySection::min_backoff`].
pub const DEFAULT_TELEMETRY_MIN_BACKOFF: &str = "500ms";
/// Default of [`TelemetrySection::max_backoff`].
pub const DEFAULT_TELEMETRY_MAX_BACKOFF: &str = "30s";

/// `[telemetry]`: what leaves the machine for the homelab (Grafana Alloy's job before):
/// labels on everything shipped, and how failed pushes are retried.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// Labels added to every pushed series and every Loki stream, e.g.
    /// `{ instance = "flyio-proxy" }`; a series' own label of the same name wins.
    /// Default: `instance` = `$FLY_APP_NAME`, else the host name; with `[redis]`, its `instance`.
    pub labels: Option<BTreeMap<String, String>>,
    /// First wait before retrying a failed push; doubled after each failure.
    /// Default: [`DEFAULT_TELEMETRY_MIN_BACKOFF`].
    pub min_backoff: Option<String>,
    /// Longest wait between retries. Default: [`DEFAULT_TELEMETRY_MAX_BACKOFF`].
    pub max_backoff: Option<String>,
    /// Push metrics to Prometheus (`remote_write`). Default: none.
    pub prometheus: Option<TelemetryPrometheusSection>,
    /// Push access-log lines to Loki. Default: none.
    pub loki: Option<TelemetryLokiSection>,
}

/// Default of [`TelemetryPrometheusSection::interval`].
pub const DEFAULT_REMOTE_WRITE_INTERVAL: &str = "15s";
/// Default of [`TelemetryPrometheusSection::timeout`] and [`TelemetryLokiSection::timeout`].
pub const DEFAULT_TELEMETRY_TIMEOUT: &str = "10s";
/// Default of [`TelemetryPrometheusSection::verify`] and [`TelemetryLokiSection::verify`].
pub const DEFAULT_TELEMETRY_VERIFY: bool = true;
/// Default of [`TelemetryPrometheusSection::buffer`]: an hour of 1,500 series at 15s.
pub const DEFAULT_REMOTE_WRITE_BUFFER: usize = 360000;

/// `[telemetry.prometheus]`: the series `/metrics` serves, pushed with Prometheus'
/// remote-write protocol (protobuf + snappy), histograms included.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryPrometheusSection {
    /// The receiver, e.g. `"https://prometheus.tailXXXX.ts.net/api/v1/write"`; its host is
    /// resolved through `[resolver]` (MagicDNS). Required.
    pub remote_write: String,
    /// How often the metrics are read and pushed. Default: [`DEFAULT_REMOTE_WRITE_INTERVAL`].
    pub interval: Option<String>,
    /// Longest wait for one push (connect, send, answer).
    /// Default: [`DEFAULT_TELEMETRY_TIMEOUT`].
    pub timeout: Option<String>,
    /// Samples kept while the receiver is unreachable; past it the oldest pushes are dropped
    /// and counted. Default: [`DEFAULT_REMOTE_WRITE_BUFFER`].
    pub buffer: Option<usize>,
    /// Environment variable holding a bearer token sent as `Authorization`. Default: none.
    pub bearer_token_env: Option<String>,
    /// User name for basic auth (with `basic_auth_password_env`). Default: none.
    pub basic_auth_user: Option<String>,
    /// Environment variable holding the basic-auth password. Default: none.
    pub basic_auth_password_env: Option<String>,
    /// PEM file of CA certificates to verify the receiver against instead of the built-in
    /// web roots. Default: none.
    pub ca_file: Option<String>,
    /// Verify the receiver's certificate; `false` is an explicit opt-out.
    /// Default: [`DEFAULT_TELEMETRY_VERIFY`].
    pub verify: Option<bool>,
}

/// Default of [`TelemetryLokiSection::labels`] (`[telemetry] labels` are added to them).
pub const DEFAULT_LOKI_LABELS: &[(&str, &str)] = &[("job", "proxy-app")];
/// Default of [`TelemetryLokiSection::batch_size`].
pub const DEFAULT_LOKI_BATCH_SIZE: usize = 1000;
/// Default of [`TelemetryLokiSection::max_wait`].
pub const DEFAULT_LOKI_MAX_WAIT: &str = "1s";
/// Default of [`TelemetryLokiSection::buffer`].
pub const DEFAULT_LOKI_BUFFER: usize = 50000;

/// `[telemetry.loki]`: each access-log line, as redacted, pushed to Loki as one entry with
/// its request time (protobuf + snappy, as Loki's own clients send it).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryLokiSection {
    /// The push endpoint, e.g. `"https://loki.tailXXXX.ts.net/loki/api/v1/push"`; its host
    /// is resolved through `[resolver]` (MagicDNS). Required.
    pub url: String,
    /// Stream labels, few and fixed (never per-request values: those are in the line).
    /// Default: [`DEFAULT_LOKI_LABELS`].
    pub labels: Option<BTreeMap<String, String>>,
    /// Lines per push at most. Default: [`DEFAULT_LOKI_BATCH_SIZE`].
    pub batch_size: Option<usize>,
    /// Longest a line waits for its batch to fill before it is pushed anyway.
    /// Default: [`DEFAULT_LOKI_MAX_WAIT`].
    pub max_wait: Option<String>,
    /// Lines kept while Loki is unreachable (and 2 KiB per line in bytes); past it the
    /// oldest are dropped and counted. Default: [`DEFAULT_LOKI_BUFFER`].
    pub buffer: Option<usize>,
    /// Longest wait for one push (connect, send, answer).
    /// Default: [`DEFAULT_TELEMETRY_TIMEOUT`].
    pub timeout: Option<String>,
    /// Environment variable holding a bearer token sent as `Authorization`. Default: none.
    pub bearer_token_env: Option<String>,
    /// User name for basic auth (with `basic_auth_password_env`). Default: none.
    pub basic_auth_user: Option<String>,
    /// Environment variable holding the basic-auth password. Default: none.
    pub basic_auth_password_env: Option<String>,
    /// PEM file of CA certificates to verify Loki against instead of the built-in web
    /// roots. Default: none.
    pub ca_file: Option<String>,
    /// Verify Loki's certificate; `false` is an explicit opt-out.
    /// Default: [`DEFAULT_TELEMETRY_VERIFY`].
    pub verify: Option<bool>,
}

/// Default of [`RedisSection::connect_timeout`].
pub const DEFAULT_REDIS_CONNECT_TIMEOUT: &str = "1s";
/// Default of [`RedisSection::command_timeout`].
pub const DEFAULT_REDIS_COMMAND_TIMEOUT: &str = "250ms";
/// Default of [`RedisSection::pool_size`].
pub const DEFAULT_REDIS_POOL_SIZE: usize = 2;
/// Default of [`RedisSection::sync_interval`].
pub const DEFAULT_REDIS_SYNC_INTERVAL: &str = "100ms";
/// Default of [`RedisSection::prefix`].
pub const DEFAULT_REDIS_PREFIX: &str = "edge";

/// `[redis]`: the Redis a fleet of machines shares (a Fly app on the private network, or
/// Upstash): global rate-limit zones count there, and purges reach every machine through it.
/// Without it every machine is on its own. Secrets come only from environment variables.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// Environment variable holding the URL, `redis://` or `rediss://` (TLS), e.g.
    /// `redis://edge-redis.internal:6379`; a password in it is used. Required.
    pub url_env: String,
    /// Environment variable holding the password (instead of one in the URL). Default: none.
    pub password_env: Option<String>,
    /// PEM file of CA certificates to verify a `rediss://` server against instead of the
    /// built-in web roots (a Redis on the private network with its own CA). Default: none.
    pub ca_file: Option<String>,
    /// Longest wait for a connection to Redis. Default: [`DEFAULT_REDIS_CONNECT_TIMEOUT`].
    pub connect_timeout: Option<String>,
    /// Longest wait for one command's answer; past it the command counts as failed.
    /// Default: [`DEFAULT_REDIS_COMMAND_TIMEOUT`].
    pub command_timeout: Option<String>,
    /// Connections kept open to Redis (multiplexed, reconnected when they break).
    /// Default: [`DEFAULT_REDIS_POOL_SIZE`].
    pub pool_size: Option<usize>,
    /// How often the local counts of global zones are reconciled with Redis.
    /// Default: [`DEFAULT_REDIS_SYNC_INTERVAL`].
    pub sync_interval: Option<String>,
    /// Names the fleet: machines with the same prefix share limits and purges. Default:
    /// [`DEFAULT_REDIS_PREFIX`].
    pub prefix: Option<String>,
    /// This machine's name in the fleet (the `instance` label of fleet metrics and logs).
    /// Default: `$FLY_MACHINE_ID`, else the host name and process id.
    pub instance: Option<String>,
}

/// Default of [`BansSection::max_bans`].
pub const DEFAULT_MAX_BANS: usize = 100000;
/// Default of [`BansSection::max_tracked`].
pub const DEFAULT_MAX_TRACKED: usize = 100000;
/// Default of [`BansSection::status`].
pub const DEFAULT_BAN_STATUS: u16 = 403;
/// Default of [`BansSection::body`].
pub const DEFAULT_BAN_BODY: &str = "banned\n";
/// Default of [`BanRuleSection::window`].
pub const DEFAULT_BAN_WINDOW: &str = "1m";
/// Default of [`BanRuleSection::duration`].
pub const DEFAULT_BAN_DURATION: &str = "1h";

/// `[bans]`: client addresses (IPv6 folded to its /64) banned for a time by rules over what
/// they were answered and which paths they asked for; a banned client is answered before
/// routing, as cheaply as a deny-list hit.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BansSection {
    /// File the active bans are kept in (relative to the config file), written atomically
    /// within a second of a change and at shutdown, read at start, so bans survive a
    /// restart. Read when the process starts. Default: none (bans kept in memory only).
    pub state_file: Option<String>,
    /// Banned addresses held at most; past it, expired bans go first, then the one ending
    /// soonest among a few. Read when the process starts. Default: [`DEFAULT_MAX_BANS`].
    pub max_bans: Option<usize>,
    /// Clients whose answers a status rule counts at once; past it, expired counts go
    /// first, then any (a spray of addresses can escape counting, never get another client
    /// banned). Default: [`DEFAULT_MAX_TRACKED`].
    pub max_tracked: Option<usize>,
    /// IPs/CIDRs never banned (monitoring, the homelab, your own address). Default: none.
    #[serde(default)]
    pub exempt: Vec<String>,
    /// Status of the answer to a banned client. Default: [`DEFAULT_BAN_STATUS`].
    pub status: Option<u16>,
    /// Body of the answer to a banned client. Default: [`DEFAULT_BAN_BODY`].
    pub body: Option<String>,
    /// The rules that ban (`[[bans.rules]]`). Default: none.
    #[serde(default)]
    pub rules: Vec<BanRuleSection>,
}

/// `[[bans.rules]]`: one way a client gets banned: `count` answers with one of `statuses`
/// within `window`, or any request for one of `paths`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BanRuleSection {
    /// The rule's name (in metrics, the access log and the admin listing). Required.
    pub name: String,
    /// Statuses counted, e.g. `[403, 404, 429]` (with `count`). Default: none.
    pub statuses: Option<Vec<u16>>,
    /// Answers with one of `statuses` within `window` that ban the client. Default: none.
    pub count: Option<u32>,
    /// The window `count` is counted in (fixed windows from a client's first counted
    /// answer). Default: [`DEFAULT_BAN_WINDOW`].
    pub window: Option<String>,
    /// Trap paths: a request whose path starts with one of these bans its client at once
    /// (e.g. `"/wp-login.php"`, `"/.env"`). Default: none.
    pub paths: Option<Vec<String>>,
    /// How long a ban lasts. Default: [`DEFAULT_BAN_DURATION`].
    pub duration: Option<String>,
}
