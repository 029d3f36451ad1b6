//! The per-request behaviour of a fake peer: overrides, streaming bodies, echo and WebSocket.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{HeaderName, HeaderValue, CONNECTION, UPGRADE};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::peer::{ConnInfo, FakePeer, SeenRequest};

/// The response body type of every peer response.
pub(crate) type ResBody = BoxBody<Bytes, Infallible>;

/// Size of the static chunk large bodies are streamed from.
const CHUNK_SIZE: usize = 64 * 1024;
/// The filler bytes of sized bodies.
static CHUNK: [u8; CHUNK_SIZE] = [b'x'; CHUNK_SIZE];
/// The bytes of `varied=1` bodies: each byte its offset in the frame, modulo 251.
static VARIED: [u8; CHUNK_SIZE] = varied_chunk();

const fn varied_chunk() -> [u8; CHUNK_SIZE] {
    let mut chunk = [0u8; CHUNK_SIZE];
    let mut i = 0;
    while i < CHUNK_SIZE {
        chunk[i] = (i % 251) as u8;
        i += 1;
    }
    chunk
}

/// The body a peer sends for `size=SIZE&varied=1&frame=FRAME` (`frame` 0 for the default,
/// 64 KiB): frames of `frame` bytes (the last one shorter), each counting up from 0
/// modulo 251, so that a body with any part lost, repeated or out of place differs from it.
pub fn varied_body(size: usize, frame: usize) -> Vec<u8> {
    let frame = frame_size(frame);
    (0..size).map(|i| VARIED[i % frame]).collect()
}

/// A `frame=` value as the frame size it means.
fn frame_size(frame: usize) -> usize {
    match frame {
        0 => CHUNK_SIZE,
        n => n.min(CHUNK_SIZE),
    }
}

/// What one response should look like after applying query overrides to the spec.
struct Plan {
    status: u16,
    size: Option<usize>,
    delay: Duration,
    headers: Vec<(String, String)>,
    /// Body bytes from [`VARIED`] instead of [`CHUNK`].
    varied: bool,
    /// The longest body frame (0: 64 KiB).
    frame: usize,
    /// The body sent without a length, so chunked.
    chunked: bool,
}

/// Handles one request: records it, drains the body, then answers.
pub(crate) async fn handle(
    req: Request<Incoming>,
    peer: FakePeer,
    conn: ConnInfo,
) -> Result<Response<ResBody>, Infallible> {
    let seen = seen_request(&req, &conn);
    let seq = peer.record_request(seen.clone());
    if req.uri().path() == "/__ws" && is_websocket(&req) {
        return Ok(websocket(req, peer));
    }
    let (parts, body) = req.into_parts();
    let received = drain(body).await;
    peer.record_body_len(seq, received);
    if parts.uri.path() == "/__echo" {
        return Ok(echo(&peer, &seen, received));
    }
    let plan = match plan(&peer, parts.uri.query().unwrap_or("")) {
        Ok(plan) => plan,
        Err(msg) => return Ok(bad_request(&peer, msg, received)),
    };
    if !plan.delay.is_zero() {
        tokio::time::sleep(plan.delay).await;
    }
    Ok(respond(&peer, plan, received))
}

/// Captures method, target, headers and TLS facts of a request head.
fn seen_request<B>(req: &Request<B>, conn: &ConnInfo) -> SeenRequest {
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| {
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_string(), value)
        })
        .collect();
    SeenRequest {
        method: req.method().as_str().to_string(),
        uri: req.uri().to_string(),
        headers,
        body_len: 0,
        tls: conn.tls,
        sni: conn.sni.clone(),
    }
}

/// Reads the whole request body, counting bytes without keeping them.
async fn drain(mut body: Incoming) -> u64 {
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    received += data.len() as u64;
                }
            }
            Err(_) => break,
        }
    }
    received
}

/// Merges the peer's current spec with the query overrides.
fn plan(peer: &FakePeer, query: &str) -> Result<Plan, String> {
    let spec = peer.response();
    let mut plan = Plan {
        status: spec.status,
        size: (spec.body_size > 0).then_some(spec.body_size),
        delay: spec.latency,
        headers: spec.headers,
        varied: false,
        frame: 0,
        chunked: false,
    };
    for (key, value) in parse_query(query) {
        apply_override(&mut plan, &key, value)?;
    }
    Ok(plan)
}

/// Applies one `key=value` query parameter to the plan (unknown keys are ignored).
fn apply_override(plan: &mut Plan, key: &str, value: String) -> Result<(), String> {
    let number = |v: &str| v.parse::<u64>().map_err(|_| format!("bad {key}: {v:?}"));
    match key {
        "status" => {
            plan.status = u16::try_from(number(&value)?).map_err(|_| "bad status".to_string())?
        }
        "size" => {
            plan.size = Some(usize::try_from(number(&value)?).map_err(|_| "bad size")?);
        }
        "delay_ms" => plan.delay = Duration::from_millis(number(&value)?),
        "varied" => plan.varied = number(&value)? != 0,
        "chunked" => plan.chunked = number(&value)? != 0,
        "frame" => plan.frame = usize::try_from(number(&value)?).map_err(|_| "bad frame")?,
        "header" => {
            let (name, val) = value
                .split_once(':')
                .ok_or_else(|| format!("bad header (want Name:Value): {value:?}"))?;
            plan.headers
                .push((name.trim().to_string(), val.trim().to_string()));
        }
        "header_size" => {
            // A response head this many bytes larger, in one `X-Padding` header.
            let size = usize::try_from(number(&value)?).map_err(|_| "bad header_size")?;
            plan.headers
                .push(("X-Padding".to_string(), "p".repeat(size)));
        }
        _ => {}
    }
    Ok(())
}

