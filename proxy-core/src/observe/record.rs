//! [`RequestRecord`]: what one request learns along the way for its metrics and log line,
//! and the end-of-request step that turns it into both.

use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};
use std::borrow::Cow;
use std::cell::Cell;
use std::net::IpAddr;
use std::ops::Range;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::UNKNOWN_SITE;
use super::{method_label, AccessLog, AccessLogEntry, InFlight, Observability, UpstreamErrorKind};
use crate::text::{Texts, LINE_TEXT_MAX};

/// Per-request observability state, carried in the proxy's request context.
#[derive(Debug)]
pub(crate) struct RequestRecord {
    /// When the request started.
    pub started: Instant,
    /// The request id (kept from `X-Request-Id` or generated).
    pub request_id: super::request_id::RequestId,
    /// When an upstream was chosen.
    pub upstream_started: Option<Instant>,
    /// Time until the upstream's response headers.
    pub upstream_response_time: Option<Duration>,
    /// The upstream address used (formatted only when a log line is written).
    pub upstream_addr: Option<pingora::protocols::l4::socket::SocketAddr>,
    /// The upstream's status.
    pub upstream_status: Option<u16>,
    /// Whether the request went to a second address after a failed connection.
    pub upstream_retried: bool,
    /// Set when the upstream failed before a request was sent (e.g. its name is unresolved).
    pub upstream_error: Option<UpstreamErrorKind>,
    /// HOOK for the cache: set the nginx word (HIT, MISS, EXPIRED, STALE, UPDATING,
    /// REVALIDATED, BYPASS) and it is logged as `upstream_cache_status` and counted in
    /// `edge_cache_lookups_total`.
    pub cache_status: Option<&'static str>,
    /// HOOK for rate limiting: the outcome word, logged as `rate_limit`. The decision metric
    /// is recorded by the limiter itself with [`super::Metrics::rate_limit_decision`].
    pub rate_limit: Option<&'static str>,
    /// The ban rule in play: the one that banned the client this request was refused for,
    /// or the trap rule this request tripped; logged as `ban`.
    pub ban: Option<std::sync::Arc<str>>,
    /// The user the location's authentication let in; logged as `user`.
    pub user: Option<String>,
    _in_flight: Option<InFlight>,
}

impl RequestRecord {
    /// A record of a request starting now, counted as in flight (when metrics are on) until
    /// dropped.
    pub(crate) fn new(observability: Option<&Observability>) -> Self {
        Self {
            started: Instant::now(),
            request_id: Default::default(),
            upstream_started: None,
            upstream_response_time: None,
            upstream_addr: None,
            upstream_status: None,
            upstream_retried: false,
            upstream_error: None,
            cache_status: None,
            rate_limit: None,
            ban: None,
            user: None,
            _in_flight: observability.map(|o| o.metrics().in_flight()),
        }
    }
}

impl RequestRecord {
    /// Notes the upstream's status and how long its response headers took.
    pub(crate) fn upstream_responded(&mut self, response: &pingora::http::ResponseHeader) {
        self.upstream_status = Some(response.status.as_u16());
        self.upstream_response_time = self.upstream_started.map(|t| t.elapsed());
    }

    /// Adds the request id to a response going to the client.
    pub(crate) fn tag_response(
        &self,
        response: &mut pingora::http::ResponseHeader,
    ) -> pingora::Result<()> {
        response.insert_header(&super::REQUEST_ID_HEADER, self.request_id.header_value())
    }
}

/// The kind of an upstream failure, or `None` if `e` is not one.
pub(crate) fn upstream_error_kind(e: &Error) -> Option<UpstreamErrorKind> {
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

/// What the log line and metrics need to know of a finished request besides its session:
/// what routing found and what the request recorded on its way.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestFacts<'a> {
    /// The matched site's name.
    pub site: Option<&'a str>,
    /// The matched location's pattern, as written in the config.
    pub location: Option<&'a str>,
    /// The upstream the request was forwarded to.
    pub upstream: Option<&'a str>,
    /// Who asked.
    pub client_ip: Option<IpAddr>,
    /// What the request recorded on its way.
    pub record: &'a RequestRecord,
}

/// The status logged for a request that got no answer: nginx's 499 when the client went away
/// (closed its side or reset) while the upstream worked on it, else 0.
fn unanswered_status(record: &RequestRecord, error: Option<&Error>) -> u16 {
    let client_gone = error.is_some_and(|e| {
        e.esource() == &ErrorSource::Downstream
            && matches!(
                e.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError
            )
    });
    match client_gone && record.upstream_started.is_some() {
        true => 499,
        false => 0,
    }
}

