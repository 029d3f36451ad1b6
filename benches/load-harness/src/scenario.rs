//! Load scenarios, each described once and rendered into equivalent proxy-app and nginx
//! configs, so both servers do the same work; and into HAProxy's and Caddy's configs, at
//! their defaults, for the pass-through scenarios.

use crate::measure::Load;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// What the server under test does per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Proxy to the upstream over plain HTTP with keepalive.
    PassThrough,
    /// Proxy to the upstream over TLS (verified against the tailnet CA).
    PassThroughTls,
    /// Answer from the cache (the object is cached by the warm-up).
    CacheHit,
    /// Reject with 429 (a 1r/s zone without burst, all load from one client).
    RateLimited,
    /// Refuse a banned client with 403: proxy-app's ban (a trap-path rule the first request
    /// trips), nginx's `deny` of the client's address.
    Banned,
    /// Fetch distinct cacheable objects one after another (see [`Scenario::fill_objects`]),
    /// then read the server's memory.
    CacheFill,
}

/// One scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Short name used on the command line and in the report.
    pub name: &'static str,
    /// What it measures, for the report.
    pub about: &'static str,
    /// Per-request work.
    pub work: Work,
    /// Response body size.
    pub body_size: usize,
    /// Concurrent client connections.
    pub connections: u32,
    /// Number of sites configured (the request targets the last one).
    pub sites: usize,
    /// The upstream is the peer behind the slow path (its own network namespace, a veth
    /// pair with delay) instead of the loopback peer.
    pub wan: bool,
    /// Metrics and a JSON access log (to a file) on, on both servers; otherwise proxy-app
    /// records no metrics and neither server logs.
    pub observed: bool,
    /// proxy-app's cache `max_size`, MiB.
    pub cache_mib: usize,
    /// HAProxy and Caddy run too, at their defaults (pass-through scenarios).
    pub peers: bool,
    /// HAProxy also runs adding the headers proxy-app adds by default (the forwarding
    /// headers, the client IP header and a request id both ways): the equal-output row
    /// beside its defaults one.
    pub peers_same_headers: bool,
    /// Both servers at their defaults instead of doing the same work: nginx's plain
    /// `proxy_cache` (no request id, no forwarding or cache status headers), proxy-app as
    /// shipped (metrics on).
    pub defaults: bool,
    /// Also count proxy-app's and nginx's instructions per request under callgrind.
    pub instructions: bool,
    /// Also count proxy-app's and nginx's simulated cache misses per request with this
    /// scenario's connections ([`crate::misses`]).
    pub misses: bool,
    /// The upstream answers each request after this many milliseconds (the fake peer's
    /// `delay_ms`), 0 for at once.
    pub upstream_delay_ms: u64,
    /// Requests per second over all client connections (sent by h2load), 0 for as many as
    /// the server answers (wrk): at a set rate below what any of them can serve, the servers
    /// get the same load and their latencies compare.
    pub rate: u32,
    /// Every request accepts gzip, and both servers compress `text/plain` with gzip at
    /// level 1 (nginx's `gzip on` default level): proxy-app once, when it stores the
    /// object; nginx's `proxy_cache` keeps the upstream's body and `gzip` compresses each
    /// hit.
    pub gzip: bool,
}

impl Scenario {
    /// The Host header sent by the load generator.
    pub fn host(&self) -> String {
        format!("s{}.bench.example", self.sites - 1)
    }

    /// The request path (the fake peer reads the body size from the query).
    pub fn path(&self) -> String {
        match self.upstream_delay_ms {
            0 => format!("/bench?size={}", self.body_size),
            ms => format!("/bench?size={}&delay_ms={ms}", self.body_size),
        }
    }

    /// What wrk sends: the scenario's connections, pausing as it says.
    pub fn load(&self) -> Load {
        Load {
            connections: self.connections,
            rate: self.rate,
        }
    }

