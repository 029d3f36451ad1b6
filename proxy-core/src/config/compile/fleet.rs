//! `[redis]`: the Redis a fleet of machines shares. The URL and password come from
//! environment variables named here, read now so that `check` and a reload refuse a missing
//! or malformed one; messages name the variable, never its value.

use super::Compiler;
use crate::config::error::KeyPath;
use crate::config::file::{
    RedisSection, DEFAULT_REDIS_COMMAND_TIMEOUT, DEFAULT_REDIS_CONNECT_TIMEOUT,
    DEFAULT_REDIS_POOL_SIZE, DEFAULT_REDIS_PREFIX, DEFAULT_REDIS_SYNC_INTERVAL,
};
use crate::fleet::FleetSettings;
use crate::telemetry::TelemetrySettings;

impl Compiler<'_> {
    pub(super) fn redis(&mut self, r: &RedisSection, key: &KeyPath) -> Option<FleetSettings> {
        let connect_timeout = self.positive_duration(
            r.connect_timeout.as_deref(),
            DEFAULT_REDIS_CONNECT_TIMEOUT,
            key.key("connect_timeout"),
        );
        let command_timeout = self.positive_duration(
            r.command_timeout.as_deref(),
            DEFAULT_REDIS_COMMAND_TIMEOUT,
            key.key("command_timeout"),
        );
        let sync_interval = self.positive_duration(
            r.sync_interval.as_deref(),
            DEFAULT_REDIS_SYNC_INTERVAL,
            key.key("sync_interval"),
        );
        let pool_size = r.pool_size.unwrap_or(DEFAULT_REDIS_POOL_SIZE);
        if !(1..=64).contains(&pool_size) {
            self.problem(
                key.key("pool_size"),
                format!("pool_size must be from 1 to 64, got {pool_size}"),
            );
        }
        let prefix = r.prefix.as_deref().unwrap_or(DEFAULT_REDIS_PREFIX);
        let valid_prefix = !prefix.is_empty()
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        if !valid_prefix {
            self.problem(
                key.key("prefix"),
                format!("invalid prefix `{prefix}`: use letters, digits, '-', '_', '.' and ':'"),
            );
        }
        let instance = match &r.instance {
            Some(name) if name.trim().is_empty() || name.len() > 128 => {
                self.problem(key.key("instance"), "instance must be 1 to 128 characters");
                String::new()
            }
            Some(name) => name.trim().to_owned(),
            None => default_instance(),
        };
        let url = self.redis_url(&r.url_env, key.key("url_env"));
        let password = match &r.password_env {
            Some(name) => self.secret_env(name, key.key("password_env")),
            None => Some(None),
        };
        let ca_pem = match (&r.ca_file, &url) {
            (Some(file), Some(url)) => self.redis_ca(file, url, &r.url_env, key.key("ca_file")),
            _ => Some(None),
        };
        Some(FleetSettings {
            url_env: r.url_env.clone(),
            url: url?,
            password: password?,
            ca_file: r.ca_file.clone(),
            ca_pem: ca_pem?,
            connect_timeout,
            command_timeout,
            pool_size: pool_size.clamp(1, 64),
            sync_interval,
            prefix: prefix.to_owned(),
            instance,
        })
    }

    /// The URL in the environment variable `name`, if it is a `redis://` or `rediss://` one.
    fn redis_url(&mut self, name: &str, key: KeyPath) -> Option<String> {
        let url = self.secret_env(name, key.clone())??;
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        if !matches!(scheme, Some("redis" | "rediss")) {
            self.problem(
                key,
                format!("${name} does not hold a redis:// or rediss:// URL"),
            );
            return None;
        }
        if redis::parse_redis_url(&url).is_none() {
            self.problem(key, format!("${name} does not hold a valid URL"));
            return None;
        }
        Some(url)
    }

    /// The CA bundle `file` to verify the Redis at `url` (from `$url_env`) against: refused
    /// for a `redis://` URL (nothing would be verified) or when the client cannot use it.
    fn redis_ca(
        &mut self,
        file: &str,
        url: &str,
        url_env: &str,
        key: KeyPath,
    ) -> Option<Option<Vec<u8>>> {
        if !url.starts_with("rediss://") {
            self.problem(
                key,
                format!("ca_file needs a rediss:// (TLS) URL; ${url_env} holds a redis:// one"),
            );
            return None;
        }
        let pem = self.ca_pem(file, key.clone())?;
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        };
        if let Err(e) = redis::Client::build_with_tls(url, certificates) {
            self.problem(key, format!("`{file}` cannot verify Redis: {e}"));
            return None;
        }
        Some(Some(pem))
    }

    /// The value of the environment variable `name` (which must be set and not empty);
    /// `None`: a problem was reported. The value is never put in a message.
    fn secret_env(&mut self, name: &str, key: KeyPath) -> Option<Option<String>> {
        if !self.env_var_name(name, key.clone()) {
            return None;
        }
        match std::env::var(name) {
            Ok(value) if !value.trim().is_empty() => Some(Some(value.trim().to_owned())),
            _ => {
                self.problem(
                    key,
                    format!("environment variable `{name}` is not set (or empty)"),
                );
                None
            }
        }
    }
}

