//! The `[admin]` and `[access_log]` sections, compiled.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{AccessLogTarget, Redactor};
use crate::config::error::Problems;
use crate::config::file::{AccessLogSection, AdminSection};
use crate::config::KeyPath;

/// Default access-log queue, in lines: a few seconds of a busy proxy.
pub const DEFAULT_QUEUE_SIZE: usize = 8192;

/// Observability settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObserveSettings {
    /// The admin listener.
    pub admin: AdminSettings,
    /// The access log.
    pub access_log: AccessLogSettings,
}

/// `[admin]`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Where `/metrics`, `/healthz`, `/readyz` and admin actions are served.
    pub listen: SocketAddr,
    /// Environment variable holding the bearer token for admin actions; `None` disables
    /// them.
    pub token_env: Option<String>,
    /// tailscaled's LocalAPI socket; when set, `/readyz` also needs `BackendState` Running.
    pub tailscaled_socket: Option<PathBuf>,
    /// Whether metrics are recorded and served.
    pub metrics: bool,
}

/// `[access_log]`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSettings {
    /// Where lines go; `None` turns the access log off.
    pub target: Option<AccessLogTarget>,
    /// Lines queued before new ones are dropped.
    pub queue_size: usize,
    /// Redaction of logged URIs.
    pub redactor: Redactor,
}

impl Default for AccessLogSettings {
    fn default() -> Self {
        Self {
            target: Some(AccessLogTarget::Stdout),
            queue_size: DEFAULT_QUEUE_SIZE,
            redactor: Redactor::default(),
        }
    }
}

/// Compiles `[admin]` (except `listen`, compiled with the server settings) and
/// `[access_log]`.
pub(crate) fn compile_observe(
    admin: &AdminSection,
    admin_listen: SocketAddr,
    log: &AccessLogSection,
    base_dir: &Path,
    problems: &mut Problems,
) -> ObserveSettings {
    let admin_key = KeyPath::root().key("admin");
    let token_env = admin.token_env.clone().filter(|name| {
        let valid =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            problems.push(
                admin_key.key("token_env"),
                format!("`{name}` is not an environment variable name (letters, digits, '_')"),
            );
        }
        valid
    });
    let log_key = KeyPath::root().key("access_log");
    let queue_size = log.queue_size.unwrap_or(DEFAULT_QUEUE_SIZE);
    if queue_size == 0 {
        problems.push(log_key.key("queue_size"), "queue_size must be at least 1");
    }
    let target = match (log.enabled.unwrap_or(true), log.path.as_deref()) {
        (false, _) => None,
        (true, None | Some("-") | Some("stdout")) => Some(AccessLogTarget::Stdout),
        (true, Some(path)) => Some(AccessLogTarget::File(base_dir.join(path))),
    };
    let redactor = match &log.redact_query_params {
        Some(list) => Redactor::new(list.iter().cloned()),
        None => Redactor::default(),
    };
    ObserveSettings {
        admin: AdminSettings {
            listen: admin_listen,
            token_env,
            tailscaled_socket: admin.tailscaled_socket.as_ref().map(PathBuf::from),
            metrics: admin.metrics.unwrap_or(true),
        },
        access_log: AccessLogSettings {
            target,
            queue_size: queue_size.max(1),
            redactor,
        },
    }
}

#[cfg(test)]
mod tests {
    use crate::builder::ConfigBuilder;
    use crate::config::load_str;
    use crate::observe::AccessLogTarget;
    use std::path::Path;

    #[test]
    fn defaults_stdout_log_and_no_admin_token() {
        let config = ConfigBuilder::new().build().unwrap();
        assert_eq!(
            config.observe.access_log.target,
            Some(AccessLogTarget::Stdout)
        );
        assert_eq!(config.observe.admin.token_env, None);
        assert_eq!(config.observe.admin.listen.to_string(), "127.0.0.1:9091");
    }

    #[test]
    fn builder_and_toml_set_the_same_settings() {
        let built = ConfigBuilder::new()
            .base_dir("/etc/edge")
            .admin_token_env("EDGE_TOKEN")
            .tailscaled_socket("/run/ts.sock")
            .access_log_path("logs/access.log")
            .build()
            .unwrap();
        let toml = "[admin]\ntoken_env = \"EDGE_TOKEN\"\ntailscaled_socket = \"/run/ts.sock\"\n\
                    [access_log]\npath = \"logs/access.log\"\n";
        let parsed = load_str(toml, None, Path::new("/etc/edge")).unwrap();
        assert_eq!(built.observe, parsed.observe);
        assert_eq!(
            parsed.observe.access_log.target,
            Some(AccessLogTarget::File("/etc/edge/logs/access.log".into()))
        );
        let off = ConfigBuilder::new().access_log_off().build().unwrap();
        assert_eq!(off.observe.access_log.target, None);
    }

    #[test]
    fn bad_values_are_reported_at_their_keys() {
        let toml = "[admin]\ntoken_env = \"NOT A NAME\"\n[access_log]\nqueue_size = 0\n";
        let errors = load_str(toml, None, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(errors.contains("admin.token_env"), "{errors}");
        assert!(errors.contains("access_log.queue_size"), "{errors}");
        assert!(load_str("[access_log]\nbogus = 1\n", None, Path::new(".")).is_err());
    }
}
