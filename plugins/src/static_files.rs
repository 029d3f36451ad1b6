//! `static`: serve files from a local directory, so a landing page stays up at the edge even
//! when the tailnet is down.
//!
//! ```toml
//! [[sites.apex.locations]]
//! match = "/"
//! plugins = [{ use = "static", root = "site", try_files = ["$uri", "$uri/", "/index.html"] }]
//! ```
//!
//! Options: `root` (directory, relative to the config file or absolute; required),
//! `index` (default `["index.html"]`), `try_files` (candidates with `$uri`; default
//! `["$uri", "$uri/"]`; a candidate ending in `/` means the directory's index file),
//! `cache_control` (header value), `max_file_size` (default "64m"), `precompressed`
//! (codings whose precompressed siblings are served, e.g. `["br", "zstd", "gzip"]`; default
//! none). GET and HEAD only. Answers carry `ETag` and `Last-Modified` and honour
//! `If-None-Match` / `If-Modified-Since` (304) and single byte ranges (206, 416). No path ever
//! resolves outside the root: the request path is normalised (percent-decoding, dot
//! segments), hidden files (a segment starting with `.`) are refused, and the resolved file,
//! symlinks followed, must still lie under the canonical root.
//!
//! With `precompressed` (nginx's `gzip_static`, Caddy's `file_server { precompressed }`), a
//! file `app.js` that has a sibling `app.js.br`, `app.js.zst` or `app.js.gz` (a regular file
//! passing the same checks) is answered with the sibling's bytes and `Content-Encoding`, in
//! the coding the client's `Accept-Encoding` rates highest among the siblings present (ties
//! go to the list's order), keeping `app.js`'s content type. Only a sibling of a file that
//! exists is served. Each variant has its own `ETag` (the coding appended), its validators
//! and ranges are the sibling's (ranges count encoded bytes), and every file answer carries
//! `Vary: Accept-Encoding`.

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use pingora::proxy::Session;
use proxy_core::compress::{negotiate, Encoding};
use proxy_core::config::units::parse_size;
use proxy_core::plugin::{Plugin, PluginCtx, PluginError, PluginOptions, PluginSetup, RequestFlow};
use proxy_core::route::normalize_path;
use proxy_core::LocalAnswer;
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// The compiled `static` plugin.
#[derive(Debug)]
pub struct StaticFiles {
    root: PathBuf,
    index: Vec<String>,
    try_files: Vec<String>,
    cache_control: Option<HeaderValue>,
    max_file_size: u64,
    /// Codings whose precompressed siblings are looked for, in the order that breaks ties
    /// between equal q-values; empty: off.
    precompressed: Vec<Encoding>,
}

/// The file a request resolved to.
struct Resolved {
    /// Its path under the root as the request (or `try_files`, or `index`) named it, before
    /// symlinks: its precompressed siblings are looked for next to this path.
    path: String,
    /// The file itself, symlinks followed.
    file: PathBuf,
    meta: Metadata,
}

/// What an answer sends: the resolved file, or one of its precompressed siblings.
struct Variant {
    file: PathBuf,
    meta: Metadata,
    /// The sibling's coding; `None`: the file itself.
    coding: Option<Encoding>,
}

