//! Plain config data -> validated runtime model. Every check lives here, and every problem
//! is reported at the key that holds it, all at once rather than one per run.

use bytes::Bytes;
use pingora::tls::x509::X509;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::error::{KeyPath, Problems};
use super::file::{
    ConfigFile, LocationSection, PluginSection, ResolverSection, ServerSection, SiteSection,
    StatusOrWord, UpstreamSection,
};
use crate::plugin::{PluginList, PluginRegistry, PluginSetup};
use crate::route::{
    Action, HostHeader, HostRouter, Location, LocationPattern, LocationTable, RedirectTarget, Site,
};
use crate::runtime::{RuntimeConfig, ServerSettings, UnknownHostAnswer};
use crate::upstream::{AddrSlot, ResolverSettings, Upstream, UpstreamTimeouts, UpstreamTls};

/// Default public listener.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Default admin listener.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9091";
/// Default body size limit (nginx's `client_max_body_size`).
pub const DEFAULT_MAX_BODY_SIZE: u64 = 1 << 20;

/// Compiles plain config data; `base_dir` resolves relative file paths and `plugins` builds
/// the plugins the config attaches.
pub(crate) fn compile(
    file: &ConfigFile,
    base_dir: &Path,
    plugins: &PluginRegistry,
) -> Result<RuntimeConfig, Problems> {
    let mut problems = Problems::default();
    let root = KeyPath::root();
    let mut compiler = Compiler {
        base_dir,
        plugins,
        problems: &mut problems,
    };
    let server = compiler.server(&file.server, file.admin.listen.as_deref(), &root);
    let resolver = compiler.resolver(&file.resolver, &root.key("resolver"));
    let upstreams = compiler.upstreams(&file.upstreams, &root.key("upstreams"));
    let router = compiler.sites(&file.sites, &upstreams, &root.key("sites"));
    let health_path = compiler.health_path(&file.server, &root.key("server"));
    let unknown_host = compiler.unknown_host(&file.server, &root.key("server"));
    let observe = crate::observe::compile_observe(
        &file.admin,
        server.admin_listen,
        &file.access_log,
        base_dir,
        &mut problems,
    );
    let cache = crate::cache::compile_settings(
        file.cache.as_ref(),
        base_dir,
        &root.key("cache"),
        &mut problems,
    );
    let (client, guards) = crate::guard::compile_guards(file, base_dir, &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(RuntimeConfig {
        server,
        resolver,
        router,
        upstreams,
        health_path,
        unknown_host,
        observe,
        cache,
        client,
        guards,
    })
}

struct Compiler<'a> {
    base_dir: &'a Path,
    plugins: &'a PluginRegistry,
    problems: &'a mut Problems,
}

