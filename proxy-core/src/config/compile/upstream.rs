//! `[resolver]` and `[upstreams.NAME]`: how tailnet names are resolved, and the services
//! locations proxy to.

use pingora::tls::x509::X509;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::{is_valid_dns_name, Compiler};
use crate::config::error::KeyPath;
use crate::config::file::{
    HealthSection, ProxyHeaderSection, ResolverSection, SiteSection, UpstreamSection,
    DEFAULT_BALANCE, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HEALTH_HEALTHY, DEFAULT_HEALTH_INTERVAL,
    DEFAULT_HEALTH_STATUS, DEFAULT_HEALTH_TIMEOUT, DEFAULT_HEALTH_UNHEALTHY, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_RESPONSE_HEADER, DEFAULT_MAX_TTL, DEFAULT_MIN_TTL, DEFAULT_NAMESERVERS,
    DEFAULT_READ_TIMEOUT, DEFAULT_RESOLVER_TIMEOUT, DEFAULT_RETRY, DEFAULT_RETRY_INTERVAL,
    DEFAULT_TLS, DEFAULT_VERIFY, DEFAULT_WRITE_TIMEOUT,
};
use crate::upstream::{
    AddrSlot, AddressPool, Balance, HeaderRule, HealthSettings, HostHeader, PoolMember,
    ResolverSettings, Upstream, UpstreamTimeouts, UpstreamTls,
};

