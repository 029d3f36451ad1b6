//! [`Metrics`]: every metric the proxy exports, behind typed methods so label values stay
//! bounded (site names, upstream names, fixed words) and names stay in one place.
//!
//! The recorder is owned, not installed globally: embedders may run their own `metrics`
//! recorder, and two proxies in one process (tests) must not share counters.

use super::histogram::DurationHistogram;
use super::CACHE_STATUS_LABELS;
use metrics::{Counter, Gauge, Key, KeyName, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use parking_lot::RwLock;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Maps of metric handles by label values, looked up once or twice per request: hashed
/// with foldhash, several times cheaper than the default SipHash on short keys (the keys
/// are bounded label values, not attacker-chosen).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Prefix of every metric name.
pub const PREFIX: &str = "edge_";

/// `edge_requests_total{host,method,status}`.
pub(crate) const REQUESTS_TOTAL: &str = "edge_requests_total";
/// `edge_request_duration_seconds{host}` histogram.
pub(crate) const REQUEST_DURATION: &str = "edge_request_duration_seconds";
/// `edge_response_bytes_total{host}`: body bytes sent to clients.
pub(crate) const RESPONSE_BYTES: &str = "edge_response_bytes_total";
/// `edge_requests_in_flight`: requests being served now.
pub(crate) const REQUESTS_IN_FLIGHT: &str = "edge_requests_in_flight";
/// `edge_client_connections`: client connections open on the public listeners.
pub(crate) const CLIENT_CONNECTIONS: &str = "edge_client_connections";
/// `edge_upstream_response_duration_seconds{upstream}` histogram: time to response headers.
pub(crate) const UPSTREAM_DURATION: &str = "edge_upstream_response_duration_seconds";
/// `edge_upstream_errors_total{upstream,kind}`.
pub(crate) const UPSTREAM_ERRORS: &str = "edge_upstream_errors_total";
/// `edge_dns_lookups_total{result}`.
pub(crate) const DNS_LOOKUPS: &str = "edge_dns_lookups_total";
/// `edge_dns_stale_answers`: names currently answered from a stale (last good) lookup.
pub(crate) const DNS_STALE: &str = "edge_dns_stale_answers";
/// `edge_cache_lookups_total{host,cache_status}`.
pub(crate) const CACHE_LOOKUPS: &str = "edge_cache_lookups_total";
/// `edge_rate_limit_decisions_total{zone,outcome}`.
pub(crate) const RATE_LIMIT_DECISIONS: &str = "edge_rate_limit_decisions_total";
/// `edge_deny_hits_total{host,list}`.
pub(crate) const DENY_HITS: &str = "edge_deny_hits_total";
/// `edge_auth_decisions_total{host,outcome}`: what authentication decided (`allowed`,
/// `denied`, `error`), by site.
pub(crate) const AUTH_DECISIONS: &str = "edge_auth_decisions_total";
/// `edge_access_log_dropped_total`: access-log lines dropped because the writer lagged.
pub(crate) const ACCESS_LOG_DROPPED: &str = "edge_access_log_dropped_total";
/// `edge_build_info{version}`: always 1.
pub(crate) const BUILD_INFO: &str = "edge_build_info";
/// `edge_config_reloads_total{result}`: reloads applied or rejected.
pub(crate) const CONFIG_RELOADS: &str = "edge_config_reloads_total";
/// `edge_config_last_reload_successful`: 1 unless the last reload was rejected.
pub(crate) const CONFIG_LAST_RELOAD_OK: &str = "edge_config_last_reload_successful";
/// `edge_telemetry_shipped_total{sink}`: samples or lines a receiver accepted.
pub(crate) const TELEMETRY_SHIPPED: &str = "edge_telemetry_shipped_total";
/// `edge_telemetry_failed_total{sink}`: samples or lines in pushes that failed (a retried
/// push counts each time).
pub(crate) const TELEMETRY_FAILED: &str = "edge_telemetry_failed_total";
/// `edge_telemetry_dropped_total{sink,reason}`: samples or lines lost.
pub(crate) const TELEMETRY_DROPPED: &str = "edge_telemetry_dropped_total";
/// `edge_telemetry_buffered{sink}`: samples or lines waiting to be pushed.
pub(crate) const TELEMETRY_BUFFERED: &str = "edge_telemetry_buffered";
/// `edge_telemetry_last_success_timestamp_seconds{sink}`: when a push last succeeded.
pub(crate) const TELEMETRY_LAST_SUCCESS: &str = "edge_telemetry_last_success_timestamp_seconds";
/// `edge_client_closes_total{reason}`: client connections closed by a limit or timeout.
pub(crate) const CLIENT_CLOSES: &str = "edge_client_closes_total";
/// `edge_connection_limit_rejections_total{zone}`: requests refused (or, in a dry run, that
/// would have been) because a connection-limit zone was full for their key.
pub(crate) const CONNECTION_LIMIT_REJECTIONS: &str = "edge_connection_limit_rejections_total";
/// `edge_fleet_redis_up{instance}`: 1 while global zones count in the fleet's Redis, 0 in
/// fall-back.
pub(crate) const FLEET_REDIS_UP: &str = "edge_fleet_redis_up";
/// `edge_fleet_machines{instance}`: machines of the fleet seen lately.
pub(crate) const FLEET_MACHINES: &str = "edge_fleet_machines";
/// `edge_fleet_fallbacks_total{instance,reason}`: times global zones fell back to local counts.
pub(crate) const FLEET_FALLBACKS: &str = "edge_fleet_fallbacks_total";
/// `edge_fleet_syncs_total{instance,result}`: reconciliations of global zones with Redis.
pub(crate) const FLEET_SYNCS: &str = "edge_fleet_syncs_total";
/// `edge_fleet_redis_commands_total{instance}`: commands this machine sent to Redis.
pub(crate) const FLEET_REDIS_COMMANDS: &str = "edge_fleet_redis_commands_total";
/// `edge_fleet_purges_received_total{instance}`: purges from other machines applied here.
pub(crate) const FLEET_PURGES_RECEIVED: &str = "edge_fleet_purges_received_total";
/// `edge_fleet_purges_published_total{instance}`: purges accepted here and sent to the fleet.
pub(crate) const FLEET_PURGES_PUBLISHED: &str = "edge_fleet_purges_published_total";
/// `edge_fleet_cache_drops_total{instance}`: whole-cache drops because purges may have been
/// missed while this machine was away.
pub(crate) const FLEET_CACHE_DROPS: &str = "edge_fleet_cache_drops_total";
/// `edge_fleet_bans_received_total{instance}`: bans (and lifts) from other machines applied
/// here.
pub(crate) const FLEET_BANS_RECEIVED: &str = "edge_fleet_bans_received_total";
/// `edge_fleet_bans_published_total{instance}`: bans (and lifts) made here and sent to the
/// fleet.
pub(crate) const FLEET_BANS_PUBLISHED: &str = "edge_fleet_bans_published_total";
/// `edge_plugin_events_total{plugin,event}`: what plugins decided, in their own words
/// ([`crate::plugin::PluginCtx::count`]).
pub(crate) const PLUGIN_EVENTS: &str = "edge_plugin_events_total";
/// `edge_bans_active`: client addresses banned now.
pub(crate) const BANS_ACTIVE: &str = "edge_bans_active";
/// `edge_bans_total{rule}`: bans added, by the rule that added them (`admin` for the admin
/// action).
pub(crate) const BANS_TOTAL: &str = "edge_bans_total";
/// `edge_ban_refusals_total`: requests of banned clients, refused before routing.
pub(crate) const BAN_REFUSALS: &str = "edge_ban_refusals_total";
/// `edge_compressed_responses_total{encoding}`: response bodies the proxy compressed (a
/// cached one once, when it was stored).
pub(crate) const COMPRESSED_RESPONSES: &str = "edge_compressed_responses_total";
/// `edge_compression_saved_bytes_total{encoding}`: bytes compression took off those bodies.
pub(crate) const COMPRESSION_SAVED_BYTES: &str = "edge_compression_saved_bytes_total";
/// `edge_upstream_address_up{upstream,address}`: 1 while an address of a checked upstream
/// takes requests, 0 while health checks or a refused connection keep it out. Only the
/// addresses of the running config have a series.
pub(crate) const UPSTREAM_ADDRESS_UP: &str = "edge_upstream_address_up";
/// `edge_upstream_health_checks_total{upstream,address,result}`: active health checks, by
/// result (`pass`, `fail`).
pub(crate) const UPSTREAM_HEALTH_CHECKS: &str = "edge_upstream_health_checks_total";
/// `edge_upstream_retries_total{upstream}`: requests sent to another address after a
/// connection to the first failed.
pub(crate) const UPSTREAM_RETRIES: &str = "edge_upstream_retries_total";

/// Every metric name, for tools that check dashboards or alerts against them.
pub const METRIC_NAMES: &[&str] = &[
    REQUESTS_TOTAL,
    REQUEST_DURATION,
    RESPONSE_BYTES,
    REQUESTS_IN_FLIGHT,
    CLIENT_CONNECTIONS,
    UPSTREAM_DURATION,
    UPSTREAM_ERRORS,
    DNS_LOOKUPS,
    DNS_STALE,
    CACHE_LOOKUPS,
    RATE_LIMIT_DECISIONS,
    DENY_HITS,
    AUTH_DECISIONS,
    ACCESS_LOG_DROPPED,
    BUILD_INFO,
    CONFIG_RELOADS,
    UPSTREAM_ADDRESS_UP,
    UPSTREAM_HEALTH_CHECKS,
    UPSTREAM_RETRIES,
    CONFIG_LAST_RELOAD_OK,
    TELEMETRY_SHIPPED,
    TELEMETRY_FAILED,
    TELEMETRY_DROPPED,
    TELEMETRY_BUFFERED,
    TELEMETRY_LAST_SUCCESS,
    CLIENT_CLOSES,
    CONNECTION_LIMIT_REJECTIONS,
    FLEET_REDIS_UP,
    FLEET_MACHINES,
    FLEET_FALLBACKS,
    FLEET_SYNCS,
    FLEET_REDIS_COMMANDS,
    FLEET_PURGES_RECEIVED,
    FLEET_PURGES_PUBLISHED,
    FLEET_CACHE_DROPS,
    FLEET_BANS_RECEIVED,
    FLEET_BANS_PUBLISHED,
    PLUGIN_EVENTS,
    BANS_ACTIVE,
    BANS_TOTAL,
    BAN_REFUSALS,
    COMPRESSED_RESPONSES,
    COMPRESSION_SAVED_BYTES,
];

/// What happened to a fleet message on this machine ([`Metrics::fleet_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetEvent {
    /// A purge from another machine was applied here.
    PurgeReceived,
    /// A purge accepted here was sent to the fleet.
    PurgePublished,
    /// The whole cache was dropped: purges may have been missed while away from Redis.
    CacheDropped,
    /// A ban (or a lift) from another machine was applied here.
    BanReceived,
    /// A ban (or a lift) made here was sent to the fleet.
    BanPublished,
}

