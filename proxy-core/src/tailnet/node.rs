//! [`TailscaleNode`]: the tailnet node of Tailscale's `tailscale` crate (tailscale-rs).

use async_trait::async_trait;
use std::net::{IpAddr, SocketAddr};

use super::dial::{TailnetDialer, TailnetError, TailnetState, TailnetStream};
use super::TailnetSettings;

/// The key file inside `[tailnet] state_dir`.
const KEY_FILE: &str = "tailscale-rs-keys.json";

/// A tailnet node in this process, from Tailscale's `tailscale` crate: it registers with the
/// coordination server and carries TCP over WireGuard through Tailscale's DERP relays (the
/// crate has no direct connections and no MagicDNS yet).
pub struct TailscaleNode {
    device: tailscale::Device,
}

impl std::fmt::Debug for TailscaleNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TailscaleNode").finish_non_exhaustive()
    }
}

impl TailscaleNode {
    /// Creates the node from `settings`: its keys come from (or go to) the state directory,
    /// the auth key from the environment variable the settings name. The node's actors run
    /// on the calling tokio runtime, which must outlive it.
    pub async fn join(settings: &TailnetSettings) -> Result<Self, TailnetError> {
        tokio::fs::create_dir_all(&settings.state_dir)
            .await
            .map_err(|e| {
                TailnetError::Join(format!(
                    "cannot create state_dir `{}`: {e}",
                    settings.state_dir.display()
                ))
            })?;
        let key_file = settings.state_dir.join(KEY_FILE);
        let mut config = tailscale::Config::default_with_key_file(&key_file)
            .await
            .map_err(|e| TailnetError::Join(format!("key file `{}`: {e}", key_file.display())))?;
        config.control_server_url = settings.control_url.parse().map_err(|e| {
            TailnetError::Join(format!("control_url `{}`: {e}", settings.control_url))
        })?;
        config.requested_hostname = settings.hostname.clone();
        config.client_name = Some(concat!("proxy-core/", env!("CARGO_PKG_VERSION")).to_string());
        // rustls is built with two crypto providers in this process (ring for the proxy's own
        // clients, aws-lc-rs for tailscale-rs), so it cannot pick one for the node's control
        // client by itself: name the one tailscale-rs is built for.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let auth_key = std::env::var(&settings.auth_key_env)
            .ok()
            .filter(|k| !k.is_empty());
        let device = tailscale::Device::new(&config, auth_key)
            .await
            .map_err(|e| TailnetError::Join(e.to_string()))?;
        Ok(Self { device })
    }
}

#[async_trait]
impl TailnetDialer for TailscaleNode {
    async fn connect(&self, addr: SocketAddr) -> std::io::Result<TailnetStream> {
        let stream = self.device.tcp_connect(addr).await.map_err(|e| match e {
            tailscale::Error::Timeout => std::io::Error::new(std::io::ErrorKind::TimedOut, e),
            tailscale::Error::ConnectionReset => {
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e)
            }
            other => std::io::Error::other(other),
        })?;
        Ok(Box::new(stream))
    }

    async fn peer_addresses(&self, name: &str) -> Result<Vec<IpAddr>, TailnetError> {
        let node = self
            .device
            .peer_by_name(name)
            .await
            .map_err(|e| TailnetError::Node(e.to_string()))?;
        // IPv4 only: both addresses reach the same peer, and round-robin over the two would
        // only split the connection pool.
        Ok(node
            .map(|n| vec![IpAddr::V4(n.tailnet_address.ipv4.addr())])
            .unwrap_or_default())
    }

    async fn state(&self) -> TailnetState {
        match self.device.is_authorized().await {
            Ok(tailscale::AuthState::Authorized) => TailnetState::Ready,
            Ok(tailscale::AuthState::NotAuthorized(url)) => TailnetState::NotReady(format!(
                "not authorized: give it an auth key (the variable `[tailnet] auth_key_env` names) or visit {url}"
            )),
            Err(e) => TailnetState::NotReady(e.to_string()),
        }
    }
}