    /// Request headers sent besides `Host`, by the load generator and the readiness probe
    /// (which warms the cache).
    pub fn headers(&self) -> &'static [&'static str] {
        match self.gzip {
            true => &["Accept-Encoding: gzip"],
            false => &[],
        }
    }

    /// The status of every request but the first under callgrind: 403 for a banned client,
    /// 200 otherwise (the request that trips the ban may still be served). `rate-limited` is
    /// not counted: under callgrind's slowdown its 1r/s limit lets a request through every
    /// second, and those would be counted with the 429s.
    pub fn expected_status(&self) -> u16 {
        match self.work {
            Work::Banned => 403,
            _ => 200,
        }
    }

    /// The path the harness asks for to see that a server is ready: the scenario's, except
    /// when that path gets the client banned ([`Work::Banned`]).
    pub fn ready_path(&self) -> String {
        match self.work {
            Work::Banned => READY_PATH.to_owned(),
            _ => self.path(),
        }
    }

    /// Distinct objects a fill fetches: three times what the cache holds.
    pub fn fill_objects(&self) -> usize {
        3 * (self.cache_mib << 20) / self.body_size.max(1)
    }

    /// The path of a fill's `i`-th object.
    pub fn fill_path(&self, i: usize) -> String {
        format!("/obj/{i}?size={}", self.body_size)
    }

    /// The scenario as `--quick` runs it: a fill of a 16 MiB cache; others unchanged.
    pub fn quick(self) -> Scenario {
        match self.work {
            Work::CacheFill => Scenario {
                cache_mib: 16,
                ..self
            },
            _ => self,
        }
    }
}

/// The readiness probe's path in [`Work::Banned`]: served (proxied by proxy-app, answered by
/// nginx) to a client not banned yet.
const READY_PATH: &str = "/ready";

/// Every scenario, in report order.
pub fn all() -> Vec<Scenario> {
    let base = Scenario {
        name: "",
        about: "",
        work: Work::PassThrough,
        body_size: 1024,
        connections: 32,
        sites: 1,
        wan: false,
        observed: false,
        cache_mib: 256,
        peers: false,
        peers_same_headers: false,
        defaults: false,
        instructions: false,
        misses: false,
        gzip: false,
        upstream_delay_ms: 0,
        rate: 0,
    };
    vec![
        Scenario {
            name: "cache-hit-1k",
            about: "cache hit, 1 KiB object, 32 connections",
            work: Work::CacheHit,
            ..base.clone()
        },
        Scenario {
            name: "cache-hit-defaults-1k",
            about: "cache hit, 1 KiB object, 32 connections, both servers at their defaults: nginx's plain `proxy_cache` (no request id, no forwarding or cache status headers), proxy-app as shipped (metrics on, its request id, forwarding and cache status headers)",
            work: Work::CacheHit,
            defaults: true,
            instructions: true,
            ..base.clone()
        },
        Scenario {
            name: "cache-hit-defaults-paced",
            about: "cache hit, 1 KiB object, 32 connections, both servers at their defaults (as in `cache-hit-defaults-1k`), sent 15,000 requests/s in all (h2load, `--rps` per connection), about half what nginx serves: both get the same load, so latency compares",
            work: Work::CacheHit,
            defaults: true,
            rate: 15_000,
            ..base.clone()
        },
        Scenario {
            name: "cache-hit-100k",
            about: "cache hit, 100 KiB object, 32 connections",
            work: Work::CacheHit,
            body_size: 100 * 1024,
            ..base.clone()
        },
        Scenario {
            name: "cache-hit-gzip-10k",
            about: "cache hit of a 10 KiB `text/plain` object for clients accepting gzip, 32 connections: proxy-app stores the object gzipped once (`compress = { }`) and sends it as stored; nginx (`gzip on`, level 1, `gzip_vary on`, with `proxy_cache`) gzips every hit. The fake peer's body is one repeated byte, so compressing it is cheaper than compressing real text",
            work: Work::CacheHit,
            body_size: 10 * 1024,
            gzip: true,
            ..base.clone()
        },
        Scenario {
            name: "cache-fill-100k",
            about: "distinct 100 KiB objects fetched one after another on one connection until proxy-app's cache (`max_size` 200 MiB; 16 MiB with `--quick`) has been filled three times over; nginx's proxy_cache keeps bodies in files (the page cache, not its RSS), so it has no row",
            work: Work::CacheFill,
            body_size: 100 * 1024,
            connections: 1,
            cache_mib: 200,
            ..base.clone()
        },
        Scenario {
            name: "pass-1k",
            about: "pass-through, 1 KiB, upstream keepalive, 32 connections",
            peers: true,
            peers_same_headers: true,
            instructions: true,
            ..base.clone()
        },
        Scenario {
            name: "pass-1k-paced",
            about: "pass-through, 1 KiB, upstream keepalive, 32 connections, sent 12,000 requests/s in all (h2load, `--rps` per connection): every server but Caddy gets the same load, well below what it can serve, so latency compares (the saturated `pass-1k` is the headline)",
            peers: true,
            rate: 12_000,
            ..base.clone()
        },
        Scenario {
            name: "observed-1k",
            about: "pass-through, 1 KiB, 32 connections, with metrics and a JSON access log to a file (proxy-app also runs without them: the cost of observability)",
            observed: true,
            ..base.clone()
        },
        Scenario {
            name: "pass-tls-1k",
            about: "pass-through over upstream TLS, 1 KiB, 32 connections",
            work: Work::PassThroughTls,
            peers: true,
            peers_same_headers: true,
            ..base.clone()
        },
        Scenario {
            name: "sites-1000",
            about: "1000 sites configured, request for the last one, 1 KiB",
            sites: 1000,
            ..base.clone()
        },
        Scenario {
            name: "conns-256",
            about: "pass-through, 1 KiB, 256 connections",
            connections: 256,
            peers: true,
            ..base.clone()
        },
        Scenario {
            name: "conns-1024",
            about: "pass-through, 1 KiB, 1024 connections",
            connections: 1024,
            peers: true,
            misses: true,
            ..base.clone()
        },
        Scenario {
            name: "rate-limited",
            about: "every request over a 1r/s per-IP limit: 429s, 32 connections",
            work: Work::RateLimited,
            ..base.clone()
        },
        Scenario {
            name: "banned",
            about: "every request from a banned client, refused before routing with 403 (proxy-app: a ban, tripped by the first request; nginx: `deny` of the address), 32 connections",
            work: Work::Banned,
            instructions: true,
            ..base.clone()
        },
        Scenario {
            name: "wan-pass-1k",
            about: "pass-through to a peer behind a slow path (own network namespace, veth with delay), 1 KiB, 32 connections",
            wan: true,
            ..base.clone()
        },
        Scenario {
            name: "slow-1024",
            about: "pass-through to an upstream that answers each request after 20 ms, 1 KiB, 1024 connections: many requests in progress at once, each mostly waiting on the upstream",
            connections: 1024,
            peers: true,
            upstream_delay_ms: 20,
            ..base.clone()
        },
        Scenario {
            name: "wan-pass-tls-1k",
            about: "pass-through over upstream TLS to the peer behind the slow path, 1 KiB, 32 connections",
            work: Work::PassThroughTls,
            wan: true,
            ..base.clone()
        },
        Scenario {
            name: "wan-cache-hit-1k",
            about: "cache hit, 1 KiB object, origin behind the slow path, 32 connections",
            work: Work::CacheHit,
            wan: true,
            ..base
        },
    ]
}

