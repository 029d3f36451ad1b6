//! A fake peer: one loopback address serving HTTP/1.1 and HTTPS on the tailnet's two ports.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::alloc::BoundPeer;
use crate::{delay, http, tls, FakeTailnetError, PeerSpec, ResponseSpec};

/// Time allowed for a client to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(20);

/// A request as the peer saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenRequest {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The request target as received (origin form `/path?query`, or absolute form).
    pub uri: String,
    /// Header names (lowercase) and values; same-name headers are grouped in arrival order.
    pub headers: Vec<(String, String)>,
    /// Bytes of request body received (0 until the body has been read completely).
    pub body_len: u64,
    /// Whether the request came over HTTPS.
    pub tls: bool,
    /// The SNI the client sent (HTTPS only).
    pub sni: Option<String>,
}

impl SeenRequest {
    /// The first value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Connection facts handed to each request.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConnInfo {
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The client's SNI, if any.
    pub sni: Option<String>,
}

/// A running fake peer. Cheap to clone; all clones control the same peer.
#[derive(Clone, Debug)]
pub struct FakePeer {
    inner: Arc<PeerInner>,
}

#[derive(Debug)]
struct PeerInner {
    name: String,
    fqdn: String,
    ip: Ipv4Addr,
    http_port: u16,
    https_port: u16,
    requests: AtomicU64,
    connections: AtomicU64,
    seq: AtomicU64,
    response: RwLock<ResponseSpec>,
    last: Mutex<Option<(u64, SeenRequest)>>,
    listeners: Mutex<Vec<Arc<TcpListener>>>,
    emulated_rtt: Duration,
    stop: CancellationToken,
}

impl FakePeer {
    /// Starts serving on already bound listeners; `parent` cancels it with the tailnet.
    pub(crate) fn start(
        spec: &PeerSpec,
        fqdn: String,
        bound: BoundPeer,
        parent: &CancellationToken,
        runtime: &Handle,
    ) -> Result<FakePeer, FakeTailnetError> {
        let acceptor = TlsAcceptor::from(tls::server_config(&fqdn, &spec.tls_names)?);
        let (http, https) = to_tokio(bound.http, bound.https, runtime)?;
        let port = |l: &TcpListener| l.local_addr().map(|a| a.port());
        let ports = port(&http).and_then(|h| Ok((h, port(&https)?)));
        let (http_port, https_port) =
            ports.map_err(|e| FakeTailnetError::io("read peer listener port", e))?;
        let (http, https) = (Arc::new(http), Arc::new(https));
        let peer = FakePeer {
            inner: Arc::new(PeerInner {
                name: spec.name.clone(),
                fqdn,
                ip: bound.ip,
                http_port,
                https_port,
                requests: AtomicU64::new(0),
                connections: AtomicU64::new(0),
                seq: AtomicU64::new(0),
                response: RwLock::new(spec.response.clone()),
                last: Mutex::new(None),
                listeners: Mutex::new(vec![http.clone(), https.clone()]),
                emulated_rtt: spec.emulated_rtt,
                stop: parent.child_token(),
            }),
        };
        runtime.spawn(peer.clone().accept_loop(http, None));
        runtime.spawn(peer.clone().accept_loop(https, Some(acceptor)));
        Ok(peer)
    }

    /// The short name, e.g. `docs`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The fully qualified name, e.g. `docs.tail0fake.ts.net` (no trailing dot).
    pub fn fqdn(&self) -> &str {
        &self.inner.fqdn
    }

    /// The peer's address: random in 127.100.0.0/16, or the one its [`PeerSpec::ip`] gave.
    pub fn ip(&self) -> Ipv4Addr {
        self.inner.ip
    }

