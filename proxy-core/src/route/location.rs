//! Locations inside a site, matched with nginx's rules.
//!
//! Precedence, as in nginx: an exact match (`= /path`) wins; otherwise the longest matching
//! prefix is remembered, and if it is a priority prefix (`^~ /path`) it wins; otherwise the
//! first matching regex (`~`, `~*`) in file order wins; otherwise the longest prefix.

use bytes::Bytes;
use regex::bytes::Regex;
use std::collections::HashMap;
use std::sync::Arc;

use crate::cache::CachePolicy;
use crate::compress::CompressPolicy;
use crate::guard::Guards;
use crate::plugin::PluginChain;
use crate::upstream::{HostHeader, ProxyHeaders, Upstream};

/// How a location matches request paths (the part of nginx's `location` line before `{`).
#[derive(Debug, Clone)]
pub enum LocationPattern {
    /// `= /path`: this path only.
    Exact(String),
    /// `/path`: paths starting with it.
    Prefix(String),
    /// `^~ /path`: paths starting with it; when it is the longest prefix, regexes are skipped.
    PriorityPrefix(String),
    /// `~ re` (case-sensitive) or `~* re` (case-insensitive).
    Regex {
        /// The compiled expression (case-insensitivity is compiled in).
        regex: Regex,
        /// Whether it was written `~*`.
        case_insensitive: bool,
    },
}

impl LocationPattern {
    /// Parses nginx's location syntax: `"/p"`, `"= /p"`, `"^~ /p"`, `"~ re"`, `"~* re"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (modifier, rest) = match text.split_once(char::is_whitespace) {
            Some((m @ ("=" | "^~" | "~" | "~*"), rest)) => (m, rest.trim()),
            _ => ("", text),
        };
        match modifier {
            "~" | "~*" => compile_regex(rest, modifier == "~*"),
            _ if !rest.starts_with('/') => Err(format!(
                "location `{text}` must be a path starting with '/', or use a modifier: \"= /exact\", \"^~ /prefix\", \"~ regex\", \"~* regex\""
            )),
            "=" => Ok(Self::Exact(rest.to_string())),
            "^~" => Ok(Self::PriorityPrefix(rest.to_string())),
            _ => Ok(Self::Prefix(rest.to_string())),
        }
    }
}

fn compile_regex(source: &str, case_insensitive: bool) -> Result<LocationPattern, String> {
    if source.is_empty() {
        return Err("empty regex".into());
    }
    let full = if case_insensitive {
        format!("(?i){source}")
    } else {
        source.to_string()
    };
    let regex = Regex::new(&full).map_err(|e| {
        // regex's messages span several lines (pattern, caret, reason); keep the reason.
        let text = e.to_string();
        let reason = text
            .lines()
            .last()
            .unwrap_or("")
            .trim_start_matches("error: ")
            .to_string();
        format!("invalid regex `{source}`: {reason}")
    })?;
    Ok(LocationPattern::Regex {
        regex,
        case_insensitive,
    })
}

/// What a location does with a request.
#[derive(Debug, Clone)]
pub enum Action {
    /// Forward to an upstream.
    Proxy(Arc<Upstream>),
    /// Answer locally with a fixed response.
    Return {
        /// Status code.
        status: u16,
        /// Content type of the body.
        content_type: String,
        /// Body bytes.
        body: Bytes,
    },
    /// Answer with a redirect.
    Redirect {
        /// 301, 302, 303, 307 or 308.
        status: u16,
        /// The target, with variables still to substitute.
        target: RedirectTarget,
    },
}

/// A location of a site, compiled: how it matches, what it does, and everything that applies
/// to its requests (guards, plugins, cache policy).
#[derive(Debug)]
pub struct Location {
    index: usize,
    pattern_text: String,
    pattern: LocationPattern,
    action: Action,
    host_header: Option<HostHeader>,
    proxy_headers: Option<ProxyHeaders>,
    intercept_errors: bool,
    request_buffering: bool,
    plugins: PluginChain,
    cache: Option<Arc<CachePolicy>>,
    guards: Guards,
    auth: Option<Arc<crate::auth::LocationAuth>>,
    compression: Option<Arc<CompressPolicy>>,
}

