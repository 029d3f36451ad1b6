//! Redaction of secrets before anything reaches a log: query parameters named like secrets,
//! URL credentials, and the values of `Authorization`/`Cookie`-like headers.

use std::borrow::Cow;

/// What replaces a secret.
pub(crate) const REDACTED: &str = "REDACTED";

/// Headers whose values are never logged.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// Redacts secrets in URIs and header values for the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redactor {
    /// Lower-case fragments: a query parameter whose name contains one is redacted.
    params: Vec<String>,
    /// Whether a byte (lower-cased) begins some fragment: a name is compared with the
    /// fragments only where one could begin, so most names are passed over in one scan.
    starts: [bool; 256],
}

impl Redactor {
    /// A redactor for parameter names containing any of `fragments` (case-insensitive).
    pub fn new(fragments: impl IntoIterator<Item = String>) -> Self {
        let params: Vec<String> = fragments
            .into_iter()
            .map(|f| f.to_ascii_lowercase())
            .filter(|f| !f.is_empty())
            .collect();
        let mut starts = [false; 256];
        for first in params.iter().filter_map(|p| p.bytes().next()) {
            starts[usize::from(first)] = true;
        }
        Self { params, starts }
    }

    fn is_secret_param(&self, name: &str) -> bool {
        // Most names have nothing percent-encoded: they are matched as they are.
        let decoded = match name.as_bytes().contains(&b'%') {
            true => percent_encoding::percent_decode_str(name).decode_utf8_lossy(),
            false => Cow::Borrowed(name),
        };
        let name = decoded.as_bytes();
        (0..name.len())
            .filter(|&at| self.starts[usize::from(name[at].to_ascii_lowercase())])
            .any(|at| {
                self.params.iter().any(|p| {
                    name[at..]
                        .get(..p.len())
                        .is_some_and(|candidate| candidate.eq_ignore_ascii_case(p.as_bytes()))
                })
            })
    }

    fn has_secret_param(&self, query: &str) -> bool {
        query_pairs(query)
            .filter_map(|pair| split_at_byte(pair, b'='))
            .any(|(name, _)| self.is_secret_param(name))
    }

    /// `uri` with the values of secret query parameters and any `user:password@` replaced;
    /// borrowed when there is nothing to replace.
    pub fn uri<'u>(&self, uri: &'u str) -> Cow<'u, str> {
        let uri = strip_userinfo(uri);
        let Some((path, query)) = split_at_byte(&uri, b'?') else {
            return uri;
        };
        let (query, fragment) = match split_at_byte(query, b'#') {
            Some((q, f)) => (q, Some(f)),
            None => (query, None),
        };
        if !self.has_secret_param(query) {
            return uri;
        }
        let mut out = String::with_capacity(uri.len());
        out.push_str(path);
        out.push('?');
        for (i, pair) in query_pairs(query).enumerate() {
            if i > 0 {
                out.push('&');
            }
            match split_at_byte(pair, b'=') {
                Some((name, _)) if self.is_secret_param(name) => {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(REDACTED);
                }
                _ => out.push_str(pair),
            }
        }
        if let Some(fragment) = fragment {
            out.push('#');
            out.push_str(fragment);
        }
        Cow::Owned(out)
    }

    /// A header value as it may be logged: secret headers' values are replaced.
    pub fn header<'a>(&self, name: &str, value: &'a str) -> &'a str {
        if SECRET_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            REDACTED
        } else {
            value
        }
    }
}

/// `text` split around the first `byte` (ASCII), without `str`'s pattern machinery: these
/// run on every logged request, on short strings.
fn split_at_byte(text: &str, byte: u8) -> Option<(&str, &str)> {
    let at = text.bytes().position(|b| b == byte)?;
    Some((text.get(..at)?, text.get(at + 1..)?))
}

/// The `&`-separated pairs of a query.
fn query_pairs(query: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(query);
    std::iter::from_fn(move || {
        let text = rest?;
        match split_at_byte(text, b'&') {
            Some((pair, more)) => {
                rest = Some(more);
                Some(pair)
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

/// Removes `user:password@` from an absolute URI.
fn strip_userinfo(uri: &str) -> Cow<'_, str> {
    // An origin-form target (most requests) has no authority to look into.
    if uri.is_empty() || uri.starts_with('/') {
        return Cow::Borrowed(uri);
    }
    let Some(scheme_end) = uri.find("://") else {
        return Cow::Borrowed(uri);
    };
    let rest = &uri[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => Cow::Owned(format!(
            "{}{REDACTED}@{}",
            &uri[..scheme_end + 3],
            &rest[at + 1..]
        )),
        None => Cow::Borrowed(uri),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::DEFAULT_REDACT_QUERY_PARAMS;

    /// The redactor of `[access_log]` at its default.
    fn defaults() -> Redactor {
        Redactor::new(DEFAULT_REDACT_QUERY_PARAMS.iter().map(|p| p.to_string()))
    }

    #[test]
    fn secret_query_values_are_replaced_others_kept() {
        let r = defaults();
        assert_eq!(
            r.uri("/a?access_token=abc&page=2&API_KEY=k&password=p&x#frag"),
            "/a?access_token=REDACTED&page=2&API_KEY=REDACTED&password=REDACTED&x#frag"
        );
        assert_eq!(r.uri("/plain"), "/plain");
        assert_eq!(r.uri("/a?my%5Fsecret=s"), "/a?my%5Fsecret=REDACTED");
        assert_eq!(r.uri("/a?My%54oken=s"), "/a?My%54oken=REDACTED");
        assert!(matches!(r.uri("/a?page=2&q=x#f"), Cow::Borrowed(_)));
        assert_eq!(
            r.uri("/a?&&token&token=&=x&"),
            "/a?&&token&token=REDACTED&=x&"
        );
        assert_eq!(r.uri("/a?b=1?token=2"), "/a?b=1?token=2");
    }

    #[test]
    fn fragments_are_found_anywhere_in_a_name_in_any_case() {
        let r = defaults();
        assert_eq!(
            r.uri("/a?xTOKEN=1&mytokenx=2&tok=3&Passwd=4&PASSWORD_HASH=5&k=6&key=7&akey=8&ke=9"),
            "/a?xTOKEN=REDACTED&mytokenx=REDACTED&tok=3&Passwd=4&PASSWORD_HASH=REDACTED&k=6\
             &key=REDACTED&akey=REDACTED&ke=9"
        );
        let r = Redactor::new(["SIG".to_string(), "clé".to_string()]);
        assert_eq!(
            r.uri("/a?xsig=1&si=2&clé=3&cl%C3%A9f=4&cle=5"),
            "/a?xsig=REDACTED&si=2&clé=REDACTED&cl%C3%A9f=REDACTED&cle=5"
        );
    }

    #[test]
    fn custom_list_and_userinfo() {
        let r = Redactor::new(["sig".to_string()]);
        assert_eq!(r.uri("/a?sig=1&token=2"), "/a?sig=REDACTED&token=2");
        assert_eq!(
            r.uri("http://u:p@h.example/x?y=1"),
            "http://REDACTED@h.example/x?y=1"
        );
    }

    #[test]
    fn secret_headers_are_redacted() {
        let r = defaults();
        assert_eq!(r.header("Authorization", "Bearer x"), REDACTED);
        assert_eq!(r.header("cookie", "a=b"), REDACTED);
        assert_eq!(r.header("user-agent", "curl"), "curl");
    }
}
