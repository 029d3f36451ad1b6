//! Who may use a site or location: basic auth from an htpasswd file ([`basic`]), or an
//! auth service asked for each request ([`forward`], its answers remembered briefly by
//! [`decisions`]); checked after the location's guards and before its plugins. Credentials
//! never reach the access log (which may name the authenticated user), and the
//! `Authorization` header stops at the edge unless the location keeps it.

mod basic;
mod decisions;
mod forward;
mod htpasswd;

pub(crate) use basic::BasicAuth;
pub(crate) use decisions::{DecisionCache, DecisionKey, KeyPart};
pub(crate) use forward::ForwardAuth;
pub(crate) use htpasswd::HtpasswdFile;

use http::{HeaderName, HeaderValue};
use std::sync::Arc;

use crate::answer::LocalAnswer;

/// How a location authenticates its requests.
#[derive(Debug)]
pub(crate) enum AuthMethod {
    /// `Authorization: Basic` against an htpasswd file.
    Basic(BasicAuth),
    /// An auth service asked for each request.
    Forward(Arc<ForwardAuth>),
}

/// What authentication sees of a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuthRequest<'a> {
    pub(crate) header: &'a pingora::http::RequestHeader,
    /// The normalised Host.
    pub(crate) host: &'a str,
    pub(crate) scheme: &'static str,
    pub(crate) client_ip: Option<std::net::IpAddr>,
}

/// A site's or location's authentication, compiled.
#[derive(Debug)]
pub(crate) struct LocationAuth {
    method: AuthMethod,
    keep_authorization: bool,
}

/// What authentication decided for a request.
#[derive(Debug, Clone)]
pub(crate) enum AuthVerdict {
    /// Go on; `user` is logged; `headers` are set on the upstream request.
    Allow {
        user: Option<String>,
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    /// Refused: this answer (401 or 403) goes to the client.
    Deny(LocalAnswer),
    /// Authentication could not decide: the request is refused (fail closed) with this
    /// answer, and `why` is logged.
    Error { answer: LocalAnswer, why: String },
}

impl AuthVerdict {
    fn allow(user: String) -> Self {
        AuthVerdict::Allow {
            user: Some(user),
            headers: Vec::new(),
        }
    }

    fn error(why: String) -> Self {
        AuthVerdict::Error {
            answer: LocalAnswer::text(503, "authentication unavailable\n"),
            why,
        }
    }

    /// The outcome's word in metrics: `allowed`, `denied` or `error`.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            AuthVerdict::Allow { .. } => "allowed",
            AuthVerdict::Deny(_) => "denied",
            AuthVerdict::Error { .. } => "error",
        }
    }
}

impl LocationAuth {
    pub(crate) fn new(method: AuthMethod, keep_authorization: bool) -> Self {
        Self {
            method,
            keep_authorization,
        }
    }

    /// Checks a request.
    pub(crate) async fn check(&self, request: &AuthRequest<'_>) -> AuthVerdict {
        match &self.method {
            AuthMethod::Basic(basic) => basic.check(&request.header.headers).await,
            AuthMethod::Forward(forward) => forward.check(request).await,
        }
    }

    /// Readies the upstream request of an allowed request: the client's `Authorization`
    /// removed (unless kept), `headers` (what authentication found) set.
    pub(crate) fn prepare_upstream(
        &self,
        request: &mut pingora::http::RequestHeader,
        headers: &[(HeaderName, HeaderValue)],
    ) -> pingora::Result<()> {
        if !self.keep_authorization {
            request.remove_header(&http::header::AUTHORIZATION);
        }
        if let AuthMethod::Forward(forward) = &self.method {
            for name in forward.copied_headers() {
                request.remove_header(name);
            }
        }
        for (name, value) in headers {
            request.append_header(name.clone(), value.clone())?;
        }
        Ok(())
    }
}