impl Compiler<'_> {
    pub(super) fn resolver(&mut self, r: &ResolverSection, key: &KeyPath) -> ResolverSettings {
        let default_servers: Vec<String> =
            DEFAULT_NAMESERVERS.iter().map(|s| s.to_string()).collect();
        let servers = r.nameservers.as_ref().unwrap_or(&default_servers);
        if servers.is_empty() {
            self.problem(
                key.key("nameservers"),
                "at least one nameserver is required",
            );
        }
        let nameservers = servers
            .iter()
            .enumerate()
            .filter_map(|(i, text)| {
                let addr = parse_nameserver(text);
                if addr.is_none() {
                    self.problem(key.key("nameservers").index(i), format!("invalid nameserver `{text}`: expected an IP address, optionally with :port"));
                }
                addr
            })
            .collect();
        let settings = ResolverSettings {
            nameservers,
            min_ttl: self.duration(r.min_ttl.as_deref(), DEFAULT_MIN_TTL, key.key("min_ttl")),
            max_ttl: self.duration(r.max_ttl.as_deref(), DEFAULT_MAX_TTL, key.key("max_ttl")),
            timeout: self.duration(
                r.timeout.as_deref(),
                DEFAULT_RESOLVER_TIMEOUT,
                key.key("timeout"),
            ),
            retry_interval: self.duration(
                r.retry_interval.as_deref(),
                DEFAULT_RETRY_INTERVAL,
                key.key("retry_interval"),
            ),
        };
        if settings.min_ttl > settings.max_ttl {
            self.problem(key.key("min_ttl"), "min_ttl is larger than max_ttl");
        }
        settings
    }

    /// `offline_sites` names the upstreams that sites with offline mode proxy to: those
    /// are checked like upstreams with `health`.
    pub(super) fn upstreams(
        &mut self,
        all: &BTreeMap<String, UpstreamSection>,
        offline_sites: &BTreeMap<&str, &str>,
        keep_header_case: bool,
        key: &KeyPath,
    ) -> BTreeMap<String, Arc<Upstream>> {
        // Upstreams naming the same host share one address slot, resolved once.
        let mut slots: HashMap<String, Arc<AddrSlot>> = HashMap::new();
        let mut out = BTreeMap::new();
        for (name, section) in all {
            let key = key.key(name);
            self.check_name("upstream", name, &key);
            let offline_site = offline_sites.get(name.as_str()).copied();
            let upstream = self.upstream(
                name,
                section,
                offline_site,
                keep_header_case,
                &key,
                &mut slots,
            );
            if let Some(upstream) = upstream {
                out.insert(name.clone(), Arc::new(upstream));
            }
        }
        out
    }

    fn upstream(
        &mut self,
        name: &str,
        u: &UpstreamSection,
        offline_site: Option<&str>,
        keep_header_case: bool,
        key: &KeyPath,
        slots: &mut HashMap<String, Arc<AddrSlot>>,
    ) -> Option<Upstream> {
        let addresses = self.addresses(u, key)?;
        let (host, port) = addresses.first()?.clone();
        let tls = self.upstream_tls(u, &host, key);
        let host_header = match u.host_header.as_deref() {
            Some(text) => self.host_header(text, key.key("host_header"))?,
            None => self.host_header(
                &default_host_header(&host, port, tls.is_some()),
                key.key("host_header"),
            )?,
        };
        let timeouts = UpstreamTimeouts {
            connect: self.duration(
                u.connect_timeout.as_deref(),
                DEFAULT_CONNECT_TIMEOUT,
                key.key("connect_timeout"),
            ),
            read: self.duration(
                u.read_timeout.as_deref(),
                DEFAULT_READ_TIMEOUT,
                key.key("read_timeout"),
            ),
            write: self.duration(
                u.write_timeout.as_deref(),
                DEFAULT_WRITE_TIMEOUT,
                key.key("write_timeout"),
            ),
            idle: self.duration(
                u.idle_timeout.as_deref(),
                DEFAULT_IDLE_TIMEOUT,
                key.key("idle_timeout"),
            ),
            max_response_header: self.memory_size(
                u.max_response_header.as_deref(),
                DEFAULT_MAX_RESPONSE_HEADER,
                key.key("max_response_header"),
            ),
            keep_header_case,
        };
        let addrs = match host.parse::<IpAddr>() {
            Ok(ip) => Arc::new(AddrSlot::fixed(vec![ip])),
            Err(_) => slots.entry(host.clone()).or_default().clone(),
        };
        let mut upstream = Upstream::new(
            name.to_string(),
            host,
            port,
            tls,
            host_header,
            timeouts,
            addrs,
        );
        upstream.header_rules = self.header_rules(&u.proxy_headers, &key.key("proxy_headers"));
        if let Some(transport) = self.transport(u.transport.as_deref(), key.key("transport")) {
            upstream.set_transport(transport);
        }
        // A plain `address` keeps the cheap path: no pool, no checks.
        let why_checked = match (&u.addresses, &u.health, offline_site) {
            (Some(_), _, _) => Some(("addresses", "`addresses`".to_string())),
            (None, Some(_), _) => Some(("health", "`health`".to_string())),
            (None, None, Some(site)) => Some((
                "transport",
                format!("offline mode (`sites.{site}.offline`)"),
            )),
            (None, None, None) => None,
        };
        if let Some((field, why)) = why_checked {
            if !upstream.kernel_transport() {
                self.problem(
                    key.key(field),
                    format!("{why} works with `transport = \"kernel\"` only"),
                );
            }
            let members = addresses
                .into_iter()
                .map(|(host, port)| {
                    let slot = match host.parse::<IpAddr>() {
                        Ok(ip) => Arc::new(AddrSlot::fixed(vec![ip])),
                        Err(_) => slots.entry(host.clone()).or_default().clone(),
                    };
                    PoolMember { host, port, slot }
                })
                .collect();
            upstream.pool = Some(Arc::new(
                self.address_pool(name, u, key, members, &upstream),
            ));
        }
        Some(upstream)
    }

    /// `address` or `addresses`, parsed (the first is the upstream's own address); the
    /// keys only `addresses` takes are refused with `address`.
    fn addresses(&mut self, u: &UpstreamSection, key: &KeyPath) -> Option<Vec<(String, u16)>> {
        match (&u.address, &u.addresses) {
            (Some(address), None) => {
                for (field, set) in [
                    ("balance", u.balance.is_some()),
                    ("retry", u.retry.is_some()),
                ] {
                    if set {
                        self.problem(
                            key.key(field),
                            format!("`{field}` needs `addresses` (several addresses)"),
                        );
                    }
                }
                let parsed = parse_host_port(address)
                    .map_err(|e| self.problem(key.key("address"), e))
                    .ok()?;
                Some(vec![parsed])
            }
            (None, Some(list)) => {
                if list.is_empty() {
                    self.problem(key.key("addresses"), "at least one address is required");
                    return None;
                }
                let mut parsed = Vec::with_capacity(list.len());
                for (i, address) in list.iter().enumerate() {
                    match parse_host_port(address) {
                        Ok(hp) if parsed.contains(&hp) => self.problem(
                            key.key("addresses").index(i),
                            format!("address `{address}` is listed twice"),
                        ),
                        Ok(hp) => parsed.push(hp),
                        Err(e) => self.problem(key.key("addresses").index(i), e),
                    }
                }
                (parsed.len() == list.len()).then_some(parsed)
            }
            (Some(_), Some(_)) => {
                self.problem(
                    key.key("addresses"),
                    "give `address` or `addresses`, not both",
                );
                None
            }
            (None, None) => {
                self.problem(key.clone(), "`address` or `addresses` is required");
                None
            }
        }
    }

    /// The pool of a checked upstream: balance, retry and health checks (one address has
    /// no other to retry on).
    fn address_pool(
        &mut self,
        name: &str,
        u: &UpstreamSection,
        key: &KeyPath,
        members: Vec<PoolMember>,
        upstream: &Upstream,
    ) -> AddressPool {
        let name_of_balance = u.balance.as_deref().unwrap_or(DEFAULT_BALANCE);
        let balance = Balance::from_name(name_of_balance).unwrap_or_else(|| {
            let valid: Vec<String> = Balance::ALL
                .iter()
                .map(|(name, _)| format!("\"{name}\""))
                .collect();
            self.problem(
                key.key("balance"),
                format!(
                    "unknown balance `{name_of_balance}`: expected one of {}",
                    valid.join(", ")
                ),
            );
            Balance::RoundRobin
        });
        let retry = members.len() > 1 && u.retry.unwrap_or(DEFAULT_RETRY);
        let health = self.health(u.health.as_ref(), &key.key("health"));
        let host_header = match &upstream.host_header {
            // Made from text that was checked to be ASCII.
            HostHeader::Fixed(value) => String::from_utf8_lossy(value.as_bytes()).into_owned(),
            HostHeader::Client => {
                let (host, port) = upstream.address();
                default_host_header(host, port, upstream.is_tls())
            }
        };
        AddressPool::new(
            name.to_string(),
            members,
            balance,
            health,
            retry,
            upstream.template(),
            &host_header,
        )
    }

    /// `[upstreams.NAME.health]`, with its defaults when absent.
    fn health(&mut self, h: Option<&HealthSection>, key: &KeyPath) -> HealthSettings {
        let empty = HealthSection::default();
        let h = h.unwrap_or(&empty);
        let path = h.path.clone();
        if let Some(p) = &path {
            if !p.starts_with('/') || p.parse::<http::uri::PathAndQuery>().is_err() {
                self.problem(
                    key.key("path"),
                    format!(
                        "invalid health check path `{p}`: expected a path such as \"/healthz\""
                    ),
                );
            }
        }
        let counts = [
            ("healthy", h.healthy, DEFAULT_HEALTH_HEALTHY),
            ("unhealthy", h.unhealthy, DEFAULT_HEALTH_UNHEALTHY),
        ]
        .map(|(field, value, default)| {
            let n = value.unwrap_or(default);
            if n == 0 {
                self.problem(key.key(field), "must be at least 1");
            }
            n.max(1)
        });
        let [low, high] = h.status.unwrap_or(DEFAULT_HEALTH_STATUS);
        if !(100..=599).contains(&low) || !(100..=599).contains(&high) || low > high {
            self.problem(
                key.key("status"),
                format!("invalid status range [{low}, {high}]: expected [lowest, highest] within 100..599"),
            );
        }
        if h.status.is_some() && path.is_none() {
            self.problem(key.key("status"), "`status` needs `path` (an HTTP check)");
        }
        let interval = self.positive_duration(
            h.interval.as_deref(),
            DEFAULT_HEALTH_INTERVAL,
            key.key("interval"),
        );
        let timeout = self.positive_duration(
            h.timeout.as_deref(),
            DEFAULT_HEALTH_TIMEOUT,
            key.key("timeout"),
        );
        HealthSettings {
            path,
            interval,
            timeout,
            healthy: counts[0],
            unhealthy: counts[1],
            status: (low, high),
        }
    }

    /// `proxy_headers` of an upstream, site or location, in name order; each bad entry is
    /// reported at its own key.
    pub(super) fn header_rules(
        &mut self,
        headers: &BTreeMap<String, ProxyHeaderSection>,
        key: &KeyPath,
    ) -> Vec<HeaderRule> {
        let mut rules: Vec<HeaderRule> = Vec::with_capacity(headers.len());
        for (name, entry) in headers {
            let key = key.key(name);
            let rule = match entry {
                ProxyHeaderSection::Set(value) => HeaderRule::parse(name, value, false),
                ProxyHeaderSection::Append(append) => HeaderRule::parse(name, &append.append, true),
            };
            match rule {
                Ok(rule) if rules.iter().any(|r| r.name() == rule.name()) => self.problem(
                    key,
                    format!("header `{name}` is named twice (header names ignore case)"),
                ),
                Ok(rule) => rules.push(rule),
                Err(e) => self.problem(key, e),
            }
        }
        rules
    }

    /// A Host header value (`"$host"` or a literal), for upstreams and locations.
    pub(super) fn host_header(&mut self, text: &str, key: KeyPath) -> Option<HostHeader> {
        HostHeader::parse(text)
            .map_err(|e| self.problem(key, e))
            .ok()
    }

    fn upstream_tls(
        &mut self,
        u: &UpstreamSection,
        host: &str,
        key: &KeyPath,
    ) -> Option<UpstreamTls> {
        if !u.tls.unwrap_or(DEFAULT_TLS) {
            for (field, set) in [
                ("sni", u.sni.is_some()),
                ("verify", u.verify.is_some()),
                ("ca_file", u.ca_file.is_some()),
            ] {
                if set {
                    self.problem(
                        key.key(field),
                        format!("`{field}` has no effect without `tls = true`"),
                    );
                }
            }
            return None;
        }
        let sni = u.sni.clone().unwrap_or_else(|| host.to_string());
        if !is_valid_dns_name(&sni) && sni.parse::<IpAddr>().is_err() {
            self.problem(
                key.key("sni"),
                format!("invalid SNI `{sni}`: expected a DNS name"),
            );
        }
        let ca = u
            .ca_file
            .as_deref()
            .and_then(|path| self.ca_file(path, key.key("ca_file")));
        Some(UpstreamTls {
            sni,
            verify: u.verify.unwrap_or(DEFAULT_VERIFY),
            ca,
        })
    }

    fn ca_file(&mut self, path: &str, key: KeyPath) -> Option<Arc<Box<[X509]>>> {
        let pem = self.read_file(path, key.clone())?;
        match X509::stack_from_pem(&pem) {
            Ok(certs) if !certs.is_empty() => Some(Arc::new(certs.into_boxed_slice())),
            Ok(_) => {
                self.problem(key, format!("`{path}` holds no PEM certificate"));
                None
            }
            Err(e) => {
                self.problem(key, format!("`{path}` is not a PEM certificate file: {e}"));
                None
            }
        }
    }
}

