//! Host names as clients send them (`Host` headers, purge requests), normalised the one way
//! every part of the proxy compares them: lowercase, without port or trailing dot.

/// Why a Host value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Characters that cannot appear in a host name or IP literal.
    #[error("invalid Host header")]
    Invalid,
}

/// Normalises a Host header value: lowercase, without port or trailing dot.
///
/// Returns `Ok(None)` for an empty value. IPv6 literals keep their brackets.
pub fn normalize_host(raw: &[u8]) -> Result<Option<String>, HostError> {
    let host = strip_port(raw)?;
    let host = host.strip_suffix(b".").unwrap_or(host);
    if host.is_empty() {
        return Ok(None);
    }
    // Every byte allowed (all ASCII), no empty label (a leading dot or `..`), lower-cased as
    // it is copied: one table look-up per byte.
    let mut lowered = vec![0; host.len()];
    let mut previous = b'.';
    for (out, &b) in lowered.iter_mut().zip(host) {
        let mapped = HOST_BYTES[usize::from(b)];
        if mapped == 0 || (b == b'.' && previous == b'.') {
            return Err(HostError::Invalid);
        }
        *out = mapped;
        previous = b;
    }
    // Only ASCII bytes are allowed through the table.
    String::from_utf8(lowered)
        .map(Some)
        .map_err(|_| HostError::Invalid)
}

/// Each byte allowed in a host, lower-cased; 0 for the bytes that are not.
const HOST_BYTES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'[' | b']' | b':') {
            table[b] = byte.to_ascii_lowercase();
        }
        b += 1;
    }
    table
};

fn strip_port(raw: &[u8]) -> Result<&[u8], HostError> {
    if raw.first() == Some(&b'[') {
        let close = raw
            .iter()
            .position(|b| *b == b']')
            .ok_or(HostError::Invalid)?;
        let rest = &raw[close + 1..];
        check_port(rest)?;
        return Ok(&raw[..=close]);
    }
    match raw.iter().position(|b| *b == b':') {
        Some(colon) => {
            check_port(&raw[colon..])?;
            Ok(&raw[..colon])
        }
        None => Ok(raw),
    }
}

fn check_port(rest: &[u8]) -> Result<(), HostError> {
    match rest {
        [] => Ok(()),
        [b':', digits @ ..] if digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit) => Ok(()),
        _ => Err(HostError::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_normalisation() {
        let n = |s: &str| normalize_host(s.as_bytes());
        assert_eq!(
            n("Docs.Example.COM").unwrap().as_deref(),
            Some("docs.example.com")
        );
        assert_eq!(
            n("docs.example.com:8080").unwrap().as_deref(),
            Some("docs.example.com")
        );
        assert_eq!(
            n("docs.example.com.").unwrap().as_deref(),
            Some("docs.example.com")
        );
        assert_eq!(
            n("docs.example.com.:443").unwrap().as_deref(),
            Some("docs.example.com")
        );
        assert_eq!(n("[::1]:8080").unwrap().as_deref(), Some("[::1]"));
        assert_eq!(n("").unwrap(), None);
        assert!(n("a b").is_err());
        assert!(n("a/b").is_err());
        assert!(n("host:port").is_err());
        assert!(n("a..b").is_err());
        assert!(n(".a").is_err());
        assert!(n("é.example").is_err());
        assert!(n(".").unwrap().is_none());
        assert_eq!(n("A_B-c.D:1").unwrap().as_deref(), Some("a_b-c.d"));
    }
}