/// What the report says about a `wan-*` scenario: the limits the path's round trip sets,
/// from the configured and the measured round trip (a GET on a reused connection).
pub fn wan_note(s: &Scenario, configured: Duration, measured: Duration) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let rtt = format!(
        "Round trip {:.0} ms ({:.1} ms measured)",
        ms(configured),
        ms(measured)
    );
    let c = s.connections;
    let reused = f64::from(c) / measured.as_secs_f64();
    match s.work {
        Work::PassThrough => format!(
            "{rtt}: with upstream connections reused, {c} client connections get at most {c} / {m:.1} ms = {reused:.0} req/s; a new upstream connection per request adds a round trip (TCP handshake): {half:.0} req/s.",
            m = ms(measured),
            half = reused / 2.0,
        ),
        Work::PassThroughTls => format!(
            "{rtt}: with upstream TLS connections reused, {c} client connections get at most {reused:.0} req/s; a new connection per request adds two round trips (TCP and TLS 1.3 handshakes, even with session resumption): {third:.0} req/s.",
            third = reused / 3.0,
        ),
        _ => format!(
            "{rtt}: hits never cross the path; the direct row is the origin without a cache ({reused:.0} req/s at most)."
        ),
    }
}

/// Where the upstream lives, for both servers.
#[derive(Debug, Clone, Copy)]
pub struct Upstream<'a> {
    /// Tailnet name (proxy-app resolves it through the fake MagicDNS).
    pub fqdn: &'a str,
    /// Its address (nginx is given the IP, since it cannot use the fake MagicDNS port).
    pub http: SocketAddr,
    /// HTTPS address (same IP).
    pub https: SocketAddr,
    /// The fake MagicDNS server.
    pub dns: SocketAddr,
    /// PEM file of the tailnet CA.
    pub ca_file: &'a Path,
}