/// In a fleet, the default `instance` label of what is pushed to the homelab names the
/// machine, not the Fly app: machines of one app would otherwise push the same series and
/// overwrite each other's. Labels set in `[telemetry]` or `[telemetry.loki]` stay.
pub(super) fn label_the_machine(telemetry: &mut TelemetrySettings, fleet: &FleetSettings) {
    let mut default = None;
    for (name, value) in telemetry.labels.iter_mut() {
        if name == "instance" {
            default = Some(std::mem::replace(value, fleet.instance.clone()));
        }
    }
    if let (Some(default), Some(loki)) = (default, telemetry.loki.as_mut()) {
        for (name, value) in loki.labels.iter_mut() {
            if name == "instance" && *value == default {
                *value = fleet.instance.clone();
            }
        }
    }
}

/// `$FLY_MACHINE_ID` (unique per Fly machine), else the host name and this process's id, so
/// that two processes on one host are two machines of the fleet.
fn default_instance() -> String {
    if let Some(id) = std::env::var("FLY_MACHINE_ID")
        .ok()
        .filter(|id| !id.trim().is_empty())
    {
        return id.trim().to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "proxy-app".to_owned());
    format!("{host}:{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use crate::config::{errors, load_str};
    use std::path::Path;

    #[test]
    fn redis_settings_compile_from_the_environment_and_never_show_the_url() {
        std::env::set_var("FLEET_TEST_URL", "redis://:s3cret@127.0.0.1:6379/0");
        let config = load_str(
            "[redis]\nurl_env = \"FLEET_TEST_URL\"\ninstance = \"fra-1\"\n",
            None,
            Path::new("."),
        )
        .unwrap();
        let fleet = config.fleet().expect("[redis] compiled");
        assert_eq!(fleet.instance(), "fra-1");
        assert_eq!(fleet.prefix(), "edge");
        assert_eq!(fleet.sync_interval(), std::time::Duration::from_millis(100));
        let shown = format!("{fleet:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("FLEET_TEST_URL"), "{shown}");
        // What is pushed to the homelab says which machine it comes from.
        assert_eq!(
            config.telemetry().labels(),
            [("instance".to_owned(), "fra-1".to_owned())]
        );
    }

    #[test]
    fn missing_or_bad_urls_and_global_zones_without_redis_are_refused() {
        let e = errors("[redis]\nurl_env = \"FLEET_TEST_UNSET_VARIABLE\"\n");
        assert!(
            e.contains("redis.url_env") && e.contains("FLEET_TEST_UNSET_VARIABLE"),
            "{e}"
        );
        std::env::set_var("FLEET_TEST_HTTP_URL", "http://user:hunter2@redis:6379");
        let e = errors("[redis]\nurl_env = \"FLEET_TEST_HTTP_URL\"\npool_size = 0\nprefix = \"a b\"\nsync_interval = \"0s\"\n");
        for key in [
            "redis.url_env",
            "redis.pool_size",
            "redis.prefix",
            "redis.sync_interval",
        ] {
            assert!(e.contains(key), "{key} missing in:\n{e}");
        }
        assert!(!e.contains("hunter2"), "{e}");
        let e = errors("[rate_limits.a]\nrate = \"1r/s\"\nscope = \"global\"\n");
        assert!(
            e.contains("rate_limits.a.scope") && e.contains("[redis]"),
            "{e}"
        );
        let e = errors("[rate_limits.a]\nrate = \"1r/s\"\nscope = \"fleet\"\n");
        assert!(e.contains("rate_limits.a.scope"), "{e}");
    }

    #[test]
    fn a_ca_file_needs_a_tls_url_and_a_certificate() {
        let ca = fake_tailnet_ca();
        std::env::set_var("FLEET_TEST_PLAIN_URL", "redis://127.0.0.1:6379");
        let e = errors(&format!(
            "[redis]\nurl_env = \"FLEET_TEST_PLAIN_URL\"\nca_file = \"{ca}\"\n"
        ));
        assert!(
            e.contains("redis.ca_file") && e.contains("rediss://"),
            "{e}"
        );
        std::env::set_var("FLEET_TEST_TLS_URL", "rediss://127.0.0.1:6380");
        let e = errors(
            "[redis]\nurl_env = \"FLEET_TEST_TLS_URL\"\nca_file = \"/nonexistent/ca.pem\"\n",
        );
        assert!(e.contains("redis.ca_file"), "{e}");
        let not_pem = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(not_pem.path(), "not a certificate\n").expect("write");
        let e = errors(&format!(
            "[redis]\nurl_env = \"FLEET_TEST_TLS_URL\"\nca_file = \"{}\"\n",
            not_pem.path().display()
        ));
        assert!(
            e.contains("redis.ca_file") && e.contains("no PEM certificate"),
            "{e}"
        );
        let config = load_str(
            &format!("[redis]\nurl_env = \"FLEET_TEST_TLS_URL\"\nca_file = \"{ca}\"\n"),
            None,
            Path::new("."),
        )
        .unwrap();
        let fleet = config.fleet().expect("[redis] compiled");
        assert!(fleet.ca_pem.as_ref().is_some_and(|pem| !pem.is_empty()));
    }

    /// The committed test CA of the workspace's fake tailnet.
    fn fake_tailnet_ca() -> String {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/tls/tailnet-ca.pem"
        )
        .to_owned()
    }
}
