//! [`TailnetDialer`]: what the proxy needs of a tailnet node.

use async_trait::async_trait;
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream to a tailnet peer: what [`TailnetDialer::connect`] returns.
pub trait TailnetIo: AsyncRead + AsyncWrite + Unpin + Send + Sync + std::fmt::Debug {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + std::fmt::Debug> TailnetIo for T {}

/// A TCP stream on the tailnet, boxed.
pub type TailnetStream = Box<dyn TailnetIo>;

/// Whether a tailnet node can carry traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailnetState {
    /// Joined and authorized.
    Ready,
    /// Not (yet) usable, and why, in words an operator can act on.
    NotReady(String),
}

/// A failure of a tailnet node.
#[derive(Debug, thiserror::Error)]
pub enum TailnetError {
    /// The node could not be created or could not join.
    #[error("cannot join the tailnet: {0}")]
    Join(String),
    /// A question to the node failed.
    #[error("tailnet node: {0}")]
    Node(String),
}

/// A tailnet node the proxy dials through: [`super::TailscaleNode`] in production, anything
/// else that carries TCP to tailnet addresses in tests or embeddings.
#[async_trait]
pub trait TailnetDialer: Send + Sync + 'static {
    /// Opens a TCP connection to `addr` on the tailnet. The proxy bounds it with the
    /// upstream's `connect_timeout`.
    async fn connect(&self, addr: SocketAddr) -> std::io::Result<TailnetStream>;

    /// The tailnet addresses of the peer called `name` (a bare hostname or its full name),
    /// empty if the tailnet has no such peer.
    async fn peer_addresses(&self, name: &str) -> Result<Vec<IpAddr>, TailnetError>;

    /// Whether the node is joined and authorized. May wait on the coordination server: the
    /// caller bounds it.
    async fn state(&self) -> TailnetState;
}