/// The outcome of one MagicDNS lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsLookupResult {
    /// Addresses came back.
    Success,
    /// The name exists but had no addresses.
    Empty,
    /// The lookup failed (timeout, NXDOMAIN, server error).
    Failure,
}

impl DnsLookupResult {
    fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Empty => "empty",
            Self::Failure => "failure",
        }
    }
}

/// Why a request to an upstream failed (the `kind` label of `edge_upstream_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// TCP connect refused or unreachable.
    Connect,
    /// Connect, TLS handshake, read or write timed out.
    Timeout,
    /// TLS handshake or certificate failure.
    Tls,
    /// The upstream name has not resolved.
    Dns,
    /// The upstream answered with a 5xx status.
    Status5xx,
    /// Anything else (connection reset mid-response, protocol errors).
    Other,
}

impl UpstreamErrorKind {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Tls => "tls",
            Self::Dns => "dns",
            Self::Status5xx => "5xx",
            Self::Other => "other",
        }
    }
}

/// The proxy's metrics and their Prometheus rendering.
pub struct Metrics {
    /// Off: every recording method returns at once and nothing is rendered.
    enabled: bool,
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    in_flight: Gauge,
    connections: Gauge,
    /// Per-site handles, so the per-request path neither allocates label values nor
    /// rebuilds keys (label sets are bounded, so the map is too).
    sites: RwLock<HashMap<String, Arc<SiteHandles>>>,
    /// Upstream response-time histograms by upstream name, for the same reason.
    upstream_durations: RwLock<HashMap<String, DurationHistogram>>,
    cache_lookups: PairCounters,
    rate_limit_decisions: PairCounters,
    deny_hits: PairCounters,
    auth_decisions: PairCounters,
    upstream_errors: PairCounters,
    plugin_events: PairCounters,
    bans_active: Gauge,
    ban_refusals: Counter,
    /// `edge_upstream_address_up` by upstream, then address. Kept and rendered here, not
    /// in the recorder, because the exporter cannot drop a series: an address a reload
    /// removed must lose its series, not keep its last value.
    address_up:
        RwLock<std::collections::BTreeMap<String, std::collections::BTreeMap<String, bool>>>,
}