    /// Where the peer serves plain HTTP/1.1.
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from((self.inner.ip, self.inner.http_port))
    }

    /// Where the peer serves HTTPS (certificate for [`FakePeer::fqdn`] from the tailnet CA).
    pub fn https_addr(&self) -> SocketAddr {
        SocketAddr::from((self.inner.ip, self.inner.https_port))
    }

    /// Requests received over HTTP and HTTPS, counted when the request head arrives.
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// Connections accepted over HTTP and HTTPS.
    pub fn connections(&self) -> u64 {
        self.inner.connections.load(Ordering::SeqCst)
    }

    /// Changes the default response from now on.
    pub fn set_response(&self, spec: ResponseSpec) {
        *self
            .inner
            .response
            .write()
            .unwrap_or_else(|e| e.into_inner()) = spec;
    }

    /// The current default response.
    pub fn response(&self) -> ResponseSpec {
        self.inner
            .response
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The most recent request whose head arrived (its `body_len` is final once the body is read).
    pub fn last_request(&self) -> Option<SeenRequest> {
        let last = self.inner.last.lock().unwrap_or_else(|e| e.into_inner());
        last.as_ref().map(|(_, seen)| seen.clone())
    }

    /// Closes both listeners at once (new connections are refused) and drops open connections.
    pub fn stop(&self) {
        let listeners = std::mem::take(
            &mut *self
                .inner
                .listeners
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for listener in &listeners {
            // On Linux, shutting down a listening socket stops it listening immediately,
            // before the accept task gets around to dropping it.
            let _ = SockRef::from(listener.as_ref()).shutdown(std::net::Shutdown::Both);
        }
        self.inner.stop.cancel();
    }

    /// Whether [`FakePeer::stop`] was called (or the tailnet was dropped).
    pub fn is_stopped(&self) -> bool {
        self.inner.stop.is_cancelled()
    }

    /// Counts a new request and records it as the last one; returns its sequence number.
    pub(crate) fn record_request(&self, seen: SeenRequest) -> u64 {
        self.inner.requests.fetch_add(1, Ordering::SeqCst);
        let seq = self.inner.seq.fetch_add(1, Ordering::SeqCst);
        let mut last = self.inner.last.lock().unwrap_or_else(|e| e.into_inner());
        *last = Some((seq, seen));
        seq
    }

    /// Sets the body length of request `seq` if it is still the last one.
    pub(crate) fn record_body_len(&self, seq: u64, body_len: u64) {
        let mut last = self.inner.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, seen)) = last.as_mut() {
            if *s == seq {
                seen.body_len = body_len;
            }
        }
    }

    /// The token cancelled when this peer stops.
    pub(crate) fn stop_token(&self) -> &CancellationToken {
        &self.inner.stop
    }

    /// Accepts connections until stopped, serving each on its own task.
    async fn accept_loop(self, listener: Arc<TcpListener>, tls: Option<TlsAcceptor>) {
        let token = self.inner.stop.clone();
        loop {
            let accepted = tokio::select! {
                _ = token.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    self.inner.connections.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.set_nodelay(true);
                    let rtt = self.inner.emulated_rtt;
                    if rtt.is_zero() {
                        tokio::spawn(self.clone().serve_stream(stream, tls.clone()));
                    } else {
                        let now = tokio::time::Instant::now();
                        let line = delay::delay_line(stream, rtt, now, &token);
                        tokio::spawn(self.clone().serve_stream(line, tls.clone()));
                    }
                }
                Err(_) => tokio::time::sleep(ACCEPT_ERROR_PAUSE).await,
            }
        }
    }

    /// Serves one accepted connection (after a TLS handshake for HTTPS) until stopped.
    async fn serve_stream<S>(self, stream: S, tls: Option<TlsAcceptor>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let token = self.inner.stop.clone();
        let work = async move {
            let Some(acceptor) = tls else {
                return self.serve(stream, ConnInfo::default()).await;
            };
            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            if let Ok(Ok(tls_stream)) = handshake.await {
                let sni = tls_stream.get_ref().1.server_name().map(str::to_string);
                self.serve(tls_stream, ConnInfo { tls: true, sni }).await;
            }
        };
        tokio::select! {
            _ = token.cancelled() => {}
            _ = work => {}
        }
    }

    /// Runs HTTP/1.1 (keep-alive, upgrades) over one stream.
    async fn serve<I>(self, io: I, conn: ConnInfo)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service =
            hyper::service::service_fn(move |req| http::handle(req, self.clone(), conn.clone()));
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(io), service)
            .with_upgrades()
            .await;
    }
}

/// Converts bound std listeners into tokio ones registered with `runtime`.
fn to_tokio(
    http: std::net::TcpListener,
    https: std::net::TcpListener,
    runtime: &Handle,
) -> Result<(TcpListener, TcpListener), FakeTailnetError> {
    let _guard = runtime.enter();
    let convert = |l: std::net::TcpListener| {
        l.set_nonblocking(true)?;
        TcpListener::from_std(l)
    };
    let err = |e| FakeTailnetError::io("register peer listener", e);
    Ok((convert(http).map_err(err)?, convert(https).map_err(err)?))
}
