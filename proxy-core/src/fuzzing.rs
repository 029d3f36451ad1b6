//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`, off by default):
//! each takes arbitrary bytes, runs them through one part of the proxy that reads untrusted
//! input, and must neither panic nor hang. `tests/fuzz_corpus.rs` runs them over the seed
//! corpus in `testdata/fuzz/` on every test run, so a crash found once stays fixed.
//!
//! Not an API for anything else: it exposes internals, and may change with them.

use bytes::Bytes;
use pingora::http::RequestHeader;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use crate::config::load_str;
use crate::model::RuntimeConfig;
use crate::route::Routing;

/// The config the request targets route against: sites with exact, wildcard, regex and
/// priority locations, a cache policy with key headers, rate limits and client trust.
const CONFIG: &str = r#"
[client]
trusted_proxies = ["10.0.0.0/8", "fd00::/8"]
forwarded_for_fallback = true

[rate_limits.site]
rate = "1000r/s"
burst = 10
key = "client_ip+location"

[upstreams.docs]
address = "127.0.0.1:9"

[sites.docs]
hosts = ["docs.example.com", "*.pages.example.com"]
rate_limits = ["site"]
cache = { key_query = "sorted", key_headers = ["Accept-Language"], bypass_cookies = ["session"] }
[sites.docs.access]
user_agent_deny = ["(?i)bot", "^curl/"]

[[sites.docs.locations]]
match = "/"
proxy = "docs"
[[sites.docs.locations]]
match = "= /robots.txt"
return = { status = 200, body = "User-agent: *\n" }
[[sites.docs.locations]]
match = "^~ /static/"
proxy = "docs"
cache = { key_query = ["v"] }
[[sites.docs.locations]]
match = '~* \.(png|css)$'
proxy = "docs"
allow = ["192.0.2.0/24"]
[[sites.docs.locations]]
match = '~ ^/old/(.*)$'
redirect = { status = 301, to = "https://$host/new$request_uri?$args" }
"#;

fn config() -> &'static RuntimeConfig {
    static CONFIG_CELL: OnceLock<RuntimeConfig> = OnceLock::new();
    CONFIG_CELL.get_or_init(|| match load_str(CONFIG, None, Path::new("/nonexistent")) {
        Ok(config) => config,
        Err(errors) => panic!("the fuzz config does not compile: {errors}"),
    })
}

/// Config text: parsed and compiled, every problem an error, never a panic.
pub fn config_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = load_str(
        text,
        Some(Path::new("fuzz.toml")),
        Path::new("/nonexistent"),
    );
}

/// A raw request head as a client sends it: read by the patched Pingora HTTP/1 reader within
/// the default head limits, then everything the proxy does with a head before any upstream:
/// client identity, routing and framing checks, the location's guards, the cache key.
pub fn request_head(data: &[u8]) {
    let Some(request) = read_head(data) else {
        return;
    };
    let config = config();
    let peer = Some("10.1.2.3".parse().expect("address"));
    let client = config.client.client_ip(peer, &request.headers);
    let raw = Bytes::copy_from_slice(data);
    match config.routes.route(&request, "https", || Some(raw)) {
        Routing::Answered(_) => {}
        Routing::Site(routed) => {
            let Some(location) = routed.location else {
                return;
            };
            let _ =
                location
                    .guards()
                    .check(&request, client, (routed.site.name(), location.index()));
            if let Some(policy) = location.cache() {
                let _ = policy.key.cache_key("https", &routed.host, &request);
                let _ = policy.bypass.applies(&request);
            }
        }
    }
}

/// Reads one request head from `data` the way a public listener does.
fn read_head(data: &[u8]) -> Option<RequestHeader> {
    use pingora::protocols::http::v1::server::{HttpSession, RequestHeadLimits};
    use tokio::io::AsyncWriteExt;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .ok()?;
    runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(data.len() + 1);
        client.write_all(data).await.ok()?;
        drop(client);
        let mut session = HttpSession::new(Box::new(server));
        let limits = RequestHeadLimits {
            timeout: Some(Duration::from_secs(1)),
            max_line: 8 << 10,
            max_size: 32 << 10,
            max_headers: 100,
        };
        session.set_request_head_limits(limits, true);
        session.read_request().await.ok()??;
        Some(session.req_header().clone())
    })
}

/// A request path: normalised as before matching, then matched against a site's locations.
pub fn path(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(normalized) = crate::route::normalize_path(path) else {
        return;
    };
    if let Some(site) = config().site_for_host("docs.example.com") {
        let _ = site.location_for_path(&normalized);
    }
}

/// A `Host` value: normalised, then looked up among the sites.
pub fn host(data: &[u8]) {
    if let Ok(Some(host)) = crate::route::normalize_host(data) {
        let _ = config().site_for_host(&host);
    }
}

/// A deny-list file (plain addresses and CIDRs, or fail2ban's nginx `geo` lines).
pub fn deny_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (set, _warnings) = crate::access::parse_ip_list(&text);
    let _ = set.contains("192.0.2.1".parse().expect("address"));
}

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// Every entry point, by the fuzz target's name (for the corpus test).
pub const TARGETS: &[(&str, Target)] = &[
    ("config", config_text),
    ("request_head", request_head),
    ("path", path),
    ("host", host),
    ("deny_file", deny_file),
];
