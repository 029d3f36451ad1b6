//! Responses the proxy writes itself: fixed returns, redirects, health answers and error
//! pages. One function builds them all so every local answer gets the same headers, and one
//! decides what an error becomes ([`Reply::for_error`]).

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::borrow::Cow;
use std::time::Instant;

/// What the proxy does instead of forwarding a request.
#[derive(Debug)]
pub enum Reply {
    /// Send this answer.
    Send(LocalAnswer),
    /// Close the connection without a response (nginx's `return 444`; a client that is gone).
    Close,
}

impl Reply {
    /// What an error that ended a request becomes: 504 for upstream timeouts, 502 for
    /// other upstream failures, 408/400 for a client's, nothing when the client is gone.
    /// Always closes the connection afterwards.
    pub fn for_error(e: &Error) -> Reply {
        let status = match (e.etype(), e.esource()) {
            (ErrorType::HTTPStatus(code), _) => *code,
            (
                ErrorType::ConnectTimedout
                | ErrorType::ReadTimedout
                | ErrorType::WriteTimedout
                | ErrorType::TLSHandshakeTimedout,
                ErrorSource::Upstream,
            ) => 504,
            (_, ErrorSource::Upstream) => 502,
            (
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
                ErrorSource::Downstream,
            ) => return Reply::Close,
            (ErrorType::ReadTimedout, ErrorSource::Downstream) => 408,
            (_, ErrorSource::Downstream) => 400,
            _ => 500,
        };
        Reply::Send(LocalAnswer::html(status, default_error_page(status)).closing())
    }

    /// The status this reply sends (0 for [`Reply::Close`]), as Pingora's logs count it.
    pub fn status(&self) -> u16 {
        match self {
            Reply::Send(answer) => answer.status,
            Reply::Close => 0,
        }
    }
}

/// A response written by the proxy rather than an upstream.
#[derive(Debug, Clone)]
pub struct LocalAnswer {
    /// Status code.
    pub status: u16,
    /// Content type of the body.
    pub content_type: Cow<'static, str>,
    /// Body (omitted on the wire for HEAD requests).
    pub body: Bytes,
    /// A `Location` header, for redirects.
    pub location: Option<String>,
    /// Close the connection after answering (when the request body was not read).
    pub close: bool,
    /// Further headers (ETag, Content-Range, ...), set after the ones above.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl LocalAnswer {
    /// A plain-text answer.
    pub fn text(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            content_type: Cow::Borrowed("text/plain; charset=utf-8"),
            body: body.into(),
            location: None,
            close: false,
            headers: Vec::new(),
        }
    }

    /// An HTML answer.
    pub fn html(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            content_type: Cow::Borrowed("text/html; charset=utf-8"),
            ..Self::text(status, body)
        }
    }

    /// The same answer, closing the connection afterwards.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// The response header for this answer.
    pub fn response_header(&self) -> Result<ResponseHeader> {
        // No case map: every name added here is typed, and is written as it would be with one
        // (title case for the common standard headers, lower case otherwise).
        let mut header = ResponseHeader::build_no_case(self.status, Some(4))?;
        header.insert_header(http::header::CONTENT_TYPE, self.content_type.as_ref())?;
        // 204 and 304 carry no body, and a 304's length would describe the full response.
        if !matches!(self.status, 204 | 304) {
            header.insert_header(http::header::CONTENT_LENGTH, self.body.len().to_string())?;
        }
        if let Some(location) = &self.location {
            header.insert_header(http::header::LOCATION, location.as_str())?;
        }
        if self.close {
            header.insert_header(http::header::CONNECTION, "close")?;
        }
        for (name, value) in &self.headers {
            header.insert_header(name.clone(), value.clone())?;
        }
        Ok(header)
    }

    /// Writes the answer to the client with `header` (from [`Self::response_header`],
    /// possibly changed by plugins).
    pub async fn write(&self, session: &mut Session, header: ResponseHeader) -> Result<()> {
        if self.close {
            session.set_keepalive(None);
        }
        write_response(session, header, self.body.clone()).await
    }
}

