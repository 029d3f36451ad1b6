//! The coding of a response, chosen from `Accept-Encoding` (RFC 9110, section 12.5.3).

use super::Encoding;

/// A q-value in thousandths (`q=0.5` is 500); `q=0` means "not acceptable".
type Quality = u16;

/// The coding to send: among `offered` (in the proxy's order of preference), the one the
/// client gives the highest q-value, its own or `*`'s; ties go to the earlier in `offered`.
/// `None` (identity) when the request has no `Accept-Encoding` (as nginx and Caddy read it),
/// when none of `offered` is acceptable (`q=0` excludes), or when the client rates identity
/// above every acceptable coding. A malformed element is skipped, never an error.
pub fn negotiate(accept_encoding: Option<&[u8]>, offered: &[Encoding]) -> Option<Encoding> {
    let header = std::str::from_utf8(accept_encoding?).ok()?;
    let mut own: [Option<Quality>; 3] = [None; 3];
    let mut any: Option<Quality> = None;
    let mut identity: Option<Quality> = None;
    for element in header.split(',') {
        let mut parts = element.split(';');
        let token = parts.next().unwrap_or_default().trim();
        if token.is_empty() {
            continue;
        }
        let Some(quality) = quality(parts) else {
            continue;
        };
        if token == "*" {
            any = Some(quality);
        } else if token.eq_ignore_ascii_case("identity") {
            identity = Some(quality);
        } else if let Some(encoding) = Encoding::from_token(token) {
            own[encoding.index()] = Some(quality);
        }
    }
    let mut best: Option<(Encoding, Quality)> = None;
    for &encoding in offered {
        let quality = own[encoding.index()].or(any).unwrap_or(0);
        if quality > 0 && best.is_none_or(|(_, q)| quality > q) {
            best = Some((encoding, quality));
        }
    }
    let (encoding, quality) = best?;
    // Identity is always acceptable; only a rating of its own (or `*`'s) above the coding's
    // makes it preferred.
    match identity.or(any) {
        Some(rating) if rating > quality => None,
        _ => Some(encoding),
    }
}

/// The q-value of an element's parameters (1 when it has none); `None` when malformed.
fn quality<'a>(params: impl Iterator<Item = &'a str>) -> Option<Quality> {
    let mut quality = 1000;
    for param in params {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("q") {
            continue;
        }
        quality = parse_qvalue(value.trim())?;
    }
    Some(quality)
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn parse_qvalue(text: &str) -> Option<Quality> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: Quality = format!("{fraction:0<3}").parse().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Encoding::*;

    fn pick(header: &str) -> Option<Encoding> {
        negotiate(Some(header.as_bytes()), &Encoding::ALL)
    }

    #[test]
    fn the_highest_q_value_wins_and_the_proxy_breaks_ties() {
        assert_eq!(pick("gzip;q=0.5, br;q=0.9"), Some(Brotli));
        assert_eq!(pick("gzip, br"), Some(Brotli));
        assert_eq!(pick("gzip, deflate, br, zstd"), Some(Zstd));
        assert_eq!(pick("gzip"), Some(Gzip));
        assert_eq!(pick("GZIP ; Q=1.0"), Some(Gzip));
        assert_eq!(pick("x-gzip"), Some(Gzip));
        assert_eq!(
            negotiate(Some(b"gzip, br, zstd"), &[Gzip, Brotli]),
            Some(Gzip)
        );
        assert_eq!(negotiate(Some(b"zstd"), &[Gzip, Brotli]), None);
    }

    #[test]
    fn q_zero_excludes_and_identity_alone_compresses_nothing() {
        assert_eq!(pick("br;q=0, gzip"), Some(Gzip));
        assert_eq!(pick("br;q=0"), None);
        assert_eq!(pick("identity"), None);
        assert_eq!(pick(""), None);
        assert_eq!(negotiate(None, &Encoding::ALL), None);
        assert_eq!(pick("deflate, compress"), None);
    }

    #[test]
    fn star_rates_every_coding_not_named() {
        assert_eq!(pick("*"), Some(Zstd));
        assert_eq!(pick("*;q=0.1, gzip;q=0.5"), Some(Gzip));
        assert_eq!(pick("zstd;q=0, *"), Some(Brotli));
        assert_eq!(pick("*;q=0"), None);
        assert_eq!(pick("*;q=0, gzip"), Some(Gzip));
    }

    #[test]
    fn identity_rated_above_every_coding_wins() {
        assert_eq!(pick("gzip;q=0.5, identity"), None);
        assert_eq!(pick("gzip;q=0.5, identity;q=0.4"), Some(Gzip));
        assert_eq!(pick("gzip;q=0.5, identity;q=0"), Some(Gzip));
        assert_eq!(pick("gzip, identity;q=1"), Some(Gzip));
        assert_eq!(pick("gzip;q=0.5"), Some(Gzip));
    }

    #[test]
    fn malformed_elements_are_skipped() {
        assert_eq!(pick("br;q=2, gzip"), Some(Gzip));
        assert_eq!(pick("br;q=0.12345, gzip;q=abc"), None);
        assert_eq!(pick(",,; ,gzip;q=0.001"), Some(Gzip));
        assert_eq!(negotiate(Some(&[0xff, 0xfe]), &Encoding::ALL), None);
    }
}
