//! `headers`: add, set and remove response headers (and request headers sent upstream).
//!
//! ```toml
//! [[sites.docs.plugins]]
//! use = "headers"
//! preset = "security"                       # HSTS, X-Frame-Options, nosniff, Referrer-Policy
//! set = { "Cache-Control" = "no-store" }    # replace
//! add = { "Link" = "</app.css>; rel=preload" }  # append
//! remove = ["Server", "X-Powered-By"]
//! request_set = { "X-Edge" = "fly" }        # on the request sent upstream
//! request_remove = ["Cookie"]
//! ```
//!
//! Response changes apply to every response, including local answers and errors (nginx's
//! `add_header ... always`). Site plugins run before location plugins, so a location's
//! headers come on top of the site's instead of silently replacing them as in nginx.

use async_trait::async_trait;
use http::header::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use proxy_core::plugin::{Plugin, PluginCtx, PluginError, PluginOptions, PluginSetup};
use std::sync::Arc;

/// The `security` preset: the headers real deployments repeat on every location.
pub const SECURITY_PRESET: [(&str, &str); 4] = [
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("x-frame-options", "SAMEORIGIN"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "strict-origin-when-cross-origin"),
];

type Header = (HeaderName, HeaderValue);

/// The compiled `headers` plugin.
#[derive(Debug, Default)]
pub struct HeadersPlugin {
    set: Vec<Header>,
    add: Vec<Header>,
    remove: Vec<HeaderName>,
    request_set: Vec<Header>,
    request_remove: Vec<HeaderName>,
}

impl HeadersPlugin {
    /// Builds the plugin from its config options.
    pub fn from_options(
        options: &PluginOptions,
        setup: PluginSetup<'_>,
    ) -> Result<Arc<dyn Plugin>, PluginError> {
        Self::parse_options(options, setup).map_err(PluginError::Options)
    }

    fn parse_options(
        options: &PluginOptions,
        _setup: PluginSetup<'_>,
    ) -> Result<Arc<dyn Plugin>, String> {
        let mut plugin = HeadersPlugin::default();
        for (key, value) in options {
            match key.as_str() {
                "preset" => plugin.set.extend(preset(value)?),
                "set" => plugin.set.extend(header_table(key, value)?),
                "add" => plugin.add.extend(header_table(key, value)?),
                "remove" => plugin.remove.extend(name_list(key, value)?),
                "request_set" => plugin.request_set.extend(header_table(key, value)?),
                "request_remove" => plugin.request_remove.extend(name_list(key, value)?),
                other => {
                    return Err(format!(
                        "unknown option `{other}` for plugin `headers` (known: preset, set, add, remove, request_set, request_remove)"
                    ))
                }
            }
        }
        Ok(Arc::new(plugin))
    }
}

fn preset(value: &toml::Value) -> Result<Vec<Header>, String> {
    match value.as_str() {
        Some("security") => Ok(SECURITY_PRESET
            .iter()
            .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect()),
        _ => Err(format!(
            "unknown preset {value} for plugin `headers` (known: \"security\")"
        )),
    }
}

fn header_table(key: &str, value: &toml::Value) -> Result<Vec<Header>, String> {
    let table = value
        .as_table()
        .ok_or_else(|| format!("`{key}` must be a table of header names to values, e.g. {{ \"X-Frame-Options\" = \"DENY\" }}"))?;
    table
        .iter()
        .map(|(name, v)| {
            let text = v
                .as_str()
                .ok_or_else(|| format!("`{key}.{name}`: header value must be a string"))?;
            let name = parse_name(key, name)?;
            let value = HeaderValue::from_str(text)
                .map_err(|_| format!("`{key}.{name}`: invalid header value"))?;
            Ok((name, value))
        })
        .collect()
}

fn name_list(key: &str, value: &toml::Value) -> Result<Vec<HeaderName>, String> {
    let items = value
        .as_array()
        .ok_or_else(|| format!("`{key}` must be a list of header names"))?;
    items
        .iter()
        .map(|item| {
            let text = item
                .as_str()
                .ok_or_else(|| format!("`{key}`: header names must be strings"))?;
            parse_name(key, text)
        })
        .collect()
}

fn parse_name(key: &str, name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{key}`: invalid header name `{name}`"))
}

#[async_trait]
impl Plugin for HeadersPlugin {
    async fn upstream_request(
        &self,
        _session: &Session,
        request: &mut RequestHeader,
        _ctx: PluginCtx<'_>,
    ) -> pingora::Result<()> {
        for name in &self.request_remove {
            request.remove_header(name);
        }
        for (name, value) in &self.request_set {
            request.insert_header(name.clone(), value.clone())?;
        }
        Ok(())
    }

    fn response(&self, response: &mut ResponseHeader, _ctx: PluginCtx<'_>) -> pingora::Result<()> {
        for name in &self.remove {
            response.remove_header(name);
        }
        for (name, value) in &self.set {
            response.insert_header(name.clone(), value.clone())?;
        }
        for (name, value) in &self.add {
            response.append_header(name.clone(), value.clone())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> PluginSetup<'static> {
        PluginSetup::new(std::path::Path::new("."))
    }

    fn options(text: &str) -> PluginOptions {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn rejects_bad_options_with_a_reason() {
        let err = |text: &str| {
            HeadersPlugin::from_options(&options(text), setup())
                .err()
                .unwrap()
                .to_string()
        };
        assert!(err("colour = 1").contains("unknown option `colour`"));
        assert!(err("preset = \"paranoid\"").contains("unknown preset"));
        assert!(err("set = [\"x\"]").contains("must be a table"));
        assert!(err("set = { \"bad name\" = \"x\" }").contains("invalid header name"));
        assert!(err("remove = \"Server\"").contains("must be a list"));
    }

    #[test]
    fn accepts_every_option() {
        let text = "preset = \"security\"\nset = { a = \"1\" }\nadd = { b = \"2\" }\nremove = [\"server\"]\nrequest_set = { c = \"3\" }\nrequest_remove = [\"cookie\"]";
        assert!(HeadersPlugin::from_options(&options(text), setup()).is_ok());
    }
}
