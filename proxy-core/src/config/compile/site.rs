//! `[sites.NAME]` and `[[sites.NAME.locations]]`: hosts, locations, actions, error pages and
//! plugins. Each location is compiled whole: it owns its action, plugins, cache policy and
//! guards, so nothing at request time looks a location's rules up anywhere else.

use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use super::guard::ZoneRefs;
use super::{is_valid_dns_name, list_or_none, Compiler};
use crate::access::{DenyList, SiteAccess};
use crate::config::error::KeyPath;
use crate::config::file::{
    LocationSection, OfflineSection, PluginSection, SiteSection, DEFAULT_CONTENT_TYPE,
    DEFAULT_INTERCEPT_ERRORS, DEFAULT_MAX_BODY_SIZE, DEFAULT_OFFLINE_RETRY_AFTER,
    DEFAULT_OFFLINE_STALE, DEFAULT_REDIRECT_STATUS, DEFAULT_REQUEST_BUFFERING,
    DEFAULT_RETURN_STATUS, DEFAULT_SITE_PLUGINS,
};
use crate::guard::{AppliedZone, Guards};
use crate::limit::ConcurrencyZone;
use crate::plugin::{Plugin, PluginChain, PluginSetup};
use crate::route::{
    Action, HostRouter, Location, LocationPattern, LocationTable, OfflinePolicy, RedirectTarget,
    Site,
};
use crate::upstream::{merge_rules, HeaderRule, ProxyHeaders, Upstream};

/// What a site's locations inherit from it.
struct SiteParts<'s> {
    section: &'s SiteSection,
    max_body_size: u64,
    plugins: Vec<Arc<dyn Plugin>>,
    access: Arc<SiteAccess>,
    zones: Vec<AppliedZone>,
    connection_zones: Vec<Arc<ConcurrencyZone>>,
    header_rules: Vec<HeaderRule>,
    auth: Option<Arc<crate::auth::LocationAuth>>,
}

