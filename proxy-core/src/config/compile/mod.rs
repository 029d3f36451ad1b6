//! Plain config data -> the validated runtime model. Every check lives in this module, one
//! file per section, all on one [`Compiler`] that collects every problem at the key that holds
//! it, so `check` reports them all at once rather than one per run.
//!
//! Compilation is pure: it reads the files the config names (error pages, CA files, deny
//! lists) but starts nothing and watches nothing. What runs in the background (the resolver,
//! deny-list watching) is started by [`crate::EdgeServices`] from the compiled model.

mod auth;
mod ban;
mod cache;
mod client;
mod compress;
mod fleet;
mod guard;
mod observe;
mod server;
mod site;
mod tailnet;
mod telemetry;
mod upstream;

use http::HeaderName;
use ipnet::IpNet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{KeyPath, Problems};
use super::file::ConfigFile;
use crate::model::RuntimeConfig;
use crate::plugin::PluginRegistry;
use crate::route::Routes;

/// Compiles plain config data; `base_dir` resolves relative file paths and `plugins` builds
/// the plugins the config attaches.
pub(crate) fn compile(
    file: &ConfigFile,
    base_dir: &Path,
    plugins: &PluginRegistry,
) -> Result<RuntimeConfig, Problems> {
    let mut c = Compiler {
        base_dir,
        plugins,
        problems: Problems::default(),
        watched_lists: parking_lot::Mutex::default(),
        htpasswd_files: Vec::new(),
        forward_auths: Vec::new(),
    };
    let root = KeyPath::root();
    let server = c.server(&file.server, &root.key("server"));
    let routing = c.routing(&file.server, &root.key("server"));
    let admin = c.admin(&file.admin, &root.key("admin"));
    let access_log = c.access_log(&file.access_log, &root.key("access_log"));
    let resolver = c.resolver(&file.resolver, &root.key("resolver"));
    let offline_sites = upstream::offline_upstreams(&file.sites);
    let upstreams = c.upstreams(
        &file.upstreams,
        &offline_sites,
        server.client.keep_header_case,
        &root.key("upstreams"),
    );
    let tailnet = c.tailnet(
        file.tailnet.as_ref(),
        &upstreams,
        &root.key("upstreams"),
        &root.key("tailnet"),
    );
    let cache = c.cache_settings(file.cache.as_ref(), &root.key("cache"));
    let client = c.client(&file.client, &root.key("client"));
    let fleet = file
        .redis
        .as_ref()
        .and_then(|r| c.redis(r, &root.key("redis")));
    let zones = c.zones(
        &file.rate_limits,
        file.redis.is_some(),
        &root.key("rate_limits"),
    );
    let connection_zones =
        c.connection_zones(&file.connection_limits, &root.key("connection_limits"));
    let mut telemetry = c.telemetry(&file.telemetry, admin.metrics, &root.key("telemetry"));
    if let (None, Some(fleet)) = (&file.telemetry.labels, &fleet) {
        fleet::label_the_machine(&mut telemetry, fleet);
    }
    let (bans, ban_settings) = c.bans(&file.bans, &root.key("bans"));
    let refs = guard::ZoneRefs {
        rate: guard::ZoneTable {
            compiled: &zones,
            declared: file.rate_limits.keys().map(String::as_str).collect(),
            kind: "rate limit",
        },
        connection: guard::ZoneTable {
            compiled: &connection_zones,
            declared: file.connection_limits.keys().map(String::as_str).collect(),
            kind: "connection limit",
        },
    };
    let (router, mut deny_lists) = c.sites(&file.sites, &upstreams, &refs, &root.key("sites"));
    // Plugins' IP list files are re-read like deny lists.
    deny_lists.append(&mut c.watched_lists.lock());
    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    Ok(RuntimeConfig {
        server,
        admin,
        access_log,
        resolver,
        cache,
        client,
        routes: Routes::new(router, routing),
        deny_lists,
        htpasswd_files: c.htpasswd_files,
        forward_auths: c.forward_auths,
        upstreams,
        zones,
        connection_zones,
        telemetry,
        tailnet,
        fleet,
        bans,
        ban_settings,
    })
}

/// The one compiler: where the config file's directory, the plugin registry and the problems
/// found so far live while each section is compiled (`impl Compiler` blocks in the section
/// files).
pub(super) struct Compiler<'a> {
    base_dir: &'a Path,
    plugins: &'a PluginRegistry,
    problems: Problems,
    /// IP list files plugins read ([`crate::plugin::PluginSetup::ip_list_file`]), for the
    /// running edge to re-read when they change.
    watched_lists: parking_lot::Mutex<Vec<std::sync::Arc<crate::access::DenyList>>>,
    /// The htpasswd files of `auth = { basic = { } }`, one per path, for the running edge to
    /// re-read when they change.
    htpasswd_files: Vec<std::sync::Arc<crate::auth::HtpasswdFile>>,
    /// The auth services of `auth = { forward = { } }`, whose names the running edge keeps
    /// resolved.
    forward_auths: Vec<std::sync::Arc<crate::auth::ForwardAuth>>,
}