/// nginx's `$proxy_host`: the host, with the port unless it is the scheme's default.
fn default_host_header(host: &str, port: u16, tls: bool) -> String {
    let default_port = if tls { 443 } else { 80 };
    let host = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => host.to_string(),
    };
    if port == default_port {
        host
    } else {
        format!("{host}:{port}")
    }
}

/// The upstreams that sites with offline mode proxy to, each with one such site's name
/// (for messages): they are checked, so that offline mode knows when they are down.
pub(super) fn offline_upstreams(sites: &BTreeMap<String, SiteSection>) -> BTreeMap<&str, &str> {
    let mut out = BTreeMap::new();
    for (site, section) in sites.iter().filter(|(_, s)| s.offline.is_some()) {
        for upstream in section.locations.iter().filter_map(|l| l.proxy.as_deref()) {
            out.entry(upstream).or_insert(site.as_str());
        }
    }
    out
}

fn parse_nameserver(text: &str) -> Option<SocketAddr> {
    text.parse::<SocketAddr>().ok().or_else(|| {
        text.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// Splits `host:port` (IPv6 in brackets); the port is required.
fn parse_host_port(address: &str) -> Result<(String, u16), String> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    let hint = "expected host:port, e.g. \"docs.tailXXXX.ts.net:443\" or \"100.64.0.7:8080\"";
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("address `{address}` has no port: {hint}"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("address `{address}` has an invalid port: {hint}"))?;
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if !is_valid_dns_name(&host) {
        return Err(format!("address `{address}` has an invalid host: {hint}"));
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use crate::config::{assert_mentions, errors};

    #[test]
    fn bad_proxy_headers_name_their_keys() {
        let text = r#"[client]
proto_header = "bad header"
[upstreams.docs]
address = "docs.tail1.ts.net:80"
proxy_headers = { Host = "x", "X-A" = "$nope" }
[sites.docs]
hosts = ["docs.example.com"]
proxy_headers = { Connection = "close" }
[[sites.docs.locations]]
match = "/"
proxy = "docs"
proxy_headers = { "X-C" = "$http_", "x-d" = "1", "X-D" = "2" }
[[sites.docs.locations]]
match = "/r"
return = { status = 200 }
proxy_headers = { "X-E" = "1" }
"#;
        let e = errors(text);
        assert_mentions(
            &[
            "edge.toml:2: client.proto_header: invalid header name `bad header`",
            "edge.toml:5: upstreams.docs.proxy_headers.Host: `Host` cannot be set here: the Host header is set with `host_header`",
            "edge.toml:5: upstreams.docs.proxy_headers.X-A: unknown variable `$nope`",
            "edge.toml:8: sites.docs.proxy_headers.Connection: `Connection` cannot be set here",
            "edge.toml:12: sites.docs.locations[0].proxy_headers.X-C: unknown variable `$http_`",
            "sites.docs.locations[0].proxy_headers.x-d: header `x-d` is named twice",
            "edge.toml:16: sites.docs.locations[1].proxy_headers: `proxy_headers` has no effect without `proxy`",
            ],
            &e,
        );
    }

    #[test]
    fn only_upstreams_with_health_or_an_offline_site_leave_the_unchecked_path() {
        let text = r#"[upstreams.pool]
addresses = ["a.tail1.ts.net:80", "b.tail1.ts.net:80"]
balance = "least_conn"
[upstreams.checked]
address = "c.tail1.ts.net:80"
health = { path = "/healthz" }
[upstreams.offline]
address = "d.tail1.ts.net:80"
[upstreams.plain]
address = "e.tail1.ts.net:80"
[sites.s]
hosts = ["s.example.com"]
[[sites.s.locations]]
match = "/"
proxy = "pool"
[[sites.s.locations]]
match = "/checked"
proxy = "checked"
[[sites.s.locations]]
match = "/plain"
proxy = "plain"
[sites.down]
hosts = ["down.example.com"]
offline = { retry_after = "10s" }
[[sites.down.locations]]
match = "/"
proxy = "offline"
"#;
        let config = crate::config::load_str(text, None, std::path::Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"));
        let checked = |name: &str| config.upstreams[name].pool.is_some();
        assert!(checked("pool") && checked("checked") && checked("offline"));
        assert!(!checked("plain"));
        // One address: nothing to retry on.
        assert!(!config.upstreams["checked"]
            .pool
            .as_ref()
            .is_some_and(|p| p.retry));
    }

    #[test]
    fn append_and_set_forms_parse() {
        let text = r#"[upstreams.docs]
address = "docs.tail1.ts.net:80"
proxy_headers = { "X-Forwarded-Proto" = "https" }
[sites.docs]
hosts = ["docs.example.com"]
proxy_headers = { Via = { append = "edge" }, "X-Real-IP" = "" }
[[sites.docs.locations]]
match = "/"
proxy = "docs"
"#;
        assert_eq!(errors(text), "no error");
        let typo = text.replace("append =", "add =");
        let e = errors(&typo);
        assert!(e.contains("edge.toml:6: sites.docs.proxy_headers"), "{e}");
    }
}
