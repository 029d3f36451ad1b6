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

//! The abstraction and implementation interface for service application logic

pub mod admission;
pub mod http_app;

use crate::server::ShutdownWatch;
use async_trait::async_trait;
use bytes::BytesMut;
use log::{debug, error};
use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocols::http::v2::server;
use crate::protocols::http::{ReusableHttpStream, ServerSession};
use crate::protocols::Digest;
use crate::protocols::Stream;
use crate::protocols::ALPN;

// https://datatracker.ietf.org/doc/html/rfc9113#section-3.4
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[async_trait]
/// This trait defines the interface of a transport layer (TCP or TLS) application.
pub trait ServerApp {
    /// Whenever a new connection is established, this function will be called with the established
    /// [`Stream`] object provided.
    ///
    /// The application can do whatever it wants with the `session`.
    ///
    /// After processing the `session`, if the `session`'s connection is reusable, This function
    /// can return it to the service by returning `Some(session)`. The returned `session` will be
    /// fed to another [`Self::process_new()`] for another round of processing.
    /// If not reusable, `None` should be returned.
    ///
    /// The `shutdown` argument will change from `false` to `true` when the server receives a
    /// signal to shutdown. This argument allows the application to react accordingly.
    async fn process_new(
        self: &Arc<Self>,
        mut session: Stream,
        // TODO: make this ShutdownWatch so that all task can await on this event
        shutdown: &ShutdownWatch,
    ) -> Option<Stream>;

    /// This callback will be called once after the service stops listening to its endpoints.
    async fn cleanup(&self) {}
}
#[non_exhaustive]
#[derive(Clone, Debug, Default)]
/// HTTP Server options that control how the server handles some transport types.
pub struct HttpServerOptions {
    /// Allow HTTP/2 for plaintext.
    pub h2c: bool,

    /// Allow proxying CONNECT requests when handling HTTP traffic.
    ///
    /// When disabled, CONNECT requests are rejected with 405 by proxy services.
    pub allow_connect_method_proxying: bool,

    #[doc(hidden)]
    pub force_custom: bool,

    /// Maximum number of requests that this connection will handle. This is
    /// equivalent to [Nginx's keepalive requests](https://nginx.org/en/docs/http/ngx_http_upstream_module.html#keepalive_requests)
    /// which says:
    ///
    /// > Closing connections periodically is necessary to free per-connection
    /// > memory allocations. Therefore, using too high maximum number of
    /// > requests could result in excessive memory usage and not recommended.
    ///
    /// Unlike nginx, the default behavior here is _no limit_.
    pub keepalive_request_limit: Option<u32>,

    /// If set, close a downstream HTTP/2 connection that has been idle
    /// for this duration.
    ///
    /// Default: `None`
    pub h2_idle_timeout: Option<Duration>,

    /// Limits on reading an HTTP/1 request head (patched in). Default: Pingora's own.
    pub h1_request_head: crate::protocols::http::v1::server::RequestHeadLimits,

    /// Answer HTTP/1.1 requests a client pipelines, in order (patched in: Pingora 0.9.1 has
    /// the mechanism but no server option). Default: off.
    pub h1_pipelining: bool,

    /// How long an HTTP/1 connection may idle between requests (patched in). Default:
    /// Pingora's 60 s before the first request, then what the client's headers allow.
    pub h1_keepalive_timeout: Option<Duration>,

    /// Build HTTP/1 request heads without keeping the case of their header names (patched
    /// in): each header is stored once instead of twice. Default: off (case kept).
    pub h1_discard_header_case: bool,

    /// Read and throw away what a client still sends after an answer to a refused HTTP/1
    /// request head, within these bounds, before the close (patched in, nginx's lingering
    /// close): closed with unread input, a socket sends a reset. Default: `None`, closed at once.
    pub h1_lingering: Option<crate::protocols::http::v1::server::Lingering>,

    /// How many HTTP/1 requests a worker thread works on at once (patched in); see
    /// [`admission`]. Default: `None`, no bound.
    pub h1_admission: Option<admission::Admission>,
}

