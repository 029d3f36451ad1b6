//! # plugins
//!
//! Optional policies for `proxy-core`, built only on its public API so that an embedder can
//! write the same. For now this crate holds [`catalog`], the list of built-in plugin names the
//! app accepts; the plugin trait and the plugins themselves land here as they are written.
//!
//! Not for: anything the request path needs by default; that lives in `proxy-core`.

/// Names of the built-in plugins, in the order they are documented.
pub fn catalog() -> &'static [&'static str] {
    &[]
}

#[cfg(test)]
mod tests {
    #[test]
    fn catalog_starts_empty() {
        assert!(super::catalog().is_empty());
    }
}
