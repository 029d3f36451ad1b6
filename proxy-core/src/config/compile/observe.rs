//! `[admin]` and `[access_log]`: the admin listener and the JSON access log.

use std::path::PathBuf;

use super::Compiler;
use crate::config::error::KeyPath;
use crate::config::file::{
    AccessLogSection, AdminSection, DEFAULT_ACCESS_LOG_ENABLED, DEFAULT_ACCESS_LOG_PATH,
    DEFAULT_ACCESS_LOG_QUEUE_SIZE, DEFAULT_ADMIN_LISTEN, DEFAULT_METRICS,
    DEFAULT_REDACT_QUERY_PARAMS,
};
use crate::model::AdminSettings;
use crate::observe::{AccessLogSettings, AccessLogTarget, Redactor};

impl Compiler<'_> {
    pub(super) fn admin(&mut self, s: &AdminSection, key: &KeyPath) -> AdminSettings {
        let listen_text = s.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN);
        let listen = self
            .socket_addr(listen_text, key.key("listen"))
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 9091)));
        let token_env = s
            .token_env
            .clone()
            .filter(|name| self.env_var_name(name, key.key("token_env")));
        AdminSettings {
            listen,
            token_env,
            tailscaled_socket: s.tailscaled_socket.as_ref().map(PathBuf::from),
            metrics: s.metrics.unwrap_or(DEFAULT_METRICS),
        }
    }

    pub(super) fn access_log(&mut self, s: &AccessLogSection, key: &KeyPath) -> AccessLogSettings {
        let queue_size = s.queue_size.unwrap_or(DEFAULT_ACCESS_LOG_QUEUE_SIZE);
        if queue_size == 0 {
            self.problem(key.key("queue_size"), "queue_size must be at least 1");
        }
        let enabled = s.enabled.unwrap_or(DEFAULT_ACCESS_LOG_ENABLED);
        let target = match s.path.as_deref().unwrap_or(DEFAULT_ACCESS_LOG_PATH) {
            _ if !enabled => None,
            "-" | "stdout" => Some(AccessLogTarget::Stdout),
            path => Some(AccessLogTarget::File(self.path(path))),
        };
        let redactor = match &s.redact_query_params {
            Some(list) => Redactor::new(list.iter().cloned()),
            None => Redactor::new(DEFAULT_REDACT_QUERY_PARAMS.iter().map(|p| p.to_string())),
        };
        AccessLogSettings {
            target,
            queue_size: queue_size.max(1),
            redactor,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{load_str, ConfigBuilder};
    use crate::observe::AccessLogTarget;
    use std::path::Path;

    #[test]
    fn defaults_stdout_log_and_no_admin_token() {
        let config = ConfigBuilder::new().build().unwrap();
        assert_eq!(config.access_log.target, Some(AccessLogTarget::Stdout));
        assert_eq!(config.admin.token_env, None);
        assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9091");
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
        assert_eq!(built.admin, parsed.admin);
        assert_eq!(built.access_log, parsed.access_log);
        assert_eq!(
            parsed.access_log.target,
            Some(AccessLogTarget::File("/etc/edge/logs/access.log".into()))
        );
        let off = ConfigBuilder::new().access_log_off().build().unwrap();
        assert_eq!(off.access_log.target, None);
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
