//! Fleet messages: one Redis stream per fleet (`{prefix}:fleet`) carries typed
//! [`FleetMessage`]s to every machine, in order, each applied once. A machine that was away
//! reads on from the last entry it applied; if that is no longer possible (entries trimmed,
//! or Redis lost its data meanwhile) it drops its whole cache, so it never serves what was
//! purged while it was away. With a disk tier, the last entry applied is kept beside the
//! disk's entries, so a restarted machine catches up from it too.
//!
//! Bans travel the same way: one made (or lifted) on any machine is applied on every other.
//! A machine that starts afresh, or could not catch up, reads the bans still in force from
//! the whole stream.

use pingora::server::ShutdownWatch;
use redis::Value;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

use super::link::{LinkError, RedisLink};
use crate::ban::{Ban, BanTable};
use crate::cache::{EdgeCache, PurgeScope};
use crate::observe::{FleetEvent, Metrics};

/// Entries the stream keeps (approximately): enough for a machine away for a while to
/// catch up entry by entry; one away longer drops its cache instead.
const STREAM_LENGTH: u32 = 10_000;
/// Longest wait of one blocking read; the read is renewed at once.
const READ_BLOCK: Duration = Duration::from_secs(1);
/// Longest pause between two attempts to reach Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A message to every machine of the fleet. To add a kind, add a variant here and its handling where the inbox applies messages; machines running an older version log and
/// skip kinds they do not know, so a fleet can be upgraded one machine at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FleetMessage {
    /// A cache purge accepted by one machine's admin listener.
    Purge {
        /// The host purged.
        host: String,
        /// The path purged (every query and variant); none: the whole host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// A client banned on one machine (by a rule or the admin action).
    Ban {
        /// The banned address (an IPv4 address, or the first of an IPv6 /64).
        ip: IpAddr,
        /// When the ban ends, in seconds since the Unix epoch.
        until: u64,
        /// The rule that banned it.
        rule: String,
    },
    /// A ban lifted on one machine.
    Unban {
        /// The address whose ban was lifted.
        ip: IpAddr,
    },
}

impl FleetMessage {
    /// What sending or applying this message counts as.
    fn event(&self, received: bool) -> FleetEvent {
        match (self, received) {
            (FleetMessage::Purge { .. }, true) => FleetEvent::PurgeReceived,
            (FleetMessage::Purge { .. }, false) => FleetEvent::PurgePublished,
            (_, true) => FleetEvent::BanReceived,
            (_, false) => FleetEvent::BanPublished,
        }
    }
}

impl From<&Ban> for FleetMessage {
    fn from(ban: &Ban) -> Self {
        FleetMessage::Ban {
            ip: ban.ip,
            until: ban.until,
            rule: ban.rule.to_string(),
        }
    }
}

impl From<&PurgeScope> for FleetMessage {
    fn from(scope: &PurgeScope) -> Self {
        match scope {
            PurgeScope::Url { host, path } => FleetMessage::Purge {
                host: host.clone(),
                path: Some(path.clone()),
            },
            PurgeScope::Host(host) => FleetMessage::Purge {
                host: host.clone(),
                path: None,
            },
        }
    }
}

