//! `[server]`: listeners, threads, shutdown timings, and the routing keys (health path,
//! unknown hosts).

use std::path::PathBuf;

use super::Compiler;
use crate::answer::Lingering;
use crate::config::error::KeyPath;
use crate::config::file::{
    ServerSection, StatusOrWord, DEFAULT_CLIENT_BODY_TIMEOUT, DEFAULT_CLIENT_HEADER_TIMEOUT,
    DEFAULT_GRACE_PERIOD, DEFAULT_HEADER_CASE, DEFAULT_HEALTH_PATH, DEFAULT_IN_PROGRESS,
    DEFAULT_IN_PROGRESS_HOLD, DEFAULT_KEEPALIVE_REQUESTS, DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_LINGERING_SIZE, DEFAULT_LINGERING_TIME, DEFAULT_LINGERING_TIMEOUT, DEFAULT_LISTEN,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADERS, DEFAULT_MAX_HEADER_LINE, DEFAULT_MAX_HEADER_SIZE,
    DEFAULT_REQUEST_BUFFER_SIZE, DEFAULT_SEND_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_UNKNOWN_HOST, DEFAULT_UPSTREAM_POOL_SIZE,
};
use crate::model::{ClientConnectionSettings, ServerSettings};
use crate::route::{RoutingSettings, UnknownHostAnswer};
use pingora::apps::admission::Admission;
use std::time::Duration;

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
            work_stealing: s.work_stealing.unwrap_or(false),
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
            client: self.client_connections(s, key),
        }
    }

    fn client_connections(&mut self, s: &ServerSection, key: &KeyPath) -> ClientConnectionSettings {
        let max_header_line = self.memory_size(
            s.max_header_line.as_deref(),
            DEFAULT_MAX_HEADER_LINE,
            key.key("max_header_line"),
        );
        let max_header_size = self.memory_size(
            s.max_header_size.as_deref(),
            DEFAULT_MAX_HEADER_SIZE,
            key.key("max_header_size"),
        );
        // httparse, which reads heads, holds at most 256 header lines.
        let max_headers = s.max_headers.unwrap_or(DEFAULT_MAX_HEADERS);
        if !(1..=256).contains(&max_headers) {
            self.problem(
                key.key("max_headers"),
                format!("max_headers must be from 1 to 256, got {max_headers}"),
            );
        }
        // A request line shorter than "GET / HTTP/1.1" could never pass.
        if !(64..=1 << 20).contains(&max_header_line) {
            self.problem(
                key.key("max_header_line"),
                format!("max_header_line must be from 64 bytes to 1m, got {max_header_line} bytes"),
            );
        }
        if max_header_size < max_header_line || max_header_size > 1 << 20 {
            self.problem(
                key.key("max_header_size"),
                format!("max_header_size must be at least max_header_line ({max_header_line} bytes) and at most 1m, got {max_header_size} bytes"),
            );
        }
        let keepalive_requests = s.keepalive_requests.unwrap_or(DEFAULT_KEEPALIVE_REQUESTS);
        if keepalive_requests == 0 {
            self.problem(
                key.key("keepalive_requests"),
                "keepalive_requests must be at least 1",
            );
        }
        let max_connections = s.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            self.problem(
                key.key("max_connections"),
                "max_connections must be at least 1",
            );
        }
        let keepalive_timeout = self.duration(
            s.keepalive_timeout.as_deref(),
            DEFAULT_KEEPALIVE_TIMEOUT,
            key.key("keepalive_timeout"),
        );
        // Pingora counts keepalive in whole seconds (0 would mean "forever").
        if keepalive_timeout < Duration::from_secs(1) {
            self.problem(
                key.key("keepalive_timeout"),
                "keepalive_timeout must be at least 1s",
            );
        }
        ClientConnectionSettings {
            header_timeout: self.positive_duration(
                s.client_header_timeout.as_deref(),
                DEFAULT_CLIENT_HEADER_TIMEOUT,
                key.key("client_header_timeout"),
            ),
            body_timeout: self.positive_duration(
                s.client_body_timeout.as_deref(),
                DEFAULT_CLIENT_BODY_TIMEOUT,
                key.key("client_body_timeout"),
            ),
            send_timeout: self.positive_duration(
                s.send_timeout.as_deref(),
                DEFAULT_SEND_TIMEOUT,
                key.key("send_timeout"),
            ),
            keepalive_timeout,
            keepalive_requests,
            max_header_line,
            max_header_size,
            max_headers,
            keep_header_case: self.header_case(s.header_case.as_deref(), key.key("header_case")),
            max_connections,
            lingering: Lingering {
                time: self.duration(
                    s.lingering_time.as_deref(),
                    DEFAULT_LINGERING_TIME,
                    key.key("lingering_time"),
                ),
                timeout: self.positive_duration(
                    s.lingering_timeout.as_deref(),
                    DEFAULT_LINGERING_TIMEOUT,
                    key.key("lingering_timeout"),
                ),
                size: self.size(
                    s.lingering_size.as_deref(),
                    DEFAULT_LINGERING_SIZE,
                    key.key("lingering_size"),
                ),
            },
            request_buffer_size: self.memory_size(
                s.request_buffer_size.as_deref(),
                DEFAULT_REQUEST_BUFFER_SIZE,
                key.key("request_buffer_size"),
            ),
            admission: self.admission(s, key),
        }
    }

    /// `in_progress` and `in_progress_hold`: the bound on the requests a thread works on.
    fn admission(&mut self, s: &ServerSection, key: &KeyPath) -> Option<Admission> {
        let in_progress = s.in_progress.unwrap_or(DEFAULT_IN_PROGRESS);
        if in_progress > 1 << 20 {
            self.problem(
                key.key("in_progress"),
                format!("in_progress must be at most 1048576 (0: no bound), got {in_progress}"),
            );
        }
        let hold = self.positive_duration(
            s.in_progress_hold.as_deref(),
            DEFAULT_IN_PROGRESS_HOLD,
            key.key("in_progress_hold"),
        );
        (in_progress > 0).then(|| Admission {
            in_progress: in_progress.min(1 << 20),
            hold,
        })
    }

    /// `header_case`: whether header names keep the case they arrived in.
    fn header_case(&mut self, text: Option<&str>, key: KeyPath) -> bool {
        match text.unwrap_or(DEFAULT_HEADER_CASE) {
            "normalize" => false,
            "preserve" => true,
            other => {
                self.problem(
                    key,
                    format!("header_case must be \"normalize\" or \"preserve\", got {other:?}"),
                );
                false
            }
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

#[cfg(test)]
mod tests {
    use crate::config::{assert_mentions, errors};

    #[test]
    fn bad_lingering_values_name_their_keys() {
        let text = "[server]\nlingering_time = \"soon\"\nlingering_timeout = \"0s\"\nlingering_size = \"lots\"\n";
        let e = errors(text);
        assert_mentions(
            &[
                "edge.toml:2: server.lingering_time: invalid duration `soon`",
                "edge.toml:3: server.lingering_timeout: must be longer than 0s",
                "edge.toml:4: server.lingering_size: invalid size `lots`",
            ],
            &e,
        );
    }

    #[test]
    fn in_progress_bounds_each_threads_requests_unless_zero() {
        let admission = |server: &str| {
            let text = format!("[server]\n{server}");
            let config = crate::config::load_str(&text, None, std::path::Path::new("."))
                .expect("valid config");
            config.server().client.admission
        };
        let bound = admission("").expect("bounded by default");
        assert_eq!(bound.in_progress, super::DEFAULT_IN_PROGRESS);
        assert_eq!(bound.hold, std::time::Duration::from_millis(2));
        let bound = admission("in_progress = 4\nin_progress_hold = \"50ms\"\n").expect("bounded");
        assert_eq!((bound.in_progress, bound.hold.as_millis()), (4, 50));
        assert_eq!(admission("in_progress = 0\n"), None);

        let e = errors("[server]\nin_progress = 2000000\nin_progress_hold = \"0s\"\n");
        assert_mentions(
            &[
                "edge.toml:2: server.in_progress: in_progress must be at most 1048576",
                "edge.toml:3: server.in_progress_hold: must be longer than 0s",
            ],
            &e,
        );
    }
}