impl Observability {
    /// Records one finished request: metrics, then the access-log line. Called from the
    /// `logging` phase.
    pub(crate) fn finish_request(
        &self,
        session: &Session,
        error: Option<&Error>,
        facts: RequestFacts<'_>,
    ) {
        let site = facts.site.unwrap_or(UNKNOWN_SITE);
        let request = session.req_header();
        let record = facts.record;
        let status = session
            .response_written()
            .map_or_else(|| unanswered_status(record, error), |r| r.status.as_u16());
        let elapsed = record.started.elapsed();
        let bytes = session.body_bytes_sent() as u64;
        let metrics = self.metrics();
        let method = method_label(&request.method);
        metrics.finished(site, method, status, elapsed, bytes, record.cache_status);
        if let Some(upstream) = facts.upstream {
            if let Some(time) = record.upstream_response_time {
                metrics.upstream_response(upstream, time);
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
                metrics.upstream_error(upstream, kind);
            }
        }
        if let Some(log) = self.access_log() {
            self.log_line(log, session, error, facts, status, elapsed, bytes);
        }
    }

    /// Writes the request's access-log line. Every field borrows from the request or sits
    /// on the stack: a line costs no allocation unless a URI needs redacting.
    #[allow(clippy::too_many_arguments)]
    fn log_line(
        &self,
        log: &AccessLog,
        session: &Session,
        error: Option<&Error>,
        facts: RequestFacts<'_>,
        status: u16,
        elapsed: Duration,
        bytes: u64,
    ) {
        let request = session.req_header();
        let logged = LoggedHeaders::of(&request.headers);
        let record = facts.record;
        let mut texts = Texts::<LINE_TEXT_MAX>::new();
        let time = texts.ascii(&log_time(SystemTime::now()));
        let client_ip = facts.client_ip.map(|ip| texts.ip(ip));
        let remote_addr = session.client_addr().map(|addr| texts.peer(addr));
        let upstream_addr = record.upstream_addr.as_ref().map(|addr| texts.peer(addr));
        let texts = texts.as_str();
        let text = |range: Option<Range<usize>>| range.and_then(|r| texts.get(r)).unwrap_or("");
        let host = header_text(logged.host);
        let target = request_target(&request.uri);
        let referer = header_text(logged.referer);
        let user_agent = header_text(logged.user_agent);
        log.log(&AccessLogEntry {
            time: text(Some(time)),
            client_ip: text(client_ip),
            remote_addr: text(remote_addr),
            host: &host,
            method: request.method.as_str(),
            uri: &self.redactor().uri(&target),
            protocol: protocol(request.version),
            status,
            body_bytes_sent: bytes,
            request_time: round_ms(elapsed),
            upstream_addr: text(upstream_addr),
            upstream_response_time: record.upstream_response_time.map(round_ms),
            upstream_status: record.upstream_status,
            upstream_cache_status: record.cache_status.unwrap_or_default(),
            rate_limit: record.rate_limit.unwrap_or_default(),
            ban: record.ban.as_deref().unwrap_or_default(),
            user: record.user.as_deref().unwrap_or_default(),
            user_agent: &user_agent,
            referer: &self.redactor().uri(&referer),
            request_id: record.request_id.as_str(),
            site: facts.site.unwrap_or(""),
            location: facts.location.unwrap_or(""),
            error: error.map_or("", |e| e.etype().as_str()),
        });
    }
}

/// The request headers a log line shows (the first value of each).
#[derive(Default)]
struct LoggedHeaders<'r> {
    host: Option<&'r http::HeaderValue>,
    referer: Option<&'r http::HeaderValue>,
    user_agent: Option<&'r http::HeaderValue>,
}

impl<'r> LoggedHeaders<'r> {
    /// Found in one pass over the headers, which costs less than three hashed lookups
    /// for the dozen headers a browser sends.
    fn of(headers: &'r http::HeaderMap) -> Self {
        let mut found = Self::default();
        for (name, value) in headers {
            let slot = match *name {
                http::header::HOST => &mut found.host,
                http::header::REFERER => &mut found.referer,
                http::header::USER_AGENT => &mut found.user_agent,
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        found
    }
}

/// A header value as log text: borrowed when it is UTF-8, else with replacement characters.
fn header_text(value: Option<&http::HeaderValue>) -> Cow<'_, str> {
    let Some(value) = value else {
        return Cow::Borrowed("");
    };
    match std::str::from_utf8(value.as_bytes()) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(value.as_bytes()),
    }
}

/// The request target as received: origin-form borrowed, other forms rendered.
fn request_target(uri: &http::Uri) -> Cow<'_, str> {
    match uri.path_and_query() {
        Some(target) if uri.scheme().is_none() && uri.authority().is_none() => {
            Cow::Borrowed(target.as_str())
        }
        _ => Cow::Owned(uri.to_string()),
    }
}

