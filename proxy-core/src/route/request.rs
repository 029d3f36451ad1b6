//! Routing one request: the checks that come before any site (framing, the health path,
//! Host), then site, location, and what the location's action means for this request.

use pingora::http::RequestHeader;
use std::sync::Arc;

use super::{
    normalize_host, normalize_path, Action, Location, RedirectVars, Routes, Site, UnknownHostAnswer,
};
use crate::answer::{LocalAnswer, Reply};
use crate::upstream::Upstream;

/// Where a request goes.
#[derive(Debug)]
pub(crate) enum Routing {
    /// Answered before any site is known: a health check, a malformed request, an unknown
    /// host. No site rule (plugin, error page) applies. Boxed, like [`Next::Answer`]: the
    /// common case is a proxied request, which should not move a whole answer around.
    Answered(Box<Reply>),
    /// A site serves the request's host.
    Site(Routed),
}

/// A request matched to a site (and, unless it gets a 404, a location).
#[derive(Debug)]
pub(crate) struct Routed {
    /// The normalised Host.
    pub(crate) host: String,
    pub(crate) site: Arc<Site>,
    pub(crate) location: Option<Arc<Location>>,
    /// What the location does for this request, once its guards and plugins let it through.
    pub(crate) next: Next,
}

/// What a location's action means for one request.
#[derive(Debug)]
pub(crate) enum Next {
    /// Forward to this upstream.
    Proxy(Arc<Upstream>),
    /// Answer locally (a `return`, a rendered redirect, or a 404 when no location matched).
    Answer(Box<LocalAnswer>),
}

impl Routes {
    /// Routes `request`, which arrived over `scheme`. `raw_head` gives the request head as
    /// received, for the one check the parsed header cannot answer (see [`check_framing`]).
    pub(crate) fn route(
        &self,
        request: &RequestHeader,
        scheme: &'static str,
        raw_head: impl FnOnce() -> Option<bytes::Bytes>,
    ) -> Routing {
        if let Some(answer) = check_framing(request, raw_head) {
            return Routing::Answered(Box::new(Reply::Send(answer)));
        }
        let path = request.uri.path();
        let settings = self.settings();
        if settings.health_path.as_deref() == Some(path) && is_get_or_head(request) {
            return Routing::Answered(Box::new(Reply::Send(LocalAnswer::text(200, "ok\n"))));
        }
        let host = match request_host(request) {
            HostLookup::Found(host) => host,
            HostLookup::Missing => {
                return Routing::Answered(Box::new(unknown_host(settings.unknown_host)))
            }
            HostLookup::Invalid(why) => {
                return Routing::Answered(Box::new(Reply::Send(
                    LocalAnswer::text(400, why).closing(),
                )))
            }
        };
        let Some(site) = self.site_for_host(&host).cloned() else {
            return Routing::Answered(Box::new(unknown_host(settings.unknown_host)));
        };
        let normalized = match normalize_path(path) {
            Ok(p) => p,
            Err(e) => {
                let answer = LocalAnswer::text(400, format!("{e}\n")).closing();
                return Routing::Answered(Box::new(Reply::Send(answer)));
            }
        };
        let location = site.location_for_path(&normalized).cloned();
        let next = match &location {
            Some(location) => next_for(location.action(), request, &normalized, &host, scheme),
            None => Next::Answer(Box::new(LocalAnswer::text(404, "not found\n"))),
        };
        Routing::Site(Routed {
            host,
            site,
            location,
            next,
        })
    }
}

/// What `action` does for `request`, whose normalised path is `path`.
fn next_for(
    action: &Action,
    request: &RequestHeader,
    path: &[u8],
    host: &str,
    scheme: &'static str,
) -> Next {
    match action {
        Action::Proxy(upstream) => Next::Proxy(upstream.clone()),
        Action::Return {
            status,
            content_type,
            body,
        } => Next::Answer(Box::new(LocalAnswer {
            content_type: content_type.clone().into(),
            ..LocalAnswer::text(*status, body.clone())
        })),
        Action::Redirect { status, target } => {
            let uri = String::from_utf8_lossy(path);
            let vars = RedirectVars {
                request_uri: request.uri.path_and_query().map_or("/", |pq| pq.as_str()),
                uri: &uri,
                args: request.uri.query().unwrap_or(""),
                host,
                scheme,
            };
            Next::Answer(Box::new(LocalAnswer {
                location: Some(target.render(&vars)),
                ..LocalAnswer::text(*status, "")
            }))
        }
    }
}

