// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! Patched in: the pool of idle upstream streams of a [super::TransportConnector].
//!
//! pingora-pool's `ConnectionPool` spawned a task per released stream, to watch it for a
//! close, data or its idle timeout while it waited, and the stream sat behind an
//! `Arc<Mutex<_>>` that the task held until a reuse notified it through a channel. That was
//! about 5k instructions per proxied request (the spawn, the channel, the lock hand-over, a
//! timer, the task's polls) for a connection idle for a few microseconds.
//!
//! Here a released stream is only put in a list of its group. A reuse takes the most
//! recently released one (the one the upstream is least likely to have closed), drops those
//! past their idle timeout, and checks the one it takes with the same non-blocking read as
//! before (a close or unexpected data discards it). A background task of the pool checks
//! every idle stream the same way once a second, so a stream the upstream closed, or one
//! past its timeout, is closed within about a second even with no traffic. Past the pool's
//! capacity the stream idle the longest is closed, across groups, as pingora-pool's LRU did.

use super::{test_reusable_stream, PoolCallback};
use crate::protocols::{Digest, Stream};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often idle streams are checked for a close, data or their idle timeout.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct IdleStream {
    stream: Stream,
    /// The digest the stream's last session made, kept for its next one.
    digest: Option<Box<Digest>>,
    since: Instant,
    timeout: Option<Duration>,
}

impl IdleStream {
    fn expired(&self, now: Instant) -> bool {
        self.timeout
            .is_some_and(|timeout| now.saturating_duration_since(self.since) >= timeout)
    }
}

#[derive(Default)]
struct Groups {
    /// Per group key, oldest first.
    groups: HashMap<u64, VecDeque<IdleStream>, BuildHasherDefault<GroupKeyHasher>>,
    len: usize,
}

/// Hashes a group key to itself: the key is a peer's reuse hash already, and hashing it again
/// with the default SipHash cost about 150 instructions per take and per release.
#[derive(Default)]
struct GroupKeyHasher(u64);

impl Hasher for GroupKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; any other input is folded in all the same.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

pub(crate) struct IdlePool {
    inner: Arc<Shared>,
}

struct Shared {
    idle: Mutex<Groups>,
    capacity: usize,
    sweeping: AtomicBool,
    unexpected_data_conn_count: Arc<AtomicU64>,
    callback: Option<PoolCallback>,
}

impl IdlePool {
    pub(crate) fn new(
        capacity: usize,
        unexpected_data_conn_count: Arc<AtomicU64>,
        callback: Option<PoolCallback>,
    ) -> Self {
        IdlePool {
            inner: Arc::new(Shared {
                idle: Mutex::new(Groups::default()),
                capacity,
                sweeping: AtomicBool::new(false),
                unexpected_data_conn_count,
                callback,
            }),
        }
    }

    /// Keep `stream` (and the digest its session made) for a later [`Self::take`] of `key`,
    /// for at most `timeout`.
    pub(crate) fn put(
        &self,
        key: u64,
        stream: Stream,
        digest: Option<Box<Digest>>,
        timeout: Option<Duration>,
    ) {
        let shared = &self.inner;
        if shared.capacity == 0 {
            return;
        }
        let now = Instant::now();
        let evicted = {
            let mut idle = shared.idle.lock();
            let evicted = if idle.len >= shared.capacity {
                idle.pop_oldest()
            } else {
                None
            };
            idle.groups.entry(key).or_default().push_back(IdleStream {
                stream,
                digest,
                since: now,
                timeout,
            });
            idle.len += 1;
            evicted
        };
        // closed outside the lock
        if let Some(evicted) = evicted {
            if let Some(callback) = &shared.callback {
                callback(now.saturating_duration_since(evicted.since));
            }
        }
        if !shared.sweeping.load(Ordering::Relaxed) {
            self.start_sweeping();
        }
    }

    /// The most recently released usable stream of `key`, if any. Streams past their idle
    /// timeout, closed, or with unexpected data are closed on the way.
    pub(crate) fn take(&self, key: u64) -> Option<(Stream, Option<Box<Digest>>)> {
        let now = Instant::now();
        loop {
            let mut candidate = {
                let mut idle = self.inner.idle.lock();
                let group = idle.groups.get_mut(&key)?;
                let candidate = group.pop_back()?;
                idle.len -= 1;
                candidate
            };
            if candidate.expired(now) {
                continue;
            }
            if test_reusable_stream(
                &mut candidate.stream,
                &self.inner.unexpected_data_conn_count,
            ) {
                return Some((candidate.stream, candidate.digest));
            }
        }
    }

