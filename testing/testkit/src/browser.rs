//! A real browser for tests: Debian's headless `chromium`, driven over the Chrome DevTools
//! Protocol (a WebSocket, JSON messages) with the workspace's own WebSocket client.
//!
//! Chromium picks its own debugging port (`--remote-debugging-port=0`) and writes it to
//! `DevToolsActivePort` in its fresh profile directory, so no port is ever chosen, released
//! and bound again. Each [`Chromium`] has its own profile (cookies included), removed when
//! it is dropped; the browser's whole process group is ended then too.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The flags every test browser starts with: headless, no sandbox (tests run as root), and
/// nothing that phones home or updates itself.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
];

/// What a page shows: its URL and its text.
#[derive(Debug, Clone, Default)]
pub struct PageState {
    /// `location.href`.
    pub url: String,
    /// `document.body.innerText`.
    pub text: String,
}

/// A cookie the browser holds.
#[derive(Debug, Clone)]
pub struct BrowserCookie {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
    /// The `Secure` attribute.
    pub secure: bool,
    /// The `HttpOnly` attribute.
    pub http_only: bool,
    /// The `SameSite` attribute as Chromium reports it (`Lax`, `Strict`, `None`), if set.
    pub same_site: Option<String>,
}

/// A headless Chromium with one tab. Killed (with its child processes) on drop.
pub struct Chromium {
    child: Child,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// The tab's DevTools session, once a page is open.
    session: Option<String>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Starts `chromium` with [`CHROMIUM_FLAGS`], a fresh profile and `extra` flags (e.g.
    /// `--host-resolver-rules=MAP forge.example.com 127.0.0.1`); waits (at most 30 s) for
    /// its DevTools endpoint and connects.
    pub async fn start(extra: &[&str]) -> Chromium {
        let profile = tempfile::tempdir().expect("browser profile dir");
        let child = Command::new("chromium")
            .args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so drop ends the renderers and helpers with it.
            .process_group(0)
            .spawn()
            .expect("start chromium (Debian package `chromium`)");
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let endpoint = loop {
            let text = std::fs::read_to_string(&port_file).unwrap_or_default();
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                break format!("ws://127.0.0.1:{port}{path}");
            }
            assert!(
                Instant::now() < deadline,
                "chromium wrote no DevToolsActivePort"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (socket, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .expect("connect to chromium's DevTools endpoint");
        Chromium {
            child,
            socket,
            next_id: 0,
            session: None,
            _profile: profile,
        }
    }

    /// Sends a DevTools command (to the tab when `on_tab`) and returns its result, or the
    /// protocol's error message. Events arriving meanwhile are skipped.
    async fn call(&mut self, method: &str, params: Value, on_tab: bool) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if on_tab {
            let session = self.session.clone().ok_or("no page is open")?;
            message["sessionId"] = Value::String(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .map_err(|e| format!("send {method}: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = tokio::time::timeout(left, self.socket.next())
                .await
                .map_err(|_| format!("{method}: no answer from chromium"))?;
            let Some(Ok(Message::Text(text))) = next else {
                match next {
                    Some(Ok(_)) => continue,
                    _ => return Err(format!("{method}: the DevTools connection ended")),
                }
            };
            let reply: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            if reply["id"].as_u64() != Some(id) {
                continue; // an event, or an answer to no one
            }
            if let Some(error) = reply.get("error") {
                return Err(format!("{method}: {error}"));
            }
            return Ok(reply["result"].clone());
        }
    }

    /// Opens `url` in the tab (the first call creates the tab).
    pub async fn open(&mut self, url: &str) {
        if self.session.is_some() {
            self.call("Page.navigate", json!({ "url": url }), true)
                .await
                .expect("navigate");
            return;
        }
        let target = self
            .call("Target.createTarget", json!({ "url": url }), false)
            .await
            .expect("open a tab");
        let target_id = target["targetId"].as_str().expect("target id").to_string();
        let attached = self
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
                false,
            )
            .await
            .expect("attach to the tab");
        self.session = attached["sessionId"].as_str().map(str::to_string);
    }

    /// The tab's URL and text now (empty while a page is being replaced).
    pub async fn page(&mut self) -> PageState {
        let expression = "JSON.stringify({url: location.href, text: document.body ? document.body.innerText : ''})";
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
                true,
            )
            .await;
        let Ok(result) = result else {
            return PageState::default();
        };
        let parsed: Value = result["result"]["value"]
            .as_str()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        PageState {
            url: parsed["url"].as_str().unwrap_or_default().to_string(),
            text: parsed["text"].as_str().unwrap_or_default().to_string(),
        }
    }

    /// Polls the tab every 100 ms until `done` holds for what it shows, at most `timeout`;
    /// returns the last state seen and whether `done` held.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        done: impl Fn(&PageState) -> bool,
    ) -> (PageState, bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.page().await;
            if done(&state) {
                return (state, true);
            }
            if Instant::now() >= deadline {
                return (state, false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every cookie the browser holds.
    pub async fn cookies(&mut self) -> Vec<BrowserCookie> {
        let result = self
            .call("Storage.getCookies", json!({}), false)
            .await
            .expect("read the browser's cookies");
        result["cookies"]
            .as_array()
            .map(|cookies| {
                cookies
                    .iter()
                    .map(|c| BrowserCookie {
                        name: c["name"].as_str().unwrap_or_default().to_string(),
                        value: c["value"].as_str().unwrap_or_default().to_string(),
                        secure: c["secure"].as_bool().unwrap_or(false),
                        http_only: c["httpOnly"].as_bool().unwrap_or(false),
                        same_site: c["sameSite"].as_str().map(str::to_string),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The browser leads its own process group: end the group, then reap the leader.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