/// Splits a query string into percent-decoded pairs (`+` means space).
fn parse_query(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let spaced = s.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Builds the planned response.
fn respond(peer: &FakePeer, plan: Plan, received: u64) -> Response<ResBody> {
    let Ok(status) = StatusCode::from_u16(plan.status) else {
        return bad_request(peer, format!("bad status {}", plan.status), received);
    };
    let body = if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Empty::new().boxed()
    } else {
        match plan.size {
            None => Full::new(Bytes::from(hello(peer))).boxed(),
            Some(size) => PatternBody {
                remaining: size as u64,
                frame: frame_size(plan.frame),
                chunk: if plan.varied { &VARIED } else { &CHUNK },
                chunked: plan.chunked,
            }
            .boxed(),
        }
    };
    build(peer, status, plan.headers, received, body)
}

/// The default body text.
fn hello(peer: &FakePeer) -> String {
    format!("hello from {}\n", peer.name())
}

/// Assembles a response: defaults, then `extra` headers (which replace same-named defaults).
fn build(
    peer: &FakePeer,
    status: StatusCode,
    extra: Vec<(String, String)>,
    received: u64,
    body: ResBody,
) -> Response<ResBody> {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let headers = res.headers_mut();
    insert(headers, "x-fake-peer", peer.name());
    insert(headers, "content-type", "text/plain");
    let parsed: Vec<(HeaderName, HeaderValue)> = extra
        .iter()
        .filter_map(|(n, v)| Some((n.parse().ok()?, v.parse().ok()?)))
        .collect();
    for (name, _) in &parsed {
        headers.remove(name);
    }
    for (name, value) in parsed {
        headers.append(name, value);
    }
    insert(headers, "x-received-bytes", &received.to_string());
    res
}

/// Inserts a header whose name and value are known to be valid (silently skips otherwise).
fn insert(headers: &mut http::HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// A 400 explaining a bad override.
fn bad_request(peer: &FakePeer, msg: String, received: u64) -> Response<ResBody> {
    let body = Full::new(Bytes::from(msg + "\n")).boxed();
    build(peer, StatusCode::BAD_REQUEST, Vec::new(), received, body)
}

/// `/__echo`: the request as received, as JSON.
fn echo(peer: &FakePeer, seen: &SeenRequest, received: u64) -> Response<ResBody> {
    let headers: Vec<[&str; 2]> = seen
        .headers
        .iter()
        .map(|(n, v)| [n.as_str(), v.as_str()])
        .collect();
    let json = serde_json::json!({
        "method": seen.method,
        "uri": seen.uri,
        "headers": headers,
        "tls": seen.tls,
        "sni": seen.sni,
        "body_len": received,
    });
    let body = Full::new(Bytes::from(json.to_string() + "\n")).boxed();
    let content_type = vec![("content-type".to_string(), "application/json".to_string())];
    build(peer, StatusCode::OK, content_type, received, body)
}

/// Whether the request asks for a WebSocket upgrade.
fn is_websocket<B>(req: &Request<B>) -> bool {
    let has = |name, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(UPGRADE, "websocket") && has(CONNECTION, "upgrade")
}

/// `/__ws`: answers 101 and echoes text and binary messages on the upgraded connection.
fn websocket(mut req: Request<Incoming>, peer: FakePeer) -> Response<ResBody> {
    let Some(key) = req.headers().get("sec-websocket-key") else {
        let msg = "missing sec-websocket-key".to_string();
        return bad_request(&peer, msg, 0);
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let token = peer.stop_token().clone();
    tokio::spawn(async move {
        let echo = async move {
            if let Ok(upgraded) = on_upgrade.await {
                let io = TokioIo::new(upgraded);
                ws_echo(WebSocketStream::from_raw_socket(io, Role::Server, None).await).await;
            }
        };
        tokio::select! {
            _ = token.cancelled() => {}
            _ = echo => {}
        }
    });
    let headers = vec![
        ("upgrade".to_string(), "websocket".to_string()),
        ("connection".to_string(), "Upgrade".to_string()),
        ("sec-websocket-accept".to_string(), accept),
    ];
    let body = Empty::new().boxed();
    build(&peer, StatusCode::SWITCHING_PROTOCOLS, headers, 0, body)
}

/// Echoes data messages until the connection closes (pings and closes are handled by tungstenite).
async fn ws_echo<S>(mut ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            break;
        }
    }
}

/// A body of `remaining` bytes streamed from a static chunk (constant memory), in frames of
/// at most `frame` bytes; sent chunked (no exact size) when `chunked`.
struct PatternBody {
    remaining: u64,
    frame: usize,
    chunk: &'static [u8; CHUNK_SIZE],
    chunked: bool,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.frame as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&self.chunk[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        match self.chunked {
            true => SizeHint::default(),
            false => SizeHint::with_exact(self.remaining),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing_decodes() {
        let pairs = parse_query("status=503&header=X-A:b%20c&header=X-B:d+e&flag");
        assert_eq!(pairs[0], ("status".into(), "503".into()));
        assert_eq!(pairs[1], ("header".into(), "X-A:b c".into()));
        assert_eq!(pairs[2], ("header".into(), "X-B:d e".into()));
        assert_eq!(pairs[3], ("flag".into(), "".into()));
    }
}
