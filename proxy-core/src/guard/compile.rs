//! Config -> [`ClientIpPolicy`] and [`GuardTable`]: `[client]`, `[rate_limits.*]`, and the
//! guard keys of sites and locations. Called from the config compiler; every problem is
//! reported at its key.

use bytes::Bytes;
use http::HeaderName;
use ipnet::IpNet;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use super::{GuardTable, LocationGuards, SiteGuards};
use crate::access::{DenyList, IpSet, SiteAccess, UserAgentRules};
use crate::client::ClientIpPolicy;
use crate::config::file::{
    ClientSection, ConfigFile, RateLimitSection, SiteAccessSection, SiteSection,
};
use crate::config::KeyPath;
use crate::config::{resolve_path, Problems};
use crate::limit::{LimitZone, Rate, ZoneKey, ZoneSettings, DEFAULT_SLOTS};

const DEFAULT_DENY_BODY: &str = "forbidden\n";

/// Compiles the client policy and every site's guards.
pub(crate) fn compile_guards(
    file: &ConfigFile,
    base_dir: &Path,
    problems: &mut Problems,
) -> (ClientIpPolicy, GuardTable) {
    let mut c = GuardCompiler { base_dir, problems };
    let client = c.client(&file.client, &KeyPath::root().key("client"));
    let zones = c.zones(&file.rate_limits, &KeyPath::root().key("rate_limits"));
    let mut table = GuardTable::default();
    for (name, site) in &file.sites {
        let key = KeyPath::root().key("sites").key(name);
        if let Some(guards) = c.site(site, &zones, &file.rate_limits, &key) {
            table.sites.insert(name.clone(), guards);
        }
    }
    table.zones = zones;
    (client, table)
}

struct GuardCompiler<'a> {
    base_dir: &'a Path,
    problems: &'a mut Problems,
}

