//! [`FleetSettings`]: `[redis]`, compiled.

use std::time::Duration;

/// `[redis]`, compiled: where the fleet's Redis is and how this machine talks to it. Bound
/// when the process starts (a reload keeps the running one).
///
/// Holds the URL read from the environment, which may carry a password: its `Debug` shows
/// the scheme and the environment variable's name, never the URL.
#[derive(Clone, PartialEq, Eq)]
pub struct FleetSettings {
    /// Name of the environment variable the URL came from (for messages).
    pub(crate) url_env: String,
    /// `redis://` or `rediss://` URL, as read from `url_env`.
    pub(crate) url: String,
    /// The password from `password_env`, which replaces one in the URL.
    pub(crate) password: Option<String>,
    /// `ca_file` as written, and the PEM CA bundle read from it: a `rediss://` server is
    /// verified against it instead of the built-in web roots.
    pub(crate) ca_file: Option<String>,
    pub(crate) ca_pem: Option<Vec<u8>>,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) pool_size: usize,
    pub(crate) sync_interval: Duration,
    /// Names the fleet; every Redis key is under `{prefix}:` (a hash tag, so a Redis Cluster
    /// keeps them in one slot and one script may touch them all).
    pub(crate) prefix: String,
    /// This machine's name: the `instance` label of fleet metrics and the field of fleet logs.
    pub(crate) instance: String,
}

impl std::fmt::Debug for FleetSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = self.url.split("://").next().unwrap_or_default();
        f.debug_struct("FleetSettings")
            .field(
                "url",
                &format_args!("{scheme}://... (from ${})", self.url_env),
            )
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ca_file", &self.ca_file)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("pool_size", &self.pool_size)
            .field("sync_interval", &self.sync_interval)
            .field("prefix", &self.prefix)
            .field("instance", &self.instance)
            .finish()
    }
}

impl FleetSettings {
    /// This machine's name in the fleet.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The fleet's name: every Redis key is under it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How often global zones reconcile with Redis.
    pub fn sync_interval(&self) -> Duration {
        self.sync_interval
    }

    /// Longest wait for one Redis command.
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// How long a machine counts as serving a key, or as part of the fleet, after it last
    /// said so: long enough to span several syncs, short enough that a machine gone away
    /// stops diluting the others' shares within seconds.
    pub(crate) fn presence_window(&self) -> Duration {
        (self.sync_interval * 20).max(Duration::from_secs(2))
    }

    /// `{prefix}:NAME`: a Redis key of this fleet.
    pub(crate) fn key(&self, name: &str) -> String {
        format!("{{{}}}:{name}", self.prefix)
    }
}