/// Help of [`REQUEST_DURATION`].
const REQUEST_DURATION_HELP: &str = "Time from request start to the last log phase, by site.";
/// Help of [`UPSTREAM_DURATION`].
const UPSTREAM_DURATION_HELP: &str = "Time from choosing an upstream to its response headers.";

/// Writes a histogram family, its series ordered by their one label's value; nothing
/// without series.
fn write_histograms<'a>(
    text: &mut String,
    name: &str,
    help: &str,
    label: &str,
    series: impl Iterator<Item = (&'a String, &'a DurationHistogram)>,
) {
    use metrics_exporter_prometheus::formatting::{
        sanitize_label_value, write_help_line, write_type_line,
    };
    let mut series: Vec<_> = series.collect();
    if series.is_empty() {
        return;
    }
    series.sort_unstable_by(|a, b| a.0.cmp(b.0));
    write_help_line(text, name, None, None, help);
    write_type_line(text, name, None, None, "histogram");
    for (value, histogram) in series {
        let labels = format!("{label}=\"{}\"", sanitize_label_value(value));
        histogram.write(text, name, &labels);
    }
    text.push('\n');
}

/// Counters with two labels, kept by label values so that a pair seen before costs two
/// map lookups, not a key build and a registry lookup (label values are bounded).
struct PairCounters {
    name: &'static str,
    labels: (&'static str, &'static str),
    seen: RwLock<HashMap<String, HashMap<String, Counter>>>,
}

impl PairCounters {
    fn new(name: &'static str, labels: (&'static str, &'static str)) -> Self {
        Self {
            name,
            labels,
            seen: RwLock::new(HashMap::default()),
        }
    }

    /// Adds one to the counter of (`first`, `second`), registering it the first time.
    fn increment(&self, recorder: &PrometheusRecorder, first: &str, second: &str) {
        if let Some(counter) = self
            .seen
            .read()
            .get(first)
            .and_then(|inner| inner.get(second))
        {
            counter.increment(1);
            return;
        }
        let key = Metrics::key(
            self.name,
            &[(self.labels.0, first), (self.labels.1, second)],
        );
        let counter = recorder.register_counter(&key, &METADATA);
        self.seen
            .write()
            .entry(first.to_owned())
            .or_default()
            .entry(second.to_owned())
            .or_insert(counter)
            .increment(1);
    }
}

/// The request metrics of one site.
struct SiteHandles {
    duration: DurationHistogram,
    bytes: Counter,
    requests: RwLock<HashMap<(&'static str, u16), Counter>>,
    /// `edge_cache_lookups_total` of this site by the index of its cache_status label in
    /// `CACHE_STATUS_LABELS`, each registered when first counted: found with the site's
    /// other handles instead of by two more hashed look-ups under a lock of their own.
    cache_lookups: [OnceLock<Counter>; CACHE_STATUS_LABELS.len()],
}

impl SiteHandles {
    /// Records one request; false, recording nothing, when its (method, status) counter
    /// has not been registered yet.
    fn record(&self, method: &'static str, status: u16, duration: Duration, bytes: u64) -> bool {
        let requests = self.requests.read();
        let Some(counter) = requests.get(&(method, status)) else {
            return false;
        };
        counter.increment(1);
        drop(requests);
        self.duration.record(duration);
        self.bytes.increment(bytes);
        true
    }