impl HttpServerOptions {
    /// Applies the HTTP/1 options to a session about to read a request (patched in);
    /// `first_after`: the connection's age, when this is its first request (whose head
    /// timeout counts from the connection's start).
    fn apply_h1(&self, session: &mut ServerSession, first_after: Option<Duration>) {
        let mut limits = self.h1_request_head;
        if let Some(elapsed) = first_after {
            limits.timeout = limits.timeout.map(|t| t.saturating_sub(elapsed));
        }
        session.set_request_head_limits(limits, first_after.is_some());
        if self.h1_pipelining {
            session.set_pipelining_enabled(true);
        }
        if let Some(idle) = self.h1_keepalive_timeout {
            session.set_keepalive(Some(idle.as_secs().max(1)));
        }
        if self.h1_discard_header_case {
            session.set_keep_header_case(false);
        }
        session.set_lingering(self.h1_lingering);
    }
}

/// Settings persisted across HTTP/1.x keepalive requests on the same downstream connection.
///
/// In addition to framework-managed keepalive parameters, this struct can carry an optional
/// user-defined context via [`set_user_context`](Self::set_user_context). The proxy layer
/// populates this through `ProxyHttp::persist_connection_context`
/// and delivers it to the next request through `ProxyHttp::on_connection_reuse`.
///
/// Also carries pipelined-prefix bytes when the caller has opted into HTTP/1.1
/// pipelining on the previous session. See
/// [`Self::set_pipelined_prefix`] and the
/// [`HttpSession::set_pipelining_enabled`](crate::protocols::http::v1::server::HttpSession::set_pipelining_enabled)
/// docs for the RFC 9112 §9.3.2 semantics.
#[derive(Debug)]
pub struct HttpPersistentSettings {
    keepalive_timeout: Option<u64>,
    keepalive_reuses_remaining: Option<u32>,
    /// User-defined context to carry to the next request on this connection.
    user_context: Option<Box<dyn Any + Send + Sync>>,
    /// Bytes read past the end of the previous request's body, to be parsed
    /// as the next pipelined request on the reused connection.
    pipelined_prefix: Option<BytesMut>,
    /// Whether HTTP/1.1 pipelining was enabled on the previous session;
    /// propagates to the next session so the proxy-level opt-in sticks
    /// across keepalive reuses without the adopter having to re-enable
    /// it on every request.
    pipelining_enabled: bool,
    /// Patched in: the connection's digest, made by the previous session, for the next.
    digest: Option<Box<Digest>>,
}

impl HttpPersistentSettings {
    pub fn for_session(session: &ServerSession) -> Self {
        HttpPersistentSettings {
            keepalive_timeout: session.get_keepalive(),
            keepalive_reuses_remaining: session.get_keepalive_reuses_remaining(),
            user_context: None,
            pipelined_prefix: None,
            pipelining_enabled: session.pipelining_enabled(),
            digest: None,
        }
    }

    /// Set a user-defined context to be carried to the next request on this connection.
    pub fn set_user_context(&mut self, ctx: Box<dyn Any + Send + Sync>) {
        self.user_context = Some(ctx);
    }

    /// Take the user-defined context, if any.
    pub fn take_user_context(&mut self) -> Option<Box<dyn Any + Send + Sync>> {
        self.user_context.take()
    }

    /// Set pipelined-prefix bytes to be fed to the next session on this
    /// connection. Called by the proxy layer when HTTP/1.1 pipelining is
    /// enabled on the current session and overread bytes were present at
    /// reuse time.
    pub fn set_pipelined_prefix(&mut self, prefix: BytesMut) {
        self.pipelined_prefix = Some(prefix);
    }

    pub fn apply_to_session(self, session: &mut ServerSession) {
        let Self {
            keepalive_timeout,
            mut keepalive_reuses_remaining,
            user_context,
            pipelined_prefix,
            pipelining_enabled,
            digest: _,
        } = self;

        // Reduce the number of times the connection for this session can be
        // reused by one. A session with reuse count of zero won't be reused
        if let Some(reuses) = keepalive_reuses_remaining.as_mut() {
            *reuses = reuses.saturating_sub(1);
        }

        session.set_keepalive(keepalive_timeout);
        session.set_keepalive_reuses_remaining(keepalive_reuses_remaining);

        // Carry user context into the session for the proxy layer to consume
        session.set_connection_user_context(user_context);

        // Replay pipelining opt-in so it stays on across keepalive reuses.
        session.set_pipelining_enabled(pipelining_enabled);

        // Feed any pipelined prefix bytes to the new session's request parser
        // so they are treated as the start of the next request.
        if let Some(prefix) = pipelined_prefix {
            session.set_pipelined_prefix(prefix);
        }
    }
}