impl GuardCompiler<'_> {
    fn client(&mut self, s: &ClientSection, key: &KeyPath) -> ClientIpPolicy {
        let mut policy = ClientIpPolicy::default();
        for (i, text) in s.trusted_proxies.iter().flatten().enumerate() {
            let key = key.key("trusted_proxies").index(i);
            match parse_cidr(text, &key, self.problems) {
                Some(net) => policy.trusted_proxies.push(net),
                None => continue,
            }
        }
        if let Some(name) = &s.ip_header {
            match HeaderName::from_bytes(name.as_bytes()) {
                // The proxy rewrites X-Forwarded-For itself; its entries are read through
                // `forwarded_for_fallback`, right to left.
                Ok(header) if header == "x-forwarded-for" => self.problems.push(
                    key.key("ip_header"),
                    "X-Forwarded-For cannot be the client-IP header: set `forwarded_for_fallback = true` instead",
                ),
                Ok(header) => policy.header = header,
                Err(_) => self.problems.push(
                    key.key("ip_header"),
                    format!("invalid header name `{name}`"),
                ),
            }
        }
        policy.forwarded_for_fallback = s.forwarded_for_fallback.unwrap_or(false);
        policy
    }

    fn zones(
        &mut self,
        all: &BTreeMap<String, RateLimitSection>,
        key: &KeyPath,
    ) -> HashMap<String, Arc<LimitZone>> {
        all.iter()
            .filter_map(|(name, s)| {
                let settings = self.zone(name, s, &key.key(name))?;
                Some((name.clone(), Arc::new(LimitZone::new(settings))))
            })
            .collect()
    }

    fn zone(&mut self, name: &str, s: &RateLimitSection, key: &KeyPath) -> Option<ZoneSettings> {
        let rate = Rate::parse(&s.rate)
            .map_err(|e| self.problems.push(key.key("rate"), e))
            .ok();
        let burst = s.burst.unwrap_or(0);
        if let Some(delay) = s.delay.filter(|d| *d > burst) {
            self.problems.push(
                key.key("delay"),
                format!("delay ({delay}) cannot exceed burst ({burst})"),
            );
        }
        let zone_key = ZoneKey::parse(s.key.as_deref().unwrap_or("client_ip"))
            .map_err(|e| self.problems.push(key.key("key"), e))
            .ok();
        let ipv6_prefix = s.ipv6_prefix.unwrap_or(64);
        if ipv6_prefix > 128 {
            self.problems.push(
                key.key("ipv6_prefix"),
                format!("ipv6_prefix must be 0 to 128, got {ipv6_prefix}"),
            );
        }
        let status = s.status.unwrap_or(429);
        if !(400..=599).contains(&status) {
            self.problems.push(
                key.key("status"),
                format!("status must be from 400 to 599 (e.g. 429, 503), got {status}"),
            );
        }
        let slots = s.slots.unwrap_or(DEFAULT_SLOTS);
        if !(64..=1 << 24).contains(&slots) {
            self.problems.push(
                key.key("slots"),
                format!("slots must be from 64 to 16777216, got {slots}"),
            );
        }
        Some(ZoneSettings {
            name: name.to_string(),
            rate: rate?,
            burst,
            delay: s.delay,
            key: zone_key?,
            ipv6_prefix: ipv6_prefix.min(128),
            status,
            dry_run: s.dry_run.unwrap_or(false),
            slots,
        })
    }

    fn site(
        &mut self,
        s: &SiteSection,
        zones: &HashMap<String, Arc<LimitZone>>,
        declared: &BTreeMap<String, RateLimitSection>,
        key: &KeyPath,
    ) -> Option<SiteGuards> {
        let refs = ZoneRefs { zones, declared };
        let mut guards = SiteGuards {
            access: self.access(s.access.as_ref(), &key.key("access")),
            zones: self.zone_refs(&s.rate_limits, &refs, &key.key("rate_limits")),
            locations: HashMap::new(),
        };
        for (i, l) in s.locations.iter().enumerate() {
            let key = key.key("locations").index(i);
            let mut zones = self.zone_refs(&l.rate_limits, &refs, &key.key("rate_limits"));
            // A zone named by both the site and the location counts a request once.
            zones.retain(|zone| !guards.zones.iter().any(|z| Arc::ptr_eq(z, zone)));
            let location = LocationGuards {
                allow: l
                    .allow
                    .as_ref()
                    .map(|list| self.allow(list, &key.key("allow"))),
                zones,
            };
            if location.allow.is_some() || !location.zones.is_empty() {
                guards.locations.insert(i, location);
            }
        }
        let empty = s.access.is_none() && guards.zones.is_empty() && guards.locations.is_empty();
        (!empty).then_some(guards)
    }

    fn access(&mut self, s: Option<&SiteAccessSection>, key: &KeyPath) -> SiteAccess {
        let Some(s) = s else {
            return SiteAccess::default();
        };
        let deny_body = Bytes::from(
            s.deny_body
                .clone()
                .unwrap_or_else(|| DEFAULT_DENY_BODY.into()),
        );
        let user_agents = if s.user_agent_deny.is_empty() {
            None
        } else {
            UserAgentRules::new(&s.user_agent_deny)
                .map_err(|(i, e)| self.problems.push(key.key("user_agent_deny").index(i), e))
                .ok()
        };
        SiteAccess {
            deny_lists: s
                .deny_files
                .iter()
                .map(|path| DenyList::watch(resolve_path(self.base_dir, path)))
                .collect(),
            user_agent_body: s
                .user_agent_body
                .clone()
                .map_or_else(|| deny_body.clone(), Bytes::from),
            deny_body,
            user_agents,
        }
    }

    fn allow(&mut self, list: &[String], key: &KeyPath) -> IpSet {
        let mut set = IpSet::default();
        for (i, text) in list.iter().enumerate() {
            if let Some(net) = parse_cidr(text, &key.index(i), self.problems) {
                set.insert(net);
            }
        }
        set
    }

    fn zone_refs(
        &mut self,
        names: &[String],
        refs: &ZoneRefs<'_>,
        key: &KeyPath,
    ) -> Vec<Arc<LimitZone>> {
        let mut out = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match refs.zones.get(name) {
                Some(zone) => out.push(zone.clone()),
                // Declared but invalid: already reported at the zone itself.
                None if refs.declared.contains_key(name) => {}
                None => {
                    let known: Vec<&str> = refs.declared.keys().map(String::as_str).collect();
                    let known = if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    };
                    self.problems.push(
                        key.index(i),
                        format!("unknown rate limit zone `{name}` (defined: {known})"),
                    );
                }
            }
        }
        out
    }
}