/// Where proxy-app listens: port 0, the kernel picks the port (the harness reads it back).
pub const PROXY_LISTEN: &str = "127.0.0.1:0";
/// Where proxy-app's admin listener goes: another loopback address, so that the public
/// listener is the only one on [`PROXY_LISTEN`]'s.
pub const PROXY_ADMIN_LISTEN: &str = "127.0.0.2:0";

/// proxy-app's config for a scenario.
pub fn proxy_config(s: &Scenario, up: &Upstream<'_>) -> String {
    let (port, tls) = match s.work {
        Work::PassThroughTls => (
            up.https.port(),
            format!("tls = true\nca_file = \"{}\"\n", up.ca_file.display()),
        ),
        _ => (up.http.port(), String::new()),
    };
    let site_extra = match s.work {
        Work::CacheHit | Work::CacheFill => {
            "cache = { valid = { \"200\" = \"1h\" }, ignore_cache_control = true }\n"
        }
        Work::RateLimited => "rate_limits = [\"strict\"]\n",
        _ => "",
    };
    let site_extra = match s.gzip {
        true => format!("{site_extra}compress = {{ encodings = [\"gzip\"], types = [\"text/plain\"], min_length = \"256\", gzip_level = 1 }}\n"),
        false => site_extra.to_string(),
    };
    // The scenario's path is a trap: its first request bans the client for the whole run.
    let bans = match s.work {
        Work::Banned => "[bans]\n\n[[bans.rules]]\nname = \"bench\"\npaths = [\"/bench\"]\nduration = \"1d\"\n\n",
        _ => "",
    };
    let mut out = format!(
        "[server]\nlisten = [\"{PROXY_LISTEN}\"]\nthreads = 1\ngrace_period = \"1s\"\nshutdown_timeout = \"1s\"\nupstream_pool_size = {pool}\nkeepalive_requests = 1000000\n\n\
         [admin]\nlisten = \"{PROXY_ADMIN_LISTEN}\"\n{metrics}\n\n\
         [resolver]\nnameservers = [\"{dns}\"]\n\n\
         [access_log]\n{log}\n\n\
         [cache]\nmax_size = \"{cache}m\"\n\n\
         [rate_limits.strict]\nrate = \"1r/s\"\n\n\
         {bans}[upstreams.peer]\naddress = \"{fqdn}:{port}\"\n{tls}\n",
        pool = s.connections.max(128) * 2,
        cache = s.cache_mib,
        dns = up.dns,
        fqdn = up.fqdn,
        // As shipped, metrics are on: the key is left out.
        metrics = match s.defaults {
            true => String::new(),
            false => format!("metrics = {}", s.observed),
        },
        log = if s.observed {
            format!("path = \"{}-access.log\"", s.name)
        } else {
            "enabled = false".to_string()
        },
    );
    for i in 0..s.sites {
        let _ = write!(out, "[sites.s{i}]\nhosts = [\"s{i}.bench.example\"]\n{site_extra}[[sites.s{i}.locations]]\nmatch = \"/\"\nproxy = \"peer\"\n\n");
    }
    out
}

/// The fields of proxy-app's access log line, as an nginx `log_format`.
const NGINX_JSON_LOG: &str = r#"'{"time":"$time_iso8601","client_ip":"$remote_addr","remote_addr":"$remote_addr:$remote_port","host":"$host","method":"$request_method","uri":"$request_uri","protocol":"$server_protocol","status":$status,"body_bytes_sent":$body_bytes_sent,"request_time":$request_time,"upstream_addr":"$upstream_addr","upstream_response_time":"$upstream_response_time","upstream_status":"$upstream_status","upstream_cache_status":"$upstream_cache_status","user_agent":"$http_user_agent","referer":"$http_referer","request_id":"$request_id"}'"#;

