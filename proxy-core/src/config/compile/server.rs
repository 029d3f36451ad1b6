//! `[server]`: listeners, threads, shutdown timings, and the routing keys (health path,
//! unknown hosts).

use std::path::PathBuf;

use super::Compiler;
use crate::config::error::KeyPath;
use crate::config::file::{
    ServerSection, StatusOrWord, DEFAULT_GRACE_PERIOD, DEFAULT_HEALTH_PATH, DEFAULT_LISTEN,
    DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_UNKNOWN_HOST, DEFAULT_UPSTREAM_POOL_SIZE,
};
use crate::model::ServerSettings;
use crate::route::{RoutingSettings, UnknownHostAnswer};

impl Compiler<'_> {
    pub(super) fn server(&mut self, s: &ServerSection, key: &KeyPath) -> ServerSettings {
        let default_listen: Vec<String> = DEFAULT_LISTEN.iter().map(|a| a.to_string()).collect();
        let listen_texts = s.listen.as_ref().unwrap_or(&default_listen);
        if listen_texts.is_empty() {
            self.problem(key.key("listen"), "at least one listen address is required");
        }
        let listen = listen_texts
            .iter()
            .enumerate()
            .filter_map(|(i, text)| self.socket_addr(text, key.key("listen").index(i)))
            .collect();
        let threads = s.threads.unwrap_or_else(default_threads);
        if threads == 0 || threads > 1024 {
            self.problem(
                key.key("threads"),
                format!("threads must be between 1 and 1024, got {threads}"),
            );
        }
        ServerSettings {
            listen,
            threads: threads.clamp(1, 1024),
            grace_period: self.duration(
                s.grace_period.as_deref(),
                DEFAULT_GRACE_PERIOD,
                key.key("grace_period"),
            ),
            shutdown_timeout: self.duration(
                s.shutdown_timeout.as_deref(),
                DEFAULT_SHUTDOWN_TIMEOUT,
                key.key("shutdown_timeout"),
            ),
            upstream_pool_size: s.upstream_pool_size.unwrap_or(DEFAULT_UPSTREAM_POOL_SIZE),
            upgrade_sock: self.upgrade_sock(s.upgrade_sock.as_deref(), key.key("upgrade_sock")),
        }
    }

    /// The upgrade socket's path; its directory must exist (the new process binds it there).
    fn upgrade_sock(&mut self, text: Option<&str>, key: KeyPath) -> Option<PathBuf> {
        let path = self.path(text?);
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

    /// The `[server]` keys that decide how requests are routed before any site matches.
    pub(super) fn routing(&mut self, s: &ServerSection, key: &KeyPath) -> RoutingSettings {
        RoutingSettings {
            health_path: self.health_path(s.health_path.as_deref(), key.key("health_path")),
            unknown_host: self.unknown_host(s.unknown_host.as_ref(), key.key("unknown_host")),
        }
    }

    fn health_path(&mut self, value: Option<&str>, key: KeyPath) -> Option<String> {
        match value.unwrap_or(DEFAULT_HEALTH_PATH) {
            "" => None,
            path if path.starts_with('/') => Some(path.into()),
            path => {
                self.problem(
                    key,
                    format!("health path `{path}` must start with '/' (or be \"\" to turn it off)"),
                );
                None
            }
        }
    }

    fn unknown_host(&mut self, value: Option<&StatusOrWord>, key: KeyPath) -> UnknownHostAnswer {
        let default = StatusOrWord::Word(DEFAULT_UNKNOWN_HOST.into());
        match value.unwrap_or(&default) {
            StatusOrWord::Word(word) if word == "close" => UnknownHostAnswer::Close,
            StatusOrWord::Status(code) if (400..=599).contains(code) => {
                UnknownHostAnswer::Status(*code)
            }
            other => {
                self.problem(key, format!("expected \"close\" or a status from 400 to 599 (e.g. 421, 404), got {other:?}"));
                UnknownHostAnswer::Close
            }
        }
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