fn unknown_host(answer: UnknownHostAnswer) -> Reply {
    match answer {
        UnknownHostAnswer::Close => Reply::Close,
        UnknownHostAnswer::Status(status) => {
            Reply::Send(LocalAnswer::text(status, "unknown host\n"))
        }
    }
}

enum HostLookup {
    Found(String),
    Missing,
    Invalid(&'static str),
}

/// The request's host: the Host header, or the authority of an absolute-form target.
/// HTTP/1.1 requires Host (RFC 9112 3.2); HTTP/1.0 without it is treated as an unknown host.
fn request_host(request: &RequestHeader) -> HostLookup {
    let raw = match request.headers.get(http::header::HOST) {
        Some(value) => value.as_bytes(),
        None => match request.uri.authority() {
            Some(authority) => authority.as_str().as_bytes(),
            None if request.version == http::Version::HTTP_10 => return HostLookup::Missing,
            None => return HostLookup::Invalid("missing Host header\n"),
        },
    };
    match normalize_host(raw) {
        Ok(Some(host)) => HostLookup::Found(host),
        Ok(None) => HostLookup::Missing,
        Err(_) => HostLookup::Invalid("invalid Host header\n"),
    }
}

/// Refuses framing that Pingora tolerates but a strict edge should not. RFC 9112 6.1 lets a
/// server either reject Transfer-Encoding with Content-Length or drop the length; Pingora
/// drops it (and closes after), we reject, since the pair is the classic smuggling vector.
/// Pingora removes Content-Length from the parsed header when Transfer-Encoding is present,
/// so the head as received (`raw_head`) is read for chunked requests.
fn check_framing(
    request: &RequestHeader,
    raw_head: impl FnOnce() -> Option<bytes::Bytes>,
) -> Option<LocalAnswer> {
    if request.method == http::Method::CONNECT {
        return Some(LocalAnswer::text(405, "CONNECT is not supported\n").closing());
    }
    if !request
        .headers
        .contains_key(http::header::TRANSFER_ENCODING)
    {
        return None;
    }
    let has_length = request.headers.contains_key(http::header::CONTENT_LENGTH)
        || raw_head().is_some_and(|raw| has_content_length_line(&raw));
    has_length
        .then(|| LocalAnswer::text(400, "both Transfer-Encoding and Content-Length\n").closing())
}

fn has_content_length_line(raw: &[u8]) -> bool {
    raw.split(|b| *b == b'\n')
        .any(|line| line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
}

fn is_get_or_head(request: &RequestHeader) -> bool {
    request.method == http::Method::GET || request.method == http::Method::HEAD
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use crate::model::RuntimeConfig;
    use std::path::Path;

    const CONFIG: &str = r#"
[server]
health_path = "/healthz"
[upstreams.docs]
address = "127.0.0.1:9000"
[sites.docs]
hosts = ["docs.example.com", "*.docs.example.com"]
[[sites.docs.locations]]
match = "/"
proxy = "docs"
[[sites.docs.locations]]
match = "= /robots.txt"
return = { status = 200, body = "User-agent: *\n" }
[[sites.docs.locations]]
match = "^~ /old/"
redirect = { status = 301, to = "$scheme://$host/new$request_uri" }
[sites.api]
hosts = ["api.example.com"]
[[sites.api.locations]]
match = "/v1/"
proxy = "docs"
"#;

    fn config(extra: &str) -> RuntimeConfig {
        load_str(&format!("{extra}{CONFIG}"), None, Path::new(".")).expect("valid config")
    }

    fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build(method, target.as_bytes(), None).unwrap();
        for (name, value) in headers {
            request.append_header(name.to_string(), *value).unwrap();
        }
        request
    }

    fn route(config: &RuntimeConfig, request: &RequestHeader) -> Routing {
        config.routes.route(request, "https", || None)
    }

    fn answered(routing: Routing) -> Reply {
        match routing {
            Routing::Answered(reply) => *reply,
            Routing::Site(routed) => panic!("routed to {}", routed.site.name()),
        }
    }

    fn status(reply: Reply) -> (u16, bool) {
        match reply {
            Reply::Send(answer) => (answer.status, answer.close),
            Reply::Close => (0, true),
        }
    }

    fn routed(routing: Routing) -> Routed {
        match routing {
            Routing::Site(routed) => routed,
            Routing::Answered(reply) => panic!("answered {reply:?}"),
        }
    }

    #[test]
    fn health_path_answers_for_any_host_and_only_get_or_head() {
        let config = config("");
        let reply = answered(route(
            &config,
            &request("GET", "/healthz", &[("host", "x")]),
        ));
        assert_eq!(status(reply), (200, false));
        let post = route(&config, &request("POST", "/healthz", &[("host", "x")]));
        assert_eq!(
            status(answered(post)),
            (0, true),
            "unknown host, not health"
        );
    }

    #[test]
    fn unknown_missing_and_invalid_hosts() {
        let config = config("");
        let unknown = request("GET", "/", &[("host", "nope.example.com")]);
        assert!(matches!(answered(route(&config, &unknown)), Reply::Close));
        let config = config_with_unknown_host_status();
        let unknown = request("GET", "/", &[("host", "nope.example.com")]);
        assert_eq!(status(answered(route(&config, &unknown))), (421, false));
        let missing = request("GET", "/", &[]);
        assert_eq!(status(answered(route(&config, &missing))), (400, true));
        let invalid = request("GET", "/", &[("host", "a b")]);
        assert_eq!(status(answered(route(&config, &invalid))), (400, true));
    }

    fn config_with_unknown_host_status() -> RuntimeConfig {
        let text = CONFIG.replace("[server]\n", "[server]\nunknown_host = 421\n");
        load_str(&text, None, Path::new(".")).expect("valid config")
    }

    #[test]
    fn framing_that_could_smuggle_is_refused() {
        let config = config("");
        let connect = request(
            "CONNECT",
            "docs.example.com:443",
            &[("host", "docs.example.com")],
        );
        assert_eq!(status(answered(route(&config, &connect))), (405, true));
        let both = request(
            "POST",
            "/",
            &[
                ("host", "docs.example.com"),
                ("transfer-encoding", "chunked"),
            ],
        );
        let raw = || {
            Some(bytes::Bytes::from_static(
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\n",
            ))
        };
        let reply = answered(config.routes.route(&both, "http", raw));
        assert_eq!(status(reply), (400, true));
        assert!(matches!(
            config.routes.route(&both, "http", || None),
            Routing::Site(_)
        ));
    }

    #[test]
    fn sites_locations_and_actions() {
        let config = config("");
        let r = routed(route(
            &config,
            &request("GET", "/a", &[("host", "Docs.Example.COM:443")]),
        ));
        assert_eq!(
            (r.host.as_str(), r.site.name()),
            ("docs.example.com", "docs")
        );
        assert!(matches!(r.next, Next::Proxy(ref u) if u.name == "docs"));
        let wildcard = request("GET", "/a", &[("host", "x.docs.example.com")]);
        assert_eq!(routed(route(&config, &wildcard)).site.name(), "docs");
        let robots = routed(route(
            &config,
            &request("GET", "/robots.txt", &[("host", "docs.example.com")]),
        ));
        assert!(matches!(robots.next, Next::Answer(ref a) if a.status == 200));
        let old = request("GET", "/old/x?y=1", &[("host", "docs.example.com")]);
        match routed(route(&config, &old)).next {
            Next::Answer(answer) => {
                assert_eq!(answer.status, 301);
                let target = answer.location.as_deref();
                assert_eq!(target, Some("https://docs.example.com/new/old/x?y=1"));
            }
            Next::Proxy(_) => panic!("redirect expected"),
        }
        let none = routed(route(
            &config,
            &request("GET", "/v2/", &[("host", "api.example.com")]),
        ));
        assert!(none.location.is_none());
        assert!(matches!(none.next, Next::Answer(ref a) if a.status == 404));
    }

    #[test]
    fn paths_are_matched_normalised_and_bad_ones_refused() {
        let config = config("");
        let sneaky = request("GET", "/x/../%72obots.txt", &[("host", "docs.example.com")]);
        let r = routed(route(&config, &sneaky));
        assert_eq!(r.location.map(|l| l.index()), Some(1));
        let above = request("GET", "/../etc", &[("host", "docs.example.com")]);
        assert_eq!(status(answered(route(&config, &above))), (400, true));
    }
}