/// nginx's config for the same scenario: one worker, upstream keepalive at least the client
/// concurrency, high keepalive_requests on both sides, the headers proxy-app adds (none in
/// [`Scenario::defaults`]), and an access log only when proxy-app has one too. It listens on
/// the socket it inherits (see [`crate::listening`]), bound to port `listen`.
/// Without `upstream_keepalive`, a new upstream connection per request (the control row of
/// the `wan-*` scenarios).
pub fn nginx_config(
    s: &Scenario,
    listen: u16,
    dir: &Path,
    up: &Upstream<'_>,
    upstream_keepalive: bool,
) -> String {
    let (scheme, addr, tls) = match s.work {
        Work::PassThrough
        | Work::CacheHit
        | Work::CacheFill
        | Work::RateLimited
        | Work::Banned => {
            ("http", up.http, String::new())
        }
        Work::PassThroughTls => (
            "https",
            up.https,
            format!(
                "proxy_ssl_server_name on; proxy_ssl_name {fqdn}; proxy_ssl_verify on; proxy_ssl_trusted_certificate {ca}; proxy_ssl_session_reuse on;",
                fqdn = up.fqdn,
                ca = up.ca_file.display()
            ),
        ),
    };
    let d = dir.display();
    let location_extra = match s.work {
        Work::CacheHit | Work::CacheFill => "proxy_cache edge; proxy_cache_valid 200 1h; proxy_ignore_headers Cache-Control Expires; proxy_cache_key $scheme$host$request_uri; proxy_cache_lock on;",
        Work::RateLimited => "limit_req zone=strict; limit_req_status 429;",
        Work::Banned => "deny 127.0.0.1;",
        _ => "",
    };
    let location_extra = match s.gzip {
        true => format!("{location_extra} gzip on; gzip_types text/plain; gzip_min_length 256; gzip_comp_level 1; gzip_vary on;"),
        false => location_extra.to_string(),
    };
    let ready = match s.work {
        Work::Banned => format!("location = {READY_PATH} {{ return 200; }}"),
        _ => String::new(),
    };
    // What proxy-app does to every proxied request by default: forwarding headers, the
    // client IP header, a request id both ways, and the cache status on cached locations.
    let forwarding = match s.defaults {
        true => "",
        false => "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Real-IP $remote_addr; proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header Fly-Client-IP $remote_addr; proxy_set_header X-Request-Id $request_id; add_header X-Request-Id $request_id always;",
    };
    let cache_status = match s.work {
        _ if s.defaults => "",
        Work::CacheHit | Work::CacheFill => {
            "add_header X-Cache-Status $upstream_cache_status always;"
        }
        _ => "",
    };
    let mut servers = String::new();
    for i in 0..s.sites {
        let _ = writeln!(
            servers,
            "server {{ listen 127.0.0.1:{listen}; server_name s{i}.bench.example; location / {{ proxy_pass {scheme}://peer; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host {fqdn}; {forwarding} {cache_status} {tls} {location_extra} }} {ready} }}",
            fqdn = up.fqdn,
        );
    }
    let access_log = if s.observed {
        format!("log_format edge escape=json {NGINX_JSON_LOG}; access_log {d}/access.log edge buffer=64k flush=1s;")
    } else {
        "access_log off;".to_string()
    };
    format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nworker_rlimit_nofile 65536;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n {access_log}\n keepalive_requests 1000000;\n server_names_hash_max_size 4096;\n\
         client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
         proxy_cache_path {d}/cache levels=1:2 keys_zone=edge:16m max_size=256m inactive=1d use_temp_path=off;\n\
         limit_req_zone $binary_remote_addr zone=strict:10m rate=1r/s;\n\
         upstream peer {{ server {addr};{keepalive} }}\n\
         server {{ listen 127.0.0.1:{listen} default_server; return 444; }}\n{servers}}}\n",
        keepalive = if upstream_keepalive {
            format!(
                " keepalive {}; keepalive_requests 1000000;",
                s.connections.max(128) * 2
            )
        } else {
            String::new()
        },
    )
}

/// HAProxy's config for a pass-through scenario: one thread, `http-reuse always` (idle
/// upstream connections shared by all client connections, as nginx's and proxy-app's pools
/// are), its defaults otherwise (no log; no headers added unless `same_headers`, then those
/// proxy-app adds by default); upstream TLS verified against the tailnet CA with the
/// peer's name as SNI. It listens on the inherited socket.
pub fn haproxy_config(s: &Scenario, up: &Upstream<'_>, same_headers: bool) -> String {
    let server = match s.work {
        Work::PassThroughTls => format!(
            "{addr} ssl verify required ca-file {ca} sni str({fqdn})",
            addr = up.https,
            ca = up.ca_file.display(),
            fqdn = up.fqdn
        ),
        _ => up.http.to_string(),
    };
    format!(
        "global\n  nbthread 1\n\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\n\
         frontend edge\n  bind fd@{fd}\n{headers}  default_backend peer\n\n\
         backend peer\n  http-reuse always\n  server peer {server}\n",
        fd = crate::listening::INHERITED_FD,
        headers = match same_headers {
            true => HAPROXY_SAME_HEADERS,
            false => "",
        },
    )
}

