//! Who is asking: the client address behind a request.
//!
//! On Fly.io the TCP peer is Fly's edge proxy, which names the real client in
//! `Fly-Client-IP`. That header is only believed when the peer is a trusted proxy
//! (`[client] trusted_proxies`); from any other peer anyone could forge it, so the
//! peer address is the client. The result feeds `X-Real-IP`/`X-Forwarded-For`, rate limits
//! and access lists, and replaces whatever client-IP header the client sent before the
//! request goes upstream.

use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use pingora::http::RequestHeader;
use pingora::Result;
use std::net::IpAddr;

/// How the client address is found.
#[derive(Debug, Clone)]
pub struct ClientIpPolicy {
    trusted_proxies: Vec<IpNet>,
    header: HeaderName,
    forwarded_for_fallback: bool,
    proto_header: Option<HeaderName>,
}

impl ClientIpPolicy {
    /// A policy believing `header` from peers in `trusted_proxies`; with
    /// `forwarded_for_fallback`, a trusted peer that sent no usable header is asked through
    /// the rightmost untrusted `X-Forwarded-For` entry.
    pub fn new(
        trusted_proxies: Vec<IpNet>,
        header: HeaderName,
        forwarded_for_fallback: bool,
    ) -> Self {
        Self {
            trusted_proxies,
            header,
            forwarded_for_fallback,
            proto_header: Some(HeaderName::from_static("x-forwarded-proto")),
        }
    }

    /// The same policy believing the scheme a trusted peer names in `header` (`None`: the
    /// connection's scheme always). Without this call, `X-Forwarded-Proto` is believed.
    pub fn with_proto_header(mut self, header: Option<HeaderName>) -> Self {
        self.proto_header = header;
        self
    }

    /// The header naming the client when the peer is trusted.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Whether `ip` is a trusted proxy.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that arrived from `peer` with `headers`. `None` only when
    /// the peer has no IP address (a Unix socket) and no trusted header says otherwise.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        self.client(peer, headers, "http").0
    }

    /// The client and the scheme it used (`http` or `https`) for a request that arrived from
    /// `peer` over `connection_scheme`: what a trusted peer's headers say, else the
    /// connection's own.
    pub fn client(
        &self,
        peer: Option<IpAddr>,
        headers: &HeaderMap,
        connection_scheme: &'static str,
    ) -> (Option<IpAddr>, &'static str) {
        let peer = peer.map(|ip| ip.to_canonical());
        let Some(peer_ip) = peer.filter(|ip| self.is_trusted(*ip)) else {
            return (peer, connection_scheme);
        };
        let scheme = self
            .proto_header
            .as_ref()
            .and_then(|header| header_scheme(headers, header))
            .unwrap_or(connection_scheme);
        (self.trusted_client_ip(peer_ip, headers), scheme)
    }

    /// The client of a request from the trusted proxy `peer_ip`.
    fn trusted_client_ip(&self, peer_ip: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        self.header_ip(headers)
            .or_else(|| {
                self.forwarded_for_fallback
                    .then(|| self.rightmost_untrusted(headers))
                    .flatten()
            })
            .or(Some(peer_ip))
    }

    /// The IP in the client-IP header, if it holds exactly one valid address. Several
    /// values are ambiguous (one may be forged), so they are ignored like a malformed one.
    fn header_ip(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let mut values = headers.get_all(&self.header).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        parse_ip(value.to_str().ok()?)
    }

    /// Walks `X-Forwarded-For` from the right (the entries our trusted proxies appended)
    /// and returns the first address that is not a trusted proxy.
    fn rightmost_untrusted(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for entry in entries.iter().rev() {
            let ip = parse_ip(entry)?;
            if !self.is_trusted(ip) {
                return Some(ip);
            }
        }
        None
    }

    /// Replaces the client-IP header on a request going upstream with the verified client,
    /// so an upstream never sees a value the client wrote itself.
    pub fn set_upstream_header(
        &self,
        request: &mut RequestHeader,
        client_ip: Option<IpAddr>,
    ) -> Result<()> {
        self.set_upstream_header_value(request, client_ip.map(ip_header_value))?;
        request.merge_wire_headers()
    }

    /// [`Self::set_upstream_header`] with the address already made a header value (the
    /// proxy makes it once per request for this and the forwarding headers), set as a wire
    /// header (`RequestHeader::set_wire_header`) rather than in the request's map.
    pub(crate) fn set_upstream_header_value(
        &self,
        request: &mut RequestHeader,
        client_ip: Option<HeaderValue>,
    ) -> Result<()> {
        match client_ip {
            Some(ip) => request.set_wire_header(self.header.clone(), ip)?,
            None => {
                request.remove_header(&self.header);
            }
        }
        Ok(())
    }
}

