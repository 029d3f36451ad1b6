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
        },
        access_log: AccessLogSettings {
            target,
            queue_size: queue_size.max(1),
            redactor,
        },
    }
}