/// The `protocol` field: what `Debug` prints for the version, without `fmt`.
fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// Seconds with millisecond precision (rounded to the nearest), like nginx's
/// `$request_time`.
fn round_ms(d: Duration) -> f64 {
    let millis = d
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from((d.subsec_nanos() + 500_000) / 1_000_000));
    millis as f64 / 1000.0
}

/// Length of an RFC 3339 UTC time with milliseconds.
const LOG_TIME_LEN: usize = "2026-11-23T04:05:06.789Z".len();

/// Length of the date-and-seconds part (`2026-11-23T04:05:06`).
const SECOND_LEN: usize = 19;

thread_local! {
    /// The last second formatted on this thread: a line copies it instead of formatting
    /// a date (the seconds since the epoch, then its text).
    static LAST_SECOND: Cell<(u64, [u8; SECOND_LEN])> = const { Cell::new((u64::MAX, [0; SECOND_LEN])) };
}

/// `when` as RFC 3339 UTC time with milliseconds (`2026-11-23T04:05:06.789Z`), in ASCII.
fn log_time(when: SystemTime) -> [u8; LOG_TIME_LEN] {
    let since_epoch = when.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let second = LAST_SECOND.with(|last| match last.get() {
        (cached, text) if cached == secs => text,
        _ => {
            let text = second_text(secs);
            last.set((secs, text));
            text
        }
    });
    let millis = since_epoch.subsec_millis();
    let mut time = [0; LOG_TIME_LEN];
    time[..SECOND_LEN].copy_from_slice(&second);
    time[SECOND_LEN] = b'.';
    time[SECOND_LEN + 1] = b'0' + (millis / 100) as u8;
    time[SECOND_LEN + 2] = b'0' + (millis / 10 % 10) as u8;
    time[SECOND_LEN + 3] = b'0' + (millis % 10) as u8;
    time[SECOND_LEN + 4] = b'Z';
    time
}

/// `2026-11-23T04:05:06` for `secs` after the epoch.
fn second_text(secs: u64) -> [u8; SECOND_LEN] {
    let mut text = [b'0'; SECOND_LEN];
    let when = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok());
    let Some(when) = when else {
        return text;
    };
    let formatted = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        when.year(),
        u8::from(when.month()),
        when.day(),
        when.hour(),
        when.minute(),
        when.second()
    );
    if formatted.len() == SECOND_LEN {
        text.copy_from_slice(formatted.as_bytes());
    }
    text
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
    fn logged_headers_are_the_first_values() {
        let mut headers = http::HeaderMap::new();
        headers.append("x-other", "o".parse().unwrap());
        headers.append(http::header::USER_AGENT, "first".parse().unwrap());
        headers.append(http::header::HOST, "h.example".parse().unwrap());
        headers.append(http::header::USER_AGENT, "second".parse().unwrap());
        headers.append(
            http::header::REFERER,
            b"caf\xe9".as_slice().try_into().unwrap(),
        );
        let logged = LoggedHeaders::of(&headers);
        assert_eq!(header_text(logged.host), "h.example");
        assert_eq!(header_text(logged.user_agent), "first");
        assert_eq!(header_text(logged.referer), "caf\u{fffd}");
        assert_eq!(
            header_text(LoggedHeaders::of(&http::HeaderMap::new()).host),
            ""
        );
    }

    #[test]
    fn durations_round_to_the_nearest_millisecond() {
        let ms = |secs, nanos| round_ms(Duration::new(secs, nanos));
        assert_eq!(ms(0, 0), 0.0);
        assert_eq!(ms(0, 499_999), 0.0);
        assert_eq!(ms(0, 500_000), 0.001);
        assert_eq!(ms(1, 234_499_999), 1.234);
        assert_eq!(ms(2, 999_500_000), 3.0);
        assert_eq!(ms(86_400, 7_000_000), 86_400.007);
    }

    #[test]
    fn time_is_rfc3339_with_milliseconds() {
        let at = UNIX_EPOCH + Duration::from_millis(1_795_406_706_007);
        assert_eq!(&log_time(at), b"2026-11-23T04:05:06.007Z");
        let later = at + Duration::from_millis(1_000_993);
        assert_eq!(&log_time(later), b"2026-11-23T04:21:47.000Z");
        let leap = UNIX_EPOCH + Duration::from_millis(1_835_481_599_999);
        assert_eq!(&log_time(leap), b"2028-02-29T23:59:59.999Z");
    }

    #[test]
    fn targets_and_versions_read_as_before() {
        for text in ["/a/b?c=d", "http://h.example/x?y", "h.example:443", "*"] {
            let uri: http::Uri = text.parse().unwrap();
            assert_eq!(request_target(&uri), uri.to_string());
        }
        for version in [
            http::Version::HTTP_10,
            http::Version::HTTP_11,
            http::Version::HTTP_2,
        ] {
            assert_eq!(protocol(version), format!("{version:?}"));
        }
    }
}
