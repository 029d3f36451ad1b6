//! `page`: answer every request of a location with a fixed status and a page read from a
//! local file, e.g. an HTML 403 explaining why an area is closed.
//!
//! ```toml
//! [[sites.forge.locations]]
//! match = "^~ /mirrors/"
//! plugins = [{ use = "page", status = 403, file = "pages/dishonour.html" }]
//! ```
//!
//! Options: `status` (100-599; required), `file` (relative to the config file or absolute;
//! required; read once when the config compiles, so a missing file is a config error),
//! `content_type` (default from the file's extension: `text/html; charset=utf-8` for
//! `.html`, `text/plain; charset=utf-8` otherwise). `return` in a location writes an inline
//! body; this plugin is for pages kept in their own file.

use async_trait::async_trait;
use bytes::Bytes;
use pingora::proxy::Session;
use proxy_core::plugin::{Plugin, PluginCtx, PluginError, PluginOptions, PluginSetup, RequestFlow};
use proxy_core::LocalAnswer;
use std::sync::Arc;

/// Largest page file accepted: pages are held in memory for the life of the config.
const MAX_PAGE_SIZE: u64 = 1 << 20;

/// The compiled `page` plugin.
#[derive(Debug)]
pub struct Page {
    status: u16,
    content_type: String,
    body: Bytes,
}

impl Page {
    /// Builds the plugin from its config options.
    pub fn from_options(
        options: &PluginOptions,
        setup: PluginSetup<'_>,
    ) -> Result<Arc<dyn Plugin>, PluginError> {
        Self::parse_options(options, setup).map_err(PluginError::Options)
    }

    fn parse_options(
        options: &PluginOptions,
        setup: PluginSetup<'_>,
    ) -> Result<Arc<dyn Plugin>, String> {
        let (mut status, mut file, mut content_type) = (None, None, None);
        for (key, value) in options {
            match key.as_str() {
                "status" => status = Some(parse_status(value)?),
                "file" => file = Some(text(key, value)?),
                "content_type" => content_type = Some(text(key, value)?),
                other => {
                    return Err(format!(
                        "unknown option `{other}` for plugin `page` (known: status, file, content_type)"
                    ))
                }
            }
        }
        let status = status.ok_or("plugin `page` needs `status`, e.g. 403")?;
        let file = file.ok_or("plugin `page` needs `file`, the page to answer with")?;
        let body = read_page(&setup, &file)?;
        let content_type = content_type.unwrap_or_else(|| default_content_type(&file).into());
        Ok(Arc::new(Page {
            status,
            content_type,
            body,
        }))
    }
}

fn parse_status(value: &toml::Value) -> Result<u16, String> {
    value
        .as_integer()
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| (100..=599).contains(n))
        .ok_or_else(|| "`status` must be an HTTP status between 100 and 599".to_string())
}

fn text(key: &str, value: &toml::Value) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("`{key}` must be a string"))
}

fn read_page(setup: &PluginSetup<'_>, file: &str) -> Result<Bytes, String> {
    let path = setup.resolve(file);
    let meta =
        std::fs::metadata(&path).map_err(|e| format!("`file`: cannot open `{file}`: {e}"))?;
    if !meta.is_file() || meta.len() > MAX_PAGE_SIZE {
        return Err(format!("`file`: `{file}` is not a file of at most 1 MiB"));
    }
    std::fs::read(&path)
        .map(Bytes::from)
        .map_err(|e| format!("`file`: cannot read `{file}`: {e}"))
}

fn default_content_type(file: &str) -> &'static str {
    let lower = file.to_ascii_lowercase();
    if lower.ends_with(".html") || lower.ends_with(".htm") {
        "text/html; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    }
}

#[async_trait]
impl Plugin for Page {
    async fn request(
        &self,
        _session: &mut Session,
        _ctx: PluginCtx<'_>,
    ) -> pingora::Result<RequestFlow> {
        let mut answer = LocalAnswer::text(self.status, self.body.clone());
        answer.content_type = self.content_type.clone().into();
        Ok(RequestFlow::Answer(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(options: &str, dir: &std::path::Path) -> Result<Arc<dyn Plugin>, String> {
        let options: toml::Table = options.parse().map_err(|e| format!("{e}"))?;
        Page::from_options(&options, PluginSetup::new(dir)).map_err(|e| e.to_string())
    }

    #[test]
    fn options_are_checked() {
        let dir = tempdir();
        std::fs::write(dir.join("p.html"), "<h1>no</h1>").unwrap_or_default();
        assert!(build("status = 403\nfile = \"p.html\"", &dir).is_ok());
        let missing = build("status = 403\nfile = \"absent.html\"", &dir).err();
        assert!(missing.is_some_and(|e| e.contains("cannot open `absent.html`")));
        let bad_status = build("status = 42\nfile = \"p.html\"", &dir).err();
        assert!(bad_status.is_some_and(|e| e.contains("`status`")));
        let no_file = build("status = 403", &dir).err();
        assert!(no_file.is_some_and(|e| e.contains("needs `file`")));
        let unknown = build("status = 403\nfile = \"p.html\"\nbody = \"x\"", &dir).err();
        assert!(unknown.is_some_and(|e| e.contains("unknown option `body`")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn content_type_follows_the_extension() {
        assert_eq!(default_content_type("a/B.HTML"), "text/html; charset=utf-8");
        assert_eq!(
            default_content_type("note.txt"),
            "text/plain; charset=utf-8"
        );
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("page-plugin-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        dir
    }
}