/// Writes `header` and, unless the request is HEAD or `body` is empty, `body`.
pub(crate) async fn write_response(
    session: &mut Session,
    header: ResponseHeader,
    body: Bytes,
) -> Result<()> {
    let header_only = session.req_header().method == http::Method::HEAD || body.is_empty();
    session
        .write_response_header(Box::new(header), header_only)
        .await?;
    if !header_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Rewrites an upstream's error response header for the site's page of `page_len` bytes in
/// its place, keeping the status (nginx's `proxy_intercept_errors`): what described the
/// upstream's body goes.
pub(crate) fn intercept_error_header(header: &mut ResponseHeader, page_len: usize) -> Result<()> {
    for name in [
        http::header::CONTENT_ENCODING,
        http::header::TRANSFER_ENCODING,
        http::header::CONTENT_RANGE,
        http::header::ACCEPT_RANGES,
        http::header::ETAG,
        http::header::LAST_MODIFIED,
        http::header::CONTENT_DISPOSITION,
    ] {
        header.remove_header(&name);
    }
    header.insert_header(http::header::CONTENT_TYPE, "text/html; charset=utf-8")?;
    header.insert_header(http::header::CONTENT_LENGTH, page_len.to_string())
}

/// The response body the client gets: the upstream's (or the cache's), or a page sent in
/// its place.
#[derive(Debug, Default)]
pub(crate) enum ResponseBody {
    /// As it comes.
    #[default]
    Passed,
    /// The page to send instead, at the first body event.
    Replaced(Bytes),
    /// The page was sent: the rest of the upstream's body is dropped.
    ReplacedSent,
}

impl ResponseBody {
    /// Applies the replacement, if any, to the next part of the body.
    pub(crate) fn filter(&mut self, body: &mut Option<Bytes>) {
        match self {
            ResponseBody::Passed => {}
            ResponseBody::Replaced(_) => {
                if let ResponseBody::Replaced(page) =
                    std::mem::replace(self, ResponseBody::ReplacedSent)
                {
                    *body = Some(page);
                }
            }
            ResponseBody::ReplacedSent => *body = None,
        }
    }
}

/// How a request body still coming after an early answer, or the rest of a refused head, is
/// thrown away (nginx's lingering close): for at most `time` in all, `timeout` between two
/// reads, and `size` bytes. Pingora's type, since Pingora reads the heads.
pub(crate) type Lingering = pingora::protocols::http::v1::server::Lingering;

/// After an answer sent before the request body was read whole (a 413, a refusal, an error):
/// reads and throws away the rest, within `bounds`, so a client still writing its body reads
/// the answer. Closing a socket with unread bytes makes the kernel send a reset, which
/// destroys the answer in the client's receive buffer. A body read to its end leaves the
/// connection as the answer left it; one cut off by a bound closes it.
pub(crate) async fn discard_request_body(session: &mut Session, bounds: &Lingering) {
    // HTTP/2 ends one stream, not the connection: nothing to protect.
    if session.as_downstream().is_http2() || session.is_body_done() {
        return;
    }
    // A client waiting for `100 Continue` sends no body after a final answer.
    let waiting_to_send = session.body_bytes_read() == 0
        && session
            .req_header()
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if waiting_to_send {
        session.set_keepalive(None);
        return;
    }
    let deadline = Instant::now() + bounds.time;
    let mut discarded = 0u64;
    let finished = loop {
        let wait = bounds
            .timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        if wait.is_zero() {
            break false;
        }
        match tokio::time::timeout(wait, session.read_request_body()).await {
            Ok(Ok(Some(chunk))) => {
                discarded += chunk.len() as u64;
                if discarded > bounds.size {
                    break false;
                }
            }
            Ok(Ok(None)) => break true,
            Ok(Err(_)) | Err(_) => break false,
        }
    };
    if !finished {
        session.set_keepalive(None);
    }
}

/// The built-in page for an error status, used when a site configures none.
pub(crate) fn default_error_page(status: u16) -> Bytes {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    Bytes::from(format!(
        "<!doctype html>\n<html><head><title>{status} {reason}</title></head>\n<body><h1>{status} {reason}</h1></body></html>\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_nginx_statuses() {
        let up = |t| *Error::new(t).into_up();
        let down = |t| *Error::new(t).into_down();
        assert_eq!(
            Reply::for_error(&up(ErrorType::ConnectTimedout)).status(),
            504
        );
        assert_eq!(Reply::for_error(&up(ErrorType::ReadTimedout)).status(), 504);
        assert_eq!(
            Reply::for_error(&up(ErrorType::ConnectRefused)).status(),
            502
        );
        assert_eq!(
            Reply::for_error(&down(ErrorType::ReadTimedout)).status(),
            408
        );
        assert_eq!(
            Reply::for_error(&down(ErrorType::InvalidHTTPHeader)).status(),
            400
        );
        assert!(matches!(
            Reply::for_error(&down(ErrorType::ConnectionClosed)),
            Reply::Close
        ));
        let too_large = Error::new(ErrorType::HTTPStatus(413));
        match Reply::for_error(&too_large) {
            Reply::Send(answer) => assert!(answer.status == 413 && answer.close),
            Reply::Close => panic!("413 expected"),
        }
    }
}