#[derive(Debug)]
pub struct ReusedHttpStream {
    stream: Stream,
    persistent_settings: Option<HttpPersistentSettings>,
}

impl ReusedHttpStream {
    pub fn new(stream: Stream, persistent_settings: Option<HttpPersistentSettings>) -> Self {
        ReusedHttpStream {
            stream,
            persistent_settings,
        }
    }

    /// Build a reusable HTTP stream from a finished session, preserving any
    /// pipelined prefix bytes in the persistent settings for the next request.
    pub fn from_reusable_stream(
        mut reusable: ReusableHttpStream,
        mut persistent_settings: HttpPersistentSettings,
    ) -> Self {
        persistent_settings.digest = reusable.take_digest();
        let (stream, pipelined_prefix) = reusable.into_parts();
        if let Some(prefix) = pipelined_prefix {
            persistent_settings.set_pipelined_prefix(prefix);
        }
        Self::new(stream, Some(persistent_settings))
    }

    pub fn consume(self) -> (Stream, Option<HttpPersistentSettings>) {
        (self.stream, self.persistent_settings)
    }
}

/// This trait defines the interface of an HTTP application.
#[async_trait]
pub trait HttpServerApp {
    /// Similar to the [`ServerApp`], this function is called whenever a new HTTP session is established.
    ///
    /// After successful processing, [`ServerSession::finish()`] can be
    /// called to return an optionally reusable connection back to the service.
    /// The caller needs to make sure that the connection is in a reusable state
    /// i.e., no error or incomplete read or write headers or bodies. Otherwise
    /// a `None` should be returned.
    ///
    /// Patched in: declared to return `impl Future + Send` rather than as an async-trait
    /// method, so that each request's call is not a boxed, dynamically dispatched future.
    /// Implement it as `fn process_new_http(..) -> impl Future<..> + Send { async move {..} }`
    /// inside an `#[async_trait]` impl (whose other methods stay `async fn`).
    fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        // TODO: make this ShutdownWatch so that all task can await on this event
        shutdown: &ShutdownWatch,
    ) -> impl std::future::Future<Output = Option<ReusedHttpStream>> + Send;

    /// Provide options on how HTTP/2 connection should be established. This function will be called
    /// every time a new HTTP/2 **connection** needs to be established.
    ///
    /// A `None` means to use the built-in default options. See [`server::H2Options`] for more details.
    fn h2_options(&self) -> Option<server::H2Options> {
        None
    }

    /// Provide HTTP server options used to override default behavior. This function will be called
    /// every time a new connection is processed.
    ///
    /// A `None` means no server options will be applied.
    fn server_options(&self) -> Option<&HttpServerOptions> {
        None
    }

    async fn http_cleanup(&self) {}

    /// Called when an HTTP/1 connection is closed because no request began in time
    /// (patched in): `first`, within the request head timeout of a new connection, else
    /// within the keepalive timeout after a request.
    fn h1_request_wait_timed_out(&self, _first: bool) {}

    #[doc(hidden)]
    async fn process_custom_session(
        self: Arc<Self>,
        _stream: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        None
    }
}

#[async_trait]
impl<T> ServerApp for T
where
    T: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut h2c = self.server_options().as_ref().map_or(false, |o| o.h2c);
        let custom = self
            .server_options()
            .as_ref()
            .map_or(false, |o| o.force_custom);

        // h2c is for cleartext connections; on TLS, ALPN handles protocol negotiation.
        // Otherwise, h2c stays true on TLS streams, forcing HTTP/1.1 clients into HTTP/2
        if stream.get_ssl_digest().is_some() {
            h2c = false;
        }
        // try to read h2 preface
        else if h2c && !custom {
            let mut buf = [0u8; H2_PREFACE.len()];
            let peeked = stream
                .try_peek(&mut buf)
                .await
                .map_err(|e| {
                    // this error is normal when h1 reuse and close the connection
                    debug!("Read error while peeking h2c preface {e}");
                    e
                })
                .ok()?;
            // not all streams support peeking
            if peeked {
                // turn off h2c (use h1) if h2 preface doesn't exist
                h2c = buf == H2_PREFACE;
            }
        }
        if h2c || matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            // Boxed (patched in): an HTTP/2 connection's state would otherwise size the
            // future of every HTTP/1 connection too.
            Box::pin(serve_h2(self, stream, shutdown)).await;
            None
        } else if custom || matches!(stream.selected_alpn_proto(), Some(ALPN::Custom(_))) {
            self.clone().process_custom_session(stream, shutdown).await
        } else {
            // No ALPN or ALPN::H1 and h2c was not configured, fallback to HTTP/1.1
            serve_h1(self, stream, shutdown).await
        }
    }

    async fn cleanup(&self) {
        self.http_cleanup().await;
    }
}

