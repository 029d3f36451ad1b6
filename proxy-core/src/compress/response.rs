//! One request's compression: the coding chosen for it, what the upstream is asked for, and
//! the upstream's response rewritten and compressed as it arrives (before the cache stores it).

use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
    ETAG, RANGE, TRANSFER_ENCODING, VARY,
};
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::compression::Encode;
use pingora::Result;
use std::sync::Arc;

use super::{negotiate, CompressPolicy, Encoding};

/// What one finished compressed body came to, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Compressed {
    pub(crate) encoding: Encoding,
    pub(crate) bytes_in: usize,
    pub(crate) bytes_out: usize,
}

/// The compression state of one request on a location that compresses.
pub(crate) struct CompressRequest {
    policy: Arc<CompressPolicy>,
    /// The coding this request's answer is sent in; `None`: identity. A range request gets
    /// identity: its bytes are counted in the uncompressed body.
    chosen: Option<Encoding>,
    /// A HEAD request: its answer has no body to compress.
    head: bool,
    encoder: Option<(Encoding, Box<dyn Encode + Send + Sync>)>,
}

impl std::fmt::Debug for CompressRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompressRequest")
            .field("chosen", &self.chosen)
            .field("head", &self.head)
            .field("compressing", &self.encoder.as_ref().map(|(e, _)| *e))
            .finish()
    }
}

impl CompressRequest {
    /// The state of a request to a location compressing with `policy`.
    pub(crate) fn new(policy: &Arc<CompressPolicy>, req: &RequestHeader) -> Self {
        let chosen = match req.headers.contains_key(RANGE) {
            true => None,
            false => negotiate(
                req.headers.get(ACCEPT_ENCODING).map(HeaderValue::as_bytes),
                &policy.encodings,
            ),
        };
        Self {
            policy: policy.clone(),
            chosen,
            head: req.method == http::Method::HEAD,
            encoder: None,
        }
    }

    /// What the cache tells this request's variant apart by, in place of the raw
    /// `Accept-Encoding`: the chosen coding's token, or `identity`.
    pub(crate) fn variant(&self) -> &'static str {
        self.chosen.map_or("identity", Encoding::token)
    }

    /// The upstream is asked for the chosen coding alone (or identity): whatever it answers
    /// then fits the variant the cache stores it as, and a coding it has already applied is
    /// one the client accepts.
    pub(crate) fn upstream_request(&self, req: &mut RequestHeader) -> Result<()> {
        req.insert_header(ACCEPT_ENCODING, self.variant())?;
        Ok(())
    }

    /// `upstream_response_filter`: decides whether this response is compressed, and if so
    /// rewrites its header (`Content-Encoding`, no `Content-Length`, weak `ETag`) and starts
    /// the encoder. A response that could be compressed gets `Vary: Accept-Encoding` whether
    /// or not this client takes a coding.
    pub(crate) fn response_header(&mut self, resp: &mut ResponseHeader) -> Result<()> {
        self.encoder = None;
        let status = resp.status.as_u16();
        if self.head || status < 200 {
            return Ok(()); // no body; or not the final answer yet
        }
        if status == 304 {
            // Refreshes a stored (maybe compressed) variant's header.
            if self.chosen.is_some() {
                weaken_etag(resp)?;
            }
            return Ok(());
        }
        if let Some(coding) = resp.headers.get(CONTENT_ENCODING) {
            // Already encoded, in the coding this request asked the upstream for.
            if !coding.as_bytes().eq_ignore_ascii_case(b"identity") {
                add_vary(resp)?;
            }
            return Ok(());
        }
        if !self.compressible(status, resp) {
            return Ok(());
        }
        add_vary(resp)?;
        let Some(encoding) = self.chosen else {
            return Ok(());
        };
        let Some(encoder) = encoding.encoder(self.policy.level(encoding)) else {
            return Ok(());
        };
        resp.insert_header(CONTENT_ENCODING, encoding.token())?;
        resp.remove_header(&CONTENT_LENGTH);
        resp.remove_header(&ACCEPT_RANGES);
        resp.insert_header(TRANSFER_ENCODING, "chunked")?;
        weaken_etag(resp)?;
        self.encoder = Some((encoding, encoder));
        Ok(())
    }

    /// Whether a response of `status` with these headers is one the policy compresses.
    fn compressible(&self, status: u16, resp: &ResponseHeader) -> bool {
        if matches!(status, 204 | 206) {
            return false;
        }
        let typed = resp
            .headers
            .get(CONTENT_TYPE)
            .is_some_and(|t| self.policy.types.contains(t.as_bytes()));
        if !typed || no_transform(resp) {
            return false;
        }
        let length = resp
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        length.is_none_or(|length| length >= self.policy.min_length)
    }

    /// `upstream_response_body_filter`: compresses a part of the body in place; at the end
    /// of the body, what the whole came to.
    pub(crate) fn response_body(
        &mut self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> Result<Option<Compressed>> {
        let Some((encoding, encoder)) = self.encoder.as_mut() else {
            return Ok(None);
        };
        let input = body.as_deref().unwrap_or_default();
        // An encoder may hold output back until the end, which needs an input, even empty.
        *body = Some(encoder.encode(input, end_of_stream)?);
        if !end_of_stream {
            return Ok(None);
        }
        let (_, bytes_in, bytes_out, _) = encoder.stat();
        let done = Compressed {
            encoding: *encoding,
            bytes_in,
            bytes_out,
        };
        self.encoder = None;
        Ok(Some(done))
    }
}

