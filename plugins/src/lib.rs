//! # plugins
//!
//! Built-in plugins for `proxy-core`, written only against its public
//! [`Plugin`](proxy_core::plugin::Plugin) trait, so an embedder can write the same.
//! [`builtin_registry`] registers them all by name for the config compiler.
//!
//! | name | what it does |
//! |---|---|
//! | `challenge` | a proof-of-work challenge for clients without a signed clearance cookie (crawlers pay in CPU; browsers pass once) |
//! | `headers` | add, set, remove response headers (every status, like nginx's `always`) and request headers sent upstream; a `security` preset |
//! | `page` | answer with a fixed status and a page from a local file (e.g. an HTML 403) |
//! | `static` | files from a local directory: index files, try-files fallback, content types, ETag/Last-Modified with 304, byte ranges, never outside the root |
//!
//! Not for: behaviour every request needs (routing, limits, caching); that lives in
//! `proxy-core`.

pub mod challenge;
pub mod headers;
pub mod page;
pub mod static_files;

use proxy_core::plugin::PluginRegistry;

/// A registry with every built-in plugin under its config name.
pub fn builtin_registry() -> PluginRegistry {
    let mut registry = PluginRegistry::new();
    registry.register(challenge::NAME, challenge::Challenge::from_options);
    registry.register("headers", headers::HeadersPlugin::from_options);
    registry.register("page", page::Page::from_options);
    registry.register("static", static_files::StaticFiles::from_options);
    registry
}

#[cfg(test)]
mod tests {
    #[test]
    fn registry_lists_the_builtins() {
        assert_eq!(
            super::builtin_registry().names(),
            vec!["challenge", "headers", "page", "static"]
        );
    }
}