impl StaticFiles {
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
        let mut root = None;
        let mut plugin = StaticFiles {
            root: PathBuf::new(),
            index: vec!["index.html".into()],
            try_files: vec!["$uri".into(), "$uri/".into()],
            cache_control: None,
            max_file_size: 64 << 20,
            precompressed: Vec::new(),
        };
        for (key, value) in options {
            match key.as_str() {
                "root" => root = Some(string(key, value)?),
                "index" => plugin.index = strings(key, value)?,
                "try_files" => plugin.try_files = strings(key, value)?,
                "cache_control" => {
                    let text = string(key, value)?;
                    plugin.cache_control = Some(HeaderValue::from_str(&text).map_err(|_| "`cache_control`: invalid header value".to_string())?);
                }
                "max_file_size" => plugin.max_file_size = parse_size(&string(key, value)?)?,
                "precompressed" => plugin.precompressed = codings(key, value)?,
                other => return Err(format!("unknown option `{other}` for plugin `static` (known: root, index, try_files, cache_control, max_file_size, precompressed)")),
            }
        }
        let root = root.ok_or("plugin `static` needs `root`, the directory to serve")?;
        plugin.root = std::fs::canonicalize(setup.resolve(&root))
            .map_err(|e| format!("`root`: cannot open directory `{root}`: {e}"))?;
        if !plugin.root.is_dir() {
            return Err(format!("`root`: `{root}` is not a directory"));
        }
        Ok(Arc::new(plugin))
    }

    /// The file for a request path, trying each candidate in order.
    fn resolve(&self, uri: &str) -> Option<Resolved> {
        self.try_files.iter().find_map(|candidate| {
            let path = candidate.replace("$uri", uri);
            let wants_dir = path.ends_with('/');
            let file = self.file_under_root(&path)?;
            let meta = std::fs::metadata(&file).ok()?;
            if meta.is_file() && !wants_dir {
                return Some(Resolved { path, file, meta });
            }
            if !meta.is_dir() || !wants_dir {
                return None;
            }
            self.index.iter().find_map(|name| {
                let path = format!("{}/{name}", path.trim_end_matches('/'));
                let file = self.file_under_root(&path)?;
                let meta = std::fs::metadata(&file).ok().filter(|m| m.is_file())?;
                Some(Resolved { path, file, meta })
            })
        })
    }

    /// What to send for `resolved`: among its precompressed siblings that exist, the one in
    /// the coding the client rates highest; the file itself when the client accepts none of
    /// them, rates identity higher, or there are none.
    fn variant(&self, request: &pingora::http::RequestHeader, resolved: Resolved) -> Variant {
        let identity = |resolved: Resolved| Variant {
            file: resolved.file,
            meta: resolved.meta,
            coding: None,
        };
        let accept = request
            .headers
            .get(header::ACCEPT_ENCODING)
            .map(HeaderValue::as_bytes);
        // No sibling is looked for when the client accepts none of the codings anyway.
        if negotiate(accept, &self.precompressed).is_none() {
            return identity(resolved);
        }
        let mut present: Vec<(Encoding, PathBuf, Metadata)> = self
            .precompressed
            .iter()
            .filter_map(|&coding| {
                let file = self.file_under_root(&format!(
                    "{}.{}",
                    resolved.path,
                    sibling_extension(coding)
                ))?;
                let meta = std::fs::metadata(&file).ok().filter(|m| m.is_file())?;
                Some((coding, file, meta))
            })
            .collect();
        let codings: Vec<Encoding> = present.iter().map(|(coding, ..)| *coding).collect();
        let Some(chosen) = negotiate(accept, &codings) else {
            return identity(resolved);
        };
        match present.iter().position(|(coding, ..)| *coding == chosen) {
            Some(at) => {
                let (coding, file, meta) = present.swap_remove(at);
                Variant {
                    file,
                    meta,
                    coding: Some(coding),
                }
            }
            None => identity(resolved),
        }
    }

    /// `path` (already normalised, starting with `/`) under the root, or `None` if it names
    /// a hidden file or leaves the root through a symlink.
    fn file_under_root(&self, path: &str) -> Option<PathBuf> {
        let relative = path.trim_start_matches('/');
        if relative.split('/').any(|segment| segment.starts_with('.')) {
            return None;
        }
        let joined = self.root.join(relative);
        let canonical = std::fs::canonicalize(&joined).ok()?;
        canonical.starts_with(&self.root).then_some(canonical)
    }

    fn serve(&self, session: &Session) -> LocalAnswer {
        let request = session.req_header();
        let Ok(normalized) = normalize_path(request.uri.path()) else {
            return LocalAnswer::text(400, "bad request path\n");
        };
        let Ok(uri) = std::str::from_utf8(&normalized) else {
            return LocalAnswer::text(404, "not found\n");
        };
        let Some(resolved) = self.resolve(uri) else {
            return LocalAnswer::text(404, "not found\n");
        };
        // The content type is the file's, whichever variant is sent.
        let content_type = content_type(&resolved.file);
        let Variant { file, meta, coding } = self.variant(request, resolved);
        if meta.len() > self.max_file_size {
            return LocalAnswer::text(500, "file too large to serve\n");
        }
        let validators = Validators::of(&meta, coding);
        if validators.not_modified(request) {
            let answer = LocalAnswer::text(304, "");
            return self.with_headers(answer, &validators, content_type, None);
        }
        let Ok(content) = std::fs::read(&file) else {
            return LocalAnswer::text(404, "not found\n");
        };
        let answer = match requested_range(request, content.len() as u64) {
            Range::Full => LocalAnswer::text(200, content),
            Range::Partial(start, end) => {
                let mut answer = LocalAnswer::text(
                    206,
                    Bytes::from(content).slice(start as usize..=end as usize),
                );
                push(
                    &mut answer,
                    header::CONTENT_RANGE,
                    &format!("bytes {start}-{end}/{}", meta.len()),
                );
                answer
            }
            Range::Unsatisfiable => {
                let mut answer = LocalAnswer::text(416, "");
                push(
                    &mut answer,
                    header::CONTENT_RANGE,
                    &format!("bytes */{}", meta.len()),
                );
                return self.with_headers(answer, &validators, content_type, None);
            }
        };
        self.with_headers(answer, &validators, content_type, coding)
    }

    fn with_headers(
        &self,
        mut answer: LocalAnswer,
        validators: &Validators,
        content_type: &'static str,
        coding: Option<Encoding>,
    ) -> LocalAnswer {
        answer.content_type = content_type.into();
        if let Some(coding) = coding {
            push(&mut answer, header::CONTENT_ENCODING, coding.token());
        }
        // Whether or not this client took a sibling, another client may get another body.
        if !self.precompressed.is_empty() {
            push(&mut answer, header::VARY, "Accept-Encoding");
        }
        push(&mut answer, header::ETAG, &validators.etag);
        if let Some(modified) = &validators.last_modified {
            push(&mut answer, header::LAST_MODIFIED, modified);
        }
        push(&mut answer, header::ACCEPT_RANGES, "bytes");
        if let Some(cache_control) = &self.cache_control {
            answer
                .headers
                .push((header::CACHE_CONTROL, cache_control.clone()));
        }
        answer
    }
}

