//! `[client]`: which TCP peers may name the client (`Fly-Client-IP`) and the scheme it used
//! (`X-Forwarded-Proto`).

use super::Compiler;
use crate::client::ClientIpPolicy;
use crate::config::error::KeyPath;
use crate::config::file::{
    ClientSection, DEFAULT_FORWARDED_FOR_FALLBACK, DEFAULT_IP_HEADER, DEFAULT_PROTO_HEADER,
};

impl Compiler<'_> {
    pub(super) fn client(&mut self, s: &ClientSection, key: &KeyPath) -> ClientIpPolicy {
        let trusted_proxies = s
            .trusted_proxies
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, text)| self.cidr(text, key.key("trusted_proxies").index(i)))
            .collect();
        let name = s.ip_header.as_deref().unwrap_or(DEFAULT_IP_HEADER);
        let header = self.header_name(name, key.key("ip_header"));
        // The proxy rewrites X-Forwarded-For itself; its entries are read through
        // `forwarded_for_fallback`, right to left.
        if header.as_ref().is_some_and(|h| h == "x-forwarded-for") {
            self.problem(
                key.key("ip_header"),
                "X-Forwarded-For cannot be the client-IP header: set `forwarded_for_fallback = true` instead",
            );
        }
        let proto = s.proto_header.as_deref().unwrap_or(DEFAULT_PROTO_HEADER);
        let proto_header = match proto {
            "" => None,
            name => self.header_name(name, key.key("proto_header")),
        };
        ClientIpPolicy::new(
            trusted_proxies,
            header.unwrap_or(http::HeaderName::from_static("fly-client-ip")),
            s.forwarded_for_fallback
                .unwrap_or(DEFAULT_FORWARDED_FOR_FALLBACK),
        )
        .with_proto_header(proto_header)
    }
}