/// What proxy-app adds by default, in HAProxy's words: `X-Forwarded-For`, `X-Real-IP`,
/// `X-Forwarded-Proto` and `Fly-Client-IP` upstream, and a UUID request id both ways.
const HAPROXY_SAME_HEADERS: &str = "  option forwardfor\n  \
    http-request set-header X-Real-IP %[src]\n  \
    http-request set-header X-Forwarded-Proto http\n  \
    http-request set-header Fly-Client-IP %[src]\n  \
    unique-id-format %[uuid()]\n  \
    unique-id-header X-Request-Id\n  \
    http-after-response set-header X-Request-Id %[unique-id]\n";

/// Caddy's config (JSON) for a pass-through scenario: `reverse_proxy` at its defaults (it
/// adds `X-Forwarded-For`, `-Proto` and `-Host` and keeps idle upstream connections), no
/// admin endpoint, no automatic HTTPS, no log; upstream TLS verified against the tailnet CA
/// with the peer's name. It listens on port 0 (the harness reads the port back): Debian's
/// Caddy 2.6 cannot take an inherited socket. One thread comes from `GOMAXPROCS=1`.
pub fn caddy_config(s: &Scenario, up: &Upstream<'_>) -> String {
    let (dial, transport) = match s.work {
        Work::PassThroughTls => (
            up.https,
            format!(
                r#","transport":{{"protocol":"http","tls":{{"root_ca_pem_files":["{ca}"],"server_name":"{fqdn}"}}}}"#,
                ca = up.ca_file.display(),
                fqdn = up.fqdn
            ),
        ),
        _ => (up.http, String::new()),
    };
    format!(
        r#"{{"admin":{{"disabled":true}},"apps":{{"http":{{"servers":{{"edge":{{"listen":["127.0.0.1:0"],"automatic_https":{{"disable":true}},"routes":[{{"match":[{{"host":["{host}"]}}],"handle":[{{"handler":"reverse_proxy","upstreams":[{{"dial":"{dial}"}}]{transport}}}]}}]}}}}}}}}}}"#,
        host = s.host(),
    )
}