impl Compiler<'_> {
    fn problem(&mut self, key: KeyPath, message: impl Into<String>) {
        self.problems.push(key, message);
    }

    fn plugin_list(&mut self, sections: &[PluginSection], key: &KeyPath) -> PluginList {
        let built = sections
            .iter()
            .enumerate()
            .filter_map(|(i, section)| {
                self.plugins
                    .build(
                        &section.name,
                        &section.options,
                        PluginSetup {
                            base_dir: self.base_dir,
                        },
                    )
                    .map_err(|e| self.problem(key.index(i), e))
                    .ok()
            })
            .collect();
        PluginList::new(built)
    }

    fn duration(&mut self, value: Option<&str>, default: Duration, key: KeyPath) -> Duration {
        self.problems.duration(value, default, key)
    }

    fn size(&mut self, value: Option<&str>, key: KeyPath) -> Option<u64> {
        self.problems.size(value, key)
    }

    fn socket_addr(&mut self, text: &str, key: KeyPath) -> Option<SocketAddr> {
        text.parse()
            .map_err(|_| {
                self.problem(
                    key,
                    format!("invalid listen address `{text}`: expected ip:port, e.g. \"0.0.0.0:8080\" or \"[::]:8080\""),
                )
            })
            .ok()
    }

    fn read_file(&mut self, relative: &str, key: KeyPath) -> Option<Vec<u8>> {
        let path = resolve_path(self.base_dir, relative);
        std::fs::read(&path)
            .map_err(|e| self.problem(key, format!("cannot read `{}`: {e}", path.display())))
            .ok()
    }

    fn server(&mut self, s: &ServerSection, admin: Option<&str>, root: &KeyPath) -> ServerSettings {
        let key = root.key("server");
        let listen_texts = s
            .listen
            .clone()
            .unwrap_or_else(|| vec![DEFAULT_LISTEN.into()]);
        if listen_texts.is_empty() {
            self.problem(key.key("listen"), "at least one listen address is required");
        }
        let listen = listen_texts
            .iter()
            .enumerate()
            .filter_map(|(i, text)| self.socket_addr(text, key.key("listen").index(i)))
            .collect();
        let admin_listen = self
            .socket_addr(
                admin.unwrap_or(DEFAULT_ADMIN_LISTEN),
                root.key("admin").key("listen"),
            )
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9091)));
        let threads = s.threads.unwrap_or_else(default_threads);
        if threads == 0 || threads > 1024 {
            self.problem(
                key.key("threads"),
                format!("threads must be between 1 and 1024, got {threads}"),
            );
        }
        ServerSettings {
            listen,
            admin_listen,
            threads: threads.clamp(1, 1024),
            grace_period: self.duration(
                s.grace_period.as_deref(),
                Duration::from_secs(10),
                key.key("grace_period"),
            ),
            shutdown_timeout: self.duration(
                s.shutdown_timeout.as_deref(),
                Duration::from_secs(5),
                key.key("shutdown_timeout"),
            ),
            upstream_pool_size: s.upstream_pool_size.unwrap_or(128),
            upgrade_sock: self.upgrade_sock(s.upgrade_sock.as_deref(), key.key("upgrade_sock")),
        }
    }

    /// The upgrade socket's path; its directory must exist (the new process binds it there).
    fn upgrade_sock(&mut self, text: Option<&str>, key: KeyPath) -> Option<PathBuf> {
        let path = resolve_path(self.base_dir, text?);
        let usable = path.file_name().is_some()
            && path.to_str().is_some()
            && path
                .parent()
                .is_some_and(|dir| dir.as_os_str().is_empty() || dir.is_dir());
        if !usable {
            self.problem(
                key,
                format!(
                    "`{}` is not a socket path in an existing directory",
                    path.display()
                ),
            );
            return None;
        }
        Some(path)
    }

    fn health_path(&mut self, s: &ServerSection, key: &KeyPath) -> Option<String> {
        match s.health_path.as_deref() {
            None => Some("/healthz".into()),
            Some("") => None,
            Some(path) if path.starts_with('/') => Some(path.into()),
            Some(path) => {
                self.problem(
                    key.key("health_path"),
                    format!("health path `{path}` must start with '/' (or be \"\" to turn it off)"),
                );
                None
            }
        }
    }

    fn unknown_host(&mut self, s: &ServerSection, key: &KeyPath) -> UnknownHostAnswer {
        match &s.unknown_host {
            None => UnknownHostAnswer::Close,
            Some(StatusOrWord::Word(word)) if word == "close" => UnknownHostAnswer::Close,
            Some(StatusOrWord::Status(code)) if (400..=599).contains(code) => {
                UnknownHostAnswer::Status(*code)
            }
            Some(other) => {
                self.problem(key.key("unknown_host"), format!("expected \"close\" or a status from 400 to 599 (e.g. 421, 404), got {other:?}"));
                UnknownHostAnswer::Close
            }
        }
    }

    fn resolver(&mut self, r: &ResolverSection, key: &KeyPath) -> ResolverSettings {
        let defaults = ResolverSettings::default();
        let nameservers = match &r.nameservers {
            None => defaults.nameservers.clone(),
            Some(list) => {
                if list.is_empty() {
                    self.problem(
                        key.key("nameservers"),
                        "at least one nameserver is required",
                    );
                }
                list.iter()
                    .enumerate()
                    .filter_map(|(i, text)| match parse_nameserver(text) {
                        Some(addr) => Some(addr),
                        None => {
                            self.problem(key.key("nameservers").index(i), format!("invalid nameserver `{text}`: expected an IP address, optionally with :port"));
                            None
                        }
                    })
                    .collect()
            }
        };
        let settings = ResolverSettings {
            nameservers,
            min_ttl: self.duration(r.min_ttl.as_deref(), defaults.min_ttl, key.key("min_ttl")),
            max_ttl: self.duration(r.max_ttl.as_deref(), defaults.max_ttl, key.key("max_ttl")),
            timeout: self.duration(r.timeout.as_deref(), defaults.timeout, key.key("timeout")),
            retry_interval: self.duration(
                r.retry_interval.as_deref(),
                defaults.retry_interval,
                key.key("retry_interval"),
            ),
        };
        if settings.min_ttl > settings.max_ttl {
            self.problem(key.key("min_ttl"), "min_ttl is larger than max_ttl");
        }
        settings
    }

    fn upstreams(
        &mut self,
        all: &BTreeMap<String, UpstreamSection>,
        key: &KeyPath,
    ) -> BTreeMap<String, Arc<Upstream>> {
        let mut slots: HashMap<String, Arc<AddrSlot>> = HashMap::new();
        let mut out = BTreeMap::new();
        for (name, section) in all {
            let key = key.key(name);
            if !is_valid_name(name) {
                self.problem(
                    key.clone(),
                    format!("invalid upstream name `{name}`: use letters, digits, '-' and '_'"),
                );
            }
            if let Some(upstream) = self.upstream(name, section, &key, &mut slots) {
                out.insert(name.clone(), Arc::new(upstream));
            }
        }
        out
    }

    fn upstream(
        &mut self,
        name: &str,
        u: &UpstreamSection,
        key: &KeyPath,
        slots: &mut HashMap<String, Arc<AddrSlot>>,
    ) -> Option<Upstream> {
        let (host, port) = match parse_host_port(&u.address) {
            Ok(parts) => parts,
            Err(e) => {
                self.problem(key.key("address"), e);
                return None;
            }
        };
        let tls = self.upstream_tls(u, &host, key);
        let host_header = match u.host_header.as_deref() {
            Some(text) => HostHeader::parse(text)
                .map_err(|e| self.problem(key.key("host_header"), e))
                .ok()?,
            None => HostHeader::Fixed(default_host_header(&host, port, u.tls)),
        };
        let defaults = UpstreamTimeouts::default();
        let timeouts = UpstreamTimeouts {
            connect: self.duration(
                u.connect_timeout.as_deref(),
                defaults.connect,
                key.key("connect_timeout"),
            ),
            read: self.duration(
                u.read_timeout.as_deref(),
                defaults.read,
                key.key("read_timeout"),
            ),
            write: self.duration(
                u.write_timeout.as_deref(),
                defaults.write,
                key.key("write_timeout"),
            ),
            idle: self.duration(
                u.idle_timeout.as_deref(),
                defaults.idle,
                key.key("idle_timeout"),
            ),
        };
        let addrs = match host.parse::<IpAddr>() {
            Ok(ip) => Arc::new(AddrSlot::fixed(vec![ip])),
            Err(_) => slots.entry(host.clone()).or_default().clone(),
        };
        Some(Upstream::new(
            name.to_string(),
            host,
            port,
            tls,
            host_header,
            timeouts,
            addrs,
        ))
    }

    fn upstream_tls(
        &mut self,
        u: &UpstreamSection,
        host: &str,
        key: &KeyPath,
    ) -> Option<UpstreamTls> {
        if !u.tls {
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
            verify: u.verify.unwrap_or(true),
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

    fn sites(
        &mut self,
        all: &BTreeMap<String, SiteSection>,
        upstreams: &BTreeMap<String, Arc<Upstream>>,
        key: &KeyPath,
    ) -> HostRouter {
        let mut router = HostRouter::default();
        let mut owners: HashMap<String, String> = HashMap::new();
        for (name, section) in all {
            let key = key.key(name);
            if !is_valid_name(name) {
                self.problem(
                    key.clone(),
                    format!("invalid site name `{name}`: use letters, digits, '-' and '_'"),
                );
            }
            let hosts = self.site_hosts(name, section, &key, &mut owners);
            let Some(site) = self.site(name, hosts.clone(), section, upstreams, &key) else {
                continue;
            };
            let site = Arc::new(site);
            for host in &hosts {
                router.insert(host, site.clone());
            }
        }
        router
    }

    fn site_hosts(
        &mut self,
        site: &str,
        s: &SiteSection,
        key: &KeyPath,
        owners: &mut HashMap<String, String>,
    ) -> Vec<String> {
        if s.hosts.is_empty() {
            self.problem(key.key("hosts"), "a site needs at least one host");
        }
        let mut hosts = Vec::new();
        for (i, raw) in s.hosts.iter().enumerate() {
            let key = key.key("hosts").index(i);
            let host = raw.trim_end_matches('.').to_ascii_lowercase();
            let name_part = host.strip_prefix("*.").unwrap_or(&host);
            if !is_valid_dns_name(name_part) && name_part.parse::<IpAddr>().is_err() {
                self.problem(key, format!("invalid host `{raw}`: expected a name like \"docs.example.com\" or a wildcard like \"*.example.com\" (no port, no path)"));
                continue;
            }
            if let Some(other) = owners.insert(host.clone(), site.to_string()) {
                self.problem(
                    key,
                    format!("duplicate host `{host}`: already served by site `{other}`"),
                );
                continue;
            }
            hosts.push(host);
        }
        hosts
    }

    fn site(
        &mut self,
        name: &str,
        hosts: Vec<String>,
        s: &SiteSection,
        upstreams: &BTreeMap<String, Arc<Upstream>>,
        key: &KeyPath,
    ) -> Option<Site> {
        let max_body_size = self
            .size(s.max_body_size.as_deref(), key.key("max_body_size"))
            .unwrap_or(DEFAULT_MAX_BODY_SIZE);
        let error_pages = self.error_pages(&s.error_pages, &key.key("error_pages"));
        let plugins = self.plugin_list(&s.plugins, &key.key("plugins"));
        crate::cache::check_site_policy(s.cache.as_ref(), &key.key("cache"), self.problems);
        if s.locations.is_empty() {
            self.problem(key.key("locations"), "a site needs at least one location, e.g. [[sites.NAME.locations]] match = \"/\" proxy = \"UPSTREAM\"");
        }
        let locations = s
            .locations
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let key = key.key("locations").index(i);
                let location = self.location(i, l, upstreams, &key)?;
                let cache = crate::cache::compile_policy(
                    s.cache.as_ref(),
                    l.cache.as_ref(),
                    &key.key("cache"),
                    self.problems,
                );
                Some(Location { cache, ..location })
            })
            .map(Arc::new)
            .collect();
        let locations = LocationTable::new(locations)
            .map_err(|(i, e)| self.problem(key.key("locations").index(i).key("match"), e))
            .ok()?;
        Some(Site {
            name: name.to_string(),
            hosts,
            locations,
            max_body_size,
            error_pages,
            plugins,
        })
    }

    fn error_pages(
        &mut self,
        pages: &BTreeMap<String, String>,
        key: &KeyPath,
    ) -> HashMap<u16, Bytes> {
        let mut out = HashMap::new();
        for (status, path) in pages {
            let key = key.key(status);
            let code = match status.parse::<u16>() {
                Ok(code) if (400..=599).contains(&code) => code,
                _ => {
                    self.problem(
                        key,
                        format!("error page key `{status}` must be a status from 400 to 599"),
                    );
                    continue;
                }
            };
            if let Some(body) = self.read_file(path, key) {
                out.insert(code, Bytes::from(body));
            }
        }
        out
    }

    fn location(
        &mut self,
        index: usize,
        l: &LocationSection,
        upstreams: &BTreeMap<String, Arc<Upstream>>,
        key: &KeyPath,
    ) -> Option<Location> {
        let pattern = LocationPattern::parse(&l.pattern)
            .map_err(|e| self.problem(key.key("match"), e))
            .ok();
        let action = self.action(l, upstreams, key);
        let host_header = l.host_header.as_deref().and_then(|text| {
            HostHeader::parse(text)
                .map_err(|e| self.problem(key.key("host_header"), e))
                .ok()
        });
        let max_body_size = self.size(l.max_body_size.as_deref(), key.key("max_body_size"));
        let plugins = self.plugin_list(&l.plugins, &key.key("plugins"));
        Some(Location {
            index,
            pattern_text: l.pattern.clone(),
            pattern: pattern?,
            action: action?,
            host_header,
            max_body_size,
            plugins,
            site_plugins: l.site_plugins.unwrap_or(true),
            cache: None,
        })
    }

    fn action(
        &mut self,
        l: &LocationSection,
        upstreams: &BTreeMap<String, Arc<Upstream>>,
        key: &KeyPath,
    ) -> Option<Action> {
        let count = [l.proxy.is_some(), l.respond.is_some(), l.redirect.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if count == 0 && !l.plugins.is_empty() {
            // A plugins-only location (e.g. static files): when no plugin answers, 404.
            return Some(Action::Return {
                status: 404,
                content_type: "text/plain; charset=utf-8".into(),
                body: Bytes::from_static(b"not found\n"),
            });
        }
        if count != 1 {
            self.problem(key.clone(), "a location needs exactly one action: `proxy = \"UPSTREAM\"`, `return = { ... }` or `redirect = { ... }` (or only plugins)");
            return None;
        }
        if let Some(name) = &l.proxy {
            return match upstreams.get(name) {
                Some(upstream) => Some(Action::Proxy(upstream.clone())),
                None => {
                    let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
                    self.problem(
                        key.key("proxy"),
                        format!(
                            "unknown upstream `{name}` (defined: {})",
                            list_or_none(&known)
                        ),
                    );
                    None
                }
            };
        }
        if let Some(r) = &l.respond {
            let status = r.status.unwrap_or(200);
            if !(100..=599).contains(&status) {
                self.problem(
                    key.key("return").key("status"),
                    format!("invalid status {status}"),
                );
                return None;
            }
            return Some(Action::Return {
                status,
                content_type: r
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "text/plain; charset=utf-8".into()),
                body: Bytes::from(r.body.clone()),
            });
        }
        let r = l.redirect.as_ref()?;
        let status = r.status.unwrap_or(302);
        if ![301, 302, 303, 307, 308].contains(&status) {
            self.problem(
                key.key("redirect").key("status"),
                format!("redirect status must be 301, 302, 303, 307 or 308, got {status}"),
            );
            return None;
        }
        let target = RedirectTarget::parse(&r.to)
            .map_err(|e| self.problem(key.key("redirect").key("to"), e))
            .ok()?;
        Some(Action::Redirect { status, target })
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `relative` resolved against the config file's directory (absolute paths unchanged).
pub(crate) fn resolve_path(base: &Path, relative: &str) -> PathBuf {
    let path = Path::new(relative);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

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

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}
