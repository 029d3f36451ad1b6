//! Purges: the proxy-core API an admin endpoint calls. Purging is never reachable from the
//! public port; the admin listener authenticates the caller, then calls
//! [`EdgeCache::purge`] (or [`EdgeCache::purge_url`] / [`EdgeCache::purge_host`]).

use super::EdgeCache;
use crate::route::normalize_host;

/// What to purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeScope {
    /// Every entry of this host and path: all query strings, all `Vary` variants, GET and
    /// HEAD (they share entries).
    Url {
        /// The host, as a client would send it (case, port and trailing dot are ignored).
        host: String,
        /// The path; a query, if given, is ignored.
        path: String,
    },
    /// Everything cached for this host.
    Host(String),
}

impl EdgeCache {
    /// Removes what `scope` names; returns how many entries were removed.
    pub fn purge(&self, scope: &PurgeScope) -> usize {
        match scope {
            PurgeScope::Url { host, path } => self.purge_url(host, path),
            PurgeScope::Host(host) => self.purge_host(host),
        }
    }

    /// Removes every entry of `host` + `path` (query ignored); returns how many.
    pub fn purge_url(&self, host: &str, path: &str) -> usize {
        let host = canonical_host(host);
        let path = path.split('?').next().unwrap_or(path);
        self.storage()
            .purge_matching(|tags| *tags.host == *host && *tags.path == *path)
    }

    /// Removes every entry of `host`; returns how many.
    pub fn purge_host(&self, host: &str) -> usize {
        let host = canonical_host(host);
        self.storage().purge_matching(|tags| *tags.host == *host)
    }
}

fn canonical_host(host: &str) -> String {
    match normalize_host(host.as_bytes()) {
        Ok(Some(normalized)) => normalized,
        _ => host.to_ascii_lowercase(),
    }
}

/// The admin action behind `POST /admin/purge?host=HOST[&path=/PATH]`: purges one URL (every
/// query string and variant) when `path` is given, else everything cached for the host.
/// Answers `{"purged": N}`. The admin listener checks the bearer token before calling it.
pub struct PurgeAction {
    cache: &'static EdgeCache,
}

impl PurgeAction {
    /// A purge action over `cache`.
    pub fn new(cache: &'static EdgeCache) -> Self {
        Self { cache }
    }

    /// The scope a query string asks for, or why it asks for none.
    pub fn scope(query: &str) -> Result<PurgeScope, &'static str> {
        let mut host = None;
        let mut path = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned();
            match name {
                "host" => host = Some(value),
                "path" => path = Some(value),
                _ => return Err("unknown parameter: use host=HOST and optionally path=/PATH\n"),
            }
        }
        let host = host
            .filter(|h| !h.is_empty())
            .ok_or("missing host=HOST\n")?;
        match path {
            Some(path) if path.starts_with('/') => Ok(PurgeScope::Url { host, path }),
            Some(_) => Err("path must start with '/'\n"),
            None => Ok(PurgeScope::Host(host)),
        }
    }
}

#[async_trait::async_trait]
impl crate::admin::AdminAction for PurgeAction {
    async fn run(
        &self,
        session: &mut pingora::protocols::http::ServerSession,
    ) -> http::Response<Vec<u8>> {
        let request = session.req_header();
        let respond = |status: http::StatusCode, body: String| {
            let mut response = http::Response::new(body.into_bytes());
            *response.status_mut() = status;
            let length = http::HeaderValue::from(response.body().len());
            response
                .headers_mut()
                .insert(http::header::CONTENT_LENGTH, length);
            response
        };
        if request.method != http::Method::POST && request.method.as_str() != "PURGE" {
            return respond(http::StatusCode::METHOD_NOT_ALLOWED, "use POST\n".into());
        }
        match Self::scope(request.uri.query().unwrap_or("")) {
            Ok(scope) => {
                let purged = self.cache.purge(&scope);
                respond(http::StatusCode::OK, format!("{{\"purged\":{purged}}}\n"))
            }
            Err(why) => respond(http::StatusCode::BAD_REQUEST, why.into()),
        }
    }
}

#[cfg(test)]
mod purge_action_tests {
    use super::*;

    #[test]
    fn scopes_from_queries() {
        assert_eq!(
            PurgeAction::scope("host=docs.example.com&path=/a%20b"),
            Ok(PurgeScope::Url {
                host: "docs.example.com".into(),
                path: "/a b".into()
            })
        );
        assert_eq!(
            PurgeAction::scope("host=docs.example.com"),
            Ok(PurgeScope::Host("docs.example.com".into()))
        );
        assert!(PurgeAction::scope("").is_err());
        assert!(PurgeAction::scope("host=x&path=nope").is_err());
        assert!(PurgeAction::scope("host=x&all=1").is_err());
    }
}
