//! `run --wait-for-tailnet`: hold the public listener back until tailscaled is `Running`
//! (or, with `[tailnet]`, until the userspace tailnet node is ready), so the first requests
//! do not meet an unreachable tailnet.

use proxy_core::observe::LocalApiClient;
use proxy_core::RuntimeConfig;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// tailscaled's default LocalAPI socket on Linux.
pub const DEFAULT_SOCKET: &str = "/var/run/tailscale/tailscaled.sock";

/// How often the state is asked while waiting.
const POLL: Duration = Duration::from_millis(250);

/// Parses the `--wait-for-tailnet` value ("30s", "2m").
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    proxy_core::config::units::parse_duration(text)
}

/// Waits until tailscaled reports `Running`, at most `limit`. A config with `[tailnet]`
/// has no tailscaled to wait for: its userspace node is waited for once it runs
/// (`wait_for_userspace_tailnet`, with the `tailscale-rs` feature).
pub fn wait_for_tailnet(config: &RuntimeConfig, limit: Duration) -> anyhow::Result<()> {
    if config.tailnet().is_some() {
        return Ok(());
    }
    let socket = config
        .admin()
        .tailscaled_socket()
        .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from);
    let client = LocalApiClient::new(socket);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(poll_until_running(&client, limit))
}

async fn poll_until_running(client: &LocalApiClient, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let last = match client.backend_state().await {
            Ok(state) if state == proxy_core::observe::tailscaled::RUNNING => {
                tracing::info!("tailscaled is Running");
                return Ok(());
            }
            Ok(state) => format!("tailscaled is {state}"),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            anyhow::bail!("tailnet not up after {:.1}s: {last}", limit.as_secs_f64());
        }
        tracing::info!(state = %last, "waiting for the tailnet");
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the userspace tailnet node is authorized and knows the peer of every
/// `tailscale-rs` upstream, at most `limit` (nothing to wait for without `[tailnet]`).
#[cfg(feature = "tailscale-rs")]
pub fn wait_for_userspace_tailnet(
    tailnet: &std::sync::Arc<proxy_core::tailnet::UserspaceTailnet>,
    limit: Duration,
) -> anyhow::Result<()> {
    if !tailnet.is_configured() {
        return Ok(());
    }
    tracing::info!("waiting for the userspace tailnet");
    tailnet.wait_until_ready(limit).map_err(|reasons| {
        anyhow::anyhow!(
            "tailnet not up after {:.1}s: {}",
            limit.as_secs_f64(),
            reasons.join("; ")
        )
    })?;
    tracing::info!("the userspace tailnet is ready");
    Ok(())
}
