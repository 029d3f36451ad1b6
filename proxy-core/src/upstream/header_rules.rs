//! The operator's own request headers for an upstream (`proxy_headers`, nginx's
//! `proxy_set_header`): set, replace, append or leave out any header, with variables.
//!
//! Rules are merged at compile time (upstream, then site, then location, name by name), so a
//! location carries one list or none; a location without rules costs nothing here.
//! Values are rendered against the request as the client sent it, before the built-in
//! forwarding headers are set, and written after them, so a rule always has the last word.

use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::Result;
use std::net::IpAddr;

use super::forwarded::forwarded_for_value;
use crate::client::ip_header_value;

/// One piece of a header value template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Box<[u8]>),
    ClientIp,
    PeerAddr,
    Scheme,
    Host,
    RequestId,
    ProxyAddForwardedFor,
    Header(HeaderName),
}

/// The variables a template may name, for error messages.
const KNOWN_VARIABLES: &str = "$client_ip, $remote_addr, $realip_remote_addr, $scheme, $host, $request_id, $proxy_add_x_forwarded_for, $http_NAME";

/// A header value with variables, parsed once at config time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template(Box<[Part]>);

impl Template {
    fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(dollar) = rest.find('$') {
            if dollar > 0 {
                parts.push(literal(&rest[..dollar], text)?);
            }
            let after = &rest[dollar + 1..];
            let (name, tail) = match after.strip_prefix('{') {
                Some(braced) => braced
                    .split_once('}')
                    .ok_or_else(|| format!("unclosed `${{` in header value `{text}`"))?,
                None => {
                    let end = after
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(after.len());
                    after.split_at(end)
                }
            };
            parts.push(variable(name, text)?);
            rest = tail;
        }
        if !rest.is_empty() {
            parts.push(literal(rest, text)?);
        }
        Ok(Self(parts.into_boxed_slice()))
    }

    fn render(&self, request: &RequestHeader, vars: &HeaderVars<'_>, out: &mut Vec<u8>) {
        for part in self.0.iter() {
            match part {
                Part::Literal(bytes) => out.extend_from_slice(bytes),
                Part::ClientIp => push_ip(out, vars.client_ip),
                Part::PeerAddr => push_ip(out, vars.peer_ip),
                Part::Scheme => out.extend_from_slice(vars.scheme.as_bytes()),
                Part::Host => out.extend_from_slice(vars.host.as_bytes()),
                Part::RequestId => out.extend_from_slice(vars.request_id.as_bytes()),
                Part::ProxyAddForwardedFor => match vars.client_ip {
                    Some(ip) => {
                        let value = forwarded_for_value(request, ip_header_value(ip));
                        out.extend_from_slice(value.as_bytes());
                    }
                    None => join_values(
                        out,
                        request,
                        &http::header::HeaderName::from_static("x-forwarded-for"),
                    ),
                },
                Part::Header(name) => join_values(out, request, name),
            }
        }
    }
}

fn literal(text: &str, whole: &str) -> Result<Part, String> {
    HeaderValue::from_str(text)
        .map(|_| Part::Literal(text.as_bytes().into()))
        .map_err(|_| format!("header value `{whole}` holds characters a header cannot carry"))
}

fn variable(name: &str, whole: &str) -> Result<Part, String> {
    let part = match name {
        "client_ip" | "remote_addr" => Part::ClientIp,
        "realip_remote_addr" => Part::PeerAddr,
        "scheme" => Part::Scheme,
        "host" => Part::Host,
        "request_id" => Part::RequestId,
        "proxy_add_x_forwarded_for" => Part::ProxyAddForwardedFor,
        _ => {
            let header = name
                .strip_prefix("http_")
                .filter(|h| !h.is_empty())
                .and_then(|h| HeaderName::try_from(h.replace('_', "-")).ok());
            match header {
                Some(header) => Part::Header(header),
                None => {
                    return Err(format!(
                        "unknown variable `${name}` in header value `{whole}` (known: {KNOWN_VARIABLES})"
                    ))
                }
            }
        }
    };
    Ok(part)
}

fn push_ip(out: &mut Vec<u8>, ip: Option<IpAddr>) {
    if let Some(ip) = ip {
        out.extend_from_slice(ip_header_value(ip).as_bytes());
    }
}

