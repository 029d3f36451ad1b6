//! Responses the proxy writes itself: fixed returns, redirects, health answers and error
//! pages. One function builds them all so every local answer gets the same headers.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;
use std::borrow::Cow;

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
        let mut header = ResponseHeader::build(self.status, Some(4))?;
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

/// The built-in page for an error status, used when a site configures none.
pub fn default_error_page(status: u16) -> Bytes {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    Bytes::from(format!(
        "<!doctype html>\n<html><head><title>{status} {reason}</title></head>\n<body><h1>{status} {reason}</h1></body></html>\n"
    ))
}