impl Compiler<'_> {
    /// Every site, in a router by host; the deny lists they read, for the watcher.
    pub(super) fn sites(
        &mut self,
        all: &BTreeMap<String, SiteSection>,
        upstreams: &BTreeMap<String, Arc<Upstream>>,
        zones: &ZoneRefs<'_>,
        key: &KeyPath,
    ) -> (HostRouter, Vec<Arc<DenyList>>) {
        let mut router = HostRouter::default();
        let mut owners: HashMap<String, String> = HashMap::new();
        let mut deny_lists = Vec::new();
        for (name, section) in all {
            let key = key.key(name);
            self.check_name("site", name, &key);
            let hosts = self.site_hosts(name, section, &key, &mut owners);
            let site = self.site(
                name,
                hosts,
                section,
                upstreams,
                zones,
                &mut deny_lists,
                &key,
            );
            let Some(site) = site else { continue };
            let site = Arc::new(site);
            for host in site.hosts() {
                router.insert(host, site.clone());
            }
        }
        (router, deny_lists)
    }

    fn site_hosts(
        &mut self,
        site: &str,
        s: &SiteSection,
        key: &KeyPath,
        owners: &mut HashMap<String, String>,
    ) -> Vec<String> {
        if s.hosts.is_empty() {
            self.problem(key.key("hosts"), "a site needs at least one host");
        }
        let mut hosts = Vec::new();
        for (i, raw) in s.hosts.iter().enumerate() {
            let key = key.key("hosts").index(i);
            let host = raw.trim_end_matches('.').to_ascii_lowercase();
            let name_part = host.strip_prefix("*.").unwrap_or(&host);
            if !is_valid_dns_name(name_part) && name_part.parse::<IpAddr>().is_err() {
                self.problem(key, format!("invalid host `{raw}`: expected a name like \"docs.example.com\" or a wildcard like \"*.example.com\" (no port, no path)"));
                continue;
            }
            if let Some(other) = owners.insert(host.clone(), site.to_string()) {
                self.problem(
                    key,
                    format!("duplicate host `{host}`: already served by site `{other}`"),
                );
                continue;
            }
            hosts.push(host);
        }
        hosts
    }

    #[allow(clippy::too_many_arguments)]
    fn site(
        &mut self,
        name: &str,
        hosts: Vec<String>,
        s: &SiteSection,
        upstreams: &BTreeMap<String, Arc<Upstream>>,
        zones: &ZoneRefs<'_>,
        deny_lists: &mut Vec<Arc<DenyList>>,
        key: &KeyPath,
    ) -> Option<Site> {
        if s.intercept_errors == Some(true) {
            self.check_intercept_errors(s, key.key("intercept_errors"));
        }
        let parts = SiteParts {
            section: s,
            max_body_size: self.size(
                s.max_body_size.as_deref(),
                DEFAULT_MAX_BODY_SIZE,
                key.key("max_body_size"),
            ),
            plugins: self.plugins(&s.plugins, &key.key("plugins")),
            access: self.site_access(s.access.as_ref(), &key.key("access"), deny_lists),
            zones: self.rate_limit_refs(&s.rate_limits, &zones.rate, &key.key("rate_limits")),
            connection_zones: self.zone_refs(
                &s.connection_limits,
                &zones.connection,
                &key.key("connection_limits"),
            ),
            header_rules: self.header_rules(&s.proxy_headers, &key.key("proxy_headers")),
            auth: s
                .auth
                .as_ref()
                .and_then(|auth| self.edge_auth(auth, &key.key("auth"))),
        };
        let error_pages = self.error_pages(&s.error_pages, &key.key("error_pages"));
        self.check_site_policy(s.cache.as_ref(), &key.key("cache"));
        self.check_site_compress(s.compress.as_ref(), &key.key("compress"));
        if s.locations.is_empty() {
            self.problem(key.key("locations"), "a site needs at least one location, e.g. [[sites.NAME.locations]] match = \"/\" proxy = \"UPSTREAM\"");
        }
        let locations = s
            .locations
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let key = key.key("locations").index(i);
                self.location(i, l, &parts, upstreams, zones, &key)
            })
            .map(Arc::new)
            .collect();
        let locations = LocationTable::new(locations)
            .map_err(|(i, e)| self.problem(key.key("locations").index(i).key("match"), e))
            .ok()?;
        let offline = s
            .offline
            .as_ref()
            .map(|o| self.offline(o, error_pages.get(&503), &key.key("offline")));
        let mut site = Site::new(
            name.to_string(),
            hosts,
            locations,
            error_pages,
            PluginChain::new(parts.plugins),
        );
        if let Some(offline) = offline {
            site.set_offline(offline);
        }
        Some(site)
    }

    /// `[sites.NAME.offline]`; the page defaults to the site's 503 page, else the built-in.
    fn offline(
        &mut self,
        o: &OfflineSection,
        page_503: Option<&Bytes>,
        key: &KeyPath,
    ) -> OfflinePolicy {
        let stale = self.duration(o.stale.as_deref(), DEFAULT_OFFLINE_STALE, key.key("stale"));
        let retry_after = self.duration(
            o.retry_after.as_deref(),
            DEFAULT_OFFLINE_RETRY_AFTER,
            key.key("retry_after"),
        );
        let page = match &o.page {
            Some(path) => self
                .read_file(path, key.key("page"))
                .map(Bytes::from)
                .unwrap_or_default(),
            None => page_503
                .cloned()
                .unwrap_or_else(|| crate::answer::default_error_page(503)),
        };
        OfflinePolicy {
            stale,
            page,
            retry_after: http::HeaderValue::from(retry_after.as_secs()),
        }
    }

    /// `intercept_errors = true` needs pages to put in place of upstream errors.
    fn check_intercept_errors(&mut self, site: &SiteSection, key: KeyPath) {
        if site.error_pages.is_empty() {
            self.problem(key, "`intercept_errors` needs `error_pages` on the site: the pages that replace upstream errors, by status");
        }
    }

    /// The plugins a site or location attaches, built by the registry.
    fn plugins(&mut self, sections: &[PluginSection], key: &KeyPath) -> Vec<Arc<dyn Plugin>> {
        let setup = PluginSetup::watching(self.base_dir, &self.watched_lists);
        let plugins = self.plugins;
        let built: Vec<_> = sections
            .iter()
            .map(|section| plugins.build(&section.name, &section.options, setup))
            .collect();
        built
            .into_iter()
            .enumerate()
            .filter_map(|(i, plugin)| {
                plugin
                    .map_err(|e| self.problem(key.index(i), e.to_string()))
                    .ok()
            })
            .collect()
    }

    fn error_pages(
        &mut self,
        pages: &BTreeMap<String, String>,
        key: &KeyPath,
    ) -> HashMap<u16, Bytes> {
        let mut out = HashMap::new();
        for (status, path) in pages {
            let key = key.key(status);
            let code = match status.parse::<u16>() {
                Ok(code) if (400..=599).contains(&code) => code,
                _ => {
                    self.problem(
                        key,
                        format!("error page key `{status}` must be a status from 400 to 599"),
                    );
                    continue;
                }
            };
            if let Some(body) = self.read_file(path, key) {
                out.insert(code, Bytes::from(body));
            }
        }
        out
    }

    fn location(
        &mut self,
        index: usize,
        l: &LocationSection,
        site: &SiteParts<'_>,
        upstreams: &BTreeMap<String, Arc<Upstream>>,
        zones: &ZoneRefs<'_>,
        key: &KeyPath,
    ) -> Option<Location> {
        let pattern = LocationPattern::parse(&l.pattern)
            .map_err(|e| self.problem(key.key("match"), e))
            .ok();
        let action = self.action(l, upstreams, key);
        let host_header = l
            .host_header
            .as_deref()
            .and_then(|text| self.host_header(text, key.key("host_header")));
        let max_body_size = match l.max_body_size.as_deref() {
            Some(text) => self.size(Some(text), DEFAULT_MAX_BODY_SIZE, key.key("max_body_size")),
            None => site.max_body_size,
        };
        let own_plugins = self.plugins(&l.plugins, &key.key("plugins"));
        let inherit = l.site_plugins.unwrap_or(DEFAULT_SITE_PLUGINS);
        let site_plugins = if inherit { &site.plugins[..] } else { &[] };
        let plugins = PluginChain::new(site_plugins.iter().cloned().chain(own_plugins).collect());
        let cache = self.location_policy(
            site.section.cache.as_ref(),
            l.cache.as_ref(),
            &key.key("cache"),
        );
        let location_zones =
            self.rate_limit_refs(&l.rate_limits, &zones.rate, &key.key("rate_limits"));
        // A zone applied by both the site and the location counts a request once, the
        // location's way.
        let mut applied: Vec<AppliedZone> = site
            .zones
            .iter()
            .map(|(zone, usage)| {
                let own = location_zones.iter().find(|(z, _)| Arc::ptr_eq(z, zone));
                (zone.clone(), own.map_or(*usage, |(_, own)| *own))
            })
            .collect();
        applied.extend(
            location_zones
                .into_iter()
                .filter(|(zone, _)| !site.zones.iter().any(|(z, _)| Arc::ptr_eq(z, zone))),
        );
        let mut connection_zones = self.zone_refs(
            &l.connection_limits,
            &zones.connection,
            &key.key("connection_limits"),
        );
        connection_zones.retain(|zone| !site.connection_zones.iter().any(|z| Arc::ptr_eq(z, zone)));
        let guards = Guards::new(
            max_body_size,
            site.access.clone(),
            l.allow
                .as_ref()
                .map(|list| self.allow_list(list, &key.key("allow"))),
            applied,
            site.connection_zones
                .iter()
                .cloned()
                .chain(connection_zones)
                .collect(),
        );
        let proxy_headers = self.location_header_rules(l, action.as_ref(), site, key);
        let proxies = matches!(action, Some(Action::Proxy(_)));
        let intercept_errors = l
            .intercept_errors
            .or(site.section.intercept_errors)
            .unwrap_or(DEFAULT_INTERCEPT_ERRORS);
        if l.intercept_errors == Some(true) {
            self.check_intercept_errors(site.section, key.key("intercept_errors"));
        }
        let request_buffering = l
            .request_buffering
            .or(site.section.request_buffering)
            .unwrap_or(DEFAULT_REQUEST_BUFFERING);
        // A buffered body goes to disk past its memory share: only a bounded one.
        if request_buffering && max_body_size == 0 {
            let key = match (l.request_buffering, l.max_body_size.is_some()) {
                (_, true) => key.key("max_body_size"),
                (Some(_), false) => key.key("request_buffering"),
                (None, false) => key.clone(),
            };
            self.problem(key, "`request_buffering` needs a `max_body_size` other than \"0\": the most a buffered body may hold");
        }

        let auth = match &l.auth {
            Some(auth) => self.edge_auth(auth, &key.key("auth")),
            None => site.auth.clone(),
        };
        Some(
            Location::new(
                index,
                l.pattern.clone(),
                pattern?,
                action?,
                host_header,
                proxy_headers,
                intercept_errors,
                request_buffering,
                plugins,
                cache,
                guards,
            )
            .with_auth(auth)
            .with_compression(self.location_compress(
                site.section.compress.as_ref(),
                l.compress.as_ref(),
                proxies,
                &key.key("compress"),
            )),
        )
    }

    /// The headers a proxying location sets its own way: its upstream's `proxy_headers`, then
    /// the site's, then its own, name by name.
    fn location_header_rules(
        &mut self,
        l: &LocationSection,
        action: Option<&Action>,
        site: &SiteParts<'_>,
        key: &KeyPath,
    ) -> Option<ProxyHeaders> {
        let key = key.key("proxy_headers");
        let own = self.header_rules(&l.proxy_headers, &key);
        let Some(Action::Proxy(upstream)) = action else {
            if !own.is_empty() {
                self.problem(key, "`proxy_headers` has no effect without `proxy`");
            }
            return None;
        };
        let mut rules = upstream.header_rules.clone();
        merge_rules(&mut rules, &site.header_rules);
        merge_rules(&mut rules, &own);
        ProxyHeaders::new(rules)
    }

    fn action(
        &mut self,
        l: &LocationSection,
        upstreams: &BTreeMap<String, Arc<Upstream>>,
        key: &KeyPath,
    ) -> Option<Action> {
        let count = [l.proxy.is_some(), l.respond.is_some(), l.redirect.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if count == 0 && !l.plugins.is_empty() {
            // A plugins-only location (e.g. static files): when no plugin answers, 404.
            return Some(Action::Return {
                status: 404,
                content_type: DEFAULT_CONTENT_TYPE.into(),
                body: Bytes::from_static(b"not found\n"),
            });
        }
        if count != 1 {
            self.problem(key.clone(), "a location needs exactly one action: `proxy = \"UPSTREAM\"`, `return = { ... }` or `redirect = { ... }` (or only plugins)");
            return None;
        }
        if let Some(name) = &l.proxy {
            let Some(upstream) = upstreams.get(name) else {
                let known = list_or_none(upstreams.keys().map(String::as_str));
                self.problem(
                    key.key("proxy"),
                    format!("unknown upstream `{name}` (defined: {known})"),
                );
                return None;
            };
            return Some(Action::Proxy(upstream.clone()));
        }
        if let Some(r) = &l.respond {
            let status = r.status.unwrap_or(DEFAULT_RETURN_STATUS);
            if !(100..=599).contains(&status) {
                self.problem(
                    key.key("return").key("status"),
                    format!("invalid status {status}"),
                );
                return None;
            }
            return Some(Action::Return {
                status,
                content_type: r
                    .content_type
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.into()),
                body: Bytes::from(r.body.clone()),
            });
        }
        let r = l.redirect.as_ref()?;
        let status = r.status.unwrap_or(DEFAULT_REDIRECT_STATUS);
        if ![301, 302, 303, 307, 308].contains(&status) {
            self.problem(
                key.key("redirect").key("status"),
                format!("redirect status must be 301, 302, 303, 307 or 308, got {status}"),
            );
            return None;
        }
        let target = RedirectTarget::parse(&r.to)
            .map_err(|e| self.problem(key.key("redirect").key("to"), e))
            .ok()?;
        Some(Action::Redirect { status, target })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{assert_mentions, errors};

    #[test]
    fn intercepting_errors_without_pages_is_explained() {
        let text = "[upstreams.docs]\naddress = \"docs.tail1.ts.net:80\"\n[sites.docs]\nhosts = [\"docs.example.com\"]\nintercept_errors = true\n[[sites.docs.locations]]\nmatch = \"/\"\nproxy = \"docs\"\nintercept_errors = true\n";
        let e = errors(text);
        assert_mentions(
            &[
            "edge.toml:5: sites.docs.intercept_errors: `intercept_errors` needs `error_pages` on the site",
            "edge.toml:9: sites.docs.locations[0].intercept_errors: `intercept_errors` needs",
            ],
            &e,
        );
    }

    #[test]
    fn buffering_unbounded_bodies_is_explained() {
        let text = "[upstreams.docs]\naddress = \"docs.tail1.ts.net:80\"\n[server]\nrequest_buffer_size = \"lots\"\n[sites.docs]\nhosts = [\"docs.example.com\"]\n[[sites.docs.locations]]\nmatch = \"/\"\nproxy = \"docs\"\nrequest_buffering = true\nmax_body_size = \"0\"\n";
        let e = errors(text);
        assert_mentions(
            &[
            "edge.toml:4: server.request_buffer_size: invalid size `lots`",
            "edge.toml:11: sites.docs.locations[0].max_body_size: `request_buffering` needs a `max_body_size` other than \"0\"",
            ],
            &e,
        );
    }
}