fn push(answer: &mut LocalAnswer, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        answer.headers.push((name, value));
    }
}

/// The suffix of a file's sibling precompressed with `coding`, as `gzip -k`, `brotli -k` and
/// `zstd` name their output (and nginx and Caddy look for).
fn sibling_extension(coding: Encoding) -> &'static str {
    match coding {
        Encoding::Brotli => "br",
        Encoding::Zstd => "zst",
        Encoding::Gzip => "gz",
    }
}

/// `precompressed`: coding tokens, each once.
fn codings(key: &str, value: &toml::Value) -> Result<Vec<Encoding>, String> {
    let mut codings = Vec::new();
    for name in strings(key, value)? {
        let Some(coding) = Encoding::ALL.into_iter().find(|c| c.token() == name) else {
            return Err(format!(
                "`{key}`: unknown coding `{name}` (known: \"br\", \"zstd\", \"gzip\")"
            ));
        };
        if codings.contains(&coding) {
            return Err(format!("`{key}`: `{name}` is listed twice"));
        }
        codings.push(coding);
    }
    Ok(codings)
}

fn string(key: &str, value: &toml::Value) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("`{key}` must be a string"))
}

fn strings(key: &str, value: &toml::Value) -> Result<Vec<String>, String> {
    let items = value
        .as_array()
        .ok_or_else(|| format!("`{key}` must be a list of strings"))?;
    items.iter().map(|item| string(key, item)).collect()
}

/// ETag and Last-Modified of a file, from its size and modification time (and, for a
/// precompressed sibling, its coding, so no two variants share a tag).
struct Validators {
    etag: String,
    last_modified: Option<String>,
    modified: Option<SystemTime>,
}