/// Sends what [`super::Fleet::publish`] queued, in order, retrying while Redis is away
/// (the queue is bounded: a full one refuses new messages).
pub(crate) async fn publish(
    link: &RedisLink,
    metrics: &Metrics,
    mut outbox: mpsc::Receiver<FleetMessage>,
    mut shutdown: ShutdownWatch,
) {
    let settings = &link.settings;
    let stream = settings.key("fleet");
    loop {
        let message = tokio::select! {
            message = outbox.recv() => message,
            _ = shutdown.changed() => return,
        };
        let Some(message) = message else { return };
        let Ok(json) = serde_json::to_string(&message) else {
            continue;
        };
        let mut backoff = settings.sync_interval;
        loop {
            let mut add = redis::cmd("XADD");
            add.arg(&stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(STREAM_LENGTH)
                .arg("*")
                .arg("origin")
                .arg(&settings.instance)
                .arg("message")
                .arg(&json);
            match link.query::<String>(&add).await {
                Ok(id) => {
                    metrics.fleet_event(&settings.instance, message.event(false));
                    tracing::info!(instance = %settings.instance, id, message = %json, "sent to the fleet");
                    break;
                }
                Err(e) => {
                    tracing::debug!(instance = %settings.instance, error = %e, "cannot send to the fleet yet; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// Where this machine is in the fleet's stream.
pub(crate) struct FleetInbox<'a> {
    pub(crate) link: &'a RedisLink,
    pub(crate) metrics: &'a Metrics,
    pub(crate) cache: &'static EdgeCache,
    /// Where bans from other machines go, if this process bans at all.
    bans: Option<Arc<BanTable>>,
    /// The last entry applied; `None` before the first connection.
    cursor: Option<StreamId>,
    /// The Redis data set the cursor belongs to (a random value Redis keeps; a new one
    /// means Redis lost its data).
    epoch: Option<String>,
    /// With a disk tier, where the cursor is kept across restarts (the disk's entries
    /// outlive the process, so a restarted machine must know which purges they have seen).
    cursor_file: Option<PathBuf>,
}

/// Entries read at once when replaying the stream's bans.
const REPLAY_PAGE: usize = 1000;

/// The file in the disk tier's directory that keeps the cursor: `EPOCH ID`.
const CURSOR_FILE: &str = "fleet-cursor";

impl<'a> FleetInbox<'a> {
    pub(crate) fn new(
        link: &'a RedisLink,
        metrics: &'a Metrics,
        cache: &'static EdgeCache,
        bans: Option<Arc<BanTable>>,
    ) -> Self {
        Self {
            link,
            metrics,
            cache,
            bans,
            cursor: None,
            epoch: None,
            cursor_file: cache
                .settings()
                .disk
                .as_ref()
                .map(|disk| disk.path.join(CURSOR_FILE)),
        }
    }

    /// The cursor a previous process kept, if any.
    async fn load_cursor(&self) -> Option<(String, StreamId)> {
        let text = tokio::fs::read_to_string(self.cursor_file.as_ref()?)
            .await
            .ok()?;
        let (epoch, id) = text.trim().split_once(' ')?;
        Some((epoch.to_owned(), StreamId::parse(id)?))
    }

    /// Keeps the cursor for the next process (written aside, then renamed into place).
    async fn save_cursor(&self) {
        let (Some(file), Some(epoch), Some(cursor)) = (&self.cursor_file, &self.epoch, self.cursor)
        else {
            return;
        };
        let aside = file.with_extension("tmp");
        let written = tokio::fs::write(&aside, format!("{epoch} {cursor}\n")).await;
        if let Err(e) = written.and(tokio::fs::rename(&aside, file).await) {
            tracing::warn!(instance = %self.link.settings.instance, error = %e, "cannot keep the fleet cursor beside the disk cache");
        }
    }

    /// Reads and applies the fleet's messages until shutdown, reconnecting (and catching
    /// up) whenever the connection breaks.
    pub(crate) async fn run(&mut self, mut shutdown: ShutdownWatch) {
        let mut backoff = self.link.settings.sync_interval;
        loop {
            let outcome = tokio::select! {
                outcome = self.follow() => outcome,
                _ = shutdown.changed() => return,
            };
            if let Err(e) = outcome {
                tracing::debug!(instance = %self.link.settings.instance, error = %e, "fleet stream unreachable; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Connects, catches up, then follows the stream until an error.
    async fn follow(&mut self) -> Result<(), LinkError> {
        let mut conn = self.link.dedicated(READ_BLOCK).await?;
        self.catch_up(&mut conn).await?;
        let stream = self.link.settings.key("fleet");
        loop {
            let cursor = self.cursor.unwrap_or_default().to_string();
            let mut read = redis::cmd("XREAD");
            read.arg("COUNT")
                .arg(100)
                .arg("BLOCK")
                .arg(READ_BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&stream)
                .arg(cursor);
            self.link.count_command();
            let reply: Value = read.query_async(&mut conn).await?;
            let entries = stream_entries(reply);
            let applied = !entries.is_empty();
            for (id, origin, message) in entries {
                self.apply(&origin, &message);
                self.cursor = Some(id);
            }
            if applied {
                self.save_cursor().await;
            }
        }
    }

    /// On (re)connecting: where to read on from, or, if entries this machine never read
    /// are gone, drop the whole cache and read on from the newest.
    async fn catch_up(
        &mut self,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> Result<(), LinkError> {
        let epoch_key = self.link.settings.key("epoch");
        let fresh = uuid::Uuid::new_v4().to_string();
        self.link.count_command();
        let _: Value = redis::cmd("SET")
            .arg(&epoch_key)
            .arg(&fresh)
            .arg("NX")
            .query_async(conn)
            .await?;
        self.link.count_command();
        let epoch: Option<String> = redis::cmd("GET").arg(&epoch_key).query_async(conn).await?;
        self.link.count_command();
        let info: Value = match redis::cmd("XINFO")
            .arg("STREAM")
            .arg(self.link.settings.key("fleet"))
            .query_async(conn)
            .await
        {
            Ok(info) => info,
            // No stream yet: nothing was ever sent (or Redis lost it, which the epoch tells).
            Err(e)
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) =>
            {
                Value::Nil
            }
            Err(e) => return Err(e.into()),
        };
        let last = info_id(&info, "last-generated-id").unwrap_or_default();
        let deleted = info_id(&info, "max-deleted-entry-id").unwrap_or_default();
        if self.cursor.is_none() {
            if let Some((kept_epoch, kept)) = self.load_cursor().await {
                self.cursor = Some(kept);
                self.epoch = Some(kept_epoch);
            }
        }
        let instance = &self.link.settings.instance;
        match self.cursor {
            None => {
                // A process starting now holds nothing a past purge could have meant, unless
                // its disk tier kept entries without a record of the purges they saw.
                let disk_entries = self
                    .cache
                    .storage()
                    .disk()
                    .is_some_and(|d| d.used_bytes() > 0);
                if disk_entries {
                    let dropped = self.cache.purge_all();
                    self.metrics.fleet_event(instance, FleetEvent::CacheDropped);
                    tracing::warn!(%instance, dropped, "the disk cache has no record of the fleet's purges: whole cache dropped");
                }
                self.cursor = Some(last);
                self.replay_bans(conn, last).await?;
            }
            Some(cursor) => {
                let why = if epoch != self.epoch {
                    Some("Redis lost its data while this machine was away")
                } else if deleted > cursor {
                    Some("purges this machine never read were trimmed from the stream")
                } else {
                    None
                };
                if let Some(why) = why {
                    let dropped = self.cache.purge_all();
                    self.metrics.fleet_event(instance, FleetEvent::CacheDropped);
                    tracing::warn!(%instance, dropped, reason = why, "cannot catch up with the fleet's purges: whole cache dropped");
                    self.cursor = Some(last);
                    self.replay_bans(conn, last).await?;
                } else if last > cursor {
                    tracing::info!(%instance, "catching up with the fleet's purges");
                }
            }
        }
        self.epoch = epoch;
        self.save_cursor().await;
        Ok(())
    }

    /// Reads the whole stream up to `last` (in pages) and applies its bans and lifts, in
    /// order, so a machine without the fleet's history knows the bans still in force.
    /// Purges in it are not applied: the cache they were meant for is gone.
    async fn replay_bans(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        last: StreamId,
    ) -> Result<(), LinkError> {
        if self.bans.is_none() {
            return Ok(());
        }
        let stream = self.link.settings.key("fleet");
        let mut from = "-".to_owned();
        let mut applied = 0usize;
        loop {
            self.link.count_command();
            let reply: Value = redis::cmd("XRANGE")
                .arg(&stream)
                .arg(&from)
                .arg(last.to_string())
                .arg("COUNT")
                .arg(REPLAY_PAGE)
                .query_async(conn)
                .await?;
            let entries = range_entries(reply);
            let Some((end, _, _)) = entries.last() else {
                break;
            };
            from = format!("({end}");
            let full = entries.len() >= REPLAY_PAGE;
            for (_, _, message) in &entries {
                if let Ok(message) = serde_json::from_str::<FleetMessage>(message) {
                    applied += usize::from(self.apply_ban(message));
                }
            }
            if !full {
                break;
            }
        }
        if applied > 0 {
            let instance = &self.link.settings.instance;
            tracing::info!(%instance, applied, "bans in force read from the fleet's stream");
        }
        Ok(())
    }

    /// Applies a ban or a lift; whether it changed anything.
    fn apply_ban(&self, message: FleetMessage) -> bool {
        let Some(bans) = &self.bans else {
            return false;
        };
        match message {
            FleetMessage::Ban { ip, until, rule } => bans.apply_shared(Ban {
                ip,
                until,
                rule: rule.into(),
            }),
            FleetMessage::Unban { ip } => bans.lift_shared(ip),
            FleetMessage::Purge { .. } => false,
        }
    }

    /// Applies one message from `origin` (ignored if it is this machine's own, which was
    /// applied when it was accepted, or of a kind this version does not know).
    fn apply(&self, origin: &str, message: &str) {
        let instance = &self.link.settings.instance;
        if origin == instance {
            return;
        }
        match serde_json::from_str::<FleetMessage>(message) {
            Ok(FleetMessage::Purge { host, path }) => {
                let scope = match path {
                    Some(path) => PurgeScope::Url { host, path },
                    None => PurgeScope::Host(host),
                };
                let purged = self.cache.purge(&scope);
                self.metrics
                    .fleet_event(instance, FleetEvent::PurgeReceived);
                tracing::info!(%instance, origin, ?scope, purged, "fleet purge applied");
            }
            Ok(message) => {
                let event = message.event(true);
                let text = format!("{message:?}");
                if self.apply_ban(message) {
                    self.metrics.fleet_event(instance, event);
                    tracing::info!(%instance, origin, message = text, "fleet ban applied");
                }
            }
            Err(e) => {
                tracing::info!(%instance, origin, error = %e, "fleet message of a kind this version does not know: skipped");
            }
        }
    }
}

/// A stream entry id (`ms-seq`), ordered as Redis orders them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct StreamId(u64, u64);

impl StreamId {
    fn parse(text: &str) -> Option<Self> {
        let (ms, seq) = text.split_once('-')?;
        Some(Self(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// A field of an `XINFO STREAM` answer that holds an entry id.
fn info_id(info: &Value, field: &str) -> Option<StreamId> {
    let pairs: Vec<(&Value, &Value)> = match info {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|p| Some((p.first()?, p.get(1)?)))
            .collect(),
        Value::Map(items) => items.iter().map(|(k, v)| (k, v)).collect(),
        _ => return None,
    };
    pairs
        .into_iter()
        .find(|(k, _)| text(k).as_deref() == Some(field))
        .and_then(|(_, v)| StreamId::parse(&text(v)?))
}

/// The entries of an `XREAD` answer for one stream: id, `origin` and `message` fields.
fn stream_entries(reply: Value) -> Vec<(StreamId, String, String)> {
    let streams: Vec<Value> = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        _ => Vec::new(),
    };
    streams.into_iter().flat_map(range_entries).collect()
}

/// The entries of an `XRANGE` answer (or of one stream in an `XREAD` answer): id, `origin`
/// and `message` fields.
fn range_entries(entries: Value) -> Vec<(StreamId, String, String)> {
    let mut out = Vec::new();
    if let Value::Array(entries) = entries {
        for entry in entries {
            let Value::Array(parts) = entry else { continue };
            let (Some(id), Some(Value::Array(fields))) = (parts.first(), parts.get(1)) else {
                continue;
            };
            let Some(id) = text(id).and_then(|t| StreamId::parse(&t)) else {
                continue;
            };
            let mut origin = String::new();
            let mut message = String::new();
            for pair in fields.chunks(2) {
                match (
                    pair.first().and_then(text).as_deref(),
                    pair.get(1).and_then(text),
                ) {
                    (Some("origin"), Some(v)) => origin = v,
                    (Some("message"), Some(v)) => message = v,
                    _ => {}
                }
            }
            out.push((id, origin, message));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_by_kind_and_unknown_kinds_do_not_parse() {
        let purge = FleetMessage::Purge {
            host: "docs.example.com".into(),
            path: Some("/a".into()),
        };
        let json = serde_json::to_string(&purge).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"purge","host":"docs.example.com","path":"/a"}"#
        );
        assert_eq!(serde_json::from_str::<FleetMessage>(&json).unwrap(), purge);
        let ban = FleetMessage::Ban {
            ip: "2001:db8::".parse().unwrap(),
            until: 1_800_000_000,
            rule: "trap".into(),
        };
        let json = serde_json::to_string(&ban).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"ban","ip":"2001:db8::","until":1800000000,"rule":"trap"}"#
        );
        assert_eq!(serde_json::from_str::<FleetMessage>(&json).unwrap(), ban);
        assert!(
            serde_json::from_str::<FleetMessage>(r#"{"kind":"shun","ip":"192.0.2.1"}"#).is_err()
        );
    }

    #[test]
    fn stream_ids_order_as_redis_orders_them() {
        let a = StreamId::parse("1700000000000-9").unwrap();
        let b = StreamId::parse("1700000000001-0").unwrap();
        assert!(a < b && StreamId::default() < a);
        assert_eq!(a.to_string(), "1700000000000-9");
        assert_eq!(StreamId::parse("nope"), None);
    }

    #[test]
    fn xread_answers_are_read_in_resp2_form() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("{edge}:fleet"),
            Value::Array(vec![Value::Array(vec![
                bulk("5-1"),
                Value::Array(vec![bulk("origin"), bulk("a"), bulk("message"), bulk("{}")]),
            ])]),
        ])]);
        assert_eq!(
            stream_entries(reply),
            [(StreamId(5, 1), "a".to_owned(), "{}".to_owned())]
        );
        assert!(stream_entries(Value::Nil).is_empty());
    }
}
