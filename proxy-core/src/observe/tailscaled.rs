//! A minimal client for tailscaled's LocalAPI over its unix socket: just enough to ask
//! whether the node is up (`GET /localapi/v0/status` -> `BackendState`).

use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The state tailscaled reports when the node is connected to the tailnet.
pub const RUNNING: &str = "Running";

/// Largest status answer read (a big tailnet's peer list fits comfortably).
const MAX_RESPONSE: u64 = 16 << 20;

/// Why the LocalAPI could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum LocalApiError {
    /// Connecting, writing or reading failed.
    #[error("tailscaled LocalAPI at {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No answer within the time limit.
    #[error("tailscaled LocalAPI did not answer in time")]
    Timeout,
    /// The answer was not a 200 with a JSON body holding `BackendState`.
    #[error("tailscaled LocalAPI answered unexpectedly: {0}")]
    BadAnswer(String),
}

/// Talks to tailscaled's LocalAPI.
#[derive(Debug, Clone)]
pub struct LocalApiClient {
    socket: PathBuf,
    timeout: Duration,
}

impl LocalApiClient {
    /// A client for the socket at `socket` (tailscaled's default is
    /// `/var/run/tailscale/tailscaled.sock`).
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: Duration::from_secs(2),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// tailscaled's `BackendState` (`Running`, `Starting`, `NeedsLogin`, `Stopped`...).
    pub async fn backend_state(&self) -> Result<String, LocalApiError> {
        match tokio::time::timeout(self.timeout, self.fetch_status()).await {
            Ok(result) => result,
            Err(_) => Err(LocalApiError::Timeout),
        }
    }

    /// Whether tailscaled reports `Running`.
    pub async fn is_running(&self) -> bool {
        matches!(self.backend_state().await, Ok(state) if state == RUNNING)
    }

    async fn fetch_status(&self) -> Result<String, LocalApiError> {
        let io = |source| LocalApiError::Io {
            path: self.socket.clone(),
            source,
        };
        let mut stream = UnixStream::connect(&self.socket).await.map_err(io)?;
        // HTTP/1.0 so the answer is not chunked; tailscaled checks the Host name.
        let request = "GET /localapi/v0/status HTTP/1.0\r\nHost: local-tailscaled.sock\r\n\r\n";
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE)
            .read_to_end(&mut raw)
            .await
            .map_err(io)?;
        parse_status_response(&raw)
    }
}

/// Extracts `BackendState` from a raw HTTP response.
fn parse_status_response(raw: &[u8]) -> Result<String, LocalApiError> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| LocalApiError::BadAnswer("no header end".into()))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        return Err(LocalApiError::BadAnswer(status_line.to_owned()));
    }
    let body: serde_json::Value = serde_json::from_slice(&raw[split + 4..])
        .map_err(|e| LocalApiError::BadAnswer(format!("body is not JSON: {e}")))?;
    body.get("BackendState")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| LocalApiError::BadAnswer("no BackendState".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_backend_state() {
        let raw = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"BackendState\":\"Running\",\"Self\":{}}";
        assert_eq!(parse_status_response(raw).unwrap(), "Running");
        assert!(parse_status_response(b"HTTP/1.0 403 Forbidden\r\n\r\n").is_err());
        assert!(parse_status_response(b"HTTP/1.0 200 OK\r\n\r\n{}").is_err());
    }

    #[tokio::test]
    async fn missing_socket_is_an_error() {
        let client = LocalApiClient::new("/nonexistent/tailscaled.sock");
        assert!(matches!(
            client.backend_state().await,
            Err(LocalApiError::Io { .. })
        ));
        assert!(!client.is_running().await);
    }
}