/// Serves an HTTP/2 connection.
async fn serve_h2<T>(app: &Arc<T>, stream: Stream, shutdown: &ShutdownWatch)
where
    T: HttpServerApp + Send + Sync + 'static,
{
    // create a shared connection digest
    let digest = Arc::new(Digest {
        ssl_digest: stream.get_ssl_digest(),
        // TODO: log h2 handshake time
        timing_digest: stream.get_timing_digest(),
        proxy_digest: stream.get_proxy_digest(),
        socket_digest: stream.get_socket_digest(),
    });

    let h2_options = app.h2_options();
    let h2_conn = match server::handshake(stream, h2_options).await {
        Err(e) => {
            error!("H2 handshake error {e}");
            return;
        }
        Ok(c) => c,
    };

    // The accept-loop body — including the graceful-shutdown state
    // machine — lives in `server::accept_downstream_sessions` so that
    // the same code path is exercised by tests in `protocols::http::v2`.
    let app = app.clone();
    let shutdown_for_session = shutdown.clone();
    let h2_idle_timeout = app.server_options().and_then(|o| o.h2_idle_timeout);
    server::accept_downstream_sessions(
        h2_conn,
        digest,
        shutdown.clone(),
        h2_idle_timeout,
        |h2_stream, guard| {
            let app = app.clone();
            let shutdown = shutdown_for_session.clone();
            pingora_runtime::current_handle().spawn(async move {
                // hold `guard` for the session's lifetime so the accept
                // loop's idle timeout sees this connection as busy.
                let _guard = guard;
                // Note, `PersistentSettings` not currently relevant for h2
                app.process_new_http(ServerSession::new_http2(h2_stream), &shutdown)
                    .await;
            });
        },
    )
    .await;
}