    /// Counts a cache lookup with the cache_status label at `index`; `register` makes its
    /// counter the first time.
    fn cache_lookup(&self, index: usize, register: impl FnOnce() -> Counter) {
        if let Some(counter) = self.cache_lookups.get(index) {
            counter.get_or_init(register).increment(1);
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

impl Metrics {
    /// A fresh set of metrics, with build info set.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let in_flight = recorder.register_gauge(&Key::from_name(REQUESTS_IN_FLIGHT), &METADATA);
        let connections = recorder.register_gauge(&Key::from_name(CLIENT_CONNECTIONS), &METADATA);
        let bans_active = recorder.register_gauge(&Key::from_name(BANS_ACTIVE), &METADATA);
        let ban_refusals = recorder.register_counter(&Key::from_name(BAN_REFUSALS), &METADATA);
        let metrics = Self {
            enabled: true,
            recorder,
            handle,
            in_flight,
            connections,
            sites: RwLock::new(HashMap::default()),
            upstream_durations: RwLock::new(HashMap::default()),
            cache_lookups: PairCounters::new(CACHE_LOOKUPS, ("host", "cache_status")),
            rate_limit_decisions: PairCounters::new(RATE_LIMIT_DECISIONS, ("zone", "outcome")),
            deny_hits: PairCounters::new(DENY_HITS, ("host", "list")),
            auth_decisions: PairCounters::new(AUTH_DECISIONS, ("host", "outcome")),
            plugin_events: PairCounters::new(PLUGIN_EVENTS, ("plugin", "event")),
            bans_active,
            ban_refusals,
            upstream_errors: PairCounters::new(UPSTREAM_ERRORS, ("upstream", "kind")),
            address_up: RwLock::default(),
        };
        metrics.describe_all();
        metrics
            .gauge(BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))])
            .set(1.0);
        metrics.gauge(DNS_STALE, &[]).set(0.0);
        metrics.counter(ACCESS_LOG_DROPPED, &[]).absolute(0);
        metrics.gauge(CONFIG_LAST_RELOAD_OK, &[]).set(1.0);
        metrics
    }

