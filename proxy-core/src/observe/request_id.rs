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

/// The request's id: its own `X-Request-Id` if well-formed, else a new random UUID.
pub(crate) fn request_id_for(request: &RequestHeader) -> String {
    match request
        .headers
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        Some(id) if is_well_formed(id) => id.to_owned(),
        _ => new_request_id(),
    }
}

/// A new random id (UUID v4, hyphenated), from a thread-local generator seeded by the OS
/// (no system call per request).
pub(crate) fn new_request_id() -> String {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut text)
        .to_owned()
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
        assert_eq!(
            request_id_for(&request(Some("abc-123_x.y:z"))),
            "abc-123_x.y:z"
        );
        for bad in ["", "has space", "quote\"", &"a".repeat(129)] {
            let id = request_id_for(&request(Some(bad)));
            assert_ne!(id, bad);
            assert!(is_well_formed(&id));
        }
        let generated = request_id_for(&request(None));
        assert_eq!(generated.len(), 36);
        let parsed = uuid::Uuid::parse_str(&generated).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(generated, generated.to_lowercase());
        assert_ne!(generated, request_id_for(&request(None)));
    }
}
