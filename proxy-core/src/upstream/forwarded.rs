//! Headers that tell the upstream who asked and how: Host, `X-Forwarded-For`,
//! `X-Forwarded-Proto`, `X-Real-IP`. Hop-by-hop headers are stripped by Pingora's
//! standard upstream request policy, which also forwards WebSocket upgrades.

use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::Result;

use super::HostHeader;
use crate::client::ClientIpPolicy;

// Typed once: inserting them parses and allocates nothing.
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Sets the forwarding headers on a request about to go upstream: Host in the map (Pingora
/// reads it there), then the client-IP header and `X-Forwarded-*` as wire headers
/// (`RequestHeader::set_wire_header`: written after the map's headers, not inserted into it).
///
/// `X-Forwarded-For` gets the client appended to any list already present (nginx's
/// `$proxy_add_x_forwarded_for`); `X-Real-IP` and `X-Forwarded-Proto` are replaced.
pub(crate) fn apply_forwarded_headers(
    request: &mut RequestHeader,
    host: &HostHeader,
    client: &ClientIpPolicy,
    client_ip: Option<HeaderValue>,
    scheme: &'static str,
) -> Result<()> {
    if let HostHeader::Fixed(value) = host {
        request.insert_header(http::header::HOST, value.clone())?;
    }
    client.set_upstream_header_value(request, client_ip.clone())?;
    if let Some(ip_text) = client_ip {
        let forwarded_for = forwarded_for_value(request, ip_text.clone());
        request.set_wire_header(X_FORWARDED_FOR.clone(), forwarded_for)?;
        request.set_wire_header(X_REAL_IP.clone(), ip_text)?;
    }
    request.set_wire_header(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme))
}

/// nginx's `$proxy_add_x_forwarded_for`: the client's `X-Forwarded-For` list with `ip`
/// appended, or `ip_text` alone.
pub(super) fn forwarded_for_value(request: &RequestHeader, ip_text: HeaderValue) -> HeaderValue {
    let mut earlier = request
        .headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .map(|v| v.as_bytes())
        .filter(|v| !v.is_empty())
        .peekable();
    if earlier.peek().is_none() {
        return ip_text;
    }
    let mut forwarded_for = earlier.collect::<Vec<_>>().join(&b", "[..]);
    forwarded_for.extend_from_slice(b", ");
    forwarded_for.extend_from_slice(ip_text.as_bytes());
    HeaderValue::from_bytes(&forwarded_for).unwrap_or(ip_text)
}
