//! Configuration, input to model: TOML in ([`file`](mod@file)), a validated
//! [`RuntimeConfig`] out ([`load_file`], [`load_str`], [`compile_file`]), or the same built
//! from code ([`ConfigBuilder`]).
//!
//! Parsing and meaning are separate: serde only checks TOML types and unknown keys; the
//! compiler checks everything else and names the file, line and key of every problem. This
//! module is the only owner of config keys: a key's serde field, default and doc comment live
//! in [`file`](mod@file), its checks in one file of the compiler, and its builder method in
//! [`ConfigBuilder`]. Nothing at request time reads the plain config data.

mod builder;
mod compile;
mod error;
pub mod file;
pub mod units;

pub use builder::{ConfigBuilder, LocationBuilder, RateLimitBuilder, SiteBuilder, UpstreamBuilder};
pub use error::{ConfigError, ConfigErrors, KeyPath, KeySegment};
pub use file::ConfigFile;

use std::path::Path;

use crate::model::RuntimeConfig;
use crate::plugin::PluginRegistry;
use error::SourceText;

/// Reads, parses and compiles a config file that uses no plugins. Relative paths inside it
/// are resolved against the file's directory.
pub fn load_file(path: &Path) -> Result<RuntimeConfig, ConfigErrors> {
    load_file_with(path, &PluginRegistry::default())
}

/// Reads, parses and compiles a config file, building its plugins from `plugins`.
pub fn load_file_with(
    path: &Path,
    plugins: &PluginRegistry,
) -> Result<RuntimeConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::one(ConfigError {
            file: Some(path.to_path_buf()),
            line: None,
            key: KeyPath::root(),
            message: format!("cannot read config file: {e}"),
        })
    })?;
    let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
    load_str_with(&text, Some(path), base_dir, plugins)
}

/// Parses and compiles config text that uses no plugins; `file` (if any) is only used in
/// error messages.
pub fn load_str(
    text: &str,
    file: Option<&Path>,
    base_dir: &Path,
) -> Result<RuntimeConfig, ConfigErrors> {
    load_str_with(text, file, base_dir, &PluginRegistry::default())
}

/// Parses and compiles config text, building its plugins from `plugins`.
pub fn load_str_with(
    text: &str,
    file: Option<&Path>,
    base_dir: &Path,
    plugins: &PluginRegistry,
) -> Result<RuntimeConfig, ConfigErrors> {
    let source = SourceText { file, text };
    let parsed: ConfigFile = toml::from_str(text).map_err(|e| serde_error(&source, &e))?;
    compile::compile(&parsed, base_dir, plugins).map_err(|problems| problems.locate(Some(&source)))
}

/// Compiles config data built in code (see [`ConfigBuilder`]).
pub fn compile_file(
    file: &ConfigFile,
    base_dir: &Path,
    plugins: &PluginRegistry,
) -> Result<RuntimeConfig, ConfigErrors> {
    compile::compile(file, base_dir, plugins).map_err(|problems| problems.locate(None))
}

fn serde_error(source: &SourceText<'_>, error: &toml::de::Error) -> ConfigErrors {
    let offset = error.span().map(|span| span.start);
    ConfigErrors::one(ConfigError {
        file: source.file.map(Path::to_path_buf),
        line: offset.map(|o| source.line_of_offset(o)),
        key: offset.map_or_else(KeyPath::root, |o| source.key_at_offset(o)),
        message: error.message().trim().to_string(),
    })
}

/// What loading `text` as `edge.toml` reports: its errors, or "no error" (for unit tests).
#[cfg(test)]
pub(crate) fn errors(text: &str) -> String {
    match load_str(text, Some(Path::new("edge.toml")), Path::new(".")) {
        Ok(_) => "no error".into(),
        Err(e) => e.to_string(),
    }
}

/// Asserts that config errors `e` mention each of `expected` (for unit tests).
#[cfg(test)]
#[track_caller]
pub(crate) fn assert_mentions(expected: &[&str], e: &str) {
    for expected in expected {
        assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str = "[upstreams.docs]\naddress = \"docs.tail1.ts.net:443\"\ntls = true\n";

    #[test]
    fn unknown_upstream_names_line_and_key() {
        let text = format!("{UPSTREAM}\n[sites.docs]\nhosts = [\"docs.example.com\"]\n[[sites.docs.locations]]\nmatch = \"/\"\nproxy = \"nope\"\n");
        let e = errors(&text);
        assert!(e.starts_with("edge.toml:9: sites.docs.locations[0].proxy: unknown upstream `nope` (defined: docs)"), "{e}");
    }

    #[test]
    fn serde_errors_name_line_and_key() {
        let e = errors("[server]\nthreads = \"two\"\n");
        assert!(e.starts_with("edge.toml:2: server.threads:"), "{e}");
        let e = errors("[server]\nlisten_on = []\n");
        assert!(
            e.contains("edge.toml:2:") && e.contains("unknown field `listen_on`"),
            "{e}"
        );
    }

    #[test]
    fn reports_every_problem() {
        let text = format!("{UPSTREAM}connect_timeout = \"5\"\n\n[sites.a]\nhosts = [\"a.example.com\"]\nmax_body_size = \"lots\"\n[[sites.a.locations]]\nmatch = \"~ (\"\nproxy = \"docs\"\n");
        let e = errors(&text);
        assert_eq!(e.lines().count(), 3, "{e}");
        assert!(
            e.contains("edge.toml:4: upstreams.docs.connect_timeout: duration `5` has no unit"),
            "{e}"
        );
        assert!(e.contains("edge.toml:8: sites.a.max_body_size"), "{e}");
        assert!(
            e.contains("edge.toml:10: sites.a.locations[0].match: invalid regex"),
            "{e}"
        );
    }
}