/// Every value of `name` in `request`, comma-separated.
fn join_values(out: &mut Vec<u8>, request: &RequestHeader, name: &HeaderName) {
    let start = out.len();
    for value in request.headers.get_all(name) {
        if out.len() > start {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(value.as_bytes());
    }
}

/// What a rule does with its header.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// Replaces the header; an empty value leaves it out (as nginx does).
    Set(Template),
    /// Adds to the client's value after a comma.
    Append(Template),
}

/// One header an upstream, site or location sends its own way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeaderRule {
    name: HeaderName,
    op: Op,
}

/// Headers the proxy owns (framing and the connection) or sets another way (Host).
const NOT_SETTABLE: [(&str, &str); 9] = [
    ("host", "the Host header is set with `host_header`"),
    (
        "connection",
        "`Connection` belongs to each connection and is never forwarded",
    ),
    (
        "keep-alive",
        "`Keep-Alive` belongs to each connection and is never forwarded",
    ),
    (
        "proxy-connection",
        "`Proxy-Connection` belongs to each connection and is never forwarded",
    ),
    (
        "te",
        "`TE` belongs to each connection and is never forwarded",
    ),
    (
        "trailer",
        "`Trailer` belongs to the body's framing, which the proxy manages",
    ),
    (
        "transfer-encoding",
        "`Transfer-Encoding` belongs to the body's framing, which the proxy manages",
    ),
    (
        "content-length",
        "`Content-Length` belongs to the body's framing, which the proxy manages",
    ),
    (
        "upgrade",
        "`Upgrade` is forwarded as the client sent it, for WebSockets",
    ),
];

impl HeaderRule {
    /// A rule for header `name`: set to `value`, or appended with it.
    pub(crate) fn parse(name: &str, value: &str, append: bool) -> Result<Self, String> {
        let header =
            HeaderName::try_from(name).map_err(|_| format!("invalid header name `{name}`"))?;
        if let Some((_, why)) = NOT_SETTABLE.iter().find(|(n, _)| header == *n) {
            return Err(format!("`{name}` cannot be set here: {why}"));
        }
        let template = Template::parse(value)?;
        let op = if append {
            Op::Append(template)
        } else {
            Op::Set(template)
        };
        Ok(Self { name: header, op })
    }

    /// The header the rule is for.
    pub(crate) fn name(&self) -> &HeaderName {
        &self.name
    }
}

/// `later` merged over `rules`: a header named in both takes the later rule.
pub(crate) fn merge_rules(rules: &mut Vec<HeaderRule>, later: &[HeaderRule]) {
    for rule in later {
        match rules.iter_mut().find(|r| r.name == rule.name) {
            Some(earlier) => *earlier = rule.clone(),
            None => rules.push(rule.clone()),
        }
    }
}

/// The values a header rule may use, for one request.
pub(crate) struct HeaderVars<'a> {
    /// The verified client (`$client_ip`, `$remote_addr`).
    pub(crate) client_ip: Option<IpAddr>,
    /// The TCP peer (`$realip_remote_addr`).
    pub(crate) peer_ip: Option<IpAddr>,
    /// `http` or `https`, as a trusted proxy says or the connection is (`$scheme`).
    pub(crate) scheme: &'a str,
    /// The normalised Host (`$host`).
    pub(crate) host: &'a str,
    /// The request id (`$request_id`).
    pub(crate) request_id: &'a str,
}

/// A location's merged header rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProxyHeaders(Box<[HeaderRule]>);

/// Rule values rendered for one request: each header and its value, `None` to leave it out.
pub(crate) struct RenderedHeaders(Vec<(HeaderName, Option<HeaderValue>)>);

impl ProxyHeaders {
    /// The rules, or `None` when there are none (the request path then skips them).
    pub(crate) fn new(rules: Vec<HeaderRule>) -> Option<Self> {
        (!rules.is_empty()).then(|| Self(rules.into_boxed_slice()))
    }

