//! A user-space delay line: emulates a slow network path on one accepted connection when the
//! kernel cannot (no `tc netem`), see [`crate::PeerSpec::emulated_rtt`].

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Bytes read from one side in one go.
const READ_SIZE: usize = 16 * 1024;
/// Chunks in flight per direction before the reader waits (backpressure).
const IN_FLIGHT: usize = 256;

/// Puts `stream` behind a path of round-trip time `rtt` and returns the server's end.
///
/// Each direction holds bytes for `rtt / 2`; bytes from the client are also held until one
/// `rtt` after `accepted`, the TCP handshake the kernel completed without any delay. So a
/// request on a new connection is answered after 2 RTT, on a reused one after 1 RTT, and a
/// TLS 1.3 handshake costs one more, as over a real path with that round trip.
pub(crate) fn delay_line(
    stream: TcpStream,
    rtt: Duration,
    accepted: Instant,
    stop: &CancellationToken,
) -> DuplexStream {
    let (server, line) = tokio::io::duplex(4 * READ_SIZE);
    let (from_client, to_client) = stream.into_split();
    let (from_server, to_server) = tokio::io::split(line);
    let half = rtt / 2;
    spawn_pipe(from_client, to_server, half, accepted + rtt, stop.clone());
    spawn_pipe(from_server, to_client, half, accepted, stop.clone());
    server
}

/// Copies `from` to `to`, delivering each chunk `delay` after it was read (and not before
/// `not_before + delay`), in order, until either side closes or `stop` is cancelled.
fn spawn_pipe<R, W>(
    mut from: R,
    mut to: W,
    delay: Duration,
    not_before: Instant,
    stop: CancellationToken,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(IN_FLIGHT);
    let read = async move {
        let mut buf = vec![0u8; READ_SIZE];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let due = Instant::now().max(not_before) + delay;
            if tx
                .send((due, Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = async { tokio::join!(read, write) } => {}
        }
    });
}
