//! [`RedisLink`]: the connections to the fleet's Redis, every command bounded by the
//! command timeout.

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, FromRedisValue, IntoConnectionInfo};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::FleetSettings;
use crate::observe::Metrics;

/// Why a Redis command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// No answer within the command timeout (or no connection within the connect timeout).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Redis refused the command or the connection failed.
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
}

impl LinkError {
    /// The `reason` label of the fall-back metric.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            LinkError::Timeout(_) => "timeout",
            LinkError::Redis(e) if e.is_timeout() => "timeout",
            LinkError::Redis(_) => "error",
        }
    }
}

/// A small pool of multiplexed connections (each reconnects by itself when it breaks),
/// used round-robin.
pub(crate) struct RedisLink {
    client: Client,
    pool: Vec<ConnectionManager>,
    next: AtomicUsize,
    pub(crate) settings: FleetSettings,
    metrics: Arc<Metrics>,
}

impl RedisLink {
    /// The client for `settings`; connections are opened on first use. Must run inside a
    /// Tokio runtime (the connections' tasks are spawned on it).
    pub(crate) fn open(settings: &FleetSettings, metrics: Arc<Metrics>) -> Result<Self, LinkError> {
        let mut info = settings.url.as_str().into_connection_info()?;
        if let Some(password) = &settings.password {
            let redis = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(redis);
        }
        let client = match &settings.ca_pem {
            Some(pem) => Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            )?,
            None => Client::open(info)?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.command_timeout))
            // The sync loop retries on its own schedule: a reconnection stuck in back-off
            // would only make the return to global counting later.
            .set_number_of_retries(1)
            .set_max_delay(settings.sync_interval.max(Duration::from_millis(100)));
        let pool = (0..settings.pool_size)
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), config.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            client,
            pool,
            next: AtomicUsize::new(0),
            settings: settings.clone(),
            metrics,
        })
    }

    fn connection(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len().max(1);
        self.pool[i].clone()
    }

    /// Runs one command, within the command timeout.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, LinkError> {
        let mut conn = self.connection();
        self.bounded(async move { cmd.query_async(&mut conn).await })
            .await
    }

    /// Runs a script (`EVALSHA`, loading it first if Redis does not know it), within the
    /// command timeout.
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        script: &redis::ScriptInvocation<'_>,
    ) -> Result<T, LinkError> {
        let mut conn = self.connection();
        self.bounded(async move { script.invoke_async(&mut conn).await })
            .await
    }

    async fn bounded<T>(
        &self,
        command: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, LinkError> {
        self.metrics.fleet_commands(&self.settings.instance, 1);
        let limit = self.settings.command_timeout;
        match tokio::time::timeout(limit, command).await {
            Ok(answer) => Ok(answer?),
            Err(_) => Err(LinkError::Timeout(limit)),
        }
    }

    /// A connection of its own, for a blocking read that may wait up to `block` for news.
    pub(crate) async fn dedicated(
        &self,
        block: Duration,
    ) -> Result<MultiplexedConnection, LinkError> {
        let timeout = self.settings.command_timeout + block;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout))
            .set_response_timeout(Some(timeout));
        let connect = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        match tokio::time::timeout(self.settings.connect_timeout, connect).await {
            Ok(conn) => Ok(conn?),
            Err(_) => Err(LinkError::Timeout(self.settings.connect_timeout)),
        }
    }

    /// Counts a command sent on a dedicated connection.
    pub(crate) fn count_command(&self) {
        self.metrics.fleet_commands(&self.settings.instance, 1);
    }
}
