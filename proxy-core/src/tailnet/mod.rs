//! The userspace tailnet transport: upstreams with `transport = "tailscale-rs"` are dialled
//! through a tailnet node that lives in this process (Tailscale's `tailscale` crate,
//! tailscale-rs) instead of through the kernel and tailscaled's TUN device, for hosts that
//! have neither a TUN device nor root.
//!
//! With the cargo feature `tailscale-rs`:
//!
//! - `TailnetDialer` is what the proxy needs of a tailnet: TCP streams to tailnet
//!   addresses, the addresses of a peer by name, and whether the node is up.
//!   `TailscaleNode` is the tailscale-rs implementation; an embedder or a test can supply
//!   another (e.g. two in-memory network stacks).
//! - `UserspaceTailnet` owns the dialer, off the request path (as the MagicDNS resolver
//!   owns lookups): it joins the tailnet, keeps the peer names of these upstreams resolved
//!   into the same address slots the request path reads, and reports readiness.
//! - Connections go through Pingora's custom L4 connector (`PeerOptions::custom_l4`), so
//!   TLS, SNI, timeouts and the connection pool work as for kernel upstreams; the pool key
//!   of these upstreams differs from a kernel upstream's, so a connection is never reused
//!   across transports.
//!
//! Without the feature only [`TailnetSettings`] exists, and a config that asks for this
//! transport is refused.

#[cfg(feature = "tailscale-rs")]
mod connector;
#[cfg(feature = "tailscale-rs")]
mod dial;
#[cfg(feature = "tailscale-rs")]
mod node;
#[cfg(feature = "tailscale-rs")]
mod service;

#[cfg(feature = "tailscale-rs")]
pub(crate) use connector::TailnetConnector;
#[cfg(feature = "tailscale-rs")]
pub use dial::{TailnetDialer, TailnetError, TailnetIo, TailnetState, TailnetStream};
#[cfg(feature = "tailscale-rs")]
pub use node::TailscaleNode;
#[cfg(feature = "tailscale-rs")]
pub use service::UserspaceTailnet;

use std::path::PathBuf;

/// `[tailnet]`, compiled: how the userspace tailnet node joins the tailnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailnetSettings {
    /// Directory holding the node's keys.
    pub state_dir: PathBuf,
    /// Hostname asked for; `None`: the host's own.
    pub hostname: Option<String>,
    /// Coordination server URL.
    pub control_url: String,
    /// Environment variable holding the auth key.
    pub auth_key_env: String,
}

/// What a config says when it needs this transport in a build without it.
#[cfg(not(feature = "tailscale-rs"))]
pub(crate) const FEATURE_NEEDED: &str =
    "needs the cargo feature `tailscale-rs`, which this build lacks (build with `--features tailscale-rs`)";