impl Compiler<'_> {
    fn problem(&mut self, key: KeyPath, message: impl Into<String>) {
        self.problems.push(key, message);
    }

    /// A duration key: its value, or `default` (config syntax) when unset. A malformed value
    /// is reported and the default used, so compilation goes on to find other problems.
    fn duration(&mut self, value: Option<&str>, default: &str, key: KeyPath) -> Duration {
        let fallback = super::units::parse_duration(default).unwrap_or_default();
        self.problems
            .duration(Some(value.unwrap_or(default)), fallback, key)
    }

    /// A duration key that must be more than zero.
    fn positive_duration(&mut self, value: Option<&str>, default: &str, key: KeyPath) -> Duration {
        let duration = self.duration(value, default, key.clone());
        if duration.is_zero() {
            self.problem(key, "must be longer than 0s");
        }
        duration
    }

    /// A size key in bytes: its value, or `default` (config syntax) when unset.
    fn size(&mut self, value: Option<&str>, default: &str, key: KeyPath) -> u64 {
        let fallback = super::units::parse_size(default).unwrap_or_default();
        self.problems
            .size(Some(value.unwrap_or(default)), key)
            .unwrap_or(fallback)
    }

    /// A size key that must fit in memory (`usize`).
    fn memory_size(&mut self, value: Option<&str>, default: &str, key: KeyPath) -> usize {
        let size = self.size(value, default, key.clone());
        usize::try_from(size).unwrap_or_else(|_| {
            self.problem(key, format!("size `{size}` is too large"));
            usize::MAX
        })
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

    /// `relative` resolved against the config file's directory (absolute paths unchanged).
    fn path(&self, relative: &str) -> PathBuf {
        resolve_path(self.base_dir, relative)
    }

    fn read_file(&mut self, relative: &str, key: KeyPath) -> Option<Vec<u8>> {
        let path = self.path(relative);
        std::fs::read(&path)
            .map_err(|e| self.problem(key, format!("cannot read `{}`: {e}", path.display())))
            .ok()
    }

    fn header_name(&mut self, name: &str, key: KeyPath) -> Option<HeaderName> {
        HeaderName::try_from(name)
            .map_err(|_| self.problem(key, format!("invalid header name `{name}`")))
            .ok()
    }

    fn header_names(&mut self, names: &[impl AsRef<str>], key: &KeyPath) -> Vec<HeaderName> {
        names
            .iter()
            .enumerate()
            .filter_map(|(i, name)| self.header_name(name.as_ref(), key.index(i)))
            .collect()
    }

    fn cidr(&mut self, text: &str, key: KeyPath) -> Option<IpNet> {
        let net = crate::access::parse_net(text.trim());
        if net.is_none() {
            self.problem(
                key,
                format!(
                    "invalid IP or CIDR `{text}`: expected e.g. \"172.16.0.0/12\" or \"192.0.2.1\""
                ),
            );
        }
        net
    }

    /// A status code key, which must lie in `range`; `what` says what the range is for.
    fn status(
        &mut self,
        value: Option<u16>,
        default: u16,
        range: std::ops::RangeInclusive<u16>,
        what: &str,
        key: KeyPath,
    ) -> u16 {
        let status = value.unwrap_or(default);
        if !range.contains(&status) {
            self.problem(key, format!("{what}, got {status}"));
            return default;
        }
        status
    }

    /// A name of the config's own (`[upstreams.NAME]`, `[sites.NAME]`).
    fn check_name(&mut self, kind: &str, name: &str, key: &KeyPath) {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            self.problem(
                key.clone(),
                format!("invalid {kind} name `{name}`: use letters, digits, '-' and '_'"),
            );
        }
    }
}

/// `relative` resolved against `base` (absolute paths unchanged).
pub(crate) fn resolve_path(base: &Path, relative: &str) -> PathBuf {
    let path = Path::new(relative);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// `names` joined for an error message, or "none".
fn list_or_none<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.into_iter().collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
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

#[cfg(test)]
mod tests {
    use super::super::file::*;
    use super::super::units::{parse_duration, parse_size};

    #[test]
    fn every_default_in_config_syntax_parses() {
        for text in [
            DEFAULT_GRACE_PERIOD,
            DEFAULT_SHUTDOWN_TIMEOUT,
            DEFAULT_MIN_TTL,
            DEFAULT_MAX_TTL,
            DEFAULT_RESOLVER_TIMEOUT,
            DEFAULT_RETRY_INTERVAL,
            DEFAULT_CONNECT_TIMEOUT,
            DEFAULT_READ_TIMEOUT,
            DEFAULT_WRITE_TIMEOUT,
            DEFAULT_IDLE_TIMEOUT,
            DEFAULT_CACHE_INACTIVE,
            DEFAULT_CACHE_LOCK_TIMEOUT,
            DEFAULT_STALE_WHILE_REVALIDATE,
            DEFAULT_STALE_IF_ERROR,
            DEFAULT_FORWARD_AUTH_TIMEOUT,
            DEFAULT_FORWARD_AUTH_CACHE,
        ] {
            assert!(parse_duration(text).is_ok(), "{text}");
        }
        for (_, ttl) in DEFAULT_VALID {
            assert!(parse_duration(ttl).is_ok(), "{ttl}");
        }
        for text in [
            DEFAULT_MAX_BODY_SIZE,
            DEFAULT_CACHE_MAX_SIZE,
            DEFAULT_CACHE_MAX_OBJECT_SIZE,
            DEFAULT_CACHE_DISK_MAX_SIZE,
        ] {
            assert!(parse_size(text).is_ok(), "{text}");
        }
    }
}
