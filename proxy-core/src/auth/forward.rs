//! [`ForwardAuth`]: each request asked of an auth service first (nginx's `auth_request`,
//! Traefik's ForwardAuth). The proxy sends the service a `GET` with the request's
//! `Authorization` and `Cookie` headers and `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`
//! and `-For`; a 2xx lets the request through (chosen response headers copied onto the
//! upstream request), a 401, a 403 or a redirect (a login page) goes back to the client as
//! the service sent it, and anything else (another status, a timeout, a refused connection)
//! refuses the request with 503: authentication fails closed.

use bytes::Bytes;
use http::HeaderName;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::decisions::{DecisionCache, DecisionKey};
use super::{AuthRequest, AuthVerdict};
use crate::answer::LocalAnswer;
use crate::upstream::{MagicDnsResolver, TailnetNames};

/// Most of an auth service's refusal body passed on to the client.
const MAX_REFUSAL_BODY: usize = 64 * 1024;

/// Headers of the auth service's refusal passed on to the client.
const REFUSAL_HEADERS: [HeaderName; 3] = [
    http::header::WWW_AUTHENTICATE,
    http::header::SET_COOKIE,
    http::header::CACHE_CONTROL,
];

/// Forward auth of one location.
#[derive(Debug)]
pub(crate) struct ForwardAuth {
    url: reqwest::Url,
    timeout: Duration,
    /// Resolves names with the host's resolver: until the running edge hands over its
    /// MagicDNS resolver (and in embedders' tests that run no resolver).
    client: reqwest::Client,
    /// Resolves names from the MagicDNS resolver's table, as upstreams are.
    tailnet_client: OnceLock<reqwest::Client>,
    copy_headers: Vec<HeaderName>,
    user_header: Option<HeaderName>,
    cache: Option<(DecisionCache, DecisionKey)>,
}

impl ForwardAuth {
    /// Asks `url` (http or https) within `timeout`; on a 2xx copies `copy_headers` upstream
    /// and logs `user_header`'s value as the user; remembers decisions in `cache`, if any.
    pub(crate) fn new(
        url: reqwest::Url,
        timeout: Duration,
        copy_headers: Vec<HeaderName>,
        user_header: Option<HeaderName>,
        cache: Option<(DecisionCache, DecisionKey)>,
    ) -> Result<Self, String> {
        let client = client(timeout, None)?;
        Ok(Self {
            url,
            timeout,
            client,
            tailnet_client: OnceLock::new(),
            copy_headers,
            user_header,
            cache,
        })
    }

    /// The service's host name, if it is a name (not an IP address) to keep resolved.
    pub(crate) fn host_name(&self) -> Option<&str> {
        let host = self.url.host_str()?;
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_err()
            .then_some(host)
    }

    /// From now on, resolves the service's name from `resolver`'s table (which must track
    /// [`ForwardAuth::host_name`]).
    pub(crate) fn use_resolver(&self, resolver: &Arc<MagicDnsResolver>) {
        match client(self.timeout, Some(resolver)) {
            Ok(client) => {
                let _ = self.tailnet_client.set(client);
            }
            Err(e) => {
                tracing::error!(url = %self.url, error = %e, "auth service names stay with the host's resolver")
            }
        }
    }

    /// The headers a location sets from the auth service's answer: a client's own values of
    /// them never reach the upstream.
    pub(crate) fn copied_headers(&self) -> &[HeaderName] {
        &self.copy_headers
    }

    /// Asks the auth service about `request` (or remembers its last answer).
    pub(crate) async fn check(&self, request: &AuthRequest<'_>) -> AuthVerdict {
        let key = self
            .cache
            .as_ref()
            .and_then(|(cache, key)| Some((cache, key.of(&request.header.headers)?)));
        if let Some(verdict) = key.as_ref().and_then(|(cache, key)| cache.get(key)) {
            return verdict;
        }
        let verdict = self.ask(request).await;
        if let Some((cache, key)) = key {
            cache.put(key, &verdict);
        }
        verdict
    }

    async fn ask(&self, request: &AuthRequest<'_>) -> AuthVerdict {
        let header = request.header;
        let uri = header.uri.path_and_query().map_or("/", |p| p.as_str());
        let client = self.tailnet_client.get().unwrap_or(&self.client);
        let mut ask = client
            .get(self.url.clone())
            .header("x-forwarded-method", header.method.as_str())
            .header("x-forwarded-proto", request.scheme)
            .header("x-forwarded-host", request.host)
            .header("x-forwarded-uri", uri);
        if let Some(ip) = request.client_ip {
            ask = ask.header("x-forwarded-for", ip.to_string());
        }
        for name in [http::header::AUTHORIZATION, http::header::COOKIE] {
            for value in header.headers.get_all(&name) {
                ask = ask.header(name.clone(), value.clone());
            }
        }
        let response = match ask.send().await {
            Ok(response) => response,
            Err(e) => {
                return AuthVerdict::error(format!("auth service {}: {}", self.url, cause(&e)))
            }
        };
        let status = response.status().as_u16();
        match status {
            200..=299 => self.allowed(response.headers()),
            401 | 403 | 301 | 302 | 303 | 307 | 308 => refusal(response).await,
            _ => AuthVerdict::error(format!("auth service {} answered {status}", self.url)),
        }
    }

    fn allowed(&self, headers: &http::HeaderMap) -> AuthVerdict {
        let copied = self
            .copy_headers
            .iter()
            .flat_map(|name| {
                headers
                    .get_all(name)
                    .iter()
                    .map(move |value| (name.clone(), value.clone()))
            })
            .collect();
        let user = self
            .user_header
            .as_ref()
            .and_then(|name| headers.get(name))
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        AuthVerdict::Allow {
            user,
            headers: copied,
        }
    }
}

/// A client for an auth service, resolving names from `resolver` (else the host's).
fn client(
    timeout: Duration,
    resolver: Option<&Arc<MagicDnsResolver>>,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("proxy-core/", env!("CARGO_PKG_VERSION")));
    if let Some(resolver) = resolver {
        builder = builder.dns_resolver(Arc::new(TailnetNames(resolver.clone())));
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the auth service's client: {e}"))
}

/// The auth service's refusal, passed on: status, body (bounded), content type, the
/// challenge, cookies and a redirect's `Location`.
async fn refusal(mut response: reqwest::Response) -> AuthVerdict {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_REFUSAL_BODY => {
                body.extend_from_slice(&chunk)
            }
            Ok(None) => break,
            Ok(Some(_)) | Err(_) => {
                return AuthVerdict::error(format!(
                    "auth service's {status} answer could not be read whole (at most {MAX_REFUSAL_BODY} bytes)"
                ))
            }
        }
    }
    let mut answer = LocalAnswer::text(status, Bytes::from(body));
    if let Some(kind) = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        answer.content_type = Cow::Owned(kind.to_string());
    }
    answer.location = headers
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    for name in REFUSAL_HEADERS {
        for value in headers.get_all(&name) {
            answer.headers.push((name.clone(), value.clone()));
        }
    }
    AuthVerdict::Deny(answer)
}

/// The innermost cause of a client error (reqwest's own message is only "error sending
/// request").
fn cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    if e.is_timeout() {
        return "timed out".into();
    }
    source.to_string()
}
