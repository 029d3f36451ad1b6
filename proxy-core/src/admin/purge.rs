//! `POST /admin/purge`: cache purges through the admin listener.

use std::sync::Arc;

use super::AdminAction;
use crate::cache::{EdgeCache, PurgeScope};
use crate::fleet::{Fleet, FleetMessage};

/// The admin action behind `POST /admin/purge?host=HOST[&path=/PATH]`: purges one URL (every
/// query string and variant) when `path` is given, else everything cached for the host.
/// Answers `{"purged": N}`. The admin listener checks the bearer token before calling it.
/// In a fleet ([`PurgeAction::with_fleet`]) the purge is also sent to every other machine,
/// and the answer says so: `{"purged": N, "fleet": "queued"}` (or `"refused"` when the queue
/// of messages waiting for Redis is full).
pub struct PurgeAction {
    cache: &'static EdgeCache,
    fleet: Option<Arc<Fleet>>,
}

impl PurgeAction {
    /// A purge action over `cache`.
    pub fn new(cache: &'static EdgeCache) -> Self {
        Self { cache, fleet: None }
    }

    /// Also sends each purge to the rest of `fleet`.
    pub fn with_fleet(mut self, fleet: Arc<Fleet>) -> Self {
        self.fleet = Some(fleet);
        self
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
impl AdminAction for PurgeAction {
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
                let Some(fleet) = &self.fleet else {
                    return respond(http::StatusCode::OK, format!("{{\"purged\":{purged}}}\n"));
                };
                let sent = if fleet.publish(FleetMessage::from(&scope)) {
                    "queued"
                } else {
                    tracing::warn!(instance = %fleet.settings().instance(), ?scope, "fleet purge queue full: purged here only");
                    "refused"
                };
                respond(
                    http::StatusCode::OK,
                    format!("{{\"purged\":{purged},\"fleet\":\"{sent}\"}}\n"),
                )
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