    /// Metrics switched off (`[admin] metrics = false`): recording costs one branch and
    /// [`Self::render`] is empty.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            in_flight: Gauge::noop(),
            connections: Gauge::noop(),
            ..Self::new()
        }
    }

    /// Whether metrics are recorded.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    fn describe_all(&self) {
        let counters = [
            (
                REQUESTS_TOTAL,
                "Requests answered, by site, method and status.",
            ),
            (
                RESPONSE_BYTES,
                "Response body bytes sent to clients, by site.",
            ),
            (
                UPSTREAM_ERRORS,
                "Failed upstream requests, by upstream and kind.",
            ),
            (
                DNS_LOOKUPS,
                "MagicDNS lookups of upstream names, by result.",
            ),
            (CACHE_LOOKUPS, "Cache lookups, by site and cache status."),
            (
                RATE_LIMIT_DECISIONS,
                "Rate-limit decisions, by zone and outcome.",
            ),
            (
                DENY_HITS,
                "Requests refused by a deny list, by site and list.",
            ),
            (
                AUTH_DECISIONS,
                "Authentication decisions (allowed, denied, error), by site.",
            ),
            (
                ACCESS_LOG_DROPPED,
                "Access-log lines dropped because the writer lagged.",
            ),
            (
                CONFIG_RELOADS,
                "Config reloads, by result (applied or rejected).",
            ),
            (
                CLIENT_CLOSES,
                "Client connections closed by a timeout or a limit, by reason.",
            ),
            (
                CONNECTION_LIMIT_REJECTIONS,
                "Requests refused because their client had as many in progress as a connection-limit zone allows, by zone.",
            ),
            (
                PLUGIN_EVENTS,
                "What plugins decided, by plugin and event (e.g. challenge issued, cookie refused).",
            ),
            (BANS_TOTAL, "Client addresses banned, by the rule that banned them."),
            (
                BAN_REFUSALS,
                "Requests of banned clients, refused before routing.",
            ),
            (
                COMPRESSED_RESPONSES,
                "Response bodies compressed (a cached one once, when stored), by encoding.",
            ),
            (
                COMPRESSION_SAVED_BYTES,
                "Bytes compression took off response bodies, by encoding.",
            ),
            (
                UPSTREAM_HEALTH_CHECKS,
                "Active health checks of upstream addresses, by result.",
            ),
            (
                UPSTREAM_RETRIES,
                "Requests sent to another address after a connection to the first failed.",
            ),
        ];
        for (name, help) in counters {
            self.recorder
                .describe_counter(KeyName::from(name), None, help.into());
        }
        let gauges = [
            (REQUESTS_IN_FLIGHT, "Downstream requests being served now."),
            (
                CLIENT_CONNECTIONS,
                "Client connections open on the public listeners now.",
            ),
            (
                DNS_STALE,
                "Upstream names answered from a stale lookup now.",
            ),
            (
                BUILD_INFO,
                "Always 1; the version label says which build runs.",
            ),
            (
                CONFIG_LAST_RELOAD_OK,
                "1 unless the last config reload was rejected (the old config still runs).",
            ),
            (BANS_ACTIVE, "Client addresses banned now."),
        ];
        for (name, help) in gauges {
            self.recorder
                .describe_gauge(KeyName::from(name), None, help.into());
        }
    }

    fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
        let labels: Vec<Label> = labels
            .iter()
            .map(|(k, v)| Label::new(*k, (*v).to_owned()))
            .collect();
        Key::from_parts(name, labels)
    }

    fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        self.recorder
            .register_counter(&Self::key(name, labels), &METADATA)
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        self.recorder
            .register_gauge(&Self::key(name, labels), &METADATA)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        if !self.enabled {
            return String::new();
        }
        let mut text = self.handle.render();
        self.render_durations(&mut text);
        self.render_address_up(&mut text);
        text
    }

    /// Appends the two duration histograms, in the exporter's format, when they have series.
    fn render_durations(&self, text: &mut String) {
        let sites = self.sites.read();
        let by_site = sites
            .iter()
            .map(|(site, handles)| (site, &handles.duration));
        write_histograms(
            text,
            REQUEST_DURATION,
            REQUEST_DURATION_HELP,
            "host",
            by_site,
        );
        let upstreams = self.upstream_durations.read();
        write_histograms(
            text,
            UPSTREAM_DURATION,
            UPSTREAM_DURATION_HELP,
            "upstream",
            upstreams.iter(),
        );
    }

    /// Appends `edge_upstream_address_up`, in the exporter's format, when it has series.
    fn render_address_up(&self, text: &mut String) {
        use metrics_exporter_prometheus::formatting::{
            sanitize_label_value, write_help_line, write_type_line,
        };
        use std::fmt::Write;
        let address_up = self.address_up.read();
        if address_up.values().all(|addresses| addresses.is_empty()) {
            return;
        }
        let help = "1 while an upstream address takes requests, 0 while it is held out.";
        write_help_line(text, UPSTREAM_ADDRESS_UP, None, None, help);
        write_type_line(text, UPSTREAM_ADDRESS_UP, None, None, "gauge");
        for (upstream, addresses) in address_up.iter() {
            let upstream = sanitize_label_value(upstream);
            for (address, up) in addresses {
                let _ = writeln!(
                    text,
                    "{UPSTREAM_ADDRESS_UP}{{upstream=\"{upstream}\",address=\"{}\"}} {}",
                    sanitize_label_value(address),
                    u8::from(*up)
                );
            }
        }
        text.push('\n');
    }

    /// One answered request. `site` is a configured site name or `unknown`; `method` comes
    /// from [`super::method_label`].
    pub fn request(
        &self,
        site: &str,
        method: &'static str,
        status: u16,
        duration: Duration,
        body_bytes: u64,
    ) {
        self.finished(site, method, status, duration, body_bytes, None);
    }

    /// [`Self::request`] and, when the request had one, [`Self::cache_lookup`] with
    /// `cache_status`: the site's handles found once for both.
    pub(crate) fn finished(
        &self,
        site: &str,
        method: &'static str,
        status: u16,
        duration: Duration,
        body_bytes: u64,
        cache_status: Option<&str>,
    ) {
        if !self.enabled {
            return;
        }
        let cache = cache_status.map(|status| {
            let index = super::cache_status_index(status);
            let register = move || {
                self.counter(
                    CACHE_LOOKUPS,
                    &[("host", site), ("cache_status", CACHE_STATUS_LABELS[index])],
                )
            };
            (index, register)
        });
        // Handles seen before are used under the read locks, without cloning them.
        if let Some(handles) = self.sites.read().get(site) {
            if handles.record(method, status, duration, body_bytes) {
                if let Some((index, register)) = cache {
                    handles.cache_lookup(index, register);
                }
                return;
            }
        }
        let handles = self.site_handles(site);
        self.register_requests_counter(&handles, site, method, status);
        handles.record(method, status, duration, body_bytes);
        if let Some((index, register)) = cache {
            handles.cache_lookup(index, register);
        }
    }

    fn site_handles(&self, site: &str) -> Arc<SiteHandles> {
        if let Some(handles) = self.sites.read().get(site) {
            return handles.clone();
        }
        let fresh = Arc::new(SiteHandles {
            duration: DurationHistogram::default(),
            bytes: self.counter(RESPONSE_BYTES, &[("host", site)]),
            requests: RwLock::new(HashMap::default()),
            cache_lookups: Default::default(),
        });
        self.sites
            .write()
            .entry(site.to_owned())
            .or_insert(fresh)
            .clone()
    }

    fn register_requests_counter(
        &self,
        handles: &SiteHandles,
        site: &str,
        method: &'static str,
        status: u16,
    ) {
        let status_text = status.to_string();
        let counter = self.counter(
            REQUESTS_TOTAL,
            &[("host", site), ("method", method), ("status", &status_text)],
        );
        handles
            .requests
            .write()
            .entry((method, status))
            .or_insert(counter);
    }

    /// An upstream's response headers arrived after `elapsed`.
    pub fn upstream_response(&self, upstream: &str, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        if let Some(histogram) = self.upstream_durations.read().get(upstream) {
            histogram.record(elapsed);
            return;
        }
        self.upstream_durations
            .write()
            .entry(upstream.to_owned())
            .or_default()
            .record(elapsed);
    }

    /// A request to `upstream` failed.
    pub fn upstream_error(&self, upstream: &str, kind: UpstreamErrorKind) {
        if !self.enabled {
            return;
        }
        self.upstream_errors
            .increment(&self.recorder, upstream, kind.label());
    }

    /// One MagicDNS lookup finished.
    pub fn dns_lookup(&self, result: DnsLookupResult) {
        if !self.enabled {
            return;
        }
        self.counter(DNS_LOOKUPS, &[("result", result.label())])
            .increment(1);
    }

    /// An active health check of `address` of `upstream` passed or failed.
    pub(crate) fn upstream_health_check(&self, upstream: &str, address: &str, passed: bool) {
        if !self.enabled {
            return;
        }
        let result = if passed { "pass" } else { "fail" };
        let labels = [
            ("upstream", upstream),
            ("address", address),
            ("result", result),
        ];
        self.counter(UPSTREAM_HEALTH_CHECKS, &labels).increment(1);
    }

    /// Whether each address of `upstream` takes requests now: `states` is every address
    /// it has (others lose their series). Recorded only if `current()` still holds when
    /// the table is locked, so a pool a reload just replaced cannot bring back what
    /// [`Self::keep_upstream_addresses`] removed.
    pub(crate) fn upstream_addresses_up(
        &self,
        upstream: &str,
        states: Vec<(String, bool)>,
        current: impl FnOnce() -> bool,
    ) {
        if !self.enabled {
            return;
        }
        let mut address_up = self.address_up.write();
        if current() {
            address_up.insert(upstream.to_owned(), states.into_iter().collect());
        }
    }

    /// Drops the address series of every upstream but `upstreams` (the checked upstreams
    /// of the config now running).
    pub(crate) fn keep_upstream_addresses(&self, upstreams: &[&str]) {
        self.address_up
            .write()
            .retain(|upstream, _| upstreams.contains(&upstream.as_str()));
    }

    /// A request to `upstream` goes to another address after a failed connection.
    pub(crate) fn upstream_retry(&self, upstream: &str) {
        if !self.enabled {
            return;
        }
        self.counter(UPSTREAM_RETRIES, &[("upstream", upstream)])
            .increment(1);
    }

    /// How many names are answered from a stale lookup now.
    pub fn dns_stale_answers(&self, names: usize) {
        if !self.enabled {
            return;
        }
        self.gauge(DNS_STALE, &[]).set(names as f64);
    }

    /// A cache lookup for a request of `site` ended with `cache_status` (nginx's words:
    /// HIT, MISS, EXPIRED, STALE, UPDATING, REVALIDATED, BYPASS; anything else counts as
    /// `other`).
    pub fn cache_lookup(&self, site: &str, cache_status: &str) {
        if !self.enabled {
            return;
        }
        let status = super::cache_status_label(cache_status);
        self.cache_lookups.increment(&self.recorder, site, status);
    }

    /// A rate-limit decision in `zone` (a configured zone name) with `outcome` (a fixed
    /// word such as `allowed`, `delayed`, `rejected`).
    pub fn rate_limit_decision(&self, zone: &str, outcome: &'static str) {
        if !self.enabled {
            return;
        }
        self.rate_limit_decisions
            .increment(&self.recorder, zone, outcome);
    }

    /// A request of `site` refused by the deny list `list` (a configured name).
    pub fn deny_hit(&self, site: &str, list: &str) {
        if !self.enabled {
            return;
        }
        self.deny_hits.increment(&self.recorder, site, list);
    }

    /// Authentication of a request of `site` decided `outcome` (`allowed`, `denied`,
    /// `error`).
    pub fn auth_decision(&self, site: &str, outcome: &'static str) {
        if !self.enabled {
            return;
        }
        self.auth_decisions.increment(&self.recorder, site, outcome);
    }

    /// An access-log line was dropped.
    pub fn access_log_dropped(&self) {
        if !self.enabled {
            return;
        }
        self.counter(ACCESS_LOG_DROPPED, &[]).increment(1);
    }

    /// A config reload was applied, or rejected (the running config stays).
    pub fn config_reload(&self, applied: bool) {
        if !self.enabled {
            return;
        }
        let result = if applied { "applied" } else { "rejected" };
        self.counter(CONFIG_RELOADS, &[("result", result)])
            .increment(1);
        self.gauge(CONFIG_LAST_RELOAD_OK, &[])
            .set(if applied { 1.0 } else { 0.0 });
    }

    /// A client connection was closed by a timeout or a limit.
    pub fn client_closed(&self, reason: ClientClose) {
        if !self.enabled {
            return;
        }
        self.counter(CLIENT_CLOSES, &[("reason", reason.label())])
            .increment(1);
    }

    /// A telemetry sink (`prometheus`, `loki`) exists: its series are described and start
    /// at zero.
    pub fn telemetry_sink(&self, sink: &'static str) {
        if !self.enabled {
            return;
        }
        let counters = [
            (
                TELEMETRY_SHIPPED,
                "Samples (prometheus) or lines (loki) the homelab accepted, by sink.",
            ),
            (
                TELEMETRY_FAILED,
                "Samples or lines in pushes that failed, by sink (each retry counts again).",
            ),
            (
                TELEMETRY_DROPPED,
                "Samples or lines lost, by sink and reason (buffer_full, rejected).",
            ),
        ];
        for (name, help) in counters {
            self.recorder
                .describe_counter(KeyName::from(name), None, help.into());
        }
        let gauges = [
            (
                TELEMETRY_BUFFERED,
                "Samples or lines waiting to be pushed, by sink.",
            ),
            (
                TELEMETRY_LAST_SUCCESS,
                "Unix time of the last successful push, by sink (0: none yet).",
            ),
        ];
        for (name, help) in gauges {
            self.recorder
                .describe_gauge(KeyName::from(name), None, help.into());
        }
        self.counter(TELEMETRY_SHIPPED, &[("sink", sink)])
            .absolute(0);
        self.counter(TELEMETRY_FAILED, &[("sink", sink)])
            .absolute(0);
        for reason in ["buffer_full", "rejected"] {
            self.counter(TELEMETRY_DROPPED, &[("sink", sink), ("reason", reason)])
                .absolute(0);
        }
        self.gauge(TELEMETRY_BUFFERED, &[("sink", sink)]).set(0.0);
        self.gauge(TELEMETRY_LAST_SUCCESS, &[("sink", sink)])
            .set(0.0);
    }

    /// This machine is `instance` of a fleet: the fleet's series are described and start at
    /// zero (Redis down until the first sync).
    pub fn fleet_started(&self, instance: &str) {
        if !self.enabled {
            return;
        }
        let counters = [
            (FLEET_FALLBACKS, "Times global rate-limit zones fell back to local counting, by reason (timeout, error)."),
            (FLEET_SYNCS, "Reconciliations of global zones with Redis, by result."),
            (FLEET_REDIS_COMMANDS, "Commands this machine sent to Redis."),
            (FLEET_PURGES_RECEIVED, "Purges from other machines of the fleet applied here."),
            (FLEET_PURGES_PUBLISHED, "Purges accepted here and sent to the fleet."),
            (FLEET_CACHE_DROPS, "Whole-cache drops because purges may have been missed while away from Redis."),
            (FLEET_BANS_RECEIVED, "Bans and lifts from other machines of the fleet applied here."),
            (FLEET_BANS_PUBLISHED, "Bans and lifts made here and sent to the fleet."),
        ];
        for (name, help) in counters {
            self.recorder
                .describe_counter(KeyName::from(name), None, help.into());
        }
        let gauges = [
            (FLEET_REDIS_UP, "1 while global zones count in the fleet's Redis, 0 while they fall back to local counts."),
            (FLEET_MACHINES, "Machines of the fleet seen lately."),
        ];
        for (name, help) in gauges {
            self.recorder
                .describe_gauge(KeyName::from(name), None, help.into());
        }
        let at = [("instance", instance)];
        for name in [
            FLEET_REDIS_COMMANDS,
            FLEET_PURGES_RECEIVED,
            FLEET_PURGES_PUBLISHED,
            FLEET_CACHE_DROPS,
            FLEET_BANS_RECEIVED,
            FLEET_BANS_PUBLISHED,
        ] {
            self.counter(name, &at).absolute(0);
        }
        for reason in ["timeout", "error"] {
            self.counter(
                FLEET_FALLBACKS,
                &[("instance", instance), ("reason", reason)],
            )
            .absolute(0);
        }
        for result in ["ok", "failed"] {
            self.counter(FLEET_SYNCS, &[("instance", instance), ("result", result)])
                .absolute(0);
        }
        self.gauge(FLEET_REDIS_UP, &at).set(0.0);
        self.gauge(FLEET_MACHINES, &at).set(1.0);
    }

    /// A reconciliation with Redis ended: `machines` seen if it succeeded.
    pub fn fleet_sync(&self, instance: &str, machines: Option<u32>) {
        if !self.enabled {
            return;
        }
        let result = if machines.is_some() { "ok" } else { "failed" };
        self.counter(FLEET_SYNCS, &[("instance", instance), ("result", result)])
            .increment(1);
        let at = [("instance", instance)];
        self.gauge(FLEET_REDIS_UP, &at)
            .set(if machines.is_some() { 1.0 } else { 0.0 });
        if let Some(machines) = machines {
            self.gauge(FLEET_MACHINES, &at).set(f64::from(machines));
        }
    }

    /// Global zones fell back to local counting (`reason`: `timeout` or `error`).
    pub fn fleet_fallback(&self, instance: &str, reason: &'static str) {
        if !self.enabled {
            return;
        }
        self.counter(
            FLEET_FALLBACKS,
            &[("instance", instance), ("reason", reason)],
        )
        .increment(1);
    }

    /// `count` commands were sent to Redis.
    pub fn fleet_commands(&self, instance: &str, count: u64) {
        if !self.enabled {
            return;
        }
        self.counter(FLEET_REDIS_COMMANDS, &[("instance", instance)])
            .increment(count);
    }

    /// A fleet event on this machine: a purge or ban received from another machine or
    /// published from this one, or the whole cache dropped.
    pub fn fleet_event(&self, instance: &str, event: FleetEvent) {
        if !self.enabled {
            return;
        }
        let name = match event {
            FleetEvent::PurgeReceived => FLEET_PURGES_RECEIVED,
            FleetEvent::PurgePublished => FLEET_PURGES_PUBLISHED,
            FleetEvent::CacheDropped => FLEET_CACHE_DROPS,
            FleetEvent::BanReceived => FLEET_BANS_RECEIVED,
            FleetEvent::BanPublished => FLEET_BANS_PUBLISHED,
        };
        self.counter(name, &[("instance", instance)]).increment(1);
    }

    /// A push to `sink` succeeded with `items` samples or lines.
    pub fn telemetry_shipped(&self, sink: &'static str, items: usize) {
        if !self.enabled {
            return;
        }
        self.counter(TELEMETRY_SHIPPED, &[("sink", sink)])
            .increment(items as u64);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.gauge(TELEMETRY_LAST_SUCCESS, &[("sink", sink)])
            .set(now.as_secs_f64());
    }

    /// A push of `items` samples or lines to `sink` failed.
    pub fn telemetry_failed(&self, sink: &'static str, items: usize) {
        if !self.enabled {
            return;
        }
        self.counter(TELEMETRY_FAILED, &[("sink", sink)])
            .increment(items as u64);
    }

    /// `items` samples or lines of `sink` were lost for `reason` (`buffer_full`: the
    /// oldest made room; `rejected`: the receiver refused them for good).
    pub fn telemetry_dropped(&self, sink: &'static str, reason: &'static str, items: usize) {
        if !self.enabled || items == 0 {
            return;
        }
        self.counter(TELEMETRY_DROPPED, &[("sink", sink), ("reason", reason)])
            .increment(items as u64);
    }

    /// `items` samples or lines of `sink` wait to be pushed.
    pub fn telemetry_buffered(&self, sink: &'static str, items: usize) {
        if !self.enabled {
            return;
        }
        self.gauge(TELEMETRY_BUFFERED, &[("sink", sink)])
            .set(items as f64);
    }

    /// A connection-limit zone refused a request.
    pub fn connection_limit_rejected(&self, zone: &str) {
        if !self.enabled {
            return;
        }
        self.counter(CONNECTION_LIMIT_REJECTIONS, &[("zone", zone)])
            .increment(1);
    }

    /// A plugin's decision: `plugin` and `event` are the plugin's own fixed words.
    pub fn plugin_event(&self, plugin: &'static str, event: &'static str) {
        if !self.enabled {
            return;
        }
        self.plugin_events.increment(&self.recorder, plugin, event);
    }

    /// `active` client addresses are banned now.
    pub fn bans_active(&self, active: usize) {
        if self.enabled {
            self.bans_active.set(active as f64);
        }
    }

    /// A ban added by `rule` (a configured rule name, or `admin`).
    pub fn ban_added(&self, rule: &str) {
        if self.enabled {
            self.counter(BANS_TOTAL, &[("rule", rule)]).increment(1);
        }
    }

    /// A banned client's request, refused before routing.
    pub fn ban_refused(&self) {
        if self.enabled {
            self.ban_refusals.increment(1);
        }
    }

    /// A response body compressed with `encoding`, from `bytes_in` to `bytes_out` bytes.
    pub fn compressed(&self, encoding: &'static str, bytes_in: usize, bytes_out: usize) {
        if !self.enabled {
            return;
        }
        let labels = [("encoding", encoding)];
        self.counter(COMPRESSED_RESPONSES, &labels).increment(1);
        let saved = bytes_in.saturating_sub(bytes_out) as u64;
        self.counter(COMPRESSION_SAVED_BYTES, &labels)
            .increment(saved);
    }

    /// A client connection opened (`1.0`) or closed (`-1.0`).
    pub fn client_connections(&self, change: f64) {
        self.connections.increment(change);
    }

    /// Counts a request as in flight until the guard drops.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.increment(1.0);
        InFlight(self.in_flight.clone())
    }
}

