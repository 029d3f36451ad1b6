//! One receiver (a Prometheus or Loki push URL on the tailnet) and the HTTPS client that
//! pushes to it: names resolved from the MagicDNS resolver's table (never a lookup of its
//! own), credentials from environment variables, rustls with the web roots or a CA file.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::upstream::{MagicDnsResolver, TailnetNames};

/// How a push authenticates; secrets are read from the environment when a client is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Auth {
    /// No `Authorization` header.
    None,
    /// `Authorization: Bearer $VAR`.
    Bearer {
        /// The environment variable holding the token.
        token_env: String,
    },
    /// Basic auth with a user name and `$VAR` as the password.
    Basic {
        user: String,
        /// The environment variable holding the password.
        password_env: String,
    },
}

/// A receiver, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) url: reqwest::Url,
    /// Longest wait for one push.
    pub(crate) timeout: Duration,
    pub(crate) auth: Auth,
    /// Verify the receiver's certificate.
    pub(crate) verify: bool,
    /// PEM CAs trusted instead of the web roots.
    pub(crate) ca_pem: Option<Vec<u8>>,
}

impl Endpoint {
    /// The URL's host (a tailnet name, or an IP literal without brackets).
    pub(crate) fn host(&self) -> &str {
        let host = self.url.host_str().unwrap_or_default();
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// Whether the host is a name the resolver must keep resolved.
    pub(crate) fn needs_resolution(&self) -> bool {
        self.host().parse::<IpAddr>().is_err()
    }

    /// A client for this receiver. Fails only if the TLS settings cannot be used (they
    /// were checked when the config compiled).
    pub(crate) fn client(&self, resolver: &Arc<MagicDnsResolver>) -> Result<PushClient, String> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .user_agent(concat!("proxy-core/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(TailnetNames(resolver.clone())));
        if let Some(pem) = &self.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())?;
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if !self.verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok(PushClient {
            client,
            url: self.url.clone(),
            authorization: self.authorization(),
        })
    }

    /// The credentials, read from the environment now. A variable that is unset or empty
    /// is logged and the push goes without credentials.
    fn authorization(&self) -> Option<Credentials> {
        let secret = |name: &str| match std::env::var(name) {
            Ok(value) if !value.is_empty() => Some(value),
            _ => {
                tracing::warn!(variable = name, url = %self.url, "credential variable unset or empty; pushing without credentials");
                None
            }
        };
        match &self.auth {
            Auth::None => None,
            Auth::Bearer { token_env } => secret(token_env).map(Credentials::Bearer),
            Auth::Basic { user, password_env } => {
                secret(password_env).map(|password| Credentials::Basic(user.clone(), password))
            }
        }
    }
}

/// What became of one push.
#[derive(Debug)]
pub(crate) enum PushError {
    /// Worth retrying: no connection, a timeout, a 5xx or 429.
    Retry(String),
    /// The receiver refused the data for good (another 4xx): retrying cannot help.
    Rejected(String),
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Retry(why) | Self::Rejected(why) => f.write_str(why),
        }
    }
}

/// Credentials as read from the environment.
#[derive(Clone)]
enum Credentials {
    Bearer(String),
    Basic(String, String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret itself.
        f.write_str(match self {
            Self::Bearer(_) => "Bearer(..)",
            Self::Basic(..) => "Basic(..)",
        })
    }
}

/// A client bound to one receiver.
#[derive(Debug, Clone)]
pub(crate) struct PushClient {
    client: reqwest::Client,
    url: reqwest::Url,
    authorization: Option<Credentials>,
}

impl PushClient {
    /// POSTs `body` with `headers`; Ok on a 2xx answer.
    pub(crate) async fn push(
        &self,
        body: Bytes,
        headers: &[(&'static str, &'static str)],
    ) -> Result<(), PushError> {
        let mut request = self.client.post(self.url.clone()).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request = match &self.authorization {
            Some(Credentials::Bearer(token)) => request.bearer_auth(token),
            Some(Credentials::Basic(user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        };
        let response = request
            .send()
            .await
            .map_err(|e| PushError::Retry(error_chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        let why = format!(
            "{status}: {}",
            body.trim().chars().take(300).collect::<String>()
        );
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Err(PushError::Retry(why))
        } else {
            Err(PushError::Rejected(why))
        }
    }
}

/// An error with its causes ("error sending request: connection refused").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
