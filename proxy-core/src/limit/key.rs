//! What a zone counts: the client IP (IPv6 folded to a prefix), a header, or the client IP
//! per location.

use http::HeaderName;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

/// How a zone derives its key from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneKey {
    /// The client IP (the default).
    ClientIp,
    /// The client IP, counted separately per location.
    ClientIpLocation,
    /// A request header's value; requests without it are not limited.
    Header(HeaderName),
}

impl ZoneKey {
    /// Parses `"client_ip"`, `"client_ip+location"` or `"header:NAME"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "client_ip" => Ok(Self::ClientIp),
            "client_ip+location" => Ok(Self::ClientIpLocation),
            _ => {
                let name = text.strip_prefix("header:").ok_or_else(|| {
                    format!("invalid key `{text}`: expected \"client_ip\", \"client_ip+location\" or \"header:NAME\"")
                })?;
                HeaderName::from_bytes(name.trim().as_bytes())
                    .map(Self::Header)
                    .map_err(|_| format!("invalid header name `{name}` in key `{text}`"))
            }
        }
    }
}

impl ZoneKey {
    /// The key a request from `client_ip` to `location` (site name, location index) is
    /// counted under, with IPv6 addresses folded to `ipv6_prefix` bits; `None`: the request
    /// is not limited (no client address, or the keyed header is missing or empty).
    pub fn key_for<'a>(
        &self,
        client_ip: Option<IpAddr>,
        ipv6_prefix: u8,
        header: impl FnOnce(&HeaderName) -> Option<&'a [u8]>,
        location: (&'a str, usize),
    ) -> Option<LimitKey<'a>> {
        let folded = client_ip.map(|ip| fold_ip(ip, ipv6_prefix));
        match self {
            ZoneKey::ClientIp => folded.map(LimitKey::Ip),
            ZoneKey::ClientIpLocation => {
                folded.map(|ip| LimitKey::IpLocation(ip, location.0, location.1))
            }
            ZoneKey::Header(name) => header(name)
                .filter(|value| !value.is_empty())
                .map(LimitKey::Header),
        }
    }
}

/// The counted identity of one request in one zone. Borrowed, so building it allocates
/// nothing; `Hash` is all the sketch needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKey<'a> {
    /// A client address (already folded to the zone's IPv6 prefix).
    Ip(IpAddr),
    /// A client address in one location (site name, location index).
    IpLocation(IpAddr, &'a str, usize),
    /// A header value.
    Header(&'a [u8]),
}

impl Hash for LimitKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Self::Ip(ip) => (0u8, ip).hash(state),
            Self::IpLocation(ip, site, index) => (1u8, ip, site, index).hash(state),
            Self::Header(value) => (2u8, value).hash(state),
        }
    }
}

/// `ip` with IPv6 addresses cut to their first `prefix` bits (a /64 is one subscriber, who
/// can otherwise rotate through 2^64 addresses). IPv4 addresses are kept whole.
pub fn fold_ip(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = match prefix {
                0 => 0,
                p if p >= 128 => u128::MAX,
                p => u128::MAX << (128 - u32::from(p)),
            };
            IpAddr::V6((bits & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_folds_to_the_prefix_and_ipv4_is_whole() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(fold_ip(a, 64), fold_ip(b, 64));
        assert_ne!(fold_ip(a, 64), fold_ip(c, 64));
        assert_eq!(fold_ip(a, 48), fold_ip(c, 48));
        assert_ne!(fold_ip(a, 128), fold_ip(b, 128));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(fold_ip(v4, 64), v4);
    }

    #[test]
    fn parses_keys() {
        assert_eq!(ZoneKey::parse("client_ip"), Ok(ZoneKey::ClientIp));
        assert_eq!(
            ZoneKey::parse("client_ip+location"),
            Ok(ZoneKey::ClientIpLocation)
        );
        assert_eq!(
            ZoneKey::parse("header:X-Api-Key"),
            Ok(ZoneKey::Header(HeaderName::from_static("x-api-key")))
        );
        assert!(ZoneKey::parse("ip").is_err());
        assert!(ZoneKey::parse("header:bad name").is_err());
    }
}