/// Zones that compiled, and every zone declared (valid or not).
struct ZoneRefs<'a> {
    zones: &'a HashMap<String, Arc<LimitZone>>,
    declared: &'a BTreeMap<String, RateLimitSection>,
}

fn parse_cidr(text: &str, key: &KeyPath, problems: &mut Problems) -> Option<IpNet> {
    let net = crate::access::parse_net(text.trim());
    if net.is_none() {
        problems.push(
            key.clone(),
            format!(
                "invalid IP or CIDR `{text}`: expected e.g. \"172.16.0.0/12\" or \"192.0.2.1\""
            ),
        );
    }
    net
}

#[cfg(test)]
mod tests {
    use crate::config::load_str;
    use std::path::Path;

    const BASE: &str = "[upstreams.docs]\naddress = \"docs.tail1.ts.net:80\"\n[sites.docs]\nhosts = [\"docs.example.com\"]\n";

    fn errors(extra: &str) -> String {
        match load_str(extra, Some(Path::new("edge.toml")), Path::new(".")) {
            Ok(_) => "no error".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_zones_and_references_name_their_keys() {
        let text = format!(
            "[client]\ntrusted_proxies = [\"172.16.0.0/12\", \"nope\"]\nip_header = \"X-Forwarded-For\"\n[rate_limits.login]\nrate = \"5r/h\"\nburst = 2\ndelay = 3\nstatus = 200\n\n{BASE}rate_limits = [\"missing\"]\n[[sites.docs.locations]]\nmatch = \"/\"\nproxy = \"docs\"\nallow = [\"10.0.0.0/33\"]\n"
        );
        let e = errors(&text);
        for expected in [
            "edge.toml:2: client.trusted_proxies[1]: invalid IP or CIDR `nope`",
            "edge.toml:3: client.ip_header: X-Forwarded-For cannot be",
            "edge.toml:5: rate_limits.login.rate: invalid rate `5r/h`",
            "edge.toml:7: rate_limits.login.delay: delay (3) cannot exceed burst (2)",
            "edge.toml:8: rate_limits.login.status:",
            "sites.docs.rate_limits[0]: unknown rate limit zone `missing`",
            "sites.docs.locations[0].allow[0]: invalid IP or CIDR `10.0.0.0/33`",
        ] {
            assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
        }
    }

    #[test]
    fn valid_guards_compile_and_attach() {
        let text = format!(
            "[client]\ntrusted_proxies = [\"127.0.0.0/8\"]\nip_header = \"X-Client\"\n[rate_limits.site]\nrate = \"10r/s\"\n[rate_limits.login]\nrate = \"30r/m\"\nburst = 3\nkey = \"client_ip+location\"\n{BASE}rate_limits = [\"site\"]\n[sites.docs.access]\nuser_agent_deny = [\"GPTBot\"]\n[[sites.docs.locations]]\nmatch = \"/\"\nproxy = \"docs\"\n[[sites.docs.locations]]\nmatch = \"/login\"\nproxy = \"docs\"\nrate_limits = [\"login\"]\nallow = [\"192.0.2.0/24\"]\n"
        );
        let config = load_str(&text, None, Path::new(".")).expect("valid");
        assert_eq!(config.client.header.as_str(), "x-client");
        let site = &config.guards.sites["docs"];
        assert_eq!(site.zones.len(), 1);
        assert_eq!(site.locations[&1].zones[0].settings.burst, 3);
        assert!(!site.locations.contains_key(&0));
        assert!(site.access.is_denied_agent(b"GPTBot/1.0"));
    }
}
