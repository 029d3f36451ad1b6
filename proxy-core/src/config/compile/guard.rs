//! `[rate_limits.NAME]`, `[sites.NAME.access]`, and the guard keys of sites and locations
//! (`rate_limits`, `allow`): everything checked after routing and before a location acts.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::{list_or_none, Compiler};
use crate::access::{DenyList, IpSet, SiteAccess, UserAgentRules};
use crate::config::error::KeyPath;
use crate::config::file::{
    ConnectionLimitSection, RateLimitRef, RateLimitSection, RateLimitUseSection, SiteAccessSection,
    DEFAULT_BURST, DEFAULT_CONNECTION_KEY, DEFAULT_CONNECTION_LIMIT_STATUS, DEFAULT_DENY_BODY,
    DEFAULT_DRY_RUN, DEFAULT_IPV6_PREFIX, DEFAULT_LIMIT_STATUS, DEFAULT_SLOTS, DEFAULT_ZONE_KEY,
    DEFAULT_ZONE_SCOPE,
};
use crate::guard::AppliedZone;
use crate::limit::{
    ConcurrencySettings, ConcurrencyZone, LimitZone, Rate, ZoneKey, ZoneScope, ZoneSettings,
    ZoneUse,
};

/// One kind of zone: the zones that compiled, by name, and the name of every zone declared
/// (valid or not), so that a reference to an invalid zone is not reported a second time as
/// unknown.
pub(super) struct ZoneTable<'a, T> {
    pub(super) compiled: &'a BTreeMap<String, Arc<T>>,
    pub(super) declared: Vec<&'a str>,
    /// What the zones are, for messages: "rate limit" or "connection limit".
    pub(super) kind: &'static str,
}

/// The zones sites and locations may name: rate limits and connection limits.
pub(super) struct ZoneRefs<'a> {
    pub(super) rate: ZoneTable<'a, LimitZone>,
    pub(super) connection: ZoneTable<'a, ConcurrencyZone>,
}