impl Location {
    /// A location; `plugins` is the whole chain its requests run (the site's it inherits,
    /// then its own).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        index: usize,
        pattern_text: String,
        pattern: LocationPattern,
        action: Action,
        host_header: Option<HostHeader>,
        proxy_headers: Option<ProxyHeaders>,
        intercept_errors: bool,
        request_buffering: bool,
        plugins: PluginChain,
        cache: Option<Arc<CachePolicy>>,
        guards: Guards,
    ) -> Self {
        Self {
            index,
            pattern_text,
            pattern,
            action,
            host_header,
            proxy_headers,
            intercept_errors,
            request_buffering,
            plugins,
            cache,
            guards,
            auth: None,
            compression: None,
        }
    }

    /// The same location compressing its responses with `policy` (`compress = { }`).
    pub(crate) fn with_compression(mut self, policy: Option<Arc<CompressPolicy>>) -> Self {
        self.compression = policy;
        self
    }

    /// Position in the site's list (for logs and metrics).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The pattern as written in the config.
    pub fn pattern_text(&self) -> &str {
        &self.pattern_text
    }

    /// How it matches.
    pub fn pattern(&self) -> &LocationPattern {
        &self.pattern
    }

    /// What it does.
    pub fn action(&self) -> &Action {
        &self.action
    }

    /// Host header override (wins over the upstream's).
    pub(crate) fn host_header(&self) -> Option<&HostHeader> {
        self.host_header.as_ref()
    }

    /// The operator's own upstream request headers (`proxy_headers`), if any.
    pub(crate) fn proxy_headers(&self) -> Option<&ProxyHeaders> {
        self.proxy_headers.as_ref()
    }

    /// Whether upstream error responses are replaced by the site's error pages
    /// (`intercept_errors`).
    pub(crate) fn intercepts_errors(&self) -> bool {
        self.intercept_errors
    }

    /// Whether request bodies are received whole before going upstream
    /// (`request_buffering`).
    pub(crate) fn buffers_requests(&self) -> bool {
        self.request_buffering
    }

    /// The plugins its requests run, in call order.
    pub fn plugins(&self) -> &PluginChain {
        &self.plugins
    }

    /// Cache policy, if responses here are cached.
    pub fn cache(&self) -> Option<&Arc<CachePolicy>> {
        self.cache.as_ref()
    }

    /// Response compression, if responses here are compressed.
    pub fn compression(&self) -> Option<&Arc<CompressPolicy>> {
        self.compression.as_ref()
    }

    /// The checks its requests pass before the action: body size, access rules, rate limits.
    pub(crate) fn guards(&self) -> &Guards {
        &self.guards
    }

    /// The same location, authenticating its requests with `auth` (none: everyone may).
    pub(crate) fn with_auth(mut self, auth: Option<Arc<crate::auth::LocationAuth>>) -> Self {
        self.auth = auth;
        self
    }

    /// How this location authenticates its requests, if it does.
    pub(crate) fn auth(&self) -> Option<&Arc<crate::auth::LocationAuth>> {
        self.auth.as_ref()
    }
}

/// One part of a redirect target.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TargetPart {
    Literal(String),
    RequestUri,
    Uri,
    Args,
    Host,
    Scheme,
}

/// A redirect target with nginx-style variables (`$request_uri`, `$uri`, `$args`, `$host`,
/// `$scheme`), parsed once at config time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectTarget(Vec<TargetPart>);

/// The request values a redirect target may use.
pub struct RedirectVars<'a> {
    /// The original request target (path and query), as received.
    pub request_uri: &'a str,
    /// The normalised path.
    pub uri: &'a str,
    /// The query string, without `?`.
    pub args: &'a str,
    /// The normalised host.
    pub host: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
}

impl RedirectTarget {
    /// Parses a target; unknown `$variables` are an error.
    pub fn parse(text: &str) -> Result<Self, String> {
        const VARS: [(&str, TargetPart); 6] = [
            ("$request_uri", TargetPart::RequestUri),
            ("$query_string", TargetPart::Args),
            ("$scheme", TargetPart::Scheme),
            ("$args", TargetPart::Args),
            ("$host", TargetPart::Host),
            ("$uri", TargetPart::Uri),
        ];
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(dollar) = rest.find('$') {
            if dollar > 0 {
                parts.push(TargetPart::Literal(rest[..dollar].to_string()));
            }
            let tail = &rest[dollar..];
            let (name, part) = VARS
                .iter()
                .find(|(name, _)| tail.starts_with(name))
                .ok_or_else(|| {
                    format!("unknown variable in redirect target `{text}` (known: $request_uri, $uri, $args, $host, $scheme)")
                })?;
            parts.push(part.clone());
            rest = &tail[name.len()..];
        }
        if !rest.is_empty() {
            parts.push(TargetPart::Literal(rest.to_string()));
        }
        if parts.is_empty() {
            return Err("empty redirect target".into());
        }
        Ok(Self(parts))
    }

    /// The target for one request.
    pub fn render(&self, vars: &RedirectVars<'_>) -> String {
        let mut out = String::new();
        for part in &self.0 {
            out.push_str(match part {
                TargetPart::Literal(text) => text,
                TargetPart::RequestUri => vars.request_uri,
                TargetPart::Uri => vars.uri,
                TargetPart::Args => vars.args,
                TargetPart::Host => vars.host,
                TargetPart::Scheme => vars.scheme,
            });
        }
        out
    }
}

/// A site's locations, indexed for nginx-order matching.
#[derive(Debug, Default)]
pub(crate) struct LocationTable {
    exact: HashMap<Vec<u8>, Arc<Location>>,
    /// Prefix and priority-prefix locations, longest first.
    prefixes: Vec<Arc<Location>>,
    /// Regex locations in file order.
    regexes: Vec<Arc<Location>>,
}