    /// Renders every rule against `request` as the client sent it; call before the
    /// forwarding headers are set.
    pub(crate) fn render(&self, request: &RequestHeader, vars: &HeaderVars<'_>) -> RenderedHeaders {
        let mut out = Vec::with_capacity(self.0.len());
        let mut buf = Vec::new();
        for rule in self.0.iter() {
            buf.clear();
            let template = match &rule.op {
                Op::Set(template) => template,
                Op::Append(template) => {
                    join_values(&mut buf, request, &rule.name);
                    template
                }
            };
            let before = buf.len();
            if matches!(rule.op, Op::Append(_)) && before > 0 {
                buf.extend_from_slice(b", ");
            }
            let separator_end = buf.len();
            template.render(request, vars, &mut buf);
            if buf.len() == separator_end {
                // An empty appended value leaves the client's as it was.
                buf.truncate(before);
            }
            // Values come from literals checked at config time and header values, so they
            // are valid; one that is not is left out rather than sent broken.
            let value = (!buf.is_empty())
                .then(|| HeaderValue::from_bytes(&buf).ok())
                .flatten();
            out.push((rule.name.clone(), value));
        }
        RenderedHeaders(out)
    }
}

impl RenderedHeaders {
    /// Writes the rendered values over whatever the request carries now.
    pub(crate) fn apply(self, request: &mut RequestHeader) -> Result<()> {
        for (name, value) in self.0 {
            match value {
                Some(value) => {
                    request.insert_header(name, value)?;
                }
                None => {
                    request.remove_header(&name);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        for (name, value) in headers {
            request.append_header(name.to_string(), *value).unwrap();
        }
        request
    }

    fn vars() -> HeaderVars<'static> {
        HeaderVars {
            client_ip: Some("203.0.113.9".parse().unwrap()),
            peer_ip: Some("172.19.0.2".parse().unwrap()),
            scheme: "https",
            host: "git.example.org",
            request_id: "abc",
        }
    }

    fn apply(rules: &[(&str, &str, bool)], headers: &[(&str, &str)]) -> RequestHeader {
        let rules = rules
            .iter()
            .map(|(n, v, a)| HeaderRule::parse(n, v, *a).unwrap())
            .collect();
        let rules = ProxyHeaders::new(rules).unwrap();
        let mut req = request(headers);
        rules.render(&req, &vars()).apply(&mut req).unwrap();
        req
    }

    fn header<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
        req.headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn variables_render() {
        let req = apply(
            &[
                (
                    "X-A",
                    "$client_ip|$remote_addr|$realip_remote_addr|$scheme://$host/${request_id}",
                    false,
                ),
                ("X-B", "$http_x_forwarded_for", false),
                ("X-Forwarded-For", "$proxy_add_x_forwarded_for", false),
            ],
            &[
                ("x-forwarded-for", "1.1.1.1"),
                ("x-forwarded-for", "2.2.2.2"),
            ],
        );
        assert_eq!(
            header(&req, "x-a"),
            Some("203.0.113.9|203.0.113.9|172.19.0.2|https://git.example.org/abc")
        );
        assert_eq!(header(&req, "x-b"), Some("1.1.1.1, 2.2.2.2"));
        assert_eq!(
            header(&req, "x-forwarded-for"),
            Some("1.1.1.1, 2.2.2.2, 203.0.113.9")
        );
    }

    #[test]
    fn empty_values_leave_the_header_out_and_append_adds_after_a_comma() {
        let req = apply(
            &[
                ("X-Real-IP", "", false),
                ("Via", "edge", true),
                ("X-New", "n", true),
            ],
            &[("x-real-ip", "forged"), ("via", "1.1 fly")],
        );
        assert_eq!(header(&req, "x-real-ip"), None);
        assert_eq!(header(&req, "via"), Some("1.1 fly, edge"));
        assert_eq!(header(&req, "x-new"), Some("n"));
        let missing = apply(&[("X-Empty", "$http_x_none", false)], &[]);
        assert_eq!(
            header(&missing, "x-empty"),
            None,
            "nginx sends no empty header"
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        for (name, value) in [
            ("Host", "x"),
            ("Connection", "close"),
            ("Content-Length", "1"),
            ("bad name", "x"),
            ("X-A", "$nope"),
            ("X-A", "$http_"),
            ("X-A", "${client_ip"),
            ("X-A", "a\nb"),
        ] {
            assert!(
                HeaderRule::parse(name, value, false).is_err(),
                "{name}: {value}"
            );
        }
    }

    #[test]
    fn later_rules_win_name_by_name() {
        let rule = |n, v| HeaderRule::parse(n, v, false).unwrap();
        let mut rules = vec![rule("X-A", "1"), rule("X-B", "1")];
        merge_rules(&mut rules, &[rule("x-b", "2"), rule("X-C", "2")]);
        assert_eq!(
            rules,
            vec![rule("X-A", "1"), rule("X-B", "2"), rule("X-C", "2")]
        );
    }
}
