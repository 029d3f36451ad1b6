//! [`RequestRecord`]: what one request learns along the way for its metrics and log line,
//! and the end-of-request step that turns it into both.

use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};
use std::time::{Duration, Instant};

use super::UNKNOWN_SITE;
use super::{method_label, AccessLogEntry, InFlight, Observability, UpstreamErrorKind};
use crate::proxy::RequestCtx;

/// Per-request observability state, carried in [`RequestCtx::observe`].
#[derive(Debug, Default)]
pub struct RequestRecord {
    /// The request id (kept from `X-Request-Id` or generated).
    pub request_id: String,
    /// When an upstream was chosen.
    pub upstream_started: Option<Instant>,
    /// Time until the upstream's response headers.
    pub upstream_response_time: Option<Duration>,
    /// The upstream address used (formatted only when a log line is written).
    pub upstream_addr: Option<pingora::protocols::l4::socket::SocketAddr>,
    /// The upstream's status.
    pub upstream_status: Option<u16>,
    /// Set when the upstream failed before a request was sent (e.g. its name is unresolved).
    pub upstream_error: Option<UpstreamErrorKind>,
    /// HOOK for the cache: set the nginx word (HIT, MISS, EXPIRED, STALE, UPDATING,
    /// REVALIDATED, BYPASS) and it is logged as `upstream_cache_status` and counted in
    /// `edge_cache_lookups_total`.
    pub cache_status: Option<&'static str>,
    /// HOOK for rate limiting: the outcome word, logged as `rate_limit`. The decision metric
    /// is recorded by the limiter itself with [`super::Metrics::rate_limit_decision`].
    pub rate_limit: Option<&'static str>,
    _in_flight: Option<InFlight>,
}

impl RequestRecord {
    /// A record counting the request as in flight (when metrics are on) until dropped.
    pub fn new(observability: Option<&Observability>) -> Self {
        Self {
            _in_flight: observability.map(|o| o.metrics().in_flight()),
            ..Self::default()
        }
    }
}

impl RequestRecord {
    /// Notes the upstream's status and how long its response headers took.
    pub fn upstream_responded(&mut self, response: &pingora::http::ResponseHeader) {
        self.upstream_status = Some(response.status.as_u16());
        self.upstream_response_time = self.upstream_started.map(|t| t.elapsed());
    }

    /// Adds the request id to a response going to the client.
    pub fn tag_response(
        &self,
        response: &mut pingora::http::ResponseHeader,
    ) -> pingora::Result<()> {
        response.insert_header(super::REQUEST_ID_HEADER, self.request_id.as_str())
    }
}

/// The kind of an upstream failure, or `None` if `e` is not one.
pub fn upstream_error_kind(e: &Error) -> Option<UpstreamErrorKind> {
    if e.esource() != &ErrorSource::Upstream {
        return None;
    }
    Some(match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ReadTimedout
        | ErrorType::WriteTimedout
        | ErrorType::TLSHandshakeTimedout => UpstreamErrorKind::Timeout,
        ErrorType::TLSHandshakeFailure
        | ErrorType::TLSWantX509Lookup
        | ErrorType::InvalidCert
        | ErrorType::HandshakeError => UpstreamErrorKind::Tls,
        ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::BindError
        | ErrorType::SocketError
        | ErrorType::ConnectProxyFailure => UpstreamErrorKind::Connect,
        _ => UpstreamErrorKind::Other,
    })
}