impl Compiler<'_> {
    pub(super) fn zones(
        &mut self,
        all: &BTreeMap<String, RateLimitSection>,
        fleet: bool,
        key: &KeyPath,
    ) -> BTreeMap<String, Arc<LimitZone>> {
        all.iter()
            .filter_map(|(name, s)| {
                let settings = self.zone(name, s, fleet, &key.key(name))?;
                Some((name.clone(), Arc::new(LimitZone::new(settings))))
            })
            .collect()
    }

    fn zone(
        &mut self,
        name: &str,
        s: &RateLimitSection,
        fleet: bool,
        key: &KeyPath,
    ) -> Option<ZoneSettings> {
        let rate = Rate::parse(&s.rate)
            .map_err(|e| self.problem(key.key("rate"), e))
            .ok();
        let burst = s.burst.unwrap_or(DEFAULT_BURST);
        if let Some(delay) = s.delay.filter(|d| *d > burst) {
            self.problem(
                key.key("delay"),
                format!("delay ({delay}) cannot exceed burst ({burst})"),
            );
        }
        let zone_key = ZoneKey::parse(s.key.as_deref().unwrap_or(DEFAULT_ZONE_KEY))
            .map_err(|e| self.problem(key.key("key"), e))
            .ok();
        let ipv6_prefix = s.ipv6_prefix.unwrap_or(DEFAULT_IPV6_PREFIX);
        if ipv6_prefix > 128 {
            self.problem(
                key.key("ipv6_prefix"),
                format!("ipv6_prefix must be 0 to 128, got {ipv6_prefix}"),
            );
        }
        let status = self.status(
            s.status,
            DEFAULT_LIMIT_STATUS,
            400..=599,
            "status must be from 400 to 599 (e.g. 429, 503)",
            key.key("status"),
        );
        let slots = s.slots.unwrap_or(DEFAULT_SLOTS);
        if !(64..=1 << 24).contains(&slots) {
            self.problem(
                key.key("slots"),
                format!("slots must be from 64 to 16777216, got {slots}"),
            );
        }
        let scope = match s.scope.as_deref().unwrap_or(DEFAULT_ZONE_SCOPE) {
            "local" => ZoneScope::Local,
            "global" if fleet => ZoneScope::Global,
            "global" => {
                self.problem(
                    key.key("scope"),
                    "a global zone counts in the fleet's Redis: add a [redis] section",
                );
                ZoneScope::Local
            }
            other => {
                self.problem(
                    key.key("scope"),
                    format!("invalid scope `{other}`: expected \"local\" or \"global\""),
                );
                ZoneScope::Local
            }
        };
        Some(ZoneSettings {
            name: name.to_string(),
            rate: rate?,
            burst,
            delay: s.delay,
            key: zone_key?,
            ipv6_prefix: ipv6_prefix.min(128),
            status,
            dry_run: s.dry_run.unwrap_or(DEFAULT_DRY_RUN),
            slots,
            scope,
        })
    }

    /// A site's deny lists and user-agent rules. Deny files are read now; watching them
    /// for changes is the running service's job, so each list is also noted in `deny_lists`.
    pub(super) fn site_access(
        &mut self,
        s: Option<&SiteAccessSection>,
        key: &KeyPath,
        deny_lists: &mut Vec<Arc<DenyList>>,
    ) -> Arc<SiteAccess> {
        let Some(s) = s else {
            return Arc::new(SiteAccess::new(
                Vec::new(),
                None,
                Bytes::from_static(DEFAULT_DENY_BODY.as_bytes()),
                None,
            ));
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
                .map_err(|(i, e)| self.problem(key.key("user_agent_deny").index(i), e))
                .ok()
        };
        let lists: Vec<Arc<DenyList>> = s
            .deny_files
            .iter()
            .map(|path| Arc::new(DenyList::load(self.path(path))))
            .collect();
        deny_lists.extend(lists.iter().cloned());
        Arc::new(SiteAccess::new(
            lists,
            user_agents,
            deny_body,
            s.user_agent_body.clone().map(Bytes::from),
        ))
    }

    /// A location's allow list.
    pub(super) fn allow_list(&mut self, list: &[String], key: &KeyPath) -> IpSet {
        let mut set = IpSet::default();
        for (i, text) in list.iter().enumerate() {
            if let Some(net) = self.cidr(text, key.index(i)) {
                set.insert(net);
            }
        }
        set
    }

    /// `[connection_limits.NAME]` zones.
    pub(super) fn connection_zones(
        &mut self,
        all: &BTreeMap<String, ConnectionLimitSection>,
        key: &KeyPath,
    ) -> BTreeMap<String, Arc<ConcurrencyZone>> {
        all.iter()
            .filter_map(|(name, s)| {
                let key = key.key(name);
                if s.max == 0 {
                    self.problem(key.key("max"), "max must be at least 1");
                }
                let zone_key = ZoneKey::parse(s.key.as_deref().unwrap_or(DEFAULT_CONNECTION_KEY))
                    .map_err(|e| self.problem(key.key("key"), e))
                    .ok()?;
                let ipv6_prefix = s.ipv6_prefix.unwrap_or(DEFAULT_IPV6_PREFIX);
                if ipv6_prefix > 128 {
                    self.problem(
                        key.key("ipv6_prefix"),
                        format!("ipv6_prefix must be 0 to 128, got {ipv6_prefix}"),
                    );
                }
                let status = self.status(
                    s.status,
                    DEFAULT_CONNECTION_LIMIT_STATUS,
                    400..=599,
                    "status must be from 400 to 599 (e.g. 503, 429)",
                    key.key("status"),
                );
                let settings = ConcurrencySettings {
                    name: name.clone(),
                    max: s.max.max(1),
                    key: zone_key,
                    ipv6_prefix: ipv6_prefix.min(128),
                    status,
                    dry_run: s.dry_run.unwrap_or(DEFAULT_DRY_RUN),
                };
                Some((name.clone(), Arc::new(ConcurrencyZone::new(settings))))
            })
            .collect()
    }

    /// The zones of one kind a site or location names.
    pub(super) fn zone_refs<T>(
        &mut self,
        names: &[String],
        zones: &ZoneTable<'_, T>,
        key: &KeyPath,
    ) -> Vec<Arc<T>> {
        names
            .iter()
            .enumerate()
            .filter_map(|(i, name)| self.zone_ref(name, zones, key.index(i)))
            .collect()
    }

    /// The zone called `name`, or `None` (reported unless it is declared but invalid, which
    /// was reported at the zone itself).
    fn zone_ref<T>(
        &mut self,
        name: &str,
        zones: &ZoneTable<'_, T>,
        key: KeyPath,
    ) -> Option<Arc<T>> {
        if let Some(zone) = zones.compiled.get(name) {
            return Some(zone.clone());
        }
        if !zones.declared.contains(&name) {
            let known = list_or_none(zones.declared.iter().copied());
            self.problem(
                key,
                format!("unknown {} zone `{name}` (defined: {known})", zones.kind),
            );
        }
        None
    }

    /// The rate-limit zones a site or location applies, each its own way (nginx's
    /// `limit_req`): by name with the zone's `burst`, `delay`, `status` and `dry_run`, or
    /// `{ zone = "NAME", ... }` with its own.
    pub(super) fn rate_limit_refs(
        &mut self,
        refs: &[RateLimitRef],
        zones: &ZoneTable<'_, LimitZone>,
        key: &KeyPath,
    ) -> Vec<AppliedZone> {
        let mut out: Vec<AppliedZone> = Vec::with_capacity(refs.len());
        for (i, entry) in refs.iter().enumerate() {
            let key = key.index(i);
            let (zone, usage) = match entry {
                RateLimitRef::Zone(name) => {
                    let Some(zone) = self.zone_ref(name, zones, key.clone()) else {
                        continue;
                    };
                    let usage = zone.settings.default_use();
                    (zone, usage)
                }
                RateLimitRef::Use(applied) => {
                    let Some(zone) = self.zone_ref(&applied.zone, zones, key.key("zone")) else {
                        continue;
                    };
                    let usage = self.zone_use(applied, &zone.settings, &key);
                    (zone, usage)
                }
            };
            if out.iter().any(|(z, _)| Arc::ptr_eq(z, &zone)) {
                self.problem(
                    key,
                    format!("zone `{}` is applied twice here", zone.settings.name),
                );
                continue;
            }
            out.push((zone, usage));
        }
        out
    }

    /// How `{ zone = "NAME", ... }` applies a zone: each key unset is the zone's.
    fn zone_use(&mut self, u: &RateLimitUseSection, zone: &ZoneSettings, key: &KeyPath) -> ZoneUse {
        let burst = u.burst.unwrap_or(zone.burst);
        let delay = match u.nodelay {
            Some(true) => {
                if u.delay.is_some() {
                    self.problem(
                        key.key("nodelay"),
                        "`nodelay = true` and `delay` exclude each other: keep one",
                    );
                }
                None
            }
            Some(false) => Some(u.delay.or(zone.delay).unwrap_or(0)),
            None => u.delay.or(zone.delay),
        };
        if let Some(delay) = delay.filter(|d| *d > burst) {
            self.problem(
                key.key(if u.delay.is_some() { "delay" } else { "burst" }),
                format!("delay ({delay}) cannot exceed burst ({burst})"),
            );
        }
        ZoneUse {
            burst,
            delay: delay.map(|d| d.min(burst)),
            status: self.status(
                u.status,
                zone.status,
                400..=599,
                "status must be from 400 to 599 (e.g. 429, 503)",
                key.key("status"),
            ),
            dry_run: u.dry_run.unwrap_or(zone.dry_run),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{assert_mentions, errors, load_str};
    use std::path::Path;

    const BASE: &str = "[upstreams.docs]\naddress = \"docs.tail1.ts.net:80\"\n[sites.docs]\nhosts = [\"docs.example.com\"]\n";

    #[test]
    fn bad_zones_and_references_name_their_keys() {
        let text = format!(
            "[client]\ntrusted_proxies = [\"172.16.0.0/12\", \"nope\"]\nip_header = \"X-Forwarded-For\"\n[rate_limits.login]\nrate = \"5r/h\"\nburst = 2\ndelay = 3\nstatus = 200\n\n{BASE}rate_limits = [\"missing\"]\n[[sites.docs.locations]]\nmatch = \"/\"\nproxy = \"docs\"\nallow = [\"10.0.0.0/33\"]\n"
        );
        let e = errors(&text);
        assert_mentions(
            &[
                "edge.toml:2: client.trusted_proxies[1]: invalid IP or CIDR `nope`",
                "edge.toml:3: client.ip_header: X-Forwarded-For cannot be",
                "edge.toml:5: rate_limits.login.rate: invalid rate `5r/h`",
                "edge.toml:7: rate_limits.login.delay: delay (3) cannot exceed burst (2)",
                "edge.toml:8: rate_limits.login.status:",
                "sites.docs.rate_limits[0]: unknown rate limit zone `missing`",
                "sites.docs.locations[0].allow[0]: invalid IP or CIDR `10.0.0.0/33`",
            ],
            &e,
        );
    }

    #[test]
    fn bad_connection_limits_name_their_keys() {
        let text = format!(
            "[connection_limits.per_ip]\nmax = 0\nkey = \"cookie:x\"\nstatus = 200\n{BASE}connection_limits = [\"per_ip\", \"nope\"]\n[[sites.docs.locations]]\nmatch = \"/\"\nproxy = \"docs\"\n"
        );
        let e = errors(&text);
        assert_mentions(
            &[
            "edge.toml:2: connection_limits.per_ip.max: max must be at least 1",
            "edge.toml:3: connection_limits.per_ip.key: invalid key `cookie:x`",
            "sites.docs.connection_limits[1]: unknown connection limit zone `nope` (defined: per_ip)",
            ],
            &e,
        );
    }

    #[test]
    fn valid_guards_compile_and_attach_to_their_locations() {
        let text = format!(
            "[client]\ntrusted_proxies = [\"127.0.0.0/8\"]\nip_header = \"X-Client\"\n[rate_limits.site]\nrate = \"10r/s\"\n[rate_limits.login]\nrate = \"30r/m\"\nburst = 3\nkey = \"client_ip+location\"\n{BASE}rate_limits = [\"site\"]\n[sites.docs.access]\nuser_agent_deny = [\"GPTBot\"]\n[[sites.docs.locations]]\nmatch = \"/\"\nproxy = \"docs\"\n[[sites.docs.locations]]\nmatch = \"/login\"\nproxy = \"docs\"\nrate_limits = [\"login\", \"site\"]\nallow = [\"192.0.2.0/24\"]\n"
        );
        let config = load_str(&text, None, Path::new(".")).expect("valid");
        assert_eq!(config.client.header().as_str(), "x-client");
        let site = config.site_for_host("docs.example.com").expect("site");
        let root = site.location_for_path(b"/").expect("root location");
        let login = site.location_for_path(b"/login").expect("login location");
        let names = |l: &crate::route::Location| -> Vec<String> {
            l.guards()
                .zones()
                .iter()
                .map(|z| z.0.settings.name.clone())
                .collect()
        };
        assert_eq!(names(root), ["site"]);
        // A zone named by both the site and the location counts a request once.
        assert_eq!(names(login), ["site", "login"]);
        assert_eq!(login.guards().zones()[1].1.burst, 3);
        assert!(root.guards().allow().is_none());
        assert!(login.guards().allow().is_some());
        assert!(root.guards().access().is_denied_agent(b"GPTBot/1.0"));
    }

    #[test]
    fn zones_applied_their_own_way_are_checked_where_applied() {
        let text = format!(
            "[rate_limits.shared]\nrate = \"10r/s\"\ndelay = 2\nburst = 4\n{BASE}rate_limits = [{{ zone = \"shared\", burst = 1 }}]\n[[sites.docs.locations]]\nmatch = \"/\"\nproxy = \"docs\"\nrate_limits = [{{ zone = \"shared\", nodelay = true, delay = 1 }}, {{ zone = \"nope\" }}, {{ zone = \"shared\", status = 200 }}]\n"
        );
        let e = errors(&text);
        assert_mentions(
            &[
            "edge.toml:9: sites.docs.rate_limits[0].burst: delay (2) cannot exceed burst (1)",
            "sites.docs.locations[0].rate_limits[0].nodelay: `nodelay = true` and `delay` exclude each other",
            "sites.docs.locations[0].rate_limits[1].zone: unknown rate limit zone `nope` (defined: shared)",
            "sites.docs.locations[0].rate_limits[2].status: status must be from 400 to 599",
            "sites.docs.locations[0].rate_limits[2]: zone `shared` is applied twice here",
            ],
            &e,
        );
        let typo = errors(&format!("[rate_limits.shared]\nrate = \"10r/s\"\n{BASE}rate_limits = [{{ zone = \"shared\", bursts = 1 }}]\n[[sites.docs.locations]]\nmatch = \"/\"\nproxy = \"docs\"\n"));
        assert!(
            typo.contains("edge.toml:7: sites.docs.rate_limits[0].bursts: unknown field `bursts`"),
            "{typo}"
        );
    }

    #[test]
    fn a_location_applies_a_site_zone_its_own_way_counting_once() {
        let text = format!(
            "[rate_limits.shared]\nrate = \"10r/s\"\nburst = 9\n{BASE}rate_limits = [\"shared\"]\n[[sites.docs.locations]]\nmatch = \"/\"\nproxy = \"docs\"\n[[sites.docs.locations]]\nmatch = \"/login\"\nproxy = \"docs\"\nrate_limits = [{{ zone = \"shared\", burst = 1, delay = 1, status = 503, dry_run = true }}]\n"
        );
        let config = load_str(&text, None, Path::new(".")).expect("valid");
        let site = config.site_for_host("docs.example.com").expect("site");
        let root = site.location_for_path(b"/").expect("root");
        let login = site.location_for_path(b"/login").expect("login");
        assert_eq!(root.guards().zones()[0].1.burst, 9);
        let zones = login.guards().zones();
        assert_eq!(zones.len(), 1);
        let usage = zones[0].1;
        assert_eq!(
            (usage.burst, usage.delay, usage.status, usage.dry_run),
            (1, Some(1), 503, true)
        );
        assert!(std::sync::Arc::ptr_eq(
            &zones[0].0,
            &root.guards().zones()[0].0
        ));
    }
}