/// `Cache-Control: no-transform` on the response: no intermediary may change its body.
fn no_transform(resp: &ResponseHeader) -> bool {
    resp.headers.get_all(CACHE_CONTROL).iter().any(|value| {
        value
            .as_bytes()
            .split(|b| *b == b',')
            .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
    })
}

/// Adds `Accept-Encoding` to the response's `Vary`, merged into the value it has (unless it
/// names it already, or is `*`).
fn add_vary(resp: &mut ResponseHeader) -> Result<()> {
    let values: Vec<&[u8]> = resp
        .headers
        .get_all(VARY)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let named = values
        .iter()
        .flat_map(|v| v.split(|b| *b == b','))
        .any(|name| {
            let name = name.trim_ascii();
            name == b"*" || name.eq_ignore_ascii_case(b"accept-encoding")
        });
    if named {
        return Ok(());
    }
    let mut merged = values.join(&b", "[..]);
    if !merged.is_empty() {
        merged.extend_from_slice(b", ");
    }
    merged.extend_from_slice(b"Accept-Encoding");
    let merged = HeaderValue::from_bytes(&merged)
        .unwrap_or_else(|_| HeaderValue::from_static("Accept-Encoding"));
    resp.insert_header(VARY, merged)?;
    Ok(())
}

/// A compressed body is another representation: a strong `ETag` becomes weak (`W/`), one
/// that is not a valid entity tag is dropped, as nginx's gzip filter does.
fn weaken_etag(resp: &mut ResponseHeader) -> Result<()> {
    let Some(etag) = resp.headers.get(ETAG) else {
        return Ok(());
    };
    let tag = etag.as_bytes();
    if tag.starts_with(b"W/") {
        return Ok(());
    }
    if !tag.starts_with(b"\"") {
        resp.remove_header(&ETAG);
        return Ok(());
    }
    let weak = HeaderValue::from_bytes(&[b"W/", tag].concat());
    match weak {
        Ok(weak) => resp.insert_header(ETAG, weak)?,
        Err(_) => {
            resp.remove_header(&ETAG);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::MediaTypes;

    fn policy() -> Arc<CompressPolicy> {
        Arc::new(CompressPolicy {
            encodings: Encoding::ALL.to_vec(),
            types: MediaTypes::Listed(vec!["text/html".into(), "text/*".into()]),
            min_length: 100,
            levels: [3, 5, 6],
        })
    }

    fn request(method: &str, headers: &[(&str, &str)]) -> CompressRequest {
        let mut req = RequestHeader::build(method, b"/", None).unwrap();
        for (name, value) in headers {
            req.insert_header(name.to_string(), *value).unwrap();
        }
        CompressRequest::new(&policy(), &req)
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut resp = ResponseHeader::build(status, None).unwrap();
        for (name, value) in headers {
            resp.append_header(name.to_string(), *value).unwrap();
        }
        resp
    }

    fn header<'a>(resp: &'a ResponseHeader, name: &str) -> Option<&'a str> {
        resp.headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn a_compressed_response_loses_its_length_and_strong_etag_and_varies() {
        let mut state = request("GET", &[("accept-encoding", "gzip")]);
        let mut resp = response(
            200,
            &[
                ("content-type", "text/html; charset=utf-8"),
                ("content-length", "1000"),
                ("etag", "\"abc\""),
                ("accept-ranges", "bytes"),
                ("vary", "Accept-Language"),
            ],
        );
        state.response_header(&mut resp).unwrap();
        assert_eq!(header(&resp, "content-encoding"), Some("gzip"));
        assert_eq!(header(&resp, "content-length"), None);
        assert_eq!(header(&resp, "accept-ranges"), None);
        assert_eq!(header(&resp, "etag"), Some("W/\"abc\""));
        assert_eq!(
            header(&resp, "vary"),
            Some("Accept-Language, Accept-Encoding")
        );
        let mut body = Some(Bytes::from(vec![b'a'; 1000]));
        assert_eq!(state.response_body(&mut body, false).unwrap(), None);
        let mut end = None;
        let done = state.response_body(&mut end, true).unwrap().unwrap();
        assert_eq!((done.encoding, done.bytes_in), (Encoding::Gzip, 1000));
        assert!(done.bytes_out < 100);
    }

    #[test]
    fn what_is_never_compressed() {
        let html = [("content-type", "text/html"), ("content-length", "1000")];
        let cases: [(CompressRequest, ResponseHeader, bool); 8] = [
            // (request, response, gets Vary)
            (
                request("GET", &[("accept-encoding", "identity")]),
                response(200, &html),
                true,
            ),
            (
                request(
                    "GET",
                    &[("accept-encoding", "gzip"), ("range", "bytes=0-9")],
                ),
                response(200, &html),
                true,
            ),
            (
                request("GET", &[("accept-encoding", "gzip")]),
                response(206, &html),
                false,
            ),
            (
                request("GET", &[("accept-encoding", "gzip")]),
                response(204, &[]),
                false,
            ),
            (
                request("HEAD", &[("accept-encoding", "gzip")]),
                response(200, &html),
                false,
            ),
            (
                request("GET", &[("accept-encoding", "gzip")]),
                response(200, &[("content-type", "image/png")]),
                false,
            ),
            (
                request("GET", &[("accept-encoding", "gzip")]),
                response(
                    200,
                    &[("content-type", "text/html"), ("content-length", "99")],
                ),
                false,
            ),
            (
                request("GET", &[("accept-encoding", "gzip")]),
                response(
                    200,
                    &[
                        ("content-type", "text/html"),
                        ("cache-control", "public, No-Transform"),
                    ],
                ),
                false,
            ),
        ];
        for (i, (mut state, mut resp, varies)) in cases.into_iter().enumerate() {
            state.response_header(&mut resp).unwrap();
            assert_eq!(header(&resp, "content-encoding"), None, "case {i}");
            assert_eq!(header(&resp, "vary").is_some(), varies, "case {i}");
            let mut body = Some(Bytes::from_static(b"plain"));
            assert_eq!(state.response_body(&mut body, true).unwrap(), None);
            assert_eq!(body.as_deref(), Some(&b"plain"[..]), "case {i}");
        }
    }

    #[test]
    fn an_encoded_response_is_left_alone_but_varies() {
        let mut state = request("GET", &[("accept-encoding", "br")]);
        let mut resp = response(
            200,
            &[("content-type", "text/html"), ("content-encoding", "br")],
        );
        state.response_header(&mut resp).unwrap();
        assert_eq!(header(&resp, "content-encoding"), Some("br"));
        assert_eq!(header(&resp, "vary"), Some("Accept-Encoding"));
        let mut star = response(200, &[("content-type", "text/plain"), ("vary", "*")]);
        state.response_header(&mut star).unwrap();
        assert_eq!(header(&star, "vary"), Some("*"));
    }

    #[test]
    fn the_upstream_is_asked_for_the_chosen_coding_only() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        let state = request("GET", &[("accept-encoding", "gzip;q=0.5, br;q=0.9")]);
        state.upstream_request(&mut req).unwrap();
        assert_eq!(req.headers.get("accept-encoding").unwrap(), "br");
        let state = request("GET", &[]);
        state.upstream_request(&mut req).unwrap();
        assert_eq!(req.headers.get("accept-encoding").unwrap(), "identity");
    }

    #[test]
    fn etags_are_weakened_or_dropped() {
        let mut resp = response(200, &[("etag", "W/\"x\"")]);
        weaken_etag(&mut resp).unwrap();
        assert_eq!(header(&resp, "etag"), Some("W/\"x\""));
        let mut resp = response(200, &[("etag", "unquoted")]);
        weaken_etag(&mut resp).unwrap();
        assert_eq!(header(&resp, "etag"), None);
    }
}