/// The scenario called `name`, for tests.
#[cfg(test)]
pub fn named(name: &str) -> Scenario {
    all().into_iter().find(|s| s.name == name).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(ca: &Path) -> Upstream<'_> {
        Upstream {
            fqdn: "wan.tail0fake.ts.net",
            http: "10.213.0.6:8080".parse().unwrap(),
            https: "10.213.0.6:8443".parse().unwrap(),
            dns: "127.100.100.100:5353".parse().unwrap(),
            ca_file: ca,
        }
    }

    #[test]
    fn only_the_paced_scenarios_set_a_rate_and_they_mirror_their_saturated_twins() {
        for s in all() {
            let paced = s.name.ends_with("-paced");
            assert_eq!(s.load().rate > 0, paced, "{}", s.name);
            assert_eq!(s.load().connections, s.connections, "{}", s.name);
        }
        let (paced, twin) = (named("pass-1k-paced"), named("pass-1k"));
        assert_eq!(paced.load().rate, 12_000);
        assert_eq!(
            (paced.work, paced.body_size, paced.peers),
            (twin.work, twin.body_size, twin.peers)
        );
        let (paced, twin) = (
            named("cache-hit-defaults-paced"),
            named("cache-hit-defaults-1k"),
        );
        assert_eq!((paced.work, paced.defaults), (twin.work, twin.defaults));
    }

    #[test]
    fn nginx_upstream_keepalive_can_be_turned_off() {
        let (s, dir) = (named("wan-pass-tls-1k"), Path::new("nginx-dir"));
        let up = upstream(Path::new("ca.pem"));
        let with = nginx_config(&s, 8000, dir, &up, true);
        assert!(with.contains("upstream peer { server 10.213.0.6:8443; keepalive 256;"));
        assert!(with.contains("proxy_pass https://peer;"));
        let without = nginx_config(&s, 8000, dir, &up, false);
        assert!(without.contains("upstream peer { server 10.213.0.6:8443; }"));
        assert!(!without.contains("keepalive 256"));
    }

    #[test]
    fn proxy_config_resolves_the_wan_peer_through_dns_with_a_pool() {
        let up = upstream(Path::new("ca.pem"));
        let config = proxy_config(&named("wan-pass-1k"), &up);
        assert!(config.contains("address = \"wan.tail0fake.ts.net:8080\""));
        assert!(config.contains("nameservers = [\"127.100.100.100:5353\"]"));
        assert!(config.contains("upstream_pool_size = 256"));
    }

    #[test]
    fn the_fill_fetches_three_caches_of_distinct_objects_and_shrinks_when_quick() {
        let up = upstream(Path::new("ca.pem"));
        let fill = named("cache-fill-100k");
        assert_eq!(fill.fill_objects(), 6144);
        assert_eq!(fill.fill_path(7), "/obj/7?size=102400");
        let config = proxy_config(&fill, &up);
        assert!(config.contains("max_size = \"200m\"") && config.contains("ignore_cache_control"));
        let quick = fill.quick();
        assert_eq!((quick.cache_mib, quick.fill_objects()), (16, 491));
        assert!(proxy_config(&quick, &up).contains("max_size = \"16m\""));
        let hit = named("cache-hit-1k").quick();
        assert!(proxy_config(&hit, &up).contains("max_size = \"256m\""));
    }

    #[test]
    fn the_gzip_hit_compresses_on_both_servers_and_asks_for_gzip() {
        let up = upstream(Path::new("ca.pem"));
        let gzip = named("cache-hit-gzip-10k");
        assert_eq!(gzip.headers(), ["Accept-Encoding: gzip"]);
        assert!(named("cache-hit-1k").headers().is_empty());
        let proxy = proxy_config(&gzip, &up);
        assert!(proxy.contains("cache = { valid"), "{proxy}");
        assert!(proxy.contains("compress = { encodings = [\"gzip\"], types = [\"text/plain\"], min_length = \"256\", gzip_level = 1 }"), "{proxy}");
        assert!(!proxy_config(&named("cache-hit-1k"), &up).contains("compress"));
        let nginx = nginx_config(&gzip, 8000, Path::new("d"), &up, true);
        assert!(nginx.contains("proxy_cache edge;") && nginx.contains("gzip on; gzip_types text/plain; gzip_min_length 256; gzip_comp_level 1; gzip_vary on;"), "{nginx}");
    }

    #[test]
    fn the_banned_scenario_bans_on_its_path_and_probes_readiness_elsewhere() {
        let (s, dir) = (named("banned"), Path::new("nginx-dir"));
        let up = upstream(Path::new("ca.pem"));
        let proxy = proxy_config(&s, &up);
        assert!(proxy.contains("[[bans.rules]]\nname = \"bench\"\npaths = [\"/bench\"]"));
        assert!(s.path().starts_with("/bench?") && s.ready_path() == "/ready");
        let nginx = nginx_config(&s, 8000, dir, &up, true);
        assert!(
            nginx.contains("deny 127.0.0.1;")
                && nginx.contains("location = /ready { return 200; }")
        );
        assert!(!proxy_config(&named("pass-1k"), &up).contains("[bans]"));
        assert_eq!(named("pass-1k").ready_path(), named("pass-1k").path());
    }

    #[test]
    fn wan_notes_give_the_round_trip_limits() {
        let (rtt, measured) = (Duration::from_millis(20), Duration::from_millis(25));
        let note = wan_note(&named("wan-pass-1k"), rtt, rtt);
        assert!(note.contains("32 / 20.0 ms = 1600 req/s"), "{note}");
        assert!(note.contains("800 req/s"), "{note}");
        let note = wan_note(&named("wan-pass-tls-1k"), rtt, measured);
        assert!(
            note.starts_with("Round trip 20 ms (25.0 ms measured)"),
            "{note}"
        );
        assert!(
            note.contains("1280 req/s") && note.contains("427 req/s"),
            "{note}"
        );
        assert!(all().iter().filter(|s| s.wan).count() == 3);
    }

    #[test]
    fn only_the_observed_scenario_logs_and_records_metrics_on_both_servers() {
        let up = upstream(Path::new("ca.pem"));
        let dir = Path::new("nginx-dir");
        let observed = named("observed-1k");
        let proxy = proxy_config(&observed, &up);
        assert!(
            proxy.contains("metrics = true") && proxy.contains("path = \"observed-1k-access.log\"")
        );
        let nginx = nginx_config(&observed, 8000, dir, &up, true);
        assert!(
            nginx.contains("access_log nginx-dir/access.log edge"),
            "{nginx}"
        );
        let plain = named("pass-1k");
        let proxy = proxy_config(&plain, &up);
        assert!(proxy.contains("metrics = false") && proxy.contains("enabled = false"));
        let nginx = nginx_config(&plain, 8000, dir, &up, true);
        assert!(nginx.contains("access_log off;"));
        // Both servers add the same headers to every proxied request.
        assert!(
            nginx.contains("X-Forwarded-For $proxy_add_x_forwarded_for")
                && nginx.contains("X-Request-Id $request_id")
        );
        assert!(!nginx.contains("X-Cache-Status"));
        let cached = nginx_config(&named("cache-hit-1k"), 8000, dir, &up, true);
        assert!(cached.contains("add_header X-Cache-Status $upstream_cache_status"));
    }

    #[test]
    fn the_defaults_pair_drops_nginxs_extra_headers_and_keeps_proxy_apps_metrics() {
        let up = upstream(Path::new("ca.pem"));
        let dir = Path::new("nginx-dir");
        let defaults = named("cache-hit-defaults-1k");
        let nginx = nginx_config(&defaults, 8000, dir, &up, true);
        assert!(nginx.contains("proxy_cache edge;"), "{nginx}");
        assert!(!nginx.contains("request_id") && !nginx.contains("X-Forwarded-For"));
        assert!(!nginx.contains("X-Cache-Status"), "{nginx}");
        let proxy = proxy_config(&defaults, &up);
        assert!(!proxy.contains("metrics ="), "{proxy}");
        assert!(proxy.contains("listen = [\"127.0.0.1:0\"]"), "{proxy}");
        assert!(proxy.contains("listen = \"127.0.0.2:0\""), "{proxy}");
        // As nginx's: a client connection is never closed for its number of requests.
        assert!(proxy.contains("keepalive_requests = 1000000"), "{proxy}");
    }

    #[test]
    fn haproxy_and_caddy_reuse_upstream_connections_and_verify_upstream_tls() {
        let up = upstream(Path::new("ca.pem"));
        let plain = haproxy_config(&named("pass-1k"), &up, false);
        assert!(
            plain.contains("bind fd@3") && plain.contains("nbthread 1"),
            "{plain}"
        );
        assert!(plain.contains("http-reuse always\n  server peer 10.213.0.6:8080\n"));
        // At its defaults HAProxy adds nothing; the equal-output one adds what proxy-app adds.
        assert!(!plain.contains("http-request") && !plain.contains("forwardfor"));
        let same = haproxy_config(&named("pass-1k"), &up, true);
        for line in [
            "  option forwardfor\n",
            "  http-request set-header X-Real-IP %[src]\n",
            "  http-request set-header X-Forwarded-Proto http\n",
            "  http-request set-header Fly-Client-IP %[src]\n",
            "  unique-id-format %[uuid()]\n",
            "  unique-id-header X-Request-Id\n",
            "  http-after-response set-header X-Request-Id %[unique-id]\n",
        ] {
            assert!(same.contains(line), "{line} missing from {same}");
        }
        assert!(same.contains("bind fd@3\n  option forwardfor\n"), "{same}");
        let equal: Vec<&str> = all()
            .iter()
            .filter(|s| s.peers_same_headers)
            .map(|s| s.name)
            .collect();
        assert_eq!(equal, ["pass-1k", "pass-tls-1k"]);
        let tls = haproxy_config(&named("pass-tls-1k"), &up, false);
        assert!(
            tls.contains(
                "10.213.0.6:8443 ssl verify required ca-file ca.pem sni str(wan.tail0fake.ts.net)"
            ),
            "{tls}"
        );
        let caddy = caddy_config(&named("pass-tls-1k"), &up);
        assert!(caddy.contains(r#""dial":"10.213.0.6:8443""#), "{caddy}");
        assert!(
            caddy.contains(r#""server_name":"wan.tail0fake.ts.net""#),
            "{caddy}"
        );
        assert!(caddy.contains(r#""host":["s0.bench.example"]"#), "{caddy}");
        let plain = caddy_config(&named("pass-1k"), &up);
        assert!(
            !plain.contains("transport") && plain.contains(":8080"),
            "{plain}"
        );
        let peered: Vec<&str> = all().iter().filter(|s| s.peers).map(|s| s.name).collect();
        assert_eq!(
            peered,
            [
                "pass-1k",
                "pass-1k-paced",
                "pass-tls-1k",
                "conns-256",
                "conns-1024",
                "slow-1024"
            ]
        );
    }
}