impl Validators {
    fn of(meta: &Metadata, coding: Option<Encoding>) -> Self {
        let modified = meta.modified().ok();
        let secs = modified
            .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let len = meta.len();
        Self {
            etag: match coding {
                Some(coding) => format!("\"{secs:x}-{len:x}-{}\"", coding.token()),
                None => format!("\"{secs:x}-{len:x}\""),
            },
            last_modified: modified.map(httpdate::fmt_http_date),
            modified,
        }
    }

    /// RFC 9110 13.2.2: If-None-Match wins over If-Modified-Since.
    fn not_modified(&self, request: &pingora::http::RequestHeader) -> bool {
        let header_text = |name| {
            request
                .headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        if let Some(tags) = header_text(header::IF_NONE_MATCH) {
            return tags
                .split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.trim_start_matches("W/") == self.etag);
        }
        let since =
            header_text(header::IF_MODIFIED_SINCE).and_then(|t| httpdate::parse_http_date(t).ok());
        match (since, self.modified) {
            (Some(since), Some(modified)) => modified <= since + std::time::Duration::from_secs(1),
            _ => false,
        }
    }
}

enum Range {
    Full,
    Partial(u64, u64),
    Unsatisfiable,
}

/// A single `bytes=` range (multi-range requests get the whole file, which RFC 9110 allows).
fn requested_range(request: &pingora::http::RequestHeader, len: u64) -> Range {
    let Some(spec) = request
        .headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
    else {
        return Range::Full;
    };
    if spec.contains(',') {
        return Range::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Range::Full;
    };
    let parsed = match (first.parse::<u64>().ok(), last.parse::<u64>().ok()) {
        (Some(start), Some(end)) if start <= end => Some((start, end.min(len.saturating_sub(1)))),
        (Some(start), None) if last.is_empty() => Some((start, len.saturating_sub(1))),
        (None, Some(suffix)) if first.is_empty() && suffix > 0 => {
            Some((len.saturating_sub(suffix), len.saturating_sub(1)))
        }
        _ => return Range::Full,
    };
    match parsed {
        Some((start, end)) if start < len && start <= end => Range::Partial(start, end),
        _ => Range::Unsatisfiable,
    }
}

fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "pdf" => "application/pdf",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

#[async_trait]
impl Plugin for StaticFiles {
    async fn request(
        &self,
        session: &mut Session,
        _ctx: PluginCtx<'_>,
    ) -> pingora::Result<RequestFlow> {
        let method = &session.req_header().method;
        if method != http::Method::GET && method != http::Method::HEAD {
            let mut answer = LocalAnswer::text(405, "method not allowed\n");
            push(&mut answer, header::ALLOW, "GET, HEAD");
            return Ok(RequestFlow::Answer(answer));
        }
        Ok(RequestFlow::Answer(self.serve(session)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(text: &str) -> Result<Arc<dyn Plugin>, String> {
        let dir = std::env::temp_dir();
        let table: PluginOptions = toml::from_str(&format!("root = \".\"\n{text}")).unwrap();
        StaticFiles::parse_options(&table, PluginSetup::new(&dir))
    }

    #[test]
    fn precompressed_takes_known_codings_once() {
        assert!(options("precompressed = [\"br\", \"zstd\", \"gzip\"]").is_ok());
        assert!(options("precompressed = []").is_ok());
        let cases = [
            (
                "precompressed = [\"br\", \"deflate\"]",
                "`precompressed`: unknown coding `deflate` (known: \"br\", \"zstd\", \"gzip\")",
            ),
            (
                "precompressed = [\"gz\"]",
                "`precompressed`: unknown coding `gz` (known: \"br\", \"zstd\", \"gzip\")",
            ),
            (
                "precompressed = [\"gzip\", \"gzip\"]",
                "`precompressed`: `gzip` is listed twice",
            ),
            (
                "precompressed = \"br\"",
                "`precompressed` must be a list of strings",
            ),
            (
                "precompressed = true",
                "`precompressed` must be a list of strings",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(options(text).err().as_deref(), Some(expected), "{text}");
        }
    }
}