impl LocationTable {
    /// Builds the table; returns the pattern text of a duplicate exact or prefix location.
    pub(crate) fn new(locations: Vec<Arc<Location>>) -> Result<Self, (usize, String)> {
        let mut table = Self::default();
        for location in locations {
            match &location.pattern {
                LocationPattern::Exact(path) => {
                    if table.exact.contains_key(path.as_bytes()) {
                        return Err((location.index, format!("duplicate location `= {path}`")));
                    }
                    table.exact.insert(path.as_bytes().to_vec(), location);
                }
                LocationPattern::Prefix(path) | LocationPattern::PriorityPrefix(path) => {
                    if table.prefixes.iter().any(|l| prefix_of(l) == Some(path)) {
                        return Err((
                            location.index,
                            format!("duplicate location prefix `{path}`"),
                        ));
                    }
                    table.prefixes.push(location);
                }
                LocationPattern::Regex { .. } => table.regexes.push(location),
            }
        }
        table
            .prefixes
            .sort_by_key(|l| std::cmp::Reverse(prefix_of(l).map_or(0, String::len)));
        Ok(table)
    }

    /// The location serving a normalised path, if any.
    pub(crate) fn find(&self, path: &[u8]) -> Option<&Arc<Location>> {
        if let Some(location) = self.exact.get(path) {
            return Some(location);
        }
        let longest_prefix = self
            .prefixes
            .iter()
            .find(|l| prefix_of(l).is_some_and(|p| path.starts_with(p.as_bytes())));
        if let Some(location) = longest_prefix {
            if matches!(location.pattern, LocationPattern::PriorityPrefix(_)) {
                return Some(location);
            }
        }
        let regex_match = self.regexes.iter().find(|l| match &l.pattern {
            LocationPattern::Regex { regex, .. } => regex.is_match(path),
            _ => false,
        });
        regex_match.or(longest_prefix)
    }
}

fn prefix_of(location: &Location) -> Option<&String> {
    match &location.pattern {
        LocationPattern::Prefix(p) | LocationPattern::PriorityPrefix(p) => Some(p),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(patterns: &[&str]) -> LocationTable {
        let locations = patterns
            .iter()
            .enumerate()
            .map(|(index, text)| {
                Arc::new(Location::new(
                    index,
                    text.to_string(),
                    LocationPattern::parse(text).unwrap(),
                    Action::Return {
                        status: 200,
                        content_type: String::new(),
                        body: Bytes::new(),
                    },
                    None,
                    None,
                    false,
                    false,
                    PluginChain::default(),
                    None,
                    Guards::default(),
                ))
            })
            .collect();
        LocationTable::new(locations).unwrap()
    }

    fn pick(t: &LocationTable, path: &str) -> Option<usize> {
        t.find(path.as_bytes()).map(|l| l.index)
    }

    #[test]
    fn nginx_precedence() {
        let t = table(&[
            "/",                // 0
            "= /exact",         // 1
            "^~ /static/",      // 2
            "~ \\.php$",        // 3
            "~* \\.(png|jpg)$", // 4
            "/static/deep/",    // 5
            "/docs/",           // 6
        ]);
        assert_eq!(pick(&t, "/exact"), Some(1));
        assert_eq!(pick(&t, "/exact/x"), Some(0));
        assert_eq!(
            pick(&t, "/static/a.png"),
            Some(2),
            "priority prefix skips regexes"
        );
        assert_eq!(
            pick(&t, "/static/deep/a.png"),
            Some(4),
            "longest prefix not ^~: regex wins"
        );
        assert_eq!(pick(&t, "/static/deep/a.txt"), Some(5));
        assert_eq!(pick(&t, "/docs/x.PNG"), Some(4), "case-insensitive regex");
        assert_eq!(
            pick(&t, "/docs/x.PHP"),
            Some(6),
            "case-sensitive regex misses"
        );
        assert_eq!(pick(&t, "/a.php"), Some(3), "first regex in order");
        assert_eq!(pick(&t, "/docs/x"), Some(6), "longest prefix");
    }

    #[test]
    fn no_match_without_root() {
        let t = table(&["/a/"]);
        assert_eq!(pick(&t, "/b"), None);
    }

    #[test]
    fn pattern_errors() {
        assert!(LocationPattern::parse("~ (").is_err());
        assert!(LocationPattern::parse("static").is_err());
        assert!(LocationPattern::parse("= nope").is_err());
    }

    #[test]
    fn redirect_targets() {
        let t = RedirectTarget::parse("https://$host/new$request_uri").unwrap();
        let vars = RedirectVars {
            request_uri: "/a?b=1",
            uri: "/a",
            args: "b=1",
            host: "x.example",
            scheme: "https",
        };
        assert_eq!(t.render(&vars), "https://x.example/new/a?b=1");
        assert!(RedirectTarget::parse("https://x/$nope").is_err());
    }
}