/// Why the proxy closed a client connection (the `reason` label of
/// `edge_client_closes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientClose {
    /// The request head did not arrive within `client_header_timeout`.
    HeaderTimeout,
    /// The request head was over `max_header_line`, `max_header_size` or `max_headers`.
    HeaderTooLarge,
    /// A request body stalled for `client_body_timeout`.
    BodyTimeout,
    /// The client took no response bytes for `send_timeout`.
    SendTimeout,
    /// The connection idled past `keepalive_timeout`.
    KeepaliveTimeout,
    /// The connection carried `keepalive_requests` requests.
    KeepaliveRequests,
    /// `max_connections` were open already.
    MaxConnections,
}

impl ClientClose {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            ClientClose::HeaderTimeout => "header_timeout",
            ClientClose::HeaderTooLarge => "header_too_large",
            ClientClose::BodyTimeout => "body_timeout",
            ClientClose::SendTimeout => "send_timeout",
            ClientClose::KeepaliveTimeout => "keepalive_timeout",
            ClientClose::KeepaliveRequests => "keepalive_requests",
            ClientClose::MaxConnections => "max_connections",
        }
    }
}

/// Decrements `edge_requests_in_flight` when dropped.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_is_counted_between_scrapes() {
        let m = Metrics::new();
        for round in 0..3 {
            for _ in 0..500 {
                m.request("docs", "GET", 200, Duration::from_millis(3), 1);
            }
            if round < 2 {
                // A scrape between the rounds changes nothing.
                assert!(m.render().contains("edge_request_duration_seconds_count"));
            }
        }
        m.upstream_response("b", Duration::from_millis(30));
        m.upstream_response("a", Duration::from_millis(2));
        let text = m.render();
        // One family each, its series ordered by label.
        assert_eq!(
            text.matches("# TYPE edge_upstream_response_duration_seconds histogram\n")
                .count(),
            1,
            "{text}"
        );
        let a = text.find(r#"edge_upstream_response_duration_seconds_count{upstream="a"} 1"#);
        let b = text.find(r#"edge_upstream_response_duration_seconds_count{upstream="b"} 1"#);
        assert!(a.is_some() && b.is_some() && a < b, "{text}");
        assert!(text.contains("# HELP edge_request_duration_seconds Time from request start"));
        assert!(
            text.contains(r#"edge_request_duration_seconds_count{host="docs"} 1500"#),
            "{text}"
        );
        assert!(
            text.contains(r#"edge_request_duration_seconds_bucket{host="docs",le="0.005"} 1500"#),
            "{text}"
        );
        drop(m);
    }

    #[test]
    fn render_has_prefixed_names_help_and_exact_counts() {
        let m = Metrics::new();
        m.request("docs", "GET", 200, Duration::from_millis(3), 10);
        m.request("docs", "GET", 200, Duration::from_millis(3), 5);
        m.upstream_error("docs", UpstreamErrorKind::Timeout);
        let text = m.render();
        assert!(
            text.contains(r#"edge_requests_total{host="docs",method="GET",status="200"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"edge_response_bytes_total{host="docs"} 15"#),
            "{text}"
        );
        assert!(text.contains(r#"edge_request_duration_seconds_count{host="docs"} 2"#));
        assert!(text.contains(r#"edge_upstream_errors_total{upstream="docs",kind="timeout"} 1"#));
        assert!(text.contains("# HELP edge_requests_total"));
        assert!(text.contains(r#"edge_build_info{version=""#));
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(line.starts_with(PREFIX), "{line}");
        }
    }

    #[test]
    fn in_flight_guard_counts_up_and_down() {
        let m = Metrics::new();
        let a = m.in_flight();
        let _b = m.in_flight();
        assert!(m.render().contains("edge_requests_in_flight 2"));
        drop(a);
        assert!(m.render().contains("edge_requests_in_flight 1"));
    }

    #[test]
    fn two_instances_do_not_share_counters() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.dns_lookup(DnsLookupResult::Success);
        assert!(a
            .render()
            .contains(r#"edge_dns_lookups_total{result="success"} 1"#));
        assert!(!b.render().contains("edge_dns_lookups_total{"));
    }
}