/// Serves an HTTP/1 connection, one request after the other while it is kept alive.
///
/// Patched in: each request's first bytes are awaited on the bare stream, before its session
/// exists, so that a connection waiting for a request (a new one, or an idle keepalive one)
/// holds no session, no request buffer and no request future, only the stream. The wait is
/// bounded like the session's own read would be: by the request head timeout from the
/// connection's start for its first request, by the keepalive timeout for the next ones (which
/// also end at a graceful shutdown).
async fn serve_h1<T>(app: &Arc<T>, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream>
where
    T: HttpServerApp + Send + Sync + 'static,
{
    let started = Instant::now();
    let options = app.server_options();
    let mut settings: Option<HttpPersistentSettings> = None;
    let mut first = true;
    // One wait for a graceful shutdown per connection, not one per request: made once, it
    // stays registered with the watch between requests instead of registering and leaving
    // again around each wait.
    let mut watch = shutdown.clone();
    let shutdown_wait = async move {
        if watch.wait_for(|stop| *stop).await.is_err() {
            // No one can shut this server down any more: wait on.
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(shutdown_wait);
    let first_limit = options
        .and_then(|o| o.h1_request_head.timeout)
        .unwrap_or(DEFAULT_FIRST_READ_TIMEOUT);
    let first_deadline = tokio::time::Instant::from_std(started).checked_add(first_limit);
    // One timer per connection (patched in), armed for its first wait and moved only to an
    // earlier deadline, see `first_bytes`.
    let timer = tokio::time::sleep_until(first_deadline.unwrap_or_else(far_future));
    tokio::pin!(timer);
    loop {
        let carried = settings
            .as_mut()
            .and_then(|s| s.pipelined_prefix.take())
            .filter(|prefix| !prefix.is_empty());
        let prefix = match carried {
            Some(prefix) => prefix,
            None => {
                let (deadline, watch) = if first {
                    (first_deadline, None)
                } else {
                    let wait = next_request_wait(options, settings.as_ref());
                    let deadline = match wait {
                        Duration::MAX => None,
                        wait => tokio::time::Instant::now().checked_add(wait),
                    };
                    (deadline, Some(shutdown_wait.as_mut()))
                };
                let most = options.map_or(INIT_HEAD_READ, |o| {
                    o.h1_request_head.max_size.clamp(1, INIT_HEAD_READ)
                });
                let waited = first_bytes(&mut stream, deadline, timer.as_mut(), most, watch);
                match waited.await {
                    Arrival::Bytes(bytes) => bytes,
                    Arrival::Closed => return None,
                    Arrival::TimedOut => {
                        app.h1_request_wait_timed_out(first);
                        return None;
                    }
                }
            }
        };
        // Patched in: the request waits its turn under the thread's bound, if one is set.
        let _admitted = match options.and_then(|o| o.h1_admission) {
            Some(bound) => Some(admission::admit(bound).await),
            None => None,
        };
        let session = h1_session(
            app.as_ref(),
            stream,
            settings.take(),
            prefix,
            first.then(|| started.elapsed()),
            shutdown,
        );
        // Boxed (patched in): the request's future (its head read and the whole proxying)
        // would otherwise size this connection's future, which also waits between requests:
        // it is made when a request begins and freed when it ends.
        let reused = boxed_in_place(|| app.process_new_http(session, shutdown)).await?;
        (stream, settings) = reused.consume();
        first = false;
    }
}

/// `make()`'s future in a box allocated before it is made (patched in), so that the future
/// can be written straight into the box: `Box::pin(make())` makes it on the stack first and
/// copies it in whole, several KiB for a request's future.
pub fn boxed_in_place<F: std::future::Future>(
    make: impl FnOnce() -> F,
) -> std::pin::Pin<Box<F>> {
    Box::into_pin(crate::utils::boxed_with(make))
}

/// Pingora's wait for a connection's first request when no head timeout is set.
const DEFAULT_FIRST_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The most bytes read while waiting for a request: a request head buffer's first read.
const INIT_HEAD_READ: usize = 4096;

/// How long a kept-alive connection waits for its next request.
fn next_request_wait(
    options: Option<&HttpServerOptions>,
    settings: Option<&HttpPersistentSettings>,
) -> Duration {
    if let Some(idle) = options.and_then(|o| o.h1_keepalive_timeout) {
        return Duration::from_secs(idle.as_secs().max(1));
    }
    match settings.map(|s| s.keepalive_timeout) {
        Some(Some(0)) => Duration::MAX,
        Some(Some(secs)) => Duration::from_secs(secs),
        // No keepalive: what the session's read timeout would allow.
        _ => DEFAULT_FIRST_READ_TIMEOUT,
    }
}

/// The session for a request whose first bytes are `prefix`; `first_after`: the connection's
/// age when this is its first request.
fn h1_session<T: HttpServerApp>(
    app: &T,
    stream: Stream,
    mut settings: Option<HttpPersistentSettings>,
    prefix: BytesMut,
    first_after: Option<Duration>,
    shutdown: &ShutdownWatch,
) -> ServerSession {
    let digest = settings.as_mut().and_then(|s| s.digest.take());
    let mut session = ServerSession::new_http1_with_digest(stream, digest);
    let options = app.server_options();
    match first_after {
        Some(elapsed) => {
            if *shutdown.borrow() {
                // stop downstream from reusing if this service is shutting down soon
                session.set_keepalive(None);
            } else {
                // default 60s
                session.set_keepalive(Some(60));
            }
            session.set_keepalive_reuses_remaining(
                options.and_then(|opts| opts.keepalive_request_limit),
            );
            if let Some(options) = options {
                if !*shutdown.borrow() {
                    options.apply_h1(&mut session, Some(elapsed));
                }
            }
        }
        None => {
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            if let Some(options) = options {
                options.apply_h1(&mut session, None);
            }
        }
    }
    session.set_pipelined_prefix(prefix);
    session
}

/// How the wait for a request's first bytes ended.
enum Arrival {
    Bytes(BytesMut),
    /// The client closed the connection, a read failed or the server is shutting down.
    Closed,
    TimedOut,
}

/// A deadline no wait reaches: thirty years from now.
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86400 * 365 * 30)
}

/// Waits until `deadline` (`None`: for ever) for the first bytes of a request and reads at
/// most `most` of them. The buffer they are kept in is made only once they have come, not
/// while waiting.
///
/// `timer` is the connection's (patched in). It is moved only to an earlier deadline: a
/// later one, the usual case of a kept-alive connection's next wait, leaves it where it is,
/// and when it goes off before `deadline` it is moved to `deadline` then. A wait so costs a
/// clock read, not a timer set and cancelled (nginx's timers are lazy the same way), and a
/// busy connection's timer goes off once per keep-alive timeout, not at all otherwise.
async fn first_bytes(
    stream: &mut Stream,
    deadline: Option<tokio::time::Instant>,
    mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
    most: usize,
    shutdown: Option<std::pin::Pin<&mut impl std::future::Future<Output = ()>>>,
) -> Arrival {
    use std::future::Future;
    use std::task::Poll;
    use tokio::io::{AsyncRead, ReadBuf};
    let read = std::future::poll_fn(|cx| {
        // Read onto the stack and copy what came into a buffer of its own: most polls here
        // find nothing to read, and a heap buffer would be made and freed for each of them.
        let mut landing = [std::mem::MaybeUninit::<u8>::uninit(); INIT_HEAD_READ];
        let mut read_buf = ReadBuf::uninit(&mut landing[..most.min(INIT_HEAD_READ)]);
        let start = read_buf.filled().as_ptr();
        match std::pin::Pin::new(&mut *stream).poll_read(cx, &mut read_buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => {
                debug!("Read error while waiting for a request: {e}");
                Poll::Ready(None)
            }
            Poll::Ready(Ok(())) => {
                let filled = read_buf.filled();
                // The reader must not have swapped the buffer for another.
                if filled.as_ptr() != start {
                    return Poll::Ready(None);
                }
                if filled.is_empty() {
                    return Poll::Ready(None);
                }
                let mut buf = BytesMut::with_capacity(most);
                buf.extend_from_slice(filled);
                Poll::Ready(Some(buf))
            }
        }
    });
    let stop = async {
        match shutdown {
            Some(shutdown) => shutdown.await,
            None => std::future::pending().await,
        }
    };
    let bounded = async {
        let Some(deadline) = deadline else {
            return Ok(read.await);
        };
        // Tokio's timer (patched in), not Pingora's: its entry is part of the connection's
        // future and goes with it, where Pingora's keeps a shared entry per 10 ms until the
        // wait would have ended (75 s for a kept-alive connection), pinning the allocator's
        // pages after a burst of connections has closed.
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        let mut read = std::pin::pin!(read);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(arrived) = read.as_mut().poll(cx) {
                return Poll::Ready(Ok(arrived));
            }
            loop {
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if timer.deadline() >= deadline {
                    return Poll::Ready(Err(()));
                }
                timer.as_mut().reset(deadline);
            }
        })
        .await
    };
    tokio::select! {
        biased;
        read = bounded => match read {
            Ok(Some(bytes)) => Arrival::Bytes(bytes),
            Ok(None) => Arrival::Closed,
            Err(_) => Arrival::TimedOut,
        },
        _ = stop => Arrival::Closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_test::io::Builder;

    #[test]
    fn test_persistent_settings_user_context_roundtrip() {
        // Create a mock H1 session
        let mock_io = Builder::new().build();
        let mut session = ServerSession::new_http1(Box::new(mock_io));
        session.set_keepalive(Some(60));

        // Snapshot settings (no user context yet)
        let mut settings = HttpPersistentSettings::for_session(&session);
        assert!(settings.take_user_context().is_none());

        // Set user context
        settings.set_user_context(Box::new(123u64));

        // Apply to a fresh session -- user context should transfer
        let mock_io2 = Builder::new().build();
        let mut session2 = ServerSession::new_http1(Box::new(mock_io2));
        settings.apply_to_session(&mut session2);

        // The user context should now be on the session
        let ctx = session2.take_connection_user_context();
        assert!(ctx.is_some());
        let val = ctx.unwrap().downcast::<u64>().unwrap();
        assert_eq!(*val, 123u64);

        // Keepalive should also have been applied
        assert_eq!(session2.get_keepalive(), Some(60));
    }

    #[test]
    fn test_persistent_settings_no_user_context_by_default() {
        let mock_io = Builder::new().build();
        let mut session = ServerSession::new_http1(Box::new(mock_io));
        session.set_keepalive(Some(30));

        let settings = HttpPersistentSettings::for_session(&session);

        let mock_io2 = Builder::new().build();
        let mut session2 = ServerSession::new_http1(Box::new(mock_io2));
        settings.apply_to_session(&mut session2);

        // No user context should be present
        assert!(session2.take_connection_user_context().is_none());
        // Keepalive should still work
        assert_eq!(session2.get_keepalive(), Some(30));
    }
}
