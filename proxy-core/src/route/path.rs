//! Request path normalisation, as nginx does before matching locations.
//!
//! Matching runs on the normalised path so that no rule can be bypassed by spelling a path
//! differently (`/%61dmin`, `/x/../admin`, `//admin`); the upstream still receives the
//! original request target.

use std::borrow::Cow;

/// Why a request path cannot be normalised (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("request path does not start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding in request path")]
    BadPercentEncoding,
    /// A percent-encoded NUL byte.
    #[error("NUL byte in request path")]
    Nul,
    /// `..` segments climb above the root.
    #[error("request path climbs above '/'")]
    AboveRoot,
}

/// Normalises a request path: percent-decodes it, merges repeated slashes and resolves `.`
/// and `..` segments. The result is raw bytes, since a decoded path need not be UTF-8.
///
/// Paths that need no change are returned borrowed, so the common case allocates nothing.
pub fn normalize_path(path: &str) -> Result<Cow<'_, [u8]>, PathError> {
    let raw = path.as_bytes();
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_already_normal(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = percent_decode(raw)?;
    resolve_segments(&decoded).map(Cow::Owned)
}

fn is_already_normal(raw: &[u8]) -> bool {
    let no_escapes = !raw.contains(&b'%');
    let no_double_slash = !raw.windows(2).any(|w| w == b"//");
    let no_dot_segments = !raw
        .split(|b| *b == b'/')
        .any(|segment| segment == b"." || segment == b"..");
    no_escapes && no_double_slash && no_dot_segments
}

fn percent_decode(raw: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'%' {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let hi = raw.get(i + 1).and_then(|b| hex_value(*b));
        let lo = raw.get(i + 2).and_then(|b| hex_value(*b));
        let (Some(hi), Some(lo)) = (hi, lo) else {
            return Err(PathError::BadPercentEncoding);
        };
        let byte = hi << 4 | lo;
        if byte == 0 {
            return Err(PathError::Nul);
        }
        out.push(byte);
        i += 3;
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn resolve_segments(decoded: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut segments: Vec<&[u8]> = Vec::new();
    let parts: Vec<&[u8]> = decoded.split(|b| *b == b'/').skip(1).collect();
    let last = parts.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, segment) in parts.iter().enumerate() {
        match *segment {
            b"" => trailing_slash = i == last,
            b"." => trailing_slash = true,
            b".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
                trailing_slash = true;
            }
            other => {
                segments.push(other);
                trailing_slash = false;
            }
        }
    }
    let mut out = Vec::with_capacity(decoded.len());
    for segment in &segments {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if trailing_slash || segments.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> Result<String, PathError> {
        normalize_path(path).map(|p| String::from_utf8_lossy(&p).into_owned())
    }

    #[test]
    fn plain_paths_pass_through_borrowed() {
        assert!(matches!(normalize_path("/a/b.css"), Ok(Cow::Borrowed(_))));
        assert_eq!(norm("/").unwrap(), "/");
        assert_eq!(norm("/a/b/").unwrap(), "/a/b/");
    }

    #[test]
    fn decodes_merges_and_resolves() {
        assert_eq!(norm("/%61dmin").unwrap(), "/admin");
        assert_eq!(norm("//admin//x").unwrap(), "/admin/x");
        assert_eq!(norm("/x/../admin").unwrap(), "/admin");
        assert_eq!(norm("/x/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(norm("/a/./b/.").unwrap(), "/a/b/");
        assert_eq!(norm("/a/b/..").unwrap(), "/a/");
        assert_eq!(norm("/a/..").unwrap(), "/");
        assert_eq!(norm("/a%2Fb").unwrap(), "/a/b");
    }

    #[test]
    fn rejects_bad_paths() {
        assert_eq!(norm("/.."), Err(PathError::AboveRoot));
        assert_eq!(norm("/a/../../b"), Err(PathError::AboveRoot));
        assert_eq!(norm("/%2e%2e/etc"), Err(PathError::AboveRoot));
        assert_eq!(norm("/%zz"), Err(PathError::BadPercentEncoding));
        assert_eq!(norm("/%4"), Err(PathError::BadPercentEncoding));
        assert_eq!(norm("/a%00b"), Err(PathError::Nul));
        assert_eq!(norm("a/b"), Err(PathError::NotAbsolute));
    }
}
