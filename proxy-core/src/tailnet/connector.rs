//! [`TailnetConnector`]: Pingora's custom L4 connector for upstreams on the userspace
//! tailnet.

use async_trait::async_trait;
use pingora::connectors::L4Connect;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::protocols::l4::stream::Stream;
use pingora::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora::{Error, ErrorType};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::dial::{TailnetDialer, TailnetStream};

/// Dials an upstream's connections through the userspace tailnet. Each upstream with this
/// transport holds one in its peer's `custom_l4`; [`super::UserspaceTailnet`] hands it the
/// dialer once the node is up (until then connecting fails, as an unresolved name does).
#[derive(Default)]
pub(crate) struct TailnetConnector {
    dialer: OnceLock<Arc<dyn TailnetDialer>>,
}

impl std::fmt::Debug for TailnetConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TailnetConnector")
            .field("ready", &self.dialer.get().is_some())
            .finish()
    }
}

impl TailnetConnector {
    /// Dials through `dialer` from now on (the first dialer handed over stays).
    pub(crate) fn install(&self, dialer: &Arc<dyn TailnetDialer>) {
        let _ = self.dialer.set(dialer.clone());
    }
}

#[async_trait]
impl L4Connect for TailnetConnector {
    async fn connect(&self, addr: &PeerAddr) -> pingora::Result<Stream> {
        let Some(addr) = addr.as_inet().copied() else {
            return Error::e_explain(
                ErrorType::SocketError,
                "the userspace tailnet dials IP addresses only",
            );
        };
        let Some(dialer) = self.dialer.get() else {
            return Error::e_explain(
                ErrorType::ConnectNoRoute,
                "the userspace tailnet node is not up yet",
            );
        };
        // The upstream's connect timeout bounds this: Pingora applies
        // `total_connection_timeout` around custom connectors too.
        let stream = dialer.connect(addr).await.map_err(|e| {
            let kind = match e.kind() {
                io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => {
                    ErrorType::ConnectRefused
                }
                io::ErrorKind::TimedOut => ErrorType::ConnectTimedout,
                _ => ErrorType::ConnectError,
            };
            Error::because(kind, format!("dialing {addr} on the userspace tailnet"), e)
        })?;
        let socket = VirtualTcp::new(stream);
        Ok(Stream::from(VirtualSocketStream::new(Box::new(socket))))
    }
}

/// How much one read from the tailnet stream asks for.
const READ_CHUNK: usize = 16 * 1024;

/// A tailnet stream as a Pingora virtual socket. Reads go through a buffer of a fixed size:
/// tailscale-rs keeps a read that was not polled to its end (Pingora's pool drops its
/// idle-connection read when the connection is reused) and finishes it with the next caller's
/// buffer, so every read must ask for the same amount.
#[derive(Debug)]
struct VirtualTcp {
    inner: TailnetStream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl VirtualTcp {
    fn new(inner: TailnetStream) -> Self {
        Self {
            inner,
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }
}

impl AsyncRead for VirtualTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start == this.end {
            let mut chunk = ReadBuf::new(&mut this.buf);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk))?;
            this.start = 0;
            this.end = chunk.filled().len();
        }
        let n = out.remaining().min(this.end - this.start);
        out.put_slice(&this.buf[this.start..this.start + n]);
        this.start += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for VirtualTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl VirtualSocket for VirtualTcp {
    fn set_socket_option(&self, _opt: VirtualSockOpt) -> io::Result<()> {
        // A userspace stream has no Nagle or keepalive knobs to turn; Pingora sets both on
        // every new connection.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tailnet::{TailnetError, TailnetState};
    use pingora::protocols::UniqueID;
    use std::net::{IpAddr, SocketAddr};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Streams to nowhere: each connect is one end of an in-memory pipe.
    struct Pipes;

    #[async_trait]
    impl TailnetDialer for Pipes {
        async fn connect(&self, _addr: SocketAddr) -> io::Result<TailnetStream> {
            Ok(Box::new(tokio::io::duplex(64).0))
        }

        async fn peer_addresses(&self, _name: &str) -> Result<Vec<IpAddr>, TailnetError> {
            Ok(Vec::new())
        }

        async fn state(&self) -> TailnetState {
            TailnetState::Ready
        }
    }

    #[tokio::test]
    async fn connections_fail_until_the_node_is_installed_then_each_has_its_own_pool_id() {
        let connector = TailnetConnector::default();
        let addr = PeerAddr::Inet("100.64.0.2:80".parse().unwrap());
        let e = connector.connect(&addr).await.unwrap_err();
        assert_eq!(e.etype(), &ErrorType::ConnectNoRoute);
        let dialer: Arc<dyn TailnetDialer> = Arc::new(Pipes);
        connector.install(&dialer);
        let a = connector.connect(&addr).await.unwrap();
        let b = connector.connect(&addr).await.unwrap();
        // Pingora's pool keys idle connections by this id: virtual streams have no fd, and
        // the vendored pingora-core gives each an id of its own (negative, never an fd).
        assert!(a.id() < -1 && b.id() < -1, "{} {}", a.id(), b.id());
        assert_ne!(a.id(), b.id());
    }

    #[tokio::test]
    async fn reads_larger_than_the_caller_buffer_are_handed_out_in_order() {
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let mut socket = VirtualTcp::new(Box::new(near));
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        far.write_all(&data).await.unwrap();
        drop(far);
        let mut got = Vec::new();
        let mut small = [0u8; 7];
        loop {
            let n = socket.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, data);
    }
}