/// `ip` as a header value, without `fmt` for IPv4 (once per forwarding header and request).
pub(crate) fn ip_header_value(ip: IpAddr) -> HeaderValue {
    let value = match ip {
        IpAddr::V4(v4) => crate::text::header_value(crate::text::ipv4(v4, &mut [0; 15])),
        IpAddr::V6(_) => crate::text::header_value(ip.to_string().as_bytes()),
    };
    value.unwrap_or(HeaderValue::from_static(""))
}

/// The scheme named in `header`, if it holds exactly one value, `http` or `https`.
fn header_scheme(headers: &HeaderMap, header: &HeaderName) -> Option<&'static str> {
    let mut values = headers.get_all(header).iter();
    let value = values.next()?.as_bytes().trim_ascii();
    if values.next().is_some() {
        return None;
    }
    if value.eq_ignore_ascii_case(b"https") {
        Some("https")
    } else if value.eq_ignore_ascii_case(b"http") {
        Some("http")
    } else {
        None
    }
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    text.trim()
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_header_values_match_display() {
        for text in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "100.64.1.2",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(ip_header_value(ip).to_str().unwrap(), ip.to_string());
        }
    }

    fn policy(trusted: &[&str], fallback: bool) -> ClientIpPolicy {
        ClientIpPolicy::new(
            trusted.iter().map(|t| t.parse().unwrap()).collect(),
            HeaderName::from_static("fly-client-ip"),
            fallback,
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn header_is_believed_only_from_trusted_peers() {
        let p = policy(&["172.16.0.0/12"], false);
        let h = headers(&[("fly-client-ip", "203.0.113.9")]);
        assert_eq!(p.client_ip(ip("172.19.0.2"), &h), ip("203.0.113.9"));
        assert_eq!(p.client_ip(ip("198.51.100.1"), &h), ip("198.51.100.1"));
        // fdaa::/16 (Fly's private network) is not trusted unless listed.
        assert_eq!(p.client_ip(ip("fdaa::3"), &h), ip("fdaa::3"));
    }

    #[test]
    fn malformed_or_repeated_header_falls_back_to_the_peer() {
        let p = policy(&["127.0.0.0/8"], false);
        for h in [
            headers(&[("fly-client-ip", "not-an-ip")]),
            headers(&[("fly-client-ip", "1.2.3.4"), ("fly-client-ip", "5.6.7.8")]),
            headers(&[]),
        ] {
            assert_eq!(p.client_ip(ip("127.0.0.1"), &h), ip("127.0.0.1"));
        }
    }

    #[test]
    fn mapped_ipv4_peers_are_canonical() {
        let p = policy(&["127.0.0.0/8"], false);
        let h = headers(&[("fly-client-ip", "::ffff:192.0.2.1")]);
        assert_eq!(p.client_ip(ip("::ffff:127.0.0.1"), &h), ip("192.0.2.1"));
    }

    #[test]
    fn scheme_is_believed_only_from_trusted_peers() {
        let p = policy(&["172.16.0.0/12"], false);
        let h = headers(&[("x-forwarded-proto", "HTTPS")]);
        assert_eq!(p.client(ip("172.19.0.2"), &h, "http").1, "https");
        assert_eq!(p.client(ip("198.51.100.1"), &h, "http").1, "http");
        for junk in [
            headers(&[("x-forwarded-proto", "gopher")]),
            headers(&[
                ("x-forwarded-proto", "https"),
                ("x-forwarded-proto", "http"),
            ]),
            headers(&[]),
        ] {
            assert_eq!(p.client(ip("172.19.0.2"), &junk, "http").1, "http");
        }
        let off = policy(&["172.16.0.0/12"], false).with_proto_header(None);
        assert_eq!(off.client(ip("172.19.0.2"), &h, "http").1, "http");
    }

    #[test]
    fn forwarded_for_fallback_takes_the_rightmost_untrusted_entry() {
        let p = policy(&["10.0.0.0/8"], true);
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.5, 10.0.0.7")]);
        assert_eq!(p.client_ip(ip("10.0.0.1"), &h), ip("203.0.113.5"));
        let junk = headers(&[("x-forwarded-for", "1.1.1.1, garbage, 10.0.0.7")]);
        assert_eq!(p.client_ip(ip("10.0.0.1"), &junk), ip("10.0.0.1"));
        let off = policy(&["10.0.0.0/8"], false);
        assert_eq!(off.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }
}