impl Observability {
    /// Records one finished request: metrics, then the access-log line. Called from the
    /// `logging` phase.
    pub fn finish_request(&self, session: &Session, error: Option<&Error>, ctx: &RequestCtx) {
        let site = ctx.site.as_ref().map_or(UNKNOWN_SITE, |s| s.name.as_str());
        let request = session.req_header();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.started.elapsed();
        let bytes = session.body_bytes_sent() as u64;
        let record = &ctx.observe;
        let metrics = self.metrics();
        metrics.request(site, method_label(&request.method), status, elapsed, bytes);
        if let Some(cache_status) = record.cache_status {
            metrics.cache_lookup(site, cache_status);
        }
        if let Some(upstream) = &ctx.upstream {
            if let Some(time) = record.upstream_response_time {
                metrics.upstream_response(&upstream.name, time);
            }
            let kind = record
                .upstream_error
                .or_else(|| error.and_then(upstream_error_kind))
                .or_else(|| {
                    record
                        .upstream_status
                        .filter(|s| *s >= 500)
                        .map(|_| UpstreamErrorKind::Status5xx)
                });
            if let Some(kind) = kind {
                metrics.upstream_error(&upstream.name, kind);
            }
        }
        if let Some(log) = self.access_log() {
            log.log(&self.entry(session, error, ctx, status, elapsed, bytes));
        }
    }

    fn entry(
        &self,
        session: &Session,
        error: Option<&Error>,
        ctx: &RequestCtx,
        status: u16,
        elapsed: Duration,
        bytes: u64,
    ) -> AccessLogEntry {
        let request = session.req_header();
        let header = |name: http::header::HeaderName| {
            request
                .headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default()
        };
        let record = &ctx.observe;
        AccessLogEntry {
            time: rfc3339_now(),
            client_ip: ctx.client_ip.map(crate::text::ip).unwrap_or_default(),
            remote_addr: session.client_addr().map(pingora_addr).unwrap_or_default(),
            host: header(http::header::HOST),
            method: request.method.as_str().to_owned(),
            uri: self.redactor().uri(&request.uri.to_string()),
            protocol: format!("{:?}", request.version),
            status,
            body_bytes_sent: bytes,
            request_time: round_ms(elapsed),
            upstream_addr: record
                .upstream_addr
                .as_ref()
                .map(pingora_addr)
                .unwrap_or_default(),
            upstream_response_time: record.upstream_response_time.map(round_ms),
            upstream_status: record.upstream_status,
            upstream_cache_status: record.cache_status.unwrap_or_default().to_owned(),
            rate_limit: record.rate_limit.unwrap_or_default().to_owned(),
            user_agent: header(http::header::USER_AGENT),
            referer: self.redactor().uri(&header(http::header::REFERER)),
            request_id: record.request_id.clone(),
            site: ctx
                .site
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            location: ctx
                .location
                .as_ref()
                .map(|l| l.pattern_text.clone())
                .unwrap_or_default(),
            error: error
                .map(|e| e.etype().as_str().to_owned())
                .unwrap_or_default(),
        }
    }
}

/// A peer address as text (IP sockets without `fmt`).
fn pingora_addr(addr: &pingora::protocols::l4::socket::SocketAddr) -> String {
    match addr {
        pingora::protocols::l4::socket::SocketAddr::Inet(inet) => crate::text::socket_addr(inet),
        other => other.to_string(),
    }
}

/// Seconds with millisecond precision, like nginx's `$request_time`.
fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_errors_are_classified() {
        let up = |t| *Error::new(t).into_up();
        assert_eq!(
            upstream_error_kind(&up(ErrorType::ConnectTimedout)),
            Some(UpstreamErrorKind::Timeout)
        );
        assert_eq!(
            upstream_error_kind(&up(ErrorType::ConnectRefused)),
            Some(UpstreamErrorKind::Connect)
        );
        assert_eq!(
            upstream_error_kind(&up(ErrorType::TLSHandshakeFailure)),
            Some(UpstreamErrorKind::Tls)
        );
        let down = *Error::new(ErrorType::ReadError).into_down();
        assert_eq!(upstream_error_kind(&down), None);
    }

    #[test]
    fn time_is_rfc3339() {
        let t = rfc3339_now();
        assert_eq!(t.as_bytes()[10], b'T', "{t}");
        assert!(t.ends_with('Z'), "{t}");
    }
}
