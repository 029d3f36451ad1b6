//! Request ids: an incoming `X-Request-Id` is kept when well-formed (so a request can be
//! followed through a chain of proxies), otherwise a fresh one is generated.

use pingora::http::RequestHeader;

/// The header carrying the id, to the upstream and back to the client.
pub(crate) const REQUEST_ID_NAME: &str = "x-request-id";
/// `X-Request-Id`, typed once: inserting it parses and allocates nothing.
pub(crate) static REQUEST_ID_HEADER: http::HeaderName =
    http::HeaderName::from_static(REQUEST_ID_NAME);

/// Longest incoming id kept; longer ones are replaced (they would bloat every log line).
const MAX_LEN: usize = 128;

/// Whether `id` may be kept: 1 to 128 characters of letters, digits, `-`, `_`, `.`, `:`
/// (UUIDs, hex and most tracing ids), so it is safe in logs and headers.
pub(crate) fn is_well_formed(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A request's id, kept as the header value it goes out in: the upstream request and the
/// response carry clones of it (a reference count, not a copy).
#[derive(Debug, Clone)]
pub(crate) struct RequestId(http::HeaderValue);

impl Default for RequestId {
    fn default() -> Self {
        Self(http::HeaderValue::from_static(""))
    }
}

impl RequestId {
    /// The id as text (ASCII: a kept id is well-formed, a new one a UUID).
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(self.0.as_bytes()).unwrap_or_default()
    }

    /// The id as a header value to send.
    pub(crate) fn header_value(&self) -> http::HeaderValue {
        self.0.clone()
    }

    /// The id as a header value to send, not copied.
    pub(crate) fn header_value_ref(&self) -> &http::HeaderValue {
        &self.0
    }
}

/// The request's id: its own `X-Request-Id` if well-formed, else a new random UUID.
pub(crate) fn request_id_for(request: &RequestHeader) -> RequestId {
    match request.headers.get(&REQUEST_ID_HEADER) {
        Some(id) if id.to_str().is_ok_and(is_well_formed) => RequestId(id.clone()),
        _ => RequestId(new_request_id()),
    }
}

/// A new random id (UUID v4, hyphenated), from a thread-local generator seeded by the OS
/// (no system call per request).
pub(crate) fn new_request_id() -> http::HeaderValue {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    crate::text::header_value(id.as_bytes()).unwrap_or_else(|| http::HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        if let Some(id) = id {
            r.insert_header(&REQUEST_ID_HEADER, id).unwrap();
        }
        r
    }

    #[test]
    fn keeps_well_formed_ids_and_replaces_others() {
        let kept = request_id_for(&request(Some("abc-123_x.y:z")));
        assert_eq!(kept.as_str(), "abc-123_x.y:z");
        assert_eq!(kept.header_value(), "abc-123_x.y:z");
        for bad in ["", "has space", "quote\"", &"a".repeat(129)] {
            let id = request_id_for(&request(Some(bad)));
            assert_ne!(id.as_str(), bad);
            assert!(is_well_formed(id.as_str()));
        }
        let generated = request_id_for(&request(None));
        let text = generated.as_str();
        assert_eq!(text.len(), 36);
        assert_eq!(generated.header_value(), text);
        let parsed = uuid::Uuid::parse_str(text).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(text, text.to_lowercase());
        assert_ne!(text, request_id_for(&request(None)).as_str());
    }
}
