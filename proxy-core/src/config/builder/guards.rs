//! Builder methods for client identity, rate limits and access rules.

use super::{ConfigBuilder, LocationBuilder, SiteBuilder};
use crate::config::file::{
    ConnectionLimitSection, RateLimitRef, RateLimitSection, RateLimitUseSection, SiteAccessSection,
};

impl ConfigBuilder {
    /// Trusts `cidr` as a proxy whose client-IP header (`Fly-Client-IP`) is believed.
    pub fn trusted_proxy(mut self, cidr: impl Into<String>) -> Self {
        self.file
            .client
            .trusted_proxies
            .get_or_insert_with(Vec::new)
            .push(cidr.into());
        self
    }

    /// Adds (or replaces) a named rate-limit zone.
    pub fn rate_limit(mut self, name: impl Into<String>, zone: RateLimitBuilder) -> Self {
        self.file.rate_limits.insert(name.into(), zone.0);
        self
    }

    /// Adds (or replaces) a named connection-limit zone: at most `max` requests of one client
    /// in progress at once (nginx `limit_conn`).
    pub fn connection_limit(mut self, name: impl Into<String>, max: u32) -> Self {
        let zone = ConnectionLimitSection {
            max,
            ..ConnectionLimitSection::default()
        };
        self.file.connection_limits.insert(name.into(), zone);
        self
    }
}

/// Builds one rate-limit zone (nginx `limit_req` semantics).
#[derive(Debug, Clone, Default)]
pub struct RateLimitBuilder(RateLimitSection);

impl RateLimitBuilder {
    /// A zone limiting each client to `rate` (`"10r/s"`, `"30r/m"`), no burst.
    pub fn new(rate: impl Into<String>) -> Self {
        Self(RateLimitSection {
            rate: rate.into(),
            ..RateLimitSection::default()
        })
    }

    /// Requests allowed above the rate before rejecting.
    pub fn burst(mut self, burst: u32) -> Self {
        self.0.burst = Some(burst);
        self
    }

    /// The first `n` excess requests pass at once; later ones are delayed to the rate.
    pub fn delay(mut self, n: u32) -> Self {
        self.0.delay = Some(n);
        self
    }

    /// What is counted: `"client_ip"`, `"client_ip+location"` or `"header:NAME"`.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.0.key = Some(key.into());
        self
    }

    /// Status of rejections (default 429).
    pub fn status(mut self, status: u16) -> Self {
        self.0.status = Some(status);
        self
    }

    /// Only log and count would-be rejections.
    pub fn dry_run(mut self) -> Self {
        self.0.dry_run = Some(true);
        self
    }
}

impl SiteBuilder {
    /// Applies a rate-limit zone to every request of the site.
    pub fn rate_limit(mut self, zone: impl Into<String>) -> Self {
        self.0.rate_limits.push(RateLimitRef::Zone(zone.into()));
        self
    }

    /// Applies a connection-limit zone to every request of the site.
    pub fn connection_limit(mut self, zone: impl Into<String>) -> Self {
        self.0.connection_limits.push(zone.into());
        self
    }

    /// Denies the IPs/CIDRs listed in `path` (reloaded when the file changes).
    pub fn deny_file(mut self, path: impl Into<String>) -> Self {
        self.access().deny_files.push(path.into());
        self
    }

    /// Refuses user agents matching `regex` (case-insensitive).
    pub fn deny_user_agent(mut self, regex: impl Into<String>) -> Self {
        self.access().user_agent_deny.push(regex.into());
        self
    }

    fn access(&mut self) -> &mut SiteAccessSection {
        self.0.access.get_or_insert_with(SiteAccessSection::default)
    }
}

impl LocationBuilder {
    /// Applies a rate-limit zone to this location, on top of the site's.
    pub fn rate_limit(mut self, zone: impl Into<String>) -> Self {
        self.0.rate_limits.push(RateLimitRef::Zone(zone.into()));
        self
    }

    /// Applies a rate-limit zone to this location its own way (burst, delay, status), on top
    /// of the site's.
    pub fn rate_limit_use(mut self, applied: RateLimitUseSection) -> Self {
        self.0.rate_limits.push(RateLimitRef::Use(applied));
        self
    }

    /// Applies a connection-limit zone to this location, on top of the site's.
    pub fn connection_limit(mut self, zone: impl Into<String>) -> Self {
        self.0.connection_limits.push(zone.into());
        self
    }

    /// Lets only `cidr` (and other allowed ones) use this location.
    pub fn allow(mut self, cidr: impl Into<String>) -> Self {
        self.0.allow.get_or_insert_with(Vec::new).push(cidr.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use crate::config::*;

    #[test]
    fn builds_the_same_guards_as_toml() {
        let config = ConfigBuilder::new()
            .trusted_proxy("172.16.0.0/12")
            .rate_limit("login", RateLimitBuilder::new("1r/s").burst(3).status(503))
            .upstream("docs", UpstreamBuilder::new("docs.tail1.ts.net:443").tls())
            .site(
                "docs",
                SiteBuilder::new()
                    .host("docs.example.com")
                    .deny_user_agent("GPTBot")
                    .location(LocationBuilder::new("/").proxy("docs"))
                    .location(
                        LocationBuilder::new("/login")
                            .proxy("docs")
                            .rate_limit("login")
                            .allow("192.0.2.0/24"),
                    ),
            )
            .build()
            .expect("valid config");
        assert!(config.client.is_trusted("172.20.0.1".parse().unwrap()));
        let site = config.site_for_host("docs.example.com").expect("site");
        let login = site.location_for_path(b"/login").expect("location");
        assert_eq!(login.guards().zones()[0].1.status, 503);
        assert!(login.guards().access().is_denied_agent(b"gptbot"));
    }
}