    /// The number of idle streams held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.idle.lock().len
    }

    fn start_sweeping(&self) {
        let shared = &self.inner;
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            // Outside a runtime nothing can check the streams later: keep none.
            *shared.idle.lock() = Groups::default();
            return;
        };
        if shared.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(shared);
        handle.spawn(sweep(weak));
    }
}

impl Groups {
    /// Take out the stream idle the longest, of all groups.
    fn pop_oldest(&mut self) -> Option<IdleStream> {
        let key = self
            .groups
            .iter()
            .filter_map(|(key, group)| group.front().map(|idle| (idle.since, *key)))
            .min()?
            .1;
        let oldest = self.groups.get_mut(&key)?.pop_front();
        if oldest.is_some() {
            self.len -= 1;
        }
        oldest
    }
}

async fn sweep(shared: Weak<Shared>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = Instant::now();
        let closed: Vec<IdleStream> = {
            let mut idle = shared.idle.lock();
            let mut closed = Vec::new();
            for group in idle.groups.values_mut() {
                let mut kept = VecDeque::with_capacity(group.len());
                for mut stream in group.drain(..) {
                    if stream.expired(now)
                        || !test_reusable_stream(
                            &mut stream.stream,
                            &shared.unexpected_data_conn_count,
                        )
                    {
                        closed.push(stream);
                    } else {
                        kept.push_back(stream);
                    }
                }
                *group = kept;
            }
            idle.groups.retain(|_, group| !group.is_empty());
            idle.len -= closed.len();
            closed
        };
        drop(closed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair(listener: &TcpListener) -> (Stream, TcpStream) {
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let stream: Stream = Box::new(crate::protocols::l4::stream::Stream::from(client));
        (stream, server)
    }

    #[tokio::test]
    async fn takes_the_latest_and_skips_closed_and_expired_streams() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = IdlePool::new(8, Arc::new(AtomicU64::new(0)), None);
        let (a, _a_peer) = pair(&listener).await;
        let (b, b_peer) = pair(&listener).await;
        let a_id = a.id();
        pool.put(1, a, None, None);
        pool.put(1, b, None, None);
        drop(b_peer);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // b, the latest, was closed by its peer: a is taken instead
        assert_eq!(pool.take(1).unwrap().0.id(), a_id);
        assert!(pool.take(1).is_none());
        assert!(pool.take(2).is_none());

        let (c, _c_peer) = pair(&listener).await;
        pool.put(1, c, None, Some(Duration::ZERO));
        assert!(pool.take(1).is_none());
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test]
    async fn past_capacity_the_longest_idle_goes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = IdlePool::new(2, Arc::new(AtomicU64::new(0)), None);
        let (a, _ap) = pair(&listener).await;
        let (b, _bp) = pair(&listener).await;
        let (c, _cp) = pair(&listener).await;
        let (b_id, c_id) = (b.id(), c.id());
        pool.put(1, a, None, None);
        pool.put(2, b, None, None);
        pool.put(1, c, None, None);
        assert_eq!(pool.len(), 2);
        assert_eq!(pool.take(1).unwrap().0.id(), c_id);
        assert!(pool.take(1).is_none());
        assert_eq!(pool.take(2).unwrap().0.id(), b_id);
    }

    #[tokio::test]
    async fn the_sweep_closes_streams_with_data_or_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = IdlePool::new(8, Arc::new(AtomicU64::new(0)), None);
        let (a, mut a_peer) = pair(&listener).await;
        let (b, b_peer) = pair(&listener).await;
        let (c, _c_peer) = pair(&listener).await;
        pool.put(1, a, None, None);
        pool.put(1, b, None, None);
        pool.put(2, c, None, None);
        a_peer.write_all(b"x").await.unwrap();
        drop(b_peer);
        tokio::time::sleep(SWEEP_EVERY * 2 + Duration::from_millis(200)).await;
        assert_eq!(pool.len(), 1);
        assert!(pool.take(2).is_some());
    }
}
